//! Scanning over the unary twin (what gRPC-web browsers use) and cart editing.

use redstore_proto::sales::{
    ClearCartRequest, GetCartRequest, RemoveCartItemRequest, ScanRequest, SetCartItemQuantityRequest, scan_response,
};
use tonic::Code;

use crate::helpers::*;

fn scan(id: &str, code: &str) -> ScanRequest {
    ScanRequest {
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        scan_id: id.into(),
        code: code.into(),
        quantity: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_scans_build_a_cart_and_bad_scans_get_precise_statuses() {
    let app = TestApp::spawn().await;
    let coffee = demo_barcode(9);
    let r = app.sales().scan(scan("a", &coffee)).await.unwrap().into_inner();
    let Some(scan_response::Result::Line(line)) = r.result else { panic!("line") };
    assert_eq!((line.sku.as_str(), line.quantity, line.stock_available), ("SKU-0009", 1, 16));
    assert_eq!(line.unit_price.unwrap().units_minor, 599);

    // The same scan retried (same scan_id) is counted once.
    app.sales().scan(scan("a", &coffee)).await.unwrap();
    // The UPC-A-compatible 13-digit form and a fresh scan add a second unit.
    let r = app.sales().scan(scan("b", &coffee)).await.unwrap().into_inner();
    assert_eq!(r.cart.unwrap().lines[0].quantity, 2);

    let err = app.sales().scan(scan("c", "4000000000090")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("code:"), "{}", err.message());

    // A well-formed barcode that no product has.
    let unknown = redstore_platform::barcode::ean13_from_payload("871234567890");
    let err = app.sales().scan(scan("d", &unknown)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown[..12]), "{}", err.message());

    let mut s = scan("e", &coffee);
    s.terminal_id = "till-99".into();
    let err = app.sales().scan(s).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("till-99"), "{}", err.message());

    let err = app.sales().scan(scan("", &coffee)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("scan_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_lines_can_be_changed_removed_and_cleared() {
    let app = TestApp::spawn().await;
    app.sales().scan(scan("1", &demo_barcode(1))).await.unwrap();
    app.sales().scan(scan("2", &demo_barcode(2))).await.unwrap();
    app.sales().scan(scan("3", &demo_barcode(3))).await.unwrap();
    let set = |sku: &str, q: i64| SetCartItemQuantityRequest {
        idempotency_key: String::new(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        sku: sku.into(),
        quantity: q,
    };
    let cart = app.sales().set_cart_item_quantity(set("SKU-0001", 4)).await.unwrap().into_inner().cart.unwrap();
    assert_eq!(
        cart.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(),
        vec![("SKU-0001", 4), ("SKU-0002", 1), ("SKU-0003", 1)]
    );
    assert_eq!(cart.total.unwrap().units_minor, 4 * 119 + 349 + 429);
    let err = app.sales().set_cart_item_quantity(set("SKU-0005", 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app.sales().set_cart_item_quantity(set("SKU-0001", -1)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let cart = app
        .sales()
        .remove_cart_item(RemoveCartItemRequest {
            idempotency_key: String::new(),
            store_id: "store-1".into(),
            terminal_id: "till-1".into(),
            sku: "SKU-0002".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(cart.lines.len(), 2);

    // Another terminal's cart is separate.
    let other = app
        .sales()
        .get_cart(GetCartRequest { store_id: "store-1".into(), terminal_id: "till-2".into() })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(other.lines.is_empty());

    let cart = app
        .sales()
        .clear_cart(ClearCartRequest {
            idempotency_key: String::new(),
            store_id: "store-1".into(),
            terminal_id: "till-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(cart.lines.is_empty());
    let err = app.sales().checkout(checkout(&key(), "store-1", "till-1", &[], vec![cash(100)])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("empty"), "{}", err.message());
}

/// A scanner fires a burst without waiting for answers (as a gun held on a pallet does): every
/// scan is answered once, in the order sent, each line counting up from the last; a retried scan
/// id answers its first line again, and a bad code in the middle answers its error and leaves the
/// rest of the burst alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_scan_stream_is_answered_in_order_each_scan_once() {
    let app = TestApp::spawn().await;
    let (milk, bread) = (demo_barcode(1), demo_barcode(2));
    let mut burst: Vec<ScanRequest> = Vec::new();
    for i in 0..40 {
        let code = if i % 4 == 3 { bread.clone() } else { milk.clone() };
        burst.push(scan(&format!("burst-{i}"), &code));
    }
    burst.insert(20, scan("burst-5", &milk)); // a retry of an earlier scan
    burst.insert(30, scan("bad", "4000000000012")); // a bad check digit
    let (tx, rx) = tokio::sync::mpsc::channel(burst.len());
    for s in &burst {
        tx.send(s.clone()).await.unwrap();
    }
    let mut answers = app
        .sales()
        .scan_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("scan stream")
        .into_inner();

    let (mut milk_units, mut bread_units) = (0, 0);
    let mut first_answers = std::collections::HashMap::new();
    for sent in &burst {
        let answer = answers.message().await.expect("an answer").expect("the stream stays open");
        assert_eq!(answer.scan_id, sent.scan_id, "answered in the order sent");
        match answer.result {
            Some(scan_response::Result::Line(line)) => {
                if let Some(first) = first_answers.get(&sent.scan_id) {
                    assert_eq!(&line, first, "a retried scan id answers its first line");
                    continue;
                }
                let units = if sent.code == milk { &mut milk_units } else { &mut bread_units };
                *units += 1;
                assert_eq!(line.quantity, *units, "{}: each scan adds one, in order", sent.scan_id);
                first_answers.insert(sent.scan_id.clone(), line);
            }
            Some(scan_response::Result::Error(e)) => {
                assert_eq!(sent.scan_id, "bad");
                assert_eq!((e.code.as_str(), e.field.as_str()), ("INVALID_ARGUMENT", "code"));
            }
            None => panic!("an answer without a result"),
        }
    }
    assert_eq!((milk_units, bread_units), (30, 10));
    drop(tx);
    assert!(answers.message().await.expect("the stream ends cleanly").is_none());
    let cart = app
        .sales()
        .get_cart(GetCartRequest { store_id: "store-1".into(), terminal_id: "till-1".into() })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(
        cart.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(),
        vec![("SKU-0001", 30), ("SKU-0002", 10)]
    );
}
