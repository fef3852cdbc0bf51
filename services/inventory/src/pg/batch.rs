//! Every stock change on PostgreSQL, as a batch: many sales of one store or several, applied in the
//! caller's transaction (inventory's half of the checkout group commit, for a process where sales
//! and inventory share one PostgreSQL database, see `redstore_sales::pg`, and its `ApplySales`
//! batches), and a refund or an adjustment as a batch of one ([`Kind`]). [`decide_parts`] reads every
//! store's part in one statement scoped to the batch's stores (migration 0011: row-level security
//! refuses any row of another store); the caller writes the decisions
//! ([`PartsWrite`]) beside its own writes, commits, and then notifies up to each store's
//! [`AppliedSales::last_seq`] ([`pg::notify_committed_soon_many`]).
//!
//! The rules and answers are those of [`InventoryStore::apply_sale`] one sale at a time:
//! idempotent by sale id, a strict store never below zero, one `inventory.changed` event and one
//! store sequence per sale, and a refused sale changes nothing while the others still apply. What
//! differs is the cost: the batch looks its keys up in one statement, takes each store's sequence
//! lock once, reads the stock of every sku once, and writes stock, events, keys with their answers
//! and the sequences in one statement, instead of one function call (and one commit) per sale. A
//! refused sale's key is never written, so it can be used again.
//!
//! Deciding here is safe because every stock writer of a store (this, and the stock loads of
//! `import`) holds the store's sequence row lock while it reads and changes that store's stock,
//! and the stock is read here only once the lock is held. The writes are still
//! deltas, and each row's result is checked against the decision: a mismatch is an error, and the
//! caller's transaction rolls back.
//!
//! [`InventoryStore::apply_sale`]: crate::InventoryStore::apply_sale

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::FutureExt as _;

use prost::Message as _;
use redstore_platform::batch::{StoreBatcher, by_store};
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

/// The idempotency scope of refunds' returns of stock, keyed by refund id.
const REFUND_SCOPE: &str = "inventory.apply_refund";

/// What the changes of a batch are (a batch holds one kind): how their keys are scoped, the
/// reason their events give, and what they answer.
#[derive(Clone, Copy)]
pub(super) enum Kind<'a> {
    /// Sales, keyed by sale id (or by checkout key), answered with an `ApplySaleResponse`.
    Sale,
    /// A refund's return of stock, keyed by refund id, answered as a sale is.
    Refund,
    /// A manager's adjustment, keyed by its request's key in `scope`, its event naming
    /// `adjustment_id`, answered with an `AdjustStockResponse`.
    Adjustment { scope: &'a str, reason: &'a str, adjustment_id: &'a str },
}

impl Kind<'_> {
    fn scope(&self) -> &str {
        match self {
            Self::Sale => SCOPE,
            Self::Refund => REFUND_SCOPE,
            Self::Adjustment { scope, .. } => scope,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Sale => "sale",
            Self::Refund => "refund",
            Self::Adjustment { reason, .. } => reason,
        }
    }

    /// The request field a refusal names.
    fn field(&self) -> &'static str {
        match self {
            Self::Sale | Self::Refund => "lines",
            Self::Adjustment { .. } => "quantity_delta",
        }
    }

    /// The reference its event gives for a change keyed `key`.
    fn reference<'k>(&'k self, key: &'k str) -> &'k str {
        match self {
            Self::Adjustment { adjustment_id, .. } => adjustment_id,
            Self::Sale | Self::Refund => key,
        }
    }

    /// The answer stored under a key, for a repeat of the change.
    fn replay(&self, stored: &[u8]) -> Result<Answer> {
        match self {
            Self::Adjustment { .. } => pg::replay(stored).map(Answer::Adjust),
            Self::Sale | Self::Refund => pg::replay(stored).map(Answer::Sale),
        }
    }
}

/// A change's answer, as its [`Kind`] gives it.
pub(super) enum Answer {
    Sale(pb::ApplySaleResponse),
    Adjust(pb::AdjustStockResponse),
}

