//! The distributed shape end to end below the servers: the sales outbox in PostgreSQL, the outbox
//! relay, a Kafka-compatible broker (`REDSTORE_TEST_KAFKA_BROKERS`, default 127.0.0.1:9092) and
//! the analytics consumer folding sales into the rollups. PostgreSQL as in the other PG tests
//! (`REDSTORE_TEST_PG_ADMIN_URL`); every test has its own database, topic prefix and group.

#[path = "../../../../crates/platform/tests/kafka/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use prost::Message as _;
use redstore_platform::kafka::rdkafka::message::{Message as _, OwnedMessage};
use redstore_platform::kafka::rdkafka::producer::FutureRecord;
use redstore_platform::kafka::{self, KafkaConfig, RelayOptions, StoreLister, header, header_str};
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::pg::{self, PgPool};
use redstore_proto::common::Money;
use redstore_proto::events::{EventEnvelope, SaleCompleted, SaleLineFact, event_envelope::Payload};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::{cleanup, murmur2_partition, read_topic, read_topic_until, test_config};

struct Env {
    db: ScratchDb,
    /// As the application role (row-level security in force).
    app: PgPool,
    /// As the admin, to look at every store's rows at once.
    admin: PgPool,
    cfg: KafkaConfig,
}

async fn env() -> Env {
    let db = ScratchDb::create(&[
        &redstore_inventory::pg::PG_SCHEMA,
        &redstore_sales::pg::PG_SCHEMA,
        &redstore_analytics::pg::PG_SCHEMA,
    ])
    .await
    .expect("scratch database");
    let app = pg::connect(&db.app_url, 8, Duration::from_secs(10)).await.expect("app pool");
    let admin = pg::connect(&db.admin_url, 2, Duration::from_secs(10)).await.expect("admin pool");
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    Env { db, app, admin, cfg }
}

impl Env {
    async fn finish(self) {
        self.app.close().await;
        self.admin.close().await;
        cleanup(&self.cfg).await;
        self.db.drop_db().await.expect("drop database");
    }

    fn topic(&self) -> String {
        self.cfg.topic("sales")
    }

    async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.admin).await.expect(sql)
    }

    /// Outbox rows behind the relay's cursor of their store: delivered to the broker.
    async fn sent(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM sales.outbox o JOIN platform.consumer_offsets c
             ON c.group_name = 'outbox-relay' AND c.topic = 'sales' AND c.store_id = o.store_id
             WHERE o.store_seq <= c.last_seq",
        )
        .await
    }

    async fn unsent(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM sales.outbox o LEFT JOIN platform.consumer_offsets c
             ON c.group_name = 'outbox-relay' AND c.topic = 'sales' AND c.store_id = o.store_id
             WHERE c.last_seq IS NULL OR o.store_seq > c.last_seq",
        )
        .await
    }

    async fn outbox_ids(&self) -> BTreeSet<String> {
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM sales.outbox").fetch_all(&self.admin).await.expect("ids");
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    /// (sales, units sold, gross minor units, processed events) over every store.
    async fn rollups(&self) -> (i64, i64, i64, i64) {
        let (sales, units, gross): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(sales_count), 0)::BIGINT, COALESCE(SUM(units_sold), 0)::BIGINT,
                    COALESCE(SUM(gross_minor), 0)::BIGINT FROM analytics.minute",
        )
        .fetch_one(&self.admin)
        .await
        .expect("rollups");
        (sales, units, gross, self.scalar("SELECT count(*) FROM analytics.processed").await)
    }

    /// Appends `n` sales of store `store` to the sales outbox, `per_tx` to a transaction.
    async fn append_sales(&self, store: &str, n: usize, per_tx: usize) -> Vec<EventEnvelope> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut tx = pg::store_tx(&self.app, store).await.expect("tx");
            for _ in 0..per_tx.min(n - out.len()) {
                out.push(pg::append_event(&mut tx, "sales", store, sale()).await.expect("append"));
            }
            tx.commit().await.expect("commit");
        }
        out
    }

    fn relay(&self, producer: kafka::Producer, stores: &[&str], opts: RelayOptions) -> Relay {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kafka::run_relay_with(
            self.app.clone(),
            producer,
            self.cfg.clone(),
            "sales",
            lister(stores),
            opts,
            shutdown.clone(),
        ));
        Relay { shutdown, task }
    }

    fn analytics(&self) -> Relay {
        let shutdown = CancellationToken::new();
        let group = format!("{}-analytics-rollups", self.cfg.topic_prefix);
        let (pool, cfg, token) = (self.app.clone(), self.cfg.clone(), shutdown.clone());
        let dlq = kafka::producer(&cfg).expect("producer");
        let task =
            tokio::spawn(async move { redstore_analytics::kafka::run_in_group(pool, cfg, &group, dlq, token).await });
        Relay { shutdown, task }
    }
}

