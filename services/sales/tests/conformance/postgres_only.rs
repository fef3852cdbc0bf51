//! What only the PostgreSQL shape has: row-level security, the outbox with per-store sequences,
//! and the checkout saga healing after an interruption.

use std::collections::BTreeMap;
use std::time::Duration;

use redstore_platform::pg::{self, PgPool};
use redstore_proto::events::event_envelope::Payload;
use redstore_sales::pg::Resumed;
use sqlx::Row as _;
use tonic::Code;

use crate::backend::Backend;
use crate::flaky::{Fault, Flaky};
use crate::support::*;

/// The PostgreSQL backend over an inventory whose `apply_sale` fails on demand.
async fn flaky_backend() -> (Backend, std::sync::Arc<Flaky>) {
    let mut flaky = None;
    let backend = Backend::postgres_with(|inventory| {
        let f = Flaky::new(inventory);
        flaky = Some(f.clone());
        f
    })
    .await;
    (backend, flaky.expect("the wrapper was made"))
}

async fn count(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn pending_sale_ids(pool: &PgPool, store_id: &str) -> Vec<String> {
    let mut tx = pg::store_tx(pool, store_id).await.unwrap();
    let rows = sqlx::query("SELECT sale_id FROM sales.sales WHERE status = 'pending' ORDER BY sale_id")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

pub async fn rls_confines_a_transaction_to_its_store() {
    let backend = Backend::postgres().await;
    let (sales, pool) = (backend.sales(), backend.app_pool().clone());
    let s1 = sales.checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)])).await.unwrap();
    let s2 = sales.checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0001", 2)], vec![cash(300)])).await.unwrap();
    sales.refund(refund(&key(), &s2.sale_id, &[("SKU-0001", 1)])).await.unwrap();
    sales
        .add_cart_item(add_idem(&key(), "store-2", "till-1", "SKU-0002", 1), "store-2", "till-1", "SKU-0002", 1)
        .await
        .unwrap();

    let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.sales WHERE store_id = 'store-2'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.sales").await, 1);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.refunds").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.cart_items").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.outbox WHERE store_id = 'store-2'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.store_sequences").await, 1);
    // The directory of which store a sale belongs to is the one chain-wide read.
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.sale_stores").await, 2);
    assert!(pg::events_after(&mut tx, "sales", "store-2", 0, 100).await.unwrap().is_empty());
    let changed = sqlx::query("UPDATE sales.sales SET body = '\\x00'::bytea WHERE sale_id = $1")
        .bind(&s2.sale_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);
    let deleted = sqlx::query("DELETE FROM sales.sale_stores WHERE sale_id = $1")
        .bind(&s2.sale_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    tx.commit().await.unwrap();

    for insert in [
        "INSERT INTO sales.cart_items (store_id, terminal_id, sku, quantity) VALUES ('store-2', 'till-1', 'SKU-0003', 1)",
        "INSERT INTO sales.sale_stores (sale_id, store_id) VALUES ('forged', 'store-2')",
    ] {
        let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
        let err = sqlx::query(insert).execute(&mut *tx).await.unwrap_err();
        assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{insert}: {err}");
    }

    // Without a store, nothing store-owned is visible.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.sales").await, 0);
    drop(tx);
    let mut tx = pg::store_tx(&pool, "store-2").await.unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.sales").await, 1);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.refunds").await, 1);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM sales.cart_items").await, 1);
    drop(tx);
    // Reads by sale id still work through the directory.
    assert_eq!(sales.get_sale(&s1.sale_id).await.unwrap(), s1);
    backend.finish().await;
}

