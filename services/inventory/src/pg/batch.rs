//! Many sales of one store, applied in the caller's transaction: inventory's half of the checkout
//! group commit, for a process where sales and inventory share one PostgreSQL database (see
//! `redstore_sales::pg`). The caller scopes the transaction to the store ([`pg::store_tx`]), adds
//! its own writes, commits, and then notifies up to [`AppliedSales::last_seq`] with
//! [`pg::notify_committed`].
//!
//! The rules and answers are those of [`InventoryStore::apply_sale`] one sale at a time:
//! idempotent by sale id, a strict store never below zero, one `inventory.changed` event and one
//! store sequence per sale, and a refused sale changes nothing while the others still apply. What
//! differs is the cost: the batch looks its keys up in one statement, takes the store's sequence
//! lock once, reads the stock of every sku once, and writes stock, events, keys with their answers
//! and the sequence in one statement, instead of one function call (and one commit) per sale. A
//! refused sale's key is never written, so it can be used again.
//!
//! Deciding here is safe because every stock writer of a store (this, and
//! `inventory.apply_movements`) holds the store's sequence row lock while it reads and changes that
//! store's stock, and the stock is read here only once the lock is held. The writes are still
//! deltas, and each row's result is checked against the decision: a mismatch is an error, and the
//! caller's transaction rolls back.
//!
//! [`InventoryStore::apply_sale`]: crate::InventoryStore::apply_sale

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::FutureExt as _;

use prost::Message as _;
use redstore_platform::batch::StoreBatcher;
use redstore_platform::error::{Error, Result};
use redstore_platform::eventlog::envelope;
use redstore_platform::idempotency::{key_reused, key_unanswered};
use redstore_platform::pg::{self, PgPool};
use redstore_proto::events::{InventoryChanged, event_envelope::Payload};
use redstore_proto::inventory as pb;
use sqlx::{PgConnection, Row as _};

use super::{
    PRODUCTS_BY_SKU, SCHEMA, applied, insufficient, no_store, no_terminal, now_ms, product_from_row, sale_answer,
};
use crate::domain::{OversellPolicy, Product, StockMovement};
use crate::store::SaleOrder;

/// The idempotency scope of applied sales, as `InventoryStore::apply_sale` uses it.
const SCOPE: &str = "inventory.apply_sale";

/// What a batch of checkouts in one store needs to know before it prices anything: whether the
/// store exists, which of the terminals are registered in it, and the products.
pub struct SaleContext {
    store_id: String,
    store_exists: bool,
    terminals: HashSet<String>,
    products: HashMap<String, Product>,
}

impl SaleContext {
    /// Reads the context in the caller's transaction scoped to `store_id`: one round trip for the
    /// store and terminals, one for the products (with their barcodes).
    pub async fn read(conn: &mut PgConnection, store_id: &str, terminals: &[&str], skus: &[&str]) -> Result<Self> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM inventory.stores WHERE store_id = $1),
                    ARRAY (SELECT terminal_id FROM inventory.terminals WHERE store_id = $1 AND terminal_id = ANY ($2))",
        )
        .bind(store_id)
        .bind(terminals)
        .fetch_one(&mut *conn)
        .await?;
        let store_exists: bool = row.try_get(0)?;
        let terminals: Vec<String> = row.try_get(1)?;
        let mut products = HashMap::with_capacity(skus.len());
        if !skus.is_empty() {
            for row in sqlx::query(PRODUCTS_BY_SKU).bind(skus).fetch_all(&mut *conn).await? {
                let product = product_from_row(&row)?;
                products.insert(product.sku.clone(), product);
            }
        }
        Ok(Self { store_id: store_id.to_owned(), store_exists, terminals: terminals.into_iter().collect(), products })
    }

    /// `InventoryStore::require_terminal`, with the same NOT_FOUND messages.
    pub fn require_terminal(&self, terminal_id: &str) -> Result<()> {
        if !self.store_exists {
            return Err(no_store(&self.store_id));
        }
        if !self.terminals.contains(terminal_id) {
            return Err(no_terminal(&self.store_id, terminal_id));
        }
        Ok(())
    }

    pub fn store_exists(&self) -> bool {
        self.store_exists
    }

    /// A product read with the context (`None`: no such sku, or it was not asked for).
    pub fn product(&self, sku: &str) -> Option<&Product> {
        self.products.get(sku)
    }
}

/// One sale of a batch.
pub struct SaleToApply<'a> {
    /// The sale's id, its idempotency key in inventory; distinct within a batch.
    pub sale_id: &'a str,
    /// The request's fingerprint (the encoded `ApplySaleRequest`): the same sale id with another
    /// request is ALREADY_EXISTS.
    pub request: &'a [u8],
    pub terminal_id: &'a str,
    pub movements: &'a [StockMovement],
}

