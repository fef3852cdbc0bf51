//! The distributed live path: the inventory cache projector (`redstore_inventory::cache`) writes
//! Redis and publishes, bridge replicas (`redstore_stream_bridge::redis`) fan out from Redis
//! pub/sub, and watchers receive every change once, in order, across Redis outages.
//!
//! Every test runs its own `redis-server` on a free port (no persistence) and its own embedded
//! event log; events are committed with `adjust_stock`, read back with `events_after` and handed to
//! `StockCache::project`, as the Kafka consumer does. Waits are bounded by `support::WAIT` and fail
//! the test when reached; nothing asserts on timing.
//!
//! `lost_notify` covers the other live path, the PostgreSQL-fed feed, against a scratch database:
//! a change whose notification was lost still reaches watchers through the feed's sweep.

mod lost_notify;
mod support;

use redis::AsyncCommands as _;
use redstore_inventory::cache::{self, StockCache};
use redstore_inventory::projector;
use tokio_util::sync::CancellationToken;

use support::{
    Chain, Proxy, Published, RedisServer, Watcher, next_on_feed, next_on_feed_after, quantity_after, replica,
    wait_watched, watch_both_stores,
};

/// Cancels the test's background tasks however the test ends.
fn shutdown_guard() -> (CancellationToken, tokio_util::sync::DropGuard) {
    let token = CancellationToken::new();
    (token.clone(), token.drop_guard())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_change_reaches_watchers_on_two_replicas_in_order() {
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let (shutdown, _guard) = shutdown_guard();
    let (a, b) = (replica(&redis.url(), &chain, &shutdown), replica(&redis.url(), &chain, &shutdown));

    let head = chain.head("store-1").await;
    let mut watchers = [
        Watcher::start(&chain, &a, "store-1", head, &shutdown),
        Watcher::start(&chain, &b, "store-1", head, &shutdown),
    ];
    // What each replica's feed carries comes from Redis alone: nothing else feeds it.
    let mut feeds = [a.subscribe("store-1"), b.subscribe("store-1")];
    wait_watched(&a, "store-1").await;
    wait_watched(&b, "store-1").await;
    redis.wait_for_channel_subscribers("store-1", 2).await;

    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let first = chain.change("store-1", "SKU-0001", 5).await;
    cache.project(&first).await.expect("project the first change");
    let second = chain.change("store-1", "SKU-0002", -1).await;
    cache.project(&second).await.expect("project the second change");

    for feed in &mut feeds {
        assert_eq!(next_on_feed_after(feed, head).await.store_seq, first.store_seq);
        assert_eq!(next_on_feed(feed).await.store_seq, second.store_seq);
    }
    for watcher in &mut watchers {
        let event = watcher.next().await;
        assert_eq!(*event, first, "the watcher receives the event as committed");
        watcher.expect(&[second.store_seq]).await;
    }

    assert_eq!(cache.stock("store-1", "SKU-0001").await.expect("read"), Some(quantity_after(&first, "SKU-0001")));
    assert_eq!(cache.stock("store-1", "SKU-0002").await.expect("read"), Some(quantity_after(&second, "SKU-0002")));
    assert_eq!(cache.stock("store-1", "SKU-0003").await.expect("read"), None, "an unchanged sku is not cached");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(second.store_seq));
    let mut conn = redis.conn().await;
    let seq: u64 = conn.hget(cache::stock_key("store-1"), "_seq").await.expect("HGET _seq");
    assert_eq!(seq, second.store_seq, "the hash holds the sequence it reflects");
    let quantity: i64 = conn.hget("rs:{store-1}:stock", "SKU-0001").await.expect("HGET sku");
    assert_eq!(quantity, quantity_after(&first, "SKU-0001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_projections_do_not_move_the_hash_backwards() {
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let mut published = Published::subscribe(&redis.url(), &["store-2"]).await;

    let older = chain.change("store-2", "SKU-0007", 4).await;
    let newer = chain.change("store-2", "SKU-0007", -3).await;
    cache.project(&newer).await.expect("project the newer change");
    cache.project(&older).await.expect("a stale event is not an error");
    cache.project(&newer).await.expect("a duplicate is not an error");

    assert_eq!(cache.stock("store-2", "SKU-0007").await.expect("read"), Some(quantity_after(&newer, "SKU-0007")));
    assert_eq!(cache.version("store-2").await.expect("read"), Some(newer.store_seq));

    // Only applied events are published: after the newer one, the next message is the next change.
    let next = chain.change("store-2", "SKU-0008", 1).await;
    cache.project(&next).await.expect("project the next change");
    for due in [&newer, &next] {
        let event = published.next().await;
        assert_eq!(event.store_seq, due.store_seq, "published in order, stale and duplicate events not at all");
    }
    assert_eq!(cache.stock("store-2", "SKU-0007").await.expect("read"), Some(quantity_after(&newer, "SKU-0007")));
    assert_eq!(cache.version("store-2").await.expect("read"), Some(next.store_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_projected_in_order_with_stale_and_duplicate_events_skipped() {
    // A fresh server has not seen the projection script: the pipeline must load it itself.
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let mut published = Published::subscribe(&redis.url(), &["store-1", "store-2"]).await;

    let a1 = chain.change("store-1", "SKU-0001", 6).await;
    let a2 = chain.change("store-1", "SKU-0001", -2).await;
    let b1 = chain.change("store-2", "SKU-0002", 3).await;
    let a3 = chain.change("store-1", "SKU-0003", 1).await;
    // As a redelivered Kafka batch would carry them: a duplicate, and a stale event after a newer one.
    let batch = [a1.clone(), b1.clone(), a2.clone(), a1.clone(), a3.clone(), a2.clone()];
    cache.project_all(&batch).await.expect("project the batch");

    assert_eq!(cache.stock("store-1", "SKU-0001").await.expect("read"), Some(quantity_after(&a2, "SKU-0001")));
    assert_eq!(cache.stock("store-1", "SKU-0003").await.expect("read"), Some(quantity_after(&a3, "SKU-0003")));
    assert_eq!(cache.version("store-1").await.expect("read"), Some(a3.store_seq));
    assert_eq!(cache.stock("store-2", "SKU-0002").await.expect("read"), Some(quantity_after(&b1, "SKU-0002")));
    assert_eq!(cache.version("store-2").await.expect("read"), Some(b1.store_seq));

    // Each applied event is published once, in batch order; then the next change follows.
    let next = chain.change("store-1", "SKU-0001", 1).await;
    cache.project_all(std::slice::from_ref(&next)).await.expect("project the next change");
    for due in [&a1, &b1, &a2, &a3, &next] {
        let event = published.next().await;
        assert_eq!((event.store_id.as_str(), event.store_seq), (due.store_id.as_str(), due.store_seq));
    }

    // An event the cache cannot project fails the whole batch before anything is written.
    let later = chain.change("store-1", "SKU-0001", 1).await;
    let mut broken = later.clone();
    broken.store_seq = 0;
    assert!(cache.project_all(&[later.clone(), broken]).await.is_err(), "an event without a sequence is refused");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(next.store_seq), "nothing of the batch written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_ahead_of_the_log_is_rebuilt_so_new_changes_are_projected_again() {
    // The database was restored from an older backup: Redis still says the store is at sequence
    // head + 100, so every new event (head + 1, …) would be skipped as stale, and watchers fed
    // from Redis would see nothing until the numbers passed the old ones.
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let mut published = Published::subscribe(&redis.url(), &["store-1"]).await;
    let head = chain.head("store-1").await;
    let mut conn = redis.conn().await;
    let key = cache::stock_key("store-1");
    let _: () = conn.hset(&key, "_seq", head + 100).await.expect("HSET _seq");
    let _: () = conn.hset(&key, "SKU-0001", 999_999).await.expect("HSET a stale quantity");

    let inventory = chain.inventory.as_ref();
    assert!(projector::reconcile(inventory, &cache, "store-1").await.expect("reconcile"), "the hash is rebuilt");
    let snapshot = inventory.snapshot("store-1").await.expect("snapshot");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(head));
    for item in &snapshot.items {
        assert_eq!(cache.stock("store-1", &item.sku).await.expect("read"), Some(item.quantity), "{}", item.sku);
    }
    assert!(!projector::reconcile(inventory, &cache, "store-1").await.expect("reconcile"), "nothing to do twice");
    // The log's newest event is published again, for watchers to notice what they missed.
    assert_eq!(published.next().await.store_seq, head);

    // New changes are projected and published again.
    let next = chain.change("store-1", "SKU-0001", 2).await;
    assert_eq!(next.store_seq, head + 1);
    cache.project(&next).await.expect("project");
    assert_eq!(published.next().await.store_seq, head + 1);
    assert_eq!(cache.stock("store-1", "SKU-0001").await.expect("read"), Some(quantity_after(&next, "SKU-0001")));
    // A hash in step with the log is left alone.
    assert!(!projector::reconcile(inventory, &cache, "store-1").await.expect("reconcile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_from_a_lost_history_is_mended_by_the_first_event_it_skips() {
    // The database was reset while the projectors ran, with no restart to reconcile at: every new
    // event of the store is "older" than the hash says and would be skipped, unseen by watchers,
    // until the numbers passed the old ones. The first skip mends it, fed by Kafka or the outbox.
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let inventory = chain.inventory.as_ref();
    let mut published = Published::subscribe(&redis.url(), &["store-1"]).await;
    let mut conn = redis.conn().await;
    let key = cache::stock_key("store-1");
    let head = chain.head("store-1").await;

    // Fed by Kafka: the batch says which stores it skipped, and those are checked.
    let _: () = conn.hset(&key, "_seq", head + 100).await.expect("HSET _seq");
    let next = chain.change("store-1", "SKU-0001", 2).await;
    let stale = cache.project_all(std::slice::from_ref(&next)).await.expect("project");
    assert_eq!(stale, [("store-1".to_owned(), head + 100)]);
    projector::reconcile_stale(inventory, &cache, &stale).await;
    assert_eq!(cache.version("store-1").await.expect("read"), Some(head + 1));
    assert_eq!(cache.stock("store-1", "SKU-0001").await.expect("read"), Some(quantity_after(&next, "SKU-0001")));
    assert_eq!(published.next().await.store_seq, head + 1, "the skipped event reaches watchers after all");
    let after = chain.change("store-1", "SKU-0001", 1).await;
    assert_eq!(cache.project(&after).await.expect("project"), None, "projected as usual");
    assert_eq!(published.next().await.store_seq, head + 2);

    // Fed by the outbox: a notification of a sequence the hash is already past is checked.
    let _: () = conn.hset(&key, "_seq", head + 100).await.expect("HSET _seq");
    let third = chain.change("store-1", "SKU-0001", 3).await;
    assert_eq!(
        projector::catch_up(inventory, &cache, "store-1", None).await.expect("catch up"),
        0,
        "a sweep sees nothing new"
    );
    projector::catch_up(inventory, &cache, "store-1", Some(third.store_seq)).await.expect("catch up");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(head + 3));
    assert_eq!(published.next().await.store_seq, head + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_behind_one_kafka_lost_is_not_projected_before_the_lost_one_from_the_log() {
    // A broker that came back empty lost an event the consumer never got; the next one arrives.
    // Projecting it alone would leave the lost event's skus at their quantities of before it.
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let inventory = chain.inventory.as_ref();
    projector::catch_up(inventory, &cache, "store-1", None).await.expect("catch up");
    let head = chain.head("store-1").await;
    let mut published = Published::subscribe(&redis.url(), &["store-1"]).await;
    let lost = chain.change("store-1", "SKU-0001", 5).await;
    let next = chain.change("store-1", "SKU-0002", -1).await;

    let projection = cache.project_next(std::slice::from_ref(&next)).await.expect("project");
    assert_eq!(projection.gaps, ["store-1".to_owned()], "the event after a missing one is refused");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(head), "and nothing written");

    projector::project_received(inventory, &cache, std::slice::from_ref(&next)).await.expect("project");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(next.store_seq));
    assert_eq!(cache.stock("store-1", "SKU-0001").await.expect("read"), Some(quantity_after(&lost, "SKU-0001")));
    assert_eq!(cache.stock("store-1", "SKU-0002").await.expect("read"), Some(quantity_after(&next, "SKU-0002")));
    assert_eq!(published.next().await.store_seq, lost.store_seq, "watchers get the lost event first");
    assert_eq!(published.next().await.store_seq, next.store_seq);
    // Kafka delivering the lost one after all changes nothing.
    projector::project_received(inventory, &cache, &[lost.clone(), next.clone()]).await.expect("redelivery");
    assert_eq!(cache.version("store-1").await.expect("read"), Some(next.store_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_last_events_kafka_lost_is_caught_up_by_the_stall_sweep() {
    // The broker lost a store's last events and the store went quiet: no later event shows the
    // gap. The sweep notices a hash that stays behind the log and catches it up.
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    projector::catch_up(chain.inventory.as_ref(), &cache, "store-2", None).await.expect("catch up");
    let lost = chain.change("store-2", "SKU-0003", -2).await;
    let (shutdown, _guard) = shutdown_guard();
    let stores = redstore_inventory::store::store_lister(chain.inventory.clone());
    tokio::spawn(projector::sweep_stalled_over(stores, chain.inventory.clone(), cache.clone(), shutdown.clone()));
    let caught_up = async {
        while cache.version("store-2").await.expect("read") != Some(lost.store_seq) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(support::WAIT, caught_up).await.expect("the sweep catches the store up");
    assert_eq!(cache.stock("store-2", "SKU-0003").await.expect("read"), Some(quantity_after(&lost, "SKU-0003")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_caught_up_on_both_replicas_after_restart() {
    let mut redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let (shutdown, _guard) = shutdown_guard();
    let (a, b) = (replica(&redis.url(), &chain, &shutdown), replica(&redis.url(), &chain, &shutdown));
    let cache = StockCache::new(&redis.url()).expect("stock cache");

    let [mut store1, mut store2] = watch_both_stores(&chain, [&a, &b], &shutdown).await;
    redis.wait_for_channel_subscribers("store-1", 2).await;
    redis.wait_for_channel_subscribers("store-2", 2).await;

    let before = chain.change("store-1", "SKU-0004", 2).await;
    cache.project(&before).await.expect("project before the outage");
    for watcher in &mut store1 {
        watcher.expect(&[before.store_seq]).await;
    }

    redis.kill();
    let first = chain.change("store-1", "SKU-0004", -1).await;
    assert!(cache.project(&first).await.is_err(), "projecting fails while redis is down");
    let second = chain.change("store-1", "SKU-0005", 3).await;
    let third = chain.change("store-1", "SKU-0004", -1).await;
    // Never projected at all: only the event log knows it.
    let other_store = chain.change("store-2", "SKU-0009", 1).await;
    redis.restart().await;

    cache.project(&third).await.expect("projecting works again once redis is back");
    for watcher in &mut store1 {
        watcher.expect(&[first.store_seq, second.store_seq, third.store_seq]).await;
    }
    for watcher in &mut store2 {
        watcher.expect(&[other_store.store_seq]).await;
    }
    assert_eq!(cache.stock("store-1", "SKU-0004").await.expect("read"), Some(quantity_after(&third, "SKU-0004")));

    // No duplicate: the next thing each watcher receives is the next change.
    let after = chain.change("store-1", "SKU-0006", 1).await;
    cache.project(&after).await.expect("project after the outage");
    for watcher in &mut store1 {
        watcher.expect(&[after.store_seq]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_published_while_disconnected_is_caught_up_with_nothing_after_it() {
    let redis = RedisServer::start().await;
    let proxy = Proxy::start(redis.port()).await;
    let chain = Chain::open().await;
    let (shutdown, _guard) = shutdown_guard();
    // The bridges reach Redis through the proxy; the projector reaches it directly.
    let (a, b) = (replica(&proxy.url(), &chain, &shutdown), replica(&proxy.url(), &chain, &shutdown));
    let cache = StockCache::new(&redis.url()).expect("stock cache");

    let [mut store1, mut store2] = watch_both_stores(&chain, [&a, &b], &shutdown).await;
    redis.wait_for_channel_subscribers("store-1", 2).await;
    redis.wait_for_channel_subscribers("store-2", 2).await;
    // store-1's bridges have published an event for it; store-2's have published none.
    let before = chain.change("store-1", "SKU-0010", 1).await;
    cache.project(&before).await.expect("project before the cut");
    for watcher in &mut store1 {
        watcher.expect(&[before.store_seq]).await;
    }

    proxy.cut();
    redis.wait_for_subscribers(0).await;
    let missed1 = chain.change("store-1", "SKU-0011", -2).await;
    cache.project(&missed1).await.expect("redis itself is up");
    let missed2 = chain.change("store-2", "SKU-0012", 5).await;
    cache.project(&missed2).await.expect("redis itself is up");
    proxy.restore();

    // Nothing is published after the missed events: only the catch-up on reconnect delivers them.
    for watcher in &mut store1 {
        watcher.expect(&[missed1.store_seq]).await;
    }
    for watcher in &mut store2 {
        watcher.expect(&[missed2.store_seq]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_only_the_stores_its_watchers_watch() {
    let redis = RedisServer::start().await;
    let chain = Chain::open().await;
    let (shutdown, _guard) = shutdown_guard();
    let a = replica(&redis.url(), &chain, &shutdown);
    let cache = StockCache::new(&redis.url()).expect("stock cache");
    let mut conn = redis.conn().await;
    let store2_channel = cache::events_channel("store-2");

    let mut store1 = Watcher::start(&chain, &a, "store-1", chain.head("store-1").await, &shutdown);
    redis.wait_for_channel_subscribers("store-1", 1).await;
    assert_eq!(redis.channel_subscribers(&mut conn, &store2_channel).await, 0, "nobody here watches store-2");
    assert_eq!(redis.pattern_subscriptions().await, 0, "no pattern reaches every store's channel");

    // A store-2 watcher arrives: the replica follows store-2 too, and a change committed while
    // it starts (before or after the subscription) reaches the watcher, with nothing after it.
    let head2 = chain.head("store-2").await;
    let mut store2 = Box::pin(redstore_stream_bridge::feed::watch(
        chain.inventory.clone(),
        &a,
        "store-2".to_owned(),
        redstore_stream_bridge::feed::Start::After(head2),
        shutdown.clone(),
    ));
    let arriving = chain.change("store-2", "SKU-0002", -1).await;
    cache.project(&arriving).await.expect("project");
    let next = tokio::time::timeout(support::WAIT, futures::StreamExt::next(&mut store2))
        .await
        .expect("the change arrives without another after it")
        .expect("the watch goes on")
        .expect("an event");
    match next {
        redstore_stream_bridge::feed::Item::Event(event) => assert_eq!(event.store_seq, arriving.store_seq),
        other => panic!("expected the change, got {other:?}"),
    }
    redis.wait_for_channel_subscribers("store-2", 1).await;

    // Its last watcher gone, the replica stops receiving store-2; store-1 is still followed.
    drop(store2);
    redis.wait_for_channel_subscribers("store-2", 0).await;
    assert_eq!(redis.channel_subscribers(&mut conn, &cache::events_channel("store-1")).await, 1);
    let later = chain.change("store-1", "SKU-0003", 2).await;
    cache.project(&later).await.expect("project");
    store1.expect(&[later.store_seq]).await;
}
