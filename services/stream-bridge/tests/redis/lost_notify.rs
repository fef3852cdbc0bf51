//! The PostgreSQL-fed live feed (`LiveFeed::from_postgres`) without its notifications: a change
//! committed with no `NOTIFY` after it (a notification lost after commit) still reaches a watcher,
//! because the feed sweeps its watched stores. Every change here is committed as the checkout's
//! group commit does it (`apply_sales_in` in the caller's transaction), and the test never calls
//! `pg::notify_committed`: nothing but the sweep can wake the feed.

use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::pg::{PG_SCHEMA, PgInventory, SaleToApply, apply_sales_in};
use redstore_inventory::{InventoryStore, StockMovement};
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::pg::{self, PgPool};
use redstore_proto::events::EventEnvelope;
use redstore_proto::events::event_envelope::Payload;
use redstore_stream_bridge::LiveFeed;
use redstore_stream_bridge::feed::{self, Item, Start};
use tokio::sync::mpsc;

use crate::shutdown_guard;
use crate::support::{WAIT, forward, quantity_after, wait_watched};

/// The test's PostgreSQL database, dropped however the test ends.
struct Scratch(Option<ScratchDb>);

impl Scratch {
    async fn finish(mut self) {
        if let Some(db) = self.0.take() {
            db.drop_db().await.expect("drop the scratch database");
        }
    }
}

impl Drop for Scratch {
    /// A test that panicked never reached `finish`: drop its database on a thread of its own (this
    /// runs inside the test's runtime, which must not block on itself).
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(db.drop_db())
            })
            .join();
        }
    }
}

/// Applies one sale of a unit of `sku` at till-1 in store-1 and commits it, without notifying
/// anyone. Returns the sale id and the store sequence its event took.
async fn sell_without_notify(pool: &PgPool, sku: &str) -> (String, u64) {
    let sale_id = uuid::Uuid::now_v7().to_string();
    let movements = [StockMovement { sku: sku.into(), delta: -1 }];
    let sale = SaleToApply {
        sale_id: &sale_id,
        request: sale_id.as_bytes(),
        terminal_id: "till-1",
        movements: &movements,
        charged: &[],
        checkout: None,
    };
    let mut tx = pg::store_tx(pool, "store-1").await.expect("begin a transaction scoped to store-1");
    let applied = apply_sales_in(&mut tx, "store-1", &[sale]).await.expect("apply the sale");
    let [Ok(response)] = applied.outcomes.as_slice() else { panic!("the sale is not applied: {:?}", applied.outcomes) };
    assert_eq!(applied.last_seq, Some(response.store_seq), "the sale took the store's newest sequence");
    tx.commit().await.expect("commit the sale");
    // Deliberately no `pg::notify_committed`: the notification is lost.
    (sale_id, response.store_seq)
}

/// The next event the watcher receives, within the liveness bound.
async fn next_event(rx: &mut mpsc::Receiver<Item>) -> Arc<EventEnvelope> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(Item::Event(event))) => event,
        Ok(Some(Item::Snapshot(_))) => panic!("unexpected snapshot"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no event within {WAIT:?}: the un-notified change never reached the watcher"),
    }
}

/// Asserts the event is the `inventory.changed` of the sale, at the sequence due next.
fn assert_sale(event: &EventEnvelope, sale_id: &str, seq: u64, due: u64) {
    assert_eq!(event.store_seq, due, "watcher received {} where {due} was due", event.store_seq);
    assert_eq!(seq, due, "the sale took the sequence after the previous change");
    assert_eq!(event.r#type, "inventory.changed");
    assert_eq!(event.store_id, "store-1");
    let Some(Payload::InventoryChanged(changed)) = &event.payload else { panic!("not an inventory.changed event") };
    assert_eq!(changed.reason, "sale");
    assert_eq!(changed.reference_id, sale_id);
    assert_eq!(changed.terminal_id, "till-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_delivers_changes_whose_notification_was_lost() {
    let scratch = ScratchDb::create(&[&PG_SCHEMA])
        .await
        .expect("create a scratch PostgreSQL database (is PostgreSQL running at 127.0.0.1:5432?)");
    let app_url = scratch.app_url.clone();
    let scratch = Scratch(Some(scratch));
    // Declared after the database: cancelled first, so the feed stops before its database goes.
    let (shutdown, _guard) = shutdown_guard();
    let pool = pg::connect(&app_url, 8, Duration::from_secs(10)).await.expect("connect as the application role");
    let inventory: Arc<dyn InventoryStore> = PgInventory::new(pool.clone());
    // Seeded before the feed listens: none of the seed's notifications reach it.
    redstore_inventory::seed::seed_demo_via(inventory.as_ref()).await.expect("seed the demo chain");
    let head = inventory.snapshot("store-1").await.expect("snapshot").as_of_seq;
    assert!(head > 0, "the seed logged store-1's stock");

    let live = LiveFeed::from_postgres(pool.clone(), inventory.clone(), shutdown.clone()).expect("start the feed");
    // From just before the newest event, as a terminal resuming: the watcher's own catch-up delivers
    // that event, and once it is received the catch-up has read the log and the watcher is live.
    // Anything committed after that reaches it only through the feed.
    let mut rx =
        forward(feed::watch(inventory.clone(), &live, "store-1".into(), Start::After(head - 1), shutdown.clone()));
    wait_watched(&live, "store-1").await;
    assert_eq!(next_event(&mut rx).await.store_seq, head, "the watcher's catch-up");

    let (first, seq) = sell_without_notify(&pool, "SKU-0001").await;
    let event = next_event(&mut rx).await;
    assert_sale(&event, &first, seq, head + 1);
    assert_eq!(quantity_after(&event, "SKU-0001"), 39, "the demo's 40 less the unit sold");

    // The first is not delivered again: the next thing the watcher receives is the second.
    let (second, seq) = sell_without_notify(&pool, "SKU-0002").await;
    let event = next_event(&mut rx).await;
    assert_sale(&event, &second, seq, head + 2);
    assert_eq!(quantity_after(&event, "SKU-0002"), 11, "the demo's 12 less the unit sold");

    // Nor the second: the next thing is the next change.
    let (third, seq) = sell_without_notify(&pool, "SKU-0001").await;
    let event = next_event(&mut rx).await;
    assert_sale(&event, &third, seq, head + 3);
    assert_eq!(quantity_after(&event, "SKU-0001"), 38);

    shutdown.cancel();
    scratch.finish().await;
}
