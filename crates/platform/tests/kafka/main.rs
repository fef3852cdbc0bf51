//! Kafka against a real broker (`REDSTORE_TEST_KAFKA_BROKERS`, default 127.0.0.1:9092): topic
//! creation, fail-fast start-up, the producer's partitioner, and the consumer loop with its
//! dead-letter topic and offset commits. Every test has its own topic prefix and group.
//! `secured`: a broker of its own that asks for TLS and a SASL login.

mod secured;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use prost::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use redstore_platform::kafka::{self, KafkaConfig, header, header_str};
use redstore_proto::events::EventEnvelope;
use tokio_util::sync::CancellationToken;

use support::{cleanup, murmur2_partition, read_topic, test_config, wait_until};

#[tokio::test]
async fn ensure_topics_creates_topics_and_dead_letter_topics() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &kafka::DOMAINS).await.expect("ensure topics");
    // A second run finds them all and is fine.
    kafka::ensure_topics(&cfg, &kafka::DOMAINS).await.expect("ensure topics again");
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &cfg.brokers).create().expect("client");
    for domain in kafka::DOMAINS {
        for topic in [cfg.topic(domain), kafka::dlq_topic(&cfg.topic(domain))] {
            let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)).expect("metadata");
            let t = md.topics().iter().find(|t| t.name() == topic).expect("topic listed");
            assert!(t.error().is_none(), "{topic}: {:?}", t.error());
            assert_eq!(t.partitions().len(), cfg.partitions as usize, "{topic}");
        }
    }
    cleanup(&cfg).await;
}

#[tokio::test]
async fn the_topic_watch_creates_topics_the_broker_lost_and_says_so() {
    let cfg = test_config();
    let created = kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    assert_eq!(created.len(), 2, "the topic and its dead-letter topic: {created:?}");
    assert!(kafka::ensure_topics(&cfg, &["sales"]).await.expect("again").is_empty(), "nothing created twice");
    let shutdown = CancellationToken::new();
    let watch = {
        let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
        tokio::spawn(async move { kafka::watch_topics(&cfg, &["sales"], Duration::from_millis(200), shutdown).await })
    };
    // While the topics are there, the watch goes on.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!watch.is_finished(), "the watch goes on while the topics exist");
    // The broker loses a topic (deleted here; an in-memory broker restarted loses them all).
    kafka::delete_topics(&cfg, &[cfg.topic("sales").as_str()]).await.expect("delete");
    let created = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("the watch notices within seconds")
        .expect("joined")
        .expect("watched");
    assert_eq!(created, [cfg.topic("sales")], "it created the lost topic again and returned it");
    // Stopped, a watch returns nothing.
    let stopped = CancellationToken::new();
    stopped.cancel();
    let none = kafka::watch_topics(&cfg, &["sales"], Duration::from_millis(200), stopped).await.expect("stopped");
    assert!(none.is_empty());
    cleanup(&cfg).await;
}

#[tokio::test]
async fn unreachable_brokers_fail_fast_with_their_names() {
    let mut cfg = test_config();
    cfg.brokers = "127.0.0.1:1".to_owned();
    let started = Instant::now();
    let err = kafka::ensure_topics(&cfg, &["sales"]).await.expect_err("no broker there");
    let took = started.elapsed();
    let message = format!("{err:#}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("Kafka"), "{message}");
}

#[tokio::test]
async fn producer_places_each_store_by_java_murmur2_of_its_id() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let producer = kafka::producer(&cfg).expect("producer");
    let topic = cfg.topic("sales");
    for i in 0..24 {
        let store = format!("store-{i}");
        let delivery = producer
            .send(FutureRecord::to(&topic).key(&store).payload("x"), Duration::from_secs(10))
            .await
            .expect("delivered");
        assert_eq!(delivery.partition, murmur2_partition(store.as_bytes(), cfg.partitions), "{store}");
    }
    cleanup(&cfg).await;
}

fn envelope(store: &str, seq: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        r#type: "sale.completed".to_owned(),
        store_id: store.to_owned(),
        store_seq: seq,
        ..Default::default()
    }
}

type Seen = Arc<Mutex<Vec<EventEnvelope>>>;