/// What a batch did.
pub struct AppliedSales {
    /// Per sale, in order: its answer (replayed for a sale applied before), or why it was refused;
    /// nothing of a refused sale is written.
    pub outcomes: Vec<Result<pb::ApplySaleResponse>>,
    /// The store's newest sequence when a sale applied: notify listeners up to it after the commit.
    pub last_seq: Option<u64>,
}

/// A sale's effect while the batch is decided.
struct Decided {
    index: usize,
    seq: u64,
    quantities: Vec<i64>,
}

/// Applies the sales in order, in the caller's transaction scoped to `store_id` (see the module
/// documentation). An `Err` means the batch could not be decided or written: the caller must roll
/// its transaction back.
pub async fn apply_sales_in(
    conn: &mut PgConnection,
    store_id: &str,
    sales: &[SaleToApply<'_>],
) -> Result<AppliedSales> {
    let mut outcomes: Vec<Option<Result<pb::ApplySaleResponse>>> = sales.iter().map(|_| None).collect();
    let ids: Vec<&str> = sales.iter().map(|s| s.sale_id).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Err(Error::Internal(anyhow::anyhow!("a sale id appears twice in one batch")));
    }
    if sales.is_empty() {
        return Ok(AppliedSales { outcomes: Vec::new(), last_seq: None });
    }

    // The sale ids applied before are answered from their stored answers. A sale id is claimed by
    // inserting it with its answer in the batch's write below: a concurrent batch that applies the
    // same id first makes that insert fail on the key, and the batch runs again one sale at a time,
    // where this lookup finds it. (Read before the store's lock, which is held as briefly as possible.)
    let taken = taken_keys(conn, &ids).await?;
    if !taken.is_empty() {
        replay_taken(sales, &taken, &mut outcomes);
    }
    if outcomes.iter().all(Option::is_some) {
        return Ok(AppliedSales { outcomes: settled(outcomes), last_seq: None });
    }

    // Under the store's sequence row lock: its policy, and every sku's product and stock row.
    let mut skus: Vec<&str> = Vec::new();
    for (i, sale) in sales.iter().enumerate() {
        if outcomes[i].is_none() {
            skus.extend(sale.movements.iter().map(|m| m.sku.as_str()));
        }
    }
    skus.sort_unstable();
    skus.dedup();
    let rows = sqlx::query("SELECT o_last_seq, o_policy, o_sku, o_known, o_quantity FROM inventory.lock_stock($1, $2)")
        .bind(store_id)
        .bind(&skus)
        .fetch_all(&mut *conn)
        .await?;
    let mut locked = None;
    let mut known = HashSet::with_capacity(skus.len());
    let mut stock: HashMap<String, i64> = HashMap::with_capacity(skus.len());
    for row in &rows {
        let Some(sku) = row.try_get::<Option<String>, _>(2)? else {
            let policy = OversellPolicy::from_db(row.try_get::<&str, _>(1)?);
            locked = Some((row.try_get::<i64, _>(0)? as u64, policy));
            continue;
        };
        if row.try_get::<bool, _>(3)? {
            known.insert(sku.clone());
        }
        if let Some(quantity) = row.try_get::<Option<i64>, _>(4)? {
            stock.insert(sku, quantity);
        }
    }
    let (last_seq, policy) = locked.unwrap_or((0, OversellPolicy::Strict));

    // Decide each sale not applied before in order, against the stock as the earlier ones leave it.
    let before = stock.clone();
    let mut seq = last_seq;
    let mut decided = Vec::new();
    for (i, sale) in sales.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        if locked.is_none() {
            outcomes[i] = Some(Err(no_store(store_id)));
            continue;
        }
        if let Some(m) = sale.movements.iter().find(|m| !known.contains(&m.sku)) {
            outcomes[i] = Some(Err(Error::not_found(format!("sku {:?} does not exist", m.sku))));
            continue;
        }
        match decide(&stock, store_id, policy, sale.movements) {
            Ok(quantities) => {
                for (m, &q) in sale.movements.iter().zip(&quantities) {
                    stock.insert(m.sku.clone(), q);
                }
                seq += 1;
                decided.push(Decided { index: i, seq, quantities });
            }
            Err(err) => outcomes[i] = Some(Err(err)),
        }
    }

    // The answers and events of the applied sales.
    let occurred_at_ms = now_ms();
    let mut event_ids = Vec::with_capacity(decided.len());
    let mut event_seqs = Vec::with_capacity(decided.len());
    let mut bodies = Vec::with_capacity(decided.len());
    let mut answered = Vec::with_capacity(decided.len());
    let mut answered_requests = Vec::with_capacity(decided.len());
    let mut answers = Vec::with_capacity(decided.len());
    let mut stock_seq: HashMap<&str, i64> = HashMap::new();
    for d in &decided {
        let sale = &sales[d.index];
        let (levels, changes) = applied(store_id, sale.movements, d.seq, &d.quantities);
        let response = sale_answer(levels, d.seq);
        let event_id = uuid::Uuid::now_v7();
        let change = InventoryChanged {
            reason: "sale".to_owned(),
            reference_id: sale.sale_id.to_owned(),
            terminal_id: sale.terminal_id.to_owned(),
            changes,
        };
        let event = envelope(event_id, store_id, d.seq, occurred_at_ms, Payload::InventoryChanged(change));
        event_ids.push(event_id);
        event_seqs.push(d.seq as i64);
        bodies.push(event.encode_to_vec());
        answered.push(sale.sale_id);
        answered_requests.push(sale.request);
        answers.push(response.encode_to_vec());
        for m in sale.movements {
            stock_seq.insert(&m.sku, d.seq as i64);
        }
        outcomes[d.index] = Some(Ok(response));
    }
    // Per sku: the net delta and the sequence of the last sale that touched it.
    let (mut w_skus, mut w_deltas, mut w_seqs) = (Vec::new(), Vec::new(), Vec::new());
    for (sku, &seq) in &stock_seq {
        let after = stock[*sku];
        w_skus.push(*sku);
        w_deltas.push(after - before.get(*sku).copied().unwrap_or(0));
        w_seqs.push(seq);
    }
    let written = sqlx::query(
        "WITH st AS (
             INSERT INTO inventory.stock AS s (store_id, sku, quantity, last_seq)
             SELECT $1, u.sku, u.delta, u.seq FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u (sku, delta, seq)
             ON CONFLICT (store_id, sku) DO UPDATE SET quantity = s.quantity + excluded.quantity, last_seq = excluded.last_seq
             RETURNING s.sku, s.quantity),
         ob AS (
             INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
             SELECT u.id, $1, u.seq, 'inventory.changed', $5, u.body
             FROM unnest($6::uuid[], $7::bigint[], $8::bytea[]) AS u (id, seq, body)),
         answered AS (
             INSERT INTO platform.idempotency_keys (scope, key, request, response)
             SELECT $11, u.key, u.request, u.response
             FROM unnest($9::text[], $12::bytea[], $10::bytea[]) AS u (key, request, response)),
         sq AS (
             UPDATE inventory.store_sequences q SET last_seq = $13 WHERE q.store_id = $1 AND q.last_seq < $13)
         SELECT sku, quantity FROM st",
    )
    .bind(store_id)
    .bind(&w_skus)
    .bind(&w_deltas)
    .bind(&w_seqs)
    .bind(occurred_at_ms)
    .bind(&event_ids)
    .bind(&event_seqs)
    .bind(&bodies)
    .bind(&answered)
    .bind(&answers)
    .bind(SCOPE)
    .bind(&answered_requests)
    .bind(seq as i64)
    .fetch_all(&mut *conn)
    .await?;
    for row in &written {
        let sku: &str = row.try_get(0)?;
        let quantity: i64 = row.try_get(1)?;
        if stock.get(sku) != Some(&quantity) {
            return Err(Error::Internal(anyhow::anyhow!(
                "stock of sku {sku:?} in store {store_id:?} changed while the store's sequence lock was held"
            )));
        }
    }
    let last_seq = (seq > last_seq).then_some(seq);
    Ok(AppliedSales { outcomes: settled(outcomes), last_seq })
}

