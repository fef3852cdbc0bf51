//! The shared test bodies: every backend must pass each of them unchanged. Each starts from the
//! demo chain (store-1 strict, store-2 allow_negative, till-1..3, SKU-0001..SKU-0020 in EUR).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redstore_inventory::domain::Product;
use redstore_inventory::domain::StoreRow;
use redstore_inventory::seed::demo_barcode;
use redstore_inventory::store::{Idem, ProductPatch};
use redstore_inventory::{InventoryStore, OversellPolicy, StockMovement};
use redstore_platform::barcode::ean13_from_payload;
use redstore_platform::money::{Currency, Money};
use redstore_platform::time::{timestamp_ms, unix_ms};
use redstore_proto::inventory::Terminal;
use redstore_proto::sales::{SaleStatus, scan_response};
use redstore_sales::SalesStore;
use tonic::Code;

use crate::support::*;

type Sales = Arc<dyn SalesStore>;
type Inventory = Arc<dyn InventoryStore>;

pub async fn scan_adds_to_the_cart_once_per_scan_id(sales: Sales, inventory: Inventory) {
    let first = sales.scan(scan("scan-1", "store-1", "till-1", &demo_barcode(1), 1)).await.unwrap();
    assert_eq!(first.scan_id, "scan-1");
    let Some(scan_response::Result::Line(line)) = &first.result else { panic!("a line: {first:?}") };
    assert_eq!((line.sku.as_str(), line.name.as_str(), line.quantity), ("SKU-0001", "Whole milk 1 L", 1));
    assert_eq!((minor(&line.unit_price), minor(&line.line_total), line.stock_available), (119, 119, 40));
    let cart = first.cart.clone().unwrap();
    assert_eq!((cart.store_id.as_str(), cart.terminal_id.as_str()), ("store-1", "till-1"));
    assert_eq!((cart.lines.len(), minor(&cart.total)), (1, 119));

    // The same scan again (a retry) changes nothing and answers the same.
    let again = sales.scan(scan("scan-1", "store-1", "till-1", &demo_barcode(1), 1)).await.unwrap();
    assert_eq!(again, first);

    // Another scan of the same product adds to its line.
    let second = sales.scan(scan("scan-2", "store-1", "till-1", &demo_barcode(1), 2)).await.unwrap();
    let Some(scan_response::Result::Line(line)) = &second.result else { panic!("a line: {second:?}") };
    assert_eq!((line.quantity, minor(&line.line_total)), (3, 357));
    let third = sales.scan(scan("scan-3", "store-1", "till-1", &demo_barcode(3), 1)).await.unwrap();
    let cart = third.cart.clone().unwrap();
    let skus: Vec<&str> = cart.lines.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["SKU-0001", "SKU-0003"]);
    assert_eq!(minor(&cart.total), 357 + 429);
    assert_eq!(sales.get_cart("store-1", "till-1").await.unwrap(), cart);
    // Scans take no stock.
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 40);

    // A scan id reused for another scan.
    let err = sales.scan(scan("scan-1", "store-1", "till-1", &demo_barcode(2), 1)).await.unwrap_err();
    assert!(expect_code(&err, Code::AlreadyExists).contains("\"scan-1\""), "{err}");

    let unknown = ean13_from_payload("999999999999");
    let err = sales.scan(scan("scan-4", "store-1", "till-1", &unknown, 1)).await.unwrap_err();
    assert!(expect_code(&err, Code::NotFound).starts_with("code: no product has barcode"), "{err}");
    let err = sales.scan(scan("scan-5", "store-1", "till-9", &demo_barcode(1), 1)).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "terminal_id \"till-9\" is not registered in store \"store-1\"");
    // A failed scan is not remembered: its id can be used once it works.
    sales.scan(scan("scan-4", "store-1", "till-1", &demo_barcode(4), 1)).await.unwrap();

    // Carts are per terminal.
    let other = sales.get_cart("store-1", "till-2").await.unwrap();
    assert!(other.lines.is_empty() && other.total.is_none(), "{other:?}");
}

