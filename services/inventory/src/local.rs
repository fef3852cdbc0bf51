//! Inventory's part in another service's write, in one process on the embedded database: what
//! sales may read of inventory and change in it inside its own SQLite transaction, so that a
//! checkout or a refund commits with its stock in one transaction. This is the contract; the
//! tables and their SQL (`repo`) stay inventory's own. (On PostgreSQL the same part is
//! `crate::pg::decide_parts` with `crate::pg::PartsWrite`.)

use redstore_platform::WriteCtx;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use rusqlite::Connection;

use crate::domain::{ChargedPrice, StockMovement, StoreRow, check_charged};
use crate::repo;

pub use crate::repo::{Applied, ProductCore};

/// The store, or NOT_FOUND naming `store_id`.
pub fn require_store(conn: &Connection, store_id: &str) -> Result<StoreRow> {
    repo::get_store(conn, store_id)
}

/// Ok when the terminal is registered in the store; NOT_FOUND naming what is missing otherwise.
pub fn require_terminal(conn: &Connection, store_id: &str, terminal_id: &str) -> Result<()> {
    repo::require_terminal(conn, store_id, terminal_id)
}

/// A product's name, price and whether it is for sale; `None` for a sku that does not exist.
pub fn product(conn: &Connection, sku: &str) -> Result<Option<ProductCore>> {
    repo::product_core(conn, sku)
}

/// The sku a barcode belongs to and its product, if any.
pub fn product_by_barcode(conn: &Connection, barcode: &Barcode) -> Result<Option<(String, ProductCore)>> {
    repo::product_by_barcode(conn, barcode)
}

/// Each existing sku of `skus` with its product and its units on hand in the store (0 for one
/// never stocked there), in one read.
pub fn products_on_hand(
    conn: &Connection,
    store_id: &str,
    skus: &[&str],
) -> Result<std::collections::HashMap<String, (ProductCore, i64)>> {
    repo::products_on_hand(conn, store_id, skus)
}

/// Applies a sale's lines in the caller's transaction: validates the store and every sku (and the
/// prices charged, if any), then takes the stock under the store's policy, with its
/// `inventory.changed` event. Inventory's own `apply_sale` uses it too.
pub fn apply_sale(
    ctx: &mut WriteCtx<'_>,
    store_id: &str,
    terminal_id: &str,
    sale_id: &str,
    movements: &[StockMovement],
    charged: &[ChargedPrice],
) -> Result<Applied> {
    let store = repo::get_store(ctx.conn, store_id)?;
    let mut catalog = std::collections::HashMap::with_capacity(movements.len());
    for m in movements {
        let Some(core) = repo::product_core(ctx.conn, &m.sku)? else {
            return Err(Error::not_found(format!("sku {:?} does not exist", m.sku)));
        };
        catalog.insert(m.sku.as_str(), (core.price, core.active));
    }
    check_charged(charged, |sku| catalog.get(sku).copied())?;
    repo::apply_movements(ctx, &store, "sale", sale_id, terminal_id, "lines", movements)
}

/// Puts a refund's units back in the caller's transaction (positive movements), with its
/// `inventory.changed` event (reason "refund"). Idempotency is the caller's: its refund is.
pub fn return_refunded(
    ctx: &mut WriteCtx<'_>,
    store_id: &str,
    refund_id: &str,
    terminal_id: &str,
    movements: &[StockMovement],
) -> Result<Applied> {
    let store = repo::get_store(ctx.conn, store_id)?;
    repo::require_skus(ctx.conn, movements)?;
    repo::apply_movements(ctx, &store, "refund", refund_id, terminal_id, "lines", movements)
}
