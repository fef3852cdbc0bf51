//! What the Kubernetes manifests rely on: pods that wait for the migration Job instead of
//! crash-looping, and sales reaching inventory by a name that may stand for several pods.

use std::time::{Duration, Instant};

use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::*;

fn redstore() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_wait_exits_once_the_migration_job_has_run_and_69_when_it_never_does() {
    let db = ScratchDb::create(&[]).await.expect("an empty scratch database");
    // Nothing applied: the wait gives up after its timeout, as a supervisor's retryable failure.
    let started = Instant::now();
    let out = redstore()
        .args(["migrate", "--wait", "--timeout", "3s", "--database-url", &db.admin_url])
        .output()
        .expect("run migrate --wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("migrations are not applied yet"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "it gave up near its timeout");

    // A pod's init container waits; the migration Job runs meanwhile; the wait ends with it.
    let mut waiting = redstore()
        .args(["migrate", "--wait", "--timeout", "2m", "--database-url", &db.admin_url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start migrate --wait");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(waiting.try_wait().unwrap().is_none(), "it waits while nothing is migrated");
    let job = redstore().args(["migrate", "--database-url", &db.admin_url]).output().unwrap();
    assert!(job.status.success(), "{}", String::from_utf8_lossy(&job.stderr));
    let waited = tokio::task::spawn_blocking(move || waiting.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", String::from_utf8_lossy(&waited.stderr));

    // Without a database there is nothing to wait for: a usage error.
    let out = redstore().args(["migrate", "--wait"]).env_remove("REDSTORE_DATABASE_URL").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    db.drop_db().await.expect("drop scratch database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_reaches_inventory_by_name_through_the_balanced_channel() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let inventory = Process::start(&["serve", "inventory", "--demo", "--database-url", &url]);
    // A name, as a headless Service's: resolved (to every address it has), not dialled as given.
    let by_name = format!("http://localhost:{}", inventory.addr.port());
    let sales = Process::start(&["serve", "sales", "--database-url", &url, "--inventory-url", &by_name]);
    let sale = SalesServiceClient::new(sales.channel().await)
        .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0008", 2)], vec![cash(5000)]))
        .await
        .expect("a sale applied to inventory found by name")
        .into_inner();
    assert!(sale.sale.is_some());
    drop((sales, inventory));
    db.drop_db().await.expect("drop scratch database");
}

async fn status_of(channel: Ch, service: &str) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
        .await
        .expect("health")
        .into_inner()
        .status
}

async fn wait_for_status(channel: Ch, service: &str, want: ServingStatus) {
    for _ in 0..150 {
        if status_of(channel.clone(), service).await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service:?} never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_redis_is_down_is_not_ready_but_alive_and_ready_again_when_it_returns() {
    const BRIDGE: &str = "redstore.stream.v1.InventoryStreamService";
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let mut redis = RedisServer::start();
    let bridge =
        Process::start(&["serve", "stream-bridge", "--database-url", &db.app_url, "--redis-url", &redis.url()]);
    let channel = bridge.channel().await;
    assert_eq!(status_of(channel.clone(), BRIDGE).await, ServingStatus::Serving as i32);

    redis.kill();
    wait_for_status(channel.clone(), BRIDGE, ServingStatus::NotServing).await;
    assert_eq!(status_of(channel.clone(), "").await, ServingStatus::NotServing as i32);
    // Liveness does not follow: restarting the pod would not bring Redis back.
    assert_eq!(status_of(channel.clone(), "liveness").await, ServingStatus::Serving as i32);
    let text = reqwest::get(format!("http://{}/metrics", bridge.addr)).await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"redstore_backend_up{backend="redis"} 0"#), "{text}");

    redis.restart();
    wait_for_status(channel.clone(), BRIDGE, ServingStatus::Serving).await;
    drop(bridge);
    db.drop_db().await.expect("drop scratch database");
}
