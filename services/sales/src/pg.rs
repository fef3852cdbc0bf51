//! The PostgreSQL implementation of [`SalesStore`], for the distributed shape.
//!
//! Sales keep their own tables (schema `sales`, every table with row-level security, so each
//! operation runs in a transaction scoped to its store with [`pg::store_tx`]); inventory is
//! another service. It behaves exactly like [`SqliteSales`] (the conformance suite in
//! `tests/conformance` runs the same bodies against both). A checkout goes one of two ways:
//!
//! - Inventory in the same process and database ([`PgSales::with_local_inventory`], what
//!   `redstore up --database-url` and `redstore serve sales` without `--inventory-url` run): by
//!   group commit, a batch of a store's checkouts per transaction, sales and stock together
//!   (see `pg/batch.rs`).
//! - Inventory elsewhere, reached through [`InventoryStore`] ([`PgSales::new`]; over gRPC between
//!   processes): by a saga whose every step is idempotent, so a retry, a concurrent duplicate or
//!   a crash heals. A store's checkouts are batched here too (`batch::saga_batch`). A checkout
//!   with lines is recorded only once inventory applied it: inventory is asked about the whole
//!   batch at once, each sale under its checkout's key and keeping the drafted sale, so a retry
//!   with a fresh sale id is answered with the first attempt's sale, then one statement records
//!   the sales applied; [`PgSales::record_applied`] records what an attempt left applied and
//!   unrecorded (see `batch::applied_batch`). A checkout of a cart takes the steps below, each
//!   once for the batch (one transaction records them pending, inventory is asked about all of
//!   them at once, one transaction completes them), and alone when the batch cannot finish it
//!   (its key points at a sale left pending):
//!
//! 1. Look the idempotency key up: the same key with another request is ALREADY_EXISTS, a
//!    completed sale is answered again, a pending one is finished (step 3) with its own id.
//!    Otherwise check the terminal, price the lines (the request's or the cart's) from the
//!    catalog and settle the tenders.
//! 2. Transaction A records the sale `pending`, priced, under the unique (store, key): of
//!    concurrent duplicates one inserts, the others find its row (step 1 again).
//! 3. Transaction B locks the pending row (so attempts on one sale run one after the other) and
//!    asks inventory to apply the sale, idempotent by sale id (and by the checkout's key, so that
//!    a key reused for a checkout with lines is refused there, not applied). If inventory refuses
//!    (FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT) the pending row is deleted: the failed
//!    checkout leaves no trace and its key can be used again. Otherwise B ends (it wrote nothing)
//!    and one call of `sales.complete_sale` (migration 0012, its own transaction) makes the sale
//!    `completed` if it is still pending, writes its `sale.completed` event to the outbox and
//!    clears the cart it came from, all at once; an attempt racing it gets inventory's stored
//!    answer and changes nothing. Any other failure (inventory unreachable, a crash) leaves the
//!    sale pending: a retry with the key, or [`PgSales::resume_pending`], finishes it.
//!
//! Step 1 drafts first (reads only) and looks the key up in transaction A when the insert finds
//! it taken, or on its own when the draft fails — the same answers, one transaction fewer.
//!
//! Refunds lock the sale row, put the stock back through inventory (idempotent by a refund id
//! derived from the idempotency key, so a retry after a crash re-applies the same refund) and
//! record the refund, its event and the key's answer in one transaction.
//!
//! Inventory is called while a sales transaction is open (the row lock of step 3, and refunds):
//! give the sales pool its own connections rather than sharing one with a PostgreSQL inventory.
//!
//! [`SqliteSales`]: crate::store::SqliteSales

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message as _;
use redstore_inventory::InventoryStore;
use redstore_inventory::domain::{Product, StockMovement, sale_movements};
use redstore_inventory::pg::PgInventory;
use redstore_inventory::store::{AppliedCheckout, CheckoutKey, CheckoutsQuery, SaleOrder, checkout_key_scope};
use redstore_platform::batch::StoreBatcher;
use redstore_platform::error::{Error, Result};
use redstore_platform::idempotency::key_reused;
use redstore_platform::money::Money;
use redstore_platform::pg::{self, Claim, PgMigration, PgPool};
use redstore_platform::time::{timestamp, unix_ms};
use redstore_proto::events::EventEnvelope;
use redstore_proto::inventory as inv;
use redstore_proto::sales::*;
use sqlx::{PgConnection, Row as _};

use crate::catalog::{self, Catalog};
use crate::domain::{self, PricedLine};
use crate::events::{sale_completed, sale_refunded};
mod batch;

use crate::store::{CheckoutOrder, RefundOrder, SalesStore, ScanOrder, empty_cart, record_refund, refund_lines};

/// Sales' PostgreSQL migrations (schema `sales`).
pub const PG_MIGRATIONS: &[PgMigration] = &[
    PgMigration { service: "sales", version: 1, sql: include_str!("../migrations/postgres/0001_sales.sql") },
    PgMigration { service: "sales", version: 2, sql: include_str!("../migrations/postgres/0002_complete_sale.sql") },
    PgMigration { service: "sales", version: 3, sql: include_str!("../migrations/postgres/0003_relay_cursor.sql") },
    PgMigration { service: "sales", version: 4, sql: include_str!("../migrations/postgres/0004_take_from_cart.sql") },
    PgMigration { service: "sales", version: 5, sql: include_str!("../migrations/postgres/0005_store_calls.sql") },
    PgMigration {
        service: "sales",
        version: 6,
        sql: include_str!("../migrations/postgres/0006_outbox_without_position.sql"),
    },
    PgMigration {
        service: "sales",
        version: 7,
        sql: include_str!("../migrations/postgres/0007_record_applied_sales.sql"),
    },
    PgMigration {
        service: "sales",
        version: 8,
        sql: include_str!("../migrations/postgres/0008_checkout_key_retention.sql"),
    },
    PgMigration { service: "sales", version: 9, sql: include_str!("../migrations/postgres/0009_store_parts.sql") },
    PgMigration { service: "sales", version: 10, sql: include_str!("../migrations/postgres/0010_chain_sweeps.sql") },
    PgMigration { service: "sales", version: 11, sql: include_str!("../migrations/postgres/0011_set_based_parts.sql") },
    PgMigration {
        service: "sales",
        version: 12,
        sql: include_str!("../migrations/postgres/0012_events_encoded_in_rust.sql"),
    },
];

