//! The transactional-outbox relay: PostgreSQL's `<schema>.outbox` → Kafka, in each store's order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use rdkafka::producer::FutureRecord;
use redstore_proto::events::EventEnvelope;
use sqlx::Row as _;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    DOMAINS, KafkaConfig, MAX_BACKOFF, MIN_BACKOFF, PACED_DRAIN, Producer, RELAY_BATCH, RELAY_GROUP, RELAY_PACE_BULK,
    RELAY_PACE_LIVE, RELAY_SWEEP, StoreLister, event_headers, owned_headers, validate_prefix,
};
use crate::pg::{self, PgPool};

/// How the relay paces itself; [`run_relay`] uses the defaults.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// How often the listed stores are drained, whatever the notifications said.
    pub sweep: Duration,
    /// Outbox rows published per transaction.
    pub batch: u32,
    /// After a busy drain of a store (at least [`PACED_DRAIN`] events), how long from its start
    /// the store's next drain waits; zero: it does not.
    pub pace: Duration,
}

impl RelayOptions {
    /// The defaults, paced for who waits on the schema's events: inventory's feed the live path
    /// (stock cache → terminals), so a busy store's drains are [`RELAY_PACE_LIVE`] apart; sales'
    /// feed analytics rollups, [`RELAY_PACE_BULK`].
    pub fn for_schema(schema: &str) -> Self {
        let pace = if schema == "inventory" { RELAY_PACE_LIVE } else { RELAY_PACE_BULK };
        Self { pace, ..Self::default() }
    }
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self { sweep: RELAY_SWEEP, batch: RELAY_BATCH, pace: Duration::ZERO }
    }
}

/// Wake-ups from the LISTEN task: the stores named by notifications (a set, so a burst of
/// notifications for one store while the relay is busy costs one drain) and "everyone" after a
/// (re)connect, when notifications may have been missed.
#[derive(Default)]
pub(super) struct Wakeups {
    pub(super) stores: parking_lot::Mutex<BTreeSet<String>>,
    pub(super) all: AtomicBool,
    pub(super) notify: tokio::sync::Notify,
}

impl Wakeups {
    fn store(&self, store: &str) {
        self.stores.lock().insert(store.to_owned());
        self.notify.notify_one();
    }

