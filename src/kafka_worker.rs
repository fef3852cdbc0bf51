//! The Kafka side of a process, in a child process of its own: the outbox relays, the analytics
//! consumer and the stock-cache consumer, with every librdkafka client they use.
//!
//! Why a process: librdkafka 2.12.1 (the newest rdkafka-sys) crashes the whole process when a
//! broker comes back without the topics it had (an in-memory broker restarted, or a topic deleted
//! and created again). A fetch answered "unknown topic" with a current-leader tag and a zero topic
//! id becomes a metadata update with neither a topic name nor an id, and the main thread's
//! `rd_kafka_metadata_update_op` looks the NULL name up with `strcmp`; the metadata cache has
//! more crashes of the same family on topics that come back with a new id (confluentinc/librdkafka
//! #4964, #5280). No client setting avoids the fetch path, so the clients live where a crash costs
//! a restart of them alone: `redstore up` and `redstore serve` run `redstore kafka-worker` and
//! start it again whenever it ends, while sales and every other service go on in the parent. The
//! outbox in PostgreSQL holds every event, and the consumers fill what a broker lost from it, so
//! a restart of the worker loses nothing.
//!
//! The worker stops when its standard input closes: the parent closes it to stop the worker, and
//! the kernel closes it when the parent dies, however it dies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::InventoryStore;
use redstore_platform::kafka::{self, KafkaConfig};
use redstore_platform::telemetry::LogFormat;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Exit code of a worker that wants its clients made anew (the broker lost its topics): the
/// supervisor starts it again at once (sysexits' EX_TEMPFAIL).
pub const EXIT_RESTART: u8 = 75;
/// The subcommand that runs the worker.
pub const SUBCOMMAND: &str = "kafka-worker";
/// PostgreSQL connections of the worker: a LISTEN and a drain per relay, the analytics fold, its
/// sweep and its LISTEN for commit hints, the stock cache's reads of the event log and its LISTEN.
pub const WORKER_DB_POOL: u32 = 10;
/// How long a stopping worker gives its tasks to finish (consumers commit their offsets and leave
/// their groups) before it exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the supervisor waits for a worker it asked to stop before killing it.
const KILL_AFTER: Duration = Duration::from_secs(8);
/// A worker that ran this long before it ended is started again without waiting.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub kafka: KafkaConfig,
    /// The outboxes to relay: `inventory`, `sales`.
    pub relays: Vec<&'static str>,
    /// Analytics' consumer group (`analytics-rollups`).
    pub analytics: bool,
    /// The stock cache's consumer group (`inventory-cache`); needs `redis_url`.
    pub stock_cache: bool,
}

impl WorkerConfig {
    /// Whether there is anything to run.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty() && !self.analytics && !(self.stock_cache && self.redis_url.is_some())
    }

    /// The worker's command line after the program: the subcommand and what to run. The URLs go
    /// through the environment ([`Self::env`]), not the command line, which `ps` shows to all.
    fn args(&self, log_format: LogFormat) -> Vec<String> {
        let format = match log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        let mut args = vec!["--log-format".to_owned(), format.to_owned(), SUBCOMMAND.to_owned()];
        for relay in &self.relays {
            args.extend(["--relay".to_owned(), (*relay).to_owned()]);
        }
        if self.analytics {
            args.push("--analytics".to_owned());
        }
        if self.stock_cache {
            args.push("--stock-cache".to_owned());
        }
        args
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("REDSTORE_DATABASE_URL", self.database_url.clone()),
            ("REDSTORE_KAFKA_BROKERS", self.kafka.brokers.clone()),
            ("REDSTORE_KAFKA_TOPIC_PREFIX", self.kafka.topic_prefix.clone()),
            ("REDSTORE_KAFKA_PARTITIONS", self.kafka.partitions.to_string()),
            ("REDSTORE_KAFKA_REPLICATION", self.kafka.replication.to_string()),
        ];
        env.extend(crate::kafka_security::child_env(&self.kafka.security));
        if let Some(url) = &self.redis_url {
            env.push(("REDSTORE_REDIS_URL", url.clone()));
        }
        env
    }
}

/// How the supervisor starts a worker.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `redstore` binary.
    pub program: PathBuf,
    pub log_format: LogFormat,
    /// Told where the running worker serves its metrics.
    pub metrics: crate::metrics::WorkerMetrics,
}

/// The line a worker writes to its standard output, before anything else, naming where it serves
/// its metrics.
const METRICS_LINE: &str = "metrics-listen ";

// ---------------------------------------------------------------------------------------------
// The parent's side

