//! In-process fan-out of committed inventory events, per store, and the gap-free watch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use redstore_inventory::InventoryStore;
use redstore_platform::error::{Error, Result};
use redstore_platform::eventlog::is_stock_loaded;
use redstore_platform::{Db, Topic};

use futures::Stream;
use redstore_proto::events::EventEnvelope;
use redstore_proto::stream::InventorySnapshot;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// Live events a slow watcher may fall behind by before it refills from the log.
const PER_STORE_BUFFER: usize = 1024;
const CATCH_UP_PAGE: u32 = 500;
/// How often the PostgreSQL-fed live feed sweeps its watched stores for events it was not told of.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the PostgreSQL feed waits before trying to LISTEN again.
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Routes committed inventory events to per-store broadcast channels.
#[derive(Clone, Default)]
pub struct LiveFeed {
    stores: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<EventEnvelope>>>>>,
    /// Woken when a store gains its first watcher, so a source that follows only the watched
    /// stores (the Redis bridge) starts following it at once.
    newly_watched: Arc<Notify>,
}

impl LiveFeed {
    /// Starts routing the embedded database's commits into the feed until `shutdown`.
    pub fn from_embedded(db: &Db, shutdown: CancellationToken) -> Self {
        let feed = Self::default();
        let mut commits = db.subscribe_commits();
        let router = feed.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    b = commits.recv() => b,
                };
                match batch {
                    Ok(batch) => {
                        for c in batch.iter().filter(|c| c.topic == Topic::Inventory) {
                            router.publish(c.envelope.clone());
                        }
                    }
                    // Watchers detect the gap by sequence and refill from the log.
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(skipped = n, "live feed lagged"),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            // Dropping the senders ends every watcher's live phase.
            router.stores.lock().clear();
        });
        feed
    }

    /// Starts feeding from PostgreSQL: every `NOTIFY redstore_inventory` ("store:seq", sent by the
    /// outbox on commit) makes it read that store's new events and hand them to its watchers.
    /// Notifications are hints: watchers detect gaps by sequence and refill from the outbox, and
    /// watched stores are swept every few seconds, so a notification lost after a commit or to a
    /// reconnect delays that store's changes by at most one sweep.
    pub fn from_postgres(
        pool: sqlx::PgPool,
        inventory: Arc<dyn InventoryStore>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let feed = Self::default();
        let router = feed.clone();
        tokio::spawn(async move {
            // Until it listens, nothing is fed: keep trying (PostgreSQL may be restarting), and end
            // the watchers' streams if the server stops first rather than leave them hanging.
            let mut listener = loop {
                let listening = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen("redstore_inventory").await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                match listening.await {
                    Ok(listener) => break listener,
                    Err(e) => tracing::warn!(error = %e, "live feed cannot LISTEN redstore_inventory yet; retrying"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        router.stores.lock().clear();
                        return;
                    }
                    _ = tokio::time::sleep(LISTEN_RETRY) => {}
                }
            };
            // The newest sequence handed to each store's watchers. Notifications are sent after
            // commit, so one can be lost to a crash or a reconnect: every few seconds the watched
            // stores whose log moved past it are swept from where they stand, so a lost
            // notification only delays.
            let mut last: HashMap<String, u64> = HashMap::new();
            let mut sweep = tokio::time::interval(SWEEP);
            loop {
                let due: Vec<(String, Option<u64>)> = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = sweep.tick() => {
                        let watched = router.watched_stores();
                        // A store no longer watched starts afresh when it is watched again.
                        let watching: std::collections::HashSet<&str> = watched.iter().map(String::as_str).collect();
                        last.retain(|store, _| watching.contains(store.as_str()));
                        // The heads of every watched store in one statement: only the stores whose
                        // log moved past what their watchers were handed are read.
                        match redstore_platform::pg::store_heads(&pool, "inventory", &watched).await {
                            Ok(heads) => watched
                                .into_iter()
                                .filter_map(|store| {
                                    let head = heads.get(&store).copied().unwrap_or(0);
                                    let behind = head > 0 && last.get(&store).is_none_or(|l| head > *l);
                                    behind.then_some((store, Some(head)))
                                })
                                .collect(),
                            Err(e) => {
                                redstore_platform::warn_throttled!(error = %e, "live feed sweep cannot read the store heads; reading each store");
                                watched.into_iter().map(|s| (s, None)).collect()
                            }
                        }
                    }
                    n = listener.recv() => match n {
                        Ok(n) => match n.payload().rsplit_once(':').map(|(s, q)| (s.to_owned(), q.parse::<u64>())) {
                            Some((store, Ok(seq))) if router.stores.lock().contains_key(&store) => vec![(store, Some(seq))],
                            _ => Vec::new(),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "live feed notification stream interrupted");
                            Vec::new()
                        }
                    },
                };
                for (store, notified) in due {
                    let after = match (last.get(&store).copied(), notified) {
                        // Handed over already (a sweep got there first).
                        (Some(l), Some(seq)) if seq <= l => continue,
                        (Some(l), Some(_)) => l,
                        (Some(l), None) => l,
                        (None, Some(seq)) => seq.saturating_sub(1),
                        // Never published for this store: republish its newest event (watchers skip
                        // what they have, and see a gap for anything older they missed).
                        (None, None) => match inventory.snapshot(&store).await {
                            Ok(snap) => snap.as_of_seq.saturating_sub(1),
                            Err(e) => {
                                redstore_platform::warn_throttled!(error = %e, store_id = %store, "live feed sweep cannot read the store");
                                continue;
                            }
                        },
                    };
                    match inventory.events_after(&store, after, CATCH_UP_PAGE).await {
                        Ok(events) => {
                            for e in events {
                                last.insert(store.clone(), e.store_seq);
                                router.publish(Arc::new(e));
                            }
                        }
                        Err(e) => {
                            redstore_platform::warn_throttled!(error = %e, store_id = %store, "live feed cannot read new events")
                        }
                    }
                }
            }
            router.stores.lock().clear();
        });
        Ok(feed)
    }

    /// Hands a committed inventory event to the store's watchers.
    pub fn publish(&self, event: Arc<EventEnvelope>) {
        let mut stores = self.stores.lock();
        let Some(tx) = stores.get(&event.store_id) else { return };
        let span = tracing::info_span!(
            target: "redstore::trace",
            "push",
            otel.name = "inventory.changed push",
            otel.kind = "consumer",
            messaging.operation.type = "process",
            redstore.watchers = tx.receiver_count(),
        );
        redstore_platform::trace::set_parent(&span, &event.trace_parent);
        let _entered = span.enter();
        if tx.send(event.clone()).is_err() {
            // No watcher is left for this store.
            stores.remove(&event.store_id);
        } else if let Some(age) = redstore_platform::metrics::event_age_seconds(&event) {
            // From the change's commit to its hand-over to the terminals' streams.
            metrics::histogram!("redstore_event_delivery_lag_seconds").record(age);
        }
    }

    /// The stores that have at least one watcher.
    pub fn watched_stores(&self) -> Vec<String> {
        self.stores.lock().iter().filter(|(_, tx)| tx.receiver_count() > 0).map(|(store, _)| store.clone()).collect()
    }

    pub fn subscribe(&self, store_id: &str) -> broadcast::Receiver<Arc<EventEnvelope>> {
        let mut stores = self.stores.lock();
        let tx = stores.entry(store_id.to_owned()).or_insert_with(|| broadcast::channel(PER_STORE_BUFFER).0);
        if tx.receiver_count() == 0 {
            self.newly_watched.notify_one();
        }
        tx.subscribe()
    }

    /// Resolves once a store has gained its first watcher since the last call (or since the
    /// feed was made, if nobody has called yet).
    pub async fn newly_watched(&self) {
        self.newly_watched.notified().await
    }
}