    fn all(&self) {
        self.all.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

const BUSY_RETRY: Duration = Duration::from_millis(100);

/// Publishes `<schema>.outbox` (schema `"inventory"` or `"sales"`) to the topic `cfg.topic(schema)`
/// until `shutdown`, with [`RelayOptions::default`]. See [`run_relay_with`].
pub async fn run_relay(
    pool: PgPool,
    producer: Producer,
    cfg: KafkaConfig,
    schema: &'static str,
    stores: StoreLister,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_relay_with(pool, producer, cfg, schema, stores, RelayOptions::for_schema(schema), shutdown).await
}

/// The outbox relay. It is woken per store by `LISTEN redstore_<schema>` (a notification's payload
/// `store:seq` names the store), so the live path has no polling delay, and each `opts.sweep`
/// drains the stores `stores` lists, as a safety net for missed notifications: in a deployment,
/// [`super::backlog`] over [`RELAY_GROUP`], the stores whose outbox head is past their cursor (one
/// statement; none at rest).
///
/// Draining a store happens in one store-scoped transaction per batch: it takes the advisory lock
/// `relay:<schema>:<store>` (another relay holding it means the store is being drained: it is
/// retried shortly), reads the rows after the store's cursor ([`RELAY_GROUP`]) in sequence order,
/// produces them in that order keyed by the store id, awaits every delivery, moves the cursor past
/// the delivered prefix, and commits. A store's rows become visible in sequence order (its
/// sequence row lock is held until commit), so nothing can appear behind the cursor. A failed
/// delivery leaves its rows unsent (and the relay backs off); a relay killed at any point loses
/// nothing and at worst publishes some events again, which consumers drop by event id.
///
/// A drain that published at least [`PACED_DRAIN`] events makes the store's next drain wait until
/// `opts.pace` after it began (notifications and sweeps meanwhile are held, not lost): under a
/// burst, fewer and larger transactions and produce requests; a quiet store is never held.
///
/// The pool must allow one connection more than the relay's drains use: the listener keeps one.
/// Returns `Err` only for an invalid `schema` or topic prefix.
pub async fn run_relay_with(
    pool: PgPool,
    mut producer: Producer,
    cfg: KafkaConfig,
    schema: &'static str,
    stores: StoreLister,
    opts: RelayOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(DOMAINS.contains(&schema), "the outbox relay serves {DOMAINS:?}, not {schema:?}");
    validate_prefix(&cfg.topic_prefix)?;
    let topic = cfg.topic(schema);
    let wakeups = Arc::new(Wakeups::default());
    let listener = tokio::spawn(listen(pool.clone(), schema, wakeups.clone(), shutdown.clone()));
    let batch = opts.batch.max(1);
    let mut sweep = tokio::time::interval(opts.sweep.max(Duration::from_millis(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_due = false;
    let mut deferred: BTreeSet<String> = BTreeSet::new();
    let mut retry_at: Option<Instant> = None;
    let mut backing_off_until: Option<Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut paced: HashMap<String, Instant> = HashMap::new();
    tracing::info!(schema, topic = %topic, "outbox relay started");
    'run: loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break 'run,
            _ = sweep.tick() => sweep_due = true,
            _ = wakeups.notify.notified() => {}
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
        // A busy store's pace is forgotten once it is over, drained since or not: a store that
        // went quiet keeps nothing here.
        let now = Instant::now();
        paced.retain(|_, due| *due > now);
        let mut work: BTreeSet<String> = std::mem::take(&mut *wakeups.stores.lock());
        if wakeups.all.swap(false, Ordering::AcqRel) {
            sweep_due = true;
        }
        if sweep_due {
            sweep_due = false;
            match stores().await {
                Ok(all) => work.extend(all),
                Err(e) => tracing::warn!(schema, error = %e, "outbox relay cannot list the stores; will sweep again"),
            }
        }
        if backing_off_until.is_some_and(|until| until > Instant::now()) {
            // After a failure, notifications and sweeps wait for the backoff to end.
            deferred.append(&mut work);
            continue;
        }
        backing_off_until = None;
        if retry_at.is_some_and(|at| at <= Instant::now()) {
            retry_at = None;
            work.append(&mut deferred);
        }
        let mut work = work.into_iter();
        while let Some(store) = work.next() {
            // A store whose last drain was a busy one waits out the pace, counted from its start.
            if let Some(&due) = paced.get(&store) {
                if due > Instant::now() {
                    retry_by(&mut retry_at, due);
                    deferred.insert(store);
                    continue;
                }
                paced.remove(&store);
            }
            let started = Instant::now();
            let drained = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'run,
                drained = drain_store(&pool, &producer, &topic, schema, &store, batch) => drained,
            };
            match drained {
                Ok(Drain::Sent(0)) => {}
                Ok(Drain::Sent(n)) => {
                    backoff = MIN_BACKOFF;
                    if n >= PACED_DRAIN && !opts.pace.is_zero() {
                        paced.insert(store.clone(), started + opts.pace);
                    }
                    tracing::debug!(schema, store_id = %store, events = n, "outbox events published");
                }
                Ok(Drain::Busy) => {
                    deferred.insert(store);
                    retry_by(&mut retry_at, Instant::now() + BUSY_RETRY);
                }
                Err(e) => {
                    tracing::warn!(
                        schema, store_id = %store, error = format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay could not publish; the events stay unsent and will be retried"
                    );
                    // The broker (or the database) is likely down for every store: back off for all.
                    deferred.insert(store);
                    deferred.extend(work.by_ref());
                    retry_at = Some(Instant::now() + backoff);
                    backing_off_until = retry_at;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        tracing::error!(schema, code = ?code, reason = %reason, "kafka producer failed fatally; making a new one");
                        match super::producer(&cfg) {
                            Ok(p) => producer = p,
                            Err(e) => {
                                tracing::error!(schema, error = format!("{e:#}"), "cannot make a new kafka producer")
                            }
                        }
                    }
                }
            }
        }
    }
    listener.abort();
    // Stopping (a rolling update, a scale-down): what is in the outbox now goes out before the
    // process does, so the next relay does not start behind; whatever the time allows.
    let flush = async {
        let mut sent = 0;
        for store in stores().await.unwrap_or_default() {
            if let Ok(Drain::Sent(n)) = drain_store(&pool, &producer, &topic, schema, &store, batch).await {
                sent += n;
            }
        }
        sent
    };
    match tokio::time::timeout(FLUSH_ON_STOP, flush).await {
        Ok(sent) => tracing::info!(schema, events = sent, "outbox relay stopped; the outbox is flushed"),
        Err(_) => {
            tracing::warn!(schema, "outbox relay stopped before the outbox was flushed; the next relay sends the rest")
        }
    }
    Ok(())
}

/// How long a stopping relay spends publishing what is left in the outbox: within the Kafka
/// worker's own grace (`kafka_worker`), itself within the server's.
const FLUSH_ON_STOP: Duration = Duration::from_secs(3);

/// Makes the relay's next retry of deferred stores come no later than `at`.
fn retry_by(retry_at: &mut Option<Instant>, at: Instant) {
    *retry_at = Some(retry_at.map_or(at, |sooner| sooner.min(at)));
}

/// Keeps `LISTEN redstore_<schema>` open until `shutdown`, reconnecting with backoff; asks for a
/// full sweep after every (re)connect since notifications sent meanwhile are lost.
pub(super) async fn listen(pool: PgPool, schema: &'static str, wakeups: Arc<Wakeups>, shutdown: CancellationToken) {
    let channel = format!("redstore_{schema}");
    let mut backoff = MIN_BACKOFF;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "outbox relay cannot LISTEN; sweeping meanwhile");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        backoff = MIN_BACKOFF;
        wakeups.all();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = listener.try_recv() => next,
            };
            match next {
                Ok(Some(n)) => match n.payload().rsplit_once(':') {
                    Some((store, _)) => wakeups.store(store),
                    None => wakeups.all(),
                },
                // The connection was lost and re-established: notifications may have been missed.
                Ok(None) => wakeups.all(),
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "outbox relay lost its LISTEN connection");
                    break;
                }
            }
        }
    }
}

