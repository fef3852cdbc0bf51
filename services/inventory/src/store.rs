//! The inventory store: what the gRPC adapter, sales and the stream bridge need from inventory's
//! storage, as one trait with an implementation per backend. Every implementation passes the same
//! conformance suite (`tests/conformance`).

use std::sync::Arc;

use prost::Message as _;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_platform::idempotency::{key_reused, maybe_once, once};
use redstore_platform::time::unix_ms;
use redstore_platform::{Db, Topic, WriteCtx, eventlog};
use redstore_proto::events::EventEnvelope;
use redstore_proto::inventory as pb;
use redstore_proto::stream::{InventorySnapshot, SnapshotItem};

use crate::domain::StoreRow;
use crate::domain::{ChargedPrice, ImportProduct, Product, StockCount, StockMovement};
use crate::repo;

pub use redstore_platform::idempotency::Idem;

/// Changes to a product; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct ProductPatch {
    pub sku: String,
    pub name: Option<String>,
    pub price: Option<redstore_platform::money::Money>,
    pub active: Option<bool>,
    /// When set, the product's barcodes become exactly these.
    pub barcodes: Option<Vec<Barcode>>,
}

/// A sale for [`InventoryStore::apply_sale`] to take the stock of, in a store the call names.
#[derive(Clone, Debug)]
pub struct SaleOrder {
    /// The idempotency key.
    pub sale_id: String,
    /// The request's fingerprint: the same sale id with another is ALREADY_EXISTS.
    pub fingerprint: Vec<u8>,
    pub terminal_id: String,
    pub movements: Vec<StockMovement>,
    /// The unit prices the sale charged, per sku; when given, the sale is refused
    /// ([`domain::REPRICE`]) unless each is still the catalog's and the product is for sale.
    /// Empty: the caller priced the sale in the same transaction (or does not price at all).
    ///
    /// [`domain::REPRICE`]: crate::domain::REPRICE
    pub charged: Vec<ChargedPrice>,
    /// The checkout it belongs to, when the caller records the sale only once inventory applied
    /// it: then the checkout's key is the idempotency key (see [`CheckoutKey`]).
    pub checkout: Option<CheckoutKey>,
}

/// A checkout's idempotency key, under which inventory applies a sale once whatever sale id each
/// attempt carries (`ApplySaleRequest.checkout_key`). A sale id applied before still answers
/// first. The answer names the sale applied under the key (`sale_id`, and `sale` when replayed).
#[derive(Clone, Debug)]
pub struct CheckoutKey {
    /// The checkout's idempotency key in its store.
    pub key: String,
    /// The checkout request's fingerprint: the same key with another is ALREADY_EXISTS.
    pub fingerprint: Vec<u8>,
    /// The sale as the caller records it (opaque here), kept with the answer.
    pub sale: Vec<u8>,
}

/// A checkout applied under its key, as [`InventoryStore::applied_checkouts`] lists it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppliedCheckout {
    pub key: String,
    /// The checkout request's fingerprint it was applied with.
    pub fingerprint: Vec<u8>,
    pub applied_at_ms: i64,
    /// The stored answer, with the sale's id and the sale kept.
    pub answer: pb::ApplySaleResponse,
}

/// The most checkouts one [`InventoryStore::applied_checkouts`] call lists, and the most keys it
/// takes.
pub const MAX_APPLIED_CHECKOUTS: u32 = 1000;

/// Which of a store's applied checkouts [`InventoryStore::applied_checkouts`] lists: those applied
/// at or after `from_ms` and before `before_ms`, after the (applied_at_ms, key) cursor `after`
/// when given, oldest first, at most `limit` (1 to [`MAX_APPLIED_CHECKOUTS`]); only those of
/// `keys` when it is not empty; with only their keys and times when `keys_only`.
#[derive(Clone, Debug, Default)]
pub struct CheckoutsQuery {
    pub from_ms: i64,
    pub before_ms: i64,
    pub after: Option<(i64, String)>,
    pub limit: u32,
    pub keys: Vec<String>,
    pub keys_only: bool,
}

