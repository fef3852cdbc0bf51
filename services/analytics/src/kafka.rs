//! Analytics in the distributed shape with Kafka: consumer group `analytics-rollups` reads the
//! sales topic(s) and folds each sale event into the PostgreSQL rollups.
//!
//! The events already received are folded together, one transaction per store (one at a time
//! when that fails, so that a poison event is dead-lettered alone), each committed before the
//! Kafka offsets; the event id recorded in `analytics.processed` makes a redelivery
//! (a restart before the offset commit, or an event the relay published twice) a no-op. Each
//! store's offset in `platform.consumer_offsets` says up to which sequence every event is
//! counted, so events a broker lost are noticed (a gap before the next event, or an offset that
//! stays behind the outbox) and counted from the sales outbox instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use redstore_platform::error::Result;
use redstore_platform::kafka::{self, KafkaConfig};
use redstore_platform::pg::{self, PgPool};
use redstore_proto::events::EventEnvelope;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::CONSUMER_GROUP;

/// The domains whose topics analytics consumes.
pub const DOMAINS: &[&str] = &["sales"];

/// Folds one event into the rollups (see [`fold_store`]).
pub async fn fold(pool: &PgPool, event: &EventEnvelope) -> Result<()> {
    fold_store(pool, &event.store_id, vec![event.clone()]).await
}

/// Folds the events received together: one transaction per store for all of its events (see
/// [`fold_store`]). A failure leaves the caller to fold them one by one.
pub async fn fold_all(pool: &PgPool, events: Vec<EventEnvelope>) -> Result<()> {
    let mut by_store: BTreeMap<String, Vec<EventEnvelope>> = BTreeMap::new();
    for event in events {
        by_store.entry(event.store_id.clone()).or_default().push(event);
    }
    for (store_id, events) in by_store {
        fold_store(pool, &store_id, events).await?;
    }
    Ok(())
}

/// Folds a store's events into the rollups in one transaction scoped to the store, and moves the
/// store's offset (`platform.consumer_offsets`, as the outbox consumer keeps it) to the newest of
/// them: every event up to the offset is counted. Events at or before the offset were counted
/// already. When the events do not follow the offset without a gap (the broker came back empty and
/// lost events it had not delivered yet), the missing ones are folded from the sales outbox
/// first, page by page, each page in its own transaction; the outbox holds every event. Each
/// event is still counted once by its id.
pub async fn fold_store(pool: &PgPool, store_id: &str, mut events: Vec<EventEnvelope>) -> Result<()> {
    events.sort_by_key(|e| e.store_seq);
    loop {
        let mut tx = pg::store_tx(pool, store_id).await?;
        let offset = crate::pg::lock_offset(&mut tx, store_id).await?;
        let fresh: Vec<EventEnvelope> = events.iter().filter(|e| e.store_seq > offset).cloned().collect();
        let Some(last) = fresh.last().map(|e| e.store_seq) else {
            tx.commit().await?;
            return Ok(());
        };
        let gapless = fresh.iter().zip(offset + 1..).all(|(e, seq)| e.store_seq == seq);
        if !gapless && fill_page(&mut tx, store_id, offset, last).await? {
            tx.commit().await?;
            continue;
        }
        // Nothing missing, or nothing of it in the outbox (events from elsewhere): count what came.
        crate::pg::apply_all(&mut tx, &fresh).await?;
        crate::pg::set_offset(&mut tx, store_id, last).await?;
        tx.commit().await?;
        return Ok(());
    }
}

/// Folds one page of the store's outbox after `offset` up to `until` and moves the offset past
/// it, in the caller's transaction; false when the outbox has none of those events.
async fn fill_page(tx: &mut PgConnection, store_id: &str, offset: u64, until: u64) -> Result<bool> {
    let (events, reached) = crate::pg::outbox_page(tx, store_id, offset, until, crate::pg::BATCH).await?;
    let Some(reached) = reached else {
        return Ok(false);
    };
    crate::pg::apply_all(tx, &events).await?;
    crate::pg::set_offset(tx, store_id, reached).await?;
    tracing::info!(
        store_id,
        from = offset + 1,
        to = reached,
        "sale events Kafka did not deliver counted from the outbox"
    );
    Ok(true)
}

/// Folds from the outbox every event of the store up to `until` that is not counted yet.
async fn fill(pool: &PgPool, store_id: &str, until: u64) -> Result<()> {
    loop {
        let mut tx = pg::store_tx(pool, store_id).await?;
        let offset = crate::pg::lock_offset(&mut tx, store_id).await?;
        let filled = offset < until && fill_page(&mut tx, store_id, offset, until).await?;
        tx.commit().await?;
        if !filled {
            return Ok(());
        }
    }
}