pub async fn cart_items_can_be_added_set_removed_and_cleared(sales: Sales, inventory: Inventory) {
    let (s, t) = ("store-1", "till-2");
    let added = sales.add_cart_item(add_idem("k-1", s, t, "SKU-0002", 2), s, t, "SKU-0002", 2).await.unwrap();
    let line = added.line.clone().unwrap();
    assert_eq!(
        (line.sku.as_str(), line.quantity, minor(&line.line_total), line.stock_available),
        ("SKU-0002", 2, 698, 12)
    );
    assert_eq!(minor(&added.cart.as_ref().unwrap().total), 698);
    // Retried: the same answer, nothing added.
    let again = sales.add_cart_item(add_idem("k-1", s, t, "SKU-0002", 2), s, t, "SKU-0002", 2).await.unwrap();
    assert_eq!(again, added);
    let err = sales.add_cart_item(add_idem("k-1", s, t, "SKU-0002", 3), s, t, "SKU-0002", 3).await.unwrap_err();
    expect_code(&err, Code::AlreadyExists);

    let added = sales.add_cart_item(add_idem("k-2", s, t, "SKU-0003", 1), s, t, "SKU-0003", 1).await.unwrap();
    let cart = added.cart.unwrap();
    assert_eq!(
        cart.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(),
        [("SKU-0002", 2), ("SKU-0003", 1)]
    );

    let cart = sales.set_cart_item_quantity(s, t, "SKU-0002", 5).await.unwrap();
    assert_eq!(cart.lines[0].quantity, 5);
    assert_eq!(minor(&cart.total), 5 * 349 + 429);
    let err = sales.set_cart_item_quantity(s, t, "SKU-0009", 3).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "sku \"SKU-0009\" is not in the cart of terminal \"till-2\"");
    // Removing what is not there is fine.
    sales.set_cart_item_quantity(s, t, "SKU-0009", 0).await.unwrap();
    let cart = sales.set_cart_item_quantity(s, t, "SKU-0003", 0).await.unwrap();
    assert_eq!(cart.lines.iter().map(|l| l.sku.as_str()).collect::<Vec<_>>(), ["SKU-0002"]);

    let err = sales.add_cart_item(add_idem("k-3", s, t, "NOPE-1", 1), s, t, "NOPE-1", 1).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "sku \"NOPE-1\" does not exist");
    inventory
        .update_product(
            Idem::default(),
            ProductPatch { sku: "SKU-0020".into(), active: Some(false), ..ProductPatch::default() },
        )
        .await
        .unwrap();
    let err = sales.add_cart_item(add_idem("k-4", s, t, "SKU-0020", 1), s, t, "SKU-0020", 1).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::FailedPrecondition), "sku \"SKU-0020\" is not for sale (inactive)");
    let err = sales.add_cart_item(add_idem("k-5", s, "till-9", "SKU-0002", 1), s, "till-9", "SKU-0002", 1).await;
    expect_code(&err.unwrap_err(), Code::NotFound);

    let cleared = sales.clear_cart(s, t).await.unwrap();
    assert!(cleared.lines.is_empty() && cleared.total.is_none(), "{cleared:?}");
    assert_eq!(sales.get_cart(s, t).await.unwrap(), cleared);
    expect_code(&sales.get_cart(s, "till-9").await.unwrap_err(), Code::NotFound);
    expect_code(&sales.get_cart("store-9", t).await.unwrap_err(), Code::NotFound);
    expect_code(&sales.clear_cart(s, "till-9").await.unwrap_err(), Code::NotFound);
}