/// A background task with its shutdown token.
struct Relay {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops within 30 s")
            .expect("joined")
            .expect("ran without error");
    }
}

fn lister(stores: &[&str]) -> StoreLister {
    let stores: Vec<String> = stores.iter().map(|s| (*s).to_owned()).collect();
    Arc::new(move || {
        let stores = stores.clone();
        async move { Ok(stores) }.boxed()
    })
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money { currency_code: "EUR".to_owned(), units_minor: minor })
}

fn sale() -> Payload {
    Payload::SaleCompleted(SaleCompleted {
        sale_id: uuid::Uuid::now_v7().to_string(),
        terminal_id: "till-1".to_owned(),
        lines: vec![SaleLineFact {
            sku: "sku-1".to_owned(),
            name: "Cola".to_owned(),
            quantity: 2,
            unit_price: eur(250),
            line_total: eur(500),
        }],
        total: eur(500),
    })
}

/// Polls an async condition every 50 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn distinct_ids(msgs: &[OwnedMessage]) -> BTreeSet<String> {
    msgs.iter().filter_map(|m| header_str(m.headers(), header::EVENT_ID).map(str::to_owned)).collect()
}

fn key(msg: &OwnedMessage) -> String {
    String::from_utf8(msg.key().expect("key").to_vec()).expect("utf-8 key")
}

