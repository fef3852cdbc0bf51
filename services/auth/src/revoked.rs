//! The sessions that have ended before their time (signed out, a copied refresh token), as every
//! process knows them: each reads the newly ended ones every half second, so an access token of
//! an ended session is refused everywhere within a second though tokens are checked without a
//! database read. A session is forgotten once it would have expired anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use redstore_platform::time::unix_ms;
use tokio_util::sync::CancellationToken;

use crate::store::AuthStore;

/// How often the ended sessions are read.
pub const EVERY: Duration = Duration::from_millis(500);

/// How far back each read looks again: a session ended by a transaction that began before the
/// last read and committed after it is still found.
const OVERLAP_MS: i64 = 10_000;

/// Ended sessions by id, with when each would have expired.
#[derive(Debug, Default)]
pub struct Revoked {
    sessions: RwLock<HashMap<String, i64>>,
}

impl Revoked {
    pub fn contains(&self, session_id: &str) -> bool {
        self.sessions.read().contains_key(session_id)
    }

    /// Records an ended session at once (this process ended it).
    pub fn insert(&self, session_id: &str, expires_at_ms: i64) {
        self.sessions.write().insert(session_id.to_owned(), expires_at_ms);
    }

    fn absorb(&self, ended: Vec<(String, i64)>, now_ms: i64) {
        let mut sessions = self.sessions.write();
        sessions.extend(ended);
        sessions.retain(|_, expires_at_ms| *expires_at_ms > now_ms);
    }
}

/// Keeps `revoked` up to date from `store` until `shutdown`.
pub fn watch(store: Arc<dyn AuthStore>, revoked: Arc<Revoked>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        // The first read takes every ended session not yet expired.
        let mut since_ms = 0;
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now_ms = unix_ms(SystemTime::now());
            match store.ended_since(since_ms, now_ms).await {
                Ok(ended) => {
                    revoked.absorb(ended, now_ms);
                    since_ms = now_ms - OVERLAP_MS;
                }
                Err(e) => redstore_platform::warn_throttled!(error = %e, "cannot read the sessions that ended"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_are_kept_until_they_would_have_expired() {
        let revoked = Revoked::default();
        revoked.absorb(vec![("a".into(), 2_000), ("b".into(), 5_000)], 1_000);
        assert!(revoked.contains("a") && revoked.contains("b"));
        revoked.absorb(Vec::new(), 3_000);
        assert!(!revoked.contains("a"), "expired anyway: forgotten");
        assert!(revoked.contains("b"));
    }
}