pub async fn checkout_from_lines_prices_settles_and_takes_stock(sales: Sales, inventory: Inventory) {
    let before = unix_ms(SystemTime::now());
    let sale = sales
        .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2), ("SKU-0003", 1)], vec![cash(1000)]))
        .await
        .unwrap();
    assert!(uuid::Uuid::parse_str(&sale.sale_id).is_ok(), "{}", sale.sale_id);
    assert_eq!((sale.store_id.as_str(), sale.terminal_id.as_str()), ("store-1", "till-1"));
    assert_eq!(sale.status, SaleStatus::Completed as i32);
    let lines: Vec<_> = sale
        .lines
        .iter()
        .map(|l| {
            (
                l.sku.as_str(),
                l.name.as_str(),
                l.quantity,
                minor(&l.unit_price),
                minor(&l.line_total),
                l.quantity_refunded,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [("SKU-0001", "Whole milk 1 L", 2, 119, 238, 0), ("SKU-0003", "Free-range eggs x12", 1, 429, 429, 0)]
    );
    assert_eq!(sale.total, Some(eur(667)));
    assert_eq!(sale.change, Some(eur(333)));
    assert_eq!(sale.tenders, vec![cash(1000)]);
    assert_eq!(sale.refunded, Some(eur(0)));
    assert!(sale.negative_stock_skus.is_empty());
    let created = timestamp_ms(sale.created_at.as_ref().unwrap());
    assert!(created >= before - 1000 && created <= unix_ms(SystemTime::now()) + 1000, "{created}");

    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 38);
    assert_eq!(stock(&inventory, "store-1", "SKU-0003").await, 29);
    assert_eq!(sales.get_sale(&sale.sale_id).await.unwrap(), sale);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale.clone()]);
    assert!(sales.list_sales("store-2", "", 10).await.unwrap().is_empty());

    // Cards and cash together; repeated skus are one stock movement but stay separate lines.
    let sale = sales
        .checkout(checkout(
            &key(),
            "store-1",
            "till-2",
            &[("SKU-0001", 1), ("SKU-0001", 2)],
            vec![card(300), cash(100)],
        ))
        .await
        .unwrap();
    assert_eq!(sale.lines.len(), 2);
    assert_eq!((minor(&sale.total), minor(&sale.change)), (357, 43));
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 35);
}

pub async fn checkout_names_what_is_wrong_and_leaves_no_trace(sales: Sales, inventory: Inventory) {
    let k = key();
    let err = sales.checkout(checkout(&k, "store-1", "till-9", &[("SKU-0001", 1)], vec![cash(500)])).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "terminal_id \"till-9\" is not registered in store \"store-1\"");
    let err = sales.checkout(checkout(&k, "store-9", "till-1", &[("SKU-0001", 1)], vec![cash(500)])).await.unwrap_err();
    expect_code(&err, Code::NotFound);
    let err = sales
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1), ("NOPE", 1)], vec![cash(500)]))
        .await
        .unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "lines[1].sku: sku \"NOPE\" does not exist");
    inventory
        .update_product(
            Idem::default(),
            ProductPatch { sku: "SKU-0020".into(), active: Some(false), ..ProductPatch::default() },
        )
        .await
        .unwrap();
    let err = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0020", 1)], vec![cash(500)])).await.unwrap_err();
    assert_eq!(
        expect_code(&err, Code::FailedPrecondition),
        "lines[0].sku: sku \"SKU-0020\" is not for sale (inactive)"
    );
    let err = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(200)])).await.unwrap_err();
    assert_eq!(
        expect_code(&err, Code::InvalidArgument),
        "tenders: cover 2.00 EUR of a 2.38 EUR total; 0.38 EUR is missing"
    );
    assert_eq!(err.field(), Some("tenders"));
    let err = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1)], vec![card(500)])).await.unwrap_err();
    expect_code(&err, Code::InvalidArgument);
    let err = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 0)], vec![cash(119)])).await.unwrap_err();
    assert_eq!(err.field(), Some("lines[0].quantity"));
    let err = sales.get_sale("no-such-sale").await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "sale_id \"no-such-sale\" does not exist");

    // None of that sold anything or used the key.
    assert!(sales.list_sales("store-1", "", 10).await.unwrap().is_empty());
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 40);
    let sale = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1)], vec![card(119)])).await.unwrap();
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale]);
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 39);
}

