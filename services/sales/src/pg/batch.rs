//! The queue every PostgreSQL checkout waits in, and what every batch does before it is carried
//! out: the checkouts waiting are taken in batches ([`StoreBatcher`]: one worker per lane, each
//! store hashed to one of [`LANES`] lanes, batches one after another), drafted (the terminal
//! checked, the lines priced from the copy of the catalog, the tenders settled) and their keys
//! claimed; a [`CheckoutPath`] carries the batch out — `group_commit` in one transaction with
//! inventory, or `saga` step by step — and the callers are answered.
//!
//! Within a batch an idempotency key, and a terminal's cart, is taken once: a second checkout with
//! the same key, or selling the same terminal's cart, waits for the next batch, where it finds the
//! first one's sale, or the emptied cart. When a batch fails as a whole it runs again one checkout
//! at a time, so one bad checkout cannot fail the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::FutureExt as _;
use prost::Message as _;
use redstore_inventory::domain::{ChargedPrice, Product, StockMovement};
use redstore_inventory::store::{CheckoutKey, SaleOrder};
use redstore_platform::batch::{self as platform_batch, StoreBatcher};
use redstore_platform::error::{Error, Result};
use redstore_platform::pg;
use redstore_platform::time::timestamp_ms;
use redstore_proto::sales::{Sale, SaleStatus};
use sqlx::{PgConnection, Row as _};
use tokio::sync::oneshot;

use super::carts::Carts;
use super::{
    KeyedSale, PgSales, apply_request, draft_sale, keyed_sales, price_lines, resume_keyed, sale_completed_event,
    sold_lines,
};
use crate::catalog;
use crate::store::{CheckoutOrder, empty_cart};

/// The most checkouts one transaction takes.
const MAX_BATCH: usize = 64;

/// How long a store's worker waits for work before it stops.
const IDLE: Duration = Duration::from_secs(30);

/// How long a busy store's next batch may wait for the checkouts of the terminals the last one
/// answered (see `redstore_platform::batch`; Tokio's timer rounds it up to the next millisecond).
/// Without it 32 terminals split into two groups of 16 taking turns, each paying a batch's fixed
/// costs for half the terminals; with it, one batch of 32 per round (measured in
/// docs/benchmarks-history.md, 9th machine). A store selling one checkout at a time never waits.
const LINGER: Duration = Duration::from_millis(2);

/// A checkout waiting for its store's next batch, and where its answer goes.
pub(crate) struct Job {
    pub(crate) order: CheckoutOrder,
    pub(crate) reply: oneshot::Sender<Result<Sale>>,
    /// How often inventory refused it for a price that no longer held (see `Answer::Reprice`).
    pub(crate) repriced: u8,
}

/// How often a checkout is priced again after inventory refused the prices it charged, before
/// that refusal is its answer: catalogs do not change several times a second.
const REPRICES: u8 = 3;

/// What a checkout of a batch comes to.
pub(super) enum Answer {
    /// Boxed: a sale is large, and most answers are one.
    Done(Box<Result<Sale>>),
    /// Its key points at a sale the saga left pending (another process, or a crash): the saga
    /// finishes it, after the batch.
    Saga,
    /// Inventory refused the prices it charged (the copy of the catalog they came from was stale
    /// and is forgotten): it left no trace, and goes into the next batch to be priced again.
    Reprice(Error),
}

/// How many batches of different stores run at once: each store has its lane
/// ([`redstore_platform::batch::lane`]), and a lane's batch takes whatever its stores have
/// waiting, so a chain whose stores each sell now and then still fills batches.
pub(crate) const LANES: usize = 2;

/// The queue a checkout waits in: its store's lane.
pub(crate) fn queue_of(store_id: &str) -> String {
    redstore_platform::batch::lane(store_id, LANES)
}

/// How a batch of checkouts is carried out, chosen when the store is built: [`GroupCommit`]
/// (inventory in this database) or [`Saga`] (inventory elsewhere).
///
/// [`GroupCommit`]: super::group_commit::GroupCommit
/// [`Saga`]: super::saga::Saga
pub(super) trait CheckoutPath: Clone + Send + Sync + 'static {
    /// An answer per checkout, or an error for the whole batch.
    fn run_batch(
        &self,
        sales: &PgSales,
        orders: &[&CheckoutOrder],
    ) -> impl std::future::Future<Output = Result<Vec<Answer>>> + Send;
}

