//! Every bad input gets its precise gRPC status, with a message naming the field at fault, and
//! nothing is written: no stock change, no sale, no inventory event, no product.

use std::fmt::Debug;

use redstore_proto::common::{Money, PageRequest};
use redstore_proto::inventory::{
    AdjustStockRequest, AdjustmentReason, ApplyRefundRequest, ApplySaleRequest, ApplySalesRequest,
    CreateProductRequest, GetProductRequest, GetProductsRequest, GetStockRequest, ListProductsRequest,
    ListStockRequest, ListStoresRequest, LookupBarcodeRequest, SaleLine, StockLevel,
};
use redstore_proto::sales::{GetSaleRequest, ListSalesRequest, Sale, Tender, TenderType};
use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::watch_inventory_response::Item;
use tonic::{Code, Status};

use crate::helpers::*;

/// Everything a store has written: its stock rows (with their last sequence numbers), its sales
/// and the sequence number of its newest inventory event.
#[derive(Debug, PartialEq)]
pub(crate) struct Written {
    stock: Vec<StockLevel>,
    sales: Vec<Sale>,
    inventory_seq: u64,
}

pub(crate) async fn written(app: &TestApp, store_id: &str) -> Written {
    let big_page = || Some(PageRequest { page_size: 500, page_token: String::new() });
    let stock = app
        .inventory()
        .list_stock(ListStockRequest { store_id: store_id.into(), page: big_page() })
        .await
        .expect("list stock")
        .into_inner();
    assert!(stock.page.unwrap_or_default().next_page_token.is_empty(), "stock fits in one page");
    let sales = app
        .sales()
        .list_sales(ListSalesRequest { store_id: store_id.into(), page: big_page(), ..Default::default() })
        .await
        .expect("list sales")
        .into_inner();
    assert!(sales.page.unwrap_or_default().next_page_token.is_empty(), "sales fit in one page");
    Written { stock: stock.stock, sales: sales.sales, inventory_seq: inventory_seq(app, store_id).await }
}