/// What a watcher receives.
#[derive(Clone, Debug)]
pub enum Item {
    Snapshot(InventorySnapshot),
    Event(Arc<EventEnvelope>),
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Events with a sequence above this one.
    After(u64),
    /// A snapshot of the store's stock, then every event after it.
    Snapshot,
}

/// Checks that the store exists, so a typo is NOT_FOUND rather than a silent empty stream.
pub async fn require_store(store: &dyn InventoryStore, store_id: &str) -> Result<()> {
    store.get_store(store_id).await.map(|_| ())
}

/// A store's changes as a stream, until `shutdown` (or until its reader drops it: the client went
/// away). It subscribes to the store's live feed at once, before it reads anything, so nothing
/// committed in between is missed; then it yields the snapshot (if asked for), the logged events
/// after the start, and the live ones in order, refilling from the log whenever it sees a gap or
/// falls behind the feed.
///
/// It never ends by itself while the server runs. When it must end — the server is shutting down,
/// or the stock or the log cannot be read — its last item is the error (UNAVAILABLE), so a
/// terminal can tell "reconnect and resume" from a stream that is done.
///
/// A stream, not a task writing into a channel: the connection's own task polls it, so a live event
/// wakes one task per watcher instead of two, which is most of the fan-out's cost at thousands of
/// watchers. A slow reader is not written ahead of: it falls behind the feed, and refills.
pub fn watch(
    inventory: Arc<dyn InventoryStore>,
    feed: &LiveFeed,
    store_id: String,
    start: Start,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Item>> + Send + 'static {
    let live = feed.subscribe(&store_id);
    let watch = Watch {
        inventory,
        store_id,
        live,
        shutdown,
        start: Some(start),
        last: 0,
        behind: false,
        queue: VecDeque::new(),
    };
    futures::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        match watch.next().await {
            Ok(item) => Some((Ok(item), Some(watch))),
            Err(end) => Some((Err(end), None)),
        }
    })
}

