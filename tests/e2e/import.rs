//! Onboarding a chain: `ImportProducts` and `ImportStock` (batches all-or-nothing, once per key,
//! refusals naming batch, record and field) and the `redstore import` commands on top of them
//! (the whole file checked first, line and column named, nothing sent for a bad file).

use std::time::Duration;

use redstore_proto::events::event_envelope::Payload;
use redstore_proto::inventory::{
    GetProductRequest, ImportProductsRequest, ImportStockRequest, ImportedProduct, OversellPolicy, StockCount,
};
use redstore_proto::stream::watch_inventory_response::Item;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::{TestApp, eur, key, watch_after};

/// Runs `redstore import <what> FILE --target <app>` with `csv` as the file: (exit success,
/// stdout, stderr).
async fn import_cli(app: &TestApp, what: &str, csv: &str, extra: &[&str]) -> (bool, String, String) {
    let file = app.dir.path().join(format!("{what}-{}.csv", key()));
    std::fs::write(&file, csv).expect("write csv");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .args(["import", what])
        .arg(&file)
        .args(["--target", &app.url])
        .env("REDSTORE_AUTH_SIGNING_KEY_FILE", crate::helpers::test_key_file())
        .args(extra)
        .output()
        .await
        .expect("run redstore import");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn product_exists(app: &TestApp, sku: &str) -> bool {
    match app.inventory().get_product(GetProductRequest { sku: sku.into() }).await {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("get product {sku}: {s:?}"),
    }
}

fn product(sku: &str, price_minor: i64, barcodes: &[&str]) -> ImportedProduct {
    ImportedProduct {
        sku: sku.into(),
        name: format!("Product {sku}"),
        price: Some(eur(price_minor)),
        barcodes: barcodes.iter().map(|b| (*b).to_owned()).collect(),
        active: true,
    }
}

fn count(store_id: &str, sku: &str, quantity: i64) -> StockCount {
    StockCount { store_id: store_id.into(), sku: sku.into(), quantity }
}

fn field_of(status: &tonic::Status) -> String {
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.into_iter().next())
        .map(|v| v.field)
        .unwrap_or_else(|| panic!("no field violation in {status:?}"))
}

