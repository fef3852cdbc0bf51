//! How long answers kept for retries are kept. A retry comes within seconds or, from a terminal
//! that was offline, hours; keeping every idempotency key and scan id forever only grows the
//! database. Expired ones are deleted by a background job (`src/server.rs`, `spawn_retention`): a
//! request repeating an expired key is a new request.

use std::time::{Duration, SystemTime};

/// The least a checkout key (and every other idempotency key) is kept.
pub const MIN_KEYS: Duration = Duration::from_secs(7 * 24 * 3600);
/// The least a scan id (and a cart add's key) is kept.
pub const MIN_SCANS: Duration = Duration::from_secs(3600);
/// Rows one cleanup statement deletes at most: it never holds the writer or a lock for long.
pub const CHUNK: u32 = 5000;

/// How long kept answers are kept, and how often expired ones are deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Idempotency keys of checkouts, refunds, adjustments and the rest: at least [`MIN_KEYS`].
    pub keys: Duration,
    /// Scan ids and the keys of cart adds, whose answer only matters while the cart is open.
    pub scans: Duration,
    /// How often the cleanup runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self { keys: MIN_KEYS, scans: Duration::from_secs(24 * 3600), every: Duration::from_secs(3600) }
    }
}

impl Retention {
    /// Unix milliseconds before which idempotency keys have expired.
    pub fn keys_before_ms(&self, now: SystemTime) -> i64 {
        before_ms(now, self.keys)
    }

    /// Unix milliseconds before which scan ids have expired.
    pub fn scans_before_ms(&self, now: SystemTime) -> i64 {
        before_ms(now, self.scans)
    }
}

fn before_ms(now: SystemTime, kept: Duration) -> i64 {
    crate::time::unix_ms(now.checked_sub(kept).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// The scopes kept for [`Retention::scans`] (their keys are scan ids and cart adds'), as SQL
/// `LIKE` patterns; every other scope is kept for [`Retention::keys`].
pub const SCAN_SCOPES: [&str; 2] = ["sales.scan:%", "sales.cart:%"];

/// Runs `sweep` (one chunk of deletes, answering how many) until a chunk comes back short; how
/// many it deleted in all.
pub async fn in_chunks<F, Fut>(mut sweep: F) -> crate::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = sweep().await?;
        total += deleted;
        if deleted < u64::from(CHUNK) {
            return Ok(total);
        }
    }
}