/// The stored request and answer of each of `ids` applied before.
async fn taken_keys(conn: &mut PgConnection, ids: &[&str]) -> Result<HashMap<String, (Vec<u8>, Option<Vec<u8>>)>> {
    let rows =
        sqlx::query("SELECT key, request, response FROM platform.idempotency_keys WHERE scope = $1 AND key = ANY ($2)")
            .bind(SCOPE)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut taken = HashMap::with_capacity(rows.len());
    for row in &rows {
        taken.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
    }
    Ok(taken)
}

/// The answers of sales whose id was applied before: the stored answer for the same request,
/// ALREADY_EXISTS for another.
fn replay_taken(
    sales: &[SaleToApply<'_>],
    taken: &HashMap<String, (Vec<u8>, Option<Vec<u8>>)>,
    outcomes: &mut [Option<Result<pb::ApplySaleResponse>>],
) {
    for (i, sale) in sales.iter().enumerate() {
        let key = sale.sale_id;
        outcomes[i] = match taken.get(key) {
            None => continue,
            Some((request, _)) if request.as_slice() != sale.request => Some(Err(key_reused(SCOPE, key))),
            Some((_, Some(response))) => Some(pg::replay(response)),
            Some((_, None)) => Some(Err(key_unanswered(SCOPE, key))),
        };
    }
}

/// The quantities after each of a sale's movements, in order, or why the sale is refused: a strict
/// store refuses a movement that would take a sku below zero.
fn decide(
    stock: &HashMap<String, i64>,
    store_id: &str,
    policy: OversellPolicy,
    movements: &[StockMovement],
) -> Result<Vec<i64>> {
    let mut quantities: Vec<i64> = Vec::with_capacity(movements.len());
    for (k, m) in movements.iter().enumerate() {
        // An earlier movement of the same sale on the same sku counts.
        let current = movements[..k]
            .iter()
            .zip(&quantities)
            .rev()
            .find(|(earlier, _)| earlier.sku == m.sku)
            .map(|(_, &q)| q)
            .or_else(|| stock.get(&m.sku).copied())
            .unwrap_or(0);
        let after = current
            .checked_add(m.delta)
            .ok_or_else(|| Error::invalid("lines", format!("the stock of sku {:?} would be out of range", m.sku)))?;
        if policy != OversellPolicy::AllowNegative && m.delta < 0 && after < 0 {
            return Err(insufficient(store_id, &m.sku, -m.delta, current));
        }
        quantities.push(after);
    }
    Ok(quantities)
}

/// Every sale's outcome, once each has one.
fn settled(outcomes: Vec<Option<Result<pb::ApplySaleResponse>>>) -> Vec<Result<pb::ApplySaleResponse>> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("a sale of the batch was left undecided")))))
        .collect()
}

