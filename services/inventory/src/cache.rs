//! The Redis stock cache of the distributed shape, and its projector.
//!
//! Each store has one hash, `rs:{<store>}:stock`: field = sku, value = quantity on hand, plus the
//! field `_seq`, the store sequence of the newest event the hash reflects. Every projected
//! `inventory.changed` event is also published, Protobuf-encoded, on the store's channel
//! `rs:{<store>}:stock:events`, which every stream-bridge replica subscribes to. The `{<store>}`
//! hash tag keeps one store's keys and channel in one cluster slot.
//!
//! The cache is a projection of the event log, never its source: Redis being down makes
//! [`StockCache::project`] fail within a few seconds (short connection and response timeouts, no
//! long reconnect loop), so the consumer that feeds it retries later and nothing waits on Redis.

use std::time::Duration;

use prost::Message as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redstore_platform::error::{Error, Result};
use redstore_platform::eventlog::is_stock_loaded;
use redstore_proto::events::EventEnvelope;
use redstore_proto::events::event_envelope::Payload;
use redstore_proto::stream::InventorySnapshot;

/// The hash field that holds the store sequence the hash reflects.
pub const SEQ_FIELD: &str = "_seq";

const CHANNEL_PREFIX: &str = "rs:{";
const CHANNEL_SUFFIX: &str = "}:stock:events";

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis may take to answer one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound of one cache operation, retry included.
const OPERATION_DEADLINE: Duration = Duration::from_millis(2500);

/// The store's stock hash.
pub fn stock_key(store_id: &str) -> String {
    format!("rs:{{{store_id}}}:stock")
}

/// The store's event channel.
pub fn events_channel(store_id: &str) -> String {
    format!("{CHANNEL_PREFIX}{store_id}{CHANNEL_SUFFIX}")
}

/// The store an [`events_channel`] belongs to.
pub fn store_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(CHANNEL_PREFIX)?.strip_suffix(CHANNEL_SUFFIX).filter(|s| !s.is_empty())
}

/// Applies an event to the stock hash and publishes it, atomically, only when it is newer than
/// the hash (`_seq`) and, when asked (ARGV[4] = 1), only when it is the very next one. A script
/// runs as one unit, as MULTI/EXEC would, and can also make the writes conditional. Returns 0
/// when applied; for an event that was stale or a duplicate, the hash's own sequence; -1 for an
/// event that is not the next one when only that was asked for.
///
/// KEYS[1] stock hash; ARGV[1] store_seq, ARGV[2] channel, ARGV[3] payload, ARGV[4] next only
/// (1 or 0), then sku, quantity pairs.
const PROJECT_SCRIPT: &str = r"
local seq = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], '_seq') or '0') or 0
if seq <= current then
  return current
end
if ARGV[4] == '1' and seq > current + 1 then
  return -1
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], '_seq', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
";

/// Replaces a store's hash with a snapshot when the hash is behind the snapshot's sequence (a
/// snapshot taken for an `inventory.stock_loaded` event, which names no levels) or ahead of it
/// (the event log the hash was projected from is gone: the database was restored or reset), and
/// then publishes a message if it is given one. Returns 1 when it replaced the hash, else 0.
///
/// KEYS[1] stock hash; ARGV[1] the snapshot's sequence, ARGV[2] `behind` or `ahead` (when to
/// replace), ARGV[3] channel and ARGV[4] payload (an empty channel: publish nothing), then sku,
/// quantity pairs.
const REPLACE_SCRIPT: &str = r"
local head = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], '_seq') or '0') or 0
local replace = (ARGV[2] == 'behind' and current < head) or (ARGV[2] == 'ahead' and current > head)
if not replace then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], '_seq', ARGV[1])
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
";

/// What a pipeline of projections found besides the events it applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Projection {
    /// The stores with an event not projected for being stale, each with its hash's sequence.
    pub stale: Vec<(String, u64)>,
    /// The stores with an event not projected because the one before it is missing from the hash,
    /// or because it is an `inventory.stock_loaded` event, which only a snapshot projects
    /// ([`StockCache::load`], from the log by `projector::catch_up`); the store's later events in
    /// the pipeline are left for the same catch-up.
    pub gaps: Vec<String>,
}

/// The Redis stock cache: projects inventory events into per-store hashes and reads them.
#[derive(Clone)]
pub struct StockCache {
    conn: ConnectionManager,
    script: redis::Script,
    replace: redis::Script,
}

impl std::fmt::Debug for StockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockCache").finish_non_exhaustive()
    }
}