/// A checkout is charged the catalog's price at the moment it sells, and cannot sell a product
/// withdrawn from sale, however recently the same products sold at another price.
pub async fn checkouts_charge_the_price_of_the_moment(sales: Sales, inventory: Inventory) {
    let eur = |minor| Money::new(Currency::parse("currency_code", "EUR").unwrap(), minor);
    let milk = stock(&inventory, "store-1", "SKU-0001").await;
    let bread = stock(&inventory, "store-1", "SKU-0002").await;
    let sold = sales
        .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1), ("SKU-0002", 1)], vec![cash(1000)]))
        .await
        .unwrap();
    assert_eq!(minor(&sold.lines[0].unit_price), 119);

    let repriced = ProductPatch { sku: "SKU-0001".into(), price: Some(eur(149)), ..ProductPatch::default() };
    inventory.update_product(Idem::default(), repriced).await.unwrap();
    let sale =
        sales.checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(500)])).await.unwrap();
    assert_eq!((minor(&sale.lines[0].unit_price), minor(&sale.total), minor(&sale.change)), (149, 298, 202));
    // A card payment of the old price no longer covers it: nothing is sold.
    let err =
        sales.checkout(checkout(&key(), "store-1", "till-2", &[("SKU-0001", 1)], vec![card(119)])).await.unwrap_err();
    assert_eq!(
        expect_code(&err, Code::InvalidArgument),
        "tenders: cover 1.19 EUR of a 1.49 EUR total; 0.30 EUR is missing"
    );

    let withdrawn = ProductPatch { sku: "SKU-0002".into(), active: Some(false), ..ProductPatch::default() };
    inventory.update_product(Idem::default(), withdrawn).await.unwrap();
    let err =
        sales.checkout(checkout(&key(), "store-1", "till-3", &[("SKU-0002", 1)], vec![cash(500)])).await.unwrap_err();
    assert_eq!(
        expect_code(&err, Code::FailedPrecondition),
        "lines[0].sku: sku \"SKU-0002\" is not for sale (inactive)"
    );

    // Exactly the two sales took stock.
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, milk - 3);
    assert_eq!(stock(&inventory, "store-1", "SKU-0002").await, bread - 1);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap().len(), 2);
}

/// A supervisor's price override (the role was checked before the store is asked): the line sells
/// at the override, says the catalog's price and why, inventory does not hold it to the catalog
/// (a price it would otherwise refuse), and a refund gives back what was paid.
pub async fn a_price_override_sells_at_its_price_and_refunds_what_was_paid(sales: Sales, inventory: Inventory) {
    let eggs = stock(&inventory, "store-1", "SKU-0003").await;
    let damaged = Money::new(Currency::parse("currency_code", "EUR").unwrap(), 200);
    let mut order = checkout(&key(), "store-1", "till-1", &[("SKU-0003", 2), ("SKU-0001", 1)], vec![cash(1000)]);
    let why = redstore_sales::domain::PriceOverride {
        price: damaged,
        reason: "cracked box".into(),
        field: "lines[0]".into(),
    };
    order.overrides.insert("SKU-0003".into(), why);
    let sale = sales.checkout(order).await.expect("sold at the override");
    let eggs_line = &sale.lines[0];
    assert_eq!(
        (eggs_line.sku.as_str(), minor(&eggs_line.unit_price), minor(&eggs_line.line_total)),
        ("SKU-0003", 200, 400)
    );
    assert_eq!((minor(&eggs_line.list_price), eggs_line.override_reason.as_str()), (429, "cracked box"));
    let milk_line = &sale.lines[1];
    assert_eq!(
        (minor(&milk_line.unit_price), milk_line.list_price.clone(), milk_line.override_reason.as_str()),
        (119, None, "")
    );
    assert_eq!((minor(&sale.total), minor(&sale.change)), (519, 481));
    assert_eq!(stock(&inventory, "store-1", "SKU-0003").await, eggs - 2);
    assert_eq!(sales.get_sale(&sale.sale_id).await.unwrap(), sale, "kept as sold");

    let returned = sales.refund(refund(&key(), &sale.sale_id, &[("SKU-0003", 1)])).await.unwrap();
    assert_eq!(minor(&returned.refund.unwrap().amount), 200, "what was paid, not the catalog's price");
    assert_eq!(stock(&inventory, "store-1", "SKU-0003").await, eggs - 1);
}

