//! Checkout by a saga, for sales whose inventory is elsewhere, reached through
//! [`InventoryStore`] ([`PgSales::new`]; over gRPC between processes): every step is idempotent, so
//! a retry, a concurrent duplicate or a crash heals. A store's checkouts are batched here too
//! ([`saga_batch`]). A checkout with lines is recorded only once inventory applied it: inventory
//! is asked about the whole batch at once, each sale under its checkout's key and keeping the
//! drafted sale, so a retry with a fresh sale id is answered with the first attempt's sale, then
//! one statement records the sales applied; [`PgSales::record_applied`] records what an attempt
//! left applied and unrecorded ([`applied_batch`]). A checkout of a cart takes the steps below,
//! each once for the batch (one transaction records them pending, inventory is asked about all of
//! them at once, one transaction completes them, [`pending_batch`]), and alone when the batch
//! cannot finish it (its key points at a sale left pending, [`PgSales::checkout_saga`]):
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
//!    and one call of `sales.complete_sales` (migration 0012, its own transaction) makes the sale
//!    `completed` if it is still pending, writes its `sale.completed` event to the outbox and
//!    clears the cart it came from, all at once; an attempt racing it gets inventory's stored
//!    answer and changes nothing. Any other failure (inventory unreachable, a crash) leaves the
//!    sale pending: a retry with the key, or [`PgSales::resume_pending`], finishes it.
//!
//! Step 1 drafts first (reads only) and looks the key up in transaction A when the insert finds
//! it taken, or on its own when the draft fails — the same answers, one transaction fewer.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message as _;
use redstore_inventory::domain::sale_movements;
use redstore_inventory::store::{CheckoutKey, SaleOrder};
use redstore_platform::batch as platform_batch;
use redstore_platform::error::{Error, Result};
use redstore_platform::pg;
use redstore_platform::time::{duration_ms, timestamp_ms};
use redstore_proto::sales::{Sale, SaleStatus};
use sqlx::Row as _;

use super::batch::{
    Answer, CheckoutPath, ClaimedAs, Completions, Drafted, claim, draft_all, keyed_answer, lines_of, refusal,
};
use super::carts::{CartSale, Carts, cart_items, guard_carts, read_carts};
use super::{
    KeyedSale, PgSales, Resumed, SCHEMA, apply_request, decode_sale, draft_sale, is_refusal, keyed_sale, keyed_sales,
    now_ms, price_lines, resume_keyed,
};
use crate::catalog;
use crate::store::{CheckoutOrder, empty_cart};

/// The saga: a batch's checkouts with lines by [`applied_batch`], of carts by [`pending_batch`].
#[derive(Clone, Copy)]
pub(super) struct Saga;

impl CheckoutPath for Saga {
    async fn run_batch(&self, sales: &PgSales, orders: &[&CheckoutOrder]) -> Result<Vec<Answer>> {
        saga_batch(sales, orders).await
    }
}

/// How often a checkout looks its key up again after losing a race (a concurrent attempt
/// inserted the key first, or deleted its pending sale when inventory refused it).
const CHECKOUT_ROUNDS: usize = 8;

/// What recording a pending sale found.
enum Pending {
    /// This attempt's sale, now pending.
    Recorded(String),
    /// The key was taken: the sale it points at.
    Keyed(KeyedSale),
}

impl PgSales {
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
        let priced = price_lines(field, &lines, &order.overrides, |i| products.get(&lines[i].0))?;
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
    /// and only if the cart is still as drafted (`guard_carts`); else the key's sale, if
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
            let guarded = CartSale { terminal_id: &order.terminal_id, key: &order.idem.key, lines };
            if let Some(refusal) = guard_carts(&mut tx, &order.store_id, &[guarded]).await?.pop().flatten() {
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
        // transaction of its own (`complete_pending`), which takes the store's sequence lock
        // last and commits as it returns. A concurrent attempt may lock the row in between: it
        // gets inventory's stored answer again (idempotent by sale id) and only one of the two
        // completes the sale, which is still pending. A crash in between leaves the sale pending
        // for a retry or `resume_pending`, as a crash before it does.
        tx.rollback().await?;
        let occurred_at_ms = now_ms();
        let mut completed = Completions::default();
        completed.add(store_id, occurred_at_ms, &sale, from_cart.then_some(sale.sale_id.as_str()));
        let body = [sale.encode_to_vec()];
        // None: a concurrent attempt completed it, with the same inventory answer.
        if let Some(seq) = complete_pending(&self.pool, store_id, &[], &completed, &body, occurred_at_ms).await? {
            pg::notify_committed(&self.pool, SCHEMA, store_id, seq).await;
        }
        Ok(Some(sale))
    }

    /// Finishes the store's checkouts that have been pending for longer than `older_than`: the
    /// process died, or inventory could not be reached, between recording a sale and completing
    /// it. Each is completed (inventory applies its stock once, by sale id) or, when inventory
    /// refuses it, deleted as a failed checkout is. Run it periodically for every store.
    pub async fn resume_pending(&self, store_id: &str, older_than: Duration) -> Result<Resumed> {
        let cutoff = now_ms().saturating_sub(duration_ms(older_than));
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

    /// A checkout by the saga (see the module documentation).
    pub(super) async fn checkout_saga(&self, order: CheckoutOrder) -> Result<Sale> {
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
    pub(super) terminals: Vec<String>,
    pub(super) keys: Vec<String>,
    requests: Vec<Vec<u8>>,
    created: Vec<i64>,
    pub(super) bodies: Vec<Vec<u8>>,
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

    pub(super) fn add(&mut self, store_id: &str, occurred_at_ms: i64, order: &CheckoutOrder, sale: &Sale) {
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
    async fn write_parts(
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
        claim(&mut conn, orders, &lines, drafts, ClaimedAs::Pending, &mut answers).await?
    } else {
        let mut tx = pg::store_tx(&saga.pool, store_id).await?;
        let sold: Vec<CartSale<'_>> = cart_sales.iter().map(|(_, c)| *c).collect();
        for ((i, _), refusal) in cart_sales.iter().zip(guard_carts(&mut tx, store_id, &sold).await?) {
            if let Some(err) = refusal {
                drafts[*i] = Err(err);
            }
        }
        let drafted = claim(&mut tx, orders, &lines, drafts, ClaimedAs::Pending, &mut answers).await?;
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
    if !completed.sale_ids.is_empty() || !refused.is_empty() {
        let newest = complete_pending(&saga.pool, store_id, &refused, &completed, &completed_bodies, occurred_at_ms);
        if let Some(last) = newest.await? {
            pg::notify_committed_soon(&saga.pool, SCHEMA, store_id, last);
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or(Answer::Saga)).collect())
}

/// The saga's last step for a store's pending sales, in one statement committing on its own
/// (`sales.complete_sales`, migration 0012): the sales inventory applied (`completed`, with their
/// final `bodies`) become `completed` if they are still pending, with their events and the cart
/// lines they sold; those it refused are deleted if still pending. The newest event sequence
/// written, if any.
async fn complete_pending(
    pool: &pg::PgPool,
    store_id: &str,
    refused: &[String],
    completed: &Completions,
    bodies: &[Vec<u8>],
    occurred_at_ms: i64,
) -> Result<Option<u64>> {
    let query = sqlx::query("SELECT sales.complete_sales($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(store_id)
        .bind(refused)
        .bind(&completed.sale_ids)
        .bind(bodies)
        .bind(occurred_at_ms);
    let row = completed.bind_events_and_carts(query).fetch_one(pool).await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.map(|s| s as u64))
}
