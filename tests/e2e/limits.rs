//! Careless and hostile input: too many lines, too many units, sums that would overflow, strings
//! that are too long or carry control characters, messages over the size limit. Each is refused
//! with a precise status naming the field, quoting at most a short prefix of what was sent, and
//! nothing is written; every range is the one `platform::limits` publishes.

use redstore_platform::limits::{
    MAX_BARCODES, MAX_LINE_QUANTITY, MAX_PAGE_BYTES, MAX_SALE_LINES, MAX_STOCK, MAX_TERMINAL_NAME_CHARS,
};
use redstore_proto::common::PageRequest;
use redstore_proto::inventory::{
    AdjustmentReason, ApplySaleRequest, CreateStoreRequest, LookupBarcodeRequest, OversellPolicy,
    RegisterTerminalRequest, SaleLine, UpdateProductRequest,
};
use redstore_proto::sales::{AddCartItemRequest, GetCartRequest, ListSalesRequest};
use tonic::Code;

use crate::helpers::*;
use crate::validation::{adjust, assert_nothing_written, expect_status, product_request, written};

fn lines(skus: impl IntoIterator<Item = (String, i64)>) -> Vec<(String, i64)> {
    skus.into_iter().collect()
}

fn checkout_of(
    key: &str,
    store: &str,
    lines: &[(String, i64)],
    cash_minor: i64,
) -> redstore_proto::sales::CheckoutRequest {
    let borrowed: Vec<(&str, i64)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    checkout(key, store, "till-1", &borrowed, vec![cash(cash_minor)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_of_too_many_lines_or_units_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-2").await;

    let many = lines((0..=MAX_SALE_LINES).map(|i| (format!("SKU-{:04}", i % 20 + 1), 1)));
    let refused = app.sales().checkout(checkout_of(&key(), "store-2", &many, 100_000_000)).await;
    expect_status(refused, Code::InvalidArgument, &["lines", &format!("at most {MAX_SALE_LINES}")]);

    for quantity in [MAX_LINE_QUANTITY + 1, i64::MAX] {
        let big = lines([("SKU-0001".to_owned(), quantity)]);
        let refused = app.sales().checkout(checkout_of(&key(), "store-2", &big, i64::MAX)).await;
        expect_status(refused, Code::InvalidArgument, &["lines[0].quantity"]);
    }
    // Units of one sku on several lines count together.
    let split = lines([("SKU-0001".to_owned(), MAX_LINE_QUANTITY), ("SKU-0001".to_owned(), 1)]);
    let refused = app.sales().checkout(checkout_of(&key(), "store-2", &split, i64::MAX)).await;
    expect_status(refused, Code::InvalidArgument, &["lines[1].quantity", "SKU-0001"]);

    // An internal caller gets the same ranges: 150,000 priced lines are refused by their count.
    let sale = ApplySaleRequest {
        sale_id: key(),
        store_id: "store-2".into(),
        terminal_id: "till-1".into(),
        lines: (0..150_000)
            .map(|i| SaleLine {
                sku: format!("SKU-{:04}", i % 20 + 1),
                quantity: 1,
                unit_price: Some(eur(100)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    expect_status(app.internal().apply_sale(sale).await, Code::InvalidArgument, &["lines", "150000"]);
    assert_nothing_written(&app, "store-2", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_on_several_lines_is_sold_as_one_line() {
    let app = TestApp::spawn().await;
    let stock = app.stock("store-1", "SKU-0001").await;
    let repeated = lines([("SKU-0001".to_owned(), 1), ("SKU-0002".to_owned(), 1), ("SKU-0001".to_owned(), 2)]);
    let sale = app.sales().checkout(checkout_of(&key(), "store-1", &repeated, 100_000)).await.unwrap();
    let sale = sale.into_inner().sale.unwrap();
    let sold: Vec<(&str, i64)> = sale.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect();
    assert_eq!(sold, [("SKU-0001", 3), ("SKU-0002", 1)], "first-seen order, merged quantities");
    assert_eq!(app.stock("store-1", "SKU-0001").await, stock - 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_never_leaves_its_range_and_a_sku_stays_sellable() {
    let app = TestApp::spawn().await;
    app.create_product("FREE-1", 0, &[]).await;
    let before = written(&app, "store-2").await;

    for delta in [i64::MAX, i64::MIN, MAX_STOCK + 1, -(MAX_STOCK + 1)] {
        let request = adjust("store-2", "FREE-1", delta, AdjustmentReason::CountCorrection);
        expect_status(app.inventory().adjust_stock(request).await, Code::InvalidArgument, &["quantity_delta"]);
    }
    assert_nothing_written(&app, "store-2", &before).await;

    // Down to five above the bottom of the range in the store that sells below zero ...
    let down = adjust("store-2", "FREE-1", -(MAX_STOCK - 5), AdjustmentReason::CountCorrection);
    app.inventory().adjust_stock(down).await.expect("within the range");
    let further = adjust("store-2", "FREE-1", -10, AdjustmentReason::Lost);
    expect_status(app.inventory().adjust_stock(further).await, Code::InvalidArgument, &["quantity_delta"]);
    // ... a zero-price sale past it is refused, precisely, and nothing of it is written ...
    let at_bottom = written(&app, "store-2").await;
    let past = lines([("FREE-1".to_owned(), 6)]);
    let refused = app.sales().checkout(checkout_of(&key(), "store-2", &past, 1)).await;
    expect_status(refused, Code::InvalidArgument, &["lines", "FREE-1"]);
    assert_nothing_written(&app, "store-2", &at_bottom).await;
    // ... one that reaches the bottom exactly goes through, and the sku is not wedged: receiving
    // stock and selling again work.
    let to_bottom = lines([("FREE-1".to_owned(), 5)]);
    app.sales().checkout(checkout_of(&key(), "store-2", &to_bottom, 1)).await.expect("sells to the bottom");
    assert_eq!(app.stock("store-2", "FREE-1").await, -MAX_STOCK);
    app.receive("store-2", "FREE-1", 10).await;
    let again = lines([("FREE-1".to_owned(), 1)]);
    app.sales().checkout(checkout_of(&key(), "store-2", &again, 1)).await.expect("sells again");
    assert_eq!(app.stock("store-2", "FREE-1").await, -MAX_STOCK + 9);

    // The top of the range holds too.
    let up = adjust("store-1", "SKU-0003", MAX_STOCK, AdjustmentReason::Received);
    expect_status(app.inventory().adjust_stock(up).await, Code::InvalidArgument, &["quantity_delta"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_line_stays_in_range_and_its_total_is_exact() {
    let app = TestApp::spawn().await;
    let add = |quantity: i64| AddCartItemRequest {
        idempotency_key: key(),
        store_id: "store-2".into(),
        terminal_id: "till-3".into(),
        sku: "SKU-0004".into(),
        quantity,
    };
    expect_status(app.sales().add_cart_item(add(i64::MAX)).await, Code::InvalidArgument, &["quantity"]);
    let half = MAX_LINE_QUANTITY / 2 + 1;
    let first = app.sales().add_cart_item(add(half)).await.expect("within range").into_inner();
    expect_status(app.sales().add_cart_item(add(half)).await, Code::InvalidArgument, &["quantity", "SKU-0004"]);
    let cart = app
        .sales()
        .get_cart(GetCartRequest { store_id: "store-2".into(), terminal_id: "till-3".into() })
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(Some(cart.clone()), first.cart, "the refused add changed nothing");
    let line = &cart.lines[0];
    let unit = line.unit_price.as_ref().unwrap().units_minor;
    assert_eq!(line.line_total.as_ref().unwrap().units_minor, unit * half, "exact, never a unit price");
    assert_eq!(cart.total.unwrap().units_minor, unit * half);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_are_bounded_plain_text_and_errors_quote_only_a_short_prefix() {
    let app = TestApp::spawn().await;
    let huge = "7".repeat(1_000_000);
    let status = expect_status(
        app.inventory().lookup_barcode(LookupBarcodeRequest { barcode: huge.clone() }).await,
        Code::InvalidArgument,
        &["barcode"],
    );
    assert!(status.message().len() < 200, "the code is not echoed: {} bytes", status.message().len());
    let mut product = product_request("LONG-1", Some(eur(100)), &[]);
    product.price.as_mut().unwrap().currency_code = huge;
    let status =
        expect_status(app.inventory().create_product(product).await, Code::InvalidArgument, &["currency_code"]);
    assert!(status.message().len() < 200, "the currency is not echoed: {} bytes", status.message().len());

    let terminal = |name: String| RegisterTerminalRequest {
        idempotency_key: String::new(),
        store_id: "store-1".into(),
        terminal_id: "till-9".into(),
        name,
    };
    let long = "x".repeat(4_000_000);
    expect_status(app.inventory().register_terminal(terminal(long)).await, Code::InvalidArgument, &["name"]);
    let just_over = "x".repeat(MAX_TERMINAL_NAME_CHARS + 1);
    expect_status(app.inventory().register_terminal(terminal(just_over)).await, Code::InvalidArgument, &["name"]);
    for bad in ["Till\0 9", "Till \u{1b}[2J9", "Till \u{202E}9", "Till\n9"] {
        let refused = app.inventory().register_terminal(terminal(bad.into())).await;
        expect_status(refused, Code::InvalidArgument, &["name", "control character"]);
        let store = CreateStoreRequest {
            idempotency_key: String::new(),
            store_id: "store-9".into(),
            name: bad.into(),
            oversell_policy: OversellPolicy::Strict as i32,
        };
        expect_status(app.inventory().create_store(store).await, Code::InvalidArgument, &["name"]);
        let rename = UpdateProductRequest { sku: "SKU-0001".into(), name: Some(bad.into()), ..Default::default() };
        expect_status(app.inventory().update_product(rename).await, Code::InvalidArgument, &["name"]);
    }
    let registered = app.inventory().register_terminal(terminal("Till nine — Été".into())).await.unwrap();
    assert_eq!(registered.into_inner().terminal.unwrap().name, "Till nine — Été", "plain text of any script");

    let barcodes: Vec<String> = (0..=MAX_BARCODES).map(|_| demo_barcode(1)).collect();
    let mut many = product_request("MANY-1", Some(eur(100)), &[]);
    many.barcodes = barcodes;
    expect_status(app.inventory().create_product(many).await, Code::InvalidArgument, &["barcodes", "at most 32"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_resource_exhausted() {
    let app = TestApp::spawn().await;
    let before = written(&app, "store-1").await;
    let mut big = product_request("BIG-1", Some(eur(100)), &[]);
    big.name = "x".repeat(5 * 1024 * 1024);
    let refused = app.inventory().create_product(big).await;
    expect_status(refused, Code::ResourceExhausted, &["too large"]);
    assert_nothing_written(&app, "store-1", &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_sales_stays_within_its_byte_limit() {
    let app = TestApp::spawn().await;
    let skus: Vec<String> = (0..MAX_SALE_LINES).map(|i| format!("BULK-{i:03}")).collect();
    for sku in &skus {
        app.create_product(sku, 1, &[]).await;
    }
    let sale_lines = lines(skus.iter().map(|s| (s.clone(), 1)));
    let mut sold = 0;
    let mut bytes = 0;
    while bytes <= MAX_PAGE_BYTES + MAX_PAGE_BYTES / 4 {
        let sale = app.sales().checkout(checkout_of(&key(), "store-2", &sale_lines, 1_000)).await.expect("a big sale");
        bytes += prost::Message::encoded_len(&sale.into_inner().sale.unwrap());
        sold += 1;
    }
    let page = app
        .sales()
        .list_sales(ListSalesRequest {
            store_id: "store-2".into(),
            page: Some(PageRequest { page_size: 500, page_token: String::new() }),
            ..Default::default()
        })
        .await
        .expect("a page a default client can receive")
        .into_inner();
    let listed: usize = page.sales.iter().map(prost::Message::encoded_len).sum();
    assert!(page.sales.len() < sold, "cut short of the {sold} sales by size");
    assert!(listed <= MAX_PAGE_BYTES, "{listed} bytes");
    let token = page.page.unwrap().next_page_token;
    assert!(!token.is_empty(), "the rest is on the next page");
    let rest = app
        .sales()
        .list_sales(ListSalesRequest {
            store_id: "store-2".into(),
            page: Some(PageRequest { page_size: 500, page_token: token }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.sales.len() + rest.sales.len(), sold, "nothing lost between pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_stream_sending_an_oversized_scan_ends_with_resource_exhausted() {
    let app = TestApp::spawn().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = app
        .sales()
        .scan_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the stream opens")
        .into_inner();
    let scan = |scan_id: &str, code: String| redstore_proto::sales::ScanRequest {
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        scan_id: scan_id.into(),
        code,
        quantity: 1,
    };
    tx.send(scan("ok-1", demo_barcode(2))).await.unwrap();
    assert!(answers.message().await.expect("an answer").is_some(), "a good scan is answered");
    tx.send(scan("huge", "4".repeat(5 * 1024 * 1024))).await.unwrap();
    let end = answers.message().await.expect_err("the stream ends with a status, not OK");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
}