/// Runs `consume` in a task; the handler records what it was given and fails for the event ids
/// in `failing` (counting the attempts).
fn spawn_consume(
    cfg: &KafkaConfig,
    group: &str,
    failing: Vec<String>,
    attempts: Arc<Mutex<u32>>,
) -> (Seen, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let consumer = kafka::consumer(cfg, group, &["sales"]).expect("consumer");
    let dlq = kafka::producer(cfg).expect("producer");
    let seen: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let handler = {
        let seen = seen.clone();
        move |event: EventEnvelope| -> BoxFuture<'static, redstore_platform::Result<()>> {
            let seen = seen.clone();
            let failing = failing.contains(&event.event_id);
            let attempts = attempts.clone();
            Box::pin(async move {
                if failing {
                    *attempts.lock() += 1;
                    return Err(redstore_platform::Error::Internal(anyhow::anyhow!("this one always fails")));
                }
                seen.lock().push(event);
                Ok(())
            })
        }
    };
    let task = tokio::spawn(kafka::consume(consumer, dlq, handler, shutdown.clone()));
    (seen, shutdown, task)
}

async fn produce(cfg: &KafkaConfig, key: &str, payload: &[u8]) {
    let producer = kafka::producer(cfg).expect("producer");
    producer
        .send(FutureRecord::to(&cfg.topic("sales")).key(key).payload(payload), Duration::from_secs(10))
        .await
        .expect("delivered");
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_and_the_next_is_handled() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let garbage = [0xff_u8, 0xff, 0xff, 0x01];
    produce(&cfg, "s1", &garbage).await;
    let good = envelope("s1", 1);
    produce(&cfg, "s1", &good.encode_to_vec()).await;

    let (seen, shutdown, task) = spawn_consume(&cfg, &format!("{}-test", cfg.topic_prefix), vec![], Arc::default());
    wait_until(Duration::from_secs(60), || !seen.lock().is_empty()).await.expect("the good event is handled");
    let dlq = kafka::dlq_topic(&cfg.topic("sales"));
    let dead = read_topic(&cfg, &dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1);
    let msg = &dead[0];
    assert_eq!(msg.payload(), Some(&garbage[..]));
    assert_eq!(msg.key(), Some(&b"s1"[..]));
    let error = header_str(msg.headers(), header::ERROR).expect("error header");
    assert!(error.contains("EventEnvelope"), "{error}");
    assert_eq!(header_str(msg.headers(), header::ORIGINAL_TOPIC), Some(cfg.topic("sales").as_str()));
    assert!(header_str(msg.headers(), header::ORIGINAL_PARTITION).is_some());
    assert_eq!(header_str(msg.headers(), header::ORIGINAL_OFFSET), Some("0"));
    // The consumer does not read its own dead-letter topic: nothing else shows up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.lock().iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), vec![good.event_id.clone()]);
    assert_eq!(read_topic(&cfg, &dlq, 2, Duration::from_secs(2)).await.len(), 1);
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_failing_handler_is_retried_then_dead_lettered_without_blocking_the_partition() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let poison = envelope("s1", 1);
    let next = envelope("s1", 2);
    produce(&cfg, "s1", &poison.encode_to_vec()).await;
    produce(&cfg, "s1", &next.encode_to_vec()).await;
    let attempts = Arc::new(Mutex::new(0));
    let (seen, shutdown, task) =
        spawn_consume(&cfg, &format!("{}-test", cfg.topic_prefix), vec![poison.event_id.clone()], attempts.clone());
    wait_until(Duration::from_secs(60), || !seen.lock().is_empty()).await.expect("the next event is handled");
    assert_eq!(*attempts.lock(), kafka::HANDLER_ATTEMPTS);
    assert_eq!(seen.lock()[0].event_id, next.event_id);
    let dead = read_topic(&cfg, &kafka::dlq_topic(&cfg.topic("sales")), 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1);
    let error = header_str(dead[0].headers(), header::ERROR).expect("error header");
    assert!(error.contains("this one always fails"), "{error}");
    assert_eq!(EventEnvelope::decode(dead[0].payload().expect("payload")).expect("envelope"), poison);
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_backend_outage_is_waited_out_not_dead_lettered() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let first = envelope("s1", 1);
    let next = envelope("s1", 2);
    produce(&cfg, "s1", &first.encode_to_vec()).await;
    produce(&cfg, "s1", &next.encode_to_vec()).await;
    // The backend is "down" for more attempts than a poison event gets.
    let outage = kafka::HANDLER_ATTEMPTS + 2;
    let attempts = Arc::new(Mutex::new(0u32));
    let seen: Arc<Mutex<Vec<EventEnvelope>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let handler = {
        let (seen, attempts) = (seen.clone(), attempts.clone());
        move |event: EventEnvelope| -> BoxFuture<'static, redstore_platform::Result<()>> {
            let (seen, attempts) = (seen.clone(), attempts.clone());
            Box::pin(async move {
                let mut n = attempts.lock();
                *n += 1;
                if *n <= outage {
                    return Err(redstore_platform::Error::unavailable("database restarting"));
                }
                drop(n);
                seen.lock().push(event);
                Ok(())
            })
        }
    };
    let consumer = kafka::consumer(&cfg, &format!("{}-test", cfg.topic_prefix), &["sales"]).expect("consumer");
    let task =
        tokio::spawn(kafka::consume(consumer, kafka::producer(&cfg).expect("producer"), handler, shutdown.clone()));
    wait_until(Duration::from_secs(60), || seen.lock().len() >= 2).await.expect("both events handled after the outage");
    let ids: Vec<String> = seen.lock().iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, vec![first.event_id.clone(), next.event_id.clone()], "in order, the first not skipped");
    assert!(*attempts.lock() > kafka::HANDLER_ATTEMPTS, "the outage outlasted a poison event's attempts");
    let dead = read_topic(&cfg, &kafka::dlq_topic(&cfg.topic("sales")), 1, Duration::from_secs(3)).await;
    assert!(dead.is_empty(), "nothing was dead-lettered: {} messages", dead.len());
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn a_restarted_group_resumes_after_its_committed_offsets() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let group = format!("{}-test", cfg.topic_prefix);
    let first: Vec<EventEnvelope> = (1..=6).map(|i| envelope(&format!("s{}", i % 3), i)).collect();
    for e in &first {
        produce(&cfg, &e.store_id, &e.encode_to_vec()).await;
    }
    let (seen, shutdown, task) = spawn_consume(&cfg, &group, vec![], Arc::default());
    wait_until(Duration::from_secs(60), || seen.lock().len() >= first.len()).await.expect("first events handled");
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    assert_eq!(seen.lock().len(), first.len());

    let second: Vec<EventEnvelope> = (7..=9).map(|i| envelope(&format!("s{}", i % 3), i)).collect();
    for e in &second {
        produce(&cfg, &e.store_id, &e.encode_to_vec()).await;
    }
    let (seen, shutdown, task) = spawn_consume(&cfg, &group, vec![], Arc::default());
    wait_until(Duration::from_secs(60), || seen.lock().len() >= second.len()).await.expect("new events handled");
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    let mut got: Vec<String> = seen.lock().iter().map(|e| e.event_id.clone()).collect();
    let mut want: Vec<String> = second.iter().map(|e| e.event_id.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the restarted group sees exactly the events after its commits");
    cleanup(&cfg).await;
}

