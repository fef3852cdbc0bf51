//! Analytics in the distributed shape with Kafka: consumer group `analytics-rollups` reads the
//! sales topic(s) and folds each sale event into the PostgreSQL rollups.
//!
//! The events already received are folded together, one transaction per store (one at a time
//! when that fails, so that a poison event is dead-lettered alone), each committed before the
//! Kafka offsets; the event id recorded in `analytics.processed` makes a redelivery
//! (a restart before the offset commit, or an event the relay published twice) a no-op.

use futures::future::BoxFuture;
use redstore_platform::error::Result;
use redstore_platform::kafka::rdkafka::producer::FutureProducer;
use redstore_platform::kafka::{self, KafkaConfig};
use redstore_platform::pg::{self, PgPool};
use redstore_proto::events::EventEnvelope;
use tokio_util::sync::CancellationToken;

use crate::CONSUMER_GROUP;

/// The domains whose topics analytics consumes.
pub const DOMAINS: &[&str] = &["sales"];

/// Folds one event into the rollups in a transaction scoped to its store; a no-op for an event
/// counted before.
pub async fn fold(pool: &PgPool, event: &EventEnvelope) -> Result<()> {
    let mut tx = pg::store_tx(pool, &event.store_id).await?;
    crate::pg::apply(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Folds the events received together: one transaction per store for all of its events (each
/// still counted once, by event id). A failure leaves the caller to fold them one by one.
pub async fn fold_all(pool: &PgPool, events: Vec<EventEnvelope>) -> Result<()> {
    let mut by_store: std::collections::BTreeMap<String, Vec<EventEnvelope>> = std::collections::BTreeMap::new();
    for event in events {
        by_store.entry(event.store_id.clone()).or_default().push(event);
    }
    for (store_id, events) in by_store {
        let mut tx = pg::store_tx(pool, &store_id).await?;
        crate::pg::apply_all(&mut tx, &events).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Consumes the sales topics as group [`CONSUMER_GROUP`] until `shutdown`. Creates the topics
/// (and their dead-letter topics) when missing, and fails within a few seconds when no broker
/// answers. An event that cannot be decoded or folded after a few attempts goes to
/// `<topic>.dlq`, through `dlq` (the process's producer: each one is a set of broker connections
/// and threads).
pub async fn run(
    pool: PgPool,
    cfg: KafkaConfig,
    dlq: FutureProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_in_group(pool, cfg, CONSUMER_GROUP, dlq, shutdown).await
}

/// [`run`] in another consumer group (tests that share a broker keep their groups apart).
pub async fn run_in_group(
    pool: PgPool,
    cfg: KafkaConfig,
    group: &str,
    dlq: FutureProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg, DOMAINS).await?;
    // Rollups are read by reports, not by a terminal waiting: fetches may wait longer.
    let consumer = kafka::consumer_paced(&cfg, group, DOMAINS, kafka::Pace::Bulk)?;
    tracing::info!(group, pattern = %cfg.pattern("sales"), "analytics kafka consumer started");
    let pool_for_batches = pool.clone();
    let handler = move |event: EventEnvelope| -> BoxFuture<'static, Result<()>> {
        let pool = pool.clone();
        Box::pin(async move { fold(&pool, &event).await })
    };
    let batch_pool = pool_for_batches.clone();
    let batch: kafka::BatchHandler = Box::new(move |events: Vec<EventEnvelope>| -> BoxFuture<'static, Result<()>> {
        let pool = batch_pool.clone();
        Box::pin(async move { fold_all(&pool, events).await })
    });
    kafka::consume_batches(consumer, dlq, Some(batch), handler, shutdown).await?;
    tracing::info!(group, "analytics kafka consumer stopped");
    Ok(())
}
