//! The analytics consumer: folds sale events from the log into the rollups
//! ([`rollup::apply_all`]), each batch with its offset in one transaction.

use std::time::Duration;

use redstore_platform::log_consumer::{self, LogConsumer};
use redstore_platform::{Db, Topic};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CONSUMER_GROUP, rollup};

/// A report lags a busy shop by the linger at most.
const ROLLUPS: LogConsumer =
    LogConsumer { group: CONSUMER_GROUP, topic: Topic::Sales, batch: 1000, linger: Duration::from_millis(100) };

pub fn spawn_consumer(db: Db, shutdown: CancellationToken) -> JoinHandle<()> {
    log_consumer::spawn(db, ROLLUPS, shutdown, rollup::apply_all)
}
