//! Feeds the Redis stock cache from the inventory outbox when no Kafka is configured: woken by
//! `NOTIFY redstore_inventory` (no polling delay on the live path), with a sweep every few
//! seconds of the stores whose log moved past what the last sweep saw ([`CACHE_CHECKED`]) as the
//! safety net. Redis keeps its own position per store (`_seq` in the
//! stock hash), so a restart — of this process or of Redis — resumes where the cache stands.
//!
//! With Kafka, the `inventory-cache` consumer group feeds it instead ([`project_received`]), and
//! [`sweep_stalled`] catches up from the log what Kafka lost.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::InventoryStore;
use crate::cache::StockCache;
use redstore_platform::eventlog::is_stock_loaded;
use redstore_platform::kafka;
use redstore_platform::pg::{self, PgPool};

const SWEEP: Duration = Duration::from_secs(2);
const PAGE: u32 = 500;

/// Projects every event of `store_id` newer than the cache's version; stops at the first error.
/// `notified` is the sequence a notification announced: when the hash is already past it, the
/// hash may be from a history since lost, and is checked against the log first ([`reconcile`]).
pub async fn catch_up(
    inventory: &dyn InventoryStore,
    cache: &StockCache,
    store_id: &str,
    notified: Option<u64>,
) -> redstore_platform::Result<usize> {
    let mut projected = 0;
    let mut after = cache.version(store_id).await?.unwrap_or(0);
    if notified.is_some_and(|seq| seq <= after) && reconcile(inventory, cache, store_id).await? {
        after = cache.version(store_id).await?.unwrap_or(0);
    }
    'pages: loop {
        let events = inventory.events_after(store_id, after, PAGE).await?;
        for event in &events {
            if is_stock_loaded(event) {
                // The levels are in the stock table, not in the event: a snapshot read now is
                // at this event or later; the log is read again after it.
                let snapshot = inventory.snapshot(store_id).await?;
                cache.load(event, &snapshot).await?;
                after = snapshot.as_of_seq.max(event.store_seq);
                projected += 1;
                continue 'pages;
            }
            cache.project(event).await?;
            after = event.store_seq;
            projected += 1;
        }
        if events.len() < PAGE as usize {
            return Ok(projected);
        }
    }
}

/// Checks the store's hash against the event log: when the hash reflects an event the log does
/// not have (the database was restored from an older backup, or reset), it is rebuilt from a
/// snapshot, so that new events are projected and published again rather than skipped as stale,
/// and the log's newest event is published: a watcher that missed the events skipped meanwhile
/// sees the gap and fills it from the log. Returns whether it rebuilt the hash.
pub async fn reconcile(
    inventory: &dyn InventoryStore,
    cache: &StockCache,
    store_id: &str,
) -> redstore_platform::Result<bool> {
    let Some(version) = cache.version(store_id).await? else {
        return Ok(false);
    };
    reconcile_at(inventory, cache, store_id, version).await
}

/// [`reconcile`] of a hash whose sequence is known to be `version`.
async fn reconcile_at(
    inventory: &dyn InventoryStore,
    cache: &StockCache,
    store_id: &str,
    version: u64,
) -> redstore_platform::Result<bool> {
    if version == 0 || inventory.logged(store_id, version).await? {
        return Ok(false);
    }
    let snapshot = inventory.snapshot(store_id).await?;
    let rebuilt = cache.rebuild_if_ahead(&snapshot).await?;
    if rebuilt
        && snapshot.as_of_seq > 0
        && let Some(newest) = inventory.events_after(store_id, snapshot.as_of_seq - 1, 1).await?.first()
    {
        cache.announce(newest).await?;
    }
    if rebuilt {
        tracing::warn!(
            store_id,
            cached_seq = version,
            log_seq = snapshot.as_of_seq,
            "the stock cache was ahead of the event log (database restored or reset?); rebuilt it from a snapshot"
        );
    }
    Ok(rebuilt)
}

/// [`reconcile`] for the stores whose events the cache skipped as stale (what
/// `StockCache::project_all` returns): a skip is a redelivery, or a hash from a lost history.
pub async fn reconcile_stale(inventory: &dyn InventoryStore, cache: &StockCache, stale: &[(String, u64)]) {
    for (store, version) in stale {
        warn_unchecked(store, reconcile_at(inventory, cache, store, *version).await);
    }
}