/// Analytics as its stall sweep ([`kafka::sweep_stalled`]) sees it: each store's offset against
/// its sales outbox.
pub struct OutboxStalls(pub PgPool);

#[tonic::async_trait]
impl kafka::Stalls for OutboxStalls {
    async fn position(&self, store_id: &str) -> Result<(u64, bool)> {
        let (offset, head) = offset_and_head(&self.0, store_id).await?;
        Ok((offset, offset < head))
    }

    async fn fill(&self, store_id: &str) -> Result<()> {
        let (_, head) = offset_and_head(&self.0, store_id).await?;
        fill(&self.0, store_id, head).await
    }
}

/// The store's offset (0 before its first event) and the newest sequence of its sales outbox.
async fn offset_and_head(pool: &PgPool, store_id: &str) -> Result<(u64, u64)> {
    let mut tx = pg::store_tx(pool, store_id).await?;
    let offset: Option<i64> = sqlx::query_scalar(
        "SELECT last_seq FROM platform.consumer_offsets WHERE group_name = $1 AND topic = 'sales' AND store_id = $2",
    )
    .bind(CONSUMER_GROUP)
    .bind(store_id)
    .fetch_optional(&mut *tx)
    .await?;
    let head = pg::last_seq(&mut tx, "sales", store_id).await?;
    tx.commit().await?;
    Ok((offset.unwrap_or(0).max(0) as u64, head))
}

/// Every few seconds until `shutdown`, counts from the outbox what Kafka left behind for stores
/// that went quiet ([`kafka::sweep_stalled`] over [`OutboxStalls`]), looking only at the stores
/// whose sales outbox is ahead of analytics' offset ([`kafka::backlog`]).
pub async fn sweep_stalled(pool: PgPool, shutdown: CancellationToken) {
    let stores = kafka::backlog(pool.clone(), "sales", CONSUMER_GROUP);
    kafka::sweep_stalled(stores, Arc::new(OutboxStalls(pool)), "analytics", shutdown).await;
}

/// Consumes the sales topics as group [`CONSUMER_GROUP`] until `shutdown`, with
/// [`sweep_stalled`] beside it over the stores with a backlog. Creates the topics (and their
/// dead-letter topics) when missing, and fails within a few seconds when no broker answers. An
/// event that cannot be decoded or folded after a few attempts goes to `<topic>.dlq`, through
/// `dlq` (the process's producer: each one is a set of broker connections and threads).
pub async fn run(
    pool: PgPool,
    cfg: KafkaConfig,
    dlq: kafka::Producer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_in_group(pool, cfg, CONSUMER_GROUP, dlq, shutdown).await
}

/// [`run`] in another consumer group (tests that share a broker keep their groups apart).
pub async fn run_in_group(
    pool: PgPool,
    cfg: KafkaConfig,
    group: &str,
    dlq: kafka::Producer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg, DOMAINS).await?;
    // Rollups are read by reports, not by a terminal waiting: fetches may wait longer.
    let consumer = kafka::consumer_paced(&cfg, group, DOMAINS, kafka::Pace::Bulk)?;
    tracing::info!(group, pattern = %cfg.pattern("sales"), "analytics kafka consumer started");
    let sweep_stop = shutdown.child_token();
    let sweep = tokio::spawn(sweep_stalled(pool.clone(), sweep_stop.clone()));
    let (batch_pool, hint_pool) = (pool.clone(), pool.clone());
    let handler = move |event: EventEnvelope| -> BoxFuture<'static, Result<()>> {
        let pool = pool.clone();
        Box::pin(async move { fold(&pool, &event).await })
    };
    let batch: kafka::BatchHandler = Box::new(move |events: Vec<EventEnvelope>| -> BoxFuture<'static, Result<()>> {
        let pool = batch_pool.clone();
        Box::pin(async move { fold_all(&pool, events).await })
    });
    let quiet = kafka::Quiet::on(kafka::commit_hints(hint_pool, "sales", shutdown.clone()));
    let consumed = kafka::consume_batches(consumer, dlq, Some(batch), handler, Some(quiet), shutdown).await;
    sweep_stop.cancel();
    let _ = sweep.await;
    consumed?;
    tracing::info!(group, "analytics kafka consumer stopped");
    Ok(())
}