impl Answer {
    fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Self::Sale(r) => r.encode_to_vec(),
            Self::Adjust(r) => r.encode_to_vec(),
        }
    }

    pub(super) fn into_sale(self) -> Result<pb::ApplySaleResponse> {
        match self {
            Self::Sale(r) => Ok(r),
            Self::Adjust(_) => Err(Error::Internal(anyhow::anyhow!("a sale was answered as an adjustment"))),
        }
    }

    pub(super) fn into_adjustment(self) -> Result<pb::AdjustStockResponse> {
        match self {
            Self::Adjust(r) => Ok(r),
            Self::Sale(_) => Err(Error::Internal(anyhow::anyhow!("an adjustment was answered as a sale"))),
        }
    }
}

/// One sale of a batch (or the refund, or the adjustment, of a batch of another [`Kind`]).
pub struct SaleToApply<'a> {
    /// The sale's id, its idempotency key in inventory; distinct within a batch. A refund's id; an
    /// adjustment's idempotency key.
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

/// A store's batch decided under its locks ([`decide_parts`]) but not yet written: its outcomes
/// hold once [`DecidedSales::write`] (or the caller's own statement, through [`PartsWrite`]) has
/// written it in the same transaction.
pub struct DecidedSales {
    pub applied: AppliedSales,
    write: StoreWrite,
}

/// A store's batch of any [`Kind`] decided under its locks ([`decide_changes`]), not yet written.
pub(super) struct DecidedChanges {
    /// Per change, in order: its answer, or why it was refused.
    pub(super) outcomes: Vec<Result<Answer>>,
    /// The store's newest sequence when a change applied: notify listeners up to it after the commit.
    pub(super) last_seq: Option<u64>,
    write: StoreWrite,
}

impl StoreWrite {
    /// Whether the batch writes anything: a batch of refusals and replays writes nothing.
    fn writes(&self) -> bool {
        !self.event_ids.is_empty()
    }
}

impl DecidedChanges {
    fn into_sales(self) -> DecidedSales {
        let outcomes = self.outcomes.into_iter().map(|o| o.and_then(Answer::into_sale)).collect();
        DecidedSales { applied: AppliedSales { outcomes, last_seq: self.last_seq }, write: self.write }
    }

    /// Writes the batches in the caller's transaction ([`PartsWrite::write`]).
    pub(super) async fn write_all(decided: &[Self], conn: &mut PgConnection) -> Result<()> {
        PartsWrite::of(decided.iter().map(|d| &d.write)).write(conn).await
    }
}

/// The arguments of `inventory.write_sales_parts` (migration 0011) for a store's decided batch.
#[derive(Default)]
struct StoreWrite {
    /// The idempotency scope of [`Self::keys`] (the batch's [`Kind`]).
    scope: String,
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
    /// Writes the batch in the caller's transaction: one round trip, none when it writes nothing.
    pub async fn write(self, conn: &mut PgConnection) -> Result<AppliedSales> {
        PartsWrite::of([&self.write]).write(conn).await?;
        Ok(self.applied)
    }
}

/// The writes of several stores' decided batches as one statement (`inventory.write_sales_parts`,
/// migration 0011: one statement per table for every part, scoped to the parts' stores), in store
/// id order;
/// batches that write nothing are left out.
pub struct PartsWrite<'d> {
    parts: Vec<&'d StoreWrite>,
}

impl<'d> PartsWrite<'d> {
    /// How many arguments [`Self::call`] takes.
    const ARGS: usize = 20;

    pub fn new(decided: &'d [DecidedSales]) -> Self {
        Self::of(decided.iter().map(|d| &d.write))
    }