/// Logs a store whose hash could not be checked against the log now (Redis or the database down):
/// the next check (a skip, a restart) tries again.
fn warn_unchecked(store_id: &str, checked: redstore_platform::Result<bool>) {
    if let Err(e) = checked {
        redstore_platform::warn_throttled!(error = %e, store_id, "cannot check the stock cache against the log");
    }
}

/// How many stores' versions [`reconcile_all`] reads from Redis in one pipeline.
const VERSIONS_AT_ONCE: usize = 1_000;

/// [`reconcile`] for every store whose hash is ahead of its log, found without a transaction per
/// store: the stores (one query), their log heads (one statement, [`pg::stores_behind`] of a group
/// that has no offsets) and their hashes' versions (Redis pipelines). A store's events are
/// gapless from 1, so a version is in the log exactly when it is at most the head. What cannot be
/// checked now (Redis down) is logged and left.
pub async fn reconcile_all(pool: &PgPool, inventory: &dyn InventoryStore, cache: &StockCache) {
    let listed = async {
        let stores = inventory.store_ids().await?;
        let heads: std::collections::HashMap<String, u64> =
            pg::stores_behind(pool, "inventory", "").await?.into_iter().map(|b| (b.store_id, b.head)).collect();
        let mut ahead = Vec::new();
        for chunk in stores.chunks(VERSIONS_AT_ONCE) {
            for (store, version) in chunk.iter().zip(cache.versions(chunk).await?) {
                let head = heads.get(store).copied().unwrap_or(0);
                if let Some(version) = version.filter(|v| *v > head) {
                    ahead.push((store.clone(), version));
                }
            }
        }
        Ok::<_, redstore_platform::Error>(ahead)
    };
    match listed.await {
        Ok(ahead) => reconcile_stale(inventory, cache, &ahead).await,
        Err(e) => tracing::warn!(error = %e, "cannot check the stock cache against the log"),
    }
}

/// Projects events received from Kafka (the `inventory-cache` group), in order, each only onto the
/// hash of its store's previous event (`StockCache::project_next`). A store whose hash lacks the
/// event before one of them (the broker lost it: it came back empty) catches up from the event
/// log, which has every event; a stale event makes its store's hash be checked against the log
/// ([`reconcile_stale`]), as it may be from a history since lost.
pub async fn project_received(
    inventory: &dyn InventoryStore,
    cache: &StockCache,
    events: &[redstore_proto::events::EventEnvelope],
) -> redstore_platform::Result<()> {
    let projection = cache.project_next(events).await?;
    reconcile_stale(inventory, cache, &projection.stale).await;
    for store in &projection.gaps {
        catch_up_lost(inventory, cache, store).await?;
    }
    Ok(())
}

/// Projects from the event log the events of `store_id` Kafka did not deliver.
async fn catch_up_lost(
    inventory: &dyn InventoryStore,
    cache: &StockCache,
    store_id: &str,
) -> redstore_platform::Result<()> {
    let projected = catch_up(inventory, cache, store_id, None).await?;
    tracing::info!(store_id, projected, "inventory events Kafka did not deliver projected from the log");
    Ok(())
}

/// The offsets group (topic `inventory`) under which sweeps of the stock cache record how far they
/// found each store's hash caught up with the log. The hash's own position is in Redis, where a
/// chain-wide look would read every store; this mark lets the database name the stores whose log
/// moved past what a sweep last saw ([`pg::stores_behind`]), so a sweep looks at those alone.
pub const CACHE_CHECKED: &str = "stock-cache-checked";

/// The stores whose event log moved past the stock cache's [`CACHE_CHECKED`] mark.
fn unchecked(pool: PgPool) -> kafka::StoreLister {
    kafka::backlog(pool, "inventory", CACHE_CHECKED)
}

/// The stock cache as its stall sweep ([`kafka::sweep_stalled`]) sees it: each store's hash
/// against the event log.
struct LogStalls {
    /// Where the [`CACHE_CHECKED`] marks are kept (none: the lister names stores by other means).
    marks: Option<PgPool>,
    inventory: Arc<dyn InventoryStore>,
    cache: StockCache,
}

#[tonic::async_trait]
impl kafka::Stalls for LogStalls {
    async fn position(&self, store_id: &str) -> redstore_platform::Result<(u64, bool)> {
        let version = self.cache.version(store_id).await?.unwrap_or(0);
        Ok((version, !self.inventory.events_after(store_id, version, 1).await?.is_empty()))
    }