#[tokio::test]
async fn the_cli_imports_stores_products_and_stock_readable_through_the_api() {
    let app = TestApp::spawn_empty().await;
    let stores = "store_id,name,oversell_policy,terminals\nimp-1,North,strict,t1|t2\nimp-2,South,allow_negative,t1\n";
    let (ok, out, err) = import_cli(&app, "stores", stores, &[]).await;
    assert!(ok, "{out}{err}");
    let products = "sku,name,price_minor,currency,barcodes,active\n\
                    A-1,Apple,120,EUR,4006381333931,true\n\
                    B-2,\"Bread, brown\",250,EUR,,\n\
                    C-3,Cheese,899,EUR,12345670|036000291452,false\n";
    let (ok, out, err) = import_cli(&app, "products", products, &["--batch", "2"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("imported 3 products in 2 batches (0 replayed)"), "{out}");
    let stock = "store_id,sku,quantity\nimp-1,A-1,10\nimp-1,B-2,5\nimp-2,A-1,7\n";
    let (ok, out, err) = import_cli(&app, "stock", stock, &[]).await;
    assert!(ok, "{out}{err}");

    let bread = app.inventory().get_product(GetProductRequest { sku: "B-2".into() }).await.unwrap().into_inner();
    let bread = bread.product.expect("product");
    assert_eq!((bread.name.as_str(), bread.price, bread.active), ("Bread, brown", Some(eur(250)), true));
    let cheese = app.inventory().get_product(GetProductRequest { sku: "C-3".into() }).await.unwrap().into_inner();
    let cheese = cheese.product.expect("product");
    assert_eq!(cheese.barcodes, vec!["0036000291452".to_owned(), "0000012345670".to_owned()].tap_sorted());
    assert!(!cheese.active);
    assert_eq!(app.stock("imp-1", "A-1").await, 10);
    assert_eq!(app.stock("imp-1", "B-2").await, 5);
    assert_eq!(app.stock("imp-2", "A-1").await, 7);
    let terminals = app
        .inventory()
        .list_terminals(redstore_proto::inventory::ListTerminalsRequest { store_id: "imp-1".into(), page: None })
        .await
        .unwrap()
        .into_inner()
        .terminals;
    assert_eq!(terminals.len(), 2);

    // The same commands again change nothing: every batch is answered from its key.
    let (ok, out, _) = import_cli(&app, "stock", stock, &[]).await;
    assert!(ok && out.contains("(1 replayed)"), "{out}");
    let (ok, out, _) = import_cli(&app, "stores", stores, &[]).await;
    assert!(ok, "{out}");
    app.stop().await;
}

trait TapSorted {
    fn tap_sorted(self) -> Self;
}

impl TapSorted for Vec<String> {
    fn tap_sorted(mut self) -> Self {
        self.sort();
        self
    }
}

#[tokio::test]
async fn a_bad_row_names_its_line_and_column_and_nothing_is_applied() {
    let app = TestApp::spawn_empty().await;
    app.create_store("bad-1", OversellPolicy::Strict, &[]).await;
    let products = "sku,name,price_minor,currency,barcodes\n\
                    GOOD-1,Good,100,EUR,\n\
                    BAD-1,Bad,-5,EUR,\n\
                    BAD-2,Bad code,100,EUR,1234567890123\n";
    let (ok, out, err) = import_cli(&app, "products", products, &[]).await;
    assert!(!ok, "a bad file must fail: {out}");
    assert!(err.contains("line 3, column price_minor"), "{err}");
    assert!(err.contains("line 4, column barcodes"), "{err}");
    assert!(!product_exists(&app, "GOOD-1").await, "a good row of a bad file is not applied");

    let (ok, _, err) = import_cli(&app, "products", "sku,name,price_minor,currency\nS-1,Soap,100,EUR\n", &[]).await;
    assert!(ok, "{err}");
    let stock = "store_id,sku,quantity\nbad-1,S-1,4\nbad-1,NOPE,1\nbad-1,S-1,x\n";
    let (ok, _, err) = import_cli(&app, "stock", stock, &[]).await;
    assert!(!ok);
    assert!(err.contains("line 4, column quantity"), "{err}");
    let (ok, _, err) = import_cli(&app, "stock", "store_id,sku,quantity\nbad-1,S-1,4\nbad-1,NOPE,1\n", &[]).await;
    assert!(!ok);
    assert!(err.contains("line 3, column sku: sku \"NOPE\" does not exist"), "{err}");
    assert_eq!(app.stock("bad-1", "S-1").await, 0, "nothing of a refused stock file is applied");

    // A barcode of a product outside the file: the server refuses that batch, naming the line.
    let (ok, _, err) =
        import_cli(&app, "products", "sku,name,price_minor,currency,barcodes\nT-1,Taken,1,EUR,4006381333931\n", &[])
            .await;
    assert!(ok, "{err}");
    let steal = "sku,name,price_minor,currency,barcodes\nU-1,Other,1,EUR,\nU-2,Thief,1,EUR,4006381333931\n";
    let (ok, _, err) = import_cli(&app, "products", steal, &[]).await;
    assert!(!ok);
    assert!(err.contains("line 3, column barcodes: barcode 4006381333931 belongs to sku \"T-1\""), "{err}");
    assert!(!product_exists(&app, "U-1").await, "the refused batch is applied not at all");
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_batch_is_a_no_op_and_its_key_with_another_batch_is_already_exists() {
    let app = TestApp::spawn_empty().await;
    app.create_store("rep-1", OversellPolicy::Strict, &[]).await;
    let batch =
        ImportProductsRequest { idempotency_key: "products-1".into(), products: vec![product("R-1", 100, &[])] };
    let first = app.inventory().import_products(futures::stream::iter([batch.clone()])).await.unwrap().into_inner();
    assert_eq!((first.batches, first.records, first.replayed_batches), (1, 1, 0));
    let again = app.inventory().import_products(futures::stream::iter([batch.clone()])).await.unwrap().into_inner();
    assert_eq!((again.batches, again.records, again.replayed_batches), (1, 1, 1));
    let mut other = batch.clone();
    other.products[0].price = Some(eur(999));
    let err = app.inventory().import_products(futures::stream::iter([other])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let r1 = app.inventory().get_product(GetProductRequest { sku: "R-1".into() }).await.unwrap().into_inner();
    assert_eq!(r1.product.expect("product").price, Some(eur(100)));

    let counts = ImportStockRequest { idempotency_key: "stock-1".into(), counts: vec![count("rep-1", "R-1", 10)] };
    app.inventory().import_stock(futures::stream::iter([counts.clone()])).await.unwrap();
    app.receive("rep-1", "R-1", -3).await;
    let seq = app.inventory_seq("rep-1").await;
    let again = app.inventory().import_stock(futures::stream::iter([counts.clone()])).await.unwrap().into_inner();
    assert_eq!(again.replayed_batches, 1);
    assert_eq!(app.stock("rep-1", "R-1").await, 7, "a replayed count sets nothing again");
    assert_eq!(app.inventory_seq("rep-1").await, seq, "and appends no event");
    let mut other = counts;
    other.counts[0].quantity = 11;
    let err = app.inventory().import_stock(futures::stream::iter([other])).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(app.stock("rep-1", "R-1").await, 7);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_record_names_its_batch_record_and_field_and_its_batch_is_not_applied() {
    let app = TestApp::spawn_empty().await;
    app.create_store("rec-1", OversellPolicy::Strict, &[]).await;
    let good = ImportProductsRequest { idempotency_key: key(), products: vec![product("P-1", 100, &[])] };
    let mut bad_price = product("P-3", 100, &[]);
    bad_price.price = Some(eur(-1));
    let bad = ImportProductsRequest { idempotency_key: key(), products: vec![product("P-2", 100, &[]), bad_price] };
    let err = app.inventory().import_products(futures::stream::iter([good, bad])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_of(&err), "batches[1].products[1].price.units_minor");
    assert!(product_exists(&app, "P-1").await, "the batch before the refused one is applied");
    assert!(!product_exists(&app, "P-2").await, "the refused batch is applied not at all");

    let counts = ImportStockRequest {
        idempotency_key: key(),
        counts: vec![count("rec-1", "P-1", 5), count("rec-1", "NOPE", 1), count("rec-404", "P-1", 1)],
    };
    let err = app.inventory().import_stock(futures::stream::iter([counts])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_of(&err), "batches[0].counts[1].sku");
    assert_eq!(app.stock("rec-1", "P-1").await, 0);
    let twice =
        ImportStockRequest { idempotency_key: key(), counts: vec![count("rec-1", "P-1", 5), count("rec-1", "P-1", 6)] };
    let err = app.inventory().import_stock(futures::stream::iter([twice])).await.unwrap_err();
    assert_eq!(field_of(&err), "batches[0].counts[1].sku");
    let no_key = ImportStockRequest { idempotency_key: String::new(), counts: vec![count("rec-1", "P-1", 5)] };
    let err = app.inventory().import_stock(futures::stream::iter([no_key])).await.unwrap_err();
    assert_eq!(field_of(&err), "batches[0].idempotency_key");
    app.stop().await;
}

#[tokio::test]
async fn a_stock_load_reaches_live_watchers_as_a_snapshot_of_the_loaded_stock() {
    let app = TestApp::spawn_empty().await;
    app.create_store("live-1", OversellPolicy::Strict, &[]).await;
    app.create_store("live-2", OversellPolicy::Strict, &[]).await;
    let products = ImportProductsRequest {
        idempotency_key: key(),
        products: vec![product("L-1", 100, &[]), product("L-2", 1, &[])],
    };
    app.inventory().import_products(futures::stream::iter([products])).await.unwrap();
    app.receive("live-1", "L-1", 4).await;
    let after = app.inventory_seq("live-1").await;
    let mut watch = watch_after(app.stream(), "live-1", after).await;
    let counts = ImportStockRequest {
        idempotency_key: key(),
        counts: vec![count("live-2", "L-1", 3), count("live-1", "L-1", 10), count("live-1", "L-2", 2)],
    };
    app.inventory().import_stock(futures::stream::iter([counts])).await.unwrap();
    // The load's event names no levels: the watcher is handed the store's stock as of it instead.
    let item = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time");
    let Some(Item::Snapshot(snapshot)) = item.expect("stream").expect("an item").item else {
        panic!("expected a snapshot")
    };
    assert_eq!((snapshot.store_id.as_str(), snapshot.as_of_seq), ("live-1", after + 1));
    let mut levels: Vec<(String, i64)> = snapshot.items.iter().map(|i| (i.sku.clone(), i.quantity)).collect();
    levels.sort();
    assert_eq!(levels, [("L-1".to_owned(), 10), ("L-2".to_owned(), 2)]);
    // Then changes after it, as before.
    app.receive("live-1", "L-1", 1).await;
    let item = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time");
    let Some(Item::Event(event)) = item.expect("stream").expect("an item").item else { panic!("expected an event") };
    assert_eq!(event.store_seq, after + 2);
    let Some(Payload::InventoryChanged(changed)) = event.payload else { panic!("expected inventory.changed") };
    assert_eq!(changed.changes[0].quantity_after, 11);
    assert_eq!(app.stock("live-2", "L-1").await, 3);
    app.stop().await;
}

async fn levels(app: &TestApp) -> (i64, i64) {
    (app.stock("mid-1", "M-1").await, app.stock("mid-2", "M-1").await)
}

/// On PostgreSQL a stock stream is one transaction: a refusal in its last batch (an unknown sku,
/// or a key reused for another batch) leaves none of its batches applied, takes no sequence and
/// claims no key, so the same batches are applied afresh when sent again.
#[tokio::test]
async fn a_refusal_mid_stream_leaves_nothing_of_the_stock_stream_applied() {
    if !crate::helpers::on_postgres() {
        return; // The embedded store applies a stream batch by batch.
    }
    let app = TestApp::spawn_empty().await;
    app.create_store("mid-1", OversellPolicy::Strict, &[]).await;
    app.create_store("mid-2", OversellPolicy::Strict, &[]).await;
    let products = ImportProductsRequest { idempotency_key: key(), products: vec![product("M-1", 100, &[])] };
    app.inventory().import_products(futures::stream::iter([products])).await.unwrap();
    let good = [
        ImportStockRequest { idempotency_key: key(), counts: vec![count("mid-1", "M-1", 5)] },
        ImportStockRequest { idempotency_key: key(), counts: vec![count("mid-2", "M-1", 6)] },
    ];
    let unknown = ImportStockRequest { idempotency_key: key(), counts: vec![count("mid-2", "NOPE", 1)] };
    let stream = good.iter().cloned().chain([unknown]).collect::<Vec<_>>();
    let err = app.inventory().import_stock(futures::stream::iter(stream)).await.unwrap_err();
    assert_eq!(field_of(&err), "batches[2].counts[0].sku");
    assert_eq!(levels(&app).await, (0, 0), "no batch of the refused stream is applied");
    assert_eq!((app.inventory_seq("mid-1").await, app.inventory_seq("mid-2").await), (0, 0), "nor any event");

    // A key of the stream reused for another batch refuses the stream too.
    let mut reused = good[0].clone();
    reused.counts[0].quantity = 9;
    let stream = good.iter().cloned().chain([reused]).collect::<Vec<_>>();
    let err = app.inventory().import_stock(futures::stream::iter(stream)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().starts_with("batches[2]"), "{err:?}");
    assert_eq!(levels(&app).await, (0, 0));

    // The keys were not kept: the same batches apply afresh, then replay.
    let first = app.inventory().import_stock(futures::stream::iter(good.clone())).await.unwrap().into_inner();
    assert_eq!((first.batches, first.records, first.replayed_batches), (2, 2, 0));
    assert_eq!(levels(&app).await, (5, 6));
    let again = app.inventory().import_stock(futures::stream::iter(good.clone())).await.unwrap().into_inner();
    assert_eq!((again.batches, again.records, again.replayed_batches), (2, 2, 2));
    assert_eq!((app.inventory_seq("mid-1").await, app.inventory_seq("mid-2").await), (1, 1), "one event per store");
    app.stop().await;
}

/// The Redis stock cache follows a load: the store's hash becomes the loaded levels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_cache_follows_a_load() {
    use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
    let db = redstore_platform::pg::scratch::ScratchDb::create(&redstore::server::pg_migrations())
        .await
        .expect("scratch database");
    let redis = crate::helpers::RedisServer::start();
    let args = ["serve", "inventory", "--demo", "--database-url", db.app_url.as_str(), "--redis-url", &redis.url()];
    let mut inventory = crate::helpers::Process::start(&args);
    let mut client = InventoryServiceClient::new(inventory.channel().await);
    client
        .create_store(redstore_proto::inventory::CreateStoreRequest {
            idempotency_key: String::new(),
            store_id: "cached-1".into(),
            name: "Cached".into(),
            oversell_policy: OversellPolicy::Strict as i32,
        })
        .await
        .expect("create store");
    let products = ImportProductsRequest {
        idempotency_key: key(),
        products: vec![product("K-1", 100, &[]), product("K-2", 100, &[])],
    };
    client.import_products(futures::stream::iter([products])).await.expect("products");
    let batches = [
        ImportStockRequest { idempotency_key: key(), counts: vec![count("cached-1", "K-1", 7)] },
        ImportStockRequest { idempotency_key: key(), counts: vec![count("cached-1", "K-2", 8)] },
    ];
    client.import_stock(futures::stream::iter(batches)).await.expect("stock");
    let cache = redstore_inventory::cache::StockCache::new(&redis.url()).expect("cache");
    let mut cached = (None, None, None);
    for _ in 0..100 {
        cached = (
            cache.version("cached-1").await.expect("redis"),
            cache.stock("cached-1", "K-1").await.expect("redis"),
            cache.stock("cached-1", "K-2").await.expect("redis"),
        );
        if cached.0.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cached, (Some(1), Some(7), Some(8)), "the hash is the loaded stock, as of the load's event");
    inventory.kill();
    db.drop_db().await.expect("drop scratch database");
}
