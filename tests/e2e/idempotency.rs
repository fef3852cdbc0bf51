//! Retries are normal on shop Wi-Fi: mutating RPCs with the same key change things once.

use redstore_proto::inventory::{AdjustStockRequest, AdjustmentReason, ApplySaleRequest, SaleLine};
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
        lines: vec![SaleLine { sku: "SKU-0005".into(), quantity: 2 }, SaleLine { sku: "SKU-0005".into(), quantity: 1 }],
    };
    let first = app.inventory().apply_sale(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.stock[0].quantity, 18 - 3, "repeated skus are merged");
    let again = app.inventory().apply_sale(req).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(app.stock("store-1", "SKU-0005").await, 15);
}
