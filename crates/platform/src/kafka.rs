//! Kafka for the distributed shape: topic names and their creation, a producer keyed by store,
//! the transactional-outbox relay (PostgreSQL → Kafka), and a consumer loop with bounded retries
//! and a dead-letter topic.
//!
//! Nothing here relies on a broker-specific behaviour: it is written for Apache Kafka, Redpanda
//! and MSK (and is tested against tansu, a Kafka-compatible broker).
//!
//! - Topics are `<prefix>.<domain>.v1` (`redstore.sales.v1`, `redstore.inventory.v1`); each has a
//!   dead-letter topic `<topic>.dlq`. [`ensure_topics`] creates the missing ones at start-up, and
//!   [`watch_topics`] while running (a broker that came back empty).
//! - Every message is keyed by its store id and carries the headers `event-type`, `event-id` and
//!   (when known) `traceparent`; the value is an encoded `redstore.events.v1.EventEnvelope`.
//! - Consumers subscribe by pattern (`^<prefix>\.sales\.v[0-9]+$`: new versions are discovered,
//!   dead-letter topics are not matched), commit an offset only after its effect (or its
//!   dead-letter copy) is stored, and deduplicate by event id, so delivery is at least once and
//!   the effect exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use redstore_proto::events::EventEnvelope;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::Result;
use crate::pg::{self, PgPool};

/// The Kafka client library, for callers that configure or inspect clients beyond these helpers.
pub use rdkafka;

mod producer;
mod relay;
pub use producer::{Delivered, Deliveries, Delivery, Producer};
pub use relay::{RelayOptions, run_relay, run_relay_with};
use relay::{Wakeups, listen};

/// The domains that have a topic.
pub const DOMAINS: [&str; 2] = ["inventory", "sales"];
/// The prefix of every topic unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "redstore";
/// How long start-up waits for the brokers before it gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the relay drains the stores with a backlog, whatever the notifications said.
pub const RELAY_SWEEP: Duration = Duration::from_secs(2);
/// How many outbox rows the relay publishes per transaction.
pub const RELAY_BATCH: u32 = 500;
/// A drain that published this many events is a busy one (see [`RelayOptions::pace`]).
pub const PACED_DRAIN: usize = 4;
/// How far apart a busy store's drains of an outbox on the live path are: a burst of sales costs
/// the relay, the broker and the consumers one transaction, produce request and fetch per 20 ms
/// instead of one per commit, for at most 20 ms more on the way to a terminal while the store is
/// that busy. A store with a sale now and then is drained at once. Measured in
/// docs/benchmarks-history.md (7th machine).
pub const RELAY_PACE_LIVE: Duration = Duration::from_millis(20);
/// [`RELAY_PACE_LIVE`] for an outbox nobody waits on live (sales events, for analytics).
pub const RELAY_PACE_BULK: Duration = Duration::from_millis(100);
/// The outbox relay's cursor per store is its offset in `platform.consumer_offsets` under this
/// group, with the schema as the topic: every event of the store up to `last_seq` was delivered.
pub const RELAY_GROUP: &str = "outbox-relay";
/// How many times [`consume`] runs the handler on one event before it dead-letters it.
pub const HANDLER_ATTEMPTS: u32 = 3;
/// How long a handled message's offset may wait to be committed with the ones after it.
pub const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// How long the relay and the consumers first wait after a failure; each failure in a row doubles
/// it up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Header names.
pub mod header {
    pub const EVENT_TYPE: &str = "event-type";
    pub const EVENT_ID: &str = "event-id";
    pub const TRACEPARENT: &str = "traceparent";
    /// On a dead-letter copy: why the event could not be processed.
    pub const ERROR: &str = "error";
    pub const ORIGINAL_TOPIC: &str = "original-topic";
    pub const ORIGINAL_PARTITION: &str = "original-partition";
    pub const ORIGINAL_OFFSET: &str = "original-offset";
}

/// Where Kafka is, how to reach it and how topics are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    /// TLS and SASL, for managed brokers (MSK, Confluent Cloud, Aiven); plain text by default.
    pub security: KafkaSecurity,
    /// The first part of every topic name; `redstore` unless tests isolate themselves.
    pub topic_prefix: String,
    /// Partitions of a topic created by [`ensure_topics`].
    pub partitions: i32,
    /// Replication factor of a topic created by [`ensure_topics`].
    pub replication: i16,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            security: KafkaSecurity::default(),
            topic_prefix: DEFAULT_PREFIX.to_owned(),
            partitions: 3,
            replication: 1,
        }
    }

    /// The topic of a domain, e.g. `redstore.sales.v1`.
    pub fn topic(&self, domain: &str) -> String {
        topic_name(&self.topic_prefix, domain)
    }

    /// The subscription pattern of a domain's topics (every version, never a dead-letter topic).
    pub fn pattern(&self, domain: &str) -> String {
        topic_pattern(&self.topic_prefix, domain)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self::new("localhost:9092")
    }
}

/// How clients reach the brokers: librdkafka's `security.protocol`, with the certificate
/// authority that signed the brokers' certificates (the system's when none is given) and the
/// SASL credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub tls: bool,
    /// PEM file of the authority the brokers' certificates must chain to (TLS only).
    pub ca_file: Option<std::path::PathBuf>,
    pub sasl: Option<SaslLogin>,
}