/// The schema holding sales' tables, outbox and sequences.
const SCHEMA: &str = "sales";

/// The idempotency scope of refunds (keys are chain-wide, as in the embedded shape).
const REFUND_SCOPE: &str = "sales.refund";

/// How often a checkout looks its key up again after losing a race (a concurrent attempt
/// inserted the key first, or deleted its pending sale when inventory refused it).
const CHECKOUT_ROUNDS: usize = 8;

/// The distributed (PostgreSQL) implementation. Connect its pool as the application role (no
/// superuser, no BYPASSRLS) so that row-level security holds.
#[derive(Clone)]
pub struct PgSales {
    pool: PgPool,
    inventory: Arc<dyn InventoryStore>,
    /// Terminals and products as inventory last said (checkouts price from it).
    catalog: Arc<Catalog>,
    /// Checkouts by group commit, when inventory is in the same database and process.
    batcher: Option<Arc<StoreBatcher<batch::Job>>>,
}

impl PgSales {
    /// Sales over an inventory reached through the [`InventoryStore`] trait (another process, or
    /// another database): checkouts run the saga described above.
    pub fn new(pool: PgPool, inventory: Arc<dyn InventoryStore>) -> Arc<Self> {
        Self::batched(pool, inventory, false)
    }

    /// Sales beside a [`PgInventory`] on the same database (`pool` connects to the database
    /// `inventory` uses): checkouts go by group commit, each store's in batches of one
    /// transaction each (see `pg/batch.rs`).
    pub fn with_local_inventory(pool: PgPool, inventory: Arc<PgInventory>) -> Arc<Self> {
        Self::batched(pool, inventory, true)
    }

    fn batched(pool: PgPool, inventory: Arc<dyn InventoryStore>, local: bool) -> Arc<Self> {
        let catalog = Arc::new(Catalog::default());
        let saga = Self { pool: pool.clone(), inventory: inventory.clone(), catalog: catalog.clone(), batcher: None };
        let batcher = batch::batcher(saga, local);
        Arc::new(Self { pool, inventory, catalog, batcher: Some(Arc::new(batcher)) })
    }
}

/// What [`PgSales::resume_pending`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Pending sales now completed.
    pub completed: usize,
    /// Pending sales inventory refused; they were deleted, as a failed checkout is.
    pub rejected: usize,
    /// Pending sales still pending (inventory unreachable, or another error); the cause is logged.
    pub failed: usize,
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// A sale's (skus, quantities), as `sales.take_from_carts` takes them from its cart.
fn sold_lines(sale: &Sale) -> (Vec<&str>, Vec<i64>) {
    sale.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).unzip()
}

fn decode_sale(body: &[u8]) -> Result<Sale> {
    Sale::decode(body).map_err(|e| Error::Internal(anyhow::anyhow!("stored sale is corrupt: {e}")))
}

fn sale_not_found(sale_id: &str) -> Error {
    Error::not_found(format!("sale_id {sale_id:?} does not exist"))
}

/// Whether inventory refused the request itself (so trying again cannot help), as opposed to
/// being unreachable or failing.
/// By its code, so that a refusal answered over gRPC (`Error::Remote`) counts as one too.
fn is_refusal(err: &Error) -> bool {
    matches!(err.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::InvalidArgument)
}

/// A catalog lookup by sku, with the NOT_FOUND message SqliteSales gives.
fn known(sku: &str, found: Result<Product>) -> Result<Product> {
    match found {
        Err(e) if e.code() == tonic::Code::NotFound => Err(Error::not_found(format!("sku {sku:?} does not exist"))),
        other => other,
    }
}

/// A product that may go into a cart: inactive ones are not for sale.
fn for_sale(product: Product) -> Result<Product> {
    if !product.active {
        let sku = &product.sku;
        return Err(Error::precondition(
            "PRODUCT",
            format!("sku:{sku}"),
            format!("sku {sku:?} is not for sale (inactive)"),
        ));
    }
    Ok(product)
}

// --- carts -------------------------------------------------------------------------------------

/// Adds units of a sku to a terminal's cart and returns the line's new quantity; refused when the
/// cart has no room for another line or the line would pass `MAX_LINE_QUANTITY`.
async fn cart_add(conn: &mut PgConnection, store_id: &str, terminal_id: &str, sku: &str, quantity: i64) -> Result<i64> {
    let (lines, in_cart): (i64, bool) = sqlx::query_as(
        "SELECT count(*), coalesce(bool_or(sku = $3), false) FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = $2",
    )
    .bind(store_id)
    .bind(terminal_id)
    .bind(sku)
    .fetch_one(&mut *conn)
    .await?;
    domain::cart_has_room(store_id, terminal_id, usize::try_from(lines).unwrap_or(usize::MAX), in_cart)?;
    let total: Option<i64> = sqlx::query_scalar(
        "INSERT INTO sales.cart_items (store_id, terminal_id, sku, quantity) VALUES ($1, $2, $3, $4)
         ON CONFLICT (store_id, terminal_id, sku)
         DO UPDATE SET quantity = sales.cart_items.quantity + excluded.quantity
             WHERE sales.cart_items.quantity + excluded.quantity <= $5
         RETURNING quantity",
    )
    .bind(store_id)
    .bind(terminal_id)
    .bind(sku)
    .bind(quantity)
    .bind(redstore_platform::limits::MAX_LINE_QUANTITY)
    .fetch_optional(&mut *conn)
    .await?;
    total.ok_or_else(|| domain::cart_line_too_large(sku, quantity))
}