pub async fn checkout_sells_the_cart_and_empties_it(sales: Sales, inventory: Inventory) {
    let (s, t) = ("store-1", "till-3");
    let err = sales.checkout(checkout(&key(), s, t, &[], vec![cash(100)])).await.unwrap_err();
    assert!(expect_code(&err, Code::FailedPrecondition).contains("is empty"), "{err}");

    sales.add_cart_item(add_idem("c-1", s, t, "SKU-0002", 1), s, t, "SKU-0002", 1).await.unwrap();
    sales.scan(scan("c-scan", s, t, &demo_barcode(3), 2)).await.unwrap();
    // Another terminal's cart is not touched.
    sales.add_cart_item(add_idem("c-2", s, "till-1", "SKU-0004", 1), s, "till-1", "SKU-0004", 1).await.unwrap();

    let k = key();
    let order = checkout(&k, s, t, &[], vec![card(349 + 2 * 429)]);
    let sale = sales.checkout(order.clone()).await.unwrap();
    assert_eq!(
        sale.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(),
        [("SKU-0002", 1), ("SKU-0003", 2)]
    );
    assert_eq!(minor(&sale.total), 349 + 2 * 429);
    assert_eq!(sale.status, SaleStatus::Completed as i32);
    assert!(sales.get_cart(s, t).await.unwrap().lines.is_empty());
    assert_eq!(sales.get_cart(s, "till-1").await.unwrap().lines.len(), 1);
    assert_eq!(stock(&inventory, s, "SKU-0002").await, 11);
    assert_eq!(stock(&inventory, s, "SKU-0003").await, 28);

    // A retry after the cart was emptied still gets the sale.
    assert_eq!(sales.checkout(order).await.unwrap(), sale);
    assert_eq!(stock(&inventory, s, "SKU-0003").await, 28);
    assert_eq!(sales.list_sales(s, "", 10).await.unwrap(), vec![sale]);
}

pub async fn retried_checkout_returns_the_same_sale_and_takes_stock_once(sales: Sales, inventory: Inventory) {
    let order = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)]);
    let first = sales.checkout(order.clone()).await.unwrap();
    let second = sales.checkout(order.clone()).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(sales.checkout(order).await.unwrap(), first);
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 39);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![first]);
}

pub async fn concurrent_checkouts_with_one_key_make_one_sale(sales: Sales, inventory: Inventory) {
    let order = checkout(&key(), "store-1", "till-1", &[("SKU-0004", 2), ("SKU-0005", 1)], vec![cash(2000)]);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (sales, order) = (sales.clone(), order.clone());
            tokio::spawn(async move { sales.checkout(order).await })
        })
        .collect();
    let mut sales_made = Vec::new();
    for task in tasks {
        sales_made.push(task.await.unwrap().unwrap());
    }
    assert!(sales_made.iter().all(|s| *s == sales_made[0]), "{sales_made:#?}");
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sales_made[0].clone()]);
    assert_eq!(stock(&inventory, "store-1", "SKU-0004").await, 22);
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 17);
}

pub async fn key_reused_for_another_request_is_already_exists(sales: Sales, inventory: Inventory) {
    let k = key();
    let sale = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)])).await.unwrap();
    let err = sales.checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(300)])).await.unwrap_err();
    assert_eq!(
        expect_code(&err, Code::AlreadyExists),
        format!(
            "idempotency_key {k:?} was already used for a different sales.checkout:store-1 request; \
             use a new key for a new request"
        )
    );
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 39);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale]);
    // Keys are per store.
    let other = sales.checkout(checkout(&k, "store-2", "till-1", &[("SKU-0001", 2)], vec![cash(300)])).await.unwrap();
    assert_eq!(other.store_id, "store-2");
}