enum Drain {
    /// Published this many events (0: nothing was unsent).
    Sent(usize),
    /// Another relay holds the store's lock.
    Busy,
}

/// Publishes one store's unsent outbox rows, batch by batch, until none is left.
async fn drain_store(
    pool: &PgPool,
    producer: &Producer,
    topic: &str,
    schema: &'static str,
    store: &str,
    batch: u32,
) -> anyhow::Result<Drain> {
    let mut total = 0;
    loop {
        let mut tx = pg::store_tx(pool, store).await?;
        // The store's relay lock and cursor; and this transaction's commit does not wait for the WAL
        // flush: a cursor lost in a crash only means events published again, which consumers drop
        // by id. (The cursor is read here, not in a subquery of the scan's condition below: under
        // row-level security such a condition cannot bound the index scan, so it would read every
        // event of the store.)
        let (locked, cursor, _): (bool, i64, String) = sqlx::query_as(&format!(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)),
                    COALESCE((SELECT last_seq FROM platform.consumer_offsets
                              WHERE group_name = '{RELAY_GROUP}' AND topic = $2 AND store_id = $3), 0),
                    set_config('synchronous_commit', 'off', true)"
        ))
        .bind(format!("relay:{schema}:{store}"))
        .bind(schema)
        .bind(store)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            tx.rollback().await?;
            return Ok(Drain::Busy);
        }
        // That statement saw the database as of its start, before it took the lock: the lock's
        // last holder may have committed a later cursor in between. The scan, a statement of its
        // own, reads the cursor again (in its output, where it bounds nothing) and the rows at or
        // below it, which that holder sent, are skipped.
        let rows = sqlx::query(&format!(
            "SELECT event_id, store_seq, event_type, body,
                    (SELECT last_seq FROM platform.consumer_offsets
                     WHERE group_name = '{RELAY_GROUP}' AND topic = $4 AND store_id = $1)
             FROM {schema}.outbox
             WHERE store_id = $1 AND store_seq > $2 ORDER BY store_seq LIMIT $3"
        ))
        .bind(store)
        .bind(cursor)
        .bind(i64::from(batch))
        .bind(schema)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Drain::Sent(total));
        }
        let committed: Option<i64> = rows[0].try_get(4)?;
        let cursor = cursor.max(committed.unwrap_or(0));
        let mut failure: Option<String> = None;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(1)?;
            if seq <= cursor {
                continue;
            }
            let event_id: uuid::Uuid = row.try_get(0)?;
            let event_type: String = row.try_get(2)?;
            let mut body: Vec<u8> = row.try_get(3)?;
            let (trace_parent, age) = match EventEnvelope::decode(body.as_slice()) {
                Ok(mut envelope) => {
                    // Sent with its sequence, which the row may keep in its column only
                    // (`pg::outbox_event`); a body that has it goes as it is.
                    if envelope.store_seq != seq as u64 {
                        envelope.store_seq = seq as u64;
                        body = envelope.encode_to_vec();
                    }
                    (envelope.trace_parent.clone(), crate::metrics::event_age_seconds(&envelope))
                }
                Err(e) => {
                    // Published all the same: consumers dead-letter it rather than the relay stalling.
                    tracing::warn!(schema, store_id = store, store_seq = seq, error = %e, "outbox body is not an event envelope");
                    (String::new(), None)
                }
            };
            let event_id = event_id.to_string();
            // The publish is a span of the change's trace; consumers continue from it.
            let span = tracing::info_span!(
                target: "redstore::trace",
                "publish",
                otel.name = %format_args!("{topic} publish"),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation.type = "publish",
                messaging.destination.name = %topic,
                messaging.message.id = %event_id,
            );
            crate::trace::set_parent(&span, &trace_parent);
            let published = crate::trace::traceparent_of(&span);
            let trace_parent = if published.is_empty() { trace_parent } else { published };
            let headers = owned_headers(&event_headers(&event_type, &event_id, &trace_parent));
            let record = FutureRecord::to(topic).key(store).payload(body.as_slice()).headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((seq, age, delivery)),
                Err(e) => {
                    failure = Some(format!("cannot queue event {event_id} for {topic}: {e}"));
                    break;
                }
            }
        }
        // Every queued message is awaited (each resolves within message.timeout.ms), then the
        // cursor moves past the delivered prefix.
        let mut delivered: Option<i64> = None;
        let mut count = 0;
        for (seq, age, delivery) in deliveries {
            let outcome = delivery.await.map(drop).map_err(|e| e.to_string());
            match outcome {
                Ok(()) if failure.is_none() => {
                    delivered = Some(seq);
                    count += 1;
                    if let Some(age) = age {
                        metrics::histogram!("redstore_event_publish_lag_seconds").record(age);
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    failure.get_or_insert_with(|| format!("delivery of {topic} store {store} seq {seq} failed: {e}"));
                }
            }
        }
        if let Some(last) = delivered {
            sqlx::query(&format!(
                "INSERT INTO platform.consumer_offsets AS c (group_name, topic, store_id, last_seq)
                 VALUES ('{RELAY_GROUP}', $2, $1, $3)
                 ON CONFLICT (group_name, topic, store_id) DO UPDATE SET last_seq = greatest(c.last_seq, excluded.last_seq)"
            ))
            .bind(store)
            .bind(schema)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        total += count;
        if let Some(failure) = failure {
            anyhow::bail!(failure);
        }
        if rows.len() < batch as usize {
            return Ok(Drain::Sent(total));
        }
    }
}