/// Sets a line's quantity; 0 removes it. Returns whether the sku was in the cart.
async fn cart_set(
    conn: &mut PgConnection,
    store_id: &str,
    terminal_id: &str,
    sku: &str,
    quantity: i64,
) -> Result<bool> {
    let done = if quantity == 0 {
        sqlx::query("DELETE FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2 AND sku = $3")
            .bind(store_id)
            .bind(terminal_id)
            .bind(sku)
            .execute(&mut *conn)
            .await?
    } else {
        sqlx::query("UPDATE sales.cart_items SET quantity = $4 WHERE store_id = $1 AND terminal_id = $2 AND sku = $3")
            .bind(store_id)
            .bind(terminal_id)
            .bind(sku)
            .bind(quantity)
            .execute(&mut *conn)
            .await?
    };
    Ok(done.rows_affected() > 0)
}

async fn cart_clear(conn: &mut PgConnection, store_id: &str, terminal_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2")
        .bind(store_id)
        .bind(terminal_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The cart's (sku, quantity) lines in the order they were first added.
async fn cart_items(conn: &mut PgConnection, store_id: &str, terminal_id: &str) -> Result<Vec<(String, i64)>> {
    let rows =
        sqlx::query("SELECT sku, quantity FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2 ORDER BY id")
            .bind(store_id)
            .bind(terminal_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

// --- checkout ----------------------------------------------------------------------------------

/// The row a checkout's idempotency key points at.
struct KeyedSale {
    sale_id: String,
    request: Vec<u8>,
    completed: bool,
    body: Vec<u8>,
}

/// What recording a pending sale found.
enum Pending {
    /// This attempt's sale, now pending.
    Recorded(String),
    /// The key was taken: the sale it points at.
    Keyed(KeyedSale),
}

/// The sale an idempotency key points at, in the caller's store-scoped transaction.
async fn keyed_sale(conn: &mut PgConnection, store_id: &str, key: &str) -> Result<Option<KeyedSale>> {
    Ok(keyed_sales(conn, store_id, &[key]).await?.remove(key))
}

/// The sales these idempotency keys point at, in the caller's transaction scoped to the store, or
/// on its own (the function scopes itself).
async fn keyed_sales(conn: &mut PgConnection, store_id: &str, keys: &[&str]) -> Result<HashMap<String, KeyedSale>> {
    let rows =
        sqlx::query("SELECT * FROM sales.keyed_sales($1, $2)").bind(store_id).bind(keys).fetch_all(&mut *conn).await?;
    let mut keyed = HashMap::with_capacity(rows.len());
    for row in &rows {
        let sale = KeyedSale {
            sale_id: row.try_get(1)?,
            request: row.try_get(2)?,
            completed: row.try_get(3)?,
            body: row.try_get(4)?,
        };
        keyed.insert(row.try_get(0)?, sale);
    }
    Ok(keyed)
}

/// What a checkout does with the sale its key points at: ALREADY_EXISTS for another request, the
/// sale itself when completed (`Err(Ok(sale))`), or its id to finish when pending.
fn resume_keyed(order: &CheckoutOrder, keyed: KeyedSale) -> Result<std::result::Result<String, Sale>> {
    if keyed.request != order.idem.fingerprint {
        return Err(key_reused(&checkout_key_scope(&order.store_id), &order.idem.key));
    }
    if keyed.completed {
        return decode_sale(&keyed.body).map(Err);
    }
    // Pending: a concurrent attempt is running, or one was interrupted.
    Ok(Ok(keyed.sale_id))
}

/// Prices a sale's lines from the catalog (`product(i)` is line `i`'s product, `None` when its sku
/// does not exist); names the line at fault.
fn price_lines<'p>(
    field: &str,
    lines: &[(String, i64)],
    product: impl Fn(usize) -> Option<&'p Product>,
) -> Result<Vec<PricedLine>> {
    let mut priced = Vec::with_capacity(lines.len());
    for (i, (sku, quantity)) in lines.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(product) = product(i) else {
            return Err(Error::not_found(format!("{f}.sku: sku {sku:?} does not exist")));
        };
        if !product.active {
            return Err(Error::precondition(
                "PRODUCT",
                format!("sku:{sku}"),
                format!("{f}.sku: sku {sku:?} is not for sale (inactive)"),
            ));
        }
        priced.push(domain::price_line(&f, sku, &product.name, *quantity, product.price)?);
    }
    Ok(priced)
}

/// The sale a checkout of these priced lines makes, settled but not applied (status unspecified,
/// no negative skus yet), with the stock movements it asks of inventory.
fn draft_sale(
    order: &CheckoutOrder,
    field: &str,
    lines: &[(String, i64)],
    priced: &[PricedLine],
) -> Result<(Sale, Vec<StockMovement>)> {
    let total = domain::total(field, priced)?;
    let change = domain::settle(total, &order.tenders)?;
    // Validates the quantities as the embedded shape does, before anything is recorded.
    let movements = sale_movements(field, lines.iter().cloned())?;
    let sale = Sale {
        sale_id: uuid::Uuid::now_v7().to_string(),
        store_id: order.store_id.clone(),
        terminal_id: order.terminal_id.clone(),
        status: SaleStatus::Unspecified as i32,
        lines: priced.iter().map(PricedLine::to_proto).collect(),
        total: Some(total.to_proto()),
        tenders: order.tenders.iter().map(|t| t.to_proto()).collect(),
        change: Some(change.to_proto()),
        created_at: Some(timestamp(now_ms())),
        negative_stock_skus: Vec::new(),
        refunded: Some(Money::zero(total.currency).to_proto()),
    };
    Ok((sale, movements))
}

/// A sale's `sale.completed` event, encoded, with its event id. Without its store sequence: the
/// statement that writes it numbers it in the outbox row's `store_seq`, and whoever reads the row
/// sets the envelope's sequence from there (`redstore_platform::pg::outbox_event`).
fn sale_completed_event(store_id: &str, occurred_at_ms: i64, sale: &Sale) -> (uuid::Uuid, Vec<u8>) {
    let event_id = uuid::Uuid::now_v7();
    let event = EventEnvelope {
        event_id: event_id.to_string(),
        r#type: "sale.completed".to_owned(),
        store_id: store_id.to_owned(),
        occurred_at: Some(timestamp(occurred_at_ms)),
        payload: Some(sale_completed(sale)),
        ..Default::default()
    };
    (event_id, event.encode_to_vec())
}

/// What inventory is asked to apply for a sale: the request (its fingerprint there), and the sale's
/// (sku, quantity) lines.
fn apply_request(sale: &Sale) -> (inv::ApplySaleRequest, Vec<(String, i64)>) {
    let lines: Vec<(String, i64)> = sale.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
    let request = inv::ApplySaleRequest {
        sale_id: sale.sale_id.clone(),
        store_id: sale.store_id.clone(),
        terminal_id: sale.terminal_id.clone(),
        lines: sale
            .lines
            .iter()
            .map(|l| inv::SaleLine { sku: l.sku.clone(), quantity: l.quantity, unit_price: l.unit_price.clone() })
            .collect(),
        ..Default::default()
    };
    (request, lines)
}

impl PgSales {
    /// NOT_FOUND unless the store exists and the terminal is registered in it (asked of inventory
    /// once per terminal).
    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        self.catalog.require_terminal(self.inventory.as_ref(), store_id, terminal_id).await
    }

    /// A cart line priced from the catalog, with the stock on hand in the store.
    async fn cart_line(&self, store_id: &str, product: &Product, quantity: i64) -> Result<CartLine> {
        let stock = self.inventory.get_stock(store_id, &product.sku).await?;
        let total = domain::cart_line_total(product.price, &product.sku, quantity)?;
        Ok(CartLine {
            sku: product.sku.clone(),
            name: product.name.clone(),
            unit_price: Some(product.price.to_proto()),
            quantity,
            line_total: Some(total.to_proto()),
            stock_available: stock.quantity,
        })
    }

    /// The terminal's cart as the caller's transaction sees it.
    async fn load_cart(&self, conn: &mut PgConnection, store_id: &str, terminal_id: &str) -> Result<Cart> {
        let items = cart_items(conn, store_id, terminal_id).await?;
        let mut lines = Vec::with_capacity(items.len());
        for (sku, quantity) in items {
            let product = known(&sku, self.inventory.get_product(&sku).await)?;
            lines.push(self.cart_line(store_id, &product, quantity).await?);
        }
        let amounts: Option<Vec<Money>> =
            lines.iter().map(|l| Money::from_proto("line_total", l.line_total.as_ref()).ok()).collect();
        let total = amounts
            .and_then(|a| a.first().copied().and_then(|first| Money::sum(first.currency, a)))
            .map(Money::to_proto);
        Ok(Cart { store_id: store_id.to_owned(), terminal_id: terminal_id.to_owned(), lines, total })
    }

    /// Adds a sellable product to the cart in the caller's transaction; returns its line.
    async fn add_to_cart(
        &self,
        conn: &mut PgConnection,
        store_id: &str,
        terminal_id: &str,
        product: &Product,
        quantity: i64,
    ) -> Result<CartLine> {
        let total = cart_add(conn, store_id, terminal_id, &product.sku, quantity).await?;
        self.cart_line(store_id, product, total).await
    }

    /// The sale a checkout would make, priced and settled but not applied (status unspecified,
    /// no negative skus yet), and the cart's lines when it sells the cart.
    async fn draft(&self, order: &CheckoutOrder) -> Result<(Sale, Option<Vec<(String, i64)>>)> {
        let (store_id, terminal_id) = (order.store_id.as_str(), order.terminal_id.as_str());
        self.require_terminal(store_id, terminal_id).await?;
        let (field, from_cart, lines) = if order.lines.is_empty() {
            let mut tx = pg::store_tx(&self.pool, store_id).await?;
            let items = cart_items(&mut tx, store_id, terminal_id).await?;
            tx.commit().await?;
            if items.is_empty() {
                return Err(empty_cart(store_id, terminal_id));
            }
            ("cart", true, items)
        } else {
            ("lines", false, order.lines.clone())
        };
        // Priced from the copy of the catalog (inventory holds the sale to its prices).
        let skus: Vec<String> = lines.iter().map(|(sku, _)| sku.clone()).collect();
        let products = self.catalog.products(self.inventory.as_ref(), &skus).await?;
        let priced = price_lines(field, &lines, |i| products.get(&lines[i].0))?;
        let (sale, _) = draft_sale(order, field, &lines, &priced)?;
        Ok((sale, from_cart.then_some(lines)))
    }

    async fn sale_by_key(&self, store_id: &str, key: &str) -> Result<Option<KeyedSale>> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let keyed = keyed_sale(&mut tx, store_id, key).await?;
        tx.commit().await?;
        Ok(keyed)
    }

    /// Transaction A: records the drafted sale as pending under its key. When the key is taken
    /// already (by an earlier or a concurrent attempt), the sale it points at instead, read in the
    /// same transaction (after waiting for a concurrent inserter to commit or roll back); `None`
    /// when that one is gone too.
    /// A checkout of the cart is recorded only while no other request is checking that cart out,
    /// and only if the cart is still as drafted (`batch::guard_carts`); else the key's sale, if
    /// any, or the refusal.
    async fn record_pending(
        &self,
        order: &CheckoutOrder,
        sale: &Sale,
        cart: Option<&[(String, i64)]>,
    ) -> Result<Option<Pending>> {
        let created = sale.created_at.as_ref().map_or_else(now_ms, redstore_platform::time::timestamp_ms);
        let mut tx = pg::store_tx(&self.pool, &order.store_id).await?;
        if let Some(lines) = cart {
            let guarded = batch::CartSale { terminal_id: &order.terminal_id, key: &order.idem.key, lines };
            if let Some(refusal) = batch::guard_carts(&mut tx, &order.store_id, &[guarded]).await?.pop().flatten() {
                let keyed = keyed_sale(&mut tx, &order.store_id, &order.idem.key).await?;
                tx.commit().await?;
                return keyed.map(|keyed| Some(Pending::Keyed(keyed))).ok_or(refusal);
            }
        }
        let from_cart = cart.is_some();
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO sales.sales
                 (sale_id, store_id, terminal_id, idempotency_key, request, from_cart, status, created_at_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
             ON CONFLICT (store_id, idempotency_key) DO NOTHING
             RETURNING sale_id",
        )
        .bind(&sale.sale_id)
        .bind(&sale.store_id)
        .bind(&sale.terminal_id)
        .bind(&order.idem.key)
        .bind(&order.idem.fingerprint)
        .bind(from_cart)
        .bind(created)
        .bind(sale.encode_to_vec())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(sale_id) = inserted {
            tx.commit().await?;
            return Ok(Some(Pending::Recorded(sale_id)));
        }
        let keyed = keyed_sale(&mut tx, &order.store_id, &order.idem.key).await?;
        tx.commit().await?;
        Ok(keyed.map(Pending::Keyed))
    }

    /// Steps 3 and 4 of the saga for one pending sale: takes its stock through inventory and
    /// completes it, or deletes it when inventory refuses. Attempts on one sale queue on its row
    /// lock, so each finds it either still pending, completed or gone. `None`: the pending row is
    /// gone (a concurrent attempt had it refused by inventory and deleted it).
    async fn finish(&self, store_id: &str, sale_id: &str) -> Result<Option<Sale>> {
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let Some(row) = sqlx::query(
            "SELECT status = 'completed', from_cart, body, idempotency_key, request FROM sales.sales
                 WHERE sale_id = $1 FOR UPDATE",
        )
        .bind(sale_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let completed: bool = row.try_get(0)?;
        let from_cart: bool = row.try_get(1)?;
        let mut sale = decode_sale(row.try_get::<&[u8], _>(2)?)?;
        if completed {
            return Ok(Some(sale));
        }
        let (request, lines) = apply_request(&sale);
        let order = SaleOrder {
            sale_id: sale.sale_id.clone(),
            fingerprint: request.encode_to_vec(),
            terminal_id: sale.terminal_id.clone(),
            movements: sale_movements(if from_cart { "cart" } else { "lines" }, lines)?,
            charged: catalog::charged(&sale),
            // Under the checkout's key too, as checkouts recorded only once applied go: the same
            // key with another request is refused there, not applied.
            checkout: Some(CheckoutKey { key: row.try_get(3)?, fingerprint: row.try_get(4)?, sale: Vec::new() }),
        };
        let applied = self.inventory.apply_sale(store_id, order).await;
        let applied = match applied {
            Ok(applied) => applied,
            Err(err) if is_refusal(&err) => {
                if catalog::is_reprice(&err) {
                    self.catalog.forget(sale.lines.iter().map(|l| l.sku.as_str()));
                }
                sqlx::query("DELETE FROM sales.sales WHERE sale_id = $1 AND status = 'pending'")
                    .bind(sale_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Err(err);
            }
            // Dropping the transaction leaves the sale pending, for a retry or the recovery.
            Err(err) => return Err(err),
        };
        sale.status = SaleStatus::Completed as i32;
        sale.negative_stock_skus = applied.negative_skus;
        // Inventory has the stock. This transaction wrote nothing (it only row-locked the sale),
        // so end it without a commit to flush, and complete the sale in one round trip and one
        // transaction of its own (`sales.complete_sale`), which takes the store's sequence lock
        // last and commits as it returns. A concurrent attempt may lock the row in between: it
        // gets inventory's stored answer again (idempotent by sale id) and only one of the two
        // completes the sale, which is still pending. A crash in between leaves the sale pending
        // for a retry or `resume_pending`, as a crash before it does.
        tx.rollback().await?;
        let occurred_at_ms = now_ms();
        let (event_id, event) = sale_completed_event(store_id, occurred_at_ms, &sale);
        let (skus, quantities) = sold_lines(&sale);
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT o_seq FROM sales.complete_sale($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(store_id)
                .bind(sale_id)
                .bind(sale.encode_to_vec())
                .bind(from_cart)
                .bind(&sale.terminal_id)
                .bind(event_id)
                .bind(occurred_at_ms)
                .bind(&event)
                .bind(&skus)
                .bind(&quantities)
                .fetch_optional(&self.pool)
                .await?;
        // None: a concurrent attempt completed it, with the same inventory answer.
        if let Some(seq) = seq {
            pg::notify_committed(&self.pool, SCHEMA, store_id, seq as u64).await;
        }
        Ok(Some(sale))
    }

    /// Finishes the store's checkouts that have been pending for longer than `older_than`: the
    /// process died, or inventory could not be reached, between recording a sale and completing
    /// it. Each is completed (inventory applies its stock once, by sale id) or, when inventory
    /// refuses it, deleted as a failed checkout is. Run it periodically for every store.
    pub async fn resume_pending(&self, store_id: &str, older_than: Duration) -> Result<Resumed> {
        let cutoff = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let pending: Vec<String> = sqlx::query_scalar(
            "SELECT sale_id FROM sales.sales
             WHERE store_id = $1 AND status = 'pending' AND created_at_ms <= $2 ORDER BY created_at_ms",
        )
        .bind(store_id)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut resumed = Resumed::default();
        for sale_id in pending {
            match self.finish(store_id, &sale_id).await {
                Ok(Some(_)) => resumed.completed += 1,
                // Deleted by an attempt that had it refused.
                Ok(None) => resumed.rejected += 1,
                Err(err) if is_refusal(&err) => resumed.rejected += 1,
                Err(err) => {
                    redstore_platform::warn_throttled!(store_id, sale_id, error = %err, "cannot finish a pending sale yet");
                    resumed.failed += 1;
                }
            }
        }
        Ok(resumed)
    }

    /// The stores with a sale pending for longer than `older_than`, in one statement across the
    /// chain (`sales.stores_pending`, migration 0010, over the index of pending sales): the stores
    /// [`PgSales::resume_pending`] has work in. None at rest.
    pub async fn stores_pending(&self, older_than: Duration) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        Ok(sqlx::query_scalar("SELECT sales.stores_pending($1)").bind(cutoff).fetch_all(&self.pool).await?)
    }

    /// The stores with a completed sale still keeping a checkout key from before `before_ms`
    /// (`sales.stores_keyed_before`, migration 0010): the stores
    /// [`PgSales::expire_checkout_keys`] has work in.
    pub async fn stores_keyed_before(&self, before_ms: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT sales.stores_keyed_before($1)").bind(before_ms).fetch_all(&self.pool).await?)
    }

    /// [`PgSales::record_applied`] for the stores where inventory applied a checkout since the last
    /// look that no sale here records, across the chain: the look's window,
    /// `sales.reconcile_sweep`, is taken `FOR UPDATE SKIP LOCKED` (one replica looks at a time;
    /// the others skip this round), the stores with such checkouts are asked of the database in
    /// one statement (`sales.stores_unrecorded`, migration 0010: the window's checkouts through
    /// inventory's index by time, each probed against sales' unique key), each is reconciled from
    /// its own mark, and the window moves on only when every one of them succeeded. Inventory's tables must be in this database (as `redstore migrate` makes them).
    /// Returns how many checkouts it recorded.
    pub async fn reconcile_applied(&self, older_than: Duration) -> Result<usize> {
        let before_ms = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
        let from_ms: Option<i64> =
            sqlx::query_scalar("SELECT applied_before_ms FROM sales.reconcile_sweep FOR UPDATE SKIP LOCKED")
                .fetch_optional(&mut *tx)
                .await?;
        let Some(from_ms) = from_ms else {
            // Another replica is looking.
            tx.rollback().await?;
            return Ok(0);
        };
        if before_ms <= from_ms {
            tx.rollback().await?;
            return Ok(0);
        }
        let stores: Vec<String> = sqlx::query_scalar("SELECT sales.stores_unrecorded($1, $2)")
            .bind(from_ms)
            .bind(before_ms)
            .fetch_all(&mut *tx)
            .await?;
        let (mut recorded, mut complete) = (0, true);
        for store_id in &stores {
            match self.record_applied(store_id, older_than).await {
                Ok(n) => recorded += n,
                Err(e) => {
                    complete = false;
                    redstore_platform::warn_throttled!(error = %e, store_id = %store_id, "cannot reconcile applied checkouts")
                }
            }
        }
        if complete {
            sqlx::query("UPDATE sales.reconcile_sweep SET applied_before_ms = $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Forgets the checkout keys of the store's sales completed before `before_ms` (the key
    /// retention): a retry with one of them is a new checkout. At most a chunk at a time; how
    /// many it cleared.
    pub async fn expire_checkout_keys(&self, store_id: &str, before_ms: i64) -> Result<u64> {
        pg::expire_in_store(
            &self.pool,
            store_id,
            "UPDATE sales.sales SET idempotency_key = NULL, request = NULL WHERE ctid IN (
                 SELECT ctid FROM sales.sales
                 WHERE store_id = $1 AND idempotency_key IS NOT NULL AND status = 'completed' AND created_at_ms < $2
                 LIMIT $3)",
            before_ms,
        )
        .await
    }

    /// Records the store's checkouts inventory applied under their keys more than `older_than`
    /// ago that sales never recorded: the process stopped, or lost inventory's answer, between
    /// the two, and no retry came (a retry records it itself). Each is recorded as the attempt
    /// would have, completed with its `sale.completed` event. Looks once through each applied
    /// checkout (`sales.checkouts_reconciled` remembers how far); run it periodically for every
    /// store. Returns how many it recorded.
    pub async fn record_applied(&self, store_id: &str, older_than: Duration) -> Result<usize> {
        const PAGE: u32 = redstore_inventory::store::MAX_APPLIED_CHECKOUTS;
        let before_ms = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let from_ms: i64 =
            sqlx::query_scalar("SELECT applied_before_ms FROM sales.checkouts_reconciled WHERE store_id = $1")
                .bind(store_id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0);
        tx.commit().await?;
        if before_ms <= from_ms {
            return Ok(0);
        }
        let (mut recorded, mut after) = (0, None::<(i64, String)>);
        loop {
            // The window's keys (an index-only scan there), then the answers of those missing here.
            let window = CheckoutsQuery { from_ms, before_ms, limit: PAGE, ..CheckoutsQuery::default() };
            let page = self
                .inventory
                .applied_checkouts(store_id, CheckoutsQuery { after: after.clone(), keys_only: true, ..window.clone() })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.applied_at_ms, last.key.clone()));
            let keys: Vec<&str> = page.iter().map(|c| c.key.as_str()).collect();
            let mut tx = pg::store_tx(&self.pool, store_id).await?;
            let missing: Vec<String> = sqlx::query_scalar(
                "SELECT k FROM unnest($2::TEXT[]) AS k
                 WHERE NOT EXISTS (SELECT 1 FROM sales.sales s WHERE s.store_id = $1 AND s.idempotency_key = k)",
            )
            .bind(store_id)
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            if !missing.is_empty() {
                let applied =
                    self.inventory.applied_checkouts(store_id, CheckoutsQuery { keys: missing, ..window }).await?;
                let occurred_at_ms = now_ms();
                let mut record = batch::Recording::default();
                for AppliedCheckout { key, fingerprint, answer, .. } in applied {
                    if answer.sale.is_empty() {
                        // Applied by the pending saga, which keeps no sale there but records the
                        // key before it asks inventory: a key it recorded cannot be missing here.
                        tracing::warn!(store_id, key, sale_id = %answer.sale_id, "an applied checkout has no sale to record");
                        continue;
                    }
                    let sale = batch::applied_sale(decode_sale(&answer.sale)?, answer)?;
                    record.add_keyed(store_id, occurred_at_ms, &key, &fingerprint, &sale);
                }
                let (inserted, last_seq) = record.write(&self.pool, store_id, occurred_at_ms).await?;
                recorded += inserted.len();
                if let Some(last) = last_seq {
                    pg::notify_committed(&self.pool, SCHEMA, store_id, last).await;
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        if after.is_none() {
            // Nothing applied in the window: the next look may as well start where this one did
            // (an empty range of the index there), and a store not selling costs no write.
            return Ok(recorded);
        }
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        sqlx::query(
            "INSERT INTO sales.checkouts_reconciled (store_id, applied_before_ms) VALUES ($1, $2)
             ON CONFLICT (store_id) DO UPDATE SET applied_before_ms = greatest(excluded.applied_before_ms,
                 sales.checkouts_reconciled.applied_before_ms)",
        )
        .bind(store_id)
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// A checkout by the saga (see the module documentation).
    async fn checkout_saga(&self, order: CheckoutOrder) -> Result<Sale> {
        for _ in 0..CHECKOUT_ROUNDS {
            // Drafting reads only (the catalog, the terminal, the cart), so it goes first and the
            // key is looked up in the transaction that records the sale: one transaction fewer for
            // a fresh checkout. A draft that fails may belong to a retry whose sale is recorded
            // already (its cart cleared, a product since deactivated…): the key decides then.
            let keyed = match self.draft(&order).await {
                Ok((draft, cart)) => match self.record_pending(&order, &draft, cart.as_deref()).await? {
                    Some(Pending::Recorded(sale_id)) => Ok(sale_id),
                    Some(Pending::Keyed(keyed)) => resume_keyed(&order, keyed)?,
                    // The key's sale was deleted meanwhile (inventory refused it): look again.
                    None => continue,
                },
                Err(err) => match self.sale_by_key(&order.store_id, &order.idem.key).await? {
                    Some(keyed) => resume_keyed(&order, keyed)?,
                    None => return Err(err),
                },
            };
            let sale_id = match keyed {
                Ok(sale_id) => sale_id,
                Err(completed) => return Ok(completed),
            };
            match self.finish(&order.store_id, &sale_id).await {
                Ok(Some(sale)) => return Ok(sale),
                Ok(None) => continue,
                // Priced from a stale copy of the catalog (now forgotten): refused and gone; again.
                Err(err) if catalog::is_reprice(&err) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(Error::unavailable(format!(
            "checkout with idempotency_key {:?} kept racing concurrent attempts with the same key; retry",
            order.idem.key
        )))
    }

    /// The store a completed sale belongs to, from the chain-wide directory.
    async fn store_of_sale(&self, conn: &mut PgConnection, sale_id: &str) -> Result<String> {
        sqlx::query_scalar("SELECT store_id FROM sales.sale_stores WHERE sale_id = $1")
            .bind(sale_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| sale_not_found(sale_id))
    }
}

#[tonic::async_trait]
impl SalesStore for PgSales {
    async fn scan(&self, order: ScanOrder) -> Result<ScanResponse> {
        let (store_id, terminal_id) = (order.store_id.as_str(), order.terminal_id.as_str());
        let scope = format!("sales.scan:{store_id}:{terminal_id}");
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        // The scan's own answer (its line) is what is kept for a retry; the cart is answered as
        // it is now, so what a scan id keeps does not grow with the cart.
        if let Claim::Replay(stored) = pg::claim(&mut tx, &scope, &order.scan_id, &order.fingerprint).await? {
            let mut answer: ScanResponse = pg::replay(&stored)?;
            answer.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
            tx.commit().await?;
            return Ok(answer);
        }
        self.require_terminal(store_id, terminal_id).await?;
        let product = match self.inventory.product_by_barcode(&order.barcode).await {
            Ok(p) => p,
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Err(Error::not_found(format!("code: no product has barcode {}", order.barcode)));
            }
            Err(e) => return Err(e),
        };
        let product = for_sale(product)?;
        let line = self.add_to_cart(&mut tx, store_id, terminal_id, &product, order.quantity).await?;
        let mut response = ScanResponse {
            scan_id: order.scan_id.clone(),
            result: Some(scan_response::Result::Line(line)),
            cart: None,
        };
        pg::complete(&mut tx, &scope, &order.scan_id, &response).await?;
        response.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
        tx.commit().await?;
        Ok(response)
    }

    async fn get_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    async fn add_cart_item(
        &self,
        idem: redstore_platform::idempotency::Idem,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<AddCartItemResponse> {
        let scope = format!("sales.cart:{store_id}:{terminal_id}");
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        // As for a scan: the line is kept for a retry, the cart is answered as it is now.
        if let Claim::Replay(stored) = pg::claim(&mut tx, &scope, &idem.key, &idem.fingerprint).await? {
            let mut answer: AddCartItemResponse = pg::replay(&stored)?;
            answer.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
            tx.commit().await?;
            return Ok(answer);
        }
        self.require_terminal(store_id, terminal_id).await?;
        let product = for_sale(known(sku, self.inventory.get_product(sku).await)?)?;
        let line = self.add_to_cart(&mut tx, store_id, terminal_id, &product, quantity).await?;
        let mut response = AddCartItemResponse { line: Some(line), cart: None };
        pg::complete(&mut tx, &scope, &idem.key, &response).await?;
        response.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
        tx.commit().await?;
        Ok(response)
    }

    async fn set_cart_item_quantity(
        &self,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        if !cart_set(&mut tx, store_id, terminal_id, sku, quantity).await? && quantity > 0 {
            return Err(Error::not_found(format!("sku {sku:?} is not in the cart of terminal {terminal_id:?}")));
        }
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    async fn clear_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        cart_clear(&mut tx, store_id, terminal_id).await?;
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    async fn checkout(&self, order: CheckoutOrder) -> Result<Sale> {
        let Some(batcher) = &self.batcher else {
            return self.checkout_saga(order).await;
        };
        // A store id that cannot scope a transaction (the saga's cart transactions splice it into
        // their BEGIN) is refused alone, before it is queued with other checkouts.
        pg::check_store_id(&order.store_id)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = batch::queue_of(&order.store_id);
        batcher.submit(&queue, batch::Job { order, reply, repriced: 0 });
        answer.await.unwrap_or_else(|_| {
            Err(Error::unavailable("the checkout was interrupted; retry it with the same idempotency_key"))
        })
    }

    async fn refund(&self, order: RefundOrder) -> Result<RefundResponse> {
        let key = order.idem.key.as_str();
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
        // Keys first, as in the embedded shape: a retry is answered whatever happened since.
        if let Claim::Replay(stored) = pg::claim(&mut tx, REFUND_SCOPE, key, &order.idem.fingerprint).await? {
            return pg::replay(&stored);
        }
        let store_id = self.store_of_sale(&mut tx, &order.sale_id).await?;
        pg::scope_to_store(&mut tx, &store_id).await?;
        // The row lock orders refunds of one sale: none can refund what another just did.
        let body: Vec<u8> =
            sqlx::query_scalar("SELECT body FROM sales.sales WHERE sale_id = $1 AND status = 'completed' FOR UPDATE")
                .bind(&order.sale_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| sale_not_found(&order.sale_id))?;
        let mut sale = decode_sale(&body)?;
        let lines = refund_lines(&mut sale, &order.lines)?;
        let currency = Money::from_proto("total", sale.total.as_ref())?.currency;
        let amount = Money::sum(currency, lines.iter().map(|l| l.line_total))
            .ok_or_else(|| Error::invalid("lines", "the refund amount is too large"))?;
        // Derived from the key, so that a retry after a crash between inventory's commit and
        // ours re-applies the same refund, which inventory does once.
        let refund_id = format!("refund-{key}");
        let terminal_id =
            if order.terminal_id.is_empty() { sale.terminal_id.clone() } else { order.terminal_id.clone() };
        let movements: Vec<StockMovement> =
            lines.iter().map(|l| StockMovement { sku: l.sku.clone(), delta: l.quantity }).collect();
        self.inventory.apply_refund(&refund_id, &store_id, &terminal_id, movements).await?;
        record_refund(&mut sale, amount)?;
        sqlx::query("UPDATE sales.sales SET body = $2 WHERE sale_id = $1")
            .bind(&sale.sale_id)
            .bind(sale.encode_to_vec())
            .execute(&mut *tx)
            .await?;
        let created = now_ms();
        let refund = Refund {
            refund_id,
            sale_id: order.sale_id.clone(),
            lines: lines.iter().map(PricedLine::to_proto).collect(),
            amount: Some(amount.to_proto()),
            created_at: Some(timestamp(created)),
        };
        sqlx::query(
            "INSERT INTO sales.refunds (refund_id, sale_id, store_id, created_at_ms, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&refund.refund_id)
        .bind(&refund.sale_id)
        .bind(&store_id)
        .bind(created)
        .bind(refund.encode_to_vec())
        .execute(&mut *tx)
        .await?;
        pg::append_event(&mut tx, SCHEMA, &store_id, sale_refunded(&refund, &terminal_id)).await?;
        let response = RefundResponse { refund: Some(refund), sale: Some(sale) };
        pg::complete(&mut tx, REFUND_SCOPE, key, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn get_sale(&self, sale_id: &str) -> Result<Sale> {
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
        let store_id = self.store_of_sale(&mut tx, sale_id).await?;
        pg::scope_to_store(&mut tx, &store_id).await?;
        let body: Vec<u8> =
            sqlx::query_scalar("SELECT body FROM sales.sales WHERE sale_id = $1 AND status = 'completed'")
                .bind(sale_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| sale_not_found(sale_id))?;
        tx.commit().await?;
        decode_sale(&body)
    }

    async fn list_sales(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<Sale>> {
        self.inventory.get_store(store_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT body FROM sales.sales WHERE store_id = $1 AND status = 'completed' AND sale_id > $2
             ORDER BY sale_id LIMIT $3",
        )
        .bind(store_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        bodies.iter().map(|b| decode_sale(b)).collect()
    }
}
