//! The distributed shape as separate processes of the real binary on PostgreSQL: inventory,
//! sales (calling inventory over gRPC), analytics and two stream-bridge replicas.

use futures::StreamExt as _;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use redstore_proto::analytics::{GetSalesReportRequest, Granularity};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use redstore_proto::stream::watch_inventory_response::Item;

use crate::helpers::*;

/// The Kafka-protocol broker the tests use (`scripts/test.sh` installs and starts tansu there).
fn kafka_brokers() -> String {
    std::env::var("REDSTORE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

async fn sales_count(analytics: &Process) -> i64 {
    sales_count_in(analytics, "store-1").await
}

async fn sales_count_in(analytics: &Process, store: &str) -> i64 {
    let report = AnalyticsServiceClient::new(analytics.channel().await)
        .get_sales_report(GetSalesReportRequest {
            store_id: store.into(),
            from: None,
            to: None,
            granularity: Granularity::Day as i32,
            top_products_limit: 5,
        })
        .await
        .expect("report")
        .into_inner();
    report.totals.iter().map(|t| t.sales_count).sum()
}

async fn wait_for_count(analytics: &Process, want: i64) {
    // A killed consumer's partitions move to its replacement after the group's session timeout.
    for _ in 0..1200 {
        if sales_count(analytics).await >= want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("analytics never counted {want} sales");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_reaches_both_bridge_replicas_and_analytics_counts_it_once_across_restarts() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    // The full distributed shape: PostgreSQL, the Kafka-protocol broker (own topics per test) and
    // Redis (own server per test); each process with one worker thread, as when several share
    // a small machine.
    let topics = TestTopics::new();
    let inventory =
        start(topics.args(&["serve", "inventory", "--demo", "--database-url", &url, "--redis-url", &redis_url]));
    let inventory_url = inventory.url();
    let sales_args = topics.args(&["serve", "sales", "--database-url", &url, "--inventory-url", &inventory_url]);
    let mut sales = start(sales_args.clone());
    let analytics_args = topics.args(&["serve", "analytics", "--database-url", &url]);
    let mut analytics = start(analytics_args.clone());
    let bridges = [
        Process::start(&["serve", "stream-bridge", "--database-url", &url, "--redis-url", &redis_url]),
        Process::start(&["serve", "stream-bridge", "--database-url", &url, "--redis-url", &redis_url]),
    ];

    // Each process reports health for what it serves, and only that.
    let mut health = tonic_health::pb::health_client::HealthClient::new(sales.channel().await);
    let check = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.into() };
    let serving = health.check(check("redstore.sales.v1.SalesService")).await.expect("sales health").into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let other = health.check(check("redstore.inventory.v1.InventoryService")).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound, "the sales process does not serve inventory");

    // A terminal watches on each replica, from the store's current sequence.
    let mut watches = Vec::new();
    let mut base = 0;
    for bridge in &bridges {
        let mut stream = InventoryStreamServiceClient::new(bridge.channel().await)
            .watch_inventory(WatchInventoryRequest {
                store_id: "store-1".into(),
                resume_after: 0,
                include_snapshot: true,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        let Some(Item::Snapshot(s)) = stream.next().await.unwrap().unwrap().item else { panic!("snapshot first") };
        base = s.as_of_seq;
        watches.push(stream);
    }

    let mut client = SalesServiceClient::new(sales.channel().await);
    for q in 1..=3 {
        client
            .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0008", q)], vec![cash(5000)]))
            .await
            .expect("checkout through the sales process");
    }
    for watch in &mut watches {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let item = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
                .await
                .expect("the replica delivers")
                .unwrap()
                .unwrap();
            let Some(Item::Event(e)) = item.item else { panic!("event") };
            seen.push(e.store_seq);
        }
        assert_eq!(seen, vec![base + 1, base + 2, base + 3], "every replica delivers every change, in order");
    }
    wait_for_count(&analytics, 3).await;

    // Kill analytics mid-stream; sales go on; a new analytics process resumes from its offsets.
    analytics.kill();
    let k = key();
    let req = checkout(&k, "store-1", "till-2", &[("SKU-0008", 1)], vec![cash(500)]);
    client.checkout(req.clone()).await.expect("sales go on without analytics");
    client.checkout(req).await.expect("a retry is answered, not doubled");
    analytics = start(analytics_args.clone());
    wait_for_count(&analytics, 4).await;

    // Kill the sales process (and its outbox relay) right after a sale; a new one relays the rest.
    client.checkout(checkout(&key(), "store-1", "till-3", &[("SKU-0008", 2)], vec![cash(1000)])).await.unwrap();
    sales.kill();
    sales = start(sales_args);
    let mut client = SalesServiceClient::new(sales.channel().await);
    client.checkout(checkout(&key(), "store-1", "till-3", &[("SKU-0008", 1)], vec![cash(500)])).await.unwrap();
    wait_for_count(&analytics, 6).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sales_count(&analytics).await, 6, "nothing lost, nothing counted twice");

    drop(watches);
    drop(bridges);
    drop(analytics);
    drop(sales);
    drop(inventory);
    db.drop_db().await.expect("drop scratch database");
    topics.delete().await;
}

/// Many stores' work handed between processes: two sales processes relay the sales outbox (each
/// store drained by one relay at a time, under its advisory lock) and two analytics processes
/// share the topic's partitions; one of each is killed right after a round of sales in every
/// store, and a new analytics process joins. Every store's sales reach analytics exactly once:
/// the survivors take over the killed relay's stores (their cursors say where) and the killed
/// consumer's partitions (from the committed offsets, deduplicated by event id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_consumers_hand_many_stores_between_processes() {
    const STORES: usize = 24;
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let topics = TestTopics::new();
    let inventory = start(topics.args(&["serve", "inventory", "--demo", "--database-url", &url]));
    let inventory_url = inventory.url();
    let sales_args = topics.args(&["serve", "sales", "--database-url", &url, "--inventory-url", &inventory_url]);
    let analytics_args = topics.args(&["serve", "analytics", "--database-url", &url]);
    let mut sales_a = start(sales_args.clone());
    let sales_b = start(sales_args);
    let mut analytics_a = start(analytics_args.clone());
    let analytics_b = start(analytics_args.clone());
    crate::chain::create_stores(inventory.channel().await, "relay", STORES).await;
    let stores: Vec<String> = (0..STORES).map(|i| format!("relay-{i}")).collect();

    let sell_everywhere = |channel: crate::helpers::Ch| {
        let stores = stores.clone();
        async move {
            futures::future::join_all(stores.iter().map(|store| {
                let mut client = SalesServiceClient::new(channel.clone());
                let request = checkout(&key(), store, "till-1", &[("SKU-0008", 1)], vec![cash(5000)]);
                async move { client.checkout(request).await.expect("a sale") }
            }))
            .await;
        }
    };
    sell_everywhere(sales_a.channel().await).await;
    sales_a.kill();
    analytics_a.kill();
    sell_everywhere(sales_b.channel().await).await;
    let analytics_c = start(analytics_args);

    for store in &stores {
        let mut counted = 0;
        for _ in 0..1200 {
            counted = sales_count_in(&analytics_b, store).await;
            if counted >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(counted >= 2, "analytics counted {counted} of the 2 sales of {store}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for store in &stores {
        assert_eq!(sales_count_in(&analytics_c, store).await, 2, "{store}: nothing lost, nothing counted twice");
    }

    drop(analytics_c);
    drop(analytics_b);
    drop(sales_b);
    drop(inventory);
    db.drop_db().await.expect("drop scratch database");
    topics.delete().await;
}

/// Reads `n` events from a watch, failing the test if they do not come within 20 s.
async fn next_seqs(watch: &mut tonic::Streaming<redstore_proto::stream::WatchInventoryResponse>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        let item = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next())
            .await
            .expect("the replica delivers")
            .unwrap()
            .unwrap();
        let Some(Item::Event(e)) = item.item else { panic!("event") };
        seqs.push(e.store_seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_slows_the_live_path_and_nothing_else() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let mut redis = RedisServer::start();
    let redis_url = redis.url();
    let app = Process::start(&["serve", "inventory", "--demo", "--database-url", &url, "--redis-url", &redis_url]);
    let sales = Process::start(&["serve", "sales", "--database-url", &url, "--inventory-url", &app.url()]);
    let bridge = Process::start(&["serve", "stream-bridge", "--database-url", &url, "--redis-url", &redis_url]);
    let mut watch = InventoryStreamServiceClient::new(bridge.channel().await)
        .watch_inventory(WatchInventoryRequest {
            store_id: "store-1".into(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let Some(Item::Snapshot(s)) = watch.next().await.unwrap().unwrap().item else { panic!("snapshot first") };
    let base = s.as_of_seq;
    let mut client = SalesServiceClient::new(sales.channel().await);
    let sell = |q: i64| checkout(&key(), "store-1", "till-1", &[("SKU-0011", q)], vec![cash(5000)]);

    client.checkout(sell(1)).await.expect("sale with Redis up");
    assert_eq!(next_seqs(&mut watch, 1).await, vec![base + 1]);

    redis.kill();
    for q in 1..=3 {
        client.checkout(sell(q)).await.expect("sales keep succeeding while Redis is down");
    }
    redis.restart();
    // The watcher catches up with every change made during the outage, in order, exactly once.
    assert_eq!(next_seqs(&mut watch, 3).await, vec![base + 2, base + 3, base + 4]);
    client.checkout(sell(1)).await.expect("sale after Redis returns");
    assert_eq!(next_seqs(&mut watch, 1).await, vec![base + 5]);

    drop(watch);
    drop(bridge);
    drop(sales);
    drop(app);
    db.drop_db().await.expect("drop scratch database");
}

/// A sales process that stops after inventory applied a checkout and before recording it (here:
/// the checkout is applied straight at inventory, as that process had sent it) loses nothing: the
/// running sales process's healer finds it among inventory's applied checkouts and records it,
/// with the first attempt's sale id, and a retry of the checkout is answered with that sale
/// without taking the stock again. The store is one of 200 and has no other activity: the
/// reconciler finds it by what inventory applied since its last look, not by visiting stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_applied_and_never_recorded_is_recorded_by_the_sales_process() {
    use prost::Message as _;
    use redstore_proto::inventory::{ApplySaleRequest, SaleLine};
    use redstore_proto::sales::{GetSaleRequest, SaleStatus};

    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let inventory = Process::start(&["serve", "inventory", "--demo", "--database-url", &url]);
    let inventory_url = inventory.url();
    let sales = Process::start(&["serve", "sales", "--database-url", &url, "--inventory-url", &inventory_url]);
    let mut client = SalesServiceClient::new(sales.channel().await);
    crate::chain::create_stores(inventory.channel().await, "many", 200).await;
    let quiet = "many-151";

    // The sale an attempt of this checkout drafted: priced as sales prices (a real checkout of the
    // same lines in another store gives the template), under an id of its own.
    let request = checkout(&key(), quiet, "till-1", &[("SKU-0008", 2)], vec![cash(5000)]);
    let template = client.checkout(checkout(&key(), "store-1", "till-2", &[("SKU-0008", 2)], vec![cash(5000)])).await;
    let mut drafted = template.expect("a checkout").into_inner().sale.expect("a sale");
    drafted.sale_id = uuid::Uuid::now_v7().to_string();
    drafted.store_id = quiet.into();
    drafted.terminal_id = "till-1".into();
    drafted.status = SaleStatus::Unspecified as i32;
    let before = stock_via(&inventory, quiet, "SKU-0008").await;

    let fingerprint = redstore_platform::idempotency::fingerprint(&request, |r| r.idempotency_key.clear());
    crate::helpers::internal_client(inventory.raw_channel().await)
        .apply_sale(ApplySaleRequest {
            sale_id: drafted.sale_id.clone(),
            store_id: quiet.into(),
            terminal_id: "till-1".into(),
            lines: drafted
                .lines
                .iter()
                .map(|l| SaleLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.clone(),
                    ..Default::default()
                })
                .collect(),
            checkout_key: request.idempotency_key.clone(),
            checkout_fingerprint: fingerprint,
            sale: drafted.encode_to_vec(),
        })
        .await
        .expect("inventory applies the checkout");
    assert_eq!(stock_via(&inventory, quiet, "SKU-0008").await, before - 2);

    // The healer looks every 5 s at what is older than 5 s.
    let get = GetSaleRequest { sale_id: drafted.sale_id.clone() };
    let mut recorded = None;
    for _ in 0..100 {
        if let Ok(found) = client.get_sale(get.clone()).await {
            recorded = found.into_inner().sale;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let recorded = recorded.expect("the sales process records the applied checkout");
    assert_eq!(recorded.status, SaleStatus::Completed as i32);
    assert_eq!((recorded.lines.clone(), recorded.total.clone()), (drafted.lines.clone(), drafted.total.clone()));

    let retried = client.checkout(request).await.expect("the retry").into_inner().sale.expect("a sale");
    assert_eq!(retried, recorded);
    assert_eq!(stock_via(&inventory, quiet, "SKU-0008").await, before - 2, "the retry took no more stock");

    drop(sales);
    drop(inventory);
    db.drop_db().await.expect("drop scratch database");
}

async fn stock_via(inventory: &Process, store: &str, sku: &str) -> i64 {
    use redstore_proto::inventory::GetStockRequest;
    use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
    InventoryServiceClient::new(inventory.channel().await)
        .get_stock(GetStockRequest { store_id: store.into(), sku: sku.into() })
        .await
        .expect("stock")
        .into_inner()
        .stock
        .expect("a level")
        .quantity
}

/// A test's own topics on the shared broker (a prefix of its own), and the flags that point a
/// process at them.
pub(crate) struct TestTopics {
    brokers: String,
    pub(crate) prefix: String,
}

impl TestTopics {
    pub(crate) fn new() -> Self {
        Self { brokers: kafka_brokers(), prefix: format!("t{}", uuid::Uuid::now_v7().simple()) }
    }

    /// `redstore` arguments with the Kafka flags appended (and one worker thread, as when several
    /// processes share a small machine).
    pub(crate) fn args(&self, args: &[&str]) -> Vec<String> {
        let kafka = ["--kafka-brokers", &self.brokers, "--kafka-topic-prefix", &self.prefix, "--worker-threads", "1"];
        args.iter().chain(kafka.iter()).map(|s| (*s).to_owned()).collect()
    }

    /// Deletes the topics (and their dead-letter twins) from the broker.
    pub(crate) async fn delete(self) {
        let cfg = redstore_platform::kafka::KafkaConfig {
            topic_prefix: self.prefix,
            ..redstore_platform::kafka::KafkaConfig::new(self.brokers)
        };
        let topics: Vec<String> = ["inventory", "sales"]
            .iter()
            .flat_map(|d| [cfg.topic(d), redstore_platform::kafka::dlq_topic(&cfg.topic(d))])
            .collect();
        let _ =
            redstore_platform::kafka::delete_topics(&cfg, &topics.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
}

/// A process started with these arguments.
fn start(args: Vec<String>) -> Process {
    Process::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}