    async fn fill(&self, store_id: &str) -> redstore_platform::Result<()> {
        catch_up_lost(self.inventory.as_ref(), &self.cache, store_id).await
    }

    async fn caught_up(&self, stores: Vec<(String, u64)>) -> redstore_platform::Result<()> {
        match &self.marks {
            Some(pool) => pg::advance_offsets(pool, CACHE_CHECKED, "inventory", &stores).await,
            None => Ok(()),
        }
    }
}

/// Every few seconds until `shutdown`, catches up from the event log the stores Kafka left
/// behind ([`kafka::sweep_stalled`]), looking only at those whose log moved since a sweep last
/// found them caught up ([`CACHE_CHECKED`]).
pub async fn sweep_stalled(
    pool: PgPool,
    inventory: Arc<dyn InventoryStore>,
    cache: StockCache,
    shutdown: CancellationToken,
) {
    let stores = unchecked(pool.clone());
    let stalls = LogStalls { marks: Some(pool), inventory, cache };
    kafka::sweep_stalled(stores, Arc::new(stalls), "stock cache", shutdown).await;
}

/// [`sweep_stalled`] over the stores `stores` lists, keeping no marks (an embedded inventory, in
/// tests).
pub async fn sweep_stalled_over(
    stores: kafka::StoreLister,
    inventory: Arc<dyn InventoryStore>,
    cache: StockCache,
    shutdown: CancellationToken,
) {
    let stalls = LogStalls { marks: None, inventory, cache };
    kafka::sweep_stalled(stores, Arc::new(stalls), "stock cache", shutdown).await;
}

/// The projector's safety sweep: catches up each store whose log moved past its
/// [`CACHE_CHECKED`] mark (a notification was missed, or Redis was down), then moves the marks of
/// those caught up. At rest it is one statement that names no store.
async fn sweep_unchecked(pool: &PgPool, inventory: &dyn InventoryStore, cache: &StockCache) {
    let behind = match pg::stores_behind(pool, "inventory", CACHE_CHECKED).await {
        Ok(behind) => behind,
        Err(e) => {
            redstore_platform::warn_throttled!(error = %e, "stock cache projector cannot list the stores behind");
            return;
        }
    };
    let mut checked = Vec::with_capacity(behind.len());
    for store in behind {
        match catch_up(inventory, cache, &store.store_id, None).await {
            Ok(_) => checked.push((store.store_id, store.head)),
            // Redis down slows the live path and nothing else; the next sweep retries.
            Err(e) => {
                redstore_platform::warn_throttled!(error = %e, store_id = %store.store_id, "stock cache projection deferred")
            }
        }
    }
    if let Err(e) = pg::advance_offsets(pool, CACHE_CHECKED, "inventory", &checked).await {
        redstore_platform::warn_throttled!(error = %e, "stock cache projector cannot record the stores it checked");
    }
}

/// Runs the projector until `shutdown`. It first checks every store's hash against the log
/// ([`reconcile_all`]).
pub fn spawn(pool: PgPool, inventory: Arc<dyn InventoryStore>, cache: StockCache, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "stock cache projector cannot listen for notifications");
                return;
            }
        };
        if let Err(e) = listener.listen("redstore_inventory").await {
            tracing::error!(error = %e, "stock cache projector cannot LISTEN redstore_inventory");
            return;
        }
        reconcile_all(&pool, inventory.as_ref(), &cache).await;
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            // Each store to catch up, with the sequence a notification announced.
            let mut stores: Vec<(String, Option<u64>)> = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => sweep_unchecked(&pool, inventory.as_ref(), &cache).await,
                n = listener.recv() => match n {
                    Ok(n) => {
                        if let Some((store, seq)) = n.payload().rsplit_once(':') {
                            stores.push((store.to_owned(), seq.parse().ok()));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "stock cache notifications interrupted"),
                },
            }
            for (store, notified) in stores {
                if let Err(e) = catch_up(inventory.as_ref(), &cache, &store, notified).await {
                    // Redis down slows the live path and nothing else; the sweep retries.
                    redstore_platform::warn_throttled!(error = %e, store_id = %store, "stock cache projection deferred");
                }
            }
        }
    });
}