/// A SASL login: mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol())
            .field("ca_file", &self.ca_file)
            .field("sasl", &self.sasl.as_ref().map(|s| (&s.mechanism, &s.username, "<redacted>")))
            .finish()
    }
}

impl KafkaSecurity {
    /// librdkafka's `security.protocol`.
    pub fn protocol(&self) -> &'static str {
        match (self.tls, self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol());
        if let Some(ca) = &self.ca_file {
            config.set("ssl.ca.location", ca.to_string_lossy());
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
    }
}

/// `<prefix>.<domain>.v1`.
pub fn topic_name(prefix: &str, domain: &str) -> String {
    format!("{prefix}.{domain}.v1")
}

/// The dead-letter topic of a topic: `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The regex (librdkafka subscribes by regex when a topic starts with `^`) that matches every
/// version of a domain's topic, `<prefix>.<domain>.v<N>`, and not its `.dlq` topics.
pub fn topic_pattern(prefix: &str, domain: &str) -> String {
    format!(r"^{}\.{}\.v[0-9]+$", escape_regex(prefix), escape_regex(domain))
}

fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A topic prefix is what Kafka allows in a topic name (`[A-Za-z0-9._-]`), without a leading or
/// trailing dot, and short enough for the longest topic it makes.
pub fn validate_prefix(prefix: &str) -> anyhow::Result<()> {
    let ok_chars = prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if prefix.is_empty() || !ok_chars || prefix.starts_with('.') || prefix.ends_with('.') || prefix.len() > 200 {
        anyhow::bail!(
            "kafka topic prefix {prefix:?} is not valid: use 1 to 200 of the characters A-Z a-z 0-9 . _ -, \
             not starting or ending with a dot"
        );
    }
    Ok(())
}

/// The headers of an event: `event-type`, `event-id` and `traceparent` (left out when empty).
pub fn event_headers<'a>(
    event_type: &'a str,
    event_id: &'a str,
    trace_parent: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![(header::EVENT_TYPE, event_type), (header::EVENT_ID, event_id)];
    if !trace_parent.is_empty() {
        headers.push((header::TRACEPARENT, trace_parent));
    }
    headers
}

/// Builds Kafka headers from pairs.
pub fn owned_headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new_with_capacity(pairs.len()), |headers, (key, value)| {
        headers.insert(Header { key, value: Some(*value) })
    })
}

/// The first value of a header, when it is present and UTF-8.
pub fn header_str<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    headers?.iter().find(|h| h.key == key).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &cfg.brokers).set("client.id", "redstore");
    cfg.security.apply(&mut config);
    config
}

/// The producer's settings; [`producer`] uses them as they are, tests and tools may adjust them.
///
/// - `enable.idempotence=true` and `acks=all`: a retry never duplicates or reorders a message
///   within its partition, so one store's events stay in sequence order.
/// - `partitioner=murmur2_random`: the partition of a keyed message is
///   `(murmur2(key) & 0x7fffffff) % partitions`, the same function as the Java client's default
///   partitioner (and the murmur2 option of Sarama, franz-go, confluent-kafka-go and kafka-python).
///   The key is the store id, so every producer in any language puts a store's events on the same
///   partition, which is what orders them for consumers. (`_random` applies only to messages
///   without a key; the relay sends none.)
/// - `message.timeout.ms=30000`: a delivery that cannot be made within 30 s fails, and the relay
///   leaves its outbox rows for the next try, instead of holding them for librdkafka's default 5 min.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut config = base_config(cfg);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        // Events are small and latency-bound (a terminal waits for them): batch for 1 ms at most.
        .set("linger.ms", "1");
    config
}

/// A producer with [`producer_config`]. It connects lazily: call [`ensure_topics`] first to
/// fail fast when no broker answers.
pub fn producer(cfg: &KafkaConfig) -> anyhow::Result<Producer> {
    Producer::from_config(&producer_config(cfg))
        .with_context(|| format!("cannot create a kafka producer for {}", cfg.brokers))
}

/// Whether the brokers answer a metadata request for `topic` within a few seconds (through
/// `producer`'s connections: what the relays publish on; one topic, not the whole cluster's).
pub async fn brokers_answer(producer: Producer, topic: String) -> bool {
    // librdkafka's metadata request blocks its caller.
    let asked =
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), Duration::from_secs(2)));
    matches!(asked.await, Ok(Ok(_)))
}

/// How long a consumer's fetch may wait at the broker when no message is there yet: the delay a
/// message can sit before its consumer sees it, against how many fetch requests an idle consumer
/// sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The live path (stock cache → terminals): 5 ms. A broker answers a fetch as soon as data is
    /// there (Kafka's long poll), so the wait costs no latency, only the requests an idle consumer
    /// sends; some brokers (tansu) hold every fetch for the whole wait, and then it is latency
    /// too. With tansu on two cores a much longer wait put the live path over its latency target,
    /// and a much shorter one polled so often that the broker and the consumer's thread took
    /// checkouts' share of the machine (docs/benchmarks-history.md, "The live consumer's fetch
    /// wait").
    Live,
    /// Work nobody waits on (analytics rollups): 100 ms, so that it costs the broker few requests.
    Bulk,
}

impl Pace {
    fn fetch_wait_ms(self) -> &'static str {
        match self {
            Pace::Live => "5",
            Pace::Bulk => "100",
        }
    }
}