pub async fn outbox_holds_one_sale_completed_per_sale_with_gapless_sequences() {
    let backend = Backend::postgres().await;
    let (sales, pool) = (backend.sales(), backend.app_pool().clone());
    let mut expected = Vec::new();

    let order = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(200)]);
    let a = sales.checkout(order.clone()).await.unwrap();
    assert_eq!(sales.checkout(order).await.unwrap(), a);
    expected.push(a.sale_id.clone());

    let order = checkout(&key(), "store-1", "till-2", &[("SKU-0002", 1)], vec![cash(400)]);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (sales, order) = (sales.clone(), order.clone());
            tokio::spawn(async move { sales.checkout(order).await })
        })
        .collect();
    for task in tasks {
        let sale = task.await.unwrap().unwrap();
        if !expected.contains(&sale.sale_id) {
            expected.push(sale.sale_id);
        }
    }
    let err = sales
        .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0019", 99)], vec![cash(99_999)]))
        .await
        .unwrap_err();
    expect_code(&err, Code::FailedPrecondition);
    sales.scan(scan(&key(), "store-1", "till-3", &redstore_inventory::seed::demo_barcode(3), 2)).await.unwrap();
    let b = sales.checkout(checkout(&key(), "store-1", "till-3", &[], vec![cash(1000)])).await.unwrap();
    expected.push(b.sale_id.clone());
    let r = sales.refund(refund(&key(), &a.sale_id, &[])).await.unwrap().refund.unwrap();
    for _ in 0..2 {
        sales.checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0006", 1)], vec![cash(200)])).await.unwrap();
    }
    assert_eq!(expected.len(), 3);

    let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
    let events = pg::events_after(&mut tx, "sales", "store-1", 0, 100).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.store_seq).collect();
    assert_eq!(seqs, (1..=4).collect::<Vec<u64>>());
    assert_eq!(pg::last_seq(&mut tx, "sales", "store-1").await.unwrap(), 4);
    let mut completed: BTreeMap<String, usize> = BTreeMap::new();
    let mut refunded = Vec::new();
    for e in &events {
        assert_eq!(e.store_id, "store-1");
        match e.payload.as_ref().unwrap() {
            Payload::SaleCompleted(c) => {
                assert_eq!(e.r#type, "sale.completed");
                *completed.entry(c.sale_id.clone()).or_default() += 1;
            }
            Payload::SaleRefunded(f) => {
                assert_eq!(e.r#type, "sale.refunded");
                refunded.push((f.refund_id.clone(), f.sale_id.clone()));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    expected.sort();
    assert_eq!(completed.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(completed.values().all(|n| *n == 1), "{completed:?}");
    assert_eq!(refunded, vec![(r.refund_id, a.sale_id)]);
    // The last sequence's event can be resumed after.
    assert!(pg::events_after(&mut tx, "sales", "store-1", 4, 100).await.unwrap().is_empty());
    drop(tx);

    let mut tx = pg::store_tx(&pool, "store-2").await.unwrap();
    let events = pg::events_after(&mut tx, "sales", "store-2", 0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1, 2]);
    drop(tx);
    backend.finish().await;
}

/// Inventory took the stock but its answer never arrived. A checkout with lines is recorded only
/// once inventory applied it: nothing is recorded, and the retry (a fresh sale id) gets inventory's
/// stored answer for the key and records the first attempt's sale, taking no more stock. One of a
/// cart stays pending (invisible), and the retry completes it with the same id.
pub async fn checkout_interrupted_after_inventory_applied_heals_on_retry() {
    let (backend, flaky) = flaky_backend().await;
    let (sales, inventory, pool) = (backend.sales(), backend.inventory(), backend.app_pool().clone());

    flaky.set(Fault::LoseNextAnswer);
    let order = checkout(&key(), "store-1", "till-1", &[("SKU-0005", 2)], vec![card(998)]);
    let err = sales.checkout(order.clone()).await.unwrap_err();
    expect_code(&err, Code::Unavailable);
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 16);
    assert!(sales.list_sales("store-1", "", 10).await.unwrap().is_empty());
    assert!(pending_sale_ids(&pool, "store-1").await.is_empty());
    let applied = last_sale_applied(&inventory, "store-1").await;

    let sale = sales.checkout(order.clone()).await.unwrap();
    assert_eq!(sale.sale_id, applied, "the retry records the sale inventory applied");
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 16);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap(), vec![sale.clone()]);
    assert_eq!(sales.checkout(order).await.unwrap(), sale);
    assert_eq!(last_sale_applied(&inventory, "store-1").await, applied);

    // From the cart: the cart stays until the sale completes.
    let (s, t) = ("store-1", "till-2");
    sales.add_cart_item(add_idem(&key(), s, t, "SKU-0008", 2), s, t, "SKU-0008", 2).await.unwrap();
    flaky.set(Fault::LoseNextAnswer);
    let order = checkout(&key(), s, t, &[], vec![cash(1000)]);
    expect_code(&sales.checkout(order.clone()).await.unwrap_err(), Code::Unavailable);
    assert_eq!(sales.get_cart(s, t).await.unwrap().lines.len(), 1);
    let pending = pending_sale_ids(&pool, "store-1").await;
    assert_eq!(pending.len(), 1);
    expect_code(&sales.get_sale(&pending[0]).await.unwrap_err(), Code::NotFound);
    let sale = sales.checkout(order).await.unwrap();
    assert_eq!(sale.sale_id, pending[0]);
    assert_eq!(sale.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(), [("SKU-0008", 2)]);
    assert!(sales.get_cart(s, t).await.unwrap().lines.is_empty());
    assert_eq!(stock(&inventory, s, "SKU-0008").await, 18);

    let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
    let events = pg::events_after(&mut tx, "sales", "store-1", 0, 100).await.unwrap();
    assert_eq!(events.len(), 2);
    drop(tx);
    backend.finish().await;
}

/// The id of the newest sale inventory applied in the store (its `inventory.changed` reference).
async fn last_sale_applied(inventory: &std::sync::Arc<dyn redstore_inventory::InventoryStore>, store: &str) -> String {
    let events = inventory.events_after(store, 0, 10_000).await.unwrap();
    events
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            Some(Payload::InventoryChanged(c)) if c.reason == "sale" => Some(c.reference_id.clone()),
            _ => None,
        })
        .expect("inventory applied a sale")
}