/// A checkout's stored answer, as both inventories keep it with the key.
pub(crate) fn stored_checkout_answer(key: &str, stored: &[u8]) -> Result<pb::ApplySaleResponse> {
    pb::ApplySaleResponse::decode(stored)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored answer of checkout {key:?} is corrupt: {e}")))
}

/// What an import batch did: the records it applied, and whether it had been applied before under
/// its key (then this call changed nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    pub records: u32,
    pub replayed: bool,
}

/// A batch of a stock import stream, parsed: its key and its counts grouped by store
/// ([`crate::domain::import_counts`]).
#[derive(Clone, Debug)]
pub struct StockBatch {
    pub idem: Idem,
    pub stores: Vec<(String, Vec<StockCount>)>,
}

/// A stock import stream's batches in order, each parsed or the error that refuses it (named in
/// its batch already).
pub type StockBatches<'a> = futures::stream::BoxStream<'a, Result<StockBatch>>;

/// What an import stream did: its batches, their records, and the batches applied before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportTotals {
    pub batches: u64,
    pub records: u64,
    pub replayed: u64,
}

impl ImportTotals {
    pub fn add(&mut self, imported: Imported) {
        self.batches += 1;
        self.records += u64::from(imported.records);
        self.replayed += u64::from(imported.replayed);
    }
}

/// Names a batch of an import stream in an error: a field error's path (`batches[2].counts[17].sku`),
/// any other error's message.
pub fn in_batch(err: Error, index: u64) -> Error {
    let at = format!("batches[{index}]");
    match err {
        Error::InvalidArgument { .. } => err.scope(&at),
        Error::AlreadyExists(message) => Error::AlreadyExists(format!("{at}: {message}")),
        Error::NotFound(message) => Error::NotFound(format!("{at}: {message}")),
        other => other,
    }
}

/// The idempotency scopes of import batches (keys are chain-wide: a batch may span stores).
pub const IMPORT_PRODUCTS_SCOPE: &str = "inventory.import_products";
pub const IMPORT_STOCK_SCOPE: &str = "inventory.import_stock";

/// The idempotency scope of a store's checkouts, as sales keeps their keys and as an error names a
/// key reused: the same scope whichever service finds it reused.
pub fn checkout_key_scope(store_id: &str) -> String {
    format!("sales.checkout:{store_id}")
}

/// Where the embedded inventory keeps the checkouts it applied under their keys: a scope of its
/// own, beside sales' [`checkout_key_scope`] in the same database.
fn applied_checkouts_scope(store_id: &str) -> String {
    format!("inventory.checkout:{store_id}")
}

