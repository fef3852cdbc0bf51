//! What only the group-commit checkout has to prove (PgSales beside PgInventory on one database):
//! a burst of checkouts in one store, batched into shared transactions, still sells exactly the
//! stock, refuses the rest without a trace, and numbers every event without a gap.

use std::collections::{BTreeMap, BTreeSet};

use redstore_platform::pg;
use redstore_proto::events::event_envelope::Payload;
use tonic::Code;

use crate::backend::Backend;
use crate::support::*;

pub async fn a_burst_of_checkouts_sells_exactly_the_stock_with_gapless_events() {
    let backend = Backend::postgres_local().await;
    let (sales, inventory, pool) = (backend.sales(), backend.inventory(), backend.app_pool().clone());
    // Store-1 has 8 of SKU-0019 and 12 of SKU-0002 (the demo chain).
    let batteries = stock(&inventory, "store-1", "SKU-0019").await;
    let bread = stock(&inventory, "store-1", "SKU-0002").await;
    assert_eq!((batteries, bread), (8, 12));

    // 24 buyers of one pack of batteries and one loaf; 4 of an unknown sku; 4 at an unknown
    // terminal; and one buyer whose checkout is sent 4 times with one key.
    let mut orders = Vec::new();
    for i in 0..24 {
        let till = format!("till-{}", i % 3 + 1);
        orders
            .push(("buyer", checkout(&key(), "store-1", &till, &[("SKU-0019", 1), ("SKU-0002", 1)], vec![cash(1048)])));
    }
    for _ in 0..4 {
        orders.push(("unknown sku", checkout(&key(), "store-1", "till-1", &[("SKU-9999", 1)], vec![cash(100)])));
        orders.push(("unknown till", checkout(&key(), "store-1", "till-9", &[("SKU-0001", 1)], vec![cash(119)])));
    }
    let retried = checkout(&key(), "store-1", "till-2", &[("SKU-0001", 2)], vec![cash(238)]);
    for _ in 0..4 {
        orders.push(("retried", retried.clone()));
    }
    let tasks: Vec<_> = orders
        .into_iter()
        .map(|(kind, order)| {
            let sales = sales.clone();
            tokio::spawn(async move { (kind, sales.checkout(order).await) })
        })
        .collect();
    let (mut sold, mut refused, mut retries) = (BTreeSet::new(), 0, BTreeSet::new());
    for task in tasks {
        match task.await.unwrap() {
            ("buyer", Ok(sale)) => assert!(sold.insert(sale.sale_id)),
            ("buyer", Err(err)) => {
                let message = expect_code(&err, Code::FailedPrecondition);
                assert!(message.contains("SKU-0019"), "{message}");
                refused += 1;
            }
            ("unknown sku", result) => {
                assert!(expect_code(&result.unwrap_err(), Code::NotFound).contains("SKU-9999"));
            }
            ("unknown till", result) => {
                assert!(expect_code(&result.unwrap_err(), Code::NotFound).contains("till-9"));
            }
            ("retried", result) => {
                retries.insert(result.unwrap().sale_id);
            }
            (kind, result) => panic!("{kind}: {result:?}"),
        }
    }
    assert_eq!((sold.len(), refused), (8, 16), "exactly the 8 packs are sold");
    assert_eq!(retries.len(), 1, "a checkout sent 4 times with one key is one sale");
    assert_eq!(stock(&inventory, "store-1", "SKU-0019").await, 0);
    assert_eq!(stock(&inventory, "store-1", "SKU-0002").await, 12 - 8);
    assert_eq!(stock(&inventory, "store-1", "SKU-0001").await, 40 - 2);
    let mut all_sold = sold.clone();
    all_sold.extend(retries.iter().cloned());

    let mut tx = pg::store_tx(&pool, "store-1").await.unwrap();
    // Inventory: one event per sale, after the demo chain's own; sequences without a gap.
    let events = pg::events_after(&mut tx, "inventory", "store-1", 0, 1000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.store_seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let sale_events: BTreeMap<String, usize> = events
        .iter()
        .filter_map(|e| match e.payload.as_ref() {
            Some(Payload::InventoryChanged(c)) if c.reason == "sale" => Some(c.reference_id.clone()),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
    assert_eq!(sale_events.keys().cloned().collect::<BTreeSet<_>>(), all_sold);
    assert!(sale_events.values().all(|n| *n == 1), "{sale_events:?}");
    // Sales: one sale.completed per sale, numbered 1..=9.
    let events = pg::events_after(&mut tx, "sales", "store-1", 0, 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), (1..=9).collect::<Vec<u64>>());
    let completed: BTreeSet<String> = events
        .iter()
        .map(|e| match e.payload.as_ref() {
            Some(Payload::SaleCompleted(c)) => c.sale_id.clone(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(completed, all_sold);
    // No trace of a refused checkout: no sale row (pending or not), no claim in inventory.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sales.sales").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(rows, 9);
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.idempotency_keys WHERE scope = 'inventory.apply_sale'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(claims, 9);
    drop(tx);
    let listed: BTreeSet<String> =
        sales.list_sales("store-1", "", 100).await.unwrap().into_iter().map(|s| s.sale_id).collect();
    assert_eq!(listed, all_sold);
    backend.finish().await;
}

/// Many stores with one terminal each selling at once: their checkouts share batches across
/// stores (each store's part scoped to it). In every store the last unit goes to exactly one
/// checkout, the other is refused without a trace and without failing any other store's sale, a
/// checkout sent three times with one key is one sale, and each store's events stay gapless.
pub async fn checkouts_of_many_stores_share_batches_and_refuse_alone() {
    use redstore_inventory::OversellPolicy;
    use redstore_inventory::StockMovement;
    use redstore_inventory::domain::StoreRow;
    use redstore_inventory::store::Idem;

    const STORES: usize = 12;
    let backend = Backend::postgres_local().await;
    let (sales, inventory, pool) = (backend.sales(), backend.inventory(), backend.app_pool().clone());
    let stores: Vec<String> = (1..=STORES).map(|i| format!("chain-{i:02}")).collect();
    for store_id in &stores {
        let row = StoreRow { store_id: store_id.clone(), name: store_id.clone(), policy: OversellPolicy::Strict };
        inventory.create_store(Idem::default(), row).await.unwrap();
        let till = redstore_proto::inventory::Terminal {
            store_id: store_id.clone(),
            terminal_id: "till-1".into(),
            name: "Till".into(),
        };
        inventory.register_terminal(Idem::default(), till).await.unwrap();
        // One pack of batteries each, and ample milk.
        for (sku, units) in [("SKU-0019", 1), ("SKU-0001", 10)] {
            let idem = Idem { key: format!("recv-{store_id}-{sku}"), fingerprint: vec![1] };
            let movement = StockMovement { sku: sku.into(), delta: units };
            inventory.adjust_stock(idem, store_id, movement, "received").await.unwrap();
        }
    }

    let mut orders = Vec::new();
    for store_id in &stores {
        for _ in 0..2 {
            orders.push((
                "battery",
                store_id.clone(),
                checkout(&key(), store_id, "till-1", &[("SKU-0019", 1)], vec![cash(699)]),
            ));
        }
        let retried = checkout(&key(), store_id, "till-1", &[("SKU-0001", 1)], vec![cash(119)]);
        for _ in 0..3 {
            orders.push(("milk", store_id.clone(), retried.clone()));
        }
    }
    let tasks: Vec<_> = orders
        .into_iter()
        .map(|(kind, store_id, order)| {
            let sales = sales.clone();
            tokio::spawn(async move { (kind, store_id, sales.checkout(order).await) })
        })
        .collect();
    let mut sold: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut milk: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for task in tasks {
        match task.await.unwrap() {
            ("battery", store_id, Ok(sale)) => {
                assert_eq!(sale.store_id, store_id);
                sold.entry(store_id).or_default().insert(sale.sale_id);
            }
            ("battery", store_id, Err(err)) => {
                let message = expect_code(&err, Code::FailedPrecondition);
                assert!(message.contains("SKU-0019"), "{message}");
                *refused.entry(store_id).or_default() += 1;
            }
            ("milk", store_id, result) => {
                milk.entry(store_id).or_default().insert(result.unwrap().sale_id);
            }
            (kind, store_id, result) => panic!("{kind} in {store_id}: {result:?}"),
        }
    }
    for store_id in &stores {
        assert_eq!(sold.get(store_id).map_or(0, BTreeSet::len), 1, "{store_id}: the one pack is sold once");
        assert_eq!(refused.get(store_id).copied(), Some(1), "{store_id}: the second buyer is refused");
        assert_eq!(milk.get(store_id).map_or(0, BTreeSet::len), 1, "{store_id}: one key, one sale");
        assert_eq!(stock(&inventory, store_id, "SKU-0019").await, 0);
        assert_eq!(stock(&inventory, store_id, "SKU-0001").await, 9);

        let mut tx = pg::store_tx(&pool, store_id).await.unwrap();
        let events = pg::events_after(&mut tx, "sales", store_id, 0, 100).await.unwrap();
        assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), vec![1, 2], "{store_id}");
        let events = pg::events_after(&mut tx, "inventory", store_id, 0, 100).await.unwrap();
        // Two receipts, then the two sales.
        assert_eq!(events.iter().map(|e| e.store_seq).collect::<Vec<_>>(), vec![1, 2, 3, 4], "{store_id}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sales.sales").fetch_one(&mut *tx).await.unwrap();
        assert_eq!(rows, 2, "{store_id}: no trace of the refused checkout");
        drop(tx);
    }
    backend.finish().await;
}