/// Why a watch ended: the terminal reconnects (with the last sequence it has) and resumes.
fn ended(why: &str) -> Error {
    Error::unavailable(format!("{why}; reconnect and resume after the last sequence received"))
}

/// The state of one [`watch`].
struct Watch {
    inventory: Arc<dyn InventoryStore>,
    store_id: String,
    live: broadcast::Receiver<Arc<EventEnvelope>>,
    shutdown: CancellationToken,
    /// Where to start, until it has started.
    start: Option<Start>,
    /// The newest sequence handed out.
    last: u64,
    /// Whether the log may hold events after `last` not yet read.
    behind: bool,
    /// What was read and not yet handed out.
    queue: VecDeque<Item>,
}

impl Watch {
    /// The next item; an error ends the watch.
    async fn next(&mut self) -> Result<Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                if matches!(&item, Item::Event(e) if is_stock_loaded(e)) {
                    self.reload().await?;
                    continue;
                }
                return Ok(item);
            }
            if self.shutdown.is_cancelled() {
                return Err(ended("the server is shutting down"));
            }
            if let Some(start) = self.start.take() {
                self.begin(start).await?;
                continue;
            }
            if self.behind {
                self.behind = self.catch_up().await?;
                continue;
            }
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ended("the server is shutting down")),
                n = self.live.recv() => n,
            };
            match next {
                Ok(event) if event.store_seq <= self.last => {}
                Ok(event) if event.store_seq == self.last + 1 && is_stock_loaded(&event) => self.reload().await?,
                Ok(event) if event.store_seq == self.last + 1 => {
                    self.last = event.store_seq;
                    return Ok(Item::Event(event));
                }
                // A gap or a lag: the log has everything, in order.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return Err(ended("the live feed stopped")),
            }
        }
    }

    /// Takes the start: where the watch resumes, or a snapshot; then the log is read from there.
    async fn begin(&mut self, start: Start) -> Result<()> {
        let (inventory, store_id) = (self.inventory.as_ref(), self.store_id.as_str());
        let start = match start {
            Start::After(seq) if !in_log(inventory, store_id, seq).await => {
                // The client saw an event the log does not have (the database was restored or
                // reset since): resuming after it would hold back every change up to that number.
                // Its state is unknown, so it starts again from a snapshot, as a new watcher does.
                tracing::info!(store_id, resume_after = seq, "resume point is not in the log; sending a snapshot");
                Start::Snapshot
            }
            start => start,
        };
        match start {
            Start::After(seq) => self.last = seq,
            Start::Snapshot => match inventory.snapshot(store_id).await {
                Ok(snap) => {
                    self.last = snap.as_of_seq;
                    self.queue.push_back(Item::Snapshot(snap));
                }
                Err(e) => {
                    redstore_platform::warn_throttled!(error = %e, "snapshot failed");
                    return Err(ended("the store's stock cannot be read now"));
                }
            },
        }
        self.behind = true;
        Ok(())
    }

    /// A bulk stock load (an `inventory.stock_loaded` event) names no levels: the watcher gets a
    /// snapshot of the store read after it instead, then the events after the snapshot, as a new
    /// watcher does.
    async fn reload(&mut self) -> Result<()> {
        self.queue.clear();
        self.begin(Start::Snapshot).await
    }

    /// Reads a page of the log after `last` into the queue; whether there may be more.
    async fn catch_up(&mut self) -> Result<bool> {
        let page = match self.inventory.events_after(&self.store_id, self.last, CATCH_UP_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                redstore_platform::warn_throttled!(error = %e, "catch-up read failed");
                return Err(ended("the store's changes cannot be read now"));
            }
        };
        let full = page.len() as u32 == CATCH_UP_PAGE;
        for event in page {
            self.last = event.store_seq;
            self.queue.push_back(Item::Event(Arc::new(event)));
        }
        Ok(full)
    }
}

/// Whether the store's log holds the event numbered `seq` ([`InventoryStore::logged`]). On an
/// error reading the log the resume point is trusted, as before this check.
async fn in_log(inventory: &dyn InventoryStore, store_id: &str, seq: u64) -> bool {
    match inventory.logged(store_id, seq).await {
        Ok(logged) => logged,
        Err(e) => {
            redstore_platform::warn_throttled!(error = %e, store_id, "cannot check the resume point against the log");
            true
        }
    }
}
