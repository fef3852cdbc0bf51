//! Retries are normal on shop Wi-Fi: mutating RPCs with the same key change things once.

use redstore_proto::inventory::apply_sale_outcome::Outcome;
use redstore_proto::inventory::{
    AdjustStockRequest, AdjustmentReason, ApplySaleOutcome, ApplySaleRequest, ApplySaleResponse, ApplySalesRequest,
    ListAppliedCheckoutsRequest, SaleLine,
};
use redstore_proto::sales::{AddCartItemRequest, GetCartRequest};
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_apply_once_per_key() {
    let app = TestApp::spawn().await;
    let req = AdjustStockRequest {
        idempotency_key: key(),
        store_id: "store-1".into(),
        sku: "SKU-0009".into(),
        quantity_delta: 24,
        reason: AdjustmentReason::Received as i32,
        note: "pallet 7".into(),
    };
    let first = app.inventory().adjust_stock(req.clone()).await.unwrap().into_inner();
    let second = app.inventory().adjust_stock(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, second, "the retry gets the first answer");
    assert_eq!(app.stock("store-1", "SKU-0009").await, 16 + 24);

    let mut other = req.clone();
    other.quantity_delta = 25;
    let err = app.inventory().adjust_stock(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("idempotency_key"), "{}", err.message());
    assert_eq!(app.stock("store-1", "SKU-0009").await, 40);

    // Damaged goods in a strict store cannot take stock below zero.
    let err = app
        .inventory()
        .adjust_stock(AdjustStockRequest {
            idempotency_key: key(),
            store_id: "store-1".into(),
            sku: "SKU-0009".into(),
            quantity_delta: -41,
            reason: AdjustmentReason::Damaged as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("requested 41, available 40"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_adds_apply_once_per_key() {
    let app = TestApp::spawn().await;
    let req = AddCartItemRequest {
        idempotency_key: key(),
        store_id: "store-1".into(),
        terminal_id: "till-2".into(),
        sku: "SKU-0011".into(),
        quantity: 3,
    };
    app.sales().add_cart_item(req.clone()).await.unwrap();
    app.sales().add_cart_item(req.clone()).await.unwrap();
    let cart = app
        .sales()
        .get_cart(GetCartRequest { store_id: "store-1".into(), terminal_id: "till-2".into() })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(cart.lines.len(), 1);
    assert_eq!(cart.lines[0].quantity, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sale_is_idempotent_by_sale_id() {
    let app = TestApp::spawn().await;
    let req = ApplySaleRequest {
        sale_id: "external-sale-1".into(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        lines: vec![
            SaleLine { sku: "SKU-0005".into(), quantity: 2, unit_price: None, ..Default::default() },
            SaleLine { sku: "SKU-0005".into(), quantity: 1, unit_price: None, ..Default::default() },
        ],
        ..Default::default()
    };
    let first = app.internal().apply_sale(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.stock[0].quantity, 18 - 3, "repeated skus are merged");
    let again = app.internal().apply_sale(req).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(app.stock("store-1", "SKU-0005").await, 15);
}

/// Over gRPC, a checkout's key makes a retry with a fresh sale id a replay of the first attempt
/// (its sale id and sale), the key with another request ALREADY_EXISTS; ListAppliedCheckouts lists
/// it (keys only, or in full) and names a bad argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sale_under_a_checkout_key_is_applied_once_and_listed() {
    let app = TestApp::spawn().await;
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let attempt = |sale_id: &str, quantity: i64| ApplySaleRequest {
        sale_id: sale_id.into(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        lines: vec![SaleLine { sku: "SKU-0005".into(), quantity, unit_price: None, ..Default::default() }],
        checkout_key: "checkout-1".into(),
        checkout_fingerprint: format!("fp-{quantity}").into_bytes(),
        sale: format!("sale {sale_id}").into_bytes(),
    };
    let first = app.internal().apply_sale(attempt("s-1", 2)).await.unwrap().into_inner();
    assert_eq!(first.sale_id, "s-1");
    let retry = app.internal().apply_sale(attempt("s-2", 2)).await.unwrap().into_inner();
    assert_eq!((retry.sale_id.as_str(), retry.sale.as_slice()), ("s-1", &b"sale s-1"[..]));
    assert_eq!(app.stock("store-1", "SKU-0005").await, 16);
    let err = app.internal().apply_sale(attempt("s-3", 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("checkout-1"), "{err:?}");
    assert_eq!(app.stock("store-1", "SKU-0005").await, 16);
    let mut no_fingerprint = attempt("s-4", 1);
    no_fingerprint.checkout_fingerprint.clear();
    let err = app.internal().apply_sale(no_fingerprint).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("checkout_fingerprint"), "{err:?}");

    let list = |keys_only: bool| ListAppliedCheckoutsRequest {
        store_id: "store-1".into(),
        applied_from_ms: started_ms,
        applied_before_ms: started_ms + 3_600_000,
        keys_only,
        ..Default::default()
    };
    let full = app.internal().list_applied_checkouts(list(false)).await.unwrap().into_inner().checkouts;
    assert_eq!(full.len(), 1);
    assert_eq!((full[0].checkout_key.as_str(), full[0].checkout_fingerprint.as_slice()), ("checkout-1", &b"fp-2"[..]));
    let answer = full[0].answer.as_ref().expect("the stored answer");
    assert_eq!((answer.sale_id.as_str(), answer.sale.as_slice()), ("s-1", &b"sale s-1"[..]));
    let keys = app.internal().list_applied_checkouts(list(true)).await.unwrap().into_inner().checkouts;
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].checkout_key.as_str(), keys[0].answer.is_none()), ("checkout-1", true));
    let backwards = ListAppliedCheckoutsRequest { applied_before_ms: started_ms, ..list(false) };
    let err = app.internal().list_applied_checkouts(backwards).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("applied_before_ms"), "{err:?}");
    let too_many = ListAppliedCheckoutsRequest { limit: 1001, ..list(false) };
    let err = app.internal().list_applied_checkouts(too_many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("limit"), "{err:?}");
}

fn applied(outcome: &ApplySaleOutcome) -> &ApplySaleResponse {
    match &outcome.outcome {
        Some(Outcome::Applied(applied)) => applied,
        other => panic!("expected the sale applied, got {other:?}"),
    }
}

fn refused(outcome: &ApplySaleOutcome, code: Code, needle: &str) {
    match &outcome.outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(Code::from(e.code), code, "wrong code; message: {:?}", e.message);
            assert!(e.message.contains(needle), "message {:?} should mention {needle:?}", e.message);
        }
        other => panic!("expected the sale refused with {code:?}, got {other:?}"),
    }
}

/// A chain's batch: one call whose sales name their own stores (the call's store_id empty), as
/// the checkout saga sends them. Each store's sales apply in order under its own policy, one
/// store's refusal leaves the other's sale applied, and a retry of the whole call answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sales_of_many_stores_answers_each_in_its_store() {
    let app = TestApp::spawn().await;
    let (strict, negative) = (app.stock("store-1", "SKU-0006").await, app.stock("store-2", "SKU-0006").await);
    let sale = |id: &str, store: &str, quantity: i64| ApplySaleRequest {
        sale_id: id.into(),
        store_id: store.into(),
        terminal_id: "till-1".into(),
        lines: vec![SaleLine { sku: "SKU-0006".into(), quantity, unit_price: None, ..Default::default() }],
        ..Default::default()
    };
    let req = ApplySalesRequest {
        store_id: String::new(),
        sales: vec![
            sale("chain-sale-1", "store-2", negative + 1),
            sale("chain-sale-2", "store-1", strict + 1),
            sale("chain-sale-3", "store-1", 1),
            sale("chain-sale-4", "store-2", 1),
        ],
    };
    let first = app.internal().apply_sales(req.clone()).await.expect("apply a chain's sales").into_inner();
    assert_eq!(first.outcomes.len(), 4, "one outcome per sale, in the call's order");
    // store-2 sells below zero; store-1 never does, and its refusal touches nothing else.
    assert_eq!(applied(&first.outcomes[0]).stock[0].quantity, -1);
    assert_eq!(applied(&first.outcomes[0]).negative_skus, ["SKU-0006"]);
    refused(&first.outcomes[1], Code::FailedPrecondition, "insufficient stock");
    assert_eq!(applied(&first.outcomes[2]).stock[0].quantity, strict - 1);
    assert_eq!(applied(&first.outcomes[3]).stock[0].quantity, -2, "a store's sales apply in the call's order");
    assert_eq!((app.stock("store-1", "SKU-0006").await, app.stock("store-2", "SKU-0006").await), (strict - 1, -2));

    let again = app.internal().apply_sales(req).await.expect("apply a chain's sales again").into_inner();
    for i in [0, 2, 3] {
        assert_eq!(applied(&again.outcomes[i]), applied(&first.outcomes[i]), "sale {i} replayed");
    }
    refused(&again.outcomes[1], Code::FailedPrecondition, "insufficient stock");
    assert_eq!((app.stock("store-1", "SKU-0006").await, app.stock("store-2", "SKU-0006").await), (strict - 1, -2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sales_answers_each_sale_as_apply_sale_would() {
    let app = TestApp::spawn().await;
    let before = app.stock("store-1", "SKU-0006").await;
    let sale = |id: &str, sku: &str, quantity: i64| ApplySaleRequest {
        sale_id: id.into(),
        store_id: String::new(),
        terminal_id: "till-1".into(),
        lines: vec![SaleLine { sku: sku.into(), quantity, unit_price: None, ..Default::default() }],
        ..Default::default()
    };
    let req = ApplySalesRequest {
        store_id: "store-1".into(),
        sales: vec![
            sale("batch-sale-1", "SKU-0006", 2),
            // More than is left after the first: store-1 never sells below zero.
            sale("batch-sale-2", "SKU-0006", before - 1),
            sale("batch-sale-3", "NO-SUCH-SKU", 1),
            sale("batch-sale-4", "SKU-0006", 1),
        ],
    };
    let first = app.internal().apply_sales(req.clone()).await.expect("apply sales").into_inner();
    assert_eq!(first.outcomes.len(), 4, "one outcome per sale");
    assert_eq!(applied(&first.outcomes[0]).stock[0].quantity, before - 2);
    refused(&first.outcomes[1], Code::FailedPrecondition, "insufficient stock");
    refused(&first.outcomes[2], Code::NotFound, "NO-SUCH-SKU");
    assert_eq!(applied(&first.outcomes[3]).stock[0].quantity, before - 3, "a refused sale does not stop the next");
    assert_eq!(app.stock("store-1", "SKU-0006").await, before - 3);

    // Sent again (a retry after a lost answer): the same answers, nothing taken twice.
    let again = app.internal().apply_sales(req).await.expect("apply sales again").into_inner();
    assert_eq!(applied(&again.outcomes[0]), applied(&first.outcomes[0]));
    refused(&again.outcomes[1], Code::FailedPrecondition, "insufficient stock");
    refused(&again.outcomes[2], Code::NotFound, "NO-SUCH-SKU");
    assert_eq!(applied(&again.outcomes[3]), applied(&first.outcomes[3]));
    assert_eq!(app.stock("store-1", "SKU-0006").await, before - 3);

    // Either RPC replays the other's sale.
    let alone = ApplySaleRequest { store_id: "store-1".into(), ..sale("batch-sale-1", "SKU-0006", 2) };
    let replayed = app.internal().apply_sale(alone).await.expect("apply sale alone").into_inner();
    assert_eq!(&replayed, applied(&first.outcomes[0]));
    // A sale id used for other lines is refused in its own outcome.
    let reused = ApplySalesRequest { store_id: "store-1".into(), sales: vec![sale("batch-sale-4", "SKU-0006", 5)] };
    let reused = app.internal().apply_sales(reused).await.expect("apply sales").into_inner();
    refused(&reused.outcomes[0], Code::AlreadyExists, "batch-sale-4");
    assert_eq!(app.stock("store-1", "SKU-0006").await, before - 3);
    // One sale twice in one call is applied once; both get its answer.
    let twice = ApplySalesRequest {
        store_id: "store-1".into(),
        sales: vec![sale("batch-sale-5", "SKU-0006", 1), sale("batch-sale-5", "SKU-0006", 1)],
    };
    let twice = app.internal().apply_sales(twice).await.expect("apply sales").into_inner();
    assert_eq!(applied(&twice.outcomes[0]), applied(&twice.outcomes[1]));
    assert_eq!(app.stock("store-1", "SKU-0006").await, before - 4);
}