/// Inventory unreachable: a checkout with lines fails and leaves no trace (it is recorded only
/// once applied); checkouts of carts stay pending, and the recovery completes the ones inventory
/// accepts once back and releases the ones it refuses.
pub async fn pending_checkouts_are_resumed_or_released() {
    let (backend, flaky) = flaky_backend().await;
    let (sales, inventory, pool, pg_sales) =
        (backend.sales(), backend.inventory(), backend.app_pool().clone(), backend.pg_sales());
    let s = "store-1";
    sales.add_cart_item(add_idem(&key(), s, "till-1", "SKU-0007", 1), s, "till-1", "SKU-0007", 1).await.unwrap();
    sales.add_cart_item(add_idem(&key(), s, "till-2", "SKU-0019", 9), s, "till-2", "SKU-0019", 9).await.unwrap();

    flaky.set(Fault::Down);
    let with_lines = checkout(&key(), s, "till-3", &[("SKU-0007", 2)], vec![cash(600)]);
    expect_code(&sales.checkout(with_lines.clone()).await.unwrap_err(), Code::Unavailable);
    assert!(pending_sale_ids(&pool, s).await.is_empty());
    let fine = checkout(&key(), s, "till-1", &[], vec![cash(300)]);
    let oversold = checkout(&key(), s, "till-2", &[], vec![cash(10_000)]);
    expect_code(&sales.checkout(fine.clone()).await.unwrap_err(), Code::Unavailable);
    expect_code(&sales.checkout(oversold.clone()).await.unwrap_err(), Code::Unavailable);
    assert_eq!(pending_sale_ids(&pool, s).await.len(), 2);
    assert_eq!(stock(&inventory, s, "SKU-0007").await, 45);

    // Still down, or too young: nothing changes.
    assert_eq!(
        pg_sales.resume_pending(s, Duration::ZERO).await.unwrap(),
        Resumed { completed: 0, rejected: 0, failed: 2 }
    );
    flaky.set(Fault::None);
    assert_eq!(pg_sales.resume_pending(s, Duration::from_secs(3600)).await.unwrap(), Resumed::default());
    assert_eq!(pending_sale_ids(&pool, s).await.len(), 2);

    assert_eq!(
        pg_sales.resume_pending(s, Duration::ZERO).await.unwrap(),
        Resumed { completed: 1, rejected: 1, failed: 0 }
    );
    assert!(pending_sale_ids(&pool, s).await.is_empty());
    assert_eq!(stock(&inventory, s, "SKU-0007").await, 44);
    assert_eq!(stock(&inventory, s, "SKU-0019").await, 8);
    assert!(sales.get_cart(s, "till-1").await.unwrap().lines.is_empty());
    assert_eq!(sales.get_cart(s, "till-2").await.unwrap().lines.len(), 1, "the refused sale's cart stays");
    let listed = sales.list_sales(s, "", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    // The retry of the completed one gets it; the released one's key is free, and fails afresh.
    assert_eq!(sales.checkout(fine).await.unwrap(), listed[0]);
    expect_code(&sales.checkout(oversold).await.unwrap_err(), Code::FailedPrecondition);
    assert_eq!(pg_sales.resume_pending(s, Duration::ZERO).await.unwrap(), Resumed::default());
    assert_eq!(stock(&inventory, s, "SKU-0007").await, 44);
    // The checkout with lines, retried now, goes through once.
    let sale = sales.checkout(with_lines.clone()).await.unwrap();
    assert_eq!(sales.checkout(with_lines).await.unwrap(), sale);
    assert_eq!(stock(&inventory, s, "SKU-0007").await, 42);
    backend.finish().await;
}

/// Inventory applied a checkout and sales never recorded it (the answer was lost, as when the sales
/// process stops in between), and no retry comes: the reconciler records it once, with its event,
/// as the attempt would have; a late retry gets that sale; the key with another request is refused
/// without taking stock.
pub async fn a_checkout_applied_and_never_recorded_is_recorded_by_the_reconciler() {
    let (backend, flaky) = flaky_backend().await;
    let (sales, inventory, pool, pg_sales) =
        (backend.sales(), backend.inventory(), backend.app_pool().clone(), backend.pg_sales());
    let k = key();
    flaky.set(Fault::LoseNextAnswer);
    let order = checkout(&k, "store-1", "till-1", &[("SKU-0005", 2)], vec![card(998)]);
    expect_code(&sales.checkout(order.clone()).await.unwrap_err(), Code::Unavailable);
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 16);
    let applied = last_sale_applied(&inventory, "store-1").await;

    // Younger than asked: left to a retry.
    assert_eq!(pg_sales.record_applied("store-1", Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(sales.list_sales("store-1", "", 10).await.unwrap().is_empty());
    assert_eq!(pg_sales.record_applied("store-1", Duration::ZERO).await.unwrap(), 1);
    let listed = sales.list_sales("store-1", "", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let sale = &listed[0];
    assert_eq!(sale.sale_id, applied);
    assert_eq!(sale.status, redstore_proto::sales::SaleStatus::Completed as i32);
    assert_eq!(sale.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(), [("SKU-0005", 2)]);
    assert_eq!(sales.get_sale(&applied).await.unwrap(), *sale);
    let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
    let events = pg::events_after(&mut tx, "sales", "store-1", 0, 100).await.unwrap();
    drop(tx);
    assert_eq!(events.len(), 1);
    match &events[0].payload {
        Some(Payload::SaleCompleted(completed)) => {
            assert_eq!(completed.sale_id, applied);
        }
        other => panic!("expected sale.completed, got {other:?}"),
    }

    // Once: looking again records nothing; a late retry gets the sale, taking no more stock.
    assert_eq!(pg_sales.record_applied("store-1", Duration::ZERO).await.unwrap(), 0);
    assert_eq!(sales.checkout(order).await.unwrap(), *sale);
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 16);
    let other = checkout(&k, "store-1", "till-1", &[("SKU-0005", 1)], vec![card(499)]);
    let err = sales.checkout(other).await.unwrap_err();
    expect_code(&err, Code::AlreadyExists);
    assert!(err.to_string().contains("idempotency_key"), "{err}");
    assert_eq!(stock(&inventory, "store-1", "SKU-0005").await, 16);
    assert_eq!(sales.list_sales("store-1", "", 10).await.unwrap().len(), 1);
    backend.finish().await;
}

/// The saga records a checkout of the cart, then asks inventory; an item scanned meanwhile (the
/// cashier starting on the next customer) is not part of the sale and stays in the cart: the
/// completed sale takes from the cart exactly what it sold.
pub async fn items_scanned_during_a_checkout_stay_in_the_cart() {
    let (backend, flaky) = flaky_backend().await;
    let (sales, inventory) = (backend.sales(), backend.inventory());
    let (soap, milk) = (stock(&inventory, "store-1", "SKU-0003").await, stock(&inventory, "store-1", "SKU-0004").await);
    sales.scan(scan(&key(), "store-1", "till-1", &redstore_inventory::seed::demo_barcode(3), 2)).await.unwrap();

    flaky.set(Fault::HoldNext);
    let checkout_task = {
        let sales = sales.clone();
        let order = checkout(&key(), "store-1", "till-1", &[], vec![cash(1000)]);
        tokio::spawn(async move { sales.checkout(order).await })
    };
    flaky.wait_held().await;
    // While inventory is being asked: one more of the same sku, and a new one.
    sales.scan(scan(&key(), "store-1", "till-1", &redstore_inventory::seed::demo_barcode(3), 1)).await.unwrap();
    sales.scan(scan(&key(), "store-1", "till-1", &redstore_inventory::seed::demo_barcode(4), 1)).await.unwrap();
    flaky.release();

    let sale = checkout_task.await.unwrap().expect("the checkout completes");
    let sold: Vec<(String, i64)> = sale.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
    assert_eq!(sold, [("SKU-0003".to_owned(), 2)], "the sale is the cart as it was checked out");
    let cart = sales.get_cart("store-1", "till-1").await.unwrap();
    let left: Vec<(String, i64)> = cart.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
    assert_eq!(left, [("SKU-0003".to_owned(), 1), ("SKU-0004".to_owned(), 1)], "what was scanned meanwhile stays");
    assert_eq!(stock(&inventory, "store-1", "SKU-0003").await, soap - 2);
    assert_eq!(stock(&inventory, "store-1", "SKU-0004").await, milk);

    // The next checkout sells what stayed.
    let next = sales.checkout(checkout(&key(), "store-1", "till-1", &[], vec![cash(2000)])).await.unwrap();
    assert_eq!(next.lines.len(), 2);
    assert!(sales.get_cart("store-1", "till-1").await.unwrap().lines.is_empty());
    backend.finish().await;
}
