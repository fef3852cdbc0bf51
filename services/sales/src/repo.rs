//! SQL for carts, sales and refunds over the embedded database.

use prost::Message as _;
use redstore_inventory::local as inventory;
use redstore_platform::error::{Error, Result};
use redstore_platform::limits;
use redstore_platform::money::Money;
use redstore_proto::sales as pb;
use rusqlite::{Connection, OptionalExtension, params};

use crate::domain;

/// Adds units of a sku to a terminal's cart and returns the line's new quantity; refused when the
/// cart has no room for another line or the line would pass `MAX_LINE_QUANTITY`.
pub fn cart_add(conn: &Connection, store_id: &str, terminal_id: &str, sku: &str, quantity: i64) -> Result<i64> {
    // A scan mostly adds to a line the cart has already: one statement. A new line (or one at
    // its limit) goes the whole way, which checks the room and names what is refused.
    let added: Option<i64> = conn
        .prepare_cached(
            "UPDATE cart_items SET quantity = quantity + ?4
             WHERE store_id = ?1 AND terminal_id = ?2 AND sku = ?3 AND quantity + ?4 <= ?5
             RETURNING quantity",
        )?
        .query_row(params![store_id, terminal_id, sku, quantity, limits::MAX_LINE_QUANTITY], |r| r.get(0))
        .optional()?;
    if let Some(q) = added {
        return Ok(q);
    }
    let (lines, in_cart): (i64, bool) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(max(sku = ?3), 0) FROM cart_items WHERE store_id = ?1 AND terminal_id = ?2",
        )?
        .query_row(params![store_id, terminal_id, sku], |r| Ok((r.get(0)?, r.get(1)?)))?;
    domain::cart_has_room(store_id, terminal_id, usize::try_from(lines).unwrap_or(usize::MAX), in_cart)?;
    let q: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO cart_items (store_id, terminal_id, sku, quantity) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (store_id, terminal_id, sku) DO UPDATE SET quantity = quantity + excluded.quantity
                 WHERE quantity + excluded.quantity <= ?5
             RETURNING quantity",
        )?
        .query_row(params![store_id, terminal_id, sku, quantity, limits::MAX_LINE_QUANTITY], |r| r.get(0))
        .optional()?;
    q.ok_or_else(|| domain::cart_line_too_large(sku, quantity))
}

/// Sets a line's quantity; 0 removes it. Returns whether the sku was in the cart.
pub fn cart_set(conn: &Connection, store_id: &str, terminal_id: &str, sku: &str, quantity: i64) -> Result<bool> {
    let n = if quantity == 0 {
        conn.prepare_cached("DELETE FROM cart_items WHERE store_id = ?1 AND terminal_id = ?2 AND sku = ?3")?
            .execute(params![store_id, terminal_id, sku])?
    } else {
        conn.prepare_cached(
            "UPDATE cart_items SET quantity = ?4 WHERE store_id = ?1 AND terminal_id = ?2 AND sku = ?3",
        )?
        .execute(params![store_id, terminal_id, sku, quantity])?
    };
    Ok(n > 0)
}

pub fn cart_clear(conn: &Connection, store_id: &str, terminal_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM cart_items WHERE store_id = ?1 AND terminal_id = ?2")?
        .execute(params![store_id, terminal_id])?;
    Ok(())
}

/// The cart's (sku, quantity) lines in the order they were first added.
pub fn cart_items(conn: &Connection, store_id: &str, terminal_id: &str) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn
        .prepare_cached("SELECT sku, quantity FROM cart_items WHERE store_id = ?1 AND terminal_id = ?2 ORDER BY id")?;
    let rows = stmt.query_map(params![store_id, terminal_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The terminal's cart, each line priced from the catalog with the stock on hand in the store:
/// two statements, whatever the number of lines.
pub fn load_cart(conn: &Connection, store_id: &str, terminal_id: &str) -> Result<pb::Cart> {
    let items = cart_items(conn, store_id, terminal_id)?;
    let skus: Vec<&str> = items.iter().map(|(sku, _)| sku.as_str()).collect();
    let mut catalog = inventory::products_on_hand(conn, store_id, &skus)?;
    let lines = items
        .iter()
        .map(|(sku, quantity)| {
            let (product, on_hand) =
                catalog.remove(sku).ok_or_else(|| Error::not_found(format!("sku {sku:?} does not exist")))?;
            let total = domain::cart_line_total(product.price, sku, *quantity)?;
            Ok(pb::CartLine {
                sku: sku.clone(),
                name: product.name,
                unit_price: Some(product.price.to_proto()),
                quantity: *quantity,
                line_total: Some(total.to_proto()),
                stock_available: on_hand,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let amounts: Option<Vec<Money>> =
        lines.iter().map(|l| Money::from_proto("line_total", l.line_total.as_ref()).ok()).collect();
    let total =
        amounts.and_then(|a| a.first().copied().and_then(|first| Money::sum(first.currency, a))).map(Money::to_proto);
    Ok(pb::Cart { store_id: store_id.to_owned(), terminal_id: terminal_id.to_owned(), lines, total })
}

pub fn insert_sale(conn: &Connection, sale: &pb::Sale, created_at_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sales (sale_id, store_id, terminal_id, created_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![sale.sale_id, sale.store_id, sale.terminal_id, created_at_ms, sale.encode_to_vec()])?;
    Ok(())
}

pub fn update_sale(conn: &Connection, sale: &pb::Sale) -> Result<()> {
    conn.prepare_cached("UPDATE sales SET body = ?2 WHERE sale_id = ?1")?
        .execute(params![sale.sale_id, sale.encode_to_vec()])?;
    Ok(())
}

fn decode_sale(body: &[u8]) -> Result<pb::Sale> {
    pb::Sale::decode(body).map_err(|e| Error::Internal(anyhow::anyhow!("stored sale is corrupt: {e}")))
}

pub fn get_sale(conn: &Connection, sale_id: &str) -> Result<pb::Sale> {
    let body: Option<Vec<u8>> = conn
        .prepare_cached("SELECT body FROM sales WHERE sale_id = ?1")?
        .query_row([sale_id], |r| r.get(0))
        .optional()?;
    let body = body.ok_or_else(|| Error::not_found(format!("sale_id {sale_id:?} does not exist")))?;
    decode_sale(&body)
}

pub fn insert_refund(conn: &Connection, refund: &pb::Refund, created_at_ms: i64) -> Result<()> {
    conn.prepare_cached("INSERT INTO refunds (refund_id, sale_id, created_at_ms, body) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![refund.refund_id, refund.sale_id, created_at_ms, refund.encode_to_vec()])?;
    Ok(())
}