#[tokio::test]
async fn relay_publishes_each_store_in_order_with_key_and_headers_and_marks_them_sent() {
    let env = env().await;
    // The first event carries a traceparent (the sales service will set it from the request).
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    {
        let mut tx = pg::store_tx(&env.app, "s1").await.expect("tx");
        let mut first = pg::append_event(&mut tx, "sales", "s1", sale()).await.expect("append");
        first.trace_parent = traceparent.to_owned();
        sqlx::query("UPDATE sales.outbox SET body = $1 WHERE event_id = $2::uuid")
            .bind(first.encode_to_vec())
            .bind(&first.event_id)
            .execute(&mut *tx)
            .await
            .expect("set traceparent");
        tx.commit().await.expect("commit");
    }
    for _ in 0..25 {
        env.append_sales("s1", 1, 1).await;
        env.append_sales("s2", 1, 1).await;
    }
    // Store s2's rows as sales' statements write them: the body without its sequence, which only
    // the row's store_seq holds. Each goes out with its sequence all the same.
    {
        let mut tx = pg::store_tx(&env.app, "s2").await.expect("tx");
        let rows: Vec<(uuid::Uuid, Vec<u8>)> =
            sqlx::query_as("SELECT event_id, body FROM sales.outbox").fetch_all(&mut *tx).await.expect("read s2");
        for (event_id, body) in rows {
            let event = EventEnvelope { store_seq: 0, ..EventEnvelope::decode(body.as_slice()).expect("envelope") };
            sqlx::query("UPDATE sales.outbox SET body = $1 WHERE event_id = $2")
                .bind(event.encode_to_vec())
                .bind(event_id)
                .execute(&mut *tx)
                .await
                .expect("strip the sequence");
        }
        tx.commit().await.expect("commit");
    }
    let producer = kafka::producer(&env.cfg).expect("producer");
    let relay = env.relay(producer, &["s1", "s2"], RelayOptions::default());
    eventually(Duration::from_secs(30), "every outbox row sent", || async { env.unsent().await == 0 }).await;

    let msgs = read_topic(&env.cfg, &env.topic(), 51, Duration::from_secs(30)).await;
    assert_eq!(msgs.len(), 51);
    assert_eq!(distinct_ids(&msgs), env.outbox_ids().await);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for msg in &msgs {
        let store = key(msg);
        let event = EventEnvelope::decode(msg.payload().expect("value")).expect("envelope");
        assert_eq!(event.store_id, store);
        assert_eq!(msg.partition(), murmur2_partition(store.as_bytes(), env.cfg.partitions), "{store}");
        assert_eq!(header_str(msg.headers(), header::EVENT_ID), Some(event.event_id.as_str()));
        assert_eq!(header_str(msg.headers(), header::EVENT_TYPE), Some("sale.completed"));
        let tp = header_str(msg.headers(), header::TRACEPARENT);
        if event.trace_parent.is_empty() {
            assert_eq!(tp, None);
        } else {
            assert_eq!(tp, Some(traceparent));
        }
        seqs.entry(store).or_default().push(event.store_seq);
    }
    assert_eq!(seqs["s1"], (1..=26).collect::<Vec<u64>>());
    assert_eq!(seqs["s2"], (1..=25).collect::<Vec<u64>>());
    relay.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn relay_is_woken_by_notify_without_waiting_for_its_sweep() {
    let env = env().await;
    let producer = kafka::producer(&env.cfg).expect("producer");
    // The sweep runs once at start, then not for an hour: only NOTIFY can wake the relay.
    let relay = env.relay(producer, &["s1"], RelayOptions { sweep: Duration::from_secs(3600), ..Default::default() });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        let started = Instant::now();
        env.append_sales("s1", 1, 1).await;
        eventually(Duration::from_secs(5), "the new event sent", || async { env.unsent().await == 0 }).await;
        eprintln!("sent {:?} after commit", started.elapsed());
    }
    let msgs = read_topic(&env.cfg, &env.topic(), 3, Duration::from_secs(20)).await;
    assert_eq!(distinct_ids(&msgs), env.outbox_ids().await);
    relay.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn a_busy_store_waits_out_the_relay_pace_and_a_quiet_one_does_not() {
    let env = env().await;
    let producer = kafka::producer(&env.cfg).expect("producer");
    // An hour's pace, and a sweep only at start: only pacing can hold an event back here.
    let paced =
        RelayOptions { sweep: Duration::from_secs(3600), pace: Duration::from_secs(3600), ..Default::default() };
    let relay = env.relay(producer.clone(), &["s1"], paced);
    // A sale now and then: each drain publishes fewer than PACED_DRAIN events and is not paced.
    for _ in 0..3 {
        env.append_sales("s1", 1, 1).await;
        eventually(Duration::from_secs(5), "a quiet store's event sent", || async { env.unsent().await == 0 }).await;
    }
    // A burst: one busy drain, after which the store waits out the pace.
    env.append_sales("s1", kafka::PACED_DRAIN * 2, kafka::PACED_DRAIN * 2).await;
    eventually(Duration::from_secs(5), "the burst sent", || async { env.unsent().await == 0 }).await;
    env.append_sales("s1", 1, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.unsent().await, 1, "the event after a busy drain waits for the pace");
    // A relay that stops (a rolling update) publishes what it held back before it goes.
    relay.stop().await;
    assert_eq!(env.unsent().await, 0, "the stopping relay flushed its outbox");
    // And the next relay has nothing left to send twice.
    env.append_sales("s1", 1, 1).await;
    let relay = env.relay(producer, &["s1"], RelayOptions::default());
    eventually(Duration::from_secs(5), "the next event sent", || async { env.unsent().await == 0 }).await;
    relay.stop().await;
    let total = 3 + kafka::PACED_DRAIN * 2 + 2;
    let msgs = read_topic(&env.cfg, &env.topic(), total, Duration::from_secs(20)).await;
    assert_eq!(distinct_ids(&msgs), env.outbox_ids().await);
    env.finish().await;
}

/// A chain's stores, for the relay tests that hold for many stores, not one.
fn chain_stores() -> Vec<String> {
    (1..=100).map(|i| format!("s{i}")).collect()
}

#[tokio::test]
async fn a_relay_stopped_midway_and_started_again_loses_nothing_in_any_store() {
    let env = env().await;
    let stores = chain_stores();
    let stores: Vec<&str> = stores.iter().map(String::as_str).collect();
    let per_store = 30;
    for store in &stores {
        env.append_sales(store, per_store, 10).await;
    }
    let total = stores.len() * per_store;
    let producer = kafka::producer(&env.cfg).expect("producer");
    let small = RelayOptions { batch: 7, ..Default::default() };
    let relay = env.relay(producer.clone(), &stores, small.clone());
    eventually(Duration::from_secs(30), "some rows sent", || async { env.sent().await > 0 }).await;
    relay.stop().await;
    let sent_at_stop = env.sent().await;
    eprintln!("stopped with {sent_at_stop} of {total} marked sent");

    let relay = env.relay(producer, &stores, small);
    eventually(Duration::from_secs(60), "every outbox row sent", || async { env.unsent().await == 0 }).await;
    relay.stop().await;

    let want = env.outbox_ids().await;
    assert_eq!(want.len(), total);
    let msgs =
        read_topic_until(&env.cfg, &env.topic(), Duration::from_secs(60), |got| distinct_ids(got).len() >= total).await;
    assert_eq!(distinct_ids(&msgs), want, "every event id arrives at least once, and no other");
    eprintln!("{} messages for {total} events", msgs.len());
    // Skipping duplicates, each store's events arrive in sequence order.
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for msg in &msgs {
        let event = EventEnvelope::decode(msg.payload().expect("value")).expect("envelope");
        if ids.insert(event.event_id.clone()) {
            seen.entry(event.store_id).or_default().push(event.store_seq);
        }
    }
    for store in stores {
        assert_eq!(seen[store], (1..=per_store as u64).collect::<Vec<u64>>(), "{store}");
    }
    env.finish().await;
}

#[tokio::test]
async fn two_relays_on_one_outbox_keep_each_of_many_stores_in_order_and_send_each_event_once() {
    let env = env().await;
    let stores = chain_stores();
    let stores: Vec<&str> = stores.iter().map(String::as_str).collect();
    let producer = kafka::producer(&env.cfg).expect("producer");
    let small = RelayOptions { batch: 3, ..Default::default() };
    let a = env.relay(producer.clone(), &stores, small.clone());
    let b = env.relay(kafka::producer(&env.cfg).expect("producer"), &stores, small);
    // Written while both relays run, so both are woken for every store.
    let rounds = 6;
    for _ in 0..rounds {
        for store in &stores {
            env.append_sales(store, 2, 2).await;
        }
    }
    let total = stores.len() * rounds * 2;
    eventually(Duration::from_secs(60), "every outbox row sent", || async { env.unsent().await == 0 }).await;
    a.stop().await;
    b.stop().await;
    let want = env.outbox_ids().await;
    assert_eq!(want.len(), total);
    let msgs =
        read_topic_until(&env.cfg, &env.topic(), Duration::from_secs(60), |got| distinct_ids(got).len() >= total).await;
    assert_eq!(distinct_ids(&msgs), want);
    eprintln!("{} messages for {total}", msgs.len());
    assert_eq!(msgs.len(), total, "the advisory locks let one relay at a time drain a store");
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for msg in &msgs {
        let event = EventEnvelope::decode(msg.payload().expect("value")).expect("envelope");
        seen.entry(event.store_id).or_default().push(event.store_seq);
    }
    for store in stores {
        assert_eq!(seen[store], (1..=(rounds * 2) as u64).collect::<Vec<u64>>(), "{store}");
    }
    env.finish().await;
}

#[tokio::test]
async fn a_failed_produce_leaves_the_rows_unsent_and_a_later_relay_sends_them() {
    let env = env().await;
    env.append_sales("s1", 10, 5).await;
    env.append_sales("s2", 10, 5).await;
    let mut dead = kafka::producer_config(&env.cfg);
    dead.set("bootstrap.servers", "127.0.0.1:1").set("message.timeout.ms", "1000");
    let dead = kafka::Producer::from_config(&dead).expect("producer");
    let relay = env.relay(dead, &["s1", "s2"], RelayOptions::default());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.unsent().await, 20, "nothing is marked sent while the broker is unreachable");
    relay.stop().await;

    let producer = kafka::producer(&env.cfg).expect("producer");
    let relay = env.relay(producer, &["s1", "s2"], RelayOptions::default());
    eventually(Duration::from_secs(30), "every outbox row sent", || async { env.unsent().await == 0 }).await;
    relay.stop().await;
    let msgs = read_topic(&env.cfg, &env.topic(), 20, Duration::from_secs(30)).await;
    assert_eq!(distinct_ids(&msgs), env.outbox_ids().await);
    env.finish().await;
}

