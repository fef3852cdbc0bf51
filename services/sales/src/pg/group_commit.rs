//! Checkout by group commit, for a process where sales and inventory share one PostgreSQL
//! database ([`PgSales::with_local_inventory`]).
//!
//! Each batch the queue (`batch`) hands over, whatever its stores, is ONE transaction instead of
//! the saga's three per checkout, with one statement per
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
//! trace. A batch that fails as a whole (a lost connection, a deadlock with another process) is
//! rolled back, and the queue runs its checkouts again one at a time.
//!
//! The stores' locks are taken as late as possible — stock at step 3, the sales sequence at step
//! 4 — so that they are held for three round trips and the commit: that, not the work, is what
//! bounds one store's throughput. Lock order, everywhere: carts, keys (in key order), inventory's
//! stock locks, the sales sequences, each kind in store id order; so batches sharing stores in
//! several processes queue, never deadlock.

use prost::Message as _;
use redstore_inventory::pg::{JoinedCall, PartsWrite, SaleToApply, StoreSales, decide_parts};
use redstore_platform::batch as platform_batch;
use redstore_platform::error::{Error, Result};
use redstore_platform::pg;
use sqlx::Row as _;

use super::batch::{Answer, CheckoutPath, ClaimedAs, Completions, Drafted, claim, draft_all, lines_of, refusal};
use super::carts::read_carts;
use super::{PgSales, SCHEMA, now_ms};
use crate::store::CheckoutOrder;

/// The group commit: a batch of checkouts, whatever their stores, in one transaction with
/// inventory's stock ([`checkout_batch`]).
#[derive(Clone, Copy)]
pub(super) struct GroupCommit;

impl CheckoutPath for GroupCommit {
    async fn run_batch(&self, sales: &PgSales, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
        checkout_batch(sales, orders).await
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
    let drafted = claim(&mut tx, orders, &lines, drafts, ClaimedAs::Completed, &mut answers).await?;

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
    // a round trip fewer under the stores' locks.
    let record = Completing { records: &records, occurred_at_ms };
    let joined: Option<&dyn JoinedCall> = if records.is_empty() { None } else { Some(&record) };
    let mut sales_seqs: Vec<Option<u64>> = records.iter().map(|_| None).collect();
    let rows = PartsWrite::new(&decided).write_joined(&mut tx, joined).await?;
    for row in &rows {
        let part: i32 = row.try_get(0)?;
        let Some(i) = usize::try_from(part).ok().and_then(|p| p.checked_sub(1)).filter(|&i| i < records.len()) else {
            return Err(Error::Internal(anyhow::anyhow!("an event recorded for part {part}")));
        };
        let seq = row.try_get::<i64, _>(2)? as u64;
        sales_seqs[i] = sales_seqs[i].max(Some(seq));
    }
    let expected: usize = records.iter().map(|r| r.completed.sale_ids.len()).sum();
    if rows.len() != expected {
        return Err(Error::Internal(anyhow::anyhow!("{} events written for {expected} sales", rows.len())));
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
    pub(super) store_id: &'a str,
    /// The sales inventory refused: their claims go.
    pub(super) refused: Vec<String>,
    /// The sales whose bodies changed (negative skus), with their bodies.
    amended: Vec<String>,
    amended_bodies: Vec<Vec<u8>>,
    pub(super) completed: Completions,
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

/// The batch's completion (`sales.record_completed_parts`, every store's part), run in the same
/// statement as inventory's writes.
struct Completing<'r, 'a> {
    records: &'r [StoreRecord<'a>],
    occurred_at_ms: i64,
}

impl JoinedCall for Completing<'_, '_> {
    fn call(&self, first: usize) -> String {
        pg::call("sales.record_completed_parts", first, StoreRecord::ARGS)
    }

    fn columns(&self) -> &'static [&'static str] {
        // o_part, o_event_id, o_seq
        &["INT", "UUID", "BIGINT"]
    }

    fn bind<'q>(&'q self, query: pg::PgQuery<'q>) -> pg::PgQuery<'q> {
        StoreRecord::bind(self.records, self.occurred_at_ms, query)
    }
}
