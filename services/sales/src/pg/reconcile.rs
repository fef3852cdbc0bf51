//! The sales service's safety sweeps on PostgreSQL, each driven by the rows with unfinished work
//! (an index on them), never by a walk over every store: sales left pending, checkouts inventory
//! applied that no sale records, and checkout keys past their retention.

use std::time::Duration;

use redstore_inventory::store::{AppliedCheckout, CheckoutsQuery};
use redstore_platform::error::Result;
use redstore_platform::pg;
use redstore_platform::time::duration_ms;

use super::saga::{Recording, applied_sale};
use super::{PgSales, SCHEMA, decode_sale, now_ms};

impl PgSales {
    /// The stores with a sale pending for longer than `older_than`, in one statement across the
    /// chain (`sales.stores_pending`, migration 0010, over the index of pending sales): the stores
    /// [`PgSales::resume_pending`] has work in. None at rest.
    pub async fn stores_pending(&self, older_than: Duration) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(duration_ms(older_than));
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
        let before_ms = now_ms().saturating_sub(duration_ms(older_than));
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
        let before_ms = now_ms().saturating_sub(duration_ms(older_than));
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
                let mut record = Recording::default();
                for AppliedCheckout { key, fingerprint, answer, .. } in applied {
                    if answer.sale.is_empty() {
                        // Applied by the pending saga, which keeps no sale there but records the
                        // key before it asks inventory: a key it recorded cannot be missing here.
                        tracing::warn!(store_id, key, sale_id = %answer.sale_id, "an applied checkout has no sale to record");
                        continue;
                    }
                    let sale = applied_sale(decode_sale(&answer.sale)?, answer)?;
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
}
