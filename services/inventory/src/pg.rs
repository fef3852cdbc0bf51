//! The PostgreSQL implementation of [`InventoryStore`], for the distributed shape.
//!
//! It behaves exactly like the SQLite one (the conformance suite in `tests/conformance` runs the
//! same bodies against both). Tables live in schema `inventory`; the store-owned ones
//! (terminals, stock, store_sequences, outbox) have row-level security, so every store-scoped
//! operation runs in a transaction scoped to its store ([`pg::store_tx`]).
//!
//! Stock changes (sales, refunds, adjustments) are batches (`batch`): a store's sequence row is
//! locked, its stock read, the changes decided in Rust (`crate::domain`) and written with one
//! statement. A refund or an adjustment is a batch of one in a transaction of its own
//! (`PgInventory::apply_change`).
//!
//! Taking stock: a store's writers first lock the store's sequence row, and only then read and
//! write stock rows. That serialises one store's stock writers, so concurrent sales touching the
//! same skus in different orders cannot deadlock, and sequences commit without gaps.

use std::sync::Arc;

use redstore_platform::barcode::Barcode;
use redstore_platform::batch::StoreBatcher;
use redstore_platform::error::{Error, Result};
use redstore_platform::money::{Currency, Money};
use redstore_platform::pg::{self, Claim, PgPool, PgSchema};
use redstore_proto::events::{EventEnvelope, StockChange};
use redstore_proto::inventory as pb;
use redstore_proto::stream::{InventorySnapshot, SnapshotItem};
use sqlx::{PgConnection, Row as _};

use crate::domain::StoreRow;
use crate::domain::{ImportProduct, OversellPolicy, Product, StockCount, StockMovement};
use crate::store::{
    AppliedCheckout, CheckoutsQuery, Idem, ImportTotals, Imported, InventoryStore, ProductPatch, SaleOrder,
    StockBatches, stored_checkout_answer,
};

mod batch;
mod import;

use batch::{Answer, DecidedChanges, Kind};
pub use batch::{
    AppliedSales, DecidedSales, JoinedCall, PartsWrite, SaleToApply, StoreSales, apply_sales_in, decide_parts,
    decide_sales,
};

/// Inventory's PostgreSQL migrations (`migrations/postgres`), in schema `inventory`.
pub static PG_SCHEMA: PgSchema = PgSchema { name: SCHEMA, migrator: &sqlx::migrate!("migrations/postgres") };

/// The schema holding inventory's tables, outbox and sequences.
const SCHEMA: &str = "inventory";

/// Rows per page when the snapshot reads a store's whole stock.
const SNAPSHOT_PAGE: i64 = 1000;

/// The distributed (PostgreSQL) implementation. Connect its pool as the application role (no
/// superuser, no BYPASSRLS) so that row-level security holds.
#[derive(Clone)]
pub struct PgInventory {
    pool: PgPool,
    /// `apply_sale` by group commit: each store's queued sales in one transaction per batch.
    sales: Arc<StoreBatcher<batch::SaleJob>>,
}

impl PgInventory {
    pub fn new(pool: PgPool) -> Arc<Self> {
        let sales = Arc::new(batch::sale_batcher(pool.clone()));
        Arc::new(Self { pool, sales })
    }

    /// The stores with checkouts applied before `before_ms` (what [`PgInventory::expire_checkouts`]
    /// deletes), in one statement reading only those rows (`inventory.stores_applied_between`,
    /// migration 0010).
    pub async fn stores_with_checkouts_before(&self, before_ms: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT inventory.stores_applied_between(0, $1)")
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Forgets the store's checkouts applied before `before_ms` (the key retention) under their
    /// keys. At most a chunk at a time; how many it deleted.
    pub async fn expire_checkouts(&self, store_id: &str, before_ms: i64) -> Result<u64> {
        pg::expire_in_store(
            &self.pool,
            store_id,
            "DELETE FROM inventory.checkouts WHERE ctid IN (
                 SELECT ctid FROM inventory.checkouts WHERE store_id = $1 AND applied_at_ms < $2 LIMIT $3)",
            before_ms,
        )
        .await
    }
}

