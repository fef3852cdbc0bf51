//! The PostgreSQL implementation of [`InventoryStore`], for the distributed shape.
//!
//! It behaves exactly like the SQLite one (the conformance suite in `tests/conformance` runs the
//! same bodies against both). Tables live in schema `inventory`; the store-owned ones
//! (terminals, stock, store_sequences, outbox) have row-level security, so every store-scoped
//! operation runs in a transaction scoped to its store ([`pg::store_tx`]).
//!
//! Taking stock: a store's writers first take the store's next sequence number, which row-locks
//! the store's sequence row, and only then update stock rows. That serialises one store's stock
//! writers, so concurrent sales touching the same skus in different orders cannot deadlock, and
//! sequences commit without gaps. Each stock row is changed with one conditional `UPDATE`
//! (strict stores: `quantity + delta >= 0`), never read-modified-written.

use std::sync::Arc;

use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_platform::money::{Currency, Money};
use redstore_platform::pg::{self, Claim, PgMigration, PgPool};
use redstore_proto::events::{EventEnvelope, InventoryChanged, StockChange, event_envelope::Payload};
use redstore_proto::inventory as pb;
use redstore_proto::stream::{InventorySnapshot, SnapshotItem};
use sqlx::{PgConnection, Row as _};

use crate::domain::{OversellPolicy, Product, StockMovement};
use crate::repo::StoreRow;
use crate::store::{Idem, InventoryStore, ProductPatch};

/// Inventory's PostgreSQL migrations (schema `inventory`).
pub const PG_MIGRATIONS: &[PgMigration] =
    &[PgMigration { service: "inventory", version: 1, sql: include_str!("../migrations/postgres/0001_inventory.sql") }];

/// The schema holding inventory's tables, outbox and sequences.
const SCHEMA: &str = "inventory";

/// Rows per page when the snapshot reads a store's whole stock.
const SNAPSHOT_PAGE: i64 = 1000;

/// The distributed (PostgreSQL) implementation. Connect its pool as the application role (no
/// superuser, no BYPASSRLS) so that row-level security holds.
#[derive(Clone)]
pub struct PgInventory {
    pool: PgPool,
}

impl PgInventory {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self { pool })
    }
}

fn now_ms() -> i64 {
    redstore_platform::time::unix_ms(std::time::SystemTime::now())
}

/// Claims an idempotency key when one is given. `Some(answer)` means the request was done
/// before: answer with it and change nothing.
async fn claim_key<T: prost::Message + Default>(
    conn: &mut PgConnection,
    scope: &str,
    idem: &Idem,
) -> Result<Option<T>> {
    if idem.key.is_empty() {
        return Ok(None);
    }
    match pg::claim(conn, scope, &idem.key, &idem.fingerprint).await? {
        Claim::Fresh => Ok(None),
        Claim::Replay(stored) => pg::replay(&stored).map(Some),
    }
}

/// Stores the answer of a claimed key (a no-op without a key), in the work's transaction.
async fn complete_key(conn: &mut PgConnection, scope: &str, idem: &Idem, response: &impl prost::Message) -> Result<()> {
    if idem.key.is_empty() {
        return Ok(());
    }
    pg::complete(conn, scope, &idem.key, response).await
}

fn store_from_row(row: &sqlx::postgres::PgRow) -> Result<StoreRow> {
    Ok(StoreRow {
        store_id: row.try_get(0)?,
        name: row.try_get(1)?,
        policy: OversellPolicy::from_db(row.try_get::<&str, _>(2)?),
    })
}

async fn get_store(conn: &mut PgConnection, store_id: &str) -> Result<StoreRow> {
    let row = sqlx::query("SELECT store_id, name, oversell_policy FROM inventory.stores WHERE store_id = $1")
        .bind(store_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => store_from_row(&row),
        None => Err(Error::not_found(format!("store_id {store_id:?} does not exist"))),
    }
}

async fn product_exists(conn: &mut PgConnection, sku: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM inventory.products WHERE sku = $1)")
        .bind(sku)
        .fetch_one(&mut *conn)
        .await?)
}

async fn require_product(conn: &mut PgConnection, sku: &str) -> Result<()> {
    if product_exists(conn, sku).await? { Ok(()) } else { Err(Error::not_found(format!("sku {sku:?} does not exist"))) }
}