/// Runs a worker for `config` until `shutdown`, starting it again whenever it ends: at once when it
/// asked for it ([`EXIT_RESTART`]) or ran a while, otherwise after a backoff (a broker still down,
/// a crash at start). On `shutdown`, closes the worker's standard input and waits for it to stop
/// (killing it after a few seconds).
pub fn supervise(launch: Launch, config: WorkerConfig, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let mut child = match tokio::process::Command::new(&launch.program)
                .args(config.args(launch.log_format))
                .envs(config.env())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                // Its own process group: a terminal's Ctrl-C reaches the parent, which stops it.
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
            {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(program = %launch.program.display(), error = %e, "cannot start the kafka worker");
                    if !pause(&shutdown, MAX_BACKOFF).await {
                        return;
                    }
                    continue;
                }
            };
            let stdin = child.stdin.take();
            if let Some(stdout) = child.stdout.take() {
                tokio::spawn(follow_stdout(stdout, launch.metrics.clone()));
            }
            let status = tokio::select! {
                status = child.wait() => status,
                _ = shutdown.cancelled() => {
                    drop(stdin);
                    match tokio::time::timeout(KILL_AFTER, child.wait()).await {
                        Ok(_) => {}
                        Err(_) => {
                            tracing::warn!("the kafka worker did not stop in time; killing it");
                            let _ = child.kill().await;
                        }
                    }
                    return;
                }
            };
            drop(stdin);
            launch.metrics.set(None);
            if shutdown.is_cancelled() {
                return;
            }
            let ran = started.elapsed();
            let wait = match &status {
                Ok(s) if s.code() == Some(i32::from(EXIT_RESTART)) => {
                    tracing::info!("kafka worker asked for new clients; starting it again");
                    Duration::ZERO
                }
                _ => {
                    tracing::error!(
                        status = ?status, ran_ms = ran.as_millis() as u64, retry_in_ms = backoff.as_millis() as u64,
                        "the kafka worker ended; starting it again (sales and the other services go on)"
                    );
                    if ran >= HEALTHY_RUN { Duration::ZERO } else { backoff }
                }
            };
            backoff = if wait.is_zero() { MIN_BACKOFF } else { (backoff * 2).min(MAX_BACKOFF) };
            if !pause(&shutdown, wait).await {
                return;
            }
        }
    })
}

/// Reads the worker's standard output: learns where it serves its metrics, and passes anything
/// else on to ours.
async fn follow_stdout(stdout: tokio::process::ChildStdout, metrics: crate::metrics::WorkerMetrics) {
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.strip_prefix(METRICS_LINE).and_then(|addr| addr.parse().ok()) {
            Some(addr) => metrics.set(Some(addr)),
            None => println!("{line}"),
        }
    }
}

/// Waits `wait`; false when `shutdown` came first.
async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// The worker's side

/// Runs the worker until its standard input closes (exit 0), until its clients must be made anew
/// ([`EXIT_RESTART`]), or until a task fails (exit 1). Never returns.
pub async fn run(config: WorkerConfig) -> ExitCode {
    crate::tls::install_provider();
    // A panic anywhere ends the worker, to be started again, rather than leave it half running.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let stop = CancellationToken::new();
    // Metrics on a port of the loopback interface, which the parent's `/metrics` reads.
    redstore_platform::metrics::install();
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    match crate::metrics::serve_alone(localhost, crate::metrics::WorkerMetrics::default(), stop.clone()).await {
        Ok(addr) => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{METRICS_LINE}{addr}").and_then(|()| out.flush());
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "the kafka worker serves no metrics"),
    }
    let stdin_closed = stop.clone();
    // A thread of its own, not the runtime: it ends the process even when a client blocks every
    // runtime thread (a synchronous offset commit to a broker that is gone waits forever).
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        stdin_closed.cancel();
        exit_after(STOP_GRACE + Duration::from_secs(1), 0);
    });
    let code = match start(&config, stop.clone()).await {
        Ok(mut tasks) => {
            let code = tokio::select! {
                _ = stop.cancelled() => 0,
                ended = tasks.join_next() => match ended {
                    Some(Ok(Ok(Ended::Restart))) => EXIT_RESTART,
                    Some(Ok(Ok(Ended::Stopped))) | None => 0,
                    Some(Ok(Err(e))) => {
                        tracing::error!(error = format!("{e:#}"), "a kafka task failed");
                        1
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a kafka task ended abnormally");
                        1
                    }
                },
            };
            stop.cancel();
            std::thread::spawn(move || exit_after(STOP_GRACE + Duration::from_secs(1), code));
            if tokio::time::timeout(STOP_GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
                tracing::warn!("kafka tasks did not stop in time");
            }
            code
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "the kafka worker cannot start");
            1
        }
    };
    // Not waiting for what is left (a consumer leaving a group on a broker that is gone).
    std::process::exit(i32::from(code))
}

/// Ends the process with `code` after `wait`, whatever its runtime is doing by then.
fn exit_after(wait: Duration, code: u8) -> ! {
    std::thread::sleep(wait);
    tracing::warn!("the kafka worker did not stop in time; exiting");
    std::process::exit(i32::from(code))
}

