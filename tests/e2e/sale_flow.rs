//! A whole sale, end to end: scan on one terminal, checkout, stock decremented, every watcher
//! of the store (SSE and the gRPC stream, each on its own connection) sees the change, and
//! analytics reports the sale.

use futures::StreamExt as _;
use redstore_proto::events::event_envelope::Payload;
use redstore_proto::sales::{ScanRequest, scan_response};
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use redstore_proto::stream::{WatchInventoryRequest, watch_inventory_response};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_checkout_stock_watchers_and_analytics() {
    let app = TestApp::spawn().await;

    // Another terminal watches over SSE, with a snapshot first.
    let mut sse = SseClient::connect(&app, "store-1", "?snapshot=true", None).await;
    let snapshot = sse.next().await.expect("snapshot");
    assert_eq!(snapshot.event.as_deref(), Some("snapshot"));
    let snap = snapshot.json();
    let milk = snap["items"].as_array().unwrap().iter().find(|i| i["sku"] == "SKU-0001").unwrap().clone();
    // The protobuf JSON mapping, as grpcurl shows it: 64-bit integers are strings.
    assert_eq!(milk["quantity"], "40");
    let as_of = snapshot.seq();

    // A third terminal watches over the gRPC stream on its own connection.
    let mut grpc_watch = InventoryStreamServiceClient::new(app.new_channel().await)
        .watch_inventory(WatchInventoryRequest {
            store_id: "store-1".into(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = grpc_watch.next().await.expect("item").expect("ok").item.expect("item");
    let watermark = match first {
        watch_inventory_response::Item::Snapshot(s) => {
            assert_eq!(s.items.iter().find(|i| i.sku == "SKU-0001").unwrap().quantity, 40);
            s.as_of_seq
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    };
    assert_eq!(watermark, as_of);

    // The cashier scans two milks and one bread through the streaming scanner; a misread
    // barcode in between answers with an error and the stream stays open.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut replies = app
        .sales()
        .scan_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("scan stream")
        .into_inner();
    let scan = |id: &str, code: String| ScanRequest {
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        scan_id: id.into(),
        code,
        quantity: 0,
    };
    tx.send(scan("s1", demo_barcode(1))).await.unwrap();
    let r1 = replies.next().await.unwrap().unwrap();
    match r1.result {
        Some(scan_response::Result::Line(line)) => {
            assert_eq!(line.sku, "SKU-0001");
            assert_eq!(line.name, "Whole milk 1 L");
            assert_eq!(line.quantity, 1);
            assert_eq!(line.stock_available, 40);
        }
        other => panic!("expected a cart line, got {other:?}"),
    }
    tx.send(scan("s2", "4000000000012".into())).await.unwrap();
    let r2 = replies.next().await.unwrap().unwrap();
    match r2.result {
        Some(scan_response::Result::Error(e)) => {
            assert_eq!(e.code, "INVALID_ARGUMENT");
            assert_eq!(e.field, "code");
            assert!(e.message.contains("check digit"), "{}", e.message);
        }
        other => panic!("expected a scan error, got {other:?}"),
    }
    assert_eq!(r2.cart.expect("cart after error").lines.len(), 1, "a bad scan leaves the cart alone");
    tx.send(scan("s3", demo_barcode(1))).await.unwrap();
    let r3 = replies.next().await.unwrap().unwrap();
    assert!(matches!(r3.result, Some(scan_response::Result::Line(ref l)) if l.quantity == 2));
    tx.send(scan("s4", demo_barcode(2))).await.unwrap();
    let r4 = replies.next().await.unwrap().unwrap();
    let cart = r4.cart.expect("cart");
    assert_eq!(cart.lines.len(), 2);
    assert_eq!(cart.total.expect("total").units_minor, 2 * 119 + 349);
    drop(tx);
    assert!(replies.next().await.is_none(), "the stream ends when the scanner closes it");

    // Checkout of the cart, paid in cash.
    let sale = app
        .sales()
        .checkout(checkout(&key(), "store-1", "till-1", &[], vec![cash(1000)]))
        .await
        .expect("checkout")
        .into_inner()
        .sale
        .expect("sale");
    assert_eq!(sale.total.clone().unwrap().units_minor, 587);
    assert_eq!(sale.change.clone().unwrap().units_minor, 413);
    assert_eq!(sale.lines.len(), 2);
    assert!(
        app.sales()
            .get_cart(redstore_proto::sales::GetCartRequest {
                store_id: "store-1".into(),
                terminal_id: "till-1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .cart
            .unwrap()
            .lines
            .is_empty(),
        "the cart is emptied by checkout"
    );

    // Stock is decremented.
    assert_eq!(app.stock("store-1", "SKU-0001").await, 38);
    assert_eq!(app.stock("store-1", "SKU-0002").await, 11);

    // The SSE watcher receives the change.
    let ev = sse.next_change().await;
    assert_eq!(ev.event.as_deref(), Some("inventory.changed"));
    assert_eq!(ev.seq(), as_of + 1);
    let body = ev.json();
    assert_eq!(body["storeSeq"], (as_of + 1).to_string());
    let change = &body["inventoryChanged"];
    assert_eq!(change["reason"], "sale");
    assert_eq!(change["referenceId"], sale.sale_id.as_str());
    assert_eq!(change["terminalId"], "till-1");
    let change = change["changes"].as_array().unwrap().iter().find(|c| c["sku"] == "SKU-0001").unwrap().clone();
    assert_eq!(change["delta"], "-2");
    assert_eq!(change["quantityAfter"], "38");

    // So does the gRPC watcher.
    let item = grpc_watch.next().await.expect("item").expect("ok").item.expect("item");
    let watch_inventory_response::Item::Event(event) = item else { panic!("expected an event") };
    assert_eq!(event.store_seq, as_of + 1);
    let Some(Payload::InventoryChanged(changed)) = event.payload else { panic!("expected inventory.changed") };
    assert_eq!(changed.reference_id, sale.sale_id);
    assert!(changed.changes.iter().any(|c| c.sku == "SKU-0002" && c.quantity_after == 11 && c.delta == -1));

    // Analytics reports the sale.
    let report = app.report_with_sales("store-1", 1).await;
    let totals = &report.totals[0];
    assert_eq!(totals.sales_count, 1);
    assert_eq!(totals.units_sold, 3);
    assert_eq!(totals.gross.clone().unwrap().units_minor, 587);
    assert_eq!(totals.net.clone().unwrap().units_minor, 587);
    assert_eq!(report.top_products[0].sku, "SKU-0001");
    assert_eq!(report.top_products[0].units_sold, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_negative_store_sells_below_zero_and_flags_it() {
    let app = TestApp::spawn().await;
    // store-2 has 3 AA batteries (SKU-0019) and allows negative stock.
    let mut sse = SseClient::connect(&app, "store-2", "?snapshot=true", None).await;
    sse.next().await.expect("snapshot");
    let sale = app
        .sales()
        .checkout(checkout(&key(), "store-2", "till-2", &[("SKU-0019", 5)], vec![card(5 * 699)]))
        .await
        .expect("allow_negative store sells")
        .into_inner()
        .sale
        .unwrap();
    assert_eq!(sale.negative_stock_skus, vec!["SKU-0019".to_owned()]);
    assert_eq!(app.stock("store-2", "SKU-0019").await, -2);
    let ev = sse.next_change().await.json();
    assert_eq!(ev["inventoryChanged"]["changes"][0]["quantityAfter"], "-2");
    assert_eq!(ev["inventoryChanged"]["changes"][0]["negative"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_sales_are_the_sales_made_since_the_start_time_a_terminal_gives() {
    use redstore_proto::sales::ListSalesRequest;
    let app = TestApp::spawn().await;
    let sell = |q| checkout(&key(), "store-1", "till-1", &[("SKU-0004", q)], vec![cash(5000)]);
    app.sales().checkout(sell(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let start = prost_types::Timestamp::from(std::time::SystemTime::now());
    let later = app.sales().checkout(sell(2)).await.unwrap().into_inner().sale.unwrap();
    let list = |created_from| ListSalesRequest { store_id: "store-1".into(), created_from, ..Default::default() };
    let since = app.sales().list_sales(list(Some(start))).await.unwrap().into_inner().sales;
    assert_eq!(since.iter().map(|s| s.sale_id.as_str()).collect::<Vec<_>>(), [later.sale_id.as_str()]);
    let all = app.sales().list_sales(list(None)).await.unwrap().into_inner().sales;
    assert_eq!(all.len(), 2, "without a start time every sale is listed");
    let refused =
        app.sales().list_sales(list(Some(prost_types::Timestamp { seconds: -5, nanos: 0 }))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("created_from"), "{}", refused.message());
}
