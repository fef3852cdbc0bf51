//! Answers kept for retries are kept for a published time, then deleted: a checkout key past its
//! retention is a new checkout, a scan id past its retention a new scan. What a scan keeps does not
//! grow with the cart.

use std::time::Duration;

use redstore_platform::retention::Retention;
use redstore_proto::sales::ScanRequest;

use crate::helpers::*;

fn short_retention() -> Retention {
    Retention { keys: Duration::from_secs(2), scans: Duration::from_secs(1), every: Duration::from_millis(200) }
}

fn scan(scan_id: &str, product: usize) -> ScanRequest {
    ScanRequest {
        store_id: "store-1".into(),
        terminal_id: "till-2".into(),
        scan_id: scan_id.into(),
        code: demo_barcode(product),
        quantity: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_key_is_replayed_while_kept_and_is_a_new_checkout_once_expired() {
    let app = TestApp::spawn_configured(|cfg| cfg.retention = short_retention()).await;
    let stock = app.stock("store-1", "SKU-0007").await;
    let sale = checkout("kept-then-expired", "store-1", "till-1", &[("SKU-0007", 1)], vec![cash(100_000)]);
    let first = app.sales().checkout(sale.clone()).await.unwrap().into_inner().sale.unwrap().sale_id;
    let replay = app.sales().checkout(sale.clone()).await.unwrap().into_inner().sale.unwrap().sale_id;
    assert_eq!(replay, first, "a retry within the retention is the same sale");
    assert_eq!(app.stock("store-1", "SKU-0007").await, stock - 1);

    let mut second = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = app.sales().checkout(sale.clone()).await.unwrap().into_inner().sale.unwrap().sale_id;
        if id != first {
            second = Some(id);
            break;
        }
    }
    let second = second.expect("the key expired and was deleted");
    let again = app.sales().checkout(sale).await.unwrap().into_inner().sale.unwrap().sale_id;
    assert_eq!(again, second, "the new checkout has the key now");
    assert_eq!(app.stock("store-1", "SKU-0007").await, stock - 2, "two sales, each sold once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_id_counts_once_while_kept_and_again_once_expired() {
    let app = TestApp::spawn_configured(|cfg| cfg.retention = short_retention()).await;
    let quantity = |r: redstore_proto::sales::ScanResponse| r.cart.unwrap().lines[0].quantity;
    assert_eq!(quantity(app.sales().scan(scan("scan-x", 3)).await.unwrap().into_inner()), 1);
    assert_eq!(quantity(app.sales().scan(scan("scan-x", 3)).await.unwrap().into_inner()), 1, "a retry counts once");
    let mut counted = 1;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counted = quantity(app.sales().scan(scan("scan-x", 3)).await.unwrap().into_inner());
        if counted > 1 {
            break;
        }
    }
    assert_eq!(counted, 2, "once expired, the scan id is a new scan");
}

/// The stored answers of the terminal's scans, oldest first.
async fn stored_scan_answers(app: &TestApp) -> Vec<usize> {
    match app.scratch() {
        None => {
            let conn = rusqlite::Connection::open(app.dir.path().join("redstore.db")).unwrap();
            let mut stmt = conn
                .prepare(
                    "SELECT length(response) FROM idempotency_keys WHERE scope = 'sales.scan:store-1:till-2'
                     ORDER BY created_at_ms",
                )
                .unwrap();
            stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(|n| n.unwrap() as usize).collect()
        }
        Some(scratch) => {
            let admin = redstore_platform::pg::connect(&scratch.admin_url, 1, Duration::from_secs(5)).await.unwrap();
            let sizes: Vec<i32> = sqlx::query_scalar(
                "SELECT length(response) FROM platform.idempotency_keys WHERE scope = 'sales.scan:store-1:till-2'
                 ORDER BY created_at",
            )
            .fetch_all(&admin)
            .await
            .unwrap();
            admin.close().await;
            sizes.into_iter().map(|n| n as usize).collect()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_scan_keeps_does_not_grow_with_the_cart() {
    let app = TestApp::spawn().await;
    for product in 1..=20 {
        let answer = app.sales().scan(scan(&format!("grow-{product}"), product)).await.unwrap().into_inner();
        assert_eq!(answer.cart.unwrap().lines.len(), product, "the answer still carries the whole cart");
    }
    let sizes = stored_scan_answers(&app).await;
    assert_eq!(sizes.len(), 20);
    let (smallest, largest) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(largest - smallest < 32, "the 20th scan keeps about what the first does: {sizes:?}");
}
