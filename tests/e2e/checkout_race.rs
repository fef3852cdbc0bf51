//! Races: many terminals at once must never oversell a strict store, and one checkout retried
//! concurrently with one key makes one sale.

use futures::StreamExt as _;
use redstore_proto::common::PageRequest;
use redstore_proto::events::event_envelope::Payload;
use redstore_proto::inventory::OversellPolicy;
use redstore_proto::sales::ListSalesRequest;
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::watch_inventory_response::Item;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_terminals_race_for_the_last_ten_units() {
    let app = TestApp::spawn_empty().await;
    let terminals: Vec<String> = (1..=32).map(|t| format!("t{t:02}")).collect();
    let refs: Vec<&str> = terminals.iter().map(String::as_str).collect();
    app.create_store("race", OversellPolicy::Strict, &refs).await;
    app.create_product("LAST-10", 250, &[]).await;
    app.receive("race", "LAST-10", 10).await;
    let before = app.stock_level_seq("race", "LAST-10").await;

    let mut tasks = Vec::new();
    for t in &terminals {
        let channel = app.new_channel().await;
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            SalesServiceClient::new(channel)
                .checkout(checkout(&key(), "race", &t, &[("LAST-10", 1)], vec![card(250)]))
                .await
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("LAST-10"), "{}", status.message());
                assert!(status.message().contains("available 0"), "{}", status.message());
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (10, 22));
    assert_eq!(app.stock("race", "LAST-10").await, 0);

    let sales = app
        .sales()
        .list_sales(ListSalesRequest {
            store_id: "race".into(),
            page: Some(PageRequest { page_size: 100, page_token: String::new() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sales;
    assert_eq!(sales.len(), 10);

    // Exactly ten stock events for sales, with consecutive sequence numbers after the receipt.
    let mut watch = app
        .stream()
        .watch_inventory(WatchInventoryRequest {
            store_id: "race".into(),
            resume_after: before,
            include_snapshot: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for i in 1..=10 {
        let Some(Item::Event(e)) = watch.next().await.unwrap().unwrap().item else { panic!("event") };
        assert_eq!(e.store_seq, before + i);
        let Some(Payload::InventoryChanged(c)) = e.payload else { panic!("inventory.changed") };
        assert_eq!(c.reason, "sale");
    }
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), watch.next()).await;
    assert!(extra.is_err(), "no eleventh stock event: {extra:?}");

    let report = app.report_with_sales("race", 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let report_again = app.report("race").await;
    assert_eq!(report.totals[0].sales_count, 10);
    assert_eq!(report_again.totals[0].sales_count, 10, "analytics counts each sale once");
    assert_eq!(report_again.totals[0].gross.clone().unwrap().units_minor, 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_concurrent_retries_with_one_key_make_one_sale() {
    let app = TestApp::spawn().await;
    let k = key();
    let req = checkout(&k, "store-1", "till-1", &[("SKU-0003", 2), ("SKU-0004", 1)], vec![cash(2000)]);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let channel = app.new_channel().await;
        let req = req.clone();
        tasks.push(tokio::spawn(async move { SalesServiceClient::new(channel).checkout(req).await }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("every retry succeeds").into_inner().sale.unwrap().sale_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all five answers are the same sale");
    assert_eq!(app.stock("store-1", "SKU-0003").await, 30 - 2);
    assert_eq!(app.stock("store-1", "SKU-0004").await, 24 - 1);
    let sales = app
        .sales()
        .list_sales(ListSalesRequest { store_id: "store-1".into(), page: None, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .sales;
    assert_eq!(sales.len(), 1);
    // A late retry still answers with the same sale and changes nothing.
    let again = app.sales().checkout(req).await.unwrap().into_inner().sale.unwrap();
    assert_eq!(again.sale_id, ids[0]);
    assert_eq!(app.stock("store-1", "SKU-0003").await, 28);
    let report = app.report_with_sales("store-1", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.report("store-1").await.totals[0].sales_count, 1);
    assert_eq!(report.totals[0].units_sold, 3);
}