/// The batcher of a [`PgSales`]: checkouts queued by lane, each batch carried out by `path`;
/// `saga` is the same store without the batcher (for the rare checkout only the saga can finish).
pub(crate) fn batcher(saga: PgSales, path: impl CheckoutPath) -> StoreBatcher<Job> {
    // One batch of a queue at a time. With inventory local, a batch holds its stores' locks to its
    // commit, and a second beside it only queued on them. The saga's batches hold none, but each
    // costs the same few statements whatever its size, so one batch of every waiting checkout
    // beats two or three smaller ones in flight (both measured in docs/benchmarks-history.md,
    // "Batches in flight").
    StoreBatcher::new(MAX_BATCH, 1, IDLE, LINGER, move |_queue, jobs| {
        metrics::histogram!("redstore_write_batch_size", "writer" => "checkouts").record(jobs.len() as f64);
        let (saga, path) = (saga.clone(), path.clone());
        async move { run(&saga, &path, jobs).await }.boxed()
    })
}

/// Runs one batch and answers its checkouts; returns those put off to the next batch.
async fn run(saga: &PgSales, path: &impl CheckoutPath, jobs: Vec<Job>) -> Vec<Job> {
    let (mut keys, mut carts) = (HashSet::new(), HashSet::new());
    let (now, later): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| {
        let order = &job.order;
        let cart_free = !order.lines.is_empty() || carts.insert((order.store_id.clone(), order.terminal_id.clone()));
        cart_free && keys.insert((order.store_id.clone(), order.idem.key.clone()))
    });
    let orders: Vec<&CheckoutOrder> = now.iter().map(|job| &job.order).collect();
    let started = std::time::Instant::now();
    let outcome = path.run_batch(saga, &orders).await;
    tracing::debug!(
        checkouts = orders.len(),
        put_off = later.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "checkout batch"
    );
    let answers = match outcome {
        Ok(answers) => answers,
        Err(err) if orders.len() > 1 => {
            tracing::warn!(error = %err, checkouts = orders.len(), "a checkout batch failed; running its checkouts one at a time");
            let mut answers = Vec::with_capacity(orders.len());
            for order in &orders {
                let answer = match path.run_batch(saga, std::slice::from_ref(order)).await {
                    Ok(mut one) => one.pop().unwrap_or(Answer::Saga),
                    Err(err) => Answer::Done(Box::new(Err(err))),
                };
                answers.push(answer);
            }
            answers
        }
        Err(err) => vec![Answer::Done(Box::new(Err(err)))],
    };
    let mut later = later;
    for (mut job, answer) in now.into_iter().zip(answers) {
        match answer {
            Answer::Done(result) => {
                let _ = job.reply.send(*result);
            }
            Answer::Reprice(err) if job.repriced >= REPRICES => {
                let _ = job.reply.send(Err(err));
            }
            Answer::Reprice(_) => {
                job.repriced += 1;
                later.push(job);
            }
            Answer::Saga => {
                let saga = saga.clone();
                tokio::spawn(async move {
                    let _ = job.reply.send(saga.checkout_saga(job.order).await);
                });
            }
        }
    }
    later
}

/// The lines a checkout sells: the request's, or the terminal's cart.
pub(super) struct Lines<'a> {
    pub(super) field: &'static str,
    pub(super) from_cart: bool,
    pub(super) lines: &'a [(String, i64)],
}

/// A drafted checkout on its way to inventory.
pub(super) struct Drafted {
    pub(super) index: usize,
    pub(super) sale: Sale,
    pub(super) from_cart: bool,
    pub(super) movements: Vec<StockMovement>,
    /// The unit prices it charged, for inventory to hold it to.
    pub(super) charged: Vec<ChargedPrice>,
    pub(super) request: Vec<u8>,
}

impl Drafted {
    /// What inventory is asked to apply: the sale under its checkout's key, with the sale itself
    /// when `keep` (inventory keeps it for a retry, or the reconciler, to record).
    pub(super) fn sale_order(&self, order: &CheckoutOrder, keep: bool) -> SaleOrder {
        SaleOrder {
            sale_id: self.sale.sale_id.clone(),
            fingerprint: self.request.clone(),
            terminal_id: self.sale.terminal_id.clone(),
            movements: self.movements.clone(),
            charged: self.charged.clone(),
            checkout: Some(CheckoutKey {
                key: order.idem.key.clone(),
                fingerprint: order.idem.fingerprint.clone(),
                sale: if keep { self.sale.encode_to_vec() } else { Vec::new() },
            }),
        }
    }
}
/// What a checkout inventory refused comes to: its error, or, when the refusal says the copy of
/// the catalog it was priced from is stale, another try (the copy forgets its products).
pub(super) fn refusal(saga: &PgSales, sale: &Sale, err: Error) -> Answer {
    if catalog::is_reprice(&err) {
        saga.catalog.forget(sale.lines.iter().map(|l| l.sku.as_str()));
        return Answer::Reprice(err);
    }
    Answer::Done(Box::new(Err(err)))
}