/// The consumer's settings for a group named `<service>-<purpose>`: offsets committed by
/// [`consume`] only (`enable.auto.commit=false`), a new group starts at the earliest offset,
/// and metadata is refreshed every second so pattern subscriptions find new topics soon. A member
/// that dies without leaving (a crash, SIGKILL) is noticed after the 6 s session timeout (Kafka's
/// smallest by default) rather than librdkafka's 45 s, so its replacement takes over quickly.
pub fn consumer_config(cfg: &KafkaConfig, group: &str, pace: Pace) -> ClientConfig {
    let mut config = base_config(cfg);
    config
        .set("group.id", group_id(cfg, group))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", pace.fetch_wait_ms())
        .set("heartbeat.interval.ms", "2000")
        .set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// The group id of `group` (`<service>-<purpose>`): the name itself under the default topic
/// prefix; `<prefix>.<group>` under another, so environments (and tests) that share a broker with
/// their own topic prefix do not share consumer groups either.
pub fn group_id(cfg: &KafkaConfig, group: &str) -> String {
    if cfg.topic_prefix == DEFAULT_PREFIX { group.to_owned() } else { format!("{}.{group}", cfg.topic_prefix) }
}

/// A consumer in `group` on the live path ([`Pace::Live`]), subscribed by pattern to every
/// version of the `domains`' topics ([`topic_pattern`]; dead-letter topics are not matched).
pub fn consumer(cfg: &KafkaConfig, group: &str, domains: &[&str]) -> anyhow::Result<StreamConsumer> {
    consumer_paced(cfg, group, domains, Pace::Live)
}

/// [`consumer`] at another [`Pace`].
pub fn consumer_paced(cfg: &KafkaConfig, group: &str, domains: &[&str], pace: Pace) -> anyhow::Result<StreamConsumer> {
    validate_prefix(&cfg.topic_prefix)?;
    let consumer: StreamConsumer = consumer_config(cfg, group, pace)
        .create()
        .with_context(|| format!("cannot create kafka consumer group {group} for {}", cfg.brokers))?;
    let patterns: Vec<String> = domains.iter().map(|d| cfg.pattern(d)).collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    consumer.subscribe(&patterns).with_context(|| format!("cannot subscribe kafka consumer group {group}"))?;
    Ok(consumer)
}

fn admin(cfg: &KafkaConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    base_config(cfg).create().with_context(|| format!("cannot create a kafka admin client for {}", cfg.brokers))
}

/// Fetches the cluster's topic names, failing within [`CONNECT_TIMEOUT`] with an error naming
/// the brokers when none answers.
async fn topic_names(
    admin: AdminClient<DefaultClientContext>,
    brokers: &str,
) -> anyhow::Result<(AdminClient<DefaultClientContext>, BTreeSet<String>)> {
    let fetched = tokio::task::spawn_blocking(move || {
        let names = admin
            .inner()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect::<BTreeSet<_>>());
        names.map(|names| (admin, names))
    })
    .await
    .context("kafka metadata task failed")?;
    fetched.with_context(|| {
        format!("cannot reach the Kafka brokers at {brokers} (no metadata within {}s)", CONNECT_TIMEOUT.as_secs())
    })
}

/// Creates the topics of `domains` and their dead-letter topics when missing, with the
/// configured partitions and replication; a topic that exists (or is created by someone else
/// meanwhile) is fine. Returns the topics it created. Fails within about [`CONNECT_TIMEOUT`]
/// when no broker answers.
pub async fn ensure_topics(cfg: &KafkaConfig, domains: &[&str]) -> anyhow::Result<Vec<String>> {
    validate_prefix(&cfg.topic_prefix)?;
    let (_, created) = ensure_topics_with(admin(cfg)?, cfg, domains).await?;
    Ok(created)
}

/// [`ensure_topics`] with an admin client the caller keeps.
async fn ensure_topics_with(
    admin: AdminClient<DefaultClientContext>,
    cfg: &KafkaConfig,
    domains: &[&str],
) -> anyhow::Result<(AdminClient<DefaultClientContext>, Vec<String>)> {
    let (admin, existing) = topic_names(admin, &cfg.brokers).await?;
    let wanted: Vec<String> = domains
        .iter()
        .map(|d| cfg.topic(d))
        .flat_map(|t| [dlq_topic(&t), t])
        .filter(|t| !existing.contains(t))
        .collect();
    if wanted.is_empty() {
        return Ok((admin, Vec::new()));
    }
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|t| NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(i32::from(cfg.replication))))
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .with_context(|| format!("cannot create kafka topics {wanted:?} at {}", cfg.brokers))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => {
                tracing::info!(topic = %topic, partitions = cfg.partitions, "kafka topic created");
                created.push(topic);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create kafka topic {topic} at {}: {code}", cfg.brokers),
        }
    }
    Ok((admin, created))
}

/// How often [`watch_topics`] looks for the topics.
pub const TOPIC_WATCH: Duration = Duration::from_secs(2);

