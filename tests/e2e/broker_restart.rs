//! The Kafka broker comes back empty in the middle of a checkout load (issue #13, item 5): an
//! in-memory broker restarted, as a cluster whose topics were deleted and created again. The
//! server must go on selling, and every sale must still reach analytics and the stock cache
//! exactly once, including the events the old broker held but nobody had consumed yet: those of
//! a store that keeps selling (a later event shows the gap) and of one that goes quiet at the
//! restart (nothing later does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{AdjustStockRequest, AdjustmentReason};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use tonic::Code;

use crate::helpers::*;

/// Sells before, during and after the restart.
const BUSY: &str = "store-1";
/// Sells until the broker goes down, then nothing more.
const QUIET: &str = "store-2";
const SKUS: [&str; 6] = ["SKU-0001", "SKU-0003", "SKU-0005", "SKU-0006", "SKU-0011", "SKU-0016"];

/// What one terminal saw: the sales it completed, and every answer that was neither a sale nor
/// one a terminal retries.
#[derive(Default)]
struct Outcome {
    sales: BTreeSet<String>,
    failures: Vec<String>,
}

/// Sells at `store` on `till` until `stop`, each checkout retried with its idempotency key while
/// the answer is one a terminal retries (the server busy, a dependency down), as a terminal would.
async fn terminal(url: String, store: &'static str, till: usize, stop: Arc<AtomicBool>) -> Outcome {
    let channel = tonic::transport::Channel::from_shared(url).expect("url").connect().await.expect("connect");
    let cashier = redstore::client_auth::cashier_token(test_keys(), store, &format!("till-{till}"));
    let mut client = SalesServiceClient::new(with_token(channel, &cashier));
    let mut outcome = Outcome::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let lines = [(SKUS[(n + till) % SKUS.len()], 1 + (n % 3) as i64), (SKUS[(n * 5 + 1) % SKUS.len()], 1)];
        let req = checkout(&key(), store, &format!("till-{till}"), &lines, vec![cash(100_000)]);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.checkout(req.clone()).await {
                Ok(resp) => {
                    outcome.sales.insert(resp.into_inner().sale.expect("sale").sale_id);
                    break;
                }
                Err(s) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted | Code::Aborted) => {
                    if attempts >= 100 {
                        outcome.failures.push(format!(
                            "still {:?} after {attempts} attempts: {}",
                            s.code(),
                            s.message()
                        ));
                        return outcome;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => {
                    outcome.failures.push(format!("{:?}: {}", s.code(), s.message()));
                    return outcome;
                }
            }
        }
    }
    outcome
}

/// What analytics and the stock cache hold for a store, against PostgreSQL.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Sales in the rollups.
    counted: i64,
    /// Events recorded as counted.
    processed: i64,
    /// sku → quantity in the Redis hash.
    cached: BTreeMap<String, i64>,
    /// sku → quantity in PostgreSQL.
    stock: BTreeMap<String, i64>,
}

async fn seen(admin: &sqlx::PgPool, cache: &redstore_inventory::cache::StockCache, store: &str) -> Seen {
    let counted =
        sqlx::query_scalar("SELECT COALESCE(SUM(sales_count), 0)::BIGINT FROM analytics.minute WHERE store_id = $1")
            .bind(store)
            .fetch_one(admin)
            .await
            .expect("rollups");
    let processed = sqlx::query_scalar("SELECT count(*) FROM analytics.processed WHERE store_id = $1")
        .bind(store)
        .fetch_one(admin)
        .await
        .expect("processed");
    let stock: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT sku, quantity FROM inventory.stock WHERE store_id = $1 AND sku = ANY($2)",
    )
    .bind(store)
    .bind(SKUS.to_vec())
    .fetch_all(admin)
    .await
    .expect("stock")
    .into_iter()
    .collect();
    let mut cached = BTreeMap::new();
    for sku in SKUS {
        if let Some(q) = cache.stock(store, sku).await.expect("redis answers") {
            cached.insert(sku.to_owned(), q);
        }
    }
    Seen { counted, processed, cached, stock }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_empty_under_load_loses_no_sale_and_counts_none_twice() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let admin = redstore_platform::pg::connect(&db.admin_url, 2, Duration::from_secs(10)).await.expect("admin pool");
    let redis = RedisServer::start();
    let mut broker = KafkaBroker::start();
    let (url, redis_url, brokers) = (db.app_url.clone(), redis.url(), broker.brokers());
    let args = ["up", "--database-url", &url, "--redis-url", &redis_url, "--kafka-brokers", &brokers];
    let mut server = Process::start(&args);
    // The busy store is strict about stock: enough for the whole load.
    let mut inventory = InventoryServiceClient::new(server.channel().await);
    for sku in SKUS {
        let receive = AdjustStockRequest {
            idempotency_key: key(),
            store_id: BUSY.into(),
            sku: sku.into(),
            quantity_delta: 1_000_000,
            reason: AdjustmentReason::Received as i32,
            note: String::new(),
        };
        inventory.adjust_stock(receive).await.expect("receive stock");
    }

    let (busy_stop, quiet_stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut terminals = Vec::new();
    for till in 1..=2 {
        terminals.push(tokio::spawn(terminal(server.url(), BUSY, till, busy_stop.clone())));
    }
    terminals.push(tokio::spawn(terminal(server.url(), QUIET, 1, quiet_stop.clone())));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The broker loses everything: topics, the events not consumed yet, the groups' offsets.
    quiet_stop.store(true, Ordering::Relaxed);
    broker.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    busy_stop.store(true, Ordering::Relaxed);
    let mut sales = BTreeSet::new();
    let mut failures = Vec::new();
    let mut sold = BTreeMap::new();
    for (i, t) in terminals.into_iter().enumerate() {
        let outcome = t.await.expect("terminal");
        *sold.entry(if i < 2 { BUSY } else { QUIET }).or_insert(0i64) += outcome.sales.len() as i64;
        sales.extend(outcome.sales);
        failures.extend(outcome.failures);
    }
    assert_eq!(server.child.try_wait().expect("status"), None, "the server process survived the broker");
    assert!(failures.is_empty(), "every checkout succeeded or was retryable: {failures:?}");
    assert_eq!(sales.len() as i64, sold.values().sum::<i64>(), "every sale has an id of its own");
    assert!(sold[BUSY] >= 20 && sold[QUIET] >= 5, "the load sold: {sold:?}");

    // Every sale reaches analytics once, and the stock cache ends equal to PostgreSQL's stock.
    let cache = redstore_inventory::cache::StockCache::new(&redis_url).expect("cache");
    for store in [BUSY, QUIET] {
        let want = sold[store];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut now = seen(&admin, &cache, store).await;
        while Instant::now() < deadline && !(now.counted == want && now.cached == now.stock) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            now = seen(&admin, &cache, store).await;
        }
        assert_eq!((now.counted, now.processed), (want, want), "{store}: analytics counted every sale once");
        assert_eq!(now.cached, now.stock, "{store}: the stock cache equals PostgreSQL's stock");
    }
    assert_eq!(server.child.try_wait().expect("status"), None, "the server process is still up");

    server.kill();
    admin.close().await;
    db.drop_db().await.expect("drop scratch database");
}
