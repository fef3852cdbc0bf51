//! What the Redis tests stand on: a private `redis-server` per test, a TCP proxy that can cut the
//! bridges off Redis, the embedded event log with the demo chain, and bounded waits.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redstore_inventory::store::Idem;
use redstore_inventory::{InventoryStore, SQLITE_MIGRATIONS, SqliteInventory, StockMovement};
use redstore_platform::Db;
use redstore_proto::events::EventEnvelope;
use redstore_proto::events::event_envelope::Payload;
use redstore_stream_bridge::LiveFeed;
use redstore_stream_bridge::feed::{self, Item, Start};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest any test waits for something that should happen; reaching it fails the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A `redis-server` of the test's own, without persistence, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self { port: free_port(), dir, child: None };
        server.spawn().await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (it has no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is redis-server 7 installed?)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("redis url");
        let ready = async {
            loop {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, ready).await.expect("redis-server did not answer PING");
    }

    /// A plain connection for the test's own commands.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("redis url");
        client.get_multiplexed_async_connection().await.expect("connect to the test's redis-server")
    }

    /// Waits until exactly `n` clients are in pub/sub mode (the bridges' subscriptions).
    pub async fn wait_for_subscribers(&self, n: usize) {
        let mut conn = self.conn().await;
        let wait = async {
            loop {
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async(&mut conn)
                    .await
                    .expect("CLIENT LIST");
                if list.lines().filter(|l| !l.trim().is_empty()).count() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("redis never had {n} pub/sub clients"));
    }
}