/// How a worker task ended.
enum Ended {
    Stopped,
    /// The broker lost the topics: every client must be made anew.
    Restart,
}

/// Checks the topics (creating the missing ones) and starts every task of `config`.
async fn start(config: &WorkerConfig, stop: CancellationToken) -> anyhow::Result<JoinSet<anyhow::Result<Ended>>> {
    use redstore_platform::pg;
    let cfg = config.kafka.clone();
    kafka::ensure_topics(&cfg, &kafka::DOMAINS).await?;
    let pool = pg::connect(&config.database_url, WORKER_DB_POOL, Duration::from_secs(5)).await?;
    redstore_platform::metrics::watch_pg_pool("kafka_worker", &pool);
    let inventory: Arc<dyn InventoryStore> = redstore_inventory::pg::PgInventory::new(pool.clone());
    // One producer for the relays and the dead-letter copies: each is its own connections and threads.
    let producer = kafka::producer(&cfg)?;
    {
        let (producer, topic) = (producer.clone(), cfg.topic(kafka::DOMAINS[0]));
        crate::server::spawn_probe("kafka", None, stop.clone(), move || {
            Box::pin(kafka::brokers_answer(producer.clone(), topic.clone()))
        });
    }
    let mut tasks = JoinSet::new();
    {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tasks.spawn(async move {
            let created = kafka::watch_topics(&cfg, &kafka::DOMAINS, kafka::TOPIC_WATCH, stop).await?;
            if created.is_empty() {
                return Ok(Ended::Stopped);
            }
            tracing::warn!(topics = ?created, "the kafka broker had lost these topics; created them and starting new clients");
            Ok(Ended::Restart)
        });
    }
    for &schema in &config.relays {
        // The relay's sweep drains only the stores whose outbox head is past their cursor.
        let stores = kafka::backlog(pool.clone(), schema, kafka::RELAY_GROUP);
        let relay = kafka::run_relay(pool.clone(), producer.clone(), cfg.clone(), schema, stores, stop.clone());
        tasks.spawn(async move { relay.await.map(|()| Ended::Stopped) });
    }
    if config.analytics {
        let run = redstore_analytics::kafka::run(pool.clone(), cfg.clone(), producer.clone(), stop.clone());
        tasks.spawn(async move { run.await.map(|()| Ended::Stopped) });
    }
    if let (true, Some(url)) = (config.stock_cache, &config.redis_url) {
        let cache = redstore_inventory::cache::StockCache::new(url)
            .map_err(|e| anyhow::anyhow!("the redis url is not usable: {e}"))?;
        let run = cache_consumer(pool.clone(), cfg.clone(), producer.clone(), inventory.clone(), cache, stop.clone());
        tasks.spawn(async move { run.await.map(|()| Ended::Stopped) });
    }
    Ok(tasks)
}

/// The stock-cache projector as its own consumer group (`inventory-cache`), after checking every
/// store's hash against the event log (`projector::reconcile_all`), with the sweep that catches up
/// stores Kafka left behind (`projector::sweep_stalled`). The messages received together go to
/// Redis in one pipeline; when that fails, one by one.
async fn cache_consumer(
    pool: redstore_platform::pg::PgPool,
    cfg: KafkaConfig,
    dlq: kafka::Producer,
    inventory: Arc<dyn InventoryStore>,
    cache: redstore_inventory::cache::StockCache,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use redstore_inventory::projector;
    let consumer = kafka::consumer(&cfg, "inventory-cache", &["inventory"])?;
    // A hash ahead of the log (database restored or reset) would skip every new event.
    projector::reconcile_all(&pool, inventory.as_ref(), &cache).await;
    let sweep_stop = stop.child_token();
    let sweep =
        tokio::spawn(projector::sweep_stalled(pool.clone(), inventory.clone(), cache.clone(), sweep_stop.clone()));
    let (batch_cache, batch_inventory) = (cache.clone(), inventory.clone());
    let batch: kafka::BatchHandler = Box::new(move |events| {
        let (cache, inventory) = (batch_cache.clone(), batch_inventory.clone());
        Box::pin(async move { projector::project_received(inventory.as_ref(), &cache, &events).await })
    });
    // One by one after a failed batch; `consume_batches` waits out a Redis or database outage
    // (a transient error) for as long as it lasts, so live events are never dead-lettered for it.
    let handler = move |event: redstore_proto::events::EventEnvelope| {
        let (cache, inventory) = (cache.clone(), inventory.clone());
        Box::pin(async move { projector::project_received(inventory.as_ref(), &cache, &[event]).await })
            as futures::future::BoxFuture<'static, redstore_platform::Result<()>>
    };
    let quiet = kafka::Quiet::on(kafka::commit_hints(pool.clone(), "inventory", stop.clone()));
    let consumed = kafka::consume_batches(consumer, dlq, Some(batch), handler, Some(quiet), stop).await;
    sweep_stop.cancel();
    let _ = sweep.await;
    consumed
}