fn interrupted(sale_id: &str) -> Error {
    Error::unavailable(format!("applying sale {sale_id:?} was interrupted; retry it with the same sale id"))
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
        None => Err(no_store(store_id)),
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

fn no_store(store_id: &str) -> Error {
    Error::not_found(format!("store_id {store_id:?} does not exist"))
}

fn no_terminal(store_id: &str, terminal_id: &str) -> Error {
    Error::not_found(format!("terminal_id {terminal_id:?} is not registered in store {store_id:?}"))
}

/// Stock levels and the event's stock changes of applied movements.
fn applied(
    store_id: &str,
    movements: &[StockMovement],
    seq: u64,
    quantities: &[i64],
) -> (Vec<pb::StockLevel>, Vec<StockChange>) {
    movements
        .iter()
        .zip(quantities)
        .map(|(m, &quantity)| {
            (
                pb::StockLevel { store_id: store_id.to_owned(), sku: m.sku.clone(), quantity, last_seq: seq },
                StockChange { sku: m.sku.clone(), delta: m.delta, quantity_after: quantity, negative: quantity < 0 },
            )
        })
        .unzip()
}

/// A sale's (or refund's) answer: the stock levels it left, which of them are below zero, and its
/// store sequence.
fn sale_answer(levels: Vec<pb::StockLevel>, seq: u64) -> pb::ApplySaleResponse {
    pb::ApplySaleResponse {
        negative_skus: levels.iter().filter(|l| l.quantity < 0).map(|l| l.sku.clone()).collect(),
        stock: levels,
        store_seq: seq,
        ..Default::default()
    }
}

impl PgInventory {
    /// Applies one refund or adjustment in a transaction of its own: decided as a batch of one
    /// ([`batch::decide_changes`]), written with one statement, committed, then notified. Of two
    /// attempts at one key at once, the later one's write fails on the key the first one took;
    /// run again, it finds the first one's answer and replays it.
    async fn apply_change(&self, kind: Kind<'_>, store_id: &str, change: SaleToApply<'_>) -> Result<Answer> {
        let parts = [StoreSales { store_id, sales: std::slice::from_ref(&change) }];
        let mut raced = false;
        let decided = loop {
            let mut tx = pg::begin(&self.pool, "BEGIN").await?;
            let decided = batch::decide_changes(&mut tx, kind, &parts).await?;
            match DecidedChanges::write_all(&decided, &mut tx).await {
                Err(err) if !raced && pg::lost_unique_race(&err) => raced = true,
                written => {
                    written?;
                    tx.commit().await?;
                    break decided;
                }
            }
        };
        let undecided = || Error::Internal(anyhow::anyhow!("a change of store {store_id:?} was left undecided"));
        let mut decided = decided.into_iter().next().ok_or_else(undecided)?;
        if let Some(seq) = decided.last_seq {
            pg::notify_committed(&self.pool, SCHEMA, store_id, seq).await;
        }
        decided.outcomes.pop().unwrap_or_else(|| Err(undecided()))
    }
}

/// The catalog read of products by sku, barcodes included, in one statement.
const PRODUCTS_BY_SKU: &str = "SELECT p.sku, p.name, p.currency_code, p.price_minor, p.active,
        ARRAY(SELECT b.gtin13 FROM inventory.product_barcodes b WHERE b.sku = p.sku ORDER BY b.gtin13)
     FROM inventory.products p WHERE p.sku = ANY($1)";

fn product_from_row(row: &sqlx::postgres::PgRow) -> Result<Product> {
    let sku: String = row.try_get(0)?;
    let currency: String = row.try_get(2)?;
    let currency = Currency::parse("currency_code", &currency)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored product {sku} has a bad currency: {e}")))?;
    Ok(Product {
        name: row.try_get(1)?,
        price: Money::new(currency, row.try_get(3)?),
        active: row.try_get(4)?,
        barcodes: row.try_get(5)?,
        sku,
    })
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
        // One round trip: the function scopes its own (implicit) transaction to the store.
        let status: String = sqlx::query_scalar("SELECT inventory.terminal_status($1, $2)")
            .bind(store_id)
            .bind(terminal_id)
            .fetch_one(&self.pool)
            .await?;
        match status.as_str() {
            "ok" => Ok(()),
            "no_terminal" => Err(no_terminal(store_id, terminal_id)),
            _ => Err(no_store(store_id)),
        }
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
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
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
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
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
        let row = sqlx::query(PRODUCTS_BY_SKU).bind([sku]).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => product_from_row(&row),
            None => Err(Error::not_found(format!("sku {sku:?} does not exist"))),
        }
    }

    async fn get_products(&self, skus: &[String]) -> Result<Vec<Option<Product>>> {
        let rows = sqlx::query(PRODUCTS_BY_SKU).bind(skus).fetch_all(&self.pool).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let product = product_from_row(row)?;
            found.insert(product.sku.clone(), product);
        }
        Ok(skus.iter().map(|sku| found.get(sku).cloned()).collect())
    }

    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
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
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
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
        let adjustment_id = uuid::Uuid::now_v7().to_string();
        // The key is required here: an empty one is claimed like any other, as SQLite does.
        let kind = Kind::Adjustment { scope: &scope, reason, adjustment_id: &adjustment_id };
        let movements = [movement];
        let change = SaleToApply {
            sale_id: &idem.key,
            request: &idem.fingerprint,
            terminal_id: "",
            movements: &movements,
            charged: &[],
            checkout: None,
        };
        self.apply_change(kind, store_id, change).await?.into_adjustment()
    }

    async fn apply_sale(&self, store_id: &str, sale: SaleOrder) -> Result<pb::ApplySaleResponse> {
        let sale_id = sale.sale_id.clone();
        let outcome = self.apply_sales(store_id, vec![sale]).await.pop();
        outcome.unwrap_or_else(|| Err(interrupted(&sale_id)))
    }

    async fn apply_sales(&self, store_id: &str, sales: Vec<SaleOrder>) -> Vec<Result<pb::ApplySaleResponse>> {
        self.apply_chain_sales(sales.into_iter().map(|sale| (store_id.to_owned(), sale)).collect()).await
    }

    async fn apply_chain_sales(&self, sales: Vec<(String, SaleOrder)>) -> Vec<Result<pb::ApplySaleResponse>> {
        // By group commit (see `batch`): the sales queued in a lane share one transaction, whatever
        // their stores; queued together, a call's sales of a lane mostly share one batch.
        let mut answers = Vec::with_capacity(sales.len());
        let mut lanes: std::collections::BTreeMap<String, Vec<batch::SaleJob>> = std::collections::BTreeMap::new();
        for (store_id, sale) in sales {
            let (reply, answer) = tokio::sync::oneshot::channel();
            answers.push((sale.sale_id.clone(), answer));
            if let Err(err) = pg::check_store_id(&store_id) {
                let _ = reply.send(Err(err));
                continue;
            }
            let lane = redstore_platform::batch::lane(&store_id, batch::LANES);
            lanes.entry(lane).or_default().push(batch::SaleJob { store_id, sale, reply });
        }
        for (lane, jobs) in lanes {
            self.sales.submit_all(&lane, jobs);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for (sale_id, answer) in answers {
            outcomes.push(answer.await.unwrap_or_else(|_| Err(interrupted(&sale_id))));
        }
        outcomes
    }

    async fn applied_checkouts(&self, store_id: &str, query: CheckoutsQuery) -> Result<Vec<AppliedCheckout>> {
        let (after_ms, after_key) = query.after.clone().unwrap_or((i64::MIN, String::new()));
        // Keys only: an index-only scan of checkouts_by_time.
        let columns = if query.keys_only { "NULL::BYTEA, NULL::BYTEA" } else { "answer, request" };
        let only = if query.keys.is_empty() { "" } else { "AND checkout_key = ANY ($7)" };
        let sql = format!(
            "SELECT checkout_key, applied_at_ms, {columns} FROM inventory.checkouts
             WHERE store_id = $1 AND applied_at_ms >= $2 AND applied_at_ms < $3
               AND (applied_at_ms, checkout_key) > ($4, $5) {only}
             ORDER BY applied_at_ms, checkout_key LIMIT $6"
        );
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let mut select = sqlx::query(&sql)
            .bind(store_id)
            .bind(query.from_ms)
            .bind(query.before_ms)
            .bind(after_ms)
            .bind(&after_key)
            .bind(i64::from(query.limit));
        if !query.keys.is_empty() {
            select = select.bind(&query.keys);
        }
        let rows = select.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get(0)?;
            let applied_at_ms = row.try_get(1)?;
            let Some(answer) = row.try_get::<Option<&[u8]>, _>(2)? else {
                listed.push(AppliedCheckout { key, applied_at_ms, ..AppliedCheckout::default() });
                continue;
            };
            let answer = stored_checkout_answer(&key, answer)?;
            listed.push(AppliedCheckout { key, fingerprint: row.try_get(3)?, applied_at_ms, answer });
        }
        Ok(listed)
    }

    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        let fingerprint = format!("{store_id}/{terminal_id}/{movements:?}").into_bytes();
        let change = SaleToApply {
            sale_id: refund_id,
            request: &fingerprint,
            terminal_id,
            movements: &movements,
            charged: &[],
            checkout: None,
        };
        self.apply_change(Kind::Refund, store_id, change).await?.into_sale()
    }

    async fn import_products(&self, idem: Idem, products: Vec<ImportProduct>) -> Result<Imported> {
        import::import_products(&self.pool, &idem, &products).await
    }

    async fn import_stock(&self, idem: Idem, stores: Vec<(String, Vec<StockCount>)>) -> Result<Imported> {
        import::import_stock(&self.pool, &idem, &stores).await
    }

    async fn import_stock_stream(&self, batches: StockBatches<'_>) -> Result<ImportTotals> {
        import::import_stock_stream(&self.pool, batches).await
    }

    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot> {
        // The stock and the sequence come from one snapshot.
        let mut tx = pg::store_snapshot(&self.pool, store_id).await?;
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