/// Whether a key is taken in a scope.
fn has_key(conn: &rusqlite::Connection, scope: &str, key: &str) -> Result<bool> {
    use rusqlite::OptionalExtension as _;
    Ok(conn
        .prepare_cached("SELECT 1 FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
        .query_row(rusqlite::params![scope, key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every store of `inventory`, listed anew on every call, for a sweep over a small chain (tests,
/// an embedded inventory). A deployment's sweeps list only the stores with a backlog
/// (`redstore_platform::kafka::backlog`).
pub fn store_lister(inventory: Arc<dyn InventoryStore>) -> redstore_platform::kafka::StoreLister {
    Arc::new(move || {
        let inventory = inventory.clone();
        Box::pin(async move { inventory.store_ids().await })
    })
}

#[tonic::async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    async fn create_store(&self, idem: Idem, store: StoreRow) -> Result<pb::Store>;
    async fn get_store(&self, store_id: &str) -> Result<StoreRow>;
    async fn list_stores(&self, after: &str, limit: u32) -> Result<Vec<StoreRow>>;
    /// Every store id of the chain, page by page (for sweeps over all stores).
    async fn store_ids(&self) -> Result<Vec<String>> {
        const PAGE: u32 = 500;
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().cloned().unwrap_or_default();
            let page = self.list_stores(&after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            out.extend(page.into_iter().map(|s| s.store_id));
            if done {
                return Ok(out);
            }
        }
    }
    async fn register_terminal(&self, idem: Idem, terminal: pb::Terminal) -> Result<pb::Terminal>;
    /// NOT_FOUND unless the store exists and the terminal is registered in it.
    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()>;
    async fn list_terminals(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>>;
    /// A registered terminal; NOT_FOUND as `require_terminal`.
    async fn get_terminal(&self, store_id: &str, terminal_id: &str) -> Result<pb::Terminal> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut after = String::new();
        loop {
            let page = self.list_terminals(store_id, &after, 500).await?;
            if let Some(t) = page.iter().find(|t| t.terminal_id == terminal_id) {
                return Ok(t.clone());
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = last.terminal_id.clone(),
                _ => {
                    return Err(Error::not_found(format!(
                        "terminal_id {terminal_id:?} is not registered in store {store_id:?}"
                    )));
                }
            }
        }
    }

    async fn create_product(&self, idem: Idem, product: Product, barcodes: Vec<Barcode>) -> Result<pb::Product>;
    async fn update_product(&self, idem: Idem, patch: ProductPatch) -> Result<pb::Product>;
    async fn get_product(&self, sku: &str) -> Result<Product>;
    /// Several products at once, in the order asked; `None` for a sku that does not exist.
    /// Backends that can read them in one go (PostgreSQL) override this loop.
    async fn get_products(&self, skus: &[String]) -> Result<Vec<Option<Product>>> {
        let mut products = Vec::with_capacity(skus.len());
        for sku in skus {
            match self.get_product(sku).await {
                Ok(p) => products.push(Some(p)),
                Err(e) if e.code() == tonic::Code::NotFound => products.push(None),
                Err(e) => return Err(e),
            }
        }
        Ok(products)
    }
    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>>;
    async fn product_by_barcode(&self, barcode: &Barcode) -> Result<Product>;

    async fn get_stock(&self, store_id: &str, sku: &str) -> Result<pb::StockLevel>;
    async fn list_stock(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>>;
    /// Applies one signed adjustment; the key is required.
    async fn adjust_stock(
        &self,
        idem: Idem,
        store_id: &str,
        movement: StockMovement,
        reason: &'static str,
    ) -> Result<pb::AdjustStockResponse>;
    /// Takes a sale's stock atomically under the store's oversell policy (and holds it to the
    /// prices it charged, if any); idempotent by sale id.
    async fn apply_sale(&self, store_id: &str, sale: SaleOrder) -> Result<pb::ApplySaleResponse>;

    /// Applies several sales of one store in order, each exactly as [`apply_sale`] would alone,
    /// with one outcome per sale. Backends that can do better (one transaction, one call)
    /// override this one-by-one default.
    ///
    /// [`apply_sale`]: InventoryStore::apply_sale
    async fn apply_sales(&self, store_id: &str, sales: Vec<SaleOrder>) -> Vec<Result<pb::ApplySaleResponse>> {
        let mut outcomes = Vec::with_capacity(sales.len());
        for sale in sales {
            outcomes.push(self.apply_sale(store_id, sale).await);
        }
        outcomes
    }

    /// Applies sales of several stores (a chain's batch: each sale with its store), in order within
    /// each store, each exactly as [`apply_sale`] would alone, with one outcome per sale in the
    /// order given. The default runs [`apply_sales`] for each store, the stores side by side.
    ///
    /// [`apply_sale`]: InventoryStore::apply_sale
    /// [`apply_sales`]: InventoryStore::apply_sales
    async fn apply_chain_sales(&self, sales: Vec<(String, SaleOrder)>) -> Vec<Result<pb::ApplySaleResponse>> {
        let (stores, sales): (Vec<String>, Vec<SaleOrder>) = sales.into_iter().unzip();
        let groups = redstore_platform::batch::by_store(stores.iter().map(String::as_str));
        let mut sales: Vec<Option<SaleOrder>> = sales.into_iter().map(Some).collect();
        let calls = groups.iter().map(|(store_id, members)| {
            let orders: Vec<SaleOrder> = members.iter().filter_map(|&m| sales[m].take()).collect();
            self.apply_sales(store_id, orders)
        });
        let answered = futures::future::join_all(calls).await;
        let mut outcomes: Vec<Option<Result<pb::ApplySaleResponse>>> = sales.iter().map(|_| None).collect();
        for ((_, members), answers) in groups.iter().zip(answered) {
            for (&m, answer) in members.iter().zip(answers) {
                outcomes[m] = Some(answer);
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("a sale of a chain's batch went unanswered"))))
            })
            .collect()
    }

    /// The store's checkouts applied under a [`CheckoutKey`] that `query` asks for.
    async fn applied_checkouts(&self, store_id: &str, query: CheckoutsQuery) -> Result<Vec<AppliedCheckout>>;

    /// Puts refunded units back (positive movements, reason "refund"); idempotent by refund id.
    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse>;

    /// Creates or replaces a batch of products (name, price, active, exactly their barcodes), all
    /// or none, once per key (required). A barcode of a product outside the batch is
    /// INVALID_ARGUMENT naming `products[i].barcodes[j]`.
    async fn import_products(&self, idem: Idem, products: Vec<ImportProduct>) -> Result<Imported>;

    /// Sets a batch of stock counts, grouped by store in lock order ([`crate::domain::import_counts`]),
    /// all or none, once per key (required): in each store one `inventory.changed` event (reason
    /// `import`, reference the key) under the store's next sequence. An unknown store or sku is
    /// INVALID_ARGUMENT naming `counts[i].store_id` or `counts[i].sku`.
    async fn import_stock(&self, idem: Idem, stores: Vec<(String, Vec<StockCount>)>) -> Result<Imported>;

    /// A stream of stock batches, in order, each as [`import_stock`](Self::import_stock) applies
    /// it; the first refusal ends the stream (naming its batch). This default applies each batch
    /// as its own unit, so the batches before a refusal stay applied; a backend that can hold one
    /// transaction for the stream overrides it to apply all of it or none.
    async fn import_stock_stream(&self, mut batches: StockBatches<'_>) -> Result<ImportTotals> {
        use futures::StreamExt as _;
        let mut totals = ImportTotals::default();
        while let Some(batch) = batches.next().await {
            let StockBatch { idem, stores } = batch?;
            let imported = self.import_stock(idem, stores).await.map_err(|e| in_batch(e, totals.batches))?;
            totals.add(imported);
        }
        Ok(totals)
    }

    /// The store's stock and the sequence number it reflects, read consistently.
    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot>;
    /// The store's inventory events after a sequence number, oldest first.
    async fn events_after(&self, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>>;
    /// Whether the store's log holds its event numbered `seq` (0, the start, always counts). A
    /// position a client or cache holds beyond the log was taken from a history since lost (the
    /// database restored from an older backup, or reset).
    async fn logged(&self, store_id: &str, seq: u64) -> Result<bool> {
        if seq == 0 {
            return Ok(true);
        }
        Ok(self.events_after(store_id, seq - 1, 1).await?.first().is_some_and(|e| e.store_seq == seq))
    }
}

/// The embedded (SQLite) implementation.
#[derive(Clone)]
pub struct SqliteInventory {
    db: Db,
}

impl SqliteInventory {
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self { db })
    }
}

/// Reads a consistent snapshot of a store's stock and the sequence it reflects.
fn snapshot_in(conn: &rusqlite::Connection, store_id: &str) -> Result<InventorySnapshot> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        repo::get_store(conn, store_id)?;
        let as_of_seq = eventlog::last_seq(conn, Topic::Inventory, store_id)?;
        let mut after = String::new();
        let mut items = Vec::new();
        loop {
            let page = repo::list_stock(conn, store_id, &after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.sku.clone();
            items.extend(page.into_iter().map(|s| SnapshotItem { sku: s.sku, quantity: s.quantity }));
        }
        Ok(InventorySnapshot { store_id: store_id.to_owned(), as_of_seq, items })
    })();
    conn.execute_batch("COMMIT")?;
    result
}

