//! The PostgreSQL implementation of [`SalesStore`], for the distributed shape.
//!
//! Sales keep their own tables (schema `sales`, every table with row-level security, so each
//! operation runs in a transaction scoped to its store with [`pg::store_tx`]); inventory is
//! another service. It behaves exactly like [`SqliteSales`] (the conformance suite in
//! `tests/conformance` runs the same bodies against both). The code is split by what it does:
//!
//! - `carts`: terminals' carts (scans, lines, quantities) and the guards that sell a cart once;
//! - `batch`: the queue every checkout waits in, drafting (pricing, settling) and claiming keys for
//!   a batch, and the one choice of how a batch is carried out ([`batch::CheckoutPath`]), made
//!   when the store is built:
//!   - `group_commit` ([`PgSales::with_local_inventory`], inventory in the same process and
//!     database, what `redstore up --database-url` and `redstore serve sales` without
//!     `--inventory-url` run): a batch of any stores' checkouts per transaction, sales and stock
//!     together;
//!   - `saga` ([`PgSales::new`], inventory reached through [`InventoryStore`], over gRPC between
//!     processes): steps that are each idempotent, so a retry, a concurrent duplicate or a crash
//!     heals;
//! - `reconcile`: the safety sweeps (sales left pending, checkouts inventory applied that no sale
//!   records, checkout keys past their retention), driven by what has unfinished work;
//! - `refunds`: a refund, its stock put back through inventory.
//!
//! Inventory is called while a sales transaction is open (the saga's row lock, and refunds): give
//! the sales pool its own connections rather than sharing one with a PostgreSQL inventory.
//!
//! [`SqliteSales`]: crate::store::SqliteSales

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use prost::Message as _;
use redstore_inventory::InventoryStore;
use redstore_inventory::domain::{Product, StockMovement, sale_movements};
use redstore_inventory::pg::PgInventory;
use redstore_inventory::store::checkout_key_scope;
use redstore_platform::batch::StoreBatcher;
use redstore_platform::error::{Error, Result};
use redstore_platform::idempotency::key_reused;
use redstore_platform::money::Money;
use redstore_platform::pg::{self, PgPool, PgSchema};
use redstore_platform::time::{timestamp, unix_ms};
use redstore_proto::events::EventEnvelope;
use redstore_proto::inventory as inv;
use redstore_proto::sales::*;
use sqlx::{PgConnection, Row as _};

use crate::catalog::Catalog;
use crate::domain::{self, PriceOverride, PricedLine};
use crate::events::sale_completed;
use crate::store::{CheckoutOrder, RefundOrder, SalesStore, ScanOrder};

mod batch;
mod carts;
mod group_commit;
mod reconcile;
mod refunds;
mod saga;

/// Sales' PostgreSQL migrations (`migrations/postgres`), in schema `sales`.
pub static PG_SCHEMA: PgSchema = PgSchema { name: SCHEMA, migrator: &sqlx::migrate!("migrations/postgres") };

/// The schema holding sales' tables, outbox and sequences.
const SCHEMA: &str = "sales";

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
    /// another database): checkouts go by the saga (`pg/saga.rs`).
    pub fn new(pool: PgPool, inventory: Arc<dyn InventoryStore>) -> Arc<Self> {
        Self::batched(pool, inventory, saga::Saga)
    }

    /// Sales beside a [`PgInventory`] on the same database (`pool` connects to the database
    /// `inventory` uses): checkouts go by group commit, batches of one transaction each
    /// (`pg/group_commit.rs`).
    pub fn with_local_inventory(pool: PgPool, inventory: Arc<PgInventory>) -> Arc<Self> {
        Self::batched(pool, inventory, group_commit::GroupCommit)
    }

    fn batched(pool: PgPool, inventory: Arc<dyn InventoryStore>, path: impl batch::CheckoutPath) -> Arc<Self> {
        let catalog = Arc::new(Catalog::default());
        let saga = Self { pool: pool.clone(), inventory: inventory.clone(), catalog: catalog.clone(), batcher: None };
        let batcher = batch::batcher(saga, path);
        Arc::new(Self { pool, inventory, catalog, batcher: Some(Arc::new(batcher)) })
    }

    /// NOT_FOUND unless the store exists and the terminal is registered in it (asked of inventory
    /// once per terminal).
    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        self.catalog.require_terminal(self.inventory.as_ref(), store_id, terminal_id).await
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

/// A sale's (skus, quantities): the cart lines a checkout of a cart takes from its cart.
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

/// The row a checkout's idempotency key points at.
struct KeyedSale {
    sale_id: String,
    request: Vec<u8>,
    completed: bool,
    body: Vec<u8>,
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
    overrides: &BTreeMap<String, PriceOverride>,
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
        priced.push(domain::price_line(&f, sku, &product.name, *quantity, product.price, overrides.get(sku))?);
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
        trace_parent: redstore_platform::trace::current_traceparent(),
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
            .map(|l| inv::SaleLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price.clone(),
                price_overridden: !l.override_reason.is_empty(),
            })
            .collect(),
        ..Default::default()
    };
    (request, lines)
}

#[tonic::async_trait]
impl SalesStore for PgSales {
    async fn scan(&self, order: ScanOrder) -> Result<ScanResponse> {
        self.scan_into_cart(order).await
    }

    async fn get_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.cart_of(store_id, terminal_id).await
    }

    async fn add_cart_item(
        &self,
        idem: redstore_platform::idempotency::Idem,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<AddCartItemResponse> {
        self.add_item(idem, store_id, terminal_id, sku, quantity).await
    }

    async fn set_cart_item_quantity(
        &self,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<Cart> {
        self.set_item_quantity(store_id, terminal_id, sku, quantity).await
    }

    async fn clear_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.empty_cart_of(store_id, terminal_id).await
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
        self.refund_sale(order).await
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