impl RedisServer {
    /// Waits until exactly `n` connections are subscribed to the store's event channel.
    pub async fn wait_for_channel_subscribers(&self, store: &str, n: usize) {
        let mut conn = self.conn().await;
        let channel = redstore_inventory::cache::events_channel(store);
        let wait = async {
            while self.channel_subscribers(&mut conn, &channel).await != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("{channel} never had {n} subscribers"));
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`).
    pub async fn channel_subscribers(&self, conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> usize {
        let (_, n): (String, usize) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(conn).await.expect("PUBSUB NUMSUB");
        n
    }

    /// How many pattern subscriptions Redis holds (`PUBSUB NUMPAT`).
    pub async fn pattern_subscriptions(&self) -> usize {
        redis::cmd("PUBSUB").arg("NUMPAT").query_async(&mut self.conn().await).await.expect("PUBSUB NUMPAT")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of Redis that can cut every connection through it and refuse new ones
/// (each is accepted and closed at once) until restored.
pub struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().push(link);
                }
            }
        });
        Self { port, up, links, accept }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The embedded event log with the demo chain (store-1, store-2; SKU-0001..SKU-0020).
pub struct Chain {
    db: Db,
    pub inventory: Arc<dyn InventoryStore>,
    _dir: tempfile::TempDir,
}

impl Chain {
    pub async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Db::open(&dir.path().join("redstore.db"), &[SQLITE_MIGRATIONS]).expect("open the embedded database");
        redstore_inventory::seed::seed_demo(&db).await.expect("seed the demo chain");
        let inventory: Arc<dyn InventoryStore> = SqliteInventory::new(db.clone());
        Self { db, inventory, _dir: dir }
    }

    /// The store's newest sequence.
    pub async fn head(&self, store: &str) -> u64 {
        self.inventory.snapshot(store).await.expect("snapshot").as_of_seq
    }

    /// Commits one stock change and returns its event as the log holds it: exactly what the
    /// Kafka consumer hands the projector.
    pub async fn change(&self, store: &str, sku: &str, delta: i64) -> EventEnvelope {
        let key = uuid::Uuid::now_v7().to_string();
        let idem = Idem { fingerprint: key.clone().into_bytes(), key };
        let response = self
            .inventory
            .adjust_stock(idem, store, StockMovement { sku: sku.into(), delta }, "received")
            .await
            .expect("adjust stock");
        let seq = response.stock.expect("stock level").last_seq;
        let mut events = self.inventory.events_after(store, seq - 1, 1).await.expect("read the event log");
        assert_eq!(events.len(), 1, "the change's event is in the log");
        events.remove(0)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.db.close();
    }
}

/// The quantity an `inventory.changed` event leaves a sku at.
pub fn quantity_after(event: &EventEnvelope, sku: &str) -> i64 {
    let Some(Payload::InventoryChanged(changed)) = &event.payload else { panic!("not an inventory.changed event") };
    changed.changes.iter().find(|c| c.sku == sku).expect("the event changes the sku").quantity_after
}

/// One bridge replica: its own feed, fed from Redis at `url`.
pub fn replica(url: &str, chain: &Chain, shutdown: &CancellationToken) -> LiveFeed {
    let feed = LiveFeed::default();
    redstore_stream_bridge::redis::start_feed(url, chain.inventory.clone(), feed.clone(), shutdown.clone())
        .expect("start the redis live feed");
    feed
}

/// Runs a watch in a task of its own (as a connection would poll it) into a channel.
pub fn forward(
    watch: impl futures::Stream<Item = redstore_platform::Result<Item>> + Send + 'static,
) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut watch = std::pin::pin!(watch);
        // A watch's end (its error) closes the channel: the watcher sees it end.
        while let Some(Ok(item)) = futures::StreamExt::next(&mut watch).await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A terminal watching a store on a replica, from after `seq`.
pub struct Watcher {
    rx: mpsc::Receiver<Item>,
}

impl Watcher {
    pub fn start(chain: &Chain, feed: &LiveFeed, store: &str, after: u64, shutdown: &CancellationToken) -> Self {
        let watch = feed::watch(chain.inventory.clone(), feed, store.to_owned(), Start::After(after), shutdown.clone());
        Self { rx: forward(watch) }
    }

    pub async fn next(&mut self) -> Arc<EventEnvelope> {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(Item::Event(event))) => event,
            Ok(Some(Item::Snapshot(_))) => panic!("unexpected snapshot"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// Asserts the next events are exactly these sequences, in this order.
    pub async fn expect(&mut self, seqs: &[u64]) {
        for &seq in seqs {
            let event = self.next().await;
            assert_eq!(event.store_seq, seq, "watcher received {} where {seq} was due", event.store_seq);
        }
    }
}

/// The next event a replica's feed itself carries for a store (only the bridge feeds it).
pub async fn next_on_feed(rx: &mut broadcast::Receiver<Arc<EventEnvelope>>) -> Arc<EventEnvelope> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("feed receiver failed: {e}"),
        Err(_) => panic!("nothing on the feed within {WAIT:?}"),
    }
}

/// The next event a replica's feed carries for a store after sequence `after` (a bridge that
/// starts following a store republishes the newest event it finds in the log).
pub async fn next_on_feed_after(rx: &mut broadcast::Receiver<Arc<EventEnvelope>>, after: u64) -> Arc<EventEnvelope> {
    loop {
        let event = next_on_feed(rx).await;
        if event.store_seq > after {
            return event;
        }
    }
}

/// Waits until a replica's feed has a watcher for the store.
pub async fn wait_watched(feed: &LiveFeed, store: &str) {
    let wait = async {
        while !feed.watched_stores().iter().any(|s| s == store) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("the watcher subscribed");
}

/// A watcher on each replica for store-1 and for store-2, each from the store's newest event,
/// returned once every replica's feed has them: `[store-1's, store-2's]`.
pub async fn watch_both_stores(
    chain: &Chain,
    replicas: [&LiveFeed; 2],
    shutdown: &CancellationToken,
) -> [[Watcher; 2]; 2] {
    let heads = [("store-1", chain.head("store-1").await), ("store-2", chain.head("store-2").await)];
    let stores = heads.map(|(store, head)| replicas.map(|feed| Watcher::start(chain, feed, store, head, shutdown)));
    for feed in replicas {
        for (store, _) in heads {
            wait_watched(feed, store).await;
        }
    }
    stores
}

/// What the cache projector publishes on some stores' channels, as a plain subscriber sees it.
pub struct Published(std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>>);

impl Published {
    pub async fn subscribe(redis_url: &str, stores: &[&str]) -> Self {
        let client = redis::Client::open(redis_url).expect("redis url");
        let mut channel = client.get_async_pubsub().await.expect("pubsub connection");
        for store in stores {
            channel.subscribe(redstore_inventory::cache::events_channel(store)).await.expect("subscribe");
        }
        Self(Box::pin(channel.into_on_message()))
    }

    /// The next published event, decoded; fails the test after [`WAIT`].
    pub async fn next(&mut self) -> EventEnvelope {
        let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut self.0))
            .await
            .expect("a message within the wait")
            .expect("the subscription is open");
        <EventEnvelope as prost::Message>::decode(msg.get_payload_bytes()).expect("an encoded envelope")
    }
}