/// Looks every `every` for the topics of `domains` and creates those missing, until `shutdown`
/// (then returns no topics) or until it had to create one: then the broker lost them (it came back
/// empty, or they were deleted), and it returns the topics it created. The clients that knew the
/// old topics must then be made anew: librdkafka does not follow a topic created again under the
/// same name (consumers keep reporting it unknown, confluentinc/librdkafka#4898), and its metadata
/// cache has crashed the process on such topics (#4964, #5280). A broker that does not answer is
/// waited for.
pub async fn watch_topics(
    cfg: &KafkaConfig,
    domains: &[&str],
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<String>> {
    validate_prefix(&cfg.topic_prefix)?;
    let mut admin = admin(cfg)?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Vec::new()),
            _ = tokio::time::sleep(every) => {}
        }
        // The admin client comes back from a failed check only through a new one.
        match ensure_topics_with(admin, cfg, domains).await {
            Ok((kept, created)) if created.is_empty() => admin = kept,
            Ok((_, created)) => return Ok(created),
            Err(e) => {
                crate::warn_throttled!(error = format!("{e:#}"), "cannot check the kafka topics; will look again");
                admin = self::admin(cfg)?;
            }
        }
    }
}

/// Deletes topics (tests and operators); a topic that does not exist is fine.
pub async fn delete_topics(cfg: &KafkaConfig, topics: &[&str]) -> anyhow::Result<()> {
    let admin = admin(cfg)?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.delete_topics(topics, &opts).await.context("cannot delete kafka topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => anyhow::bail!("cannot delete kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sweeps: the stores with unfinished work (the relay is in `relay.rs`)

/// Lists the stores a sweep looks at: those that may have unfinished work ([`backlog`]), never
/// every store of the chain.
pub type StoreLister = Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<String>>> + Send + Sync>;

/// The stores whose `schema` outbox head is past `group`'s offset, listed anew on every call in
/// one statement ([`pg::stores_behind`]): what the relay's sweep drains (group [`RELAY_GROUP`]) and
/// a stall sweep looks at. A chain at rest lists none.
pub fn backlog(pool: PgPool, schema: &'static str, group: &'static str) -> StoreLister {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let behind = pg::stores_behind(&pool, schema, group).await?;
            let events: u64 = behind.iter().map(|b| b.head.saturating_sub(b.position)).sum();
            if group == RELAY_GROUP {
                metrics::gauge!("redstore_outbox_backlog_events", "outbox" => schema).set(events as f64);
            } else {
                metrics::gauge!("redstore_consumer_lag_events", "group" => group, "source" => schema)
                    .set(events as f64);
            }
            Ok(behind.into_iter().map(|b| b.store_id).collect())
        })
    })
}

/// A consumer as its stall sweep sees it, per store.
#[tonic::async_trait]
pub trait Stalls: Send + Sync {
    /// Where the consumer stands for the store (its offset, its hash's version), and whether its
    /// source (the outbox, the event log) holds events after that.
    async fn position(&self, store_id: &str) -> Result<(u64, bool)>;
    /// Brings the store up to its source, without Kafka.
    async fn fill(&self, store_id: &str) -> Result<()>;
    /// Told of the listed stores a look found caught up, with their positions: a consumer whose
    /// position the lister cannot see (the stock cache's, in Redis) records them, so that the
    /// lister stops naming them.
    async fn caught_up(&self, _stores: Vec<(String, u64)>) -> Result<()> {
        Ok(())
    }
}

/// How often [`sweep_stalled`] looks.
pub const STALL_SWEEP: Duration = Duration::from_secs(2);

