//! The analytics consumer: reads sale events from the log after its stored offset and folds each
//! batch into the rollups in one transaction together with the new offset, so a restart resumes
//! exactly where it stopped and nothing is counted twice.

use redstore_platform::{Db, Topic, eventlog};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CONSUMER_GROUP, rollup};

const BATCH: u32 = 1000;

/// After folding a batch that emptied the log, how long the consumer lets new events gather
/// before it reads again. Each fold rewrites every store's rollup rows it touches; under load,
/// folding as each group commit lands rewrote a store's rows for each of its sales, and took
/// turns at the one writer from the sales themselves. A quiet log is still read as soon as an
/// event lands, so a report lags a busy shop by this much at most.
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

pub fn spawn_consumer(db: Db, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut head = db.watch_head();
        let mut offset = match db.read(|c| eventlog::consumer_offset(c, CONSUMER_GROUP)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "analytics consumer cannot read its offset");
                return;
            }
        };
        tracing::info!(offset, group = CONSUMER_GROUP, "analytics consumer started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            head.borrow_and_update();
            let after = offset;
            let batch = match db.read(move |c| eventlog::topic_events_after(c, Topic::Sales, after, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "analytics consumer cannot read the log; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            let drained = batch.len() < BATCH as usize;
            let Some(last) = batch.last().map(|(pos, _)| *pos) else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = head.changed() => if changed.is_err() { break },
                }
                continue;
            };
            let stored = db
                .write(move |ctx| {
                    let events: Vec<_> = batch.into_iter().map(|(_, event)| event).collect();
                    rollup::apply_all(ctx.conn, &events)?;
                    eventlog::commit_offset(ctx.conn, CONSUMER_GROUP, last)
                })
                .await;
            match stored {
                Ok(()) if drained => {
                    offset = last;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(LINGER) => {}
                    }
                }
                Ok(()) => offset = last,
                Err(e) => {
                    tracing::error!(error = %e, "analytics consumer cannot store a batch; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(offset, "analytics consumer stopped");
    })
}