    /// The batches that write something, of one [`Kind`] (their keys share a scope).
    fn of(writes: impl IntoIterator<Item = &'d StoreWrite>) -> Self {
        let mut parts: Vec<&StoreWrite> = writes.into_iter().filter(|w| w.writes()).collect();
        parts.sort_by(|a, b| a.store_id.cmp(&b.store_id));
        debug_assert!(parts.windows(2).all(|w| w[0].scope == w[1].scope), "a batch of one kind");
        Self { parts }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The call that writes the batches, its arguments numbered from `$first` (bound by
    /// [`Self::bind`]); it returns `(part, sku, quantity)` rows, each for [`Self::check_written`].
    fn call(first: usize) -> String {
        pg::call("inventory.write_sales_parts", first, Self::ARGS)
    }

    /// Binds [`Self::call`]'s arguments, in order.
    fn bind<'q>(&self, query: PgQuery<'q>) -> PgQuery<'q> {
        let p = &self.parts;
        let (sku_ends, skus) = pg::parts(p, |w| w.skus.as_slice());
        let (event_ends, event_ids) = pg::parts(p, |w| w.event_ids.as_slice());
        let (key_ends, keys) = pg::parts(p, |w| w.keys.as_slice());
        let (checkout_ends, checkout_keys) = pg::parts(p, |w| w.checkout_keys.as_slice());
        query
            .bind(p.iter().map(|w| w.store_id.clone()).collect::<Vec<_>>())
            .bind(sku_ends)
            .bind(skus)
            .bind(pg::parts(p, |w| w.deltas.as_slice()).1)
            .bind(pg::parts(p, |w| w.seqs.as_slice()).1)
            .bind(p.iter().map(|w| w.occurred_at_ms).max().unwrap_or_default())
            .bind(event_ends)
            .bind(event_ids)
            .bind(pg::parts(p, |w| w.event_seqs.as_slice()).1)
            .bind(pg::parts(p, |w| w.bodies.as_slice()).1)
            .bind(p.first().map_or(SCOPE, |w| w.scope.as_str()).to_owned())
            .bind(key_ends)
            .bind(keys)
            .bind(pg::parts(p, |w| w.requests.as_slice()).1)
            .bind(pg::parts(p, |w| w.answers.as_slice()).1)
            .bind(p.iter().map(|w| w.last_seq).collect::<Vec<_>>())
            .bind(checkout_ends)
            .bind(checkout_keys)
            .bind(pg::parts(p, |w| w.checkout_requests.as_slice()).1)
            .bind(pg::parts(p, |w| w.checkout_answers.as_slice()).1)
    }

    /// Checks a written sku's quantity (of `part`, 1-based as the statement numbers them) against
    /// the decision. Every stock writer of a store holds its sequence lock, so a difference means
    /// it did not hold: the caller must roll back.
    fn check_written(&self, part: i32, sku: &str, quantity: i64) -> Result<()> {
        let Some(w) = usize::try_from(part).ok().and_then(|p| self.parts.get(p.wrapping_sub(1))) else {
            return Err(Error::Internal(anyhow::anyhow!(
                "stock written for part {part}, which the batch does not have"
            )));
        };
        match w.skus.iter().position(|s| s == sku) {
            Some(i) if w.quantities[i] == quantity => Ok(()),
            _ => Err(Error::Internal(anyhow::anyhow!(
                "stock of sku {sku:?} in store {:?} changed while the store's sequence lock was held",
                w.store_id
            ))),
        }
    }

    /// Writes the batches in the caller's transaction: one round trip, none when there is nothing
    /// to write.
    pub async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        self.write_joined(conn, None).await.map(drop)
    }

    /// Writes the batches and runs the caller's own `joined` call in the same statement (one
    /// round trip fewer under the stores' locks; the batches' writes run first), in the caller's
    /// transaction; none when there is nothing to run. Checks every stock row written against the
    /// decision, and returns `joined`'s rows: its columns first, then inventory's, which are NULL
    /// in them.
    pub async fn write_joined(
        &self,
        conn: &mut PgConnection,
        joined: Option<&dyn JoinedCall>,
    ) -> Result<Vec<sqlx::postgres::PgRow>> {
        const OURS: [&str; 3] = ["INT", "TEXT", "BIGINT"];
        let theirs = joined.map_or(&[][..], |j| j.columns());
        // Each side's select list is both sides' columns, the other side's as typed NULLs.
        let nulls = |types: &[&str]| types.iter().map(|t| format!("NULL::{t}, ")).collect::<String>();
        let ours = (!self.is_empty())
            .then(|| format!("SELECT {}w.o_part, w.o_sku, w.o_quantity FROM {} w", nulls(theirs), Self::call(1)));
        let first = if ours.is_some() { Self::ARGS + 1 } else { 1 };
        let joined_select =
            joined.map(|j| format!("SELECT j.*, {} FROM {} j", nulls(&OURS).trim_end_matches(", "), j.call(first)));
        let sql = match (ours, joined_select) {
            (Some(ours), Some(theirs)) => format!("{ours} UNION ALL {theirs}"),
            (Some(ours), None) => ours,
            (None, Some(theirs)) => theirs,
            (None, None) => return Ok(Vec::new()),
        };
        let mut query = sqlx::query(&sql);
        if !self.is_empty() {
            query = self.bind(query);
        }
        if let Some(j) = joined {
            query = j.bind(query);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        let at = theirs.len();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            match row.try_get::<Option<i32>, _>(at)? {
                Some(part) => self.check_written(part, row.try_get(at + 1)?, row.try_get(at + 2)?)?,
                None => kept.push(row),
            }
        }
        Ok(kept)
    }
}