/// Every [`STALL_SWEEP`] until `shutdown`, fills from its source each store whose position has
/// not moved since the last look while the source was ahead of it: events a broker lost (it came
/// back empty) that no later event of the store reveals as a gap, since the store went quiet, or
/// a consumer that gets nothing at all. A store whose position moves is left to Kafka. It looks
/// only at the stores `stores` lists (those with a backlog, [`backlog`]), and remembers only
/// those behind: at rest it costs one statement a look. `what` names the consumer in the log.
pub async fn sweep_stalled(
    stores: StoreLister,
    stalls: Arc<dyn Stalls>,
    what: &'static str,
    shutdown: CancellationToken,
) {
    let mut behind: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(STALL_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let listed = match stores().await {
            Ok(listed) => listed,
            Err(e) => {
                crate::warn_throttled!(error = %e, consumer = what, "a stall sweep cannot list the stores");
                continue;
            }
        };
        // A store no longer listed has no backlog: nothing to remember of it.
        let listed_set: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        behind.retain(|store, _| listed_set.contains(store.as_str()));
        let mut caught_up = Vec::new();
        for store_id in &listed {
            let looked = async {
                let (position, ahead) = stalls.position(store_id).await?;
                if !ahead {
                    behind.remove(store_id);
                    caught_up.push((store_id.clone(), position));
                } else if behind.get(store_id) == Some(&position) {
                    behind.remove(store_id);
                    stalls.fill(store_id).await?;
                } else {
                    behind.insert(store_id.clone(), position);
                }
                Ok::<_, crate::Error>(())
            };
            if let Err(e) = looked.await {
                crate::warn_throttled!(error = %e, store_id = %store_id, consumer = what, "a stall sweep will look at the store again");
            }
        }
        if let Err(e) = stalls.caught_up(caught_up).await {
            crate::warn_throttled!(error = %e, consumer = what, "a stall sweep cannot record the stores it found caught up");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers

/// Decodes a message's value as an event envelope that has an event id and a store id.
pub fn decode_event(payload: Option<&[u8]>) -> anyhow::Result<EventEnvelope> {
    let payload = payload.context("the message has no value")?;
    let envelope = EventEnvelope::decode(payload).context("the value is not a redstore.events.v1.EventEnvelope")?;
    anyhow::ensure!(!envelope.event_id.is_empty(), "the event envelope has no event_id");
    anyhow::ensure!(!envelope.store_id.is_empty(), "the event envelope has no store_id");
    Ok(envelope)
}

/// Consumes until `shutdown`: each message is decoded and handed to `handler` (up to
/// [`HANDLER_ATTEMPTS`] times, with a short backoff); a message that cannot be decoded, or whose
/// handler still fails, is copied to `<topic>.dlq` with the headers `error`, `original-topic`,
/// `original-partition` and `original-offset` (and its own). Only then is its offset committed, so
/// a poison message never blocks its partition and a crash before the commit redelivers the
/// message (the handler must be idempotent, e.g. by event id).
///
/// If the dead-letter topic cannot be written, the loop retries it (with backoff) rather than
/// skip the message. On shutdown the offsets done are committed synchronously, and the consumer
/// leaves its group.
pub async fn consume<H>(
    consumer: StreamConsumer,
    dlq_producer: Producer,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(EventEnvelope) -> BoxFuture<'static, Result<()>> + Send + Sync,
{
    consume_batches(consumer, dlq_producer, None, handler, None, shutdown).await
}

/// Lets a consumer stop fetching while its topics are quiet. A broker that holds every fetch for
/// the whole wait (tansu does) costs an idle consumer a fetch every few milliseconds
/// ([`Pace::Live`]); paused, it costs none. After `after` without a message (`at_most` after it
/// starts) the consumer pauses its partitions; it resumes at the next hint that events are
/// coming, or after `at_most` in any case (a hint lost, a partition assigned since).
pub struct Quiet {
    /// Woken as changes commit, before the relay publishes them ([`commit_hints`]).
    pub hints: Arc<tokio::sync::Notify>,
    pub after: Duration,
    pub at_most: Duration,
}

impl Quiet {
    /// The live and bulk consumers' quiet: pause after a second without a message, fetch again
    /// at the next commit's hint or within ten seconds.
    pub fn on(hints: Arc<tokio::sync::Notify>) -> Self {
        Self { hints, after: Duration::from_secs(1), at_most: Duration::from_secs(10) }
    }
}

/// A hint per commit to `<schema>`'s outbox: `LISTEN redstore_<schema>` (the notification every
/// writer sends after it commits; reconnecting, and hinting once, when the connection is lost),
/// until `shutdown`. For [`Quiet`]: the commit comes before the relay publishes the event, so a
/// paused consumer is fetching again by the time the event is on the broker. Takes one of the
/// pool's connections for as long as it runs.
pub fn commit_hints(pool: PgPool, schema: &'static str, shutdown: CancellationToken) -> Arc<tokio::sync::Notify> {
    let hints = Arc::new(tokio::sync::Notify::new());
    let wakeups = Arc::new(Wakeups::default());
    tokio::spawn(listen(pool, schema, wakeups.clone(), shutdown.clone()));
    let forward = hints.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wakeups.notify.notified() => {
                    // Which stores does not matter here: any commit may be on this consumer's partitions.
                    wakeups.stores.lock().clear();
                    wakeups.all.store(false, Ordering::Release);
                    forward.notify_one();
                }
            }
        }
    });
    hints
}

/// A consumer's [`Quiet`] as it goes: whether its partitions are paused, and when its timer acts.
struct Quieting {
    quiet: Quiet,
    paused: bool,
    /// Fetching: when to pause (no message since). Paused: when to resume in any case.
    due: tokio::time::Instant,
}

impl Quieting {
    /// Fetching; the first pause no sooner than `at_most`, as joining the group and the backlog
    /// come first.
    fn new(quiet: Quiet) -> Self {
        let due = tokio::time::Instant::now() + quiet.at_most;
        Self { quiet, paused: false, due }
    }

    /// A message or a hint: events are coming. Fetch (again), and pause only after `after`
    /// without another.
    fn heard(&mut self, consumer: &StreamConsumer) {
        if self.paused {
            set_paused(consumer, false);
            self.paused = false;
        }
        self.due = tokio::time::Instant::now() + self.quiet.after;
    }

    /// The timer: pause when fetching, resume when paused.
    fn timer(&mut self, consumer: &StreamConsumer) {
        if self.paused {
            self.heard(consumer);
        } else {
            set_paused(consumer, true);
            self.paused = true;
            self.due = tokio::time::Instant::now() + self.quiet.at_most;
        }
    }
}

/// Pauses or resumes every partition assigned to the consumer now.
fn set_paused(consumer: &StreamConsumer, paused: bool) {
    let assigned = match consumer.assignment() {
        Ok(assigned) if assigned.count() > 0 => assigned,
        Ok(_) => return,
        Err(e) => {
            crate::warn_throttled!(error = %e, "kafka consumer cannot read its assignment");
            return;
        }
    };
    let done = if paused { consumer.pause(&assigned) } else { consumer.resume(&assigned) };
    if let Err(e) = done {
        crate::warn_throttled!(error = %e, paused, "kafka consumer cannot pause or resume its partitions");
        return;
    }
    tracing::debug!(paused, partitions = assigned.count(), "kafka consumer quiet");
    if !paused && let Some(p) = assigned.elements().first() {
        // librdkafka fetches a resumed partition when its broker thread next wakes, which with
        // nothing else to do is up to a second later; any request to the broker wakes it now. The
        // answer does not matter (a broker that is down makes this wait its short timeout).
        let _ = consumer.fetch_watermarks(p.topic(), p.partition(), Duration::from_millis(100));
    }
}

