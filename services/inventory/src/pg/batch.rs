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
use redstore_platform::money::{Currency, Money};
use redstore_platform::pg::{self, PgPool, PgQuery};
use redstore_proto::events::{InventoryChanged, event_envelope::Payload};
use redstore_proto::inventory as pb;
use sqlx::{PgConnection, Row as _};

use super::{SCHEMA, applied, no_store, now_ms, sale_answer};
use crate::domain::{self, ChargedPrice, OversellPolicy, StockMovement, check_charged};
use crate::store::{CheckoutKey, SaleOrder, checkout_key_scope};

/// The idempotency scope of applied sales, as `InventoryStore::apply_sale` uses it.
const SCOPE: &str = "inventory.apply_sale";

/// One sale of a batch.
pub struct SaleToApply<'a> {
    /// The sale's id, its idempotency key in inventory; distinct within a batch.
    pub sale_id: &'a str,
    /// The request's fingerprint (the encoded `ApplySaleRequest`): the same sale id with another
    /// request is ALREADY_EXISTS.
    pub request: &'a [u8],
    pub terminal_id: &'a str,
    pub movements: &'a [StockMovement],
    /// The unit prices the sale charged (empty: not held to the catalog), as in [`SaleOrder`].
    pub charged: &'a [ChargedPrice],
    /// The checkout whose key it is applied under ([`CheckoutKey`]); distinct within a batch.
    pub checkout: Option<&'a CheckoutKey>,
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

/// A batch decided under the store's locks ([`decide_sales`]) but not yet written: its outcomes
/// hold once [`DecidedSales::write`] (or the caller's own statement, through
/// [`DecidedSales::write_call`]) has written it in the same transaction.
pub struct DecidedSales {
    pub applied: AppliedSales,
    write: SalesWrite,
}

/// The arguments of `inventory.write_sales` (migration 0005) for a decided batch.
#[derive(Default)]
struct SalesWrite {
    store_id: String,
    /// Per sku: the net delta, the sequence of the last sale that touched it, the quantity decided.
    skus: Vec<String>,
    deltas: Vec<i64>,
    seqs: Vec<i64>,
    quantities: Vec<i64>,
    occurred_at_ms: i64,
    event_ids: Vec<uuid::Uuid>,
    event_seqs: Vec<i64>,
    bodies: Vec<Vec<u8>>,
    keys: Vec<String>,
    requests: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
    last_seq: i64,
    /// The checkouts applied under their keys, with their fingerprints and answers (with the sale).
    checkout_keys: Vec<String>,
    checkout_requests: Vec<Vec<u8>>,
    checkout_answers: Vec<Vec<u8>>,
}

impl DecidedSales {
    /// How many arguments [`Self::write_call`] takes.
    pub const WRITE_ARGS: usize = 16;

    /// Whether the batch writes anything: a batch of refusals and replays writes nothing.
    pub fn writes(&self) -> bool {
        !self.write.event_ids.is_empty()
    }

    /// The call that writes the batch, its arguments numbered from `$first` (bind them with
    /// [`Self::bind_write`]); it returns `(sku, quantity)` rows, each to pass to
    /// [`Self::check_written`]. For a caller that writes its own rows in the same statement.
    pub fn write_call(first: usize) -> String {
        pg::call("inventory.write_sales", first, Self::WRITE_ARGS)
    }

    /// Binds [`Self::write_call`]'s arguments, in order.
    pub fn bind_write<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        let w = &self.write;
        query
            .bind(&w.store_id)
            .bind(&w.skus)
            .bind(&w.deltas)
            .bind(&w.seqs)
            .bind(w.occurred_at_ms)
            .bind(&w.event_ids)
            .bind(&w.event_seqs)
            .bind(&w.bodies)
            .bind(SCOPE)
            .bind(&w.keys)
            .bind(&w.requests)
            .bind(&w.answers)
            .bind(w.last_seq)
            .bind(&w.checkout_keys)
            .bind(&w.checkout_requests)
            .bind(&w.checkout_answers)
    }

    /// Checks a written sku's quantity against the decision. Every stock writer of the store holds
    /// its sequence lock, so a difference means it did not hold: the caller must roll back.
    pub fn check_written(&self, sku: &str, quantity: i64) -> Result<()> {
        let w = &self.write;
        match w.skus.iter().position(|s| s == sku) {
            Some(i) if w.quantities[i] == quantity => Ok(()),
            _ => Err(Error::Internal(anyhow::anyhow!(
                "stock of sku {sku:?} in store {:?} changed while the store's sequence lock was held",
                w.store_id
            ))),
        }
    }

    /// Writes the batch in the caller's transaction: one round trip, none when it writes nothing.
    pub async fn write(self, conn: &mut PgConnection) -> Result<AppliedSales> {
        if self.writes() {
            let sql = format!("SELECT o_sku, o_quantity FROM {}", Self::write_call(1));
            for row in self.bind_write(sqlx::query(&sql)).fetch_all(&mut *conn).await? {
                self.check_written(row.try_get(0)?, row.try_get(1)?)?;
            }
        }
        Ok(self.applied)
    }
}