/// Each checkout drafted (its terminal checked, its lines priced, its tenders settled) from the
/// copy of the catalog, which asks inventory about what it does not hold.
pub(super) async fn draft_all(
    saga: &PgSales,
    orders: &[&CheckoutOrder],
    lines: &[Lines<'_>],
) -> Result<Vec<Result<(Sale, Vec<StockMovement>)>>> {
    // Each checkout's terminal (errors are not `Clone`: one check per checkout, all at once).
    let terminal_checks =
        futures::future::join_all(orders.iter().map(|o| saga.require_terminal(&o.store_id, &o.terminal_id))).await;
    let mut skus: Vec<String> = lines.iter().flat_map(|l| l.lines.iter().map(|(sku, _)| sku.clone())).collect();
    skus.sort_unstable();
    skus.dedup();
    let products: HashMap<String, Product> =
        if skus.is_empty() { HashMap::new() } else { saga.catalog.products(saga.inventory.as_ref(), &skus).await? };
    Ok(orders
        .iter()
        .zip(lines)
        .zip(terminal_checks)
        .map(|((order, l), terminal)| draft(&order.store_id, order, l, terminal, |sku| products.get(sku)))
        .collect())
}
/// A batch's completed sales as its completing statement takes them: each one's `sale.completed`
/// event (the statement numbers it) and the cart lines it sold.
#[derive(Default)]
pub(super) struct Completions {
    pub(super) sale_ids: Vec<String>,
    pub(super) event_ids: Vec<uuid::Uuid>,
    pub(super) events: Vec<Vec<u8>>,
    /// Per cart line sold: whose line it is (how the statement finds the cart), its sku and quantity.
    pub(super) cart_owners: Vec<String>,
    pub(super) cart_skus: Vec<String>,
    pub(super) cart_quantities: Vec<i64>,
}

impl Completions {
    /// Binds the completing call's last five arguments: event ids and events, then the sold cart
    /// lines (owners, skus, quantities).
    pub(super) fn bind_events_and_carts<'q>(&'q self, query: pg::PgQuery<'q>) -> pg::PgQuery<'q> {
        query
            .bind(&self.event_ids)
            .bind(&self.events)
            .bind(&self.cart_owners)
            .bind(&self.cart_skus)
            .bind(&self.cart_quantities)
    }

    /// Adds a completed sale; `cart_owner` names it to the statement when it sold its cart.
    pub(super) fn add(&mut self, store_id: &str, occurred_at_ms: i64, sale: &Sale, cart_owner: Option<&str>) {
        let (event_id, event) = sale_completed_event(store_id, occurred_at_ms, sale);
        self.sale_ids.push(sale.sale_id.clone());
        self.event_ids.push(event_id);
        self.events.push(event);
        if let Some(owner) = cart_owner {
            let (skus, quantities) = sold_lines(sale);
            self.cart_owners.extend(skus.iter().map(|_| owner.to_owned()));
            self.cart_skus.extend(skus.into_iter().map(str::to_owned));
            self.cart_quantities.extend(quantities);
        }
    }
}

/// What a checkout whose key was taken comes to.
pub(super) fn keyed_answer(order: &CheckoutOrder, sale: KeyedSale) -> Answer {
    match resume_keyed(order, sale) {
        Err(err) => Answer::Done(Box::new(Err(err))),
        Ok(Err(completed)) => Answer::Done(Box::new(Ok(completed))),
        Ok(Ok(_pending)) => Answer::Saga,
    }
}
/// What each checkout sells: its lines, or its terminal's cart.
pub(super) fn lines_of<'a>(orders: &[&'a CheckoutOrder], carts: &'a Carts) -> Vec<Lines<'a>> {
    orders
        .iter()
        .map(|o| match o.lines.is_empty() {
            true => Lines {
                field: "cart",
                from_cart: true,
                lines: carts.get(&(o.store_id.clone(), o.terminal_id.clone())).map_or(&[][..], Vec::as_slice),
            },
            false => Lines { field: "lines", from_cart: false, lines: &o.lines },
        })
        .collect()
}

/// A checkout's sale, priced and settled, with its movements; in the order of the saga's checks:
/// the terminal, an empty cart, the catalog, the tenders.
pub(super) fn draft<'p>(
    store_id: &str,
    order: &CheckoutOrder,
    lines: &Lines<'_>,
    terminal: Result<()>,
    product: impl Fn(&str) -> Option<&'p Product>,
) -> Result<(Sale, Vec<StockMovement>)> {
    terminal?;
    if lines.lines.is_empty() {
        return Err(empty_cart(store_id, &order.terminal_id));
    }
    let priced = price_lines(lines.field, lines.lines, &order.overrides, |i| product(&lines.lines[i].0))?;
    draft_sale(order, lines.field, lines.lines, &priced)
}

/// What a claimed sale is recorded as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimedAs {
    /// Completed, in the group commit's transaction (invisible until it commits).
    Completed,
    /// Pending, the saga's first step, until inventory has answered.
    Pending,
}