/// A sale of an `InventoryStore::apply_sale(s)` call waiting for its store's next batch.
pub(super) struct SaleJob {
    pub(super) sale: SaleOrder,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<pb::ApplySaleResponse>>,
}

impl<'a> From<&'a SaleOrder> for SaleToApply<'a> {
    fn from(sale: &'a SaleOrder) -> Self {
        Self {
            sale_id: &sale.sale_id,
            request: &sale.fingerprint,
            terminal_id: &sale.terminal_id,
            movements: &sale.movements,
        }
    }
}

/// The most sales one transaction applies.
const MAX_BATCH: usize = 64;

/// How long a store's worker waits for work before it stops.
const IDLE: Duration = Duration::from_secs(30);

/// `apply_sale` by group commit, for sales arriving one call at a time (over gRPC from sales
/// processes): each store's queued sales are applied in one transaction per batch, committed,
/// answered, then notified. A sale id twice in a batch waits for the next one (where it is a
/// replay); a batch that fails as a whole runs again one sale at a time.
pub(super) fn sale_batcher(pool: PgPool) -> StoreBatcher<SaleJob> {
    StoreBatcher::new(MAX_BATCH, 1, IDLE, move |store_id, jobs| {
        let pool = pool.clone();
        async move { run_sales(&pool, &store_id, jobs).await }.boxed()
    })
}

async fn run_sales(pool: &PgPool, store_id: &str, jobs: Vec<SaleJob>) -> Vec<SaleJob> {
    let mut ids = HashSet::new();
    let (now, later): (Vec<SaleJob>, Vec<SaleJob>) = jobs.into_iter().partition(|j| ids.insert(j.sale.sale_id.clone()));
    let started = std::time::Instant::now();
    let outcome = apply_batch(pool, store_id, &now).await;
    tracing::debug!(store_id, sales = now.len(), ms = started.elapsed().as_secs_f64() * 1e3, "sale batch");
    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        Err(err) if now.len() > 1 => {
            tracing::warn!(store_id, error = %err, sales = now.len(), "a batch of sales failed; applying them one at a time");
            let mut outcomes = Vec::with_capacity(now.len());
            for job in &now {
                let one = apply_batch(pool, store_id, std::slice::from_ref(job)).await;
                outcomes.push(
                    one.and_then(|mut o| {
                        o.pop().unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("no outcome"))))
                    }),
                );
            }
            outcomes
        }
        Err(err) => vec![Err(err)],
    };
    for (job, outcome) in now.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
    later
}

async fn apply_batch(pool: &PgPool, store_id: &str, jobs: &[SaleJob]) -> Result<Vec<Result<pb::ApplySaleResponse>>> {
    let sales: Vec<SaleToApply<'_>> = jobs.iter().map(|j| SaleToApply::from(&j.sale)).collect();
    let mut tx = pg::store_tx(pool, store_id).await?;
    let applied = apply_sales_in(&mut tx, store_id, &sales).await?;
    tx.commit().await?;
    if let Some(last) = applied.last_seq {
        pg::notify_committed_soon(pool, SCHEMA, store_id, last);
    }
    Ok(applied.outcomes)
}
