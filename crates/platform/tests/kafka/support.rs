//! Helpers for tests against a real Kafka-compatible broker (shared with the analytics tests).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use redstore_platform::kafka::rdkafka::consumer::{Consumer as _, StreamConsumer};
use redstore_platform::kafka::rdkafka::message::OwnedMessage;
use redstore_platform::kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use redstore_platform::kafka::{self, KafkaConfig};

/// Where the tests find a broker; `REDSTORE_TEST_KAFKA_BROKERS` overrides.
pub fn brokers() -> String {
    std::env::var("REDSTORE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A configuration with a topic prefix of its own, so tests run in parallel; also installs logging.
pub fn test_config() -> KafkaConfig {
    // Logs go to stderr, which the test runner shows for a failing test.
    let _ = redstore_platform::telemetry::init(redstore_platform::telemetry::LogFormat::Human, "kafka-tests");
    let mut cfg = KafkaConfig::new(brokers());
    cfg.topic_prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    cfg
}

/// Deletes the test's topics; a broker that cannot is only reported.
pub async fn cleanup(cfg: &KafkaConfig) {
    let topics: Vec<String> =
        kafka::DOMAINS.iter().map(|d| cfg.topic(d)).flat_map(|t| [kafka::dlq_topic(&t), t]).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = kafka::delete_topics(cfg, &topics).await {
        eprintln!("could not delete the test topics of {}: {e:#}", cfg.topic_prefix);
    }
}

/// Reads a topic from the beginning of every partition (no group offsets) until `want` messages
/// arrived or `timeout` passed, in arrival order (which is offset order within a partition).
pub async fn read_topic(cfg: &KafkaConfig, topic: &str, want: usize, timeout: Duration) -> Vec<OwnedMessage> {
    read_topic_until(cfg, topic, timeout, |got| got.len() >= want).await
}

/// Like [`read_topic`], until `done` holds for what was read.
pub async fn read_topic_until(
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("{}-reader-{}", cfg.topic_prefix, uuid::Uuid::now_v7().simple()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "{topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => eprintln!("reader: {e}"),
            Err(_) => break,
        }
    }
    tokio::task::spawn_blocking(move || drop(consumer)).await.expect("reader closed");
    out
}

/// Polls `done` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not done within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Java client's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client's default partitioner picks for a key.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

#[test]
fn murmur2_matches_the_java_client() {
    // Vectors from Apache Kafka's UtilsTest.testMurmur2.
    for (input, want) in [
        (&b"21"[..], -973_932_308_i32),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        (b"abc", 479_470_107),
    ] {
        assert_eq!(murmur2(input) as i32, want, "{}", String::from_utf8_lossy(input));
    }
}