pub async fn strict_oversell_fails_without_trace_and_the_key_can_be_reused(sales: Sales, inventory: Inventory) {
    let k = key();
    let err = sales
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1), ("SKU-0019", 9)], vec![cash(10_000)]))
        .await
        .unwrap_err();
    assert_eq!(
        expect_code(&err, Code::FailedPrecondition),
        "insufficient stock of sku \"SKU-0019\" in store \"store-1\": requested 9, available 8 \
         (the store does not sell below zero)"
    );
    assert!(sales.list_sales("store-1", "", 10).await.unwrap().is_empty());
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 40);
    assert_eq!(stock(&inventory, "store-1", "SKU-0019").await, 8);

    // The same key with a corrected request sells.
    let sale = sales
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1), ("SKU-0019", 8)], vec![cash(10_000)]))
        .await
        .unwrap();
    assert_eq!(stock(&inventory, "store-1", "SKU-0019").await, 0);
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 39);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale]);
    // Now the key is the sale's.
    let err = sales
        .checkout(checkout(&k, "store-1", "till-1", &[("SKU-0001", 1), ("SKU-0019", 9)], vec![cash(10_000)]))
        .await
        .unwrap_err();
    expect_code(&err, Code::AlreadyExists);
}

pub async fn last_units_of_a_sku_go_to_exactly_that_many_checkouts(sales: Sales, inventory: Inventory) {
    const BUYERS: usize = 32;
    const UNITS: i64 = 10;
    let store = StoreRow { store_id: "store-race".into(), name: "Race".into(), policy: OversellPolicy::Strict };
    inventory.create_store(Idem::default(), store).await.unwrap();
    for i in 1..=BUYERS {
        let terminal =
            Terminal { store_id: "store-race".into(), terminal_id: format!("till-{i:02}"), name: format!("Till {i}") };
        inventory.register_terminal(Idem::default(), terminal).await.unwrap();
    }
    let eur = Currency::parse("currency", "EUR").unwrap();
    let product = Product {
        sku: "RACE-1".into(),
        name: "Last of its kind".into(),
        price: Money::new(eur, 250),
        barcodes: vec![],
        active: true,
    };
    inventory.create_product(Idem::default(), product, vec![]).await.unwrap();
    let idem = Idem { key: key(), fingerprint: b"receive 10".to_vec() };
    inventory
        .adjust_stock(idem, "store-race", StockMovement { sku: "RACE-1".into(), delta: UNITS }, "received")
        .await
        .unwrap();

    let tasks: Vec<_> = (1..=BUYERS)
        .map(|i| {
            let sales = sales.clone();
            let order = checkout(&key(), "store-race", &format!("till-{i:02}"), &[("RACE-1", 1)], vec![card(250)]);
            tokio::spawn(async move { sales.checkout(order).await })
        })
        .collect();
    let (mut sold, mut refused) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(sale) => sold.push(sale.sale_id),
            Err(err) => {
                expect_code(&err, Code::FailedPrecondition);
                refused += 1;
            }
        }
    }
    assert_eq!((sold.len(), refused), (UNITS as usize, BUYERS - UNITS as usize));
    assert_eq!(stock(&inventory, "store-race", "RACE-1").await, 0);
    let listed: BTreeSet<String> =
        sales.list_sales("store-race", "", 100).await.unwrap().into_iter().map(|s| s.sale_id).collect();
    assert_eq!(listed, sold.into_iter().collect::<BTreeSet<_>>());
}

pub async fn allow_negative_store_sells_below_zero_and_says_so(sales: Sales, inventory: Inventory) {
    let sale = sales
        .checkout(checkout(&key(), "store-2", "till-2", &[("SKU-0019", 5), ("SKU-0001", 1)], vec![cash(5000)]))
        .await
        .unwrap();
    assert_eq!(sale.negative_stock_skus, vec!["SKU-0019".to_owned()]);
    assert_eq!(stock(&inventory, "store-2", "SKU-0019").await, -2);
    assert_eq!(stock(&inventory, "store-2", "SKU-0001").await, 24);
    assert_eq!(sales.get_sale(&sale.sale_id).await.unwrap(), sale);
}

