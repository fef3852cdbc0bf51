//! Resume after a dropped connection: exactly the missed events, no gap, no duplicate.

use futures::StreamExt as _;
use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::watch_inventory_response::Item;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_exactly_after_the_last_event_seen() {
    let app = TestApp::spawn().await;
    let mut sse = SseClient::connect(&app, "store-1", "?snapshot=true", None).await;
    let base = sse.next().await.unwrap().seq();
    app.sales().checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0006", 1)], vec![cash(500)])).await.unwrap();
    let seen = sse.next().await.unwrap();
    assert_eq!(seen.seq(), base + 1);
    drop(sse); // the iPad's Wi-Fi drops

    for q in 1..=3 {
        app.sales()
            .checkout(checkout(&key(), "store-1", "till-2", &[("SKU-0006", q)], vec![cash(1000)]))
            .await
            .unwrap();
    }

    let mut resumed = SseClient::connect(&app, "store-1", "", Some(seen.seq())).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = resumed.next().await.unwrap();
        got.push((ev.seq(), ev.json()["changes"][0]["delta"].as_i64().unwrap()));
    }
    assert_eq!(got, vec![(base + 2, -1), (base + 3, -2), (base + 4, -3)]);

    // Live events continue on the resumed stream without a duplicate.
    app.sales().checkout(checkout(&key(), "store-1", "till-3", &[("SKU-0006", 4)], vec![cash(1000)])).await.unwrap();
    let live = resumed.next().await.unwrap();
    assert_eq!(live.seq(), base + 5);
    assert_eq!(live.json()["changes"][0]["quantity_after"], 50 - 1 - 1 - 2 - 3 - 4);

    // An idle stream gets keep-alive comments (the test server sends one every 300 ms).
    let before = resumed.comments;
    let idle = tokio::time::timeout(std::time::Duration::from_millis(1500), resumed.next()).await;
    assert!(idle.is_err(), "no event while idle");
    // Comments are counted as they are parsed; read whatever is buffered.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(400), resumed.next()).await;
    assert!(resumed.comments > before, "keep-alive comments arrive on an idle stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_rejects_bad_resume_points_and_unknown_stores() {
    let app = TestApp::spawn().await;
    let client = admin_http1();
    let res = client.get(format!("{}/v1/stores/nowhere/inventory/events", app.url)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("nowhere"));
    let res = client
        .get(format!("{}/v1/stores/store-1/inventory/events", app.url))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("Last-Event-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_resumes_after_a_sequence() {
    let app = TestApp::spawn().await;
    let base = app.inventory_seq("store-1").await;
    for q in 1..=3 {
        app.sales()
            .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0007", q)], vec![cash(2000)]))
            .await
            .unwrap();
    }
    let mut watch = app
        .stream()
        .watch_inventory(WatchInventoryRequest {
            store_id: "store-1".into(),
            resume_after: base + 1,
            include_snapshot: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let Some(Item::Event(e)) = watch.next().await.unwrap().unwrap().item else { panic!("event") };
        seqs.push(e.store_seq);
    }
    assert_eq!(seqs, vec![base + 2, base + 3]);
    let err = app
        .stream()
        .watch_inventory(WatchInventoryRequest { store_id: "nowhere".into(), resume_after: 0, include_snapshot: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_point_the_log_does_not_have_gets_a_snapshot_and_then_live_changes() {
    // A terminal that saw events of a database since restored from an older backup resumes
    // "after 5,000" on a store whose log ends far below: it must not wait for the log to catch
    // up, silently missing every change until then.
    let app = TestApp::spawn().await;
    let head = app.inventory_seq("store-1").await;
    let mut sse = SseClient::connect(&app, "store-1", "", Some(head + 5_000)).await;
    let first = sse.next().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("snapshot"), "the unknown resume point gets a snapshot");
    assert_eq!(first.seq(), head);
    app.sales().checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0006", 1)], vec![cash(500)])).await.unwrap();
    let live = sse.next().await.unwrap();
    assert_eq!(live.seq(), head + 1, "live changes follow the snapshot");

    // A resume point inside the log still resumes exactly after it, no snapshot.
    let mut resumed = SseClient::connect(&app, "store-1", "", Some(head)).await;
    let next = resumed.next().await.unwrap();
    assert_eq!((next.event.as_deref(), next.seq()), (Some("inventory.changed"), head + 1));
}
