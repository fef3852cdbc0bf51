//! Resume after a dropped connection: exactly the missed events, no gap, no duplicate.

use futures::StreamExt as _;
use redstore_proto::stream::watch_inventory_response::Item;
use redstore_proto::stream::{WatchInventoryRequest, WatchInventoryResponse};

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
        let delta = ev.json()["inventoryChanged"]["changes"][0]["delta"].as_str().unwrap().parse::<i64>().unwrap();
        got.push((ev.seq(), delta));
    }
    assert_eq!(got, vec![(base + 2, -1), (base + 3, -2), (base + 4, -3)]);

    // Live events continue on the resumed stream without a duplicate.
    app.sales().checkout(checkout(&key(), "store-1", "till-3", &[("SKU-0006", 4)], vec![cash(1000)])).await.unwrap();
    let live = resumed.next().await.unwrap();
    assert_eq!(live.seq(), base + 5);
    assert_eq!(live.json()["inventoryChanged"]["changes"][0]["quantityAfter"], (50 - 1 - 1 - 2 - 3 - 4).to_string());

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
            ..Default::default()
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
        .watch_inventory(WatchInventoryRequest {
            store_id: "nowhere".into(),
            resume_after: 0,
            include_snapshot: false,
            ..Default::default()
        })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_that_asked_for_keep_alives_gets_them_between_events_so_a_dead_link_shows() {
    // A terminal on shop Wi-Fi cannot tell a quiet store from a link that died without a word;
    // with keep-alives, silence longer than their interval means the connection is gone.
    let app = TestApp::spawn().await;
    let request = |keep_alive_seconds| WatchInventoryRequest {
        store_id: "store-1".into(),
        include_snapshot: true,
        keep_alive_seconds,
        ..Default::default()
    };
    let mut watch = app.stream().watch_inventory(request(1)).await.unwrap().into_inner();
    let Some(Item::Snapshot(snapshot)) = watch.next().await.unwrap().unwrap().item else { panic!("snapshot first") };
    let quiet = tokio::time::Instant::now();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next()).await;
    let Ok(Some(Ok(WatchInventoryResponse { item: Some(Item::KeepAlive(_)) }))) = next else {
        panic!("a keep-alive within a quiet second or so, not {next:?}")
    };
    assert!(quiet.elapsed() >= std::time::Duration::from_millis(900), "not before the stream was quiet for a second");
    app.sales().checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0006", 1)], vec![cash(500)])).await.unwrap();
    let event = loop {
        match watch.next().await.unwrap().unwrap().item {
            Some(Item::Event(event)) => break event,
            Some(Item::KeepAlive(_)) => continue,
            other => panic!("an event, not {other:?}"),
        }
    };
    assert_eq!(event.store_seq, snapshot.as_of_seq + 1, "events still come, in order");

    // A watch that did not ask gets none: a second of quiet passes without a message.
    let mut plain = app.stream().watch_inventory(request(0)).await.unwrap().into_inner();
    plain.next().await.unwrap().unwrap();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), plain.next()).await;
    assert!(quiet.is_err(), "a watch without keep-alives stays quiet: {quiet:?}");

    let refused = app.stream().watch_inventory(request(301)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("keep_alive_seconds"), "{}", refused.message());
}
