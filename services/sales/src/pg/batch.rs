//! Checkout by group commit, for a process where sales and inventory share one PostgreSQL
//! database ([`PgSales::with_local_inventory`]).
//!
//! The checkouts waiting are taken in batches ([`StoreBatcher`]: one worker per lane, each store
//! hashed to one of [`LANES`] lanes, batches one after another) and each batch, whatever its
//! stores, is ONE transaction instead of the saga's three per checkout, with one statement per
//! step for all its stores (the `*_parts` SQL functions, inventory and sales migrations 0011: they
//! scope the transaction to the batch's stores, so row-level security refuses any row of another
//! store, and take stores' locks in id order):
//!
//! 1. the carts of the checkouts that sell one (row-locked, so a cart is sold once), the store, its
//!    terminals and the products — then every checkout is drafted (priced, settled) here;
//! 2. the drafted sales go in as `completed` (invisible until the commit) under the unique
//!    (store, idempotency key): a key taken by a concurrent attempt waits for that one's
//!    transaction, and a key used before is answered as the saga answers it (its completed sale,
//!    or ALREADY_EXISTS for another request); a checkout whose draft failed gets its error unless
//!    its key says it was done before;
//! 3. inventory decides the claimed sales in the same transaction
//!    ([`redstore_inventory::pg::decide_parts`]: idempotent by sale id, all-or-nothing per sale),
//!    taking each store's stock lock;
//! 4. one statement writes inventory's decisions ([`PartsWrite`]) and
//!    (`sales.record_completed_parts`) deletes the sales inventory refused,
//!    records the others' negative skus, directory entries and sold carts, and numbers their
//!    `sale.completed` events under the store's sales sequence lock, taken last.
//!
//! One commit makes the whole batch durable; then the callers are answered and, off the batch's
//! path, listeners notified. A checkout refused by inventory, or one whose draft failed, leaves no
//! trace. When the batch as a whole fails (a lost connection, a deadlock with another process), it
//! is rolled back and its checkouts run again one at a time, so one bad checkout cannot fail the
//! others.
//!
//! The stores' locks are taken as late as possible — stock at step 3, the sales sequence at step
//! 4 — so that they are held for three round trips and the commit: that, not the work, is what
//! bounds one store's throughput. Lock order, everywhere: carts, keys (in key order), inventory's
//! stock locks, the sales sequences, each kind in store id order; so batches sharing stores in
//! several processes queue, never deadlock.
//!
//! Within a batch an idempotency key, and a terminal's cart, is taken once: a second checkout with
//! the same key, or selling the same terminal's cart, waits for the next batch, where it finds the
//! first one's sale, or the emptied cart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::FutureExt as _;
use prost::Message as _;
use redstore_inventory::domain::{ChargedPrice, Product, StockMovement};
use redstore_inventory::pg::{PartsWrite, SaleToApply, StoreSales, decide_parts};
use redstore_inventory::store::{CheckoutKey, SaleOrder};
use redstore_platform::batch::{self as platform_batch, StoreBatcher};
use redstore_platform::error::{Error, Result};
use redstore_platform::pg;
use redstore_platform::time::timestamp_ms;
use redstore_proto::sales::{Sale, SaleStatus};
use sqlx::{PgConnection, Row as _};
use tokio::sync::oneshot;