/// A set-returning call of the caller's to run in the same statement as a batch's writes
/// ([`PartsWrite::write_joined`]).
pub trait JoinedCall: Sync {
    /// The call with its arguments numbered from `$first` (`schema.function($first, …)`).
    fn call(&self, first: usize) -> String;
    /// The SQL types of the columns it returns, in order.
    fn columns(&self) -> &'static [&'static str];
    /// Binds its arguments, in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q>;
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

/// [`decide_parts`] for one store, in the caller's transaction scoped to it.
pub async fn decide_sales(conn: &mut PgConnection, store_id: &str, sales: &[SaleToApply<'_>]) -> Result<DecidedSales> {
    let mut decided = decide_parts(conn, &[StoreSales { store_id, sales }]).await?;
    decided.pop().ok_or_else(|| Error::Internal(anyhow::anyhow!("a batch of one store decided none")))
}

/// One store's sales in a batch: its part.
pub struct StoreSales<'a, 's> {
    pub store_id: &'a str,
    pub sales: &'a [SaleToApply<'s>],
}

/// Decides each store's sales in order, in the caller's transaction (stores distinct), with one
/// round trip (`inventory.lock_sales_parts`, migration 0011, scoped to the parts' stores: the sale
/// ids applied before, then every store's sequence lock, held to the commit, and each sku's product
/// and stock; stores locked in id order, the order every batch locks them in) and no write: the caller writes
/// the decisions in the same transaction ([`PartsWrite`], or [`DecidedSales::write`]). Returns a
/// decision per store, in the order given. A sale id applied before is answered from its stored
/// answer; a sale is refused for an unknown store or sku, a charged price the catalog no longer
/// has, or stock a strict store does not have; one store's refusals leave the others' sales alone.
pub async fn decide_parts(conn: &mut PgConnection, parts: &[StoreSales<'_, '_>]) -> Result<Vec<DecidedSales>> {
    Ok(decide_changes(conn, Kind::Sale, parts).await?.into_iter().map(DecidedChanges::into_sales).collect())
}

/// [`decide_parts`] for changes of any [`Kind`].
pub(super) async fn decide_changes(
    conn: &mut PgConnection,
    kind: Kind<'_>,
    parts: &[StoreSales<'_, '_>],
) -> Result<Vec<DecidedChanges>> {
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| parts[a].store_id.cmp(parts[b].store_id));
    if order.windows(2).any(|w| parts[w[0]].store_id == parts[w[1]].store_id) {
        return Err(Error::Internal(anyhow::anyhow!("a store appears twice in one batch")));
    }
    let (mut stores, mut sku_ends, mut all_skus, mut key_ends, mut all_ids, mut checkout_ends, mut all_checkouts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &p in &order {
        let StoreSales { store_id, sales } = parts[p];
        let ids: Vec<&str> = sales.iter().map(|s| s.sale_id).collect();
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(Error::Internal(anyhow::anyhow!("a sale id appears twice in one batch")));
        }
        let checkout_keys: Vec<&str> = sales.iter().filter_map(|s| s.checkout.map(|c| c.key.as_str())).collect();
        if checkout_keys.iter().collect::<HashSet<_>>().len() != checkout_keys.len() {
            return Err(Error::Internal(anyhow::anyhow!("a checkout key appears twice in one batch")));
        }
        let mut skus: Vec<&str> = sales.iter().flat_map(|s| s.movements.iter().map(|m| m.sku.as_str())).collect();
        skus.sort_unstable();
        skus.dedup();
        stores.push(store_id);
        all_skus.extend(skus);
        sku_ends.push(all_skus.len() as i32);
        all_ids.extend(ids);
        key_ends.push(all_ids.len() as i32);
        all_checkouts.extend(checkout_keys);
        checkout_ends.push(all_checkouts.len() as i32);
    }

    // A sale id is claimed by inserting it with its answer in the batch's write: a concurrent batch
    // that applies the same id first makes that insert fail on the key, and the batch runs again
    // one sale at a time, where the lookup below finds it.
    let mut rows: Vec<Vec<sqlx::postgres::PgRow>> = parts.iter().map(|_| Vec::new()).collect();
    if parts.iter().any(|p| !p.sales.is_empty()) {
        let found = sqlx::query(
            "SELECT o_key, o_request, o_response, o_last_seq, o_policy, o_sku, o_known, o_active, o_currency,
                    o_price, o_quantity, o_checkout, o_part
             FROM inventory.lock_sales_parts($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&stores)
        .bind(&sku_ends)
        .bind(&all_skus)
        .bind(kind.scope())
        .bind(&key_ends)
        .bind(&all_ids)
        .bind(&checkout_ends)
        .bind(&all_checkouts)
        .fetch_all(&mut *conn)
        .await?;
        for row in found {
            let part: i32 = row.try_get(12)?;
            match usize::try_from(part).ok().and_then(|p| order.get(p.wrapping_sub(1))) {
                Some(&p) => rows[p].push(row),
                None => return Err(Error::Internal(anyhow::anyhow!("lock_sales_parts answered for part {part}"))),
            }
        }
    }
    let occurred_at_ms = now_ms();
    parts
        .iter()
        .zip(rows)
        .map(|(part, rows)| decide_part(kind, part.store_id, part.sales, &rows, occurred_at_ms))
        .collect()
}