#[tokio::test]
async fn messages_received_together_are_handled_as_a_batch_and_a_poison_one_still_goes_alone_to_the_dlq() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    // Waiting before the consumer starts, so that its first fetch brings them together.
    let good: Vec<EventEnvelope> = (1..=8).map(|seq| envelope("s1", seq)).collect();
    let poison = envelope("s1", 9);
    let garbage = [0xff_u8, 0xff, 0xff, 0x01];
    for event in &good[..4] {
        produce(&cfg, "s1", &event.encode_to_vec()).await;
    }
    produce(&cfg, "s1", &poison.encode_to_vec()).await;
    produce(&cfg, "s1", &garbage).await;
    for event in &good[4..] {
        produce(&cfg, "s1", &event.encode_to_vec()).await;
    }

    let seen: Seen = Arc::default();
    let batch_sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let poison_id = poison.event_id.clone();
    let batch: kafka::BatchHandler = {
        let (seen, batch_sizes, poison_id) = (seen.clone(), batch_sizes.clone(), poison_id.clone());
        Box::new(move |events: Vec<EventEnvelope>| -> BoxFuture<'static, redstore_platform::Result<()>> {
            batch_sizes.lock().push(events.len());
            let (seen, poison_id) = (seen.clone(), poison_id.clone());
            Box::pin(async move {
                // All or nothing, as one transaction would be.
                if events.iter().any(|e| e.event_id == poison_id) {
                    return Err(redstore_platform::Error::Internal(anyhow::anyhow!("a poison event in the batch")));
                }
                seen.lock().extend(events);
                Ok(())
            })
        })
    };
    let handler = {
        let seen = seen.clone();
        move |event: EventEnvelope| -> BoxFuture<'static, redstore_platform::Result<()>> {
            let (seen, poison) = (seen.clone(), event.event_id == poison_id);
            Box::pin(async move {
                if poison {
                    return Err(redstore_platform::Error::Internal(anyhow::anyhow!("this one always fails")));
                }
                seen.lock().push(event);
                Ok(())
            })
        }
    };
    let consumer = kafka::consumer(&cfg, &format!("{}-batch", cfg.topic_prefix), &["sales"]).expect("consumer");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kafka::consume_batches(
        consumer,
        kafka::producer(&cfg).expect("producer"),
        Some(batch),
        handler,
        None,
        shutdown.clone(),
    ));
    wait_until(Duration::from_secs(60), || seen.lock().len() >= good.len()).await.expect("every good event is handled");
    let dlq = kafka::dlq_topic(&cfg.topic("sales"));
    let dead = read_topic(&cfg, &dlq, 2, Duration::from_secs(20)).await;
    let mut dead_payloads: Vec<Vec<u8>> = dead.iter().map(|m| m.payload().unwrap_or_default().to_vec()).collect();
    dead_payloads.sort();
    let mut expected = vec![poison.encode_to_vec(), garbage.to_vec()];
    expected.sort();
    assert_eq!(dead_payloads, expected, "the poison event and the undecodable message, each dead-lettered once");
    // Each good event handled exactly once, whether in a batch or one by one after a failed one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut handled: Vec<u64> = seen.lock().iter().map(|e| e.store_seq).collect();
    handled.sort_unstable();
    assert_eq!(handled, (1..=8).collect::<Vec<u64>>());
    assert!(
        batch_sizes.lock().iter().any(|n| *n > 1),
        "messages waiting together were batched: {:?}",
        batch_sizes.lock()
    );
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    cleanup(&cfg).await;
}