/// Handles the events of many messages at once (one transaction for all, say).
pub type BatchHandler = Box<dyn Fn(Vec<EventEnvelope>) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// How many messages already received one batch takes.
pub const CONSUME_BATCH: usize = 500;

/// [`consume`], but the messages already waiting (up to [`CONSUME_BATCH`]) are handed to `batch`
/// together. When `batch` fails, the messages are handled one by one by `handler`, with its
/// retries and dead-lettering, so a poison event still ends in the DLQ alone; undecodable
/// messages are dead-lettered either way. With `quiet`, the consumer stops fetching while its
/// topics are quiet ([`Quiet`]).
pub async fn consume_batches<H>(
    consumer: StreamConsumer,
    dlq_producer: Producer,
    batch: Option<BatchHandler>,
    handler: H,
    quiet: Option<Quiet>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(EventEnvelope) -> BoxFuture<'static, Result<()>> + Send + Sync,
{
    let mut done: HashMap<(String, i32), i64> = HashMap::new();
    // Offsets handled but not committed yet, and when they are due.
    let mut uncommitted = false;
    let mut commit_at = tokio::time::Instant::now();
    let mut errors = 0u32;
    let mut unknown = UnknownTopics::default();
    let hints = quiet.as_ref().map(|q| q.hints.clone());
    let mut quieting = quiet.map(Quieting::new);
    'consuming: loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(commit_at), if uncommitted => {
                commit_offsets(&consumer, &done, CommitMode::Async);
                // Only what is handled from now on: an offset kept across a rebalance could
                // otherwise rewind a partition that came back after another member moved it on.
                done.clear();
                uncommitted = false;
                continue;
            }
            _ = async {
                match &hints {
                    Some(hints) => hints.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(q) = &mut quieting {
                    q.heard(&consumer);
                }
                continue;
            }
            _ = tokio::time::sleep_until(quieting.as_ref().map_or_else(tokio::time::Instant::now, |q| q.due)),
                if quieting.is_some() => {
                if let Some(q) = &mut quieting {
                    q.timer(&consumer);
                }
                continue;
            }
            received = consumer.recv() => received.map(|m| m.detach()),
        };
        if let Some(q) = &mut quieting {
            q.heard(&consumer);
        }
        let first = match received {
            Ok(msg) => {
                errors = 0;
                unknown = UnknownTopics::default();
                msg
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                crate::warn_throttled!(error = %e, "kafka consumer error");
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                    && unknown.observe(tokio::time::Instant::now())
                {
                    // Closing leaves a group on a broker that may not know it any more: not waited
                    // for, the caller makes a new client rather than wait on this one.
                    drop(tokio::task::spawn_blocking(move || drop(consumer)));
                    anyhow::bail!(
                        "the kafka consumer's topics stayed unknown to it for {}s: its client must be made anew",
                        STALE_SUBSCRIPTION.as_secs()
                    );
                }
                let pause = Duration::from_millis(100 * u64::from(errors.min(20)));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let mut msgs = vec![first];
        if batch.is_some() {
            // What has arrived already, without waiting for more.
            while msgs.len() < CONSUME_BATCH {
                match consumer.recv().now_or_never() {
                    Some(Ok(msg)) => msgs.push(msg.detach()),
                    _ => break,
                }
            }
        }
        let decoded: Vec<std::result::Result<EventEnvelope, String>> =
            msgs.iter().map(|m| decode_event(m.payload()).map_err(|e| format!("{e:#}"))).collect();
        // A span per message, in the trace of the change that made it; a batch's spans last as
        // long as the batch.
        let spans: Vec<tracing::Span> = msgs.iter().map(process_span).collect();
        let batched = match &batch {
            Some(batch) if msgs.len() > 1 => {
                let events: Vec<EventEnvelope> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
                match batch(events).instrument(spans[0].clone()).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, messages = msgs.len(), "a batch of events failed; handling them one by one");
                        false
                    }
                }
            }
            _ => false,
        };
        for ((msg, event), span) in msgs.iter().zip(decoded).zip(spans) {
            let outcome = match event {
                Ok(_) if batched => Handled::Done,
                Ok(event) => handle(&handler, event, &shutdown).instrument(span).await,
                Err(reason) => Handled::Poison(reason),
            };
            match outcome {
                Handled::Done => {}
                // Shut down while waiting out a transient failure: the offset stays uncommitted.
                Handled::Stopped => break 'consuming,
                Handled::Poison(reason) => {
                    if !dead_letter(&dlq_producer, msg, &reason, &shutdown).await {
                        // Shut down before the dead-letter copy was stored: the offset stays uncommitted.
                        break 'consuming;
                    }
                }
            }
            // Committed with the others within COMMIT_EVERY (or at shutdown): one commit request
            // per message cost the broker more than the message. A crash before it redelivers
            // what followed the last commit, which handlers deduplicate by event id.
            done.insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
            if !uncommitted {
                uncommitted = true;
                commit_at = tokio::time::Instant::now() + COMMIT_EVERY;
            }
        }
    }
    // The last commit waits for the broker and closing waits for the group to be left, each for
    // as long as it takes (forever, with a broker that is gone): keep both off the async workers.
    tokio::task::spawn_blocking(move || {
        commit_offsets(&consumer, &done, CommitMode::Sync);
        drop(consumer);
    })
    .await
    .context("closing the kafka consumer")?;
    Ok(())
}

