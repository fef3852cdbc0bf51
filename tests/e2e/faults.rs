//! Transient faults as a shop meets them: database connections cut under load, Redis down for a
//! while. A refusal is UNAVAILABLE (the client retries with the same key, safely), never INTERNAL,
//! and a repeated warning is logged once with a count rather than once per event.

use std::time::Duration;

use redstore_platform::pg::scratch::ScratchDb;
use tonic::Code;

use crate::helpers::*;

/// Cuts every connection the application role has to the test's database, as a failover or an
/// administrator's `pg_terminate_backend` does.
async fn terminate_connections(scratch: &ScratchDb) -> u64 {
    let admin = redstore_platform::pg::connect(&scratch.admin_url, 1, Duration::from_secs(5)).await.unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND usename = 'redstore_app') AS t",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    admin.close().await;
    cut as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_database_connections_answer_unavailable_and_a_retry_sells_exactly_once() {
    if !on_postgres() {
        return; // the embedded database has no connections to cut
    }
    let app = TestApp::spawn().await;
    let stock = app.stock("store-2", "SKU-0005").await;
    let scratch = app.scratch().expect("a PostgreSQL test");
    let mut sold = 0i64;
    let mut cuts = 0u64;
    for round in 0..6 {
        let attempts: Vec<_> = (0..12)
            .map(|t| {
                let mut sales = app.sales();
                let key = format!("cut-{round}-{t}");
                let terminal = ["till-1", "till-2", "till-3"][t % 3];
                let sale = checkout(&key, "store-2", terminal, &[("SKU-0005", 1)], vec![cash(100_000)]);
                tokio::spawn(async move {
                    // A terminal retries an UNAVAILABLE checkout with the same key until it sells.
                    let mut first = None;
                    for _ in 0..100 {
                        match sales.checkout(sale.clone()).await {
                            Ok(done) => return (first, done.into_inner().sale.unwrap().sale_id),
                            Err(status) => {
                                assert_eq!(status.code(), Code::Unavailable, "never INTERNAL: {status:?}");
                                first.get_or_insert(status);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    panic!("a checkout never went through after its connection was cut");
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5 * round)).await;
        cuts += terminate_connections(scratch).await;
        for attempt in attempts {
            attempt.await.expect("a terminal");
            sold += 1;
        }
    }
    assert!(cuts > 0, "connections were cut");
    assert_eq!(stock_after_cuts(&app).await, stock - sold, "each checkout sold exactly once");
}

/// The stock of the sku sold, read as a terminal would: a connection the server had in its pool
/// when it was cut answers UNAVAILABLE once, and the read is tried again.
async fn stock_after_cuts(app: &TestApp) -> i64 {
    let request = || redstore_proto::inventory::GetStockRequest { store_id: "store-2".into(), sku: "SKU-0005".into() };
    for _ in 0..50 {
        match app.inventory().get_stock(request()).await {
            Ok(answer) => return answer.into_inner().stock.expect("stock").quantity,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "never INTERNAL: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the stock could not be read after the connections were cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_logged_once_with_a_count_not_once_per_event() {
    if on_postgres() {
        return; // runs its own PostgreSQL-backed process; once is enough
    }
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let mut redis = RedisServer::start();
    let server = Process::start(&["up", "--database-url", &db.app_url, "--redis-url", &redis.url()]);
    let channel = server.channel().await;
    let sell = |n: usize| {
        let mut sales = redstore_proto::sales::sales_service_client::SalesServiceClient::new(channel.clone());
        async move {
            for i in 0..n {
                let sale = checkout(&key(), "store-2", "till-1", &[("SKU-0006", 1)], vec![cash(100_000)]);
                sales.checkout(sale).await.unwrap_or_else(|e| panic!("sale {i} goes through without Redis: {e:?}"));
            }
        }
    };
    sell(5).await;
    let _ = server.logs();

    redis.kill();
    sell(150).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    sell(5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let warnings: Vec<serde_json::Value> = server.logs().into_iter().filter(|l| l["level"] == "WARN").collect();
    assert!(!warnings.is_empty(), "the outage is logged");
    assert!(warnings.len() <= 20, "{} warnings for one outage: {warnings:#?}", warnings.len());
    db.drop_db().await.expect("drop the scratch database");
}
