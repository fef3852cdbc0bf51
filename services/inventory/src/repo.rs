//! SQL for inventory, over the embedded database. Functions take a connection so they run the
//! same inside a write job (in the caller's transaction) or on a reader. Inventory's own: another
//! service joins inventory's writes through [`crate::local`].

use std::sync::Arc;

use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_platform::eventlog;
use redstore_platform::money::{Currency, Money};
use redstore_platform::{Topic, WriteCtx};
use redstore_proto::events::{EventEnvelope, InventoryChanged, StockChange, StockLoaded, event_envelope::Payload};
use redstore_proto::inventory as pb;
use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::{self, ImportProduct, OversellPolicy, Product, StockCount, StockMovement, StoreRow};

fn is_constraint(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub fn insert_store(conn: &Connection, store: &StoreRow, now_ms: i64) -> Result<()> {
    let res = conn
        .prepare_cached("INSERT INTO stores (store_id, name, oversell_policy, created_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![store.store_id, store.name, store.policy.as_db(), now_ms]);
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_constraint(&e) => {
            Err(Error::AlreadyExists(format!("store_id {:?} already exists", store.store_id)))
        }
        Err(e) => Err(e.into()),
    }
}

fn store_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreRow> {
    Ok(StoreRow { store_id: r.get(0)?, name: r.get(1)?, policy: OversellPolicy::from_db(&r.get::<_, String>(2)?) })
}

pub fn get_store(conn: &Connection, store_id: &str) -> Result<StoreRow> {
    conn.prepare_cached("SELECT store_id, name, oversell_policy FROM stores WHERE store_id = ?1")?
        .query_row([store_id], store_from_row)
        .optional()?
        .ok_or_else(|| Error::not_found(format!("store_id {store_id:?} does not exist")))
}

pub fn list_stores(conn: &Connection, after: &str, limit: u32) -> Result<Vec<StoreRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT store_id, name, oversell_policy FROM stores WHERE store_id > ?1 ORDER BY store_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], store_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn insert_terminal(conn: &Connection, t: &pb::Terminal) -> Result<()> {
    get_store(conn, &t.store_id)?;
    let res = conn
        .prepare_cached("INSERT INTO terminals (store_id, terminal_id, name) VALUES (?1, ?2, ?3)")?
        .execute(params![t.store_id, t.terminal_id, t.name]);
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_constraint(&e) => Err(Error::AlreadyExists(format!(
            "terminal_id {:?} is already registered in store {:?}",
            t.terminal_id, t.store_id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Fails with NOT_FOUND unless the store exists and the terminal is registered in it.
pub fn require_terminal(conn: &Connection, store_id: &str, terminal_id: &str) -> Result<()> {
    let found: bool = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM terminals WHERE store_id = ?1 AND terminal_id = ?2)")?
        .query_row([store_id, terminal_id], |r| r.get(0))?;
    if found {
        return Ok(());
    }
    get_store(conn, store_id)?;
    Err(Error::not_found(format!("terminal_id {terminal_id:?} is not registered in store {store_id:?}")))
}

pub fn list_terminals(conn: &Connection, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>> {
    get_store(conn, store_id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT store_id, terminal_id, name FROM terminals WHERE store_id = ?1 AND terminal_id > ?2
         ORDER BY terminal_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![store_id, after, limit], |r| {
        Ok(pb::Terminal { store_id: r.get(0)?, terminal_id: r.get(1)?, name: r.get(2)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn write_barcodes(conn: &Connection, sku: &str, barcodes: &[Barcode]) -> Result<()> {
    for (i, b) in barcodes.iter().enumerate() {
        let owner: Option<String> = conn
            .prepare_cached("SELECT sku FROM product_barcodes WHERE gtin13 = ?1")?
            .query_row([b.gtin13()], |r| r.get(0))
            .optional()?;
        match owner {
            Some(owner) if owner == sku => {}
            Some(owner) => {
                return Err(Error::AlreadyExists(format!(
                    "barcodes[{i}]: barcode {b} already belongs to sku {owner:?}"
                )));
            }
            None => {
                conn.prepare_cached("INSERT INTO product_barcodes (gtin13, sku) VALUES (?1, ?2)")?
                    .execute([b.gtin13(), sku])?;
            }
        }
    }
    Ok(())
}

pub fn insert_product(conn: &Connection, p: &Product, barcodes: &[Barcode], now_ms: i64) -> Result<()> {
    let res = conn
        .prepare_cached(
            "INSERT INTO products (sku, name, currency_code, price_minor, active, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![p.sku, p.name, p.price.currency.as_str(), p.price.minor, p.active, now_ms]);
    match res {
        Ok(_) => {}
        Err(e) if is_constraint(&e) => return Err(Error::AlreadyExists(format!("sku {:?} already exists", p.sku))),
        Err(e) => return Err(e.into()),
    }
    write_barcodes(conn, &p.sku, barcodes)
}

/// Writes a product's name, price and active flag, and when `barcodes` is given, makes them its
/// exact set of barcodes.
pub fn update_product(conn: &Connection, p: &Product, barcodes: Option<&[Barcode]>, now_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE products SET name = ?2, currency_code = ?3, price_minor = ?4, active = ?5, updated_at_ms = ?6
         WHERE sku = ?1",
    )?
    .execute(params![p.sku, p.name, p.price.currency.as_str(), p.price.minor, p.active, now_ms])?;
    if let Some(barcodes) = barcodes {
        conn.prepare_cached("DELETE FROM product_barcodes WHERE sku = ?1")?.execute([&p.sku])?;
        write_barcodes(conn, &p.sku, barcodes)?;
    }
    Ok(())
}

/// Name, price and active flag of a product, without its barcodes (the checkout hot path).
#[derive(Clone, Debug)]
pub struct ProductCore {
    pub name: String,
    pub price: Money,
    pub active: bool,
}

pub fn product_core(conn: &Connection, sku: &str) -> Result<Option<ProductCore>> {
    let row: Option<(String, String, i64, bool)> = conn
        .prepare_cached("SELECT name, currency_code, price_minor, active FROM products WHERE sku = ?1")?
        .query_row([sku], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(name, currency, minor, active)| product_core_of(sku, name, &currency, minor, active)).transpose()
}

fn product_core_of(sku: &str, name: String, currency: &str, minor: i64, active: bool) -> Result<ProductCore> {
    let currency = Currency::parse("currency_code", currency)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored product {sku} has a bad currency: {e}")))?;
    Ok(ProductCore { name, price: Money::new(currency, minor), active })
}

/// The sku a barcode belongs to and its product, in one statement (a scan's lookup).
pub fn product_by_barcode(conn: &Connection, barcode: &Barcode) -> Result<Option<(String, ProductCore)>> {
    let row: Option<(String, String, String, i64, bool)> = conn
        .prepare_cached(
            "SELECT p.sku, p.name, p.currency_code, p.price_minor, p.active
             FROM product_barcodes b JOIN products p ON p.sku = b.sku WHERE b.gtin13 = ?1",
        )?
        .query_row([barcode.gtin13()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    row.map(|(sku, name, currency, minor, active)| {
        let core = product_core_of(&sku, name, &currency, minor, active)?;
        Ok((sku, core))
    })
    .transpose()
}

/// Each existing sku of `skus` with its product and its units on hand in `store_id` (0 where
/// never stocked), read in one statement whatever their number: a cart's lines are priced on
/// every scan, and a statement per line was most of a scan's work.
pub fn products_on_hand(
    conn: &Connection,
    store_id: &str,
    skus: &[&str],
) -> Result<std::collections::HashMap<String, (ProductCore, i64)>> {
    let list = serde_json::to_string(skus).map_err(|e| Error::Internal(e.into()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT p.sku, p.name, p.currency_code, p.price_minor, p.active, coalesce(s.quantity, 0)
         FROM json_each(?2) j JOIN products p ON p.sku = j.value
         LEFT JOIN stock s ON s.store_id = ?1 AND s.sku = p.sku",
    )?;
    let mut rows = stmt.query(params![store_id, list])?;
    let mut found = std::collections::HashMap::with_capacity(skus.len());
    while let Some(r) = rows.next()? {
        let sku: String = r.get(0)?;
        let core = product_core_of(&sku, r.get(1)?, &r.get::<_, String>(2)?, r.get(3)?, r.get(4)?)?;
        found.insert(sku, (core, r.get(5)?));
    }
    Ok(found)
}

pub fn find_product(conn: &Connection, sku: &str) -> Result<Option<Product>> {
    let Some(core) = product_core(conn, sku)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT gtin13 FROM product_barcodes WHERE sku = ?1 ORDER BY gtin13")?;
    let barcodes = stmt.query_map([sku], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(Product { sku: sku.to_owned(), name: core.name, price: core.price, barcodes, active: core.active }))
}

/// Refuses movements of a sku that does not exist, naming the first.
pub fn require_skus(conn: &Connection, movements: &[StockMovement]) -> Result<()> {
    for m in movements {
        if product_core(conn, &m.sku)?.is_none() {
            return Err(Error::not_found(format!("sku {:?} does not exist", m.sku)));
        }
    }
    Ok(())
}

pub fn get_product(conn: &Connection, sku: &str) -> Result<Product> {
    find_product(conn, sku)?.ok_or_else(|| Error::not_found(format!("sku {sku:?} does not exist")))
}

/// The sku a barcode belongs to, if any.
pub fn sku_by_barcode(conn: &Connection, barcode: &Barcode) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT sku FROM product_barcodes WHERE gtin13 = ?1")?
        .query_row([barcode.gtin13()], |r| r.get(0))
        .optional()?)
}

pub fn list_products(conn: &Connection, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
    let skus: Vec<String> = {
        let mut stmt =
            conn.prepare_cached("SELECT sku FROM products WHERE sku > ?1 AND (?2 OR active) ORDER BY sku LIMIT ?3")?;
        stmt.query_map(params![after, include_inactive, limit], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    skus.iter().map(|sku| get_product(conn, sku)).collect()
}

/// Stock of a sku in a store; a sku never stocked there has 0.
pub fn get_stock(conn: &Connection, store_id: &str, sku: &str) -> Result<pb::StockLevel> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached("SELECT quantity, last_seq FROM stock WHERE store_id = ?1 AND sku = ?2")?
        .query_row([store_id, sku], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (quantity, last_seq) = match row {
        Some(row) => row,
        None => {
            get_store(conn, store_id)?;
            if product_core(conn, sku)?.is_none() {
                return Err(Error::not_found(format!("sku {sku:?} does not exist")));
            }
            (0, 0)
        }
    };
    Ok(pb::StockLevel { store_id: store_id.to_owned(), sku: sku.to_owned(), quantity, last_seq: last_seq as u64 })
}

pub fn list_stock(conn: &Connection, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sku, quantity, last_seq FROM stock WHERE store_id = ?1 AND sku > ?2 ORDER BY sku LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![store_id, after, limit], |r| {
        Ok(pb::StockLevel {
            store_id: store_id.to_owned(),
            sku: r.get(0)?,
            quantity: r.get(1)?,
            last_seq: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The outcome of applying movements: new levels, skus now negative, and the event written.
#[derive(Clone, Debug)]
pub struct Applied {
    pub levels: Vec<pb::StockLevel>,
    pub negative_skus: Vec<String>,
    pub event: Arc<EventEnvelope>,
}

/// Applies stock movements atomically in the caller's transaction and appends one
/// `inventory.changed` event. Each movement is decided in [`domain::decide_movement`]: in a strict
/// store one that would take a sku below zero fails the whole call with FAILED_PRECONDITION naming
/// the sku, requested and available quantities, and one that would take a level out of its range
/// is INVALID_ARGUMENT naming `field`. Callers check that the skus exist.
pub fn apply_movements(
    ctx: &mut WriteCtx<'_>,
    store: &StoreRow,
    reason: &str,
    reference_id: &str,
    terminal_id: &str,
    field: &str,
    movements: &[StockMovement],
) -> Result<Applied> {
    let seq = eventlog::next_seq(ctx, Topic::Inventory, &store.store_id)?;
    let mut levels = Vec::with_capacity(movements.len());
    let mut changes = Vec::with_capacity(movements.len());
    let mut negative_skus = Vec::new();
    for m in movements {
        let current: Option<i64> = ctx
            .conn
            .prepare_cached("SELECT quantity FROM stock WHERE store_id = ?1 AND sku = ?2")?
            .query_row([&store.store_id, &m.sku], |r| r.get(0))
            .optional()?;
        let quantity = domain::decide_movement(store.policy, &store.store_id, field, current.unwrap_or(0), m)?;
        let sql = if current.is_some() {
            "UPDATE stock SET quantity = ?3, last_seq = ?4 WHERE store_id = ?1 AND sku = ?2"
        } else {
            "INSERT INTO stock (store_id, sku, quantity, last_seq) VALUES (?1, ?2, ?3, ?4)"
        };
        ctx.conn.prepare_cached(sql)?.execute(params![store.store_id, m.sku, quantity, seq as i64])?;
        if quantity < 0 {
            negative_skus.push(m.sku.clone());
        }
        changes.push(StockChange {
            sku: m.sku.clone(),
            delta: m.delta,
            quantity_after: quantity,
            negative: quantity < 0,
        });
        levels.push(pb::StockLevel { store_id: store.store_id.clone(), sku: m.sku.clone(), quantity, last_seq: seq });
    }
    let payload = Payload::InventoryChanged(InventoryChanged {
        reason: reason.to_owned(),
        reference_id: reference_id.to_owned(),
        terminal_id: terminal_id.to_owned(),
        changes,
    });
    let event = eventlog::append_at(ctx, Topic::Inventory, &store.store_id, seq, payload)?;
    Ok(Applied { levels, negative_skus, event })
}

/// Creates or replaces a batch of products, each with exactly its barcodes, in the caller's
/// transaction. Every product of the batch loses its barcodes before any gets its new ones, so
/// barcodes may move between products of one batch; a barcode of a product outside the batch
/// refuses the batch, naming `products[i].barcodes[j]`.
pub fn import_products(conn: &Connection, products: &[ImportProduct], now_ms: i64) -> Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO products (sku, name, currency_code, price_minor, active, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, currency_code = excluded.currency_code,
             price_minor = excluded.price_minor, active = excluded.active, updated_at_ms = excluded.updated_at_ms",
    )?;
    let mut clear = conn.prepare_cached("DELETE FROM product_barcodes WHERE sku = ?1")?;
    for ImportProduct { product: p, .. } in products {
        upsert.execute(params![p.sku, p.name, p.price.currency.as_str(), p.price.minor, p.active, now_ms])?;
        clear.execute([&p.sku])?;
    }
    let mut owner = conn.prepare_cached("SELECT sku FROM product_barcodes WHERE gtin13 = ?1")?;
    let mut insert = conn.prepare_cached("INSERT INTO product_barcodes (gtin13, sku) VALUES (?1, ?2)")?;
    for (i, ImportProduct { product, barcodes }) in products.iter().enumerate() {
        for (j, b) in barcodes.iter().enumerate() {
            if let Some(owner) = owner.query_row([b.gtin13()], |r| r.get::<_, String>(0)).optional()? {
                return Err(barcode_taken(i, j, b, &owner));
            }
            insert.execute([b.gtin13(), &product.sku])?;
        }
    }
    Ok(())
}

/// A barcode of an imported product that belongs to a product outside the batch.
pub fn barcode_taken(i: usize, j: usize, barcode: &Barcode, owner: &str) -> Error {
    domain::bad_record(
        format!("products[{i}].barcodes[{j}]"),
        format!("barcode {barcode} belongs to sku {owner:?}, which this batch does not list"),
    )
}

/// Refuses a batch of counts in a store or of a sku that does not exist
/// ([`domain::check_counted_exist`]), one lookup per store and per sku.
pub fn check_counted_exist(conn: &Connection, stores: &[(String, Vec<StockCount>)]) -> Result<()> {
    let mut store = conn.prepare_cached("SELECT 1 FROM stores WHERE store_id = ?1")?;
    let mut product = conn.prepare_cached("SELECT 1 FROM products WHERE sku = ?1")?;
    let mut known_stores = std::collections::HashSet::new();
    for (store_id, _) in stores {
        if store.query_row([store_id], |_| Ok(())).optional()?.is_some() {
            known_stores.insert(store_id.as_str());
        }
    }
    let mut known_skus = std::collections::HashSet::new();
    for (_, counts) in stores {
        for c in counts {
            if !known_skus.contains(c.sku.as_str()) && product.query_row([&c.sku], |_| Ok(())).optional()?.is_some() {
                known_skus.insert(c.sku.as_str());
            }
        }
    }
    domain::check_counted_exist(stores, |s| known_stores.contains(s), |s| known_skus.contains(s))
}

/// Sets a store's counts in the caller's transaction ([`domain::counted_level`]) and appends one
/// `inventory.stock_loaded` event (reason `import`, reference `reference_id`) under the store's
/// next sequence: consumers re-read the store's levels. The caller checked that the store and the
/// skus exist ([`check_counted_exist`]).
pub fn import_counts(
    ctx: &mut WriteCtx<'_>,
    store_id: &str,
    counts: &[StockCount],
    reference_id: &str,
) -> Result<Arc<EventEnvelope>> {
    let seq = eventlog::next_seq(ctx, Topic::Inventory, store_id)?;
    let mut write = ctx.conn.prepare_cached(
        "INSERT INTO stock (store_id, sku, quantity, last_seq) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (store_id, sku) DO UPDATE SET quantity = excluded.quantity, last_seq = excluded.last_seq",
    )?;
    for c in counts {
        write.execute(params![store_id, c.sku, domain::counted_level(c), seq as i64])?;
    }
    drop(write);
    let payload = Payload::StockLoaded(StockLoaded {
        reason: domain::IMPORT_REASON.to_owned(),
        reference_id: reference_id.to_owned(),
    });
    eventlog::append_at(ctx, Topic::Inventory, store_id, seq, payload)
}