use super::{
    KeyedSale, PgSales, SCHEMA, apply_request, draft_sale, keyed_sales, now_ms, price_lines, resume_keyed,
    sale_completed_event, sold_lines,
};
use crate::catalog;
use crate::store::{CheckoutOrder, cart_refusal, empty_cart};

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
enum Answer {
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

/// The batcher of a [`PgSales`] whose checkouts go by group commit; `saga` is the same store
/// without the batcher (for the rare checkout only the saga can finish).
pub(crate) fn batcher(saga: PgSales, local: bool) -> StoreBatcher<Job> {
    // One batch of a queue at a time. With inventory local, a batch holds its stores' locks to its
    // commit, and a second beside it only queued on them. The saga's batches hold none, but each
    // costs the same few statements whatever its size, so one batch of every waiting checkout
    // beats two or three smaller ones in flight (both measured in docs/benchmarks-history.md,
    // "Batches in flight").
    StoreBatcher::new(MAX_BATCH, 1, IDLE, LINGER, move |_queue, jobs| {
        let saga = saga.clone();
        async move { run(&saga, local, jobs).await }.boxed()
    })
}

/// One batch of any stores' checkouts: with inventory in this process and database, one
/// transaction; else the saga's steps, each for the whole batch.
async fn batch(saga: &PgSales, local: bool, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
    if local { checkout_batch(saga, orders).await } else { saga_batch(saga, orders).await }
}

/// Runs one batch and answers its checkouts; returns those put off to the next batch.
async fn run(saga: &PgSales, local: bool, jobs: Vec<Job>) -> Vec<Job> {
    let (mut keys, mut carts) = (HashSet::new(), HashSet::new());
    let (now, later): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| {
        let order = &job.order;
        let cart_free = !order.lines.is_empty() || carts.insert((order.store_id.clone(), order.terminal_id.clone()));
        cart_free && keys.insert((order.store_id.clone(), order.idem.key.clone()))
    });
    let orders: Vec<&CheckoutOrder> = now.iter().map(|job| &job.order).collect();
    let started = std::time::Instant::now();
    let outcome = batch(saga, local, &orders).await;
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
                let answer = match batch(saga, local, std::slice::from_ref(order)).await {
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
struct Lines<'a> {
    field: &'static str,
    from_cart: bool,
    lines: &'a [(String, i64)],
}

/// A drafted checkout on its way to inventory.
struct Drafted {
    index: usize,
    sale: Sale,
    from_cart: bool,
    movements: Vec<StockMovement>,
    /// The unit prices it charged, for inventory to hold it to.
    charged: Vec<ChargedPrice>,
    request: Vec<u8>,
}

impl Drafted {
    /// What inventory is asked to apply: the sale under its checkout's key, with the sale itself
    /// when `keep` (inventory keeps it for a retry, or the reconciler, to record).
    fn sale_order(&self, order: &CheckoutOrder, keep: bool) -> SaleOrder {
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

/// One batch of checkouts of any stores (distinct keys within a store, a terminal's cart at most
/// once) as one transaction: an answer per checkout, or an error for the whole batch (nothing
/// committed). Every statement is one for all the batch's stores, scoped to them (the `*_parts`
/// functions, migrations 0011 and 0012), stores in id order.
async fn checkout_batch(saga: &PgSales, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
    let mut tx = pg::begin(&saga.pool, "BEGIN").await?;

    // 1. The carts sold (row-locked until the commit); drafts priced from the copy of the catalog.
    let carts = read_carts(&mut tx, orders, true).await?;
    let lines = lines_of(orders, &carts);
    let drafts = draft_all(saga, orders, &lines).await?;

    // 2. Claim the keys: each drafted checkout's sale goes in as completed (invisible until the
    //    commit; deleted again if inventory refuses it). A key taken by a concurrent attempt
    //    waits here for that one's transaction; a key used before points at its sale.
    let mut answers: Vec<Option<Answer>> = orders.iter().map(|_| None).collect();
    let drafted = claim(&mut tx, orders, &lines, drafts, true, &mut answers).await?;

    // 3. Inventory decides, in this transaction: it locks each store's stock from here to the
    //    commit, and holds each sale to the prices it charged.
    let by_store = platform_batch::by_store(drafted.iter().map(|d| orders[d.index].store_id.as_str()));
    let applying: Vec<Vec<SaleToApply<'_>>> = by_store
        .iter()
        .map(|(_, members)| {
            members
                .iter()
                .map(|&m| {
                    let d = &drafted[m];
                    SaleToApply {
                        sale_id: &d.sale.sale_id,
                        request: &d.request,
                        terminal_id: &d.sale.terminal_id,
                        movements: &d.movements,
                        charged: &d.charged,
                        checkout: None,
                    }
                })
                .collect()
        })
        .collect();
    let parts: Vec<StoreSales<'_, '_>> =
        by_store.iter().zip(&applying).map(|((store_id, _), sales)| StoreSales { store_id, sales }).collect();
    let mut decided = decide_parts(&mut tx, &parts).await?;

    // 4. Completed: the directory entry, the carts sold, the events (numbered under each store's
    //    sales sequence lock, taken last); negative skus into the body. Refused: the claim goes.
    let occurred_at_ms = now_ms();
    let mut drafted: Vec<Option<Drafted>> = drafted.into_iter().map(Some).collect();
    let mut records: Vec<StoreRecord> = Vec::with_capacity(by_store.len());
    for ((store_id, members), decided) in by_store.iter().zip(&mut decided) {
        let mut record = StoreRecord { store_id, ..StoreRecord::default() };
        let outcomes = std::mem::take(&mut decided.applied.outcomes);
        for (&m, outcome) in members.iter().zip(outcomes) {
            let Some(d) = drafted[m].take() else { continue };
            let mut sale = d.sale;
            match outcome {
                Err(err) => {
                    answers[d.index] = Some(refusal(saga, &sale, err));
                    record.refused.push(sale.sale_id);
                }
                Ok(response) => {
                    if !response.negative_skus.is_empty() {
                        sale.negative_stock_skus = response.negative_skus;
                        record.amended.push(sale.sale_id.clone());
                        record.amended_bodies.push(sale.encode_to_vec());
                    }
                    let owner = d.from_cart.then_some(sale.terminal_id.as_str());
                    record.completed.add(store_id, occurred_at_ms, &sale, owner);
                    answers[d.index] = Some(Answer::Done(Box::new(Ok(sale))));
                }
            }
        }
        if !record.completed.sale_ids.is_empty() || !record.refused.is_empty() {
            records.push(record);
        }
    }

    // Inventory's writes and sales' completion (`sales.record_completed_parts`) in one statement:
    // a round trip fewer under the stores' locks. Append runs them in order.
    let write = PartsWrite::new(&decided);
    let write_call = (!write.is_empty()).then(|| PartsWrite::call(1));
    let record_call = (!records.is_empty()).then(|| {
        let first = if write_call.is_some() { PartsWrite::ARGS + 1 } else { 1 };
        pg::call("sales.record_completed_parts", first, StoreRecord::ARGS)
    });
    let sql = match (&write_call, &record_call) {
        (Some(write), Some(record)) => Some(format!(
            "SELECT NULL::INT, NULL::UUID, NULL::BIGINT, w.o_part, w.o_sku, w.o_quantity FROM {write} w
             UNION ALL SELECT r.o_part, r.o_event_id, r.o_seq, NULL, NULL, NULL FROM {record} r"
        )),
        (Some(write), None) => {
            Some(format!("SELECT NULL::INT, NULL::UUID, NULL::BIGINT, o_part, o_sku, o_quantity FROM {write}"))
        }
        (None, Some(record)) => {
            Some(format!("SELECT o_part, o_event_id, o_seq, NULL::INT, NULL::TEXT, NULL::BIGINT FROM {record}"))
        }
        (None, None) => None,
    };
    let mut sales_seqs: Vec<Option<u64>> = records.iter().map(|_| None).collect();
    if let Some(sql) = &sql {
        let mut query = sqlx::query(sql);
        if write_call.is_some() {
            query = write.bind(query);
        }
        if record_call.is_some() {
            query = StoreRecord::bind(&records, occurred_at_ms, query);
        }
        let mut events = 0;
        for row in &query.fetch_all(&mut *tx).await? {
            if let Some(part) = row.try_get::<Option<i32>, _>(3)? {
                write.check_written(part, row.try_get(4)?, row.try_get(5)?)?;
                continue;
            }
            events += 1;
            let part: i32 = row.try_get(0)?;
            let Some(i) = usize::try_from(part).ok().and_then(|p| p.checked_sub(1)).filter(|&i| i < records.len())
            else {
                return Err(Error::Internal(anyhow::anyhow!("an event recorded for part {part}")));
            };
            let seq = row.try_get::<i64, _>(2)? as u64;
            sales_seqs[i] = sales_seqs[i].max(Some(seq));
        }
        let expected: usize = records.iter().map(|r| r.completed.sale_ids.len()).sum();
        if events != expected {
            return Err(Error::Internal(anyhow::anyhow!("{events} events written for {expected} sales")));
        }
    }
    tx.commit().await?;
    // Wake the outboxes' listeners (one round trip for every store and both schemas) without
    // holding up the answers or the next batch.
    let mut newest: Vec<(&'static str, String, u64)> = Vec::new();
    for ((store_id, _), decided) in by_store.iter().zip(&decided) {
        if let Some(seq) = decided.applied.last_seq {
            newest.push(("inventory", (*store_id).to_owned(), seq));
        }
    }
    for (record, seq) in records.iter().zip(sales_seqs) {
        if let Some(seq) = seq {
            newest.push((SCHEMA, record.store_id.to_owned(), seq));
        }
    }
    pg::notify_committed_soon_many(&saga.pool, newest);
    Ok(answers.into_iter().map(|a| a.unwrap_or(Answer::Saga)).collect())
}

/// One store's part of a batch's completion (`sales.record_completed`, through
/// `sales.record_completed_parts`).
#[derive(Default)]
struct StoreRecord<'a> {
    store_id: &'a str,
    /// The sales inventory refused: their claims go.
    refused: Vec<String>,
    /// The sales whose bodies changed (negative skus), with their bodies.
    amended: Vec<String>,
    amended_bodies: Vec<Vec<u8>>,
    completed: Completions,
}

impl StoreRecord<'_> {
    /// How many arguments `sales.record_completed_parts` takes.
    const ARGS: usize = 15;

    /// Binds `sales.record_completed_parts`'s arguments for the stores' parts (in store id order).
    fn bind<'q>(records: &[StoreRecord<'_>], occurred_at_ms: i64, query: pg::PgQuery<'q>) -> pg::PgQuery<'q> {
        let (refused_ends, refused) = pg::parts(records, |r| r.refused.as_slice());
        let (amended_ends, amended) = pg::parts(records, |r| r.amended.as_slice());
        let (id_ends, ids) = pg::parts(records, |r| r.completed.sale_ids.as_slice());
        let (cart_ends, cart_owners) = pg::parts(records, |r| r.completed.cart_owners.as_slice());
        query
            .bind(records.iter().map(|r| r.store_id.to_owned()).collect::<Vec<_>>())
            .bind(refused_ends)
            .bind(refused)
            .bind(amended_ends)
            .bind(amended)
            .bind(pg::parts(records, |r| r.amended_bodies.as_slice()).1)
            .bind(id_ends)
            .bind(ids)
            .bind(occurred_at_ms)
            .bind(pg::parts(records, |r| r.completed.event_ids.as_slice()).1)
            .bind(pg::parts(records, |r| r.completed.events.as_slice()).1)
            .bind(cart_ends)
            .bind(cart_owners)
            .bind(pg::parts(records, |r| r.completed.cart_skus.as_slice()).1)
            .bind(pg::parts(records, |r| r.completed.cart_quantities.as_slice()).1)
    }
}

/// What a checkout inventory refused comes to: its error, or, when the refusal says the copy of
/// the catalog it was priced from is stale, another try (the copy forgets its products).
fn refusal(saga: &PgSales, sale: &Sale, err: Error) -> Answer {
    if catalog::is_reprice(&err) {
        saga.catalog.forget(sale.lines.iter().map(|l| l.sku.as_str()));
        return Answer::Reprice(err);
    }
    Answer::Done(Box::new(Err(err)))
}

/// Each checkout drafted (its terminal checked, its lines priced, its tenders settled) from the
/// copy of the catalog, which asks inventory about what it does not hold.
async fn draft_all(
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
struct Completions {
    sale_ids: Vec<String>,
    event_ids: Vec<uuid::Uuid>,
    events: Vec<Vec<u8>>,
    /// Per cart line sold: whose line it is (how the statement finds the cart), its sku and quantity.
    cart_owners: Vec<String>,
    cart_skus: Vec<String>,
    cart_quantities: Vec<i64>,
}

impl Completions {
    /// Binds the completing call's last five arguments: event ids and events, then the sold cart
    /// lines (owners, skus, quantities).
    fn bind_events_and_carts<'q>(&'q self, query: pg::PgQuery<'q>) -> pg::PgQuery<'q> {
        query
            .bind(&self.event_ids)
            .bind(&self.events)
            .bind(&self.cart_owners)
            .bind(&self.cart_skus)
            .bind(&self.cart_quantities)
    }

    /// Adds a completed sale; `cart_owner` names it to the statement when it sold its cart.
    fn add(&mut self, store_id: &str, occurred_at_ms: i64, sale: &Sale, cart_owner: Option<&str>) {
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
fn keyed_answer(order: &CheckoutOrder, sale: KeyedSale) -> Answer {
    match resume_keyed(order, sale) {
        Err(err) => Answer::Done(Box::new(Err(err))),
        Ok(Err(completed)) => Answer::Done(Box::new(Ok(completed))),
        Ok(Ok(_pending)) => Answer::Saga,
    }
}

/// One batch of checkouts by the saga, inventory being elsewhere (see the module documentation
/// of `pg`): those with lines by [`applied_batch`] (every store's together), those of carts by
/// [`pending_batch`] (a store's at a time, stores side by side).
async fn saga_batch(saga: &PgSales, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
    // A checkout with lines is recorded once inventory applied it; one of a cart by the pending
    // saga (the pending row guards the cart). A key always takes the same way: its request has
    // lines or has none.
    type Indexed<'a> = Vec<(usize, &'a CheckoutOrder)>;
    let (with_lines, of_carts): (Indexed<'_>, Indexed<'_>) =
        orders.iter().copied().enumerate().partition(|(_, o)| !o.lines.is_empty());
    let lines_orders: Vec<&CheckoutOrder> = with_lines.iter().map(|(_, o)| *o).collect();
    let cart_stores = platform_batch::by_store(of_carts.iter().map(|(_, o)| o.store_id.as_str()));
    let cart_orders: Vec<(&str, Vec<&CheckoutOrder>)> = cart_stores
        .iter()
        .map(|(store_id, members)| (*store_id, members.iter().map(|&m| of_carts[m].1).collect()))
        .collect();
    let lines_answers =
        async { if lines_orders.is_empty() { Ok(Vec::new()) } else { applied_batch(saga, &lines_orders).await } };
    let cart_answers =
        futures::future::join_all(cart_orders.iter().map(|(store_id, orders)| pending_batch(saga, store_id, orders)));
    let (lines_answers, cart_answers) = tokio::join!(lines_answers, cart_answers);
    let mut answers: Vec<Option<Answer>> = orders.iter().map(|_| None).collect();
    for ((i, _), answer) in with_lines.iter().zip(lines_answers?) {
        answers[*i] = Some(answer);
    }
    for ((_, members), store_answers) in cart_stores.iter().zip(cart_answers) {
        for (&m, answer) in members.iter().zip(store_answers?) {
            answers[of_carts[m].0] = Some(answer);
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or(Answer::Saga)).collect())
}

/// Checkouts with lines by the saga without a pending row: each drafted checkout goes to
/// inventory under its idempotency key, with its sale ([`CheckoutKey`]); inventory applies it once
/// whatever sale id an attempt carries and keeps the sale; then one statement
/// (`sales.record_sales`, migration 0007) records the sales applied, completed, with their events.
/// A retry of a checkout interrupted in between is answered by inventory with the first attempt's
/// sale, and records that; the reconciler ([`PgSales::record_applied`]) records it when no retry
/// comes. A checkout inventory refuses, or cannot be asked about, leaves no trace here.
async fn applied_batch(saga: &PgSales, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
    let carts = Carts::new();
    let lines = lines_of(orders, &carts);
    let drafts = draft_all(saga, orders, &lines).await?;
    let mut answers: Vec<Option<Answer>> = orders.iter().map(|_| None).collect();
    let mut drafted = Vec::new();
    let mut lookup: Vec<usize> = Vec::new();
    for (index, draft) in drafts.into_iter().enumerate() {
        match draft {
            Ok((sale, movements)) => {
                let request = apply_request(&sale).0.encode_to_vec();
                let charged = catalog::charged(&sale);
                drafted.push(Drafted { index, sale, from_cart: false, movements, charged, request });
            }
            Err(err) => {
                // A retry whose sale is recorded may fail to draft (a product since withdrawn…):
                // the key decides.
                lookup.push(index);
                answers[index] = Some(Answer::Done(Box::new(Err(err))));
            }
        }
    }
    // Every store's sales in one call (inventory batches them again, by its lanes).
    let by_store = platform_batch::by_store(drafted.iter().map(|d| orders[d.index].store_id.as_str()));
    let chain: Vec<(String, SaleOrder)> = by_store
        .iter()
        .flat_map(|(store_id, members)| members.iter().map(move |&m| (store_id, m)))
        .map(|(store_id, m)| ((*store_id).to_owned(), drafted[m].sale_order(orders[drafted[m].index], true)))
        .collect();
    let mut answered = saga.inventory.apply_chain_sales(chain).await.into_iter();
    let applied: Vec<Vec<Result<redstore_proto::inventory::ApplySaleResponse>>> =
        by_store.iter().map(|(_, members)| answered.by_ref().take(members.len()).collect()).collect();

    let occurred_at_ms = now_ms();
    let mut drafted: Vec<Option<Drafted>> = drafted.into_iter().map(Some).collect();
    let mut records: Vec<(&str, Recording)> = Vec::with_capacity(by_store.len());
    for ((store_id, members), outcomes) in by_store.iter().zip(applied) {
        let mut record = Recording::default();
        for (&m, outcome) in members.iter().zip(outcomes) {
            let Some(d) = drafted[m].take() else { continue };
            let order = orders[d.index];
            let answer = match outcome {
                Err(err) => refusal(saga, &d.sale, err),
                Ok(response) => match applied_sale(d.sale, response) {
                    Ok(sale) => {
                        record.add(store_id, occurred_at_ms, order, &sale);
                        Answer::Done(Box::new(Ok(sale)))
                    }
                    Err(err) => Answer::Done(Box::new(Err(err))),
                },
            };
            answers[d.index] = Some(answer);
        }
        records.push((store_id, record));
    }
    let written = Recording::write_parts(&saga.pool, &records, occurred_at_ms).await?;
    let newest = records
        .iter()
        .zip(&written)
        .filter_map(|((store_id, _), (_, last))| last.map(|seq| (SCHEMA, (*store_id).to_owned(), seq)))
        .collect();
    pg::notify_committed_soon_many(&saga.pool, newest);
    // A key recorded before (by the first attempt, or the reconciler): its sale answers.
    let mut unrecorded: HashSet<(&str, &str)> = HashSet::new();
    for ((store_id, record), (recorded, _)) in records.iter().zip(&written) {
        for (key, id) in record.keys.iter().zip(&record.completions.sale_ids) {
            if !recorded.contains(id) {
                unrecorded.insert((store_id, key.as_str()));
            }
        }
    }
    lookup.extend(
        orders
            .iter()
            .enumerate()
            .filter(|(_, o)| unrecorded.contains(&(o.store_id.as_str(), o.idem.key.as_str())))
            .map(|(i, _)| i),
    );
    if !lookup.is_empty() {
        let mut conn = saga.pool.acquire().await?;
        for (store_id, members) in platform_batch::by_store(lookup.iter().map(|&i| orders[i].store_id.as_str())) {
            let keys: Vec<&str> = members.iter().map(|&m| orders[lookup[m]].idem.key.as_str()).collect();
            let mut keyed = keyed_sales(&mut conn, store_id, &keys).await?;
            for &m in &members {
                let index = lookup[m];
                let order = orders[index];
                let key = order.idem.key.as_str();
                if let Some(sale) = keyed.remove(key) {
                    answers[index] = Some(keyed_answer(order, sale));
                } else if unrecorded.contains(&(store_id, key)) {
                    // Not recorded, and its key points at nothing: inventory has it, and a retry or
                    // the reconciler records it.
                    answers[index] = Some(Answer::Done(Box::new(Err(Error::unavailable(format!(
                        "the checkout with idempotency_key {key:?} was applied but is not recorded yet; retry it with the same key"
                    ))))));
                }
            }
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or(Answer::Saga)).collect())
}

/// The sale inventory applied under a checkout key: this attempt's, or, when inventory answers
/// with another sale id, the one an earlier attempt applied (kept in the answer); completed, with
/// the skus inventory took below zero.
pub(super) fn applied_sale(draft: Sale, response: redstore_proto::inventory::ApplySaleResponse) -> Result<Sale> {
    let mut sale = if response.sale_id.is_empty() || response.sale_id == draft.sale_id {
        draft
    } else {
        let kept = super::decode_sale(&response.sale)?;
        if kept.sale_id != response.sale_id {
            return Err(Error::Internal(anyhow::anyhow!(
                "inventory answered sale {:?} with the body of sale {:?}",
                response.sale_id,
                kept.sale_id
            )));
        }
        kept
    };
    sale.status = SaleStatus::Completed as i32;
    sale.negative_stock_skus = response.negative_skus;
    Ok(sale)
}

/// Sales inventory applied, as `sales.record_sales` takes them.
#[derive(Default)]
pub(super) struct Recording {
    completions: Completions,
    terminals: Vec<String>,
    keys: Vec<String>,
    requests: Vec<Vec<u8>>,
    created: Vec<i64>,
    bodies: Vec<Vec<u8>>,
}

impl Recording {
    /// Adds a completed sale under its checkout's key and request fingerprint.
    pub(super) fn add_keyed(&mut self, store_id: &str, occurred_at_ms: i64, key: &str, request: &[u8], sale: &Sale) {
        self.completions.add(store_id, occurred_at_ms, sale, None);
        self.terminals.push(sale.terminal_id.clone());
        self.keys.push(key.to_owned());
        self.requests.push(request.to_vec());
        self.created.push(sale.created_at.as_ref().map_or(0, timestamp_ms));
        self.bodies.push(sale.encode_to_vec());
    }

    fn add(&mut self, store_id: &str, occurred_at_ms: i64, order: &CheckoutOrder, sale: &Sale) {
        self.add_keyed(store_id, occurred_at_ms, &order.idem.key, &order.idem.fingerprint, sale);
    }

    /// Records one store's sales ([`Self::write_parts`]).
    pub(super) async fn write(
        self,
        pool: &pg::PgPool,
        store_id: &str,
        occurred_at_ms: i64,
    ) -> Result<(HashSet<String>, Option<u64>)> {
        let mut written = Self::write_parts(pool, &[(store_id, self)], occurred_at_ms).await?;
        Ok(written.pop().unwrap_or_default())
    }

    /// Records several stores' sales in one statement committing on its own
    /// (`sales.record_sales_parts`, migration 0012: scoped to the parts' stores; none when there
    /// are no sales): per store, in the order given, the ids of those
    /// inserted (a key or id recorded before is skipped) and the newest event sequence written.
    pub(super) async fn write_parts(
        pool: &pg::PgPool,
        parts: &[(&str, Recording)],
        occurred_at_ms: i64,
    ) -> Result<Vec<(HashSet<String>, Option<u64>)>> {
        let mut written: Vec<(HashSet<String>, Option<u64>)> = parts.iter().map(|_| Default::default()).collect();
        let mut order: Vec<usize> = (0..parts.len()).filter(|&p| !parts[p].1.completions.sale_ids.is_empty()).collect();
        if order.is_empty() {
            return Ok(written);
        }
        order.sort_by(|&a, &b| parts[a].0.cmp(parts[b].0));
        let ordered: Vec<&Recording> = order.iter().map(|&p| &parts[p].1).collect();
        let (ends, ids) = pg::parts(&ordered, |r| r.completions.sale_ids.as_slice());
        let rows = sqlx::query(
            "SELECT o_part, o_sale_id, o_seq FROM sales.record_sales_parts($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(order.iter().map(|&p| parts[p].0).collect::<Vec<_>>())
        .bind(&ends)
        .bind(ids)
        .bind(pg::parts(&ordered, |r| r.terminals.as_slice()).1)
        .bind(pg::parts(&ordered, |r| r.keys.as_slice()).1)
        .bind(pg::parts(&ordered, |r| r.requests.as_slice()).1)
        .bind(pg::parts(&ordered, |r| r.created.as_slice()).1)
        .bind(pg::parts(&ordered, |r| r.bodies.as_slice()).1)
        .bind(occurred_at_ms)
        .bind(pg::parts(&ordered, |r| r.completions.event_ids.as_slice()).1)
        .bind(pg::parts(&ordered, |r| r.completions.events.as_slice()).1)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            let part: i32 = row.try_get(0)?;
            let Some(&p) = usize::try_from(part).ok().and_then(|i| order.get(i.wrapping_sub(1))) else {
                return Err(Error::Internal(anyhow::anyhow!("record_sales_parts answered for part {part}")));
            };
            let (recorded, last_seq) = &mut written[p];
            recorded.insert(row.try_get::<String, _>(1)?);
            *last_seq = (*last_seq).max(Some(row.try_get::<i64, _>(2)? as u64));
        }
        Ok(written)
    }
}

/// The saga with a pending row, for checkouts of carts (see `saga_batch`): the same steps as one
/// checkout's, each taken for the whole batch — one transaction records the drafted sales
/// `pending` (and is committed, so that a crash leaves them for a retry or `resume_pending`),
/// inventory is asked to apply them all at once (it batches them again per store), and one
/// transaction completes those it took, numbering their events, and deletes those it refused. A
/// sale inventory could not be asked about stays pending. Both transactions are one statement each
/// (`sales.claim_sales_parts`, migration 0011, and `sales.complete_sales`, migration 0012) unless carts must be guarded.
async fn pending_batch(saga: &PgSales, store_id: &str, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
    // The carts sold (read in a transaction of their own, when there are any), then the drafts.
    let carts = if orders.iter().any(|o| o.lines.is_empty()) {
        let mut tx = pg::store_tx(&saga.pool, store_id).await?;
        let carts = read_carts(&mut tx, orders, false).await?;
        tx.commit().await?;
        carts
    } else {
        Carts::new()
    };
    let lines = lines_of(orders, &carts);
    let mut drafts = draft_all(saga, orders, &lines).await?;

    // Transaction A: the drafted sales, pending, under their keys; what taken keys point at. A
    // cart is claimed only while no other request is checking it out (see `guard_carts`); without
    // carts to guard, the claim is one statement that commits on its own.
    let mut answers: Vec<Option<Answer>> = orders.iter().map(|_| None).collect();
    let cart_sales: Vec<(usize, CartSale<'_>)> = orders
        .iter()
        .zip(&lines)
        .enumerate()
        .filter(|(i, (_, l))| l.from_cart && drafts[*i].is_ok())
        .map(|(i, (o, l))| (i, CartSale { terminal_id: &o.terminal_id, key: &o.idem.key, lines: l.lines }))
        .collect();
    let drafted = if cart_sales.is_empty() {
        let mut conn = saga.pool.acquire().await?;
        claim(&mut conn, orders, &lines, drafts, false, &mut answers).await?
    } else {
        let mut tx = pg::store_tx(&saga.pool, store_id).await?;
        let sold: Vec<CartSale<'_>> = cart_sales.iter().map(|(_, c)| *c).collect();
        for ((i, _), refusal) in cart_sales.iter().zip(guard_carts(&mut tx, store_id, &sold).await?) {
            if let Some(err) = refusal {
                drafts[*i] = Err(err);
            }
        }
        let drafted = claim(&mut tx, orders, &lines, drafts, false, &mut answers).await?;
        tx.commit().await?;
        drafted
    };

    // Inventory applies them, all in one call (idempotent by sale id, and by checkout key: the same
    // key with another request is refused there, whichever way it went).
    let sales = drafted.iter().map(|d| d.sale_order(orders[d.index], false)).collect();
    let applied = if drafted.is_empty() { Vec::new() } else { saga.inventory.apply_sales(store_id, sales).await };

    // Transaction C: complete what inventory took (if still pending: a concurrent `finish` may
    // have), delete what it refused; anything else stays pending for a retry or the healer.
    let occurred_at_ms = now_ms();
    let (mut refused, mut completed, mut completed_bodies) = (Vec::new(), Completions::default(), Vec::new());
    for (d, outcome) in drafted.into_iter().zip(applied) {
        let mut sale = d.sale;
        match outcome {
            Err(err) => {
                let refused_here = super::is_refusal(&err);
                answers[d.index] = Some(refusal(saga, &sale, err));
                if refused_here {
                    refused.push(sale.sale_id);
                }
            }
            Ok(response) => {
                sale.status = SaleStatus::Completed as i32;
                sale.negative_stock_skus = response.negative_skus;
                completed.add(store_id, occurred_at_ms, &sale, d.from_cart.then_some(sale.sale_id.as_str()));
                completed_bodies.push(sale.encode_to_vec());
                answers[d.index] = Some(Answer::Done(Box::new(Ok(sale))));
            }
        }
    }
    let mut sales_seq = None;
    if !completed.sale_ids.is_empty() || !refused.is_empty() {
        // One statement, committing on its own (`sales.complete_sales`, migration 0012).
        let query = sqlx::query("SELECT sales.complete_sales($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(store_id)
            .bind(&refused)
            .bind(&completed.sale_ids)
            .bind(&completed_bodies)
            .bind(occurred_at_ms);
        let row = completed.bind_events_and_carts(query).fetch_one(&saga.pool).await?;
        sales_seq = row.try_get::<Option<i64>, _>(0)?.map(|s| s as u64);
    }
    if let Some(last) = sales_seq {
        pg::notify_committed_soon(&saga.pool, SCHEMA, store_id, last);
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or(Answer::Saga)).collect())
}

/// The carts of the checkouts without lines, by store and terminal, in the order their lines were
/// added; `lock` row-locks them until the caller's transaction ends (so that a cart is sold once).
/// Each store's are read under its own scope: the transaction ends up scoped to the last.
async fn read_carts(conn: &mut PgConnection, orders: &[&CheckoutOrder], lock: bool) -> Result<Carts> {
    let mut carts = Carts::new();
    let of_carts = platform_batch::by_store(orders.iter().map(|o| o.store_id.as_str()));
    for (store_id, members) in of_carts {
        let terminals: Vec<&str> =
            members.iter().map(|&i| orders[i]).filter(|o| o.lines.is_empty()).map(|o| o.terminal_id.as_str()).collect();
        if terminals.is_empty() {
            continue;
        }
        pg::scope_to_store(&mut *conn, store_id).await?;
        for (terminal, lines) in cart_lines(conn, store_id, &terminals, lock).await? {
            carts.insert((store_id.to_owned(), terminal), lines);
        }
    }
    Ok(carts)
}

/// Carts' lines by (store, terminal).
type Carts = HashMap<(String, String), Vec<(String, i64)>>;

/// The terminals' carts, by terminal, in the order their lines were added; `lock` row-locks them,
/// in line id order as every cart lock does, so that cart locks never deadlock.
async fn cart_lines(
    conn: &mut PgConnection,
    store_id: &str,
    terminals: &[&str],
    lock: bool,
) -> Result<HashMap<String, Vec<(String, i64)>>> {
    let mut carts: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    let sql = if lock {
        "SELECT terminal_id, sku, quantity FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = ANY ($2) ORDER BY id FOR UPDATE"
    } else {
        "SELECT terminal_id, sku, quantity FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = ANY ($2) ORDER BY id"
    };
    for row in &sqlx::query(sql).bind(store_id).bind(terminals).fetch_all(&mut *conn).await? {
        carts.entry(row.try_get(0)?).or_default().push((row.try_get(1)?, row.try_get(2)?));
    }
    Ok(carts)
}

/// A checkout that sells its terminal's cart, as drafted.
#[derive(Clone, Copy)]
pub(super) struct CartSale<'a> {
    pub terminal_id: &'a str,
    /// The checkout's idempotency key.
    pub key: &'a str,
    /// The cart's lines when the checkout was drafted.
    pub lines: &'a [(String, i64)],
}

/// The saga's guard that a cart is sold once, run in the transaction that records checkouts as
/// pending (the cart is cleared only when a sale completes, after inventory answered). Row-locks
/// the carts ([`cart_lines`]), then refuses a checkout whose cart another request is checking out
/// (a pending sale of that cart under another key: its transaction committed before this one got
/// the lock) or whose cart changed since it was drafted (sold meanwhile: empty). A retry of a pending checkout's own key passes, for the
/// claim to resume it. One refusal (or none) per cart sale, in order.
pub(super) async fn guard_carts(
    conn: &mut PgConnection,
    store_id: &str,
    sales: &[CartSale<'_>],
) -> Result<Vec<Option<Error>>> {
    let terminals: Vec<&str> = sales.iter().map(|c| c.terminal_id).collect();
    let carts = cart_lines(conn, store_id, &terminals, true).await?;
    let mut checking_out: HashMap<String, Vec<String>> = HashMap::new();
    let rows = sqlx::query(
        "SELECT terminal_id, idempotency_key FROM sales.sales
         WHERE store_id = $1 AND status = 'pending' AND from_cart AND terminal_id = ANY ($2)",
    )
    .bind(store_id)
    .bind(&terminals)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        checking_out.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
    }
    Ok(sales
        .iter()
        .map(|sale| {
            let others = checking_out.get(sale.terminal_id).is_some_and(|keys| keys.iter().any(|k| k != sale.key));
            let now = carts.get(sale.terminal_id).map_or(&[][..], Vec::as_slice);
            if others {
                Some(cart_in_checkout(store_id, sale.terminal_id))
            } else if now.is_empty() {
                Some(empty_cart(store_id, sale.terminal_id))
            } else if now != sale.lines {
                Some(cart_changed(store_id, sale.terminal_id))
            } else {
                None
            }
        })
        .collect())
}

fn cart_in_checkout(store_id: &str, terminal_id: &str) -> Error {
    cart_refusal(
        store_id,
        terminal_id,
        "is being checked out by another request; when that finishes the cart is sold (empty) or \
         unchanged: look at the cart, then check out again",
    )
}

fn cart_changed(store_id: &str, terminal_id: &str) -> Error {
    cart_refusal(
        store_id,
        terminal_id,
        "changed while it was being checked out; look at the cart, then check out again",
    )
}

/// What each checkout sells: its lines, or its terminal's cart.
fn lines_of<'a>(orders: &[&'a CheckoutOrder], carts: &'a Carts) -> Vec<Lines<'a>> {
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
fn draft<'p>(
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
    let priced = price_lines(lines.field, lines.lines, |i| product(&lines.lines[i].0))?;
    draft_sale(order, lines.field, lines.lines, &priced)
}

/// Claims the drafted checkouts' keys by inserting their sales, `completed` (invisible until the
/// caller commits) or `pending` (the saga's first step), under the unique (store, idempotency
/// key), every store's in one statement (`sales.claim_sales_parts`, migration 0011); a key taken by
/// a concurrent attempt waits for that one's transaction. Answers the checkouts that did not draft
/// (with their error, unless their key was used before) and those whose key was taken (from the
/// sale it points at); returns the claimed ones.
async fn claim(
    conn: &mut PgConnection,
    orders: &[&CheckoutOrder],
    lines: &[Lines<'_>],
    drafts: Vec<Result<(Sale, Vec<StockMovement>)>>,
    completed: bool,
    answers: &mut [Option<Answer>],
) -> Result<Vec<Drafted>> {
    let mut drafted = Vec::new();
    let mut lookup: Vec<usize> = Vec::new();
    for (index, draft) in drafts.into_iter().enumerate() {
        match draft {
            Ok((mut sale, movements)) => {
                if completed {
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
        let status = if completed { "completed" } else { "pending" };
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