/// How long a consumer may report its subscribed topics unknown, without a break of
/// [`UNKNOWN_TOPICS_BREAK`] and without receiving a message, before [`consume_batches`] gives up on
/// it. Topics that exist again (created by [`watch_topics`] or another process) are found within
/// a few metadata refreshes by a healthy client; a client that knew the topics before the broker
/// lost them keeps reporting them unknown (confluentinc/librdkafka#4898).
pub const STALE_SUBSCRIPTION: Duration = Duration::from_secs(15);
/// A pause between two "topic unknown" errors after which they no longer count as one run.
const UNKNOWN_TOPICS_BREAK: Duration = Duration::from_secs(6);

/// A run of "subscribed topic unknown" errors.
#[derive(Default)]
struct UnknownTopics {
    /// When the run began, and the last error of it.
    run: Option<(tokio::time::Instant, tokio::time::Instant)>,
}

impl UnknownTopics {
    /// Counts an error at `now`; true once the run has lasted [`STALE_SUBSCRIPTION`].
    fn observe(&mut self, now: tokio::time::Instant) -> bool {
        let began = match self.run {
            Some((began, last)) if now.duration_since(last) < UNKNOWN_TOPICS_BREAK => began,
            _ => now,
        };
        self.run = Some((began, now));
        now.duration_since(began) >= STALE_SUBSCRIPTION
    }
}

/// The span of a message's processing, after OpenTelemetry's messaging conventions, child of the
/// `traceparent` header its relay sent.
fn process_span(msg: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        target: "redstore::trace",
        "process",
        otel.name = %format_args!("{} process", msg.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %msg.topic(),
        messaging.destination.partition.id = msg.partition(),
        messaging.kafka.offset = msg.offset(),
    );
    if let Some(traceparent) = header_str(msg.headers(), header::TRACEPARENT) {
        crate::trace::set_parent(&span, traceparent);
    }
    span
}

/// How handling one message ended.
enum Handled {
    Done,
    /// Undecodable, or failing for a reason retrying will not cure: dead-letter it.
    Poison(String),
    /// Shutdown came while a transient failure was being waited out.
    Stopped,
}

/// Runs the handler. A permanent failure is retried up to [`HANDLER_ATTEMPTS`] times and then
/// dead-lettered; a transient one ([`crate::Error::is_transient`]: a database or cache that is
/// down, a lost race) is waited out with capped backoff for as long as it lasts — a backend
/// outage pauses the partition, it never dead-letters live events.
async fn handle<H>(handler: &H, event: EventEnvelope, shutdown: &CancellationToken) -> Handled
where
    H: Fn(EventEnvelope) -> BoxFuture<'static, Result<()>> + Send + Sync,
{
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match handler(event.clone()).await {
            Ok(()) => return Handled::Done,
            Err(e) if e.is_transient() => {
                crate::warn_throttled!(event_id = %event.event_id, error = %e, "event handler waits for a backend");
            }
            Err(e) if attempt >= HANDLER_ATTEMPTS => {
                return Handled::Poison(format!("handler failed {attempt} times, last: {e}"));
            }
            Err(e) => {
                crate::warn_throttled!(event_id = %event.event_id, attempt, error = %e, "event handler failed; retrying");
                attempt += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Handled::Stopped,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 3).min(MAX_BACKOFF);
    }
}