/// The store's newest inventory event sequence, from the snapshot that opens a watch.
async fn inventory_seq(app: &TestApp, store_id: &str) -> u64 {
    let mut watch = app
        .stream()
        .watch_inventory(WatchInventoryRequest {
            store_id: store_id.into(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .expect("watch inventory")
        .into_inner();
    let first = watch.message().await.expect("first stream item").expect("the stream opens with a snapshot");
    match first.item {
        Some(Item::Snapshot(snapshot)) => snapshot.as_of_seq,
        other => panic!("expected a snapshot first, got {other:?}"),
    }
}

pub(crate) async fn assert_nothing_written(app: &TestApp, store_id: &str, before: &Written) {
    let after = written(app, store_id).await;
    assert_eq!(&after, before, "a rejected request must not change stock, sales or events of {store_id}");
}

/// Asserts the call failed with `code` and a message containing every one of `needles`.
#[track_caller]
pub(crate) fn expect_status<T: Debug>(result: Result<T, Status>, code: Code, needles: &[&str]) -> Status {
    let status = match result {
        Ok(resp) => panic!("expected {code:?} mentioning {needles:?}, but the call succeeded: {resp:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "wrong code; message: {:?}", status.message());
    for needle in needles {
        assert!(status.message().contains(needle), "message {:?} should mention {needle:?}", status.message());
    }
    status
}

fn usd(minor: i64) -> Money {
    Money { currency_code: "USD".into(), units_minor: minor }
}

pub(crate) fn product_request(sku: &str, price: Option<Money>, barcodes: &[&str]) -> CreateProductRequest {
    CreateProductRequest {
        idempotency_key: String::new(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        price,
        barcodes: barcodes.iter().map(|b| (*b).to_owned()).collect(),
    }
}

pub(crate) fn adjust(store_id: &str, sku: &str, delta: i64, reason: AdjustmentReason) -> AdjustStockRequest {
    AdjustStockRequest {
        idempotency_key: key(),
        store_id: store_id.into(),
        sku: sku.into(),
        quantity_delta: delta,
        reason: reason as i32,
        note: String::new(),
    }
}

async fn product_count(app: &TestApp) -> usize {
    app.inventory()
        .list_products(ListProductsRequest {
            page: Some(PageRequest { page_size: 500, page_token: String::new() }),
            include_inactive: true,
        })
        .await
        .expect("list products")
        .into_inner()
        .products
        .len()
}

async fn assert_no_product(app: &TestApp, sku: &str) {
    let got = app.inventory().get_product(GetProductRequest { sku: sku.into() }).await;
    expect_status(got, Code::NotFound, &[sku]);
}

async fn sku_of_barcode(app: &TestApp, barcode: &str) -> Result<String, Status> {
    app.inventory()
        .lookup_barcode(LookupBarcodeRequest { barcode: barcode.into() })
        .await
        .map(|r| r.into_inner().product.expect("product").sku)
}

/// A demo barcode with its check digit changed.
fn bad_check_digit(code: &str) -> String {
    let (payload, last) = code.split_at(code.len() - 1);
    let wrong = (last.parse::<u8>().expect("digit") + 1) % 10;
    format!("{payload}{wrong}")
}

// ---------------------------------------------------------------------------------------------
// Checkout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_without_idempotency_key_names_the_field() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;
    assert!(before.inventory_seq >= 1, "the demo seed's receipt is in the store's inventory log");
    assert!(before.sales.is_empty());

    for blank in ["", "   "] {
        let req = checkout(blank, "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(500)]);
        expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["idempotency_key", "required"]);
    }

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_of_an_empty_cart_without_lines_is_a_failed_precondition() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[], vec![cash(500)]);
    let status = expect_status(app.sales().checkout(req).await, Code::FailedPrecondition, &["till-1", "empty"]);
    assert!(status.message().contains("cart"), "{}", status.message());

    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_and_negative_quantities_name_the_line() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1), ("SKU-0002", 0)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["lines[1].quantity", "positive"]);

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", -2)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["lines[0].quantity", "-2"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
    assert_eq!(app.stock("store-1", "SKU-0002").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_or_malformed_sku_names_the_line() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1), ("", 1)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["lines[1].sku", "required"]);

    let req = checkout(&key(), "store-1", "till-1", &[("SKU 0001", 1)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["lines[0].sku"]);

    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sku_is_not_found_and_named() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1), ("SKU-9999", 1)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::NotFound, &["SKU-9999", "lines[1].sku"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_store_or_terminal_is_not_found() {
    let app = TestApp::spawn().await;
    let before_1 = written(&app, "store-1").await;
    let before_2 = written(&app, "store-2").await;

    let req = checkout(&key(), "store-9", "till-1", &[("SKU-0001", 1)], vec![cash(500)]);
    expect_status(app.sales().checkout(req).await, Code::NotFound, &["store-9"]);

    let req = checkout(&key(), "store-1", "till-9", &[("SKU-0001", 1)], vec![cash(500)]);
    expect_status(app.sales().checkout(req).await, Code::NotFound, &["till-9", "store-1"]);

    // A terminal of one store is not a terminal of another.
    app.create_store("store-3", redstore_proto::inventory::OversellPolicy::Strict, &["till-x"]).await;
    let req = checkout(&key(), "store-1", "till-x", &[("SKU-0001", 1)], vec![cash(500)]);
    expect_status(app.sales().checkout(req).await, Code::NotFound, &["till-x"]);

    let req = checkout(&key(), "store 1", "till-1", &[("SKU-0001", 1)], vec![cash(500)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["store_id"]);
    let req = checkout(&key(), "store-1", "", &[("SKU-0001", 1)], vec![cash(500)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["terminal_id"]);

    assert_nothing_written(&app, "store-1", &before_1).await;
    assert_nothing_written(&app, "store-2", &before_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenders_that_do_not_cover_the_total_say_what_is_missing() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    // 2 × 1.19 EUR = 2.38 EUR; 2.00 EUR tendered.
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(200)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders", "0.38 EUR is missing"]);

    // Split tenders that together still fall short.
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![card(100), cash(100)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders", "0.38 EUR is missing"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tender_in_another_currency_names_its_currency_code() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let usd_cash = Tender { r#type: TenderType::Cash as i32, amount: Some(usd(500)) };
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![usd_cash.clone()]);
    expect_status(
        app.sales().checkout(req).await,
        Code::InvalidArgument,
        &["tenders[0].amount.currency_code", "USD", "EUR"],
    );

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(100), usd_cash]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders[1].amount.currency_code"]);

    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_in_mixed_currencies_name_the_odd_line() {
    let app = TestApp::spawn().await;
    app.inventory().create_product(product_request("SKU-USD-1", Some(usd(500)), &[])).await.expect("usd product");
    app.receive("store-1", "SKU-USD-1", 5).await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1), ("SKU-USD-1", 1)], vec![cash(5000)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["lines[1].sku", "SKU-USD-1", "USD"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
    assert_eq!(app.stock("store-1", "SKU-USD-1").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_without_tenders_or_with_bad_tenders_names_them() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders", "at least one tender"]);

    let unspecified = Tender { r#type: TenderType::Unspecified as i32, amount: Some(eur(500)) };
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![unspecified]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders[0].type"]);

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(500), cash(0)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders[1].amount.units_minor"]);

    let no_amount = Tender { r#type: TenderType::Card as i32, amount: None };
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![no_amount]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders[0].amount"]);

    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_cannot_be_overpaid() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    // 1.19 EUR due; a card of 2.00 EUR would need 0.81 EUR of change, which only cash gives.
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![card(200)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders", "only cash gives change"]);

    // Two cards that together exceed the total are refused as well.
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![card(100), card(100)]);
    expect_status(app.sales().checkout(req).await, Code::InvalidArgument, &["tenders", "only cash gives change"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_store_oversell_names_sku_requested_and_available() {
    let app = TestApp::spawn().await;
    assert_eq!(app.stock("store-1", "SKU-0019").await, 8);
    let before = written(&app, "store-1").await;

    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0019", 9)], vec![cash(10_000)]);
    expect_status(
        app.sales().checkout(req).await,
        Code::FailedPrecondition,
        &["SKU-0019", "requested 9", "available 8"],
    );

    // Repeated lines of one sku are added up before the stock check.
    let req = checkout(&key(), "store-1", "till-1", &[("SKU-0019", 5), ("SKU-0019", 4)], vec![cash(10_000)]);
    expect_status(
        app.sales().checkout(req).await,
        Code::FailedPrecondition,
        &["SKU-0019", "requested 9", "available 8"],
    );

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0019").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_only_the_last_line_is_short_no_line_changes_stock() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;
    let seq_before = |sku: &str| before.stock.iter().find(|s| s.sku == sku).expect("stock row").last_seq;

    let lines = [("SKU-0001", 2), ("SKU-0002", 1), ("SKU-0011", 3), ("SKU-0019", 9)];
    let req = checkout(&key(), "store-1", "till-1", &lines, vec![cash(100_000)]);
    expect_status(
        app.sales().checkout(req).await,
        Code::FailedPrecondition,
        &["SKU-0019", "requested 9", "available 8"],
    );

    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
    assert_eq!(app.stock("store-1", "SKU-0002").await, 12);
    assert_eq!(app.stock("store-1", "SKU-0011").await, 60);
    assert_eq!(app.stock("store-1", "SKU-0019").await, 8);
    for sku in ["SKU-0001", "SKU-0002", "SKU-0011", "SKU-0019"] {
        let level = app
            .inventory()
            .get_stock(GetStockRequest { store_id: "store-1".into(), sku: sku.into() })
            .await
            .expect("get stock")
            .into_inner()
            .stock
            .expect("stock");
        assert_eq!(level.last_seq, seq_before(sku), "{sku} must not have been touched");
    }
    assert_nothing_written(&app, "store-1", &before).await;

    // The store still sells what it has: the same sale without the short line goes through.
    let req = checkout(&key(), "store-1", "till-1", &lines[..3], vec![cash(100_000)]);
    app.sales().checkout(req).await.expect("checkout of the lines in stock");
    let after = written(&app, "store-1").await;
    assert_eq!(after.inventory_seq, before.inventory_seq + 1, "a sale writes exactly one inventory event");
    assert_eq!(after.sales.len(), before.sales.len() + 1);
    assert_eq!(app.stock("store-1", "SKU-0001").await, 38);
    assert_eq!(app.stock("store-1", "SKU-0019").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_with_another_request_is_already_exists() {
    let app = TestApp::spawn().await;
    let k = key();

    let first = app
        .sales()
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)]))
        .await
        .expect("first checkout")
        .into_inner()
        .sale
        .expect("sale");
    assert_eq!(first.change, Some(eur(81)));
    let before = written(&app, "store-1").await;
    assert_eq!(before.sales.len(), 1);

    // Same key, different lines.
    let other = checkout(&k, "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(300)]);
    expect_status(app.sales().checkout(other).await, Code::AlreadyExists, &["idempotency_key", &k]);
    // Same key, different terminal.
    let other = checkout(&k, "store-1", "till-2", &[("SKU-0001", 1)], vec![cash(200)]);
    expect_status(app.sales().checkout(other).await, Code::AlreadyExists, &["idempotency_key"]);

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 39);
    let stored = app
        .sales()
        .get_sale(GetSaleRequest { sale_id: first.sale_id.clone() })
        .await
        .expect("get sale")
        .into_inner()
        .sale
        .expect("sale");
    assert_eq!(stored, first, "the first sale is unchanged");

    // The identical request is a retry: the same sale, nothing new.
    let retry = app
        .sales()
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)]))
        .await
        .expect("retry")
        .into_inner()
        .sale
        .expect("sale");
    assert_eq!(retry, first);
    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_checkout_does_not_use_up_its_idempotency_key() {
    let app = TestApp::spawn().await;
    let k = key();

    let short = checkout(&k, "store-1", "till-1", &[("SKU-0019", 9)], vec![cash(10_000)]);
    expect_status(app.sales().checkout(short).await, Code::FailedPrecondition, &["SKU-0019"]);

    let fixed = checkout(&k, "store-1", "till-1", &[("SKU-0019", 8)], vec![cash(10_000)]);
    let sale = app.sales().checkout(fixed).await.expect("corrected checkout").into_inner().sale.expect("sale");
    assert_eq!(sale.total, Some(eur(8 * 699)));
    assert_eq!(app.stock("store-1", "SKU-0019").await, 0);
}

// ---------------------------------------------------------------------------------------------
// Inventory: products and barcodes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barcode_with_a_bad_check_digit_is_rejected_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let count = product_count(&app).await;

    // 4006381333931 is a valid EAN-13; its check digit is 1.
    let req = product_request("SKU-NEW", Some(eur(100)), &["4006381333932"]);
    expect_status(
        app.inventory().create_product(req).await,
        Code::InvalidArgument,
        &["barcodes[0]", "check digit", "should be 1"],
    );

    // The bad one in second place is named by its index; the good first one is not registered.
    let req = product_request("SKU-NEW", Some(eur(100)), &["4006381333931", &bad_check_digit(&demo_barcode(3))]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["barcodes[1]", "check digit"]);

    assert_no_product(&app, "SKU-NEW").await;
    expect_status(
        app.inventory().lookup_barcode(LookupBarcodeRequest { barcode: "4006381333931".into() }).await,
        Code::NotFound,
        &["4006381333931"],
    );
    assert_eq!(product_count(&app).await, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barcode_of_the_wrong_length_or_with_letters_is_rejected() {
    let app = TestApp::spawn().await;
    let count = product_count(&app).await;

    let req = product_request("SKU-NEW", Some(eur(100)), &["40063813339"]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["barcodes[0]", "11 digits"]);

    let req = product_request("SKU-NEW", Some(eur(100)), &["40063813339310"]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["barcodes[0]", "14 digits"]);

    let req = product_request("SKU-NEW", Some(eur(100)), &["4006381333931", "40063813339X1"]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["barcodes[1]", "only digits"]);

    // The same code twice in one request.
    let req = product_request("SKU-NEW", Some(eur(100)), &["4006381333931", "4006381333931"]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["barcodes[1]", "twice"]);

    assert_no_product(&app, "SKU-NEW").await;
    assert_eq!(product_count(&app).await, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barcode_of_another_product_is_already_exists_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let count = product_count(&app).await;
    let taken = demo_barcode(1);

    let req = product_request("SKU-NEW", Some(eur(100)), &["4006381333931", &taken]);
    expect_status(app.inventory().create_product(req).await, Code::AlreadyExists, &["barcodes[1]", "SKU-0001"]);

    // Neither the product nor its other (free) barcode was kept.
    assert_no_product(&app, "SKU-NEW").await;
    expect_status(
        app.inventory().lookup_barcode(LookupBarcodeRequest { barcode: "4006381333931".into() }).await,
        Code::NotFound,
        &[],
    );
    assert_eq!(sku_of_barcode(&app, &taken).await.expect("lookup"), "SKU-0001");
    assert_eq!(product_count(&app).await, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_sku_is_already_exists_and_the_original_is_unchanged() {
    let app = TestApp::spawn().await;
    let original = app
        .inventory()
        .get_product(GetProductRequest { sku: "SKU-0001".into() })
        .await
        .expect("get product")
        .into_inner()
        .product
        .expect("product");

    let req = CreateProductRequest {
        idempotency_key: String::new(),
        sku: "SKU-0001".into(),
        name: "Impostor".into(),
        price: Some(eur(1)),
        barcodes: vec!["4006381333931".into()],
    };
    expect_status(app.inventory().create_product(req).await, Code::AlreadyExists, &["SKU-0001"]);

    let now = app
        .inventory()
        .get_product(GetProductRequest { sku: "SKU-0001".into() })
        .await
        .expect("get product")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(now, original);
    assert_eq!(now.price, Some(eur(119)));
    expect_status(
        app.inventory().lookup_barcode(LookupBarcodeRequest { barcode: "4006381333931".into() }).await,
        Code::NotFound,
        &[],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prices_name_the_price_field() {
    let app = TestApp::spawn().await;
    let count = product_count(&app).await;

    let req = product_request("SKU-NEW", Some(eur(-1)), &[]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["price.units_minor", "-1"]);

    let lower = Money { currency_code: "eur".into(), units_minor: 100 };
    let req = product_request("SKU-NEW", Some(lower), &[]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["price.currency_code", "eur"]);

    let euro = Money { currency_code: "EURO".into(), units_minor: 100 };
    let req = product_request("SKU-NEW", Some(euro), &[]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["price.currency_code"]);

    let req = product_request("SKU-NEW", None, &[]);
    expect_status(app.inventory().create_product(req).await, Code::InvalidArgument, &["price", "required"]);

    let mut nameless = product_request("SKU-NEW", Some(eur(100)), &[]);
    nameless.name = "  ".into();
    expect_status(app.inventory().create_product(nameless).await, Code::InvalidArgument, &["name", "required"]);

    assert_no_product(&app, "SKU-NEW").await;
    assert_eq!(product_count(&app).await, count);
}

// ---------------------------------------------------------------------------------------------
// Inventory: stock adjustments
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stock_adjustments_are_rejected_and_change_nothing() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;

    let zero = adjust("store-1", "SKU-0001", 0, AdjustmentReason::Received);
    expect_status(app.inventory().adjust_stock(zero).await, Code::InvalidArgument, &["quantity_delta", "zero"]);

    let unspecified = adjust("store-1", "SKU-0001", 5, AdjustmentReason::Unspecified);
    expect_status(app.inventory().adjust_stock(unspecified).await, Code::InvalidArgument, &["reason"]);

    let mut out_of_range = adjust("store-1", "SKU-0001", 5, AdjustmentReason::Received);
    out_of_range.reason = 99;
    expect_status(app.inventory().adjust_stock(out_of_range).await, Code::InvalidArgument, &["reason"]);

    let mut keyless = adjust("store-1", "SKU-0001", 5, AdjustmentReason::Received);
    keyless.idempotency_key = String::new();
    expect_status(app.inventory().adjust_stock(keyless).await, Code::InvalidArgument, &["idempotency_key"]);

    let unknown_sku = adjust("store-1", "SKU-9999", 5, AdjustmentReason::Received);
    expect_status(app.inventory().adjust_stock(unknown_sku).await, Code::NotFound, &["SKU-9999"]);

    let unknown_store = adjust("store-9", "SKU-0001", 5, AdjustmentReason::Received);
    expect_status(app.inventory().adjust_stock(unknown_store).await, Code::NotFound, &["store-9"]);

    // A strict store does not write off more than it has.
    let too_many = adjust("store-1", "SKU-0001", -41, AdjustmentReason::Damaged);
    expect_status(
        app.inventory().adjust_stock(too_many).await,
        Code::FailedPrecondition,
        &["SKU-0001", "requested 41", "available 40"],
    );

    assert_nothing_written(&app, "store-1", &before).await;
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40);
}

// ---------------------------------------------------------------------------------------------
// Inventory: barcode lookup
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_rejects_bad_codes_and_does_not_find_unknown_ones() {
    let app = TestApp::spawn().await;
    assert_eq!(sku_of_barcode(&app, &demo_barcode(1)).await.expect("demo barcode"), "SKU-0001");

    let typo = bad_check_digit(&demo_barcode(1));
    expect_status(sku_of_barcode(&app, &typo).await, Code::InvalidArgument, &["barcode", "check digit"]);

    let status = expect_status(sku_of_barcode(&app, "12345").await, Code::InvalidArgument, &["barcode", "5 digits"]);
    assert!(!status.message().contains("check digit"), "{}", status.message());

    expect_status(sku_of_barcode(&app, "").await, Code::InvalidArgument, &["barcode"]);

    expect_status(sku_of_barcode(&app, "4006381333931").await, Code::NotFound, &["4006381333931"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upc_a_and_ean_13_forms_of_a_code_are_the_same_barcode() {
    let app = TestApp::spawn().await;

    // Registered in its EAN-13 form (a leading 0), scanned as UPC-A.
    app.create_product("SKU-UPC-1", 250, &["0036000291452"]).await;
    assert_eq!(sku_of_barcode(&app, "036000291452").await.expect("UPC-A lookup"), "SKU-UPC-1");
    assert_eq!(sku_of_barcode(&app, "0036000291452").await.expect("EAN-13 lookup"), "SKU-UPC-1");

    // Registered as UPC-A, stored and found in its 13-digit form.
    app.create_product("SKU-UPC-2", 250, &["012345678905"]).await;
    let product = app
        .inventory()
        .lookup_barcode(LookupBarcodeRequest { barcode: "0012345678905".into() })
        .await
        .expect("lookup")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(product.sku, "SKU-UPC-2");
    assert_eq!(product.barcodes, vec!["0012345678905".to_owned()]);

    // The other form of a taken code is taken too.
    let req = product_request("SKU-UPC-3", Some(eur(100)), &["036000291452"]);
    expect_status(app.inventory().create_product(req).await, Code::AlreadyExists, &["barcodes[0]", "SKU-UPC-1"]);
    assert_no_product(&app, "SKU-UPC-3").await;
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_above_500_is_rejected_everywhere() {
    let app = TestApp::spawn().await;
    let page = |size: u32| Some(PageRequest { page_size: size, page_token: String::new() });

    let products =
        app.inventory().list_products(ListProductsRequest { page: page(501), include_inactive: false }).await;
    expect_status(products, Code::InvalidArgument, &["page.page_size", "501", "500"]);
    let stores = app.inventory().list_stores(ListStoresRequest { page: page(501) }).await;
    expect_status(stores, Code::InvalidArgument, &["page.page_size"]);
    let stock = app.inventory().list_stock(ListStockRequest { store_id: "store-1".into(), page: page(501) }).await;
    expect_status(stock, Code::InvalidArgument, &["page.page_size"]);
    let sales = app
        .sales()
        .list_sales(ListSalesRequest { store_id: "store-1".into(), page: page(501), ..Default::default() })
        .await;
    expect_status(sales, Code::InvalidArgument, &["page.page_size"]);

    // 500 is the maximum, not an error.
    let products = app
        .inventory()
        .list_products(ListProductsRequest { page: page(500), include_inactive: false })
        .await
        .expect("page of 500")
        .into_inner();
    assert_eq!(products.products.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_page_token_is_rejected() {
    let app = TestApp::spawn().await;
    let page = Some(PageRequest { page_size: 5, page_token: "garbage".into() });

    let products =
        app.inventory().list_products(ListProductsRequest { page: page.clone(), include_inactive: false }).await;
    expect_status(products, Code::InvalidArgument, &["page.page_token"]);
    let stock = app.inventory().list_stock(ListStockRequest { store_id: "store-1".into(), page: page.clone() }).await;
    expect_status(stock, Code::InvalidArgument, &["page.page_token"]);
    let sales =
        app.sales().list_sales(ListSalesRequest { store_id: "store-1".into(), page, ..Default::default() }).await;
    expect_status(sales, Code::InvalidArgument, &["page.page_token"]);

    // A token the server issued works.
    let first = app
        .inventory()
        .list_products(ListProductsRequest {
            page: Some(PageRequest { page_size: 5, page_token: String::new() }),
            include_inactive: false,
        })
        .await
        .expect("first page")
        .into_inner();
    let token = first.page.expect("page").next_page_token;
    assert!(!token.is_empty());
    let second = app
        .inventory()
        .list_products(ListProductsRequest {
            page: Some(PageRequest { page_size: 5, page_token: token }),
            include_inactive: false,
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.products.first().map(|p| p.sku.as_str()), Some("SKU-0006"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_products_answers_the_known_skus_in_one_call_and_names_a_bad_one() {
    let app = TestApp::spawn().await;
    let skus = ["SKU-0002", "NO-SUCH-SKU", "SKU-0001", "SKU-0002"].map(String::from).to_vec();
    let got =
        app.inventory().get_products(GetProductsRequest { skus }).await.expect("get products").into_inner().products;
    let mut found: Vec<(String, Option<Money>)> = got.into_iter().map(|p| (p.sku, p.price)).collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup();
    assert_eq!(found, vec![("SKU-0001".to_owned(), Some(eur(119))), ("SKU-0002".to_owned(), Some(eur(349)))]);

    let bad = vec!["SKU-0001".to_owned(), "not a sku!".to_owned()];
    expect_status(
        app.inventory().get_products(GetProductsRequest { skus: bad }).await,
        Code::InvalidArgument,
        &["skus[1]"],
    );
    let too_many = (0..1001).map(|i| format!("SKU-{i}")).collect();
    expect_status(
        app.inventory().get_products(GetProductsRequest { skus: too_many }).await,
        Code::InvalidArgument,
        &["skus", "1000"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sales_names_the_bad_sale_and_applies_nothing_of_its_call() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;
    let sale = |id: &str, store: &str, quantity: i64| ApplySaleRequest {
        sale_id: id.into(),
        store_id: store.into(),
        terminal_id: "till-1".into(),
        lines: vec![SaleLine { sku: "SKU-0001".into(), quantity, unit_price: None, ..Default::default() }],
        ..Default::default()
    };
    let call = |sales: Vec<ApplySaleRequest>| ApplySalesRequest { store_id: "store-1".into(), sales };
    let inventory = app.internal();
    expect_status(inventory.clone().apply_sales(call(vec![])).await, Code::InvalidArgument, &["sales", "at least one"]);
    let too_many = (0..257).map(|i| sale(&format!("s-{i}"), "", 1)).collect();
    expect_status(inventory.clone().apply_sales(call(too_many)).await, Code::InvalidArgument, &["sales", "256"]);
    // A good sale first, then a bad one: the call is refused whole, naming the bad sale's field.
    let cases = [
        (sale("ok-1", "", 1), sale("bad-1", "store-2", 1), "sales[1].store_id"),
        (sale("ok-2", "store-1", 1), sale("bad 2", "", 1), "sales[1].sale_id"),
        (sale("ok-3", "", 1), sale("bad-3", "", 0), "sales[1].lines[0].quantity"),
    ];
    for (good, bad, field) in cases {
        expect_status(inventory.clone().apply_sales(call(vec![good, bad])).await, Code::InvalidArgument, &[field]);
    }
    // Without the call's store_id (a chain's batch), every sale names its own.
    let unnamed =
        ApplySalesRequest { store_id: String::new(), sales: vec![sale("ok-6", "store-1", 1), sale("ok-7", "", 1)] };
    expect_status(inventory.clone().apply_sales(unnamed).await, Code::InvalidArgument, &["sales[1].store_id"]);
    let bad_store = ApplySalesRequest { store_id: "no store!".into(), sales: vec![sale("ok-4", "", 1)] };
    expect_status(inventory.clone().apply_sales(bad_store).await, Code::InvalidArgument, &["store_id"]);
    let unknown_store = ApplySalesRequest { store_id: "store-9".into(), sales: vec![sale("ok-5", "", 1)] };
    let answer = inventory.clone().apply_sales(unknown_store).await.expect("a call for an unknown store").into_inner();
    let outcome = answer.outcomes[0].outcome.as_ref();
    assert!(
        matches!(outcome, Some(redstore_proto::inventory::apply_sale_outcome::Outcome::Error(e)) if Code::from(e.code) == Code::NotFound && e.message.contains("store-9")),
        "an unknown store is the sale's NOT_FOUND: {outcome:?}"
    );
    assert_eq!(written(&app, "store-1").await, before, "nothing of a refused call was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sale_holds_a_sale_to_the_unit_prices_it_charged() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;
    let eur = |units_minor| Some(Money { currency_code: "EUR".into(), units_minor });
    let line =
        |sku: &str, quantity, unit_price| SaleLine { sku: sku.into(), quantity, unit_price, ..Default::default() };
    let sale = |id: &str, lines| ApplySaleRequest {
        sale_id: id.into(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        lines,
        ..Default::default()
    };
    let inventory = app.internal();
    // On every line or on none, one price per sku, a real amount.
    let some_only = sale("p-1", vec![line("SKU-0001", 1, eur(119)), line("SKU-0002", 1, None)]);
    expect_status(inventory.clone().apply_sale(some_only).await, Code::InvalidArgument, &["lines[1].unit_price"]);
    let two_prices = sale("p-2", vec![line("SKU-0001", 1, eur(119)), line("SKU-0001", 1, eur(120))]);
    expect_status(
        inventory.clone().apply_sale(two_prices).await,
        Code::InvalidArgument,
        &["lines[1].unit_price", "1.20 EUR", "1.19 EUR"],
    );
    let no_currency =
        sale("p-3", vec![line("SKU-0001", 1, Some(Money { currency_code: String::new(), units_minor: 119 }))]);
    expect_status(
        inventory.clone().apply_sale(no_currency).await,
        Code::InvalidArgument,
        &["lines[0].unit_price.currency_code"],
    );
    // A price that is not the catalog's: FAILED_PRECONDITION, a PRICE violation naming the sku.
    let stale = sale("p-4", vec![line("SKU-0001", 1, eur(99))]);
    let status =
        expect_status(inventory.clone().apply_sale(stale).await, Code::FailedPrecondition, &["SKU-0001", "1.19 EUR"]);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let violation = &details.precondition_failure().expect("precondition details").violations[0];
    assert_eq!((violation.r#type.as_str(), violation.subject.as_str()), ("PRICE", "sku:SKU-0001"));
    // A refund takes no price.
    let refund = ApplyRefundRequest {
        refund_id: "r-1".into(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        lines: vec![line("SKU-0001", 1, eur(119))],
    };
    expect_status(inventory.clone().apply_refund(refund).await, Code::InvalidArgument, &["lines[0].unit_price"]);
    assert_eq!(written(&app, "store-1").await, before, "nothing refused was written");

    // The catalog's prices: applied.
    let right = sale("p-4", vec![line("SKU-0001", 2, eur(119)), line("SKU-0001", 1, eur(119))]);
    let applied = inventory.clone().apply_sale(right).await.expect("priced right").into_inner();
    let milk = before.stock.iter().find(|s| s.sku == "SKU-0001").expect("milk in stock").quantity;
    assert_eq!(applied.stock[0].quantity, milk - 3);
}
