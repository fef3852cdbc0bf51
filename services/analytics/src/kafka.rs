//! Analytics in the distributed shape with Kafka: consumer group `analytics-rollups` reads the
//! sales topic(s) and folds each sale event into the PostgreSQL rollups.
//!
//! Each event is applied in its own transaction scoped to the event's store, which is committed
//! before the Kafka offset; the event id recorded in `analytics.processed` makes a redelivery
//! (a restart before the offset commit, or an event the relay published twice) a no-op.

use futures::future::BoxFuture;
use redstore_platform::error::Result;
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

/// Consumes the sales topics as group [`CONSUMER_GROUP`] until `shutdown`. Creates the topics
/// (and their dead-letter topics) when missing, and fails within a few seconds when no broker
/// answers. An event that cannot be decoded or folded after a few attempts goes to
/// `<topic>.dlq`.
pub async fn run(pool: PgPool, cfg: KafkaConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_in_group(pool, cfg, CONSUMER_GROUP, shutdown).await
}

/// [`run`] in another consumer group (tests that share a broker keep their groups apart).
pub async fn run_in_group(
    pool: PgPool,
    cfg: KafkaConfig,
    group: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    kafka::ensure_topics(&cfg, DOMAINS).await?;
    let consumer = kafka::consumer(&cfg, group, DOMAINS)?;
    let dlq = kafka::producer(&cfg)?;
    tracing::info!(group, pattern = %cfg.pattern("sales"), "analytics kafka consumer started");
    let handler = move |event: EventEnvelope| -> BoxFuture<'static, Result<()>> {
        let pool = pool.clone();
        Box::pin(async move { fold(&pool, &event).await })
    };
    kafka::consume(consumer, dlq, handler, shutdown).await?;
    tracing::info!(group, "analytics kafka consumer stopped");
    Ok(())
}
