//! The shared test bodies. Each takes the store under test and knows nothing of its backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use redstore_inventory::domain::StoreRow;
use redstore_inventory::domain::{ChargedPrice, Product};
use redstore_inventory::store::{AppliedCheckout, CheckoutKey, CheckoutsQuery, Idem, ProductPatch, SaleOrder};
use redstore_inventory::{InventoryStore, OversellPolicy, StockMovement};
use redstore_platform::Error;
use redstore_platform::barcode::{Barcode, ean13_from_payload};
use redstore_platform::money::{Currency, Money};
use redstore_proto::events::EventEnvelope;
use redstore_proto::events::event_envelope::Payload;
use redstore_proto::inventory as pb;
use redstore_proto::stream::SnapshotItem;

type Store = Arc<dyn InventoryStore>;

// ---- helpers -------------------------------------------------------------------------------

fn no_key() -> Idem {
    Idem::default()
}

fn key(key: &str, request: &[u8]) -> Idem {
    Idem { key: key.to_owned(), fingerprint: request.to_vec() }
}

fn store_row(id: &str, policy: OversellPolicy) -> StoreRow {
    StoreRow { store_id: id.to_owned(), name: format!("Store {id}"), policy }
}

fn eur(minor: i64) -> Money {
    Money::new(Currency::parse("currency_code", "EUR").unwrap(), minor)
}

fn product(sku: &str, minor: i64) -> Product {
    Product { sku: sku.to_owned(), name: format!("Product {sku}"), price: eur(minor), barcodes: vec![], active: true }
}

fn barcode(code: &str) -> Barcode {
    Barcode::parse("barcode", code).unwrap()
}

/// A valid EAN-13 built from a 12-digit payload.
fn ean13(payload: &str) -> String {
    ean13_from_payload(payload)
}

fn mv(sku: &str, delta: i64) -> StockMovement {
    StockMovement { sku: sku.to_owned(), delta }
}

/// A sale for `apply_sale`, not held to any price.
fn order(sale_id: &str, fingerprint: Vec<u8>, terminal_id: &str, movements: Vec<StockMovement>) -> SaleOrder {
    SaleOrder {
        sale_id: sale_id.to_owned(),
        fingerprint,
        terminal_id: terminal_id.to_owned(),
        movements,
        charged: Vec::new(),
        checkout: None,
    }
}

fn terminal(store_id: &str, terminal_id: &str) -> pb::Terminal {
    pb::Terminal {
        store_id: store_id.to_owned(),
        terminal_id: terminal_id.to_owned(),
        name: format!("Till {terminal_id}"),
    }
}

async fn new_store(store: &Store, id: &str, policy: OversellPolicy) {
    store.create_store(no_key(), store_row(id, policy)).await.unwrap();
}

async fn new_product(store: &Store, sku: &str) {
    store.create_product(no_key(), product(sku, 250), vec![]).await.unwrap();
}

/// Receives stock with a fresh key.
async fn receive(store: &Store, store_id: &str, sku: &str, quantity: i64) -> pb::AdjustStockResponse {
    let k = uuid::Uuid::now_v7().to_string();
    store.adjust_stock(key(&k, k.as_bytes()), store_id, mv(sku, quantity), "received").await.unwrap()
}

async fn quantity(store: &Store, store_id: &str, sku: &str) -> i64 {
    store.get_stock(store_id, sku).await.unwrap().quantity
}

async fn all_events(store: &Store, store_id: &str) -> Vec<EventEnvelope> {
    store.events_after(store_id, 0, 10_000).await.unwrap()
}

