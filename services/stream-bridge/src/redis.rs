//! The live feed of the distributed shape: inventory events from Redis pub/sub.
//!
//! The inventory cache projector (`redstore_inventory::cache`) publishes every projected event,
//! Protobuf-encoded, on its store's channel `rs:{<store>}:stock:events`. Each bridge replica
//! `SUBSCRIBE`s to the channels of the stores its watchers watch, and only those: a store gains
//! its channel when its first watcher arrives and loses it within a few seconds of its last
//! leaving, so a replica never receives the events of a store none of its (authorised) watchers
//! may see. Every replica watching a store receives all of its events, so terminals may connect
//! to any replica.
//!
//! Pub/sub is lossy: a slow subscriber is dropped and nothing is delivered while disconnected or
//! before a channel is subscribed. Watchers notice a gap by sequence at the next event and refill
//! from the event log, but a loss at the *end* (missed events and nothing after them) would show
//! only at the store's next change. So once a subscription is confirmed — after every
//! (re)connect, and for each newly watched store — the bridge catches the store up from the event
//! log: from the last sequence it published for the store, or, for a store it has published
//! nothing for, from the newest sequence the cache projected (the stock hash's `_seq`, else the
//! log's head) — enough, since a watcher that is further behind sees a gap and refills itself.
//! Redis being down delays live updates and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use redstore_inventory::InventoryStore;
use redstore_inventory::cache::{self, SEQ_FIELD};
use redstore_proto::events::EventEnvelope;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::feed::LiveFeed;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A silent connection is checked this often, so a dead peer is noticed without traffic.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How often channels of stores nobody watches any more are unsubscribed.
const PRUNE_EVERY: Duration = Duration::from_secs(2);
const CATCH_UP_PAGE: u32 = 500;

/// Starts feeding `feed` from Redis pub/sub at `redis_url` until `shutdown`, reconnecting with
/// backoff whenever the connection fails. Returns at once (the connection is made in the
/// background); fails only for a malformed URL or outside a tokio runtime.
pub fn start_feed(
    redis_url: &str,
    inventory: Arc<dyn InventoryStore>,
    feed: LiveFeed,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = ::redis::Client::open(redis_url).context("invalid redis url")?;
    let runtime = tokio::runtime::Handle::try_current().context("the redis live feed needs a tokio runtime")?;
    let bridge = Bridge { client, inventory, feed, last: HashMap::new(), subscribed: HashSet::new(), commands: None };
    runtime.spawn(bridge.run(shutdown));
    Ok(())
}

struct Bridge {
    client: ::redis::Client,
    inventory: Arc<dyn InventoryStore>,
    feed: LiveFeed,
    /// The last sequence handed to the feed, per subscribed store.
    last: HashMap<String, u64>,
    /// The stores whose channel the current connection is subscribed to.
    subscribed: HashSet<String>,
    /// A command connection for reading projected versions during catch-up, made on demand.
    commands: Option<MultiplexedConnection>,
}

enum Ended {
    Shutdown,
    Disconnected(String),
}