#[tokio::test]
async fn analytics_from_kafka_counts_each_sale_once_across_restarts_and_resends() {
    let env = env().await;
    let stores = ["s1", "s2"];
    let producer = kafka::producer(&env.cfg).expect("producer");
    let relay = env.relay(producer.clone(), &stores, RelayOptions::default());
    env.append_sales("s1", 10, 1).await;
    env.append_sales("s2", 10, 1).await;
    let analytics = env.analytics();
    let counted = |n: i64| {
        let env = &env;
        move || async move { env.rollups().await.0 >= n }
    };
    eventually(Duration::from_secs(60), "20 sales in the rollups", counted(20)).await;
    assert_eq!(env.rollups().await, (20, 40, 10_000, 20));

    // Stopped, sales go on; restarted, it picks up after its committed offsets.
    analytics.stop().await;
    env.append_sales("s1", 5, 1).await;
    eventually(Duration::from_secs(30), "new rows sent", || async { env.unsent().await == 0 }).await;
    let analytics = env.analytics();
    eventually(Duration::from_secs(60), "25 sales in the rollups", counted(25)).await;
    assert_eq!(env.rollups().await, (25, 50, 12_500, 25));

    // The relay publishes everything again (as after a crash before marking rows sent); then one
    // more sale per store, behind the re-sent ones on the store's partition.
    sqlx::query("DELETE FROM platform.consumer_offsets WHERE group_name = 'outbox-relay'")
        .execute(&env.admin)
        .await
        .expect("rewind the relay");
    eventually(Duration::from_secs(30), "re-sent", || async { env.unsent().await == 0 }).await;
    env.append_sales("s1", 1, 1).await;
    env.append_sales("s2", 1, 1).await;
    eventually(Duration::from_secs(60), "27 sales in the rollups", counted(27)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.rollups().await, (27, 54, 13_500, 27), "every sale counted exactly once");
    let msgs = read_topic(&env.cfg, &env.topic(), 52, Duration::from_secs(20)).await;
    assert_eq!(msgs.len(), 52, "the topic holds the re-sent duplicates");
    analytics.stop().await;
    relay.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn analytics_dead_letters_bad_events_and_goes_on() {
    let env = env().await;
    let producer = kafka::producer(&env.cfg).expect("producer");
    let topic = env.topic();
    let send = |value: Vec<u8>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            producer
                .send(FutureRecord::to(&topic).key("s1").payload(&value), Duration::from_secs(10))
                .await
                .expect("delivered")
        }
    };
    // Not an envelope at all; then an envelope that cannot be applied (its id is no UUID); then a
    // good sale. All three share store s1's partition, in this order.
    send(vec![0xff, 0xff, 0xff, 0x01]).await;
    let unappliable = EventEnvelope {
        event_id: "not-a-uuid".to_owned(),
        r#type: "sale.completed".to_owned(),
        store_id: "s1".to_owned(),
        store_seq: 1,
        payload: Some(sale()),
        ..Default::default()
    };
    send(unappliable.encode_to_vec()).await;
    let good = EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        r#type: "sale.completed".to_owned(),
        store_id: "s1".to_owned(),
        store_seq: 2,
        occurred_at: Some(redstore_platform::time::timestamp(1_700_000_000_000)),
        payload: Some(sale()),
        ..Default::default()
    };
    send(good.encode_to_vec()).await;

    let analytics = env.analytics();
    eventually(Duration::from_secs(60), "the good sale in the rollups", || async { env.rollups().await.0 >= 1 }).await;
    assert_eq!(env.rollups().await, (1, 2, 500, 1));
    let dead = read_topic(&env.cfg, &kafka::dlq_topic(&topic), 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].payload(), Some(&[0xff_u8, 0xff, 0xff, 0x01][..]));
    let error = header_str(dead[0].headers(), header::ERROR).expect("error header");
    assert!(error.contains("EventEnvelope"), "{error}");
    assert_eq!(EventEnvelope::decode(dead[1].payload().expect("value")).expect("envelope"), unappliable);
    let error = header_str(dead[1].headers(), header::ERROR).expect("error header");
    assert!(error.contains("not-a-uuid"), "{error}");
    for msg in &dead {
        assert_eq!(header_str(msg.headers(), header::ORIGINAL_TOPIC), Some(topic.as_str()));
        assert_eq!(key(msg), "s1");
    }
    assert_eq!(header_str(dead[1].headers(), header::ORIGINAL_OFFSET), Some("1"));
    analytics.stop().await;
    env.finish().await;
}