fn changes(event: &EventEnvelope) -> &redstore_proto::events::InventoryChanged {
    match &event.payload {
        Some(Payload::InventoryChanged(c)) => c,
        other => panic!("expected InventoryChanged, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found(err: Error, message: &str) {
    match err {
        Error::NotFound(m) => assert_eq!(m, message),
        other => panic!("expected NOT_FOUND {message:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_already_exists(err: Error, message: &str) {
    match err {
        Error::AlreadyExists(m) => assert_eq!(m, message),
        other => panic!("expected ALREADY_EXISTS {message:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_insufficient(err: Error, sku: &str, store_id: &str, requested: i64, available: i64) {
    match err {
        Error::FailedPrecondition { kind, subject, message } => {
            assert_eq!(kind, "STOCK");
            assert_eq!(subject, format!("sku:{sku}"));
            assert_eq!(
                message,
                format!(
                    "insufficient stock of sku {sku:?} in store {store_id:?}: requested {requested}, \
                     available {available} (the store does not sell below zero)"
                )
            );
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
}

fn ids(stores: &[StoreRow]) -> Vec<&str> {
    stores.iter().map(|s| s.store_id.as_str()).collect()
}

// ---- stores, terminals, products -----------------------------------------------------------

pub async fn stores_crud_paging_and_errors(store: Store) {
    let created = store.create_store(no_key(), store_row("beta", OversellPolicy::Strict)).await.unwrap();
    assert_eq!(
        created,
        pb::Store {
            store_id: "beta".into(),
            name: "Store beta".into(),
            oversell_policy: pb::OversellPolicy::Strict as i32
        }
    );
    // Byte order, as SQLite compares: upper case before lower case, "alpha" before "alpha-2".
    for id in ["alpha-2", "Zeta", "alpha"] {
        new_store(&store, id, OversellPolicy::AllowNegative).await;
    }

    let got = store.get_store("Zeta").await.unwrap();
    assert_eq!((got.name.as_str(), got.policy), ("Store Zeta", OversellPolicy::AllowNegative));
    assert_eq!(store.get_store("beta").await.unwrap().policy, OversellPolicy::Strict);

    assert_eq!(ids(&store.list_stores("", 100).await.unwrap()), ["Zeta", "alpha", "alpha-2", "beta"]);
    assert_eq!(ids(&store.list_stores("", 2).await.unwrap()), ["Zeta", "alpha"]);
    assert_eq!(ids(&store.list_stores("alpha", 2).await.unwrap()), ["alpha-2", "beta"]);
    assert!(store.list_stores("beta", 2).await.unwrap().is_empty());

    let dup = store.create_store(no_key(), store_row("beta", OversellPolicy::AllowNegative)).await.unwrap_err();
    assert_already_exists(dup, r#"store_id "beta" already exists"#);
    // The failed create changed nothing.
    assert_eq!(store.get_store("beta").await.unwrap().policy, OversellPolicy::Strict);

    assert_not_found(store.get_store("nope").await.unwrap_err(), r#"store_id "nope" does not exist"#);
}

pub async fn create_store_is_idempotent_by_key(store: Store) {
    let first = store.create_store(key("k-1", b"req-1"), store_row("s1", OversellPolicy::Strict)).await.unwrap();
    // Same key, same request: the stored answer, not ALREADY_EXISTS.
    let again = store.create_store(key("k-1", b"req-1"), store_row("s1", OversellPolicy::Strict)).await.unwrap();
    assert_eq!(first, again);
    // Same key, another request.
    let err = store.create_store(key("k-1", b"req-2"), store_row("s2", OversellPolicy::Strict)).await.unwrap_err();
    assert_already_exists(
        err,
        r#"idempotency_key "k-1" was already used for a different inventory.create_store request; use a new key for a new request"#,
    );
    assert_not_found(store.get_store("s2").await.unwrap_err(), r#"store_id "s2" does not exist"#);
    // A new key for an existing store: the store's own ALREADY_EXISTS, and the key stays unused.
    let err = store.create_store(key("k-2", b"req-3"), store_row("s1", OversellPolicy::Strict)).await.unwrap_err();
    assert_already_exists(err, r#"store_id "s1" already exists"#);
    store.create_store(key("k-2", b"req-4"), store_row("s3", OversellPolicy::Strict)).await.unwrap();
    assert_eq!(ids(&store.list_stores("", 10).await.unwrap()), ["s1", "s3"]);
}

pub async fn terminals_crud_paging_and_errors(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::Strict).await;
    for t in ["t-3", "t-1", "T-9", "t-2"] {
        assert_eq!(store.register_terminal(no_key(), terminal("s1", t)).await.unwrap(), terminal("s1", t));
    }
    store.register_terminal(no_key(), terminal("s2", "t-1")).await.unwrap();

    let list = |after: &'static str, limit| {
        let store = store.clone();
        async move {
            store
                .list_terminals("s1", after, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.terminal_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("", 10).await, ["T-9", "t-1", "t-2", "t-3"]);
    assert_eq!(list("", 2).await, ["T-9", "t-1"]);
    assert_eq!(list("t-1", 2).await, ["t-2", "t-3"]);
    assert!(list("t-3", 2).await.is_empty());
    assert_eq!(store.list_terminals("s2", "", 10).await.unwrap(), [terminal("s2", "t-1")]);

    store.require_terminal("s1", "t-2").await.unwrap();
    store.require_terminal("s2", "t-1").await.unwrap();
    assert_not_found(
        store.require_terminal("s2", "t-2").await.unwrap_err(),
        r#"terminal_id "t-2" is not registered in store "s2""#,
    );
    assert_not_found(store.require_terminal("nope", "t-1").await.unwrap_err(), r#"store_id "nope" does not exist"#);

    assert_already_exists(
        store.register_terminal(no_key(), terminal("s1", "t-1")).await.unwrap_err(),
        r#"terminal_id "t-1" is already registered in store "s1""#,
    );
    assert_not_found(
        store.register_terminal(no_key(), terminal("nope", "t-1")).await.unwrap_err(),
        r#"store_id "nope" does not exist"#,
    );
    assert_not_found(store.list_terminals("nope", "", 10).await.unwrap_err(), r#"store_id "nope" does not exist"#);

    // Idempotent by key.
    let t = terminal("s2", "t-7");
    assert_eq!(store.register_terminal(key("k", b"r"), t.clone()).await.unwrap(), t);
    assert_eq!(store.register_terminal(key("k", b"r"), t.clone()).await.unwrap(), t);
    assert_already_exists(
        store.register_terminal(key("k", b"other"), terminal("s2", "t-8")).await.unwrap_err(),
        r#"idempotency_key "k" was already used for a different inventory.register_terminal request; use a new key for a new request"#,
    );
    assert_eq!(store.list_terminals("s2", "", 10).await.unwrap().len(), 2);
}

pub async fn products_crud_paging_and_errors(store: Store) {
    let (b1, b2, b3) = (ean13("400638133393"), ean13("590123412345"), ean13("871234567890"));
    let mut p = product("sku-b", 199);
    p.name = "Bread".into();
    let created = store.create_product(no_key(), p.clone(), vec![barcode(&b2), barcode(&b1)]).await.unwrap();
    let mut expected_barcodes = vec![b1.clone(), b2.clone()];
    expected_barcodes.sort();
    assert_eq!(
        created,
        pb::Product {
            sku: "sku-b".into(),
            name: "Bread".into(),
            price: Some(eur(199).to_proto()),
            barcodes: expected_barcodes.clone(),
            active: true
        }
    );
    let got = store.get_product("sku-b").await.unwrap();
    assert_eq!(got.to_proto(), created);

    let mut inactive = product("sku-a", 0);
    inactive.active = false;
    store.create_product(no_key(), inactive, vec![]).await.unwrap();
    for sku in ["sku-c", "SKU-d", "sku-a-2"] {
        new_product(&store, sku).await;
    }

    let skus = |all: bool, after: &'static str, limit: u32| {
        let store = store.clone();
        async move { store.list_products(all, after, limit).await.unwrap().into_iter().map(|p| p.sku).collect::<Vec<_>>() }
    };
    assert_eq!(skus(true, "", 10).await, ["SKU-d", "sku-a", "sku-a-2", "sku-b", "sku-c"]);
    assert_eq!(skus(false, "", 10).await, ["SKU-d", "sku-a-2", "sku-b", "sku-c"]);
    assert_eq!(skus(true, "", 2).await, ["SKU-d", "sku-a"]);
    assert_eq!(skus(true, "sku-a", 2).await, ["sku-a-2", "sku-b"]);
    assert_eq!(skus(false, "SKU-d", 2).await, ["sku-a-2", "sku-b"]);
    assert!(skus(true, "sku-c", 2).await.is_empty());
    let listed = store.list_products(true, "sku-a-2", 1).await.unwrap();
    assert_eq!(listed[0].barcodes, expected_barcodes);

    assert_already_exists(
        store.create_product(no_key(), product("sku-b", 1), vec![]).await.unwrap_err(),
        r#"sku "sku-b" already exists"#,
    );
    // A barcode of another product: ALREADY_EXISTS naming it, and the whole create rolls back.
    assert_already_exists(
        store.create_product(no_key(), product("sku-e", 1), vec![barcode(&b3), barcode(&b1)]).await.unwrap_err(),
        &format!(r#"barcodes[1]: barcode {b1} already belongs to sku "sku-b""#),
    );
    assert_not_found(store.get_product("sku-e").await.unwrap_err(), r#"sku "sku-e" does not exist"#);
    assert_not_found(
        store.product_by_barcode(&barcode(&b3)).await.unwrap_err(),
        &format!("no product has barcode {b3}"),
    );
    store.create_product(no_key(), product("sku-e", 1), vec![barcode(&b3)]).await.unwrap();
    assert_eq!(store.product_by_barcode(&barcode(&b3)).await.unwrap().sku, "sku-e");

    assert_not_found(store.get_product("nope").await.unwrap_err(), r#"sku "nope" does not exist"#);

    // Idempotent by key.
    let a = store.create_product(key("k", b"r"), product("sku-f", 5), vec![]).await.unwrap();
    let b = store.create_product(key("k", b"r"), product("sku-f", 5), vec![]).await.unwrap();
    assert_eq!(a, b);
    assert_already_exists(
        store.create_product(key("k", b"r2"), product("sku-g", 5), vec![]).await.unwrap_err(),
        r#"idempotency_key "k" was already used for a different inventory.create_product request; use a new key for a new request"#,
    );
}

pub async fn product_updates_patch_and_replace_barcodes(store: Store) {
    let (b1, b2, b3) = (ean13("400638133393"), ean13("590123412345"), ean13("871234567890"));
    store.create_product(no_key(), product("sku-a", 100), vec![barcode(&b1), barcode(&b2)]).await.unwrap();
    store.create_product(no_key(), product("sku-b", 100), vec![barcode(&b3)]).await.unwrap();

    // Only the name: price, active and barcodes stay.
    let patch = ProductPatch { sku: "sku-a".into(), name: Some("Apples".into()), ..Default::default() };
    let updated = store.update_product(no_key(), patch).await.unwrap();
    assert_eq!(updated.name, "Apples");
    assert_eq!(updated.price, Some(eur(100).to_proto()));
    assert!(updated.active);
    assert_eq!(updated.barcodes.len(), 2);

    // Price, active and an exact new set of barcodes.
    let patch = ProductPatch {
        sku: "sku-a".into(),
        price: Some(eur(150)),
        active: Some(false),
        barcodes: Some(vec![barcode(&b2)]),
        ..Default::default()
    };
    let updated = store.update_product(no_key(), patch).await.unwrap();
    assert_eq!((updated.price.clone(), updated.active), (Some(eur(150).to_proto()), false));
    assert_eq!(updated.barcodes, [b2]);
    assert_eq!(store.get_product("sku-a").await.unwrap().to_proto(), updated);
    assert_not_found(
        store.product_by_barcode(&barcode(&b1)).await.unwrap_err(),
        &format!("no product has barcode {b1}"),
    );
    assert!(store.list_products(false, "", 10).await.unwrap().iter().all(|p| p.sku != "sku-a"));

    // Taking another product's barcode fails and changes nothing.
    let patch = ProductPatch {
        sku: "sku-a".into(),
        name: Some("Stolen".into()),
        barcodes: Some(vec![barcode(&b1), barcode(&b3)]),
        ..Default::default()
    };
    assert_already_exists(
        store.update_product(no_key(), patch).await.unwrap_err(),
        &format!(r#"barcodes[1]: barcode {b3} already belongs to sku "sku-b""#),
    );
    assert_eq!(store.get_product("sku-a").await.unwrap().to_proto(), updated);

    assert_not_found(
        store.update_product(no_key(), ProductPatch { sku: "nope".into(), ..Default::default() }).await.unwrap_err(),
        r#"sku "nope" does not exist"#,
    );

    // Idempotent by key: the replay answers what the first call answered.
    let patch = ProductPatch { sku: "sku-b".into(), name: Some("Bananas".into()), ..Default::default() };
    let first = store.update_product(key("k", b"r"), patch.clone()).await.unwrap();
    store
        .update_product(
            no_key(),
            ProductPatch { sku: "sku-b".into(), name: Some("Later".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(store.update_product(key("k", b"r"), patch).await.unwrap(), first);
    assert_eq!(store.get_product("sku-b").await.unwrap().name, "Later");
    assert_already_exists(
        store
            .update_product(key("k", b"r2"), ProductPatch { sku: "sku-b".into(), ..Default::default() })
            .await
            .unwrap_err(),
        r#"idempotency_key "k" was already used for a different inventory.update_product request; use a new key for a new request"#,
    );
}

pub async fn barcode_lookup_finds_ean13_by_upc_a(store: Store) {
    // A UPC-A code is the EAN-13 with a leading zero.
    let ean = ean13("003600029145");
    let upc = &ean[1..];
    assert_eq!(upc.len(), 12);
    store.create_product(no_key(), product("sku-upc", 100), vec![barcode(&ean)]).await.unwrap();
    assert_eq!(store.product_by_barcode(&barcode(upc)).await.unwrap().sku, "sku-upc");
    assert_eq!(store.product_by_barcode(&barcode(&ean)).await.unwrap().sku, "sku-upc");

    // Stored by its UPC-A form, found by the EAN-13 form, and listed as 13 digits.
    let ean2 = ean13("012345678905");
    store.create_product(no_key(), product("sku-upc-2", 100), vec![barcode(&ean2[1..])]).await.unwrap();
    let found = store.product_by_barcode(&barcode(&ean2)).await.unwrap();
    assert_eq!((found.sku.as_str(), found.barcodes), ("sku-upc-2", vec![ean2.clone()]));
    // The same item under its other form belongs to the first product already.
    assert_already_exists(
        store.create_product(no_key(), product("sku-x", 1), vec![barcode(&ean2)]).await.unwrap_err(),
        &format!(r#"barcodes[0]: barcode {ean2} already belongs to sku "sku-upc-2""#),
    );

    let unknown = ean13("123456789012");
    assert_not_found(
        store.product_by_barcode(&barcode(&unknown)).await.unwrap_err(),
        &format!("no product has barcode {unknown}"),
    );
}

// ---- stock ---------------------------------------------------------------------------------

pub async fn stock_reads_default_to_zero_and_name_missing_things(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    new_product(&store, "sku-2").await;

    assert_eq!(
        store.get_stock("s1", "sku-1").await.unwrap(),
        pb::StockLevel { store_id: "s1".into(), sku: "sku-1".into(), quantity: 0, last_seq: 0 }
    );
    assert!(store.list_stock("s1", "", 10).await.unwrap().is_empty());
    assert_not_found(store.get_stock("nope", "sku-1").await.unwrap_err(), r#"store_id "nope" does not exist"#);
    assert_not_found(store.get_stock("s1", "nope").await.unwrap_err(), r#"sku "nope" does not exist"#);
    assert_not_found(store.list_stock("nope", "", 10).await.unwrap_err(), r#"store_id "nope" does not exist"#);

    receive(&store, "s1", "sku-2", 4).await;
    receive(&store, "s1", "sku-1", 3).await;
    receive(&store, "s2", "sku-1", 9).await;
    let levels = store.list_stock("s1", "", 10).await.unwrap();
    assert_eq!(
        levels,
        [
            pb::StockLevel { store_id: "s1".into(), sku: "sku-1".into(), quantity: 3, last_seq: 2 },
            pb::StockLevel { store_id: "s1".into(), sku: "sku-2".into(), quantity: 4, last_seq: 1 },
        ]
    );
    assert_eq!(store.list_stock("s1", "", 1).await.unwrap(), levels[..1]);
    assert_eq!(store.list_stock("s1", "sku-1", 5).await.unwrap(), levels[1..]);
    assert_eq!(store.get_stock("s2", "sku-1").await.unwrap().quantity, 9);
    assert_eq!(store.get_stock("s2", "sku-1").await.unwrap().last_seq, 1);
    assert_eq!(store.get_stock("s2", "sku-2").await.unwrap().quantity, 0);
}

pub async fn adjust_stock_is_idempotent_by_key(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;

    let first = store.adjust_stock(key("adj-1", b"plus-5"), "s1", mv("sku-1", 5), "received").await.unwrap();
    assert_eq!(
        first.stock,
        Some(pb::StockLevel { store_id: "s1".into(), sku: "sku-1".into(), quantity: 5, last_seq: 1 })
    );
    assert!(uuid::Uuid::parse_str(&first.adjustment_id).is_ok());
    let again = store.adjust_stock(key("adj-1", b"plus-5"), "s1", mv("sku-1", 5), "received").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(quantity(&store, "s1", "sku-1").await, 5);
    assert_eq!(all_events(&store, "s1").await.len(), 1);

    let err = store.adjust_stock(key("adj-1", b"plus-6"), "s1", mv("sku-1", 6), "received").await.unwrap_err();
    assert_already_exists(
        err,
        r#"idempotency_key "adj-1" was already used for a different inventory.adjust_stock:s1 request; use a new key for a new request"#,
    );
    assert_eq!(quantity(&store, "s1", "sku-1").await, 5);

    // Keys are per store.
    let other = store.adjust_stock(key("adj-1", b"plus-5"), "s2", mv("sku-1", 5), "received").await.unwrap();
    assert_ne!(other.adjustment_id, first.adjustment_id);
    assert_eq!(quantity(&store, "s2", "sku-1").await, 5);

    // A strict store does not adjust below zero; the key stays free for a corrected request.
    let err = store.adjust_stock(key("adj-2", b"minus-9"), "s1", mv("sku-1", -9), "damaged").await.unwrap_err();
    assert_insufficient(err, "sku-1", "s1", 9, 5);
    let ok = store.adjust_stock(key("adj-2", b"minus-2"), "s1", mv("sku-1", -2), "damaged").await.unwrap();
    assert_eq!(ok.stock.unwrap().quantity, 3);

    let events = all_events(&store, "s1").await;
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1, 2]);
    let c = changes(&events[1]);
    assert_eq!(
        (c.reason.as_str(), c.reference_id.as_str(), c.terminal_id.as_str()),
        ("damaged", ok.adjustment_id.as_str(), "")
    );

    assert_not_found(
        store.adjust_stock(key("adj-3", b"x"), "nope", mv("sku-1", 1), "received").await.unwrap_err(),
        r#"store_id "nope" does not exist"#,
    );
    assert_not_found(
        store.adjust_stock(key("adj-3", b"x"), "s1", mv("nope", 1), "received").await.unwrap_err(),
        r#"sku "nope" does not exist"#,
    );
}

/// Repeats of one adjustment arriving at once (a terminal's retries on shop Wi-Fi) apply it once
/// and all answer as the first did.
pub async fn concurrent_repeats_of_one_adjustment_apply_it_once(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(
                async move { store.adjust_stock(key("adj-1", b"plus-5"), "s1", mv("sku-1", 5), "received").await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for t in tries {
        answers.push(t.await.unwrap().expect("every repeat is answered"));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(quantity(&store, "s1", "sku-1").await, 5);
    assert_eq!(all_events(&store, "s1").await.len(), 1);
}

/// A refund puts its units back once, however often it is sent, with an event naming it; the
/// same refund id with other lines is refused; an unknown store or sku changes nothing.
pub async fn apply_refund_returns_stock_once_by_refund_id(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::AllowNegative).await;
    new_product(&store, "sku-1").await;
    new_product(&store, "sku-2").await;
    receive(&store, "s1", "sku-1", 2).await;
    store.apply_sale("s1", order("sale-1", b"fp".to_vec(), "t1", vec![mv("sku-1", -2)])).await.unwrap();

    let lines = vec![mv("sku-1", 1), mv("sku-2", 1)];
    let first = store.apply_refund("refund-1", "s1", "t2", lines.clone()).await.unwrap();
    assert_eq!(first.store_seq, 3);
    assert!(first.negative_skus.is_empty());
    assert_eq!(
        first.stock,
        [
            pb::StockLevel { store_id: "s1".into(), sku: "sku-1".into(), quantity: 1, last_seq: 3 },
            pb::StockLevel { store_id: "s1".into(), sku: "sku-2".into(), quantity: 1, last_seq: 3 },
        ]
    );
    assert_eq!(store.apply_refund("refund-1", "s1", "t2", lines.clone()).await.unwrap(), first);
    assert_eq!(quantity(&store, "s1", "sku-1").await, 1);
    let err = store.apply_refund("refund-1", "s1", "t2", vec![mv("sku-1", 2)]).await.unwrap_err();
    assert_already_exists(
        err,
        r#"idempotency_key "refund-1" was already used for a different inventory.apply_refund request; use a new key for a new request"#,
    );
    assert_eq!(quantity(&store, "s1", "sku-1").await, 1);

    let events = all_events(&store, "s1").await;
    assert_eq!(events.len(), 3);
    let c = changes(&events[2]);
    assert_eq!((c.reason.as_str(), c.reference_id.as_str(), c.terminal_id.as_str()), ("refund", "refund-1", "t2"));
    assert_eq!(
        c.changes.iter().map(|s| (s.sku.as_str(), s.delta, s.quantity_after, s.negative)).collect::<Vec<_>>(),
        [("sku-1", 1, 1, false), ("sku-2", 1, 1, false)]
    );

    // A store that sold what it did not have stays below zero, and says so, until refunds cover it.
    store.apply_sale("s2", order("sale-2", b"fp".to_vec(), "t1", vec![mv("sku-1", -3)])).await.unwrap();
    let partly = store.apply_refund("refund-2", "s2", "t1", vec![mv("sku-1", 1)]).await.unwrap();
    assert_eq!((partly.stock[0].quantity, partly.negative_skus.as_slice()), (-2, ["sku-1".to_owned()].as_slice()));

    assert_not_found(
        store.apply_refund("refund-3", "nope", "t1", vec![mv("sku-1", 1)]).await.unwrap_err(),
        r#"store_id "nope" does not exist"#,
    );
    assert_not_found(
        store.apply_refund("refund-3", "s1", "t1", vec![mv("sku-1", 1), mv("nope", 1)]).await.unwrap_err(),
        r#"sku "nope" does not exist"#,
    );
    assert_eq!(quantity(&store, "s1", "sku-1").await, 1);
    assert_eq!(all_events(&store, "s1").await.len(), 3);
}

pub async fn apply_sale_is_idempotent_by_sale_id(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    new_product(&store, "sku-2").await;
    receive(&store, "s1", "sku-1", 10).await;
    receive(&store, "s1", "sku-2", 10).await;

    let lines = vec![mv("sku-1", -3), mv("sku-2", -1)];
    let first = store.apply_sale("s1", order("sale-1", b"fp-1".to_vec(), "t1", lines.clone())).await.unwrap();
    assert_eq!(first.store_seq, 3);
    assert!(first.negative_skus.is_empty());
    assert_eq!(
        first.stock,
        [
            pb::StockLevel { store_id: "s1".into(), sku: "sku-1".into(), quantity: 7, last_seq: 3 },
            pb::StockLevel { store_id: "s1".into(), sku: "sku-2".into(), quantity: 9, last_seq: 3 },
        ]
    );
    let again = store.apply_sale("s1", order("sale-1", b"fp-1".to_vec(), "t1", lines.clone())).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(quantity(&store, "s1", "sku-1").await, 7);
    assert_eq!(quantity(&store, "s1", "sku-2").await, 9);

    let err = store.apply_sale("s1", order("sale-1", b"fp-2".to_vec(), "t1", vec![mv("sku-1", -1)])).await.unwrap_err();
    assert_already_exists(
        err,
        r#"idempotency_key "sale-1" was already used for a different inventory.apply_sale request; use a new key for a new request"#,
    );
    assert_eq!(quantity(&store, "s1", "sku-1").await, 7);

    let events = all_events(&store, "s1").await;
    assert_eq!(events.len(), 3);
    let sale = &events[2];
    assert_eq!((sale.r#type.as_str(), sale.store_id.as_str(), sale.store_seq), ("inventory.changed", "s1", 3));
    let c = changes(sale);
    assert_eq!((c.reason.as_str(), c.reference_id.as_str(), c.terminal_id.as_str()), ("sale", "sale-1", "t1"));
    assert_eq!(
        c.changes.iter().map(|s| (s.sku.as_str(), s.delta, s.quantity_after, s.negative)).collect::<Vec<_>>(),
        [("sku-1", -3, 7, false), ("sku-2", -1, 9, false)]
    );
}

/// A checkout recorded only once inventory applied it comes under its key with a fresh sale id on
/// every attempt: applied once, each retry answered with the first attempt's sale (kept), the key
/// with another request refused; the applied checkouts are listed by time, page by page. A
/// checkout refused leaves its key free.
pub async fn apply_sale_under_a_checkout_key_applies_it_once_and_keeps_the_sale(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    receive(&store, "s1", "sku-1", 10).await;
    let attempt = |sale_id: &str, key: &str, fingerprint: &[u8], quantity: i64| SaleOrder {
        checkout: Some(CheckoutKey {
            key: key.to_owned(),
            fingerprint: fingerprint.to_vec(),
            sale: format!("the sale {sale_id}").into_bytes(),
        }),
        ..order(sale_id, sale_id.as_bytes().to_vec(), "t1", vec![mv("sku-1", -quantity)])
    };
    let started_ms = redstore_platform::time::unix_ms(std::time::SystemTime::now());

    let first = store.apply_sale("s1", attempt("sale-1", "k-1", b"fp-1", 3)).await.unwrap();
    assert_eq!(first.sale_id, "sale-1");
    assert_eq!(quantity(&store, "s1", "sku-1").await, 7);
    // The retry carries a new sale id: it is answered with the first one's, and its sale.
    let retry = store.apply_sale("s1", attempt("sale-2", "k-1", b"fp-1", 3)).await.unwrap();
    assert_eq!((retry.sale_id.as_str(), retry.sale.as_slice()), ("sale-1", &b"the sale sale-1"[..]));
    assert_eq!((retry.stock.clone(), retry.store_seq), (first.stock.clone(), first.store_seq));
    assert_eq!(quantity(&store, "s1", "sku-1").await, 7);
    // The same key for another request: refused, nothing taken.
    let err = store.apply_sale("s1", attempt("sale-3", "k-1", b"fp-2", 1)).await.unwrap_err();
    assert!(matches!(&err, Error::AlreadyExists(m) if m.contains(r#"idempotency_key "k-1""#)), "{err:?}");
    assert_eq!(quantity(&store, "s1", "sku-1").await, 7);
    // Refused for stock: its key stays free, and takes the sale once there is stock.
    let err = store.apply_sale("s1", attempt("sale-4", "k-2", b"fp-3", 8)).await.unwrap_err();
    assert_insufficient(err, "sku-1", "s1", 8, 7);
    receive(&store, "s1", "sku-1", 1).await;
    let later = store.apply_sale("s1", attempt("sale-5", "k-2", b"fp-3", 8)).await.unwrap();
    assert_eq!(later.sale_id, "sale-5");
    assert_eq!(quantity(&store, "s1", "sku-1").await, 0);
    for i in 0..3 {
        receive(&store, "s1", "sku-1", 1).await;
        store.apply_sale("s1", attempt(&format!("sale-p{i}"), &format!("k-p{i}"), b"fp-p", 1)).await.unwrap();
    }

    // Listed oldest first, with their fingerprints and kept sales; a window, then pages.
    let now_ms = redstore_platform::time::unix_ms(std::time::SystemTime::now()) + 1;
    let window = CheckoutsQuery { from_ms: started_ms, before_ms: now_ms, limit: 100, ..CheckoutsQuery::default() };
    let all = store.applied_checkouts("s1", window.clone()).await.unwrap();
    let keys: BTreeSet<&str> = all.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["k-1", "k-2", "k-p0", "k-p1", "k-p2"]));
    let k1 = all.iter().find(|c| c.key == "k-1").unwrap();
    assert_eq!((k1.fingerprint.as_slice(), k1.answer.sale_id.as_str()), (&b"fp-1"[..], "sale-1"));
    assert_eq!(k1.answer.sale, b"the sale sale-1");
    assert!(all.windows(2).all(|w| (w[0].applied_at_ms, &w[0].key) < (w[1].applied_at_ms, &w[1].key)));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let query = CheckoutsQuery { after: after.clone(), limit: 2, ..window.clone() };
        let page = store.applied_checkouts("s1", query).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.applied_at_ms, last.key.clone()));
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let later = CheckoutsQuery { from_ms: now_ms, before_ms: now_ms + 60_000, ..window.clone() };
    assert!(store.applied_checkouts("s1", later).await.unwrap().is_empty());
    let earlier = CheckoutsQuery { from_ms: 0, before_ms: started_ms, ..window.clone() };
    assert!(store.applied_checkouts("s1", earlier).await.unwrap().is_empty());
    // Keys only; or only the keys asked for (one unknown), in full.
    let keys = store.applied_checkouts("s1", CheckoutsQuery { keys_only: true, ..window.clone() }).await.unwrap();
    let bare: Vec<AppliedCheckout> = all
        .iter()
        .map(|c| AppliedCheckout { key: c.key.clone(), applied_at_ms: c.applied_at_ms, ..AppliedCheckout::default() })
        .collect();
    assert_eq!(keys, bare);
    let asked = vec!["k-2".to_owned(), "k-none".to_owned(), "k-1".to_owned()];
    let some = store.applied_checkouts("s1", CheckoutsQuery { keys: asked, ..window.clone() }).await.unwrap();
    let expected: Vec<AppliedCheckout> = all.iter().filter(|c| c.key == "k-1" || c.key == "k-2").cloned().collect();
    assert_eq!(some, expected);
}

/// A sale priced from a copy of the catalog carries the prices it charged: it takes stock only
/// while they are still the catalog's and the products are for sale, and a refusal leaves nothing
/// (not even its sale id used).
pub async fn apply_sale_is_held_to_the_prices_it_charged(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    new_product(&store, "sku-2").await;
    receive(&store, "s1", "sku-1", 10).await;
    receive(&store, "s1", "sku-2", 10).await;
    let charged = |prices: &[(&str, i64)]| -> Vec<ChargedPrice> {
        prices.iter().map(|(sku, minor)| ChargedPrice { sku: (*sku).to_owned(), price: eur(*minor) }).collect()
    };
    let priced = |id: &str, prices: &[(&str, i64)]| SaleOrder {
        charged: charged(prices),
        ..order(id, id.as_bytes().to_vec(), "t1", vec![mv("sku-1", -2), mv("sku-2", -1)])
    };

    // The catalog's prices: taken.
    let applied = store.apply_sale("s1", priced("sale-1", &[("sku-1", 250), ("sku-2", 250)])).await.unwrap();
    assert_eq!(applied.store_seq, 3);

    // One price that no longer holds: refused, nothing taken, the sale id still free.
    let changed = ProductPatch { sku: "sku-2".into(), price: Some(eur(300)), ..ProductPatch::default() };
    store.update_product(no_key(), changed).await.unwrap();
    let err = store.apply_sale("s1", priced("sale-2", &[("sku-1", 250), ("sku-2", 250)])).await.unwrap_err();
    assert_eq!(err.violation_type().as_deref(), Some("PRICE"), "{err:?}");
    assert_eq!(err.to_string(), r#"sku "sku-2" now costs 3.00 EUR, not the 2.50 EUR charged; price the sale again"#);
    assert_eq!((quantity(&store, "s1", "sku-1").await, quantity(&store, "s1", "sku-2").await), (8, 9));
    assert_eq!(all_events(&store, "s1").await.len(), 3);

    // Another currency is another price.
    let err = store
        .apply_sale(
            "s1",
            SaleOrder {
                charged: vec![ChargedPrice {
                    sku: "sku-1".into(),
                    price: Money::new(Currency::parse("c", "USD").unwrap(), 250),
                }],
                ..order("sale-2", b"x".to_vec(), "t1", vec![mv("sku-1", -1)])
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.violation_type().as_deref(), Some("PRICE"), "{err:?}");

    // Priced again, the same sale id goes through.
    let applied = store.apply_sale("s1", priced("sale-2", &[("sku-1", 250), ("sku-2", 300)])).await.unwrap();
    assert_eq!(applied.store_seq, 4);
    assert_eq!((quantity(&store, "s1", "sku-1").await, quantity(&store, "s1", "sku-2").await), (6, 8));

    // A product no longer for sale: refused.
    let withdrawn = ProductPatch { sku: "sku-1".into(), active: Some(false), ..ProductPatch::default() };
    store.update_product(no_key(), withdrawn).await.unwrap();
    let err = store.apply_sale("s1", priced("sale-3", &[("sku-1", 250), ("sku-2", 300)])).await.unwrap_err();
    assert_eq!(err.violation_type().as_deref(), Some("PRICE"), "{err:?}");
    assert_eq!(err.to_string(), r#"sku "sku-1" is no longer for sale (inactive); price the sale again"#);
    assert_eq!((quantity(&store, "s1", "sku-1").await, quantity(&store, "s1", "sku-2").await), (6, 8));

    // A sale that charged nothing is not held to the catalog (the caller priced it in the same
    // transaction, or does not price).
    store.apply_sale("s1", order("sale-4", b"y".to_vec(), "t1", vec![mv("sku-1", -1)])).await.unwrap();
    assert_eq!(quantity(&store, "s1", "sku-1").await, 5);
}

pub async fn apply_sale_rejects_unknown_store_and_sku_without_effect(store: Store) {
    new_store(&store, "s1", OversellPolicy::AllowNegative).await;
    new_product(&store, "sku-1").await;
    receive(&store, "s1", "sku-1", 2).await;

    assert_not_found(
        store.apply_sale("nope", order("sale-1", b"a".to_vec(), "t1", vec![mv("sku-1", -1)])).await.unwrap_err(),
        r#"store_id "nope" does not exist"#,
    );
    assert_not_found(
        store
            .apply_sale("s1", order("sale-1", b"b".to_vec(), "t1", vec![mv("sku-1", -1), mv("ghost", -1)]))
            .await
            .unwrap_err(),
        r#"sku "ghost" does not exist"#,
    );
    assert_eq!(quantity(&store, "s1", "sku-1").await, 2);
    assert_eq!(all_events(&store, "s1").await.len(), 1);
    // A failed sale leaves its id free.
    let ok = store.apply_sale("s1", order("sale-1", b"c".to_vec(), "t1", vec![mv("sku-1", -1)])).await.unwrap();
    assert_eq!((ok.store_seq, ok.stock[0].quantity), (2, 1));
}

pub async fn strict_store_fails_the_whole_sale(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    for sku in ["sku-a", "sku-b", "sku-c"] {
        new_product(&store, sku).await;
    }
    receive(&store, "s1", "sku-a", 5).await;
    receive(&store, "s1", "sku-b", 1).await;

    // The first line would fit; the second does not: nothing is taken.
    let err = store
        .apply_sale("s1", order("sale-1", b"x".to_vec(), "t1", vec![mv("sku-a", -2), mv("sku-b", -3)]))
        .await
        .unwrap_err();
    assert_insufficient(err, "sku-b", "s1", 3, 1);
    assert_eq!(quantity(&store, "s1", "sku-a").await, 5);
    assert_eq!(quantity(&store, "s1", "sku-b").await, 1);

    // A sku never stocked in the store has 0 available.
    let err = store.apply_sale("s1", order("sale-2", b"y".to_vec(), "t1", vec![mv("sku-c", -1)])).await.unwrap_err();
    assert_insufficient(err, "sku-c", "s1", 1, 0);
    assert_eq!(quantity(&store, "s1", "sku-c").await, 0);

    // No events and no sequence numbers were used by the failures.
    assert_eq!(all_events(&store, "s1").await.len(), 2);
    assert_eq!(store.snapshot("s1").await.unwrap().as_of_seq, 2);

    // Exactly everything is fine.
    let ok = store
        .apply_sale("s1", order("sale-3", b"z".to_vec(), "t1", vec![mv("sku-a", -5), mv("sku-b", -1)]))
        .await
        .unwrap();
    assert_eq!(ok.store_seq, 3);
    assert_eq!(ok.stock.iter().map(|s| s.quantity).collect::<Vec<_>>(), [0, 0]);
    let err = store.apply_sale("s1", order("sale-4", b"w".to_vec(), "t1", vec![mv("sku-a", -1)])).await.unwrap_err();
    assert_insufficient(err, "sku-a", "s1", 1, 0);
}

pub async fn allow_negative_store_flags_negative(store: Store) {
    new_store(&store, "s1", OversellPolicy::AllowNegative).await;
    for sku in ["sku-a", "sku-b", "sku-c"] {
        new_product(&store, sku).await;
    }
    receive(&store, "s1", "sku-a", 2).await;
    receive(&store, "s1", "sku-b", 5).await;

    let sale = store
        .apply_sale("s1", order("sale-1", b"x".to_vec(), "t1", vec![mv("sku-a", -3), mv("sku-b", -1), mv("sku-c", -2)]))
        .await
        .unwrap();
    assert_eq!(sale.negative_skus, ["sku-a", "sku-c"]);
    assert_eq!(
        sale.stock.iter().map(|s| (s.sku.as_str(), s.quantity)).collect::<Vec<_>>(),
        [("sku-a", -1), ("sku-b", 4), ("sku-c", -2)]
    );
    assert_eq!(quantity(&store, "s1", "sku-a").await, -1);
    assert_eq!(quantity(&store, "s1", "sku-c").await, -2);

    let events = all_events(&store, "s1").await;
    let c = changes(events.last().unwrap());
    assert_eq!(
        c.changes.iter().map(|s| (s.sku.as_str(), s.delta, s.quantity_after, s.negative)).collect::<Vec<_>>(),
        [("sku-a", -3, -1, true), ("sku-b", -1, 4, false), ("sku-c", -2, -2, true)]
    );

    // Receiving brings it back; an adjustment may also take it below zero.
    let adj = receive(&store, "s1", "sku-a", 4).await;
    assert_eq!(adj.stock.unwrap().quantity, 3);
    let k = key("lost-1", b"lost");
    let lost = store.adjust_stock(k, "s1", mv("sku-b", -10), "lost").await.unwrap();
    assert_eq!(lost.stock.unwrap().quantity, -6);
    let events = all_events(&store, "s1").await;
    assert!(changes(events.last().unwrap()).changes[0].negative);
}

pub async fn events_are_gapless_and_snapshot_matches(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::Strict).await;
    new_product(&store, "sku-a").await;
    new_product(&store, "sku-b").await;

    let empty = store.snapshot("s1").await.unwrap();
    assert_eq!((empty.store_id.as_str(), empty.as_of_seq, empty.items.len()), ("s1", 0, 0));
    assert!(all_events(&store, "s1").await.is_empty());

    let first = receive(&store, "s1", "sku-a", 10).await;
    receive(&store, "s2", "sku-a", 1).await;
    let sale = store.apply_sale("s1", order("sale-1", b"1".to_vec(), "t1", vec![mv("sku-a", -3)])).await.unwrap();
    // A failure and a replay take no sequence.
    store.apply_sale("s1", order("sale-2", b"2".to_vec(), "t1", vec![mv("sku-b", -1)])).await.unwrap_err();
    store.apply_sale("s1", order("sale-1", b"1".to_vec(), "t1", vec![mv("sku-a", -3)])).await.unwrap();
    receive(&store, "s1", "sku-b", 5).await;
    let second_sale = store
        .apply_sale("s1", order("sale-3", b"3".to_vec(), "t2", vec![mv("sku-b", -2), mv("sku-a", -1)]))
        .await
        .unwrap();
    assert_eq!((sale.store_seq, second_sale.store_seq), (2, 4));

    let events = all_events(&store, "s1").await;
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 4);
    for e in &events {
        assert_eq!((e.r#type.as_str(), e.store_id.as_str()), ("inventory.changed", "s1"));
        assert!(uuid::Uuid::parse_str(&e.event_id).is_ok());
        assert!(e.occurred_at.is_some());
    }
    assert_eq!(
        events.iter().map(|e| changes(e).reason.as_str()).collect::<Vec<_>>(),
        ["received", "sale", "received", "sale"]
    );
    assert_eq!(changes(&events[0]).reference_id, first.adjustment_id);
    assert_eq!(changes(&events[3]).terminal_id, "t2");

    // Paging: after a sequence, at most `limit`.
    let page = store.events_after("s1", 1, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(page, events[1..3]);
    assert!(store.events_after("s1", 4, 10).await.unwrap().is_empty());
    // Another store's sequence is its own.
    assert_eq!(all_events(&store, "s2").await.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1]);

    let snapshot = store.snapshot("s1").await.unwrap();
    assert_eq!(snapshot.as_of_seq, events.last().unwrap().store_seq);
    assert_eq!(
        snapshot.items,
        [SnapshotItem { sku: "sku-a".into(), quantity: 6 }, SnapshotItem { sku: "sku-b".into(), quantity: 3 }]
    );
    let listed = store.list_stock("s1", "", 100).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| (s.sku.clone(), s.quantity)).collect::<Vec<_>>(),
        [("sku-a".to_owned(), 6), ("sku-b".to_owned(), 3)]
    );
    assert!(listed.iter().all(|s| s.last_seq == 4));
    assert_eq!(store.snapshot("s2").await.unwrap().as_of_seq, 1);
    assert_not_found(store.snapshot("nope").await.unwrap_err(), r#"store_id "nope" does not exist"#);
}

// ---- concurrency ---------------------------------------------------------------------------

/// The race: 32 concurrent single-unit sales against 10 units in a strict store.
pub async fn strict_store_never_oversells(store: Store) {
    new_store(&store, "race", OversellPolicy::Strict).await;
    new_product(&store, "sku-1").await;
    receive(&store, "race", "sku-1", 10).await;
    let before = store.snapshot("race").await.unwrap().as_of_seq;

    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.apply_sale("race", order(&format!("sale-{i}"), vec![i as u8], "t1", vec![mv("sku-1", -1)])).await
            })
        })
        .collect();
    let mut sold = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => sold.push(response.store_seq),
            Err(err) => {
                assert_insufficient(err, "sku-1", "race", 1, 0);
                refused += 1;
            }
        }
    }
    assert_eq!((sold.len(), refused), (10, 22));
    assert_eq!(quantity(&store, "race", "sku-1").await, 0);

    sold.sort_unstable();
    assert_eq!(sold, (before + 1..=before + 10).collect::<Vec<_>>());
    let events = store.events_after("race", before, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), sold);
    // Each event took one unit, and the quantities after count down 9..0 in sequence order.
    assert_eq!(
        events.iter().map(|e| changes(e).changes[0].quantity_after).collect::<Vec<_>>(),
        (0..10).rev().collect::<Vec<i64>>()
    );
    assert_eq!(store.snapshot("race").await.unwrap().as_of_seq, before + 10);
}

/// Sales taking the same skus in opposite orders, concurrently: none deadlocks or fails.
pub async fn concurrent_sales_in_any_sku_order_all_apply(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_product(&store, "sku-a").await;
    new_product(&store, "sku-b").await;
    receive(&store, "s1", "sku-a", 100).await;
    receive(&store, "s1", "sku-b", 100).await;

    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            let lines = if i % 2 == 0 {
                vec![mv("sku-a", -1), mv("sku-b", -2)]
            } else {
                vec![mv("sku-b", -2), mv("sku-a", -1)]
            };
            tokio::spawn(async move {
                store.apply_sale("s1", order(&format!("sale-{i}"), vec![i as u8], "t1", lines)).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap().store_seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=26).collect::<Vec<u64>>());
    assert_eq!(quantity(&store, "s1", "sku-a").await, 76);
    assert_eq!(quantity(&store, "s1", "sku-b").await, 52);
    let events = all_events(&store, "s1").await;
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), (1..=26).collect::<Vec<u64>>());
}

fn imported(sku: &str, price_minor: i64, barcodes: &[&str]) -> redstore_inventory::domain::ImportProduct {
    let barcodes: Vec<Barcode> = barcodes.iter().map(|b| Barcode::parse("b", b).unwrap()).collect();
    let mut product = product(sku, price_minor);
    product.barcodes = barcodes.iter().map(|b| b.gtin13().to_owned()).collect();
    redstore_inventory::domain::ImportProduct { product, barcodes }
}

fn counts(records: &[(&str, &str, i64)]) -> Vec<(String, Vec<redstore_inventory::domain::StockCount>)> {
    let records: Vec<pb::StockCount> = records
        .iter()
        .map(|(store_id, sku, quantity)| pb::StockCount {
            store_id: (*store_id).into(),
            sku: (*sku).into(),
            quantity: *quantity,
        })
        .collect();
    redstore_inventory::domain::import_counts("counts", &records).unwrap()
}

pub async fn imports_apply_whole_batches_once_and_counts_set_levels_with_an_event_per_store(store: Store) {
    new_store(&store, "s1", OversellPolicy::Strict).await;
    new_store(&store, "s2", OversellPolicy::Strict).await;
    let code = "4006381333931";
    let first = store.import_products(key("p-1", b"a"), vec![imported("a", 100, &[code]), imported("b", 5, &[])]).await;
    assert_eq!(first.unwrap(), redstore_inventory::store::Imported { records: 2, replayed: false });
    let again = store.import_products(key("p-1", b"a"), vec![imported("a", 999, &[])]).await.unwrap();
    assert_eq!(again, redstore_inventory::store::Imported { records: 2, replayed: true });
    assert_eq!(store.get_product("a").await.unwrap().price.minor, 100, "a replay changes nothing");
    assert!(matches!(store.import_products(key("p-1", b"other"), vec![]).await, Err(Error::AlreadyExists(_))));
    // The barcode moves from a to b within one batch; a product outside the batch keeps its own.
    store.import_products(key("p-2", b"b"), vec![imported("b", 7, &[code]), imported("a", 100, &[])]).await.unwrap();
    assert_eq!(store.get_product("b").await.unwrap().barcodes, vec![code.to_owned()]);
    let err = store.import_products(key("p-3", b"c"), vec![imported("c", 1, &[]), imported("d", 1, &[code])]).await;
    assert_eq!(err.unwrap_err().field(), Some("products[1].barcodes[0]"));
    assert!(store.get_product("c").await.is_err(), "a refused batch leaves nothing");

    store.adjust_stock(key("adj", b"x"), "s1", mv("a", 4), "received").await.unwrap();
    let loaded = store.import_stock(key("c-1", b"c"), counts(&[("s2", "a", 3), ("s1", "a", 10), ("s1", "b", 2)])).await;
    assert_eq!(loaded.unwrap(), redstore_inventory::store::Imported { records: 3, replayed: false });
    assert_eq!((quantity(&store, "s1", "a").await, quantity(&store, "s1", "b").await), (10, 2));
    assert_eq!(quantity(&store, "s2", "a").await, 3);
    let events = all_events(&store, "s1").await;
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1, 2]);
    // One event per store, naming no levels: consumers re-read the store's stock.
    let Some(Payload::StockLoaded(loaded)) = &events[1].payload else {
        panic!("expected inventory.stock_loaded, got {:?}", events[1]);
    };
    assert_eq!((events[1].r#type.as_str(), loaded.reason.as_str()), ("inventory.stock_loaded", "import"));
    assert_eq!(loaded.reference_id, "c-1");
    assert_eq!(all_events(&store, "s2").await.len(), 1);
    assert!(store.import_stock(key("c-1", b"c"), counts(&[("s1", "a", 1)])).await.unwrap().replayed);
    assert_eq!(quantity(&store, "s1", "a").await, 10);

    let err = store.import_stock(key("c-2", b"d"), counts(&[("s1", "a", 1), ("s9", "a", 1), ("s1", "zz", 1)])).await;
    assert_eq!(err.unwrap_err().field(), Some("counts[1].store_id"));
    assert_eq!(quantity(&store, "s1", "a").await, 10, "a refused batch leaves nothing");
    assert_eq!(all_events(&store, "s1").await.len(), 2);
}
