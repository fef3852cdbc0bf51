//! A consumer of the embedded event log: reads one topic's events after its stored offset and
//! applies each batch in one write job together with the new offset, so a restart resumes exactly
//! where it stopped and nothing is applied twice.

use std::sync::Arc;
use std::time::Duration;

use redstore_proto::events::EventEnvelope;
use rusqlite::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Topic};
use crate::error::Result;
use crate::eventlog;

/// Who consumes what, and how eagerly.
#[derive(Clone, Copy, Debug)]
pub struct LogConsumer {
    /// The group whose offset is kept in `consumer_offsets`.
    pub group: &'static str,
    pub topic: Topic,
    /// The most events applied in one write job.
    pub batch: u32,
    /// After a batch that emptied the log, how long new events gather before the next read. Each
    /// batch rewrites the rows of every store it touches; applying each group commit as it lands
    /// rewrote a store's rows for each of its sales and took turns at the one writer from the
    /// sales themselves. A quiet log is still read as soon as an event lands.
    pub linger: Duration,
}

/// Runs `apply` on each batch of `consumer.topic`'s events (with their log positions), in the
/// write job that stores the offset after them, until `shutdown`.
pub fn spawn<F>(db: Db, consumer: LogConsumer, shutdown: CancellationToken, apply: F) -> JoinHandle<()>
where
    F: Fn(&Connection, &[(i64, EventEnvelope)]) -> Result<()> + Send + Sync + 'static,
{
    let apply = Arc::new(apply);
    let LogConsumer { group, topic, batch: most, linger } = consumer;
    tokio::spawn(async move {
        let mut head = db.watch_head();
        let mut offset = match db.read(move |c| eventlog::consumer_offset(c, group)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, group, "a log consumer cannot read its offset");
                return;
            }
        };
        tracing::info!(offset, group, "log consumer started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            head.borrow_and_update();
            let after = offset;
            let batch = match db.read(move |c| eventlog::topic_events_after(c, topic, after, most)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, group, "a log consumer cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let drained = batch.len() < most as usize;
            let Some(last) = batch.last().map(|(pos, _)| *pos) else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = head.changed() => if changed.is_err() { break },
                }
                continue;
            };
            let apply = apply.clone();
            let stored = db
                .write(move |ctx| {
                    apply(ctx.conn, &batch)?;
                    eventlog::commit_offset(ctx.conn, group, last)
                })
                .await;
            match stored {
                Ok(()) if drained => {
                    offset = last;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(linger) => {}
                    }
                }
                Ok(()) => offset = last,
                Err(e) => {
                    tracing::error!(error = %e, group, "a log consumer cannot store a batch; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(offset, group, "log consumer stopped");
    })
}