/// Applies the sales in order, in the caller's transaction scoped to `store_id` (see the module
/// documentation): [`decide_sales`], then its writes. An `Err` means the batch could not be
/// decided or written: the caller must roll its transaction back.
pub async fn apply_sales_in(
    conn: &mut PgConnection,
    store_id: &str,
    sales: &[SaleToApply<'_>],
) -> Result<AppliedSales> {
    decide_sales(conn, store_id, sales).await?.write(conn).await
}

/// Decides the sales in order, in the caller's transaction scoped to `store_id`, with one round
/// trip (`inventory.lock_sales`: the sale ids applied before; then the store's sequence lock, held
/// to the commit, and each sku's product and stock) and no write: the caller writes the decision
/// in the same transaction ([`DecidedSales::write`]). A sale id applied before is answered from its
/// stored answer; a sale is refused for an unknown store or sku, a charged price the catalog no
/// longer has, or stock a strict store does not have.
pub async fn decide_sales(conn: &mut PgConnection, store_id: &str, sales: &[SaleToApply<'_>]) -> Result<DecidedSales> {
    let mut outcomes: Vec<Option<Result<pb::ApplySaleResponse>>> = sales.iter().map(|_| None).collect();
    let ids: Vec<&str> = sales.iter().map(|s| s.sale_id).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Err(Error::Internal(anyhow::anyhow!("a sale id appears twice in one batch")));
    }
    let checkout_keys: Vec<&str> = sales.iter().filter_map(|s| s.checkout.map(|c| c.key.as_str())).collect();
    if checkout_keys.iter().collect::<HashSet<_>>().len() != checkout_keys.len() {
        return Err(Error::Internal(anyhow::anyhow!("a checkout key appears twice in one batch")));
    }
    let mut write = SalesWrite { store_id: store_id.to_owned(), ..SalesWrite::default() };
    if sales.is_empty() {
        return Ok(DecidedSales { applied: AppliedSales { outcomes: Vec::new(), last_seq: None }, write });
    }

    // A sale id is claimed by inserting it with its answer in the batch's write: a concurrent batch
    // that applies the same id first makes that insert fail on the key, and the batch runs again
    // one sale at a time, where the lookup below finds it.
    let mut skus: Vec<&str> = sales.iter().flat_map(|s| s.movements.iter().map(|m| m.sku.as_str())).collect();
    skus.sort_unstable();
    skus.dedup();
    let rows = sqlx::query(
        "SELECT o_key, o_request, o_response, o_last_seq, o_policy, o_sku, o_known, o_active, o_currency,
                o_price, o_quantity, o_checkout
         FROM inventory.lock_sales($1, $2, $3, $4, $5)",
    )
    .bind(store_id)
    .bind(&skus)
    .bind(SCOPE)
    .bind(&ids)
    .bind(&checkout_keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut taken = Taken::default();
    let mut locked = None;
    // Per known sku: its price and whether it is for sale.
    let mut catalog: HashMap<String, (Money, bool)> = HashMap::with_capacity(skus.len());
    let mut stock: HashMap<String, i64> = HashMap::with_capacity(skus.len());
    for row in &rows {
        if let Some(key) = row.try_get::<Option<String>, _>(0)? {
            let stored = (row.try_get(1)?, row.try_get(2)?);
            match row.try_get::<bool, _>(11)? {
                true => taken.checkouts.insert(key, stored),
                false => taken.sale_ids.insert(key, stored),
            };
            continue;
        }
        let Some(sku) = row.try_get::<Option<String>, _>(5)? else {
            let policy = OversellPolicy::from_db(row.try_get::<&str, _>(4)?);
            locked = Some((row.try_get::<i64, _>(3)? as u64, policy));
            continue;
        };
        if row.try_get::<bool, _>(6)? {
            let currency: &str = row.try_get(8)?;
            let currency = Currency::parse("currency_code", currency)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored product {sku} has a bad currency: {e}")))?;
            catalog.insert(sku.clone(), (Money::new(currency, row.try_get(9)?), row.try_get(7)?));
        }
        if let Some(quantity) = row.try_get::<Option<i64>, _>(10)? {
            stock.insert(sku, quantity);
        }
    }
    if !taken.sale_ids.is_empty() || !taken.checkouts.is_empty() {
        replay_taken(store_id, sales, &taken, &mut outcomes);
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
        if let Some(m) = sale.movements.iter().find(|m| !catalog.contains_key(&m.sku)) {
            outcomes[i] = Some(Err(Error::not_found(format!("sku {:?} does not exist", m.sku))));
            continue;
        }
        let decision = check_charged(sale.charged, |sku| catalog.get(sku).copied())
            .and_then(|()| decide(&stock, store_id, policy, sale.movements));
        match decision {
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
    write.occurred_at_ms = now_ms();
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
        let event = envelope(event_id, store_id, d.seq, write.occurred_at_ms, Payload::InventoryChanged(change));
        write.event_ids.push(event_id);
        write.event_seqs.push(d.seq as i64);
        write.bodies.push(event.encode_to_vec());
        let response = match sale.checkout {
            None => {
                write.keys.push(sale.sale_id.to_owned());
                write.requests.push(sale.request.to_vec());
                write.answers.push(response.encode_to_vec());
                response
            }
            Some(checkout) => {
                // The answer names the sale; the stored one keeps it too, for a retry to record.
                let mut stored = pb::ApplySaleResponse { sale_id: sale.sale_id.to_owned(), ..response };
                stored.sale = checkout.sale.clone();
                write.checkout_keys.push(checkout.key.clone());
                write.checkout_requests.push(checkout.fingerprint.clone());
                write.checkout_answers.push(stored.encode_to_vec());
                pb::ApplySaleResponse { sale: Vec::new(), ..stored }
            }
        };
        for m in sale.movements {
            stock_seq.insert(&m.sku, d.seq as i64);
        }
        outcomes[d.index] = Some(Ok(response));
    }
    // Per sku: the net delta, the sequence of the last sale that touched it, the quantity decided.
    for (sku, &sku_seq) in &stock_seq {
        let after = stock[*sku];
        write.skus.push((*sku).to_owned());
        write.deltas.push(after - before.get(*sku).copied().unwrap_or(0));
        write.seqs.push(sku_seq);
        write.quantities.push(after);
    }
    write.last_seq = seq as i64;
    let last_seq = (seq > last_seq).then_some(seq);
    Ok(DecidedSales { applied: AppliedSales { outcomes: settled(outcomes), last_seq }, write })
}

/// The keys of a batch applied before, with their stored requests and answers.
#[derive(Default)]
struct Taken {
    sale_ids: HashMap<String, (Vec<u8>, Option<Vec<u8>>)>,
    checkouts: HashMap<String, (Vec<u8>, Option<Vec<u8>>)>,
}

/// The answers of sales whose id, or checkout key, was applied before: the stored answer for the
/// same request, ALREADY_EXISTS for another. A sale id answers first.
fn replay_taken(
    store_id: &str,
    sales: &[SaleToApply<'_>],
    taken: &Taken,
    outcomes: &mut [Option<Result<pb::ApplySaleResponse>>],
) {
    for (i, sale) in sales.iter().enumerate() {
        let (scope, key, request, stored) = match (taken.sale_ids.get(sale.sale_id), sale.checkout) {
            (Some(stored), _) => (SCOPE.to_owned(), sale.sale_id, sale.request, stored),
            (None, Some(checkout)) => match taken.checkouts.get(&checkout.key) {
                Some(stored) => {
                    (checkout_key_scope(store_id), checkout.key.as_str(), checkout.fingerprint.as_slice(), stored)
                }
                None => continue,
            },
            (None, None) => continue,
        };
        outcomes[i] = match stored {
            (stored_request, _) if stored_request.as_slice() != request => Some(Err(key_reused(&scope, key))),
            (_, Some(response)) => Some(pg::replay(response)),
            (_, None) => Some(Err(key_unanswered(&scope, key))),
        };
    }
}

/// The quantities after each of a sale's movements, in order, or why the sale is refused
/// ([`domain::decide_movement`]). A sale's movements are merged by sku (`sale_movements`), so
/// each starts from the stock read.
fn decide(
    stock: &HashMap<String, i64>,
    store_id: &str,
    policy: OversellPolicy,
    movements: &[StockMovement],
) -> Result<Vec<i64>> {
    let mut decided: HashMap<&str, i64> = HashMap::with_capacity(movements.len());
    let mut quantities: Vec<i64> = Vec::with_capacity(movements.len());
    for m in movements {
        let current = decided.get(m.sku.as_str()).or_else(|| stock.get(&m.sku)).copied().unwrap_or(0);
        let after = domain::decide_movement(policy, store_id, "lines", current, m)?;
        decided.insert(&m.sku, after);
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
            charged: &sale.charged,
            checkout: sale.checkout.as_ref(),
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
    // No linger: its callers are sales processes, each sending a batch at a time and waiting for
    // its answer, so no more would come.
    StoreBatcher::new(MAX_BATCH, 1, IDLE, Duration::ZERO, move |store_id, jobs| {
        let pool = pool.clone();
        async move { run_sales(&pool, &store_id, jobs).await }.boxed()
    })
}

async fn run_sales(pool: &PgPool, store_id: &str, jobs: Vec<SaleJob>) -> Vec<SaleJob> {
    let (mut ids, mut checkouts) = (HashSet::new(), HashSet::new());
    let (now, later): (Vec<SaleJob>, Vec<SaleJob>) = jobs.into_iter().partition(|j| {
        let checkout_free = j.sale.checkout.as_ref().is_none_or(|c| checkouts.insert(c.key.clone()));
        checkout_free && ids.insert(j.sale.sale_id.clone())
    });
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