#[tokio::test]
async fn events_kafka_lost_before_the_one_it_delivers_are_counted_from_the_outbox() {
    // A broker that came back empty lost the first five sales of the store; the sixth arrives.
    let env = env().await;
    let events = env.append_sales("s1", 6, 1).await;
    redstore_analytics::kafka::fold_store(&env.app, "s1", vec![events[5].clone()]).await.expect("fold");
    assert_eq!(env.rollups().await, (6, 12, 3_000, 6), "the five lost sales are counted from the outbox");
    // Kafka redelivering any of them (the old broker's copies, a relay's re-sends) counts nothing.
    redstore_analytics::kafka::fold_all(&env.app, events.clone()).await.expect("redelivery");
    redstore_analytics::kafka::fold_store(&env.app, "s1", vec![events[2].clone()]).await.expect("redelivery");
    assert_eq!(env.rollups().await, (6, 12, 3_000, 6));
    env.finish().await;
}

#[tokio::test]
async fn the_last_sales_of_a_quiet_store_that_kafka_lost_are_counted_by_the_stall_sweep() {
    // The broker lost the store's last sales and the store went quiet: no later event shows the gap.
    let env = env().await;
    sqlx::query(
        "INSERT INTO inventory.stores (store_id, name, oversell_policy, created_at_ms) VALUES ('s1', 'S1', 'strict', 0)",
    )
    .execute(&env.admin)
    .await
    .expect("store");
    let events = env.append_sales("s1", 3, 1).await;
    redstore_analytics::kafka::fold_store(&env.app, "s1", vec![events[0].clone()]).await.expect("fold the first");
    let shutdown = CancellationToken::new();
    let sweep = tokio::spawn(redstore_analytics::kafka::sweep_stalled(env.app.clone(), shutdown.clone()));
    eventually(Duration::from_secs(30), "3 sales in the rollups", || async { env.rollups().await.0 >= 3 }).await;
    assert_eq!(env.rollups().await, (3, 6, 1_500, 3));
    shutdown.cancel();
    sweep.await.expect("sweep stops");
    env.finish().await;
}