/// A product with its barcodes; `for_update` locks the product row (to patch it).
async fn find_product(conn: &mut PgConnection, sku: &str, for_update: bool) -> Result<Option<Product>> {
    let sql = if for_update {
        "SELECT name, currency_code, price_minor, active FROM inventory.products WHERE sku = $1 FOR UPDATE"
    } else {
        "SELECT name, currency_code, price_minor, active FROM inventory.products WHERE sku = $1"
    };
    let Some(row) = sqlx::query(sql).bind(sku).fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let currency: String = row.try_get(1)?;
    let currency = Currency::parse("currency_code", &currency)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored product {sku} has a bad currency: {e}")))?;
    let barcodes: Vec<String> =
        sqlx::query_scalar("SELECT gtin13 FROM inventory.product_barcodes WHERE sku = $1 ORDER BY gtin13")
            .bind(sku)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Some(Product {
        sku: sku.to_owned(),
        name: row.try_get(0)?,
        price: Money::new(currency, row.try_get(2)?),
        barcodes,
        active: row.try_get(3)?,
    }))
}

async fn get_product(conn: &mut PgConnection, sku: &str, for_update: bool) -> Result<Product> {
    find_product(conn, sku, for_update).await?.ok_or_else(|| Error::not_found(format!("sku {sku:?} does not exist")))
}

/// Gives a product these barcodes (in addition to those it has). A barcode of another product is
/// ALREADY_EXISTS naming its index. The upsert returns the owner even when a concurrent
/// transaction inserted the barcode first (it waits for that one to commit).
async fn write_barcodes(conn: &mut PgConnection, sku: &str, barcodes: &[Barcode]) -> Result<()> {
    for (i, b) in barcodes.iter().enumerate() {
        let owner: String = sqlx::query_scalar(
            "INSERT INTO inventory.product_barcodes (gtin13, sku) VALUES ($1, $2)
             ON CONFLICT (gtin13) DO UPDATE SET sku = inventory.product_barcodes.sku
             RETURNING sku",
        )
        .bind(b.gtin13())
        .bind(sku)
        .fetch_one(&mut *conn)
        .await?;
        if owner != sku {
            return Err(Error::AlreadyExists(format!("barcodes[{i}]: barcode {b} already belongs to sku {owner:?}")));
        }
    }
    Ok(())
}

fn stock_level(store_id: &str, sku: String, quantity: i64, last_seq: i64) -> pb::StockLevel {
    pb::StockLevel { store_id: store_id.to_owned(), sku, quantity, last_seq: last_seq as u64 }
}