impl ClaimedAs {
    /// The value of `sales.sales.status`.
    fn status(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Pending => "pending",
        }
    }
}

/// Claims the drafted checkouts' keys by inserting their sales, `completed` (invisible until the
/// caller commits) or `pending` (the saga's first step), under the unique (store, idempotency
/// key), every store's in one statement (`sales.claim_sales_parts`, migration 0011); a key taken by
/// a concurrent attempt waits for that one's transaction. Answers the checkouts that did not draft
/// (with their error, unless their key was used before) and those whose key was taken (from the
/// sale it points at); returns the claimed ones.
pub(super) async fn claim(
    conn: &mut PgConnection,
    orders: &[&CheckoutOrder],
    lines: &[Lines<'_>],
    drafts: Vec<Result<(Sale, Vec<StockMovement>)>>,
    recorded_as: ClaimedAs,
    answers: &mut [Option<Answer>],
) -> Result<Vec<Drafted>> {
    let mut drafted = Vec::new();
    let mut lookup: Vec<usize> = Vec::new();
    for (index, draft) in drafts.into_iter().enumerate() {
        match draft {
            Ok((mut sale, movements)) => {
                if recorded_as == ClaimedAs::Completed {
                    sale.status = SaleStatus::Completed as i32;
                }
                let request = apply_request(&sale).0.encode_to_vec();
                let charged = catalog::charged(&sale);
                drafted.push(Drafted { index, sale, from_cart: lines[index].from_cart, movements, charged, request });
            }
            Err(err) => {
                // A retry whose sale is recorded may fail to draft (its cart sold, a product since
                // withdrawn…): the key decides.
                lookup.push(index);
                answers[index] = Some(Answer::Done(Box::new(Err(err))));
            }
        }
    }
    let key_of = |index: usize| (orders[index].store_id.as_str(), orders[index].idem.key.as_str());
    let mut claimed: HashSet<(&str, &str)> = HashSet::new();
    if !drafted.is_empty() {
        let by_store = platform_batch::by_store(drafted.iter().map(|d| orders[d.index].store_id.as_str()));
        let (mut stores, mut ends, mut sorted) = (Vec::new(), Vec::new(), Vec::new());
        for (store_id, members) in &by_store {
            stores.push(*store_id);
            sorted.extend(members.iter().map(|&m| &drafted[m]));
            ends.push(sorted.len() as i32);
        }
        let status = recorded_as.status();
        let rows =
            sqlx::query("SELECT o_part, o_key FROM sales.claim_sales_parts($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&stores)
                .bind(&ends)
                .bind(status)
                .bind(sorted.iter().map(|d| d.sale.sale_id.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| d.sale.terminal_id.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| orders[d.index].idem.key.as_str()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| orders[d.index].idem.fingerprint.as_slice()).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| d.from_cart).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| d.sale.created_at.as_ref().map_or(0, timestamp_ms)).collect::<Vec<_>>())
                .bind(sorted.iter().map(|d| d.sale.encode_to_vec()).collect::<Vec<_>>())
                .fetch_all(&mut *conn)
                .await?;
        for row in &rows {
            let part: i32 = row.try_get(0)?;
            let Some(store_id) = usize::try_from(part).ok().and_then(|p| stores.get(p.wrapping_sub(1))) else {
                return Err(Error::Internal(anyhow::anyhow!("claim_sales_parts answered for part {part}")));
            };
            let key: &str = row.try_get(1)?;
            // The claimed key as the batch holds it (a borrow of the order, not of the row).
            if let Some(d) = drafted.iter().find(|d| key_of(d.index) == (*store_id, key)) {
                claimed.insert(key_of(d.index));
            }
        }
    }
    lookup.extend(drafted.iter().map(|d| d.index).filter(|&i| !claimed.contains(&key_of(i))));
    if !lookup.is_empty() {
        for (store_id, members) in platform_batch::by_store(lookup.iter().map(|&i| orders[i].store_id.as_str())) {
            let keys: Vec<&str> = members.iter().map(|&m| orders[lookup[m]].idem.key.as_str()).collect();
            // keyed_sales scopes itself, and refuses a transaction scoped to another store.
            pg::scope_to_store(&mut *conn, store_id).await?;
            let mut keyed = keyed_sales(conn, store_id, &keys).await?;
            for &m in &members {
                let index = lookup[m];
                let order = orders[index];
                if let Some(sale) = keyed.remove(&order.idem.key) {
                    answers[index] = Some(keyed_answer(order, sale));
                } else if answers[index].is_none() {
                    // Taken, and gone again by the time it was read (its attempt rolled back).
                    answers[index] = Some(Answer::Saga);
                }
            }
        }
        drafted.retain(|d| claimed.contains(&key_of(d.index)));
    }
    Ok(drafted)
}