/// One store's changes decided from what `inventory.lock_sales_parts` read for them.
fn decide_part(
    kind: Kind<'_>,
    store_id: &str,
    sales: &[SaleToApply<'_>],
    rows: &[sqlx::postgres::PgRow],
    occurred_at_ms: i64,
) -> Result<DecidedChanges> {
    let mut outcomes: Vec<Option<Result<Answer>>> = sales.iter().map(|_| None).collect();
    let mut write = StoreWrite {
        scope: kind.scope().to_owned(),
        store_id: store_id.to_owned(),
        occurred_at_ms,
        ..StoreWrite::default()
    };
    let mut taken = Taken::default();
    let mut locked = None;
    // Per known sku: its price and whether it is for sale.
    let mut catalog: HashMap<String, (Money, bool)> = HashMap::new();
    let mut stock: HashMap<String, i64> = HashMap::new();
    for row in rows {
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
        replay_taken(kind, store_id, sales, &taken, &mut outcomes);
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
            .and_then(|()| decide(&stock, store_id, policy, kind.field(), sale.movements));
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

    // The answers and events of the applied changes.
    let mut stock_seq: HashMap<&str, i64> = HashMap::new();
    for d in &decided {
        let sale = &sales[d.index];
        let (levels, changes) = applied(store_id, sale.movements, d.seq, &d.quantities);
        let response = sale_answer(levels, d.seq);
        let event_id = uuid::Uuid::now_v7();
        let change = InventoryChanged {
            reason: kind.reason().to_owned(),
            reference_id: kind.reference(sale.sale_id).to_owned(),
            terminal_id: sale.terminal_id.to_owned(),
            changes,
        };
        let event = envelope(event_id, store_id, d.seq, write.occurred_at_ms, Payload::InventoryChanged(change));
        write.event_ids.push(event_id);
        write.event_seqs.push(d.seq as i64);
        write.bodies.push(event.encode_to_vec());
        let answer = match (kind, sale.checkout) {
            (_, Some(checkout)) => {
                // The answer names the sale; the stored one keeps it too, for a retry to record.
                let mut stored = pb::ApplySaleResponse { sale_id: sale.sale_id.to_owned(), ..response };
                stored.sale = checkout.sale.clone();
                write.checkout_keys.push(checkout.key.clone());
                write.checkout_requests.push(checkout.fingerprint.clone());
                write.checkout_answers.push(stored.encode_to_vec());
                Answer::Sale(pb::ApplySaleResponse { sale: Vec::new(), ..stored })
            }
            (Kind::Adjustment { adjustment_id, .. }, None) => Answer::Adjust(pb::AdjustStockResponse {
                stock: response.stock.into_iter().next(),
                adjustment_id: adjustment_id.to_owned(),
            }),
            (Kind::Sale | Kind::Refund, None) => Answer::Sale(response),
        };
        if sale.checkout.is_none() {
            write.keys.push(sale.sale_id.to_owned());
            write.requests.push(sale.request.to_vec());
            write.answers.push(answer.encode_to_vec());
        }
        for m in sale.movements {
            stock_seq.insert(&m.sku, d.seq as i64);
        }
        outcomes[d.index] = Some(Ok(answer));
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
    Ok(DecidedChanges { outcomes: settled(outcomes), last_seq, write })
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
    kind: Kind<'_>,
    store_id: &str,
    sales: &[SaleToApply<'_>],
    taken: &Taken,
    outcomes: &mut [Option<Result<Answer>>],
) {
    for (i, sale) in sales.iter().enumerate() {
        // Who answered before: the change's key in its kind's scope, or a sale's checkout key.
        let (answered_by, scope, key, request, stored) = match (taken.sale_ids.get(sale.sale_id), sale.checkout) {
            (Some(stored), _) => (kind, kind.scope().to_owned(), sale.sale_id, sale.request, stored),
            (None, Some(checkout)) => match taken.checkouts.get(&checkout.key) {
                Some(stored) => (
                    Kind::Sale,
                    checkout_key_scope(store_id),
                    checkout.key.as_str(),
                    checkout.fingerprint.as_slice(),
                    stored,
                ),
                None => continue,
            },
            (None, None) => continue,
        };
        outcomes[i] = match stored {
            (stored_request, _) if stored_request.as_slice() != request => Some(Err(key_reused(&scope, key))),
            (_, Some(response)) => Some(answered_by.replay(response)),
            (_, None) => Some(Err(key_unanswered(&scope, key))),
        };
    }
}

/// The quantities after each of a change's movements, in order, or why the change is refused
/// ([`domain::decide_movement`], naming `field`). A sku's later movement starts from its earlier
/// one's quantity.
fn decide(
    stock: &HashMap<String, i64>,
    store_id: &str,
    policy: OversellPolicy,
    field: &str,
    movements: &[StockMovement],
) -> Result<Vec<i64>> {
    let mut decided: HashMap<&str, i64> = HashMap::with_capacity(movements.len());
    let mut quantities: Vec<i64> = Vec::with_capacity(movements.len());
    for m in movements {
        let current = decided.get(m.sku.as_str()).or_else(|| stock.get(&m.sku)).copied().unwrap_or(0);
        let after = domain::decide_movement(policy, store_id, field, current, m)?;
        decided.insert(&m.sku, after);
        quantities.push(after);
    }
    Ok(quantities)
}

/// Every change's outcome, once each has one.
fn settled<T>(outcomes: Vec<Option<Result<T>>>) -> Vec<Result<T>> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("a change of the batch was left undecided")))))
        .collect()
}