/// A consumer whose topics are quiet stops fetching (a broker that holds every fetch for its whole
/// wait then costs it nothing), and fetches again at the next commit's hint: an event produced
/// while it is paused waits for the hint, then arrives.
#[tokio::test]
async fn a_quiet_consumer_stops_fetching_and_a_commit_hint_wakes_it() {
    let cfg = test_config();
    kafka::ensure_topics(&cfg, &["sales"]).await.expect("ensure topics");
    let seen: Seen = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |event: EventEnvelope| -> BoxFuture<'static, redstore_platform::Result<()>> {
            seen.lock().push(event);
            Box::pin(async { Ok(()) })
        }
    };
    let hints = Arc::new(tokio::sync::Notify::new());
    let quiet =
        kafka::Quiet { hints: hints.clone(), after: Duration::from_millis(1500), at_most: Duration::from_secs(300) };
    let consumer = kafka::consumer(&cfg, &format!("{}-quiet", cfg.topic_prefix), &["sales"]).expect("consumer");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kafka::consume_batches(
        consumer,
        kafka::producer(&cfg).expect("producer"),
        None,
        handler,
        Some(quiet),
        shutdown.clone(),
    ));
    // Busy: an event arrives as it would without the quiet.
    produce(&cfg, "s1", &envelope("s1", 1).encode_to_vec()).await;
    wait_until(Duration::from_secs(60), || seen.lock().len() == 1).await.expect("the first event is handled");
    // Quiet: paused, the consumer does not fetch what comes next...
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce(&cfg, "s1", &envelope("s1", 2).encode_to_vec()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.lock().len(), 1, "a paused consumer fetched without a hint");
    // ...until a commit hints that events are coming.
    hints.notify_one();
    wait_until(Duration::from_secs(10), || seen.lock().len() == 2).await.expect("the hint wakes the consumer");
    assert_eq!(seen.lock().iter().map(|e| e.store_seq).collect::<Vec<_>>(), [1, 2]);
    shutdown.cancel();
    task.await.expect("joined").expect("consume");
    cleanup(&cfg).await;
}