/// Copies a message to `<topic>.dlq`; true once stored, false if `shutdown` came first.
async fn dead_letter(dlq: &Producer, msg: &OwnedMessage, reason: &str, shutdown: &CancellationToken) -> bool {
    let topic = dlq_topic(msg.topic());
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = msg.headers() {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let headers = [
            (header::ERROR, reason),
            (header::ORIGINAL_TOPIC, msg.topic()),
            (header::ORIGINAL_PARTITION, partition.as_str()),
            (header::ORIGINAL_OFFSET, offset.as_str()),
        ]
        .into_iter()
        .fold(headers, |headers, (key, value)| headers.insert(Header { key, value: Some(value) }));
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return false,
            sent = dlq.send(record, Duration::from_secs(5)) => sent,
        };
        match sent {
            Ok(_) => {
                tracing::warn!(
                    topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), dlq = %topic, error = reason,
                    "event dead-lettered"
                );
                return true;
            }
            Err(e) => {
                tracing::error!(dlq = %topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot write to the dead-letter topic");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Commits the offsets done on the partitions still assigned (a partition that
/// moved to another member is that member's to commit).
fn commit_offsets(consumer: &StreamConsumer, done: &HashMap<(String, i32), i64>, mode: CommitMode) {
    let assigned = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kafka assignment; offset commit skipped");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in done {
        if assigned.find_partition(topic, *partition).is_some()
            && let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
        {
            tracing::warn!(topic = %topic, partition, error = %e, "cannot add an offset to a commit");
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, mode)
    {
        crate::warn_throttled!(error = %e, "kafka offset commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_convention() {
        assert_eq!(topic_name("redstore", "sales"), "redstore.sales.v1");
        assert_eq!(topic_name("redstore", "inventory"), "redstore.inventory.v1");
        assert_eq!(dlq_topic("redstore.sales.v1"), "redstore.sales.v1.dlq");
        let cfg = KafkaConfig::new("b:9092");
        assert_eq!(cfg.topic_prefix, "redstore");
        assert_eq!((cfg.partitions, cfg.replication), (3, 1));
        assert_eq!(cfg.topic("sales"), "redstore.sales.v1");
    }

    #[test]
    fn clients_reach_brokers_as_the_security_says() {
        let plain = KafkaConfig::new("b:9092");
        assert_eq!(base_config(&plain).get("security.protocol"), Some("plaintext"));
        assert_eq!(base_config(&plain).get("sasl.password"), None);
        let mut managed = KafkaConfig::new("b:9093");
        managed.security = KafkaSecurity {
            tls: true,
            ca_file: Some("/etc/kafka/ca.pem".into()),
            sasl: Some(SaslLogin { mechanism: "SCRAM-SHA-512".into(), username: "rs".into(), password: "pw".into() }),
        };
        for config in [base_config(&managed), producer_config(&managed), consumer_config(&managed, "g", Pace::Bulk)] {
            assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
            assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!((config.get("sasl.username"), config.get("sasl.password")), (Some("rs"), Some("pw")));
            assert!(!format!("{config:?}").contains("pw\""), "librdkafka's settings print no password");
        }
        assert!(!format!("{managed:?}").contains("\"pw\""), "nor does ours: {managed:?}");
        let tls_only = KafkaSecurity { tls: true, ..KafkaSecurity::default() };
        assert_eq!(tls_only.protocol(), "ssl");
        let sasl_only = KafkaSecurity { sasl: managed.security.sasl.clone(), ..KafkaSecurity::default() };
        assert_eq!(sasl_only.protocol(), "sasl_plaintext");
    }

    #[test]
    fn pattern_matches_versions_and_not_dead_letters() {
        let cfg = KafkaConfig::new("b:9092");
        let pattern = cfg.pattern("sales");
        assert_eq!(pattern, r"^redstore\.sales\.v[0-9]+$");
        let re = regex::Regex::new(&pattern).expect("regex");
        assert!(re.is_match("redstore.sales.v1"));
        assert!(re.is_match("redstore.sales.v12"));
        assert!(!re.is_match("redstore.sales.v1.dlq"));
        assert!(!re.is_match("redstore.inventory.v1"));
        assert!(!re.is_match("redstoreXsales.v1"));
        assert!(!re.is_match("xredstore.sales.v1"));
        assert!(!re.is_match("redstore.sales.v"));
    }

    #[test]
    fn pattern_escapes_the_prefix() {
        let pattern = topic_pattern("a.b-c_d", "sales");
        assert_eq!(pattern, r"^a\.b-c_d\.sales\.v[0-9]+$");
        let re = regex::Regex::new(&pattern).expect("regex");
        assert!(re.is_match("a.b-c_d.sales.v1"));
        assert!(!re.is_match("aXb-c_d.sales.v1"));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("redstore").is_ok());
        assert!(validate_prefix("t0193a.b-c_d").is_ok());
        for bad in ["", ".x", "x.", "a b", "a/b", "ä", &"x".repeat(201)] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_carry_type_id_and_traceparent_when_known() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            event_headers("sale.completed", "id-1", tp),
            vec![("event-type", "sale.completed"), ("event-id", "id-1"), ("traceparent", tp)]
        );
        assert_eq!(
            event_headers("sale.completed", "id-1", ""),
            vec![("event-type", "sale.completed"), ("event-id", "id-1")]
        );
        let owned = owned_headers(&event_headers("sale.completed", "id-1", tp));
        assert_eq!(owned.count(), 3);
        assert_eq!(header_str(Some(&owned), "event-type"), Some("sale.completed"));
        assert_eq!(header_str(Some(&owned), "event-id"), Some("id-1"));
        assert_eq!(header_str(Some(&owned), "traceparent"), Some(tp));
        assert_eq!(header_str(Some(&owned), "error"), None);
        assert_eq!(header_str::<OwnedHeaders>(None, "event-id"), None);
    }

    #[test]
    fn a_consumer_is_stale_after_a_long_unbroken_run_of_unknown_topics() {
        let t0 = tokio::time::Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut unknown = UnknownTopics::default();
        // Every two seconds (each metadata refresh), for as long as the stale client lives.
        for s in (0..STALE_SUBSCRIPTION.as_secs()).step_by(2) {
            assert!(!unknown.observe(at(s)), "not yet at {s}s");
        }
        assert!(unknown.observe(at(STALE_SUBSCRIPTION.as_secs())));
        // Errors with long pauses between them (a broker down now and then) are separate runs.
        let mut unknown = UnknownTopics::default();
        for s in (0..60).step_by(10) {
            assert!(!unknown.observe(at(s)), "a new run at {s}s");
        }
    }

    #[test]
    fn decoding_rejects_what_is_not_an_event() {
        assert!(decode_event(None).is_err());
        assert!(decode_event(Some(&[0xff, 0xff, 0xff])).is_err());
        // An empty value decodes as an empty envelope: no id, so not an event.
        assert!(decode_event(Some(&[])).is_err());
        let envelope = EventEnvelope { event_id: "e".into(), store_id: "s".into(), ..Default::default() };
        let decoded = decode_event(Some(&envelope.encode_to_vec())).expect("decodes");
        assert_eq!(decoded, envelope);
    }
}