impl Bridge {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut reconnect = false;
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = self.subscribe() => s,
            };
            match subscribed {
                Ok(pubsub) => {
                    if reconnect {
                        tracing::info!(stores = self.subscribed.len(), "redis live feed reconnected");
                    } else {
                        tracing::info!(stores = self.subscribed.len(), "redis live feed connected");
                    }
                    reconnect = true;
                    let since = Instant::now();
                    match self.pump(pubsub, &shutdown).await {
                        Ended::Shutdown => return,
                        Ended::Disconnected(reason) => {
                            tracing::warn!(reason = %reason, "redis live feed disconnected");
                        }
                    }
                    self.commands = None;
                    if since.elapsed() >= STABLE_AFTER {
                        backoff = MIN_BACKOFF;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "redis live feed cannot subscribe");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(backoff)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects and subscribes to the watched stores' channels; once this returns, every later
    /// publish on them reaches the connection.
    async fn subscribe(&mut self) -> anyhow::Result<PubSub> {
        self.subscribed.clear();
        let mut pubsub = timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .context("connecting timed out")?
            .context("cannot connect")?;
        let stores = self.feed.watched_stores();
        if !stores.is_empty() {
            let channels: Vec<String> = stores.iter().map(|s| cache::events_channel(s)).collect();
            timeout(RESPONSE_TIMEOUT, pubsub.subscribe(&channels))
                .await
                .context("subscribe timed out")?
                .context("subscribe failed")?;
        }
        self.subscribed.extend(stores);
        self.last.retain(|store, _| self.subscribed.contains(store));
        Ok(pubsub)
    }

    /// Catches up, then forwards messages until the connection fails or `shutdown`, following
    /// the watched stores as watchers come and go.
    async fn pump(&mut self, pubsub: PubSub, shutdown: &CancellationToken) -> Ended {
        let (mut sink, mut messages) = pubsub.split();
        // Messages published from now on queue up in `messages` while the log is read.
        let mut caught_up = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            ok = self.catch_up() => ok,
        };
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let feed = self.feed.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                msg = messages.next() => match msg {
                    Some(msg) => self.on_message(&msg),
                    None => return Ended::Disconnected("connection closed".into()),
                },
                _ = feed.newly_watched() => {
                    let followed = tokio::select! {
                        _ = shutdown.cancelled() => return Ended::Shutdown,
                        r = self.follow_watched(&mut sink) => r,
                    };
                    match followed {
                        Ok(ok) => caught_up &= ok,
                        Err(e) => return Ended::Disconnected(format!("{e:#}")),
                    }
                }
                _ = prune.tick() => {
                    if let Err(e) = self.unfollow_unwatched(&mut sink).await {
                        return Ended::Disconnected(format!("{e:#}"));
                    }
                }
                _ = ping.tick() => {
                    match timeout(RESPONSE_TIMEOUT, sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Disconnected(format!("ping failed: {e}")),
                        Err(_) => return Ended::Disconnected("ping timed out".into()),
                    }
                    if !caught_up {
                        caught_up = tokio::select! {
                            _ = shutdown.cancelled() => return Ended::Shutdown,
                            ok = self.catch_up() => ok,
                        };
                    }
                }
            }
        }
    }

    /// Subscribes to the channels of stores that gained watchers, then catches each up from the
    /// log (what was published before the subscription is missed). Fails when Redis does not
    /// confirm; answers whether every new store was caught up.
    async fn follow_watched(&mut self, sink: &mut PubSubSink) -> anyhow::Result<bool> {
        let new: Vec<String> =
            self.feed.watched_stores().into_iter().filter(|s| !self.subscribed.contains(s)).collect();
        if new.is_empty() {
            return Ok(true);
        }
        let channels: Vec<String> = new.iter().map(|s| cache::events_channel(s)).collect();
        timeout(RESPONSE_TIMEOUT, sink.subscribe(&channels))
            .await
            .context("subscribe timed out")?
            .context("subscribe failed")?;
        let mut ok = true;
        for store in new {
            self.subscribed.insert(store.clone());
            ok &= self.catch_up_store_or_warn(&store).await;
        }
        Ok(ok)
    }

    /// Unsubscribes from the channels of stores nobody here watches any more.
    async fn unfollow_unwatched(&mut self, sink: &mut PubSubSink) -> anyhow::Result<()> {
        let watched: HashSet<String> = self.feed.watched_stores().into_iter().collect();
        let gone: Vec<String> = self.subscribed.difference(&watched).cloned().collect();
        if gone.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = gone.iter().map(|s| cache::events_channel(s)).collect();
        timeout(RESPONSE_TIMEOUT, sink.unsubscribe(&channels))
            .await
            .context("unsubscribe timed out")?
            .context("unsubscribe failed")?;
        for store in gone {
            self.subscribed.remove(&store);
            // Watched again later, it starts afresh from what the cache projected.
            self.last.remove(&store);
        }
        Ok(())
    }

    fn on_message(&mut self, msg: &::redis::Msg) {
        let channel = msg.get_channel_name();
        let Some(store) = cache::store_of_channel(channel) else {
            tracing::warn!(channel, "redis live feed message on an unexpected channel");
            return;
        };
        if !self.subscribed.contains(store) {
            // Sent before an unsubscribe took effect.
            return;
        }
        let event = match EventEnvelope::decode(msg.get_payload_bytes()) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(channel, error = %e, "redis live feed cannot decode an event");
                return;
            }
        };
        if event.store_id != store {
            tracing::warn!(channel, store_id = %event.store_id, "redis live feed event does not belong to its channel's store");
            return;
        }
        self.publish(event);
    }

    /// Hands an event to the feed unless this bridge already handed it (or a later one) over.
    fn publish(&mut self, event: EventEnvelope) {
        match self.last.get_mut(&event.store_id) {
            Some(last) if event.store_seq <= *last => return,
            Some(last) => *last = event.store_seq,
            None => {
                self.last.insert(event.store_id.clone(), event.store_seq);
            }
        }
        self.feed.publish(Arc::new(event));
    }

    /// Publishes what every subscribed store's watchers may have missed; false if a store failed.
    async fn catch_up(&mut self) -> bool {
        let mut ok = true;
        for store in self.subscribed.clone() {
            ok &= self.catch_up_store_or_warn(&store).await;
        }
        ok
    }

    async fn catch_up_store_or_warn(&mut self, store: &str) -> bool {
        match self.catch_up_store(store).await {
            Ok(()) => true,
            Err(e) => {
                redstore_platform::warn_throttled!(store_id = %store, error = %format!("{e:#}"), "redis live feed cannot catch up a store");
                false
            }
        }
    }

    async fn catch_up_store(&mut self, store: &str) -> anyhow::Result<()> {
        let mut after = match self.last.get(store) {
            Some(last) => *last,
            None => self.newest_seq(store).await?.saturating_sub(1),
        };
        loop {
            let page =
                self.inventory.events_after(store, after, CATCH_UP_PAGE).await.context("reading the event log")?;
            let full = page.len() == CATCH_UP_PAGE as usize;
            for event in page {
                after = event.store_seq;
                self.publish(event);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The newest sequence of a store this bridge has published nothing for: the one the cache
    /// projected, else the log's head.
    async fn newest_seq(&mut self, store: &str) -> anyhow::Result<u64> {
        match self.projected_seq(store).await {
            Ok(Some(seq)) => return Ok(seq),
            Ok(None) => {}
            Err(e) => {
                self.commands = None;
                redstore_platform::warn_throttled!(store_id = %store, error = %format!("{e:#}"), "redis live feed cannot read the projected version");
            }
        }
        Ok(self.inventory.snapshot(store).await.context("reading the store's snapshot")?.as_of_seq)
    }

    async fn projected_seq(&mut self, store: &str) -> anyhow::Result<Option<u64>> {
        let conn = match &mut self.commands {
            Some(conn) => conn,
            None => {
                let config = ::redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
                self.commands.insert(conn)
            }
        };
        let seq: Option<u64> =
            ::redis::cmd("HGET").arg(cache::stock_key(store)).arg(SEQ_FIELD).query_async(conn).await?;
        Ok(seq)
    }
}

/// Between half and all of `backoff`, so replicas do not reconnect in lockstep.
fn jittered(backoff: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let half = backoff / 2;
    half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
}