#[tonic::async_trait]
impl InventoryStore for SqliteInventory {
    async fn create_store(&self, idem: Idem, store: StoreRow) -> Result<pb::Store> {
        self.db
            .write(move |ctx| {
                maybe_once(ctx, "inventory.create_store", &idem.key, &idem.fingerprint, |ctx| {
                    repo::insert_store(ctx.conn, &store, unix_ms(ctx.now))?;
                    Ok(store.to_proto())
                })
            })
            .await
    }

    async fn get_store(&self, store_id: &str) -> Result<StoreRow> {
        let id = store_id.to_owned();
        self.db.read(move |c| repo::get_store(c, &id)).await
    }

    async fn list_stores(&self, after: &str, limit: u32) -> Result<Vec<StoreRow>> {
        let after = after.to_owned();
        self.db.read(move |c| repo::list_stores(c, &after, limit)).await
    }

    async fn register_terminal(&self, idem: Idem, terminal: pb::Terminal) -> Result<pb::Terminal> {
        self.db
            .write(move |ctx| {
                maybe_once(ctx, "inventory.register_terminal", &idem.key, &idem.fingerprint, |ctx| {
                    repo::insert_terminal(ctx.conn, &terminal)?;
                    Ok(terminal)
                })
            })
            .await
    }

    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        let (s, t) = (store_id.to_owned(), terminal_id.to_owned());
        self.db.read(move |c| repo::require_terminal(c, &s, &t)).await
    }

    async fn list_terminals(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>> {
        let (s, a) = (store_id.to_owned(), after.to_owned());
        self.db.read(move |c| repo::list_terminals(c, &s, &a, limit)).await
    }

    async fn create_product(&self, idem: Idem, product: Product, barcodes: Vec<Barcode>) -> Result<pb::Product> {
        self.db
            .write(move |ctx| {
                maybe_once(ctx, "inventory.create_product", &idem.key, &idem.fingerprint, |ctx| {
                    repo::insert_product(ctx.conn, &product, &barcodes, unix_ms(ctx.now))?;
                    Ok(repo::get_product(ctx.conn, &product.sku)?.to_proto())
                })
            })
            .await
    }

    async fn update_product(&self, idem: Idem, patch: ProductPatch) -> Result<pb::Product> {
        self.db
            .write(move |ctx| {
                maybe_once(ctx, "inventory.update_product", &idem.key, &idem.fingerprint, |ctx| {
                    let mut product = repo::get_product(ctx.conn, &patch.sku)?;
                    patch.apply(&mut product);
                    repo::update_product(ctx.conn, &product, patch.barcodes.as_deref(), unix_ms(ctx.now))?;
                    Ok(repo::get_product(ctx.conn, &patch.sku)?.to_proto())
                })
            })
            .await
    }

    async fn get_product(&self, sku: &str) -> Result<Product> {
        let sku = sku.to_owned();
        self.db.read(move |c| repo::get_product(c, &sku)).await
    }

    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
        let after = after.to_owned();
        self.db.read(move |c| repo::list_products(c, include_inactive, &after, limit)).await
    }

    async fn product_by_barcode(&self, barcode: &Barcode) -> Result<Product> {
        let barcode = barcode.clone();
        self.db
            .read(move |c| {
                let sku = repo::sku_by_barcode(c, &barcode)?
                    .ok_or_else(|| Error::not_found(format!("no product has barcode {barcode}")))?;
                repo::get_product(c, &sku)
            })
            .await
    }

    async fn get_stock(&self, store_id: &str, sku: &str) -> Result<pb::StockLevel> {
        let (s, k) = (store_id.to_owned(), sku.to_owned());
        self.db.read(move |c| repo::get_stock(c, &s, &k)).await
    }

    async fn list_stock(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>> {
        let (s, a) = (store_id.to_owned(), after.to_owned());
        self.db
            .read(move |c| {
                repo::get_store(c, &s)?;
                repo::list_stock(c, &s, &a, limit)
            })
            .await
    }

    async fn adjust_stock(
        &self,
        idem: Idem,
        store_id: &str,
        movement: StockMovement,
        reason: &'static str,
    ) -> Result<pb::AdjustStockResponse> {
        let store_id = store_id.to_owned();
        self.db
            .write(move |ctx| {
                once(ctx, &format!("inventory.adjust_stock:{store_id}"), &idem.key, &idem.fingerprint, |ctx| {
                    let store = repo::get_store(ctx.conn, &store_id)?;
                    repo::require_skus(ctx.conn, std::slice::from_ref(&movement))?;
                    let adjustment_id = uuid::Uuid::now_v7().to_string();
                    let applied =
                        repo::apply_movements(ctx, &store, reason, &adjustment_id, "", "quantity_delta", &[movement])?;
                    Ok(pb::AdjustStockResponse { stock: applied.levels.into_iter().next(), adjustment_id })
                })
            })
            .await
    }

    async fn apply_sale(&self, store_id: &str, sale: SaleOrder) -> Result<pb::ApplySaleResponse> {
        let store_id = store_id.to_owned();
        self.db
            .write(move |ctx| {
                let SaleOrder { sale_id, fingerprint, terminal_id, movements, charged, checkout } = &sale;
                let apply = |ctx: &mut WriteCtx<'_>| {
                    let applied = crate::local::apply_sale(ctx, &store_id, terminal_id, sale_id, movements, charged)?;
                    Ok(pb::ApplySaleResponse {
                        stock: applied.levels,
                        negative_skus: applied.negative_skus,
                        store_seq: applied.event.store_seq,
                        ..Default::default()
                    })
                };
                let Some(checkout) = checkout else {
                    return once(ctx, "inventory.apply_sale", sale_id, fingerprint, apply);
                };
                // A sale id applied before answers first, as it does without a checkout key.
                if has_key(ctx.conn, "inventory.apply_sale", sale_id)? {
                    return once(ctx, "inventory.apply_sale", sale_id, fingerprint, apply);
                }
                once(ctx, &applied_checkouts_scope(&store_id), &checkout.key, &checkout.fingerprint, |ctx| {
                    let mut answer = apply(ctx)?;
                    answer.sale_id = sale_id.clone();
                    answer.sale = checkout.sale.clone();
                    Ok(answer)
                })
                .map_err(|err| match err {
                    // Named as the checkout's key, as the PostgreSQL inventory names it.
                    Error::AlreadyExists(_) => key_reused(&checkout_key_scope(&store_id), &checkout.key),
                    err => err,
                })
            })
            .await
    }

    async fn applied_checkouts(&self, store_id: &str, query: CheckoutsQuery) -> Result<Vec<AppliedCheckout>> {
        let scope = applied_checkouts_scope(store_id);
        self.db
            .read(move |c| {
                let (after_ms, after_key) = query.after.clone().unwrap_or((i64::MIN, String::new()));
                let mut stmt = c.prepare_cached(
                    "SELECT key, created_at_ms, response, request FROM idempotency_keys
                     WHERE scope = ?1 AND created_at_ms >= ?2 AND created_at_ms < ?3
                       AND (created_at_ms, key) > (?4, ?5) AND (?6 IS NULL OR key = ?6)
                     ORDER BY created_at_ms, key LIMIT ?7",
                )?;
                // Every key of the window, or each key asked for (a primary-key lookup each).
                let asked: Vec<Option<&str>> = match query.keys.is_empty() {
                    true => vec![None],
                    false => query.keys.iter().map(|k| Some(k.as_str())).collect(),
                };
                let mut listed = Vec::new();
                for key in asked {
                    let params =
                        rusqlite::params![scope, query.from_ms, query.before_ms, after_ms, after_key, key, query.limit];
                    let rows = stmt.query_map(params, |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                        ))
                    })?;
                    for row in rows {
                        let (key, applied_at_ms, answer, fingerprint) = row?;
                        if query.keys_only {
                            listed.push(AppliedCheckout { key, applied_at_ms, ..AppliedCheckout::default() });
                            continue;
                        }
                        let answer = stored_checkout_answer(&key, &answer)?;
                        listed.push(AppliedCheckout { key, fingerprint, applied_at_ms, answer });
                    }
                }
                listed.sort_by(|a, b| (a.applied_at_ms, &a.key).cmp(&(b.applied_at_ms, &b.key)));
                listed.truncate(query.limit as usize);
                Ok(listed)
            })
            .await
    }

    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        let (refund_id, store_id, terminal_id) = (refund_id.to_owned(), store_id.to_owned(), terminal_id.to_owned());
        let fingerprint = format!("{store_id}/{terminal_id}/{movements:?}").into_bytes();
        self.db
            .write(move |ctx| {
                once(ctx, "inventory.apply_refund", &refund_id, &fingerprint, |ctx| {
                    let applied = crate::local::return_refunded(ctx, &store_id, &refund_id, &terminal_id, &movements)?;
                    Ok(pb::ApplySaleResponse {
                        stock: applied.levels,
                        negative_skus: applied.negative_skus,
                        store_seq: applied.event.store_seq,
                        ..Default::default()
                    })
                })
            })
            .await
    }

    async fn import_products(&self, idem: Idem, products: Vec<ImportProduct>) -> Result<Imported> {
        self.db
            .write(move |ctx| {
                let replayed = has_key(ctx.conn, IMPORT_PRODUCTS_SCOPE, &idem.key)?;
                let answer = once(ctx, IMPORT_PRODUCTS_SCOPE, &idem.key, &idem.fingerprint, |ctx| {
                    repo::import_products(ctx.conn, &products, unix_ms(ctx.now))?;
                    Ok(pb::ImportBatchResult { records: products.len() as u32 })
                })?;
                Ok(Imported { records: answer.records, replayed })
            })
            .await
    }

    async fn import_stock(&self, idem: Idem, stores: Vec<(String, Vec<StockCount>)>) -> Result<Imported> {
        self.db
            .write(move |ctx| {
                let replayed = has_key(ctx.conn, IMPORT_STOCK_SCOPE, &idem.key)?;
                let answer = once(ctx, IMPORT_STOCK_SCOPE, &idem.key, &idem.fingerprint, |ctx| {
                    repo::check_counted_exist(ctx.conn, &stores)?;
                    let mut records = 0;
                    for (store_id, counts) in &stores {
                        repo::import_counts(ctx, store_id, counts, &idem.key)?;
                        records += counts.len() as u32;
                    }
                    Ok(pb::ImportBatchResult { records })
                })?;
                Ok(Imported { records: answer.records, replayed })
            })
            .await
    }

    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot> {
        let id = store_id.to_owned();
        self.db.read(move |c| snapshot_in(c, &id)).await
    }

    async fn events_after(&self, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>> {
        let id = store_id.to_owned();
        self.db.read(move |c| eventlog::inventory_events_after(c, &id, after, limit)).await
    }
}

impl ProductPatch {
    /// Applies the patch's name, price and active flag to a product.
    pub fn apply(&self, product: &mut Product) {
        if let Some(name) = &self.name {
            product.name.clone_from(name);
        }
        if let Some(price) = self.price {
            product.price = price;
        }
        if let Some(active) = self.active {
            product.active = active;
        }
    }
}