pub async fn refunds_restock_once_and_cap_at_what_was_sold(sales: Sales, inventory: Inventory) {
    let sale = sales
        .checkout(checkout(
            &key(),
            "store-1",
            "till-3",
            &[("SKU-0015", 3), ("SKU-0016", 2)],
            vec![card(3 * 229 + 2 * 79)],
        ))
        .await
        .unwrap();
    assert_eq!(stock(&inventory, "store-1", "SKU-0015").await, 37);

    let k1 = key();
    let first = sales.refund(refund(&k1, &sale.sale_id, &[("SKU-0015", 1)])).await.unwrap();
    let r = first.refund.clone().unwrap();
    assert_eq!(r.sale_id, sale.sale_id);
    assert_eq!(minor(&r.amount), 229);
    assert_eq!(r.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(), [("SKU-0015", 1)]);
    let after = first.sale.clone().unwrap();
    assert_eq!(after.status, SaleStatus::PartiallyRefunded as i32);
    assert_eq!(minor(&after.refunded), 229);
    assert_eq!(after.lines[0].quantity_refunded, 1);
    assert_eq!(stock(&inventory, "store-1", "SKU-0015").await, 38);
    assert_eq!(sales.get_sale(&sale.sale_id).await.unwrap(), after);

    // The same refund retried changes nothing.
    let retry = sales.refund(refund(&k1, &sale.sale_id, &[("SKU-0015", 1)])).await.unwrap();
    assert_eq!(retry, first);
    assert_eq!(stock(&inventory, "store-1", "SKU-0015").await, 38);
    let err = sales.refund(refund(&k1, &sale.sale_id, &[("SKU-0015", 2)])).await.unwrap_err();
    expect_code(&err, Code::AlreadyExists);

    // Three more cannot come back: only two are left to refund.
    let err = sales.refund(refund(&key(), &sale.sale_id, &[("SKU-0015", 3)])).await.unwrap_err();
    assert!(expect_code(&err, Code::FailedPrecondition).contains("3 sold, 1 already refunded"), "{err}");
    assert_eq!(stock(&inventory, "store-1", "SKU-0015").await, 38);

    // A sku that was not in the sale.
    let err = sales.refund(refund(&key(), &sale.sale_id, &[("SKU-0001", 1)])).await.unwrap_err();
    expect_code(&err, Code::InvalidArgument);
    assert_eq!(err.field(), Some("lines[0].sku"));

    // Everything else.
    let rest = sales.refund(refund(&key(), &sale.sale_id, &[])).await.unwrap();
    assert_eq!(minor(&rest.refund.unwrap().amount), 2 * 229 + 2 * 79);
    let sale_after = rest.sale.unwrap();
    assert_eq!(sale_after.status, SaleStatus::Refunded as i32);
    assert_eq!(minor(&sale_after.refunded), 3 * 229 + 2 * 79);
    assert_eq!(stock(&inventory, "store-1", "SKU-0015").await, 40);
    assert_eq!(stock(&inventory, "store-1", "SKU-0016").await, 80);
    assert_eq!(sales.get_sale(&sale.sale_id).await.unwrap(), sale_after);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale_after]);

    let err = sales.refund(refund(&key(), &sale.sale_id, &[])).await.unwrap_err();
    assert!(expect_code(&err, Code::FailedPrecondition).contains("fully refunded"), "{err}");
    let err = sales.refund(refund(&key(), "no-such-sale", &[])).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "sale_id \"no-such-sale\" does not exist");
}

pub async fn list_sales_pages_in_sale_id_order(sales: Sales, _inventory: Inventory) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let terminal = format!("till-{}", i % 3 + 1);
        let sale =
            sales.checkout(checkout(&key(), "store-1", &terminal, &[("SKU-0006", 1)], vec![cash(200)])).await.unwrap();
        ids.push(sale.sale_id);
        // Ids are UUIDv7: a new millisecond makes creation order their order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other =
        sales.checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0006", 1)], vec![cash(200)])).await.unwrap();

    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let page = sales.list_sales("store-1", &after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.sale_id.clone();
        listed.extend(page.into_iter().map(|s| s.sale_id));
    }
    assert_eq!(listed, ids);
    let page = sales.list_sales("store-1", &ids[1], 2).await.unwrap();
    assert_eq!(page.iter().map(|s| s.sale_id.as_str()).collect::<Vec<_>>(), [ids[2].as_str(), ids[3].as_str()]);
    assert_eq!(sales.list_sales("store-2", "", 10).await.unwrap(), vec![other]);
    let err = sales.list_sales("store-9", "", 10).await.unwrap_err();
    assert_eq!(expect_code(&err, Code::NotFound), "store_id \"store-9\" does not exist");
}