async fn list_stock_in(
    conn: &mut PgConnection,
    store_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<pb::StockLevel>> {
    let rows = sqlx::query(
        "SELECT sku, quantity, last_seq FROM inventory.stock WHERE store_id = $1 AND sku > $2 ORDER BY sku LIMIT $3",
    )
    .bind(store_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok(stock_level(store_id, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
}

/// The outcome of applying movements: new levels, skus now negative, and the event written.
struct Applied {
    levels: Vec<pb::StockLevel>,
    negative_skus: Vec<String>,
    event: EventEnvelope,
}

/// Applies stock movements atomically in the caller's store-scoped transaction and appends one
/// `inventory.changed` event, exactly as `repo::apply_movements` does for SQLite. In a strict
/// store, a movement that would take a sku below zero fails the whole call with
/// FAILED_PRECONDITION; the caller then drops the transaction, which also returns the sequence
/// number. Callers check that the skus exist.
async fn apply_movements(
    conn: &mut PgConnection,
    store: &StoreRow,
    reason: &str,
    reference_id: &str,
    terminal_id: &str,
    movements: &[StockMovement],
) -> Result<Applied> {
    // First: this row-locks the store's sequence row and so serialises the store's stock writers.
    let seq = pg::next_seq(conn, SCHEMA, &store.store_id).await?;
    let strict = store.policy == OversellPolicy::Strict;
    let mut levels = Vec::with_capacity(movements.len());
    let mut changes = Vec::with_capacity(movements.len());
    let mut negative_skus = Vec::new();
    for m in movements {
        let guard = strict && m.delta < 0;
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE inventory.stock SET quantity = quantity + $3, last_seq = $4
             WHERE store_id = $1 AND sku = $2 AND (NOT $5 OR quantity + $3 >= 0)
             RETURNING quantity",
        )
        .bind(&store.store_id)
        .bind(&m.sku)
        .bind(m.delta)
        .bind(seq as i64)
        .bind(guard)
        .fetch_optional(&mut *conn)
        .await?;
        let quantity = match updated {
            Some(q) => q,
            None => {
                let available: Option<i64> =
                    sqlx::query_scalar("SELECT quantity FROM inventory.stock WHERE store_id = $1 AND sku = $2")
                        .bind(&store.store_id)
                        .bind(&m.sku)
                        .fetch_optional(&mut *conn)
                        .await?;
                if guard || available.is_some() {
                    let available = available.unwrap_or(0);
                    return Err(Error::precondition(
                        "STOCK",
                        format!("sku:{}", m.sku),
                        format!(
                            "insufficient stock of sku {:?} in store {:?}: requested {}, available {available} \
                             (the store does not sell below zero)",
                            m.sku, store.store_id, -m.delta
                        ),
                    ));
                }
                sqlx::query("INSERT INTO inventory.stock (store_id, sku, quantity, last_seq) VALUES ($1, $2, $3, $4)")
                    .bind(&store.store_id)
                    .bind(&m.sku)
                    .bind(m.delta)
                    .bind(seq as i64)
                    .execute(&mut *conn)
                    .await?;
                m.delta
            }
        };
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
    let event = pg::append_event_at(conn, SCHEMA, &store.store_id, seq, payload).await?;
    Ok(Applied { levels, negative_skus, event })
}

/// A sale or refund to apply once, keyed by its id.
struct Change<'a> {
    scope: &'static str,
    reason: &'static str,
    id: &'a str,
    fingerprint: &'a [u8],
}

impl PgInventory {
    /// Applies a sale's or refund's movements in one store transaction, once per id: a repeat
    /// answers with the first outcome and changes nothing.
    async fn apply_once(
        &self,
        change: Change<'_>,
        store_id: &str,
        terminal_id: &str,
        movements: &[StockMovement],
    ) -> Result<pb::ApplySaleResponse> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        if let Claim::Replay(stored) = pg::claim(&mut tx, change.scope, change.id, change.fingerprint).await? {
            return pg::replay(&stored);
        }
        let store = get_store(&mut tx, store_id).await?;
        for m in movements {
            require_product(&mut tx, &m.sku).await?;
        }
        let applied = apply_movements(&mut tx, &store, change.reason, change.id, terminal_id, movements).await?;
        let response = pb::ApplySaleResponse {
            stock: applied.levels,
            negative_skus: applied.negative_skus,
            store_seq: applied.event.store_seq,
        };
        pg::complete(&mut tx, change.scope, change.id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }
}

#[tonic::async_trait]
impl InventoryStore for PgInventory {
    async fn create_store(&self, idem: Idem, store: StoreRow) -> Result<pb::Store> {
        const SCOPE: &str = "inventory.create_store";
        let mut tx = pg::store_tx(&self.pool, &store.store_id).await?;
        if let Some(answer) = claim_key(&mut tx, SCOPE, &idem).await? {
            return Ok(answer);
        }
        let inserted = sqlx::query(
            "INSERT INTO inventory.stores (store_id, name, oversell_policy, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&store.store_id)
        .bind(&store.name)
        .bind(store.policy.as_db())
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if pg::is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(format!("store_id {:?} already exists", store.store_id)));
            }
            Err(e) => return Err(e.into()),
        }
        let response = store.to_proto();
        complete_key(&mut tx, SCOPE, &idem, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn get_store(&self, store_id: &str) -> Result<StoreRow> {
        let mut conn = self.pool.acquire().await?;
        get_store(&mut conn, store_id).await
    }

    async fn list_stores(&self, after: &str, limit: u32) -> Result<Vec<StoreRow>> {
        let rows = sqlx::query(
            "SELECT store_id, name, oversell_policy FROM inventory.stores WHERE store_id > $1
             ORDER BY store_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(store_from_row).collect()
    }

    async fn register_terminal(&self, idem: Idem, terminal: pb::Terminal) -> Result<pb::Terminal> {
        const SCOPE: &str = "inventory.register_terminal";
        let mut tx = pg::store_tx(&self.pool, &terminal.store_id).await?;
        if let Some(answer) = claim_key(&mut tx, SCOPE, &idem).await? {
            return Ok(answer);
        }
        get_store(&mut tx, &terminal.store_id).await?;
        let inserted = sqlx::query("INSERT INTO inventory.terminals (store_id, terminal_id, name) VALUES ($1, $2, $3)")
            .bind(&terminal.store_id)
            .bind(&terminal.terminal_id)
            .bind(&terminal.name)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if pg::is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(format!(
                    "terminal_id {:?} is already registered in store {:?}",
                    terminal.terminal_id, terminal.store_id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        complete_key(&mut tx, SCOPE, &idem, &terminal).await?;
        tx.commit().await?;
        Ok(terminal)
    }

    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM inventory.terminals WHERE store_id = $1 AND terminal_id = $2)",
        )
        .bind(store_id)
        .bind(terminal_id)
        .fetch_one(&mut *tx)
        .await?;
        if !found {
            get_store(&mut tx, store_id).await?;
            return Err(Error::not_found(format!(
                "terminal_id {terminal_id:?} is not registered in store {store_id:?}"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_terminals(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        get_store(&mut tx, store_id).await?;
        let rows = sqlx::query(
            "SELECT store_id, terminal_id, name FROM inventory.terminals WHERE store_id = $1 AND terminal_id > $2
             ORDER BY terminal_id LIMIT $3",
        )
        .bind(store_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok(pb::Terminal { store_id: r.try_get(0)?, terminal_id: r.try_get(1)?, name: r.try_get(2)? }))
            .collect()
    }

    async fn create_product(&self, idem: Idem, product: Product, barcodes: Vec<Barcode>) -> Result<pb::Product> {
        const SCOPE: &str = "inventory.create_product";
        let mut tx = self.pool.begin().await?;
        if let Some(answer) = claim_key(&mut tx, SCOPE, &idem).await? {
            return Ok(answer);
        }
        let inserted = sqlx::query(
            "INSERT INTO inventory.products (sku, name, currency_code, price_minor, active, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price.currency.as_str())
        .bind(product.price.minor)
        .bind(product.active)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if pg::is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(format!("sku {:?} already exists", product.sku)));
            }
            Err(e) => return Err(e.into()),
        }
        write_barcodes(&mut tx, &product.sku, &barcodes).await?;
        let response = get_product(&mut tx, &product.sku, false).await?.to_proto();
        complete_key(&mut tx, SCOPE, &idem, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn update_product(&self, idem: Idem, patch: ProductPatch) -> Result<pb::Product> {
        const SCOPE: &str = "inventory.update_product";
        let mut tx = self.pool.begin().await?;
        if let Some(answer) = claim_key(&mut tx, SCOPE, &idem).await? {
            return Ok(answer);
        }
        // Locked: concurrent patches of one product apply one after the other, none is lost.
        let mut product = get_product(&mut tx, &patch.sku, true).await?;
        patch.apply(&mut product);
        sqlx::query(
            "UPDATE inventory.products SET name = $2, currency_code = $3, price_minor = $4, active = $5,
             updated_at_ms = $6 WHERE sku = $1",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price.currency.as_str())
        .bind(product.price.minor)
        .bind(product.active)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if let Some(barcodes) = &patch.barcodes {
            sqlx::query("DELETE FROM inventory.product_barcodes WHERE sku = $1")
                .bind(&product.sku)
                .execute(&mut *tx)
                .await?;
            write_barcodes(&mut tx, &product.sku, barcodes).await?;
        }
        let response = get_product(&mut tx, &patch.sku, false).await?.to_proto();
        complete_key(&mut tx, SCOPE, &idem, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn get_product(&self, sku: &str) -> Result<Product> {
        let mut tx = self.pool.begin().await?;
        let product = get_product(&mut tx, sku, false).await?;
        tx.commit().await?;
        Ok(product)
    }

    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
        let mut tx = self.pool.begin().await?;
        let skus: Vec<String> = sqlx::query_scalar(
            "SELECT sku FROM inventory.products WHERE sku > $1 AND ($2 OR active) ORDER BY sku LIMIT $3",
        )
        .bind(after)
        .bind(include_inactive)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut products = Vec::with_capacity(skus.len());
        for sku in &skus {
            products.push(get_product(&mut tx, sku, false).await?);
        }
        tx.commit().await?;
        Ok(products)
    }

    async fn product_by_barcode(&self, barcode: &Barcode) -> Result<Product> {
        let mut tx = self.pool.begin().await?;
        let sku: Option<String> = sqlx::query_scalar("SELECT sku FROM inventory.product_barcodes WHERE gtin13 = $1")
            .bind(barcode.gtin13())
            .fetch_optional(&mut *tx)
            .await?;
        let sku = sku.ok_or_else(|| Error::not_found(format!("no product has barcode {barcode}")))?;
        let product = get_product(&mut tx, &sku, false).await?;
        tx.commit().await?;
        Ok(product)
    }

    async fn get_stock(&self, store_id: &str, sku: &str) -> Result<pb::StockLevel> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let row = sqlx::query("SELECT quantity, last_seq FROM inventory.stock WHERE store_id = $1 AND sku = $2")
            .bind(store_id)
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await?;
        let (quantity, last_seq) = match row {
            Some(row) => (row.try_get(0)?, row.try_get(1)?),
            None => {
                get_store(&mut tx, store_id).await?;
                require_product(&mut tx, sku).await?;
                (0, 0)
            }
        };
        tx.commit().await?;
        Ok(stock_level(store_id, sku.to_owned(), quantity, last_seq))
    }

    async fn list_stock(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        get_store(&mut tx, store_id).await?;
        let levels = list_stock_in(&mut tx, store_id, after, i64::from(limit)).await?;
        tx.commit().await?;
        Ok(levels)
    }

    async fn adjust_stock(
        &self,
        idem: Idem,
        store_id: &str,
        movement: StockMovement,
        reason: &'static str,
    ) -> Result<pb::AdjustStockResponse> {
        let scope = format!("inventory.adjust_stock:{store_id}");
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        // The key is required here: an empty one is claimed like any other, as SQLite does.
        if let Claim::Replay(stored) = pg::claim(&mut tx, &scope, &idem.key, &idem.fingerprint).await? {
            return pg::replay(&stored);
        }
        let store = get_store(&mut tx, store_id).await?;
        require_product(&mut tx, &movement.sku).await?;
        let adjustment_id = uuid::Uuid::now_v7().to_string();
        let applied = apply_movements(&mut tx, &store, reason, &adjustment_id, "", &[movement]).await?;
        let response = pb::AdjustStockResponse { stock: applied.levels.into_iter().next(), adjustment_id };
        pg::complete(&mut tx, &scope, &idem.key, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn apply_sale(
        &self,
        sale_id: &str,
        fingerprint: Vec<u8>,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        let change = Change { scope: "inventory.apply_sale", reason: "sale", id: sale_id, fingerprint: &fingerprint };
        self.apply_once(change, store_id, terminal_id, &movements).await
    }

    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        let fingerprint = format!("{store_id}/{terminal_id}/{movements:?}").into_bytes();
        let change =
            Change { scope: "inventory.apply_refund", reason: "refund", id: refund_id, fingerprint: &fingerprint };
        self.apply_once(change, store_id, terminal_id, &movements).await
    }

    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot> {
        // One REPEATABLE READ transaction: the stock and the sequence come from one snapshot. The
        // isolation level must be set before the first statement, so this begins the transaction
        // itself and then scopes it to the store as `pg::store_tx` would.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
        pg::scope_to_store(&mut tx, store_id).await?;
        get_store(&mut tx, store_id).await?;
        let as_of_seq = pg::last_seq(&mut tx, SCHEMA, store_id).await?;
        let mut after = String::new();
        let mut items = Vec::new();
        loop {
            let page = list_stock_in(&mut tx, store_id, &after, SNAPSHOT_PAGE).await?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.sku);
            items.extend(page.into_iter().map(|s| SnapshotItem { sku: s.sku, quantity: s.quantity }));
        }
        tx.commit().await?;
        Ok(InventorySnapshot { store_id: store_id.to_owned(), as_of_seq, items })
    }

    async fn events_after(&self, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let events = pg::events_after(&mut tx, SCHEMA, store_id, after, limit).await?;
        tx.commit().await?;
        Ok(events)
    }
}