/// A sale of an `InventoryStore::apply_sale(s)` call waiting for its lane's next batch.
pub(super) struct SaleJob {
    pub(super) store_id: String,
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

/// How many batches of different stores run at once (each store has its lane,
/// [`redstore_platform::batch::lane`]).
pub(super) const LANES: usize = 2;

/// How long a lane's worker waits for work before it stops.
const IDLE: Duration = Duration::from_secs(30);

/// `apply_sale` by group commit, for sales arriving one call at a time (over gRPC from sales
/// processes): the sales queued in a lane, whatever their stores, are applied in one transaction
/// per batch (each store's part scoped to it, [`decide_parts`]), committed, answered, then
/// notified. A sale id, or a checkout key, twice in a batch waits for the next one (where it is a
/// replay); a batch that fails as a whole runs again one sale at a time.
pub(super) fn sale_batcher(pool: PgPool) -> StoreBatcher<SaleJob> {
    // No linger: its callers are sales processes, each sending a batch at a time and waiting for
    // its answer, so no more would come.
    StoreBatcher::new(MAX_BATCH, 1, IDLE, Duration::ZERO, move |_lane, jobs| {
        metrics::histogram!("redstore_write_batch_size", "writer" => "inventory_sales").record(jobs.len() as f64);
        let pool = pool.clone();
        async move { run_sales(&pool, jobs).await }.boxed()
    })
}

async fn run_sales(pool: &PgPool, jobs: Vec<SaleJob>) -> Vec<SaleJob> {
    let (mut ids, mut checkouts) = (HashSet::new(), HashSet::new());
    let (now, later): (Vec<SaleJob>, Vec<SaleJob>) = jobs.into_iter().partition(|j| {
        let checkout_free =
            j.sale.checkout.as_ref().is_none_or(|c| checkouts.insert((j.store_id.clone(), c.key.clone())));
        checkout_free && ids.insert(j.sale.sale_id.clone())
    });
    let started = std::time::Instant::now();
    let outcome = apply_batch(pool, &now).await;
    tracing::debug!(sales = now.len(), ms = started.elapsed().as_secs_f64() * 1e3, "sale batch");
    let outcomes =
        match outcome {
            Ok(outcomes) => outcomes,
            Err(err) if now.len() > 1 => {
                tracing::warn!(error = %err, sales = now.len(), "a batch of sales failed; applying them one at a time");
                let mut outcomes = Vec::with_capacity(now.len());
                for job in &now {
                    let one = apply_batch(pool, std::slice::from_ref(job)).await;
                    outcomes.push(one.and_then(|mut o| {
                        o.pop().unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("no outcome"))))
                    }));
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

/// One transaction for the jobs of several stores: an outcome per job, in order.
async fn apply_batch(pool: &PgPool, jobs: &[SaleJob]) -> Result<Vec<Result<pb::ApplySaleResponse>>> {
    // Each store's sales, in the order they came.
    let members = by_store(jobs.iter().map(|j| j.store_id.as_str()));
    let sales: Vec<Vec<SaleToApply<'_>>> =
        members.iter().map(|(_, m)| m.iter().map(|&i| SaleToApply::from(&jobs[i].sale)).collect()).collect();
    let parts: Vec<StoreSales<'_, '_>> =
        members.iter().zip(&sales).map(|((store_id, _), sales)| StoreSales { store_id, sales }).collect();
    let mut tx = pg::begin(pool, "BEGIN").await?;
    let decided = decide_parts(&mut tx, &parts).await?;
    PartsWrite::new(&decided).write(&mut tx).await?;
    tx.commit().await?;
    let mut newest = Vec::new();
    let mut outcomes: Vec<Option<Result<pb::ApplySaleResponse>>> = jobs.iter().map(|_| None).collect();
    for ((store_id, members), decided) in members.iter().zip(decided) {
        if let Some(last) = decided.applied.last_seq {
            newest.push((SCHEMA, (*store_id).to_owned(), last));
        }
        for (&i, outcome) in members.iter().zip(decided.applied.outcomes) {
            outcomes[i] = Some(outcome);
        }
    }
    pg::notify_committed_soon_many(pool, newest);
    Ok(settled(outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Sales decided one after another against the stock the accepted ones left (as a batch
        /// decides them): a sale applies whole or not at all, a strict store's stock never goes
        /// below zero, and each sku's stock is what it started at plus the movements of the sales
        /// accepted.
        #[test]
        fn a_batch_applies_each_sale_whole_or_not_and_stock_is_its_accepted_movements(
            strict in proptest::bool::ANY,
            start in proptest::collection::vec(0i64..6, 3),
            sales in proptest::collection::vec(
                proptest::collection::vec((0usize..3, -4i64..3), 1..4),
                0..40,
            ),
        ) {
            let policy = if strict { OversellPolicy::Strict } else { OversellPolicy::AllowNegative };
            let skus = ["a", "b", "c"];
            let mut stock: HashMap<String, i64> =
                skus.iter().zip(&start).map(|(sku, &q)| ((*sku).to_owned(), q)).collect();
            let mut expected: Vec<i64> = start.clone();
            for sale in sales {
                let movements: Vec<StockMovement> =
                    sale.iter().map(|&(i, delta)| StockMovement { sku: skus[i].to_owned(), delta }).collect();
                // What the sale would leave, sku by sku, its own movements taken in turn.
                let mut after = expected.clone();
                let mut short = false;
                for &(i, delta) in &sale {
                    after[i] += delta;
                    short |= strict && delta < 0 && after[i] < 0;
                }
                match decide(&stock, "s", policy, "lines", &movements) {
                    Ok(quantities) => {
                        proptest::prop_assert!(!short, "accepted a sale the stock could not cover");
                        for (m, q) in movements.iter().zip(quantities) {
                            stock.insert(m.sku.clone(), q);
                        }
                        expected = after;
                    }
                    Err(_) => proptest::prop_assert!(short, "refused a sale the stock covers"),
                }
                for (i, sku) in skus.iter().enumerate() {
                    proptest::prop_assert_eq!(stock[*sku], expected[i]);
                    proptest::prop_assert!(!strict || stock[*sku] >= 0);
                }
            }
        }
    }
}