/// Checkouts of one terminal's cart under different keys at once (a double tap on two tills'
/// screens, a retry that lost its key): the cart is sold once; the others find it empty, or in
/// checkout by another request. Several rounds, since the race needs them to overlap.
pub async fn concurrent_checkouts_of_one_cart_sell_it_once(sales: Sales, inventory: Inventory) {
    let before = stock(&inventory, "store-1", "SKU-0003").await;
    for round in 1..=5 {
        sales.scan(scan(&key(), "store-1", "till-1", &demo_barcode(3), 2)).await.unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let sales = sales.clone();
                let order = checkout(&key(), "store-1", "till-1", &[], vec![cash(1000)]);
                tokio::spawn(async move { sales.checkout(order).await })
            })
            .collect();
        let mut sold = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(sale) => {
                    assert_eq!(sale.lines.len(), 1, "round {round}: the cart's one line");
                    sold += 1;
                }
                Err(err) => {
                    let message = expect_code(&err, Code::FailedPrecondition);
                    assert!(
                        message.contains("empty") || message.contains("being checked out"),
                        "round {round}: {message}"
                    );
                }
            }
        }
        assert_eq!(sold, 1, "round {round}: the cart is sold exactly once");
        assert_eq!(stock(&inventory, "store-1", "SKU-0003").await, before - 2 * round, "round {round}");
        assert!(sales.get_cart("store-1", "till-1").await.unwrap().lines.is_empty(), "round {round}");
    }
}

/// A chain's batch of sales larger than inventory takes in one call (the gRPC client splits it):
/// every sale is applied once, in its own store, and answered in its place.
pub async fn a_chain_batch_larger_than_one_call_applies_every_sale_once(
    _sales: Arc<dyn SalesStore>,
    inventory: Arc<dyn InventoryStore>,
) {
    let level = |store: &'static str| {
        let inventory = inventory.clone();
        async move { inventory.get_stock(store, "SKU-0001").await.unwrap().quantity }
    };
    let (before_1, before_2) = (level("store-1").await, level("store-2").await);
    // store-2 allows negative stock: its sales all go through whatever the seed's stock.
    let sales: Vec<(String, redstore_inventory::store::SaleOrder)> = (0..300)
        .map(|i| {
            let store = if i % 10 == 0 { "store-1" } else { "store-2" };
            let order = redstore_inventory::store::SaleOrder {
                sale_id: format!("chain-batch-{i}"),
                fingerprint: vec![1],
                terminal_id: "till-1".to_owned(),
                movements: vec![StockMovement { sku: "SKU-0001".to_owned(), delta: -1 }],
                charged: Vec::new(),
                checkout: None,
            };
            (store.to_owned(), order)
        })
        .collect();
    let outcomes = inventory.apply_chain_sales(sales.clone()).await;
    assert_eq!(outcomes.len(), 300);
    for (i, outcome) in outcomes.iter().enumerate() {
        let applied = outcome.as_ref().unwrap_or_else(|e| panic!("sale {i}: {e}"));
        let store = &sales[i].0;
        assert!(applied.stock.iter().all(|s| &s.store_id == store), "sale {i} answered for another store");
    }
    assert_eq!((level("store-1").await, level("store-2").await), (before_1 - 30, before_2 - 270));
    // Repeated whole, nothing is applied twice.
    let again = inventory.apply_chain_sales(sales).await;
    assert!(again.iter().all(|o| o.is_ok()));
    assert_eq!((level("store-1").await, level("store-2").await), (before_1 - 30, before_2 - 270));
}