impl StockCache {
    /// A cache over `redis_url` (`redis://host:port[/db]`). Connects lazily, so a Redis that is
    /// down at start-up delays nothing; must be called inside a tokio runtime.
    pub fn new(redis_url: &str) -> Result<Self> {
        let client = redis::Client::open(redis_url).map_err(|e| Error::invalid("redis_url", e.to_string()))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Internal(anyhow::anyhow!("the redis stock cache needs a tokio runtime")));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // One attempt per reconnection: a caller sees an error at once rather than waiting
            // out a backoff; the next call tries again.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self { conn, script: redis::Script::new(PROJECT_SCRIPT), replace: redis::Script::new(REPLACE_SCRIPT) })
    }

    /// Projects one event: for `inventory.changed`, writes every changed sku's quantity and the
    /// event's sequence into the store's hash and publishes the encoded envelope on the store's
    /// channel, in one atomic step, unless the hash already reflects this sequence or a later one
    /// (a redelivery or an out-of-order event never moves the hash backwards). Other events are
    /// ignored. Fails within a few seconds when Redis is unreachable.
    ///
    /// Returns the hash's sequence when the event was not projected for being stale: a hash
    /// ahead of the log is one from a history since lost (the database restored or reset), which
    /// `projector::reconcile` mends.
    pub async fn project(&self, event: &EventEnvelope) -> Result<Option<u64>> {
        let Some(invocation) = self.invocation(event, false)? else {
            return Ok(None);
        };
        let stale: u64 = self
            .with_retry(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if stale > 0 {
            tracing::debug!(store_id = %event.store_id, store_seq = event.store_seq, "stale inventory event not projected");
        }
        Ok((stale > 0).then_some(stale))
    }

    /// Projects many events as [`project`](Self::project) does each, in order, in one pipeline
    /// (one round trip). An event that cannot be projected fails the call before anything is sent;
    /// when Redis fails midway, the events projected already are skipped as stale on a retry.
    /// Returns the stores with a stale event, each with its hash's sequence, as `project` does.
    pub async fn project_all(&self, events: &[EventEnvelope]) -> Result<Vec<(String, u64)>> {
        Ok(self.pipeline(events, false).await?.stale)
    }

    /// [`project_all`](Self::project_all), but an event is projected only when it is the next one
    /// of its store's hash (`_seq + 1`): a hash never skips an event, whose skus would keep the
    /// quantities of before it. The stores where an event was missing come back in
    /// [`Projection::gaps`]; the events they lack are in the event log (`projector::catch_up`).
    pub async fn project_next(&self, events: &[EventEnvelope]) -> Result<Projection> {
        self.pipeline(events, true).await
    }

    async fn pipeline(&self, events: &[EventEnvelope], next_only: bool) -> Result<Projection> {
        let mut invocations = Vec::with_capacity(events.len());
        let mut stores = Vec::with_capacity(events.len());
        let mut loaded: Vec<&str> = Vec::new();
        for event in events {
            if is_stock_loaded(event) && !loaded.contains(&event.store_id.as_str()) {
                loaded.push(&event.store_id);
            }
            if loaded.contains(&event.store_id.as_str()) {
                continue;
            }
            if let Some(invocation) = self.invocation(event, next_only)? {
                invocations.push(invocation);
                stores.push(event.store_id.as_str());
            }
        }
        let mut projection =
            Projection { gaps: loaded.iter().map(|s| (*s).to_owned()).collect(), ..Default::default() };
        if invocations.is_empty() {
            return Ok(projection);
        }
        let answers: Vec<i64> = self
            .with_retry(|mut conn| {
                let mut pipe = redis::pipe();
                // SCRIPT LOAD first: EVALSHA in a pipeline does not load a script Redis lacks
                // (after a restart, say); loading a loaded script is a no-op.
                pipe.load_script(&self.script).ignore();
                for invocation in &invocations {
                    pipe.invoke_script(invocation);
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        for (store, answer) in stores.into_iter().zip(answers) {
            if answer < 0 {
                if !projection.gaps.iter().any(|s| s == store) {
                    projection.gaps.push(store.to_owned());
                }
                continue;
            }
            let Ok(version @ 1..) = u64::try_from(answer) else { continue };
            match projection.stale.iter_mut().find(|(s, _)| s == store) {
                Some((_, seen)) => *seen = (*seen).max(version),
                None => projection.stale.push((store.to_owned(), version)),
            }
        }
        Ok(projection)
    }

    /// Projects an `inventory.stock_loaded` event with a snapshot of its store read after it
    /// (`snapshot.as_of_seq` at least the event's sequence): the hash becomes the snapshot and the
    /// event is published, unless the hash is at the snapshot's sequence or later already.
    /// Returns whether it loaded the snapshot.
    pub async fn load(&self, event: &EventEnvelope, snapshot: &InventorySnapshot) -> Result<bool> {
        let mut invocation = self.replace.key(stock_key(&snapshot.store_id));
        invocation
            .arg(snapshot.as_of_seq)
            .arg("behind")
            .arg(events_channel(&event.store_id))
            .arg(event.encode_to_vec());
        Ok(self.with_levels(invocation, snapshot).await? == 1)
    }

    /// Publishes an event on its store's channel as it is, without touching the hash.
    pub async fn announce(&self, event: &EventEnvelope) -> Result<()> {
        let channel = events_channel(&event.store_id);
        let payload = event.encode_to_vec();
        self.with_retry(|mut conn| {
            let (channel, payload) = (&channel, &payload);
            async move { redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<()>(&mut conn).await }
        })
        .await
    }

    /// The script call that projects `event`; `None` for an event the cache ignores.
    fn invocation(&self, event: &EventEnvelope, next_only: bool) -> Result<Option<redis::ScriptInvocation<'_>>> {
        let Some(Payload::InventoryChanged(changed)) = &event.payload else {
            return Ok(None);
        };
        if event.store_id.is_empty() || event.store_seq == 0 {
            return Err(Error::invalid("event", "an inventory event needs a store_id and a store_seq"));
        }
        let mut invocation = self.script.key(stock_key(&event.store_id));
        invocation.arg(event.store_seq).arg(events_channel(&event.store_id)).arg(event.encode_to_vec());
        invocation.arg(u8::from(next_only));
        for change in &changed.changes {
            if change.sku == SEQ_FIELD {
                tracing::warn!(store_id = %event.store_id, sku = %change.sku, "sku collides with the cache version field; not cached");
                continue;
            }
            invocation.arg(&change.sku).arg(change.quantity_after);
        }
        Ok(Some(invocation))
    }

    /// Rebuilds the store's hash from `snapshot` when the hash is ahead of it (its `_seq` names an
    /// event the log does not have: the database was restored or reset), so that later events are
    /// projected again instead of being skipped as stale until their numbers pass the old ones.
    /// Returns whether it rebuilt the hash.
    pub async fn rebuild_if_ahead(&self, snapshot: &InventorySnapshot) -> Result<bool> {
        let mut invocation = self.replace.key(stock_key(&snapshot.store_id));
        invocation.arg(snapshot.as_of_seq).arg("ahead").arg("").arg("");
        Ok(self.with_levels(invocation, snapshot).await? == 1)
    }

    /// Runs a script that replaces a store's hash, its arguments ending with the snapshot's levels
    /// (sku, quantity pairs), for its integer answer.
    async fn with_levels(
        &self,
        mut invocation: redis::ScriptInvocation<'_>,
        snapshot: &InventorySnapshot,
    ) -> Result<i64> {
        for item in snapshot.items.iter().filter(|i| i.sku != SEQ_FIELD) {
            invocation.arg(&item.sku).arg(item.quantity);
        }
        self.with_retry(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    /// The cached quantity of a sku in a store, if the cache has it.
    pub async fn stock(&self, store_id: &str, sku: &str) -> Result<Option<i64>> {
        if sku == SEQ_FIELD {
            return Ok(None);
        }
        let key = stock_key(store_id);
        self.with_retry(|mut conn| {
            let (key, sku) = (&key, sku);
            async move { redis::cmd("HGET").arg(key).arg(sku).query_async(&mut conn).await }
        })
        .await
    }

    /// The store sequence the store's cached stock reflects, if the cache has the store.
    pub async fn version(&self, store_id: &str) -> Result<Option<u64>> {
        let key = stock_key(store_id);
        self.with_retry(|mut conn| {
            let key = &key;
            async move { redis::cmd("HGET").arg(key).arg(SEQ_FIELD).query_async(&mut conn).await }
        })
        .await
    }

    /// [`StockCache::version`] of many stores in one pipeline.
    pub async fn versions(&self, stores: &[String]) -> Result<Vec<Option<u64>>> {
        let mut pipe = redis::pipe();
        for store in stores {
            pipe.cmd("HGET").arg(stock_key(store)).arg(SEQ_FIELD);
        }
        self.with_retry(|mut conn| {
            let pipe = &pipe;
            async move { pipe.query_async(&mut conn).await }
        })
        .await
    }

    /// Runs `op`, once more when the first attempt found the connection broken (the manager has
    /// started a new one by then, e.g. after a Redis restart), all within a short deadline.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            match op(self.conn.clone()).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
                    op(self.conn.clone()).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(OPERATION_DEADLINE, attempt).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(Error::unavailable("the redis stock cache did not answer in time")),
        }
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::unavailable(format!("the redis stock cache is unavailable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_store_hash_tag() {
        assert_eq!(stock_key("store-1"), "rs:{store-1}:stock");
        assert_eq!(events_channel("store-1"), "rs:{store-1}:stock:events");
        assert_eq!(store_of_channel("rs:{store-1}:stock:events"), Some("store-1"));
        assert_eq!(store_of_channel("rs:{}:stock:events"), None);
        assert_eq!(store_of_channel("rs:{store-1}:stock"), None);
    }
}
