//! Composes every service onto one port: native gRPC (HTTP/2), gRPC-web (HTTP/1.1 and HTTP/2,
//! with CORS for the configured browser origins), SSE, health and reflection, behind the edge's
//! rules (`edge`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redstore_analytics::{AnalyticsGrpc, Reports};
use redstore_auth::revoked::Revoked;
use redstore_auth::seed::seed_demo_staff;
use redstore_auth::{AuthGrpc, AuthStore};
use redstore_inventory::{InventoryGrpc, InventoryStore, SqliteInventory};
use redstore_platform::datadir::DataDirLock;
use redstore_platform::retention::{self, Retention};
use redstore_platform::telemetry::LogFormat;
use redstore_platform::{Db, DbOptions};
use redstore_proto::analytics::analytics_service_server::AnalyticsServiceServer;
use redstore_proto::auth::auth_service_server::AuthServiceServer;
use redstore_proto::inventory::inventory_service_server::InventoryServiceServer;
use redstore_proto::sales::sales_service_server::SalesServiceServer;
use redstore_proto::stream::inventory_stream_service_server::InventoryStreamServiceServer;
use redstore_sales::{SalesGrpc, SalesStore};
use redstore_stream_bridge::{LiveFeed, LiveStreams, StreamGrpc};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_web::GrpcWebLayer;
use tower::Layer as _;

use crate::connections::ConnectionOptions;
use crate::drain::InFlight;
use crate::edge::{Edge, EdgeOptions};
use crate::health::HealthState;
use crate::observe::Observed;

/// One of the services a process can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    Inventory,
    Sales,
    Analytics,
    StreamBridge,
    /// Staff sign-in (`redstore.auth.v1.AuthService`).
    Auth,
}

/// Everything `redstore up` and `redstore serve` need to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` for the distributed shape; `None` for the embedded SQLite database.
    pub database_url: Option<String>,
    /// `redis://…` for the live fan-out and stock cache of the distributed shape.
    pub redis_url: Option<String>,
    /// Kafka for the distributed shape's events (outbox relays, consumer groups).
    pub kafka: Option<redstore_platform::kafka::KafkaConfig>,
    /// The services this process serves; empty means all of them.
    pub services: Vec<ServiceName>,
    /// Where the inventory service answers, for a sales process that does not serve inventory.
    pub inventory_url: Option<String>,
    /// Seed the demo chain into a new database.
    pub demo: bool,
    /// How long in-flight requests and streams get to finish after a shutdown signal.
    pub grace_period: Duration,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
    /// Most PostgreSQL connections this process opens.
    pub db_pool_size: u32,
    /// The embedded database's busy timeout and write queue.
    pub db: DbOptions,
    /// After a shutdown signal, how long the server keeps its port open at least, answering
    /// health NOT_SERVING (and any request), so load balancers stop sending before it closes.
    pub drain_delay: Duration,
    /// How long idempotency keys and scan ids are kept.
    pub retention: Retention,
    /// How the Kafka worker logs.
    pub log_format: LogFormat,
    /// The `redstore` binary that runs the Kafka worker (`redstore kafka-worker`); `None`: this
    /// program. A process that embeds the server (a test) names the binary.
    pub worker_program: Option<PathBuf>,
    /// Timeouts, keep-alive and caps of connections and live streams.
    pub connections: ConnectionOptions,
    /// Browser origins and hosts, and the service token.
    pub edge: EdgeOptions,
    /// TLS on the port, and the trust in a remote inventory's certificate.
    pub tls: crate::tls::TlsOptions,
    /// Sign-in's keys and lifetimes.
    pub auth: crate::auth::AuthOptions,
    /// Where one-time codes go.
    pub code_sender: crate::auth::Sender,
    /// Serve `/metrics` on this address alone instead of on the server's port.
    pub metrics_listen: Option<SocketAddr>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            database_url: None,
            redis_url: None,
            kafka: None,
            services: Vec::new(),
            inventory_url: None,
            demo: true,
            grace_period: Duration::from_secs(10),
            sse_keep_alive: Duration::from_secs(15),
            db_pool_size: 32,
            db: DbOptions::default(),
            drain_delay: Duration::ZERO,
            retention: Retention::default(),
            log_format: LogFormat::Human,
            worker_program: None,
            connections: ConnectionOptions::default(),
            edge: EdgeOptions::default(),
            tls: crate::tls::TlsOptions::default(),
            auth: crate::auth::AuthOptions::default(),
            code_sender: crate::auth::Sender::default(),
            metrics_listen: None,
        }
    }

    fn serves(&self, service: ServiceName) -> bool {
        self.services.is_empty() || self.services.contains(&service)
    }
}

/// Every service's SQLite migrations, in dependency order.
pub fn migrations() -> [&'static [redstore_platform::Migration]; 4] {
    [
        redstore_inventory::SQLITE_MIGRATIONS,
        redstore_sales::SQLITE_MIGRATIONS,
        redstore_analytics::SQLITE_MIGRATIONS,
        redstore_auth::SQLITE_MIGRATIONS,
    ]
}

/// The embedded database with the data directory's lock, which it holds for as long as it is open.
pub struct Embedded {
    pub db: Db,
    lock: DataDirLock,
}

/// Opens the database under `data_dir`, creating the directory, and applies every migration.
/// The directory is locked first: a second process on it (`holder` says what this one is) is
/// refused at once, naming the process that holds it.
pub fn open_db(data_dir: &Path, options: DbOptions, holder: &str) -> anyhow::Result<Embedded> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let probe = data_dir.join(".redstore-write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data directory {} is not writable", data_dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let lock = DataDirLock::acquire(data_dir, holder)?;
    let db = Db::open_with(&data_dir.join("redstore.db"), &migrations(), options)?;
    Ok(Embedded { db, lock })
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` answers: `addr`, or `--metrics-listen`'s address.
    pub metrics_addr: SocketAddr,
    backend: Backend,
    shutdown: CancellationToken,
    /// Cancelled when the port closes: the end of the drain.
    stop_accepting: CancellationToken,
    health: HealthState,
    in_flight: InFlight,
    task: JoinHandle<anyhow::Result<()>>,
    /// The Kafka worker's supervisor: it stops the worker once `shutdown` is cancelled.
    worker: Option<JoinHandle<()>>,
    grace_period: Duration,
    drain_delay: Duration,
}

impl Running {
    /// Token that is cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The server's health, as `grpc.health.v1` answers it.
    pub fn health(&self) -> &HealthState {
        &self.health
    }

    /// Shuts down in two steps within the grace period. The drain: health turns NOT_SERVING
    /// (health watchers are told and closed), live streams end with UNAVAILABLE so terminals
    /// reconnect elsewhere, and the port stays open, answering health and any request, for at
    /// least the drain delay and until no request is in flight. Then the port closes, the
    /// connections are asked to finish, and the database is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: health is NOT_SERVING, streams are ending");
        let deadline = tokio::time::Instant::now() + self.grace_period;
        self.health.drain();
        self.shutdown.cancel();
        let drained = tokio::time::timeout_at(deadline, async {
            tokio::time::sleep(self.drain_delay).await;
            self.in_flight.idle().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = self.in_flight.count(),
                "requests still in flight at the end of the grace period"
            );
        }
        self.stop_accepting.cancel();
        let result = match tokio::time::timeout_at(deadline, self.task).await {
            Ok(joined) => joined.context("server task failed")?,
            Err(_) => {
                tracing::warn!(grace_period = ?self.grace_period, "grace period over; closing remaining connections");
                Ok(())
            }
        };
        if let Some(worker) = self.worker
            && tokio::time::timeout_at(deadline, worker).await.is_err()
        {
            tracing::warn!("the kafka worker did not stop within the grace period");
        }
        self.backend.close().await;
        result
    }

    /// Waits until the server stops by itself (it only does on an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task failed")?
    }
}

/// The names health answers for, with what each service needs: on the embedded database, the
/// writers need it writable; on PostgreSQL every service needs it reachable, and a stream bridge
/// fed by Redis needs Redis. Kafka is no one's need: the outboxes hold every event while the
/// broker is away, so sales go on (its state is in `/metrics` and the logs).
fn health_for(services: &[ServiceName], postgres: bool, redis: bool) -> HealthState {
    use crate::health::Deps;
    let writer = Deps::DATABASE;
    let reader = if postgres { Deps::DATABASE } else { Deps::NONE };
    let entries: Vec<(&'static str, Deps)> = services
        .iter()
        .map(|service| match service {
            ServiceName::Inventory => (<InventoryServiceServer<InventoryGrpc> as NamedService>::NAME, writer),
            ServiceName::Sales => (<SalesServiceServer<SalesGrpc> as NamedService>::NAME, writer),
            ServiceName::Analytics => (<AnalyticsServiceServer<AnalyticsGrpc> as NamedService>::NAME, reader),
            ServiceName::StreamBridge => (
                <InventoryStreamServiceServer<StreamGrpc> as NamedService>::NAME,
                if redis { reader.union(Deps::REDIS) } else { reader },
            ),
            ServiceName::Auth => (<AuthServiceServer<AuthGrpc> as NamedService>::NAME, writer),
        })
        .collect();
    HealthState::new(&entries)
}

/// How often PostgreSQL and Redis are checked for health, and how long a check may take.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks a backend every [`PROBE_EVERY`] until `shutdown`: `redstore_backend_up{backend}` follows
/// it, and so does health where the services need it (`need`: Kafka is no one's need, the
/// outboxes hold its events while it is away), and a change is logged once.
pub(crate) fn spawn_probe<F>(
    backend: &'static str,
    need: Option<(crate::health::Deps, HealthState)>,
    shutdown: CancellationToken,
    check: F,
) where
    F: Fn() -> futures::future::BoxFuture<'static, bool> + Send + 'static,
{
    tokio::spawn(async move {
        let mut was_up = true;
        loop {
            let up = tokio::time::timeout(PROBE_TIMEOUT, check()).await.unwrap_or(false);
            metrics::gauge!("redstore_backend_up", "backend" => backend).set(f64::from(u8::from(up)));
            if let Some((dep, health)) = &need {
                health.set_up(*dep, up);
            }
            match (was_up, up, need.is_some()) {
                (true, false, true) => {
                    tracing::warn!(backend, "unreachable: the services that need it are NOT_SERVING")
                }
                (true, false, false) => tracing::warn!(backend, "unreachable: events wait in the outboxes"),
                (false, true, _) => tracing::info!(backend, "reachable again"),
                _ => {}
            }
            was_up = up;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    });
}

/// What the services run on.
enum Backend {
    Embedded(Embedded),
    Postgres(redstore_platform::pg::PgPool),
}

impl Backend {
    async fn close(&self) {
        match self {
            Self::Embedded(embedded) => embedded.db.close(),
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// The stores and feeds the services are built on, for one backend.
struct Wiring {
    backend: Backend,
    inventory: Arc<dyn InventoryStore>,
    sales: Arc<dyn SalesStore>,
    reports: Arc<dyn Reports>,
    auth: Arc<dyn AuthStore>,
    feed: LiveFeed,
    /// The supervisor of the Kafka worker, when there is one.
    worker: Option<JoinHandle<()>>,
    /// Where that worker serves its metrics.
    worker_metrics: crate::metrics::WorkerMetrics,
    /// Redis, for the health probe, on the distributed shape.
    redis: Option<redstore_inventory::cache::StockCache>,
}

/// Every service's PostgreSQL schema with its migrations, in the order they are applied (after
/// the platform's).
pub fn pg_migrations() -> [&'static redstore_platform::pg::PgSchema; 4] {
    [
        &redstore_inventory::pg::PG_SCHEMA,
        &redstore_sales::pg::PG_SCHEMA,
        &redstore_analytics::pg::PG_SCHEMA,
        &redstore_auth::pg::PG_SCHEMA,
    ]
}

/// Connects to PostgreSQL and applies every service's migrations (as a role that may create
/// schemas and roles); creates the application role `redstore_app`.
pub async fn migrate_postgres(url: &str) -> anyhow::Result<()> {
    let pool = redstore_platform::pg::connect(url, 2, Duration::from_secs(5)).await?;
    redstore_platform::pg::migrate(&pool, &pg_migrations()).await?;
    pool.close().await;
    Ok(())
}

/// Waits until `redstore migrate` has applied every migration this binary knows to the database
/// at `url`, polling, for at most `timeout`; applies nothing. Connection failures (the database or
/// the application role not there yet) are waited out like missing migrations.
pub async fn wait_for_migrations(url: &str, timeout: Duration) -> anyhow::Result<()> {
    const POLL: Duration = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let pending = async {
            let pool = redstore_platform::pg::connect(url, 1, Duration::from_secs(5)).await?;
            let pending = redstore_platform::pg::pending_migrations(&pool, &pg_migrations()).await;
            pool.close().await;
            pending
        };
        let now = match pending.await {
            Ok(pending) if pending.is_empty() => return Ok(()),
            Ok(pending) => format!("migrations are not applied yet: {}", unapplied(&pending)),
            Err(e) => format!("{e:#}"),
        };
        if now != last {
            tracing::info!(status = %now, "waiting for `redstore migrate`");
            last = now;
        }
        if tokio::time::Instant::now() + POLL > deadline {
            anyhow::bail!(redstore_platform::unreachable::Unreachable(format!(
                "the database after {}: {last}",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `pending_migrations` found, for a message: "inventory 2, sales 1".
fn unapplied(pending: &[(&str, usize)]) -> String {
    let counts: Vec<String> = pending.iter().map(|(schema, n)| format!("{schema} {n}")).collect();
    counts.join(", ")
}

async fn embedded(config: &ServerConfig, shutdown: &CancellationToken) -> anyhow::Result<Wiring> {
    let holder = format!("redstore starting to serve on {}", config.listen);
    let embedded = open_db(&config.data_dir, config.db, &holder)?;
    let db = embedded.db.clone();
    if config.demo && redstore_inventory::seed::seed_demo(&db).await? {
        tracing::info!("seeded the demo chain: store-1 (strict), store-2 (allows negative stock), 20 products");
    }
    let auth: Arc<dyn AuthStore> = Arc::new(redstore_auth::sqlite::SqliteAuth(db.clone()));
    if config.demo {
        seed_demo_staff(auth.as_ref()).await?;
    }
    if config.serves(ServiceName::Analytics) {
        redstore_analytics::spawn_consumer(db.clone(), shutdown.clone());
    }
    if config.serves(ServiceName::Sales) {
        redstore_sales::listing::spawn_filing(db.clone(), shutdown.clone());
    }
    if config.serves(ServiceName::Inventory) {
        redstore_platform::eventlog::spawn_stock_filing(db.clone(), shutdown.clone());
    }
    let (expiring, kept) = (db.clone(), config.retention);
    spawn_retention("idempotency keys and scan ids", kept.every, shutdown.clone(), move || {
        let db = expiring.clone();
        Box::pin(async move {
            let expire = move |ctx: &mut redstore_platform::WriteCtx<'_>| {
                redstore_platform::idempotency::expire(ctx.conn, &kept, ctx.now)
            };
            retention::in_chunks(|| db.write(expire)).await
        })
    });
    Ok(Wiring {
        inventory: SqliteInventory::new(db.clone()),
        sales: redstore_sales::SqliteSales::new(db.clone()),
        reports: Arc::new(redstore_analytics::SqliteReports(db.clone())),
        auth,
        feed: LiveFeed::from_embedded(&db, shutdown.clone()),
        backend: Backend::Embedded(embedded),
        worker: None,
        worker_metrics: Default::default(),
        redis: None,
    })
}

async fn postgres(
    url: &str,
    config: &ServerConfig,
    edge: &Edge,
    shutdown: &CancellationToken,
) -> anyhow::Result<Wiring> {
    use redstore_platform::pg;
    // `--db-pool-size` bounds the connections of the process: it is split between the two pools
    // (sales gets its own, see below). Fewer connections also serve a checkout faster than many:
    // on a small machine dozens of backends queueing on one store's rows only add contention.
    let (main_size, sales_size) = split_pool_size(config.db_pool_size);
    let pool = pg::connect(url, main_size, Duration::from_secs(5)).await?;
    let pending = pg::pending_migrations(&pool, &pg_migrations()).await?;
    anyhow::ensure!(
        pending.is_empty(),
        "the PostgreSQL database is not migrated ({}): run `redstore migrate --database-url <url of an admin role>` first",
        unapplied(&pending)
    );
    let pg_inventory = redstore_inventory::pg::PgInventory::new(pool.clone());
    let local: Arc<dyn InventoryStore> = pg_inventory.clone();
    let remote = match (&config.inventory_url, config.serves(ServiceName::Inventory)) {
        (Some(url), false) => {
            let token =
                edge.service_token().cloned().context("checked at start: a remote inventory needs the token")?;
            let tls = match url.starts_with("https://") {
                true => Some(crate::tls::client_config(config.tls.inventory_ca.as_deref())?),
                false => None,
            };
            Some(redstore_inventory::client::GrpcInventory::connect(url, token, tls).await?)
        }
        _ => None,
    };
    let inventory: Arc<dyn InventoryStore> = match &remote {
        Some(remote) => remote.clone(),
        None => local.clone(),
    };
    if config.demo
        && config.serves(ServiceName::Inventory)
        && redstore_inventory::seed::seed_demo_via(local.as_ref()).await?
    {
        tracing::info!("seeded the demo chain: store-1 (strict), store-2 (allows negative stock), 20 products");
    }
    let auth: Arc<dyn AuthStore> = Arc::new(redstore_auth::pg::PgAuth(pool.clone()));
    if config.demo && config.serves(ServiceName::Auth) {
        seed_demo_staff(auth.as_ref()).await?;
    }
    let cache = match &config.redis_url {
        Some(url) => Some(connect_redis(url).await?),
        None => None,
    };
    // With Kafka, its relays and consumers run in the Kafka worker (a child process, see
    // `kafka_worker`); without, the consumers read the outbox directly.
    let worker_metrics = crate::metrics::WorkerMetrics::default();
    let worker = match &config.kafka {
        Some(kafka) => start_kafka_worker(url, kafka, config, worker_metrics.clone(), shutdown).await?,
        None => {
            if config.serves(ServiceName::Analytics) {
                redstore_analytics::pg::spawn_consumer(pool.clone(), shutdown.clone());
            }
            if let (Some(cache), true) = (&cache, config.serves(ServiceName::Inventory)) {
                redstore_inventory::projector::spawn(pool.clone(), local.clone(), cache.clone(), shutdown.clone());
            }
            None
        }
    };
    let feed = match (&config.redis_url, config.serves(ServiceName::StreamBridge)) {
        (_, false) => LiveFeed::default(),
        (Some(url), true) => {
            let feed = LiveFeed::default();
            redstore_stream_bridge::redis::start_feed(url, local.clone(), feed.clone(), shutdown.clone())?;
            feed
        }
        (None, true) => LiveFeed::from_postgres(pool.clone(), local.clone(), shutdown.clone())?,
    };
    // Sales holds a transaction open while it calls inventory, so it gets its own connections:
    // sharing one pool could leave both waiting on each other.
    let sales_pool = pg::connect(url, sales_size, Duration::from_secs(5)).await?;
    redstore_platform::metrics::watch_pg_pool("main", &pool);
    redstore_platform::metrics::watch_pg_pool("sales", &sales_pool);
    // Inventory in this process and database: checkouts by group commit, one transaction per
    // batch; inventory elsewhere: the checkout saga over gRPC.
    let sales = match remote {
        Some(_) => redstore_sales::pg::PgSales::new(sales_pool, inventory.clone()),
        None => redstore_sales::pg::PgSales::with_local_inventory(sales_pool, pg_inventory.clone()),
    };
    if config.serves(ServiceName::Sales) {
        spawn_pending_healer(sales.clone(), shutdown.clone());
    }
    if config.serves(ServiceName::Sales) || config.serves(ServiceName::Inventory) {
        let sales = config.serves(ServiceName::Sales).then(|| sales.clone());
        let inventory = config.serves(ServiceName::Inventory).then(|| pg_inventory.clone());
        let (pool, kept) = (pool.clone(), config.retention);
        spawn_retention("idempotency keys and scan ids", kept.every, shutdown.clone(), move || {
            let (pool, sales, inventory) = (pool.clone(), sales.clone(), inventory.clone());
            Box::pin(async move {
                let mut expired = retention::in_chunks(|| pg::expire_keys(&pool, &kept)).await?;
                // Checkout keys live with each store's rows, under its row-level security: the
                // database names the stores that have some to clear, and only those are visited.
                let before_ms = kept.keys_before_ms(std::time::SystemTime::now());
                if let Some(sales) = &sales {
                    for store_id in sales.stores_keyed_before(before_ms).await? {
                        expired += retention::in_chunks(|| sales.expire_checkout_keys(&store_id, before_ms)).await?;
                    }
                }
                if let Some(inventory) = &inventory {
                    for store_id in inventory.stores_with_checkouts_before(before_ms).await? {
                        expired += retention::in_chunks(|| inventory.expire_checkouts(&store_id, before_ms)).await?;
                    }
                }
                Ok(expired)
            })
        });
    }
    Ok(Wiring {
        sales,
        reports: Arc::new(redstore_analytics::pg::PgReports { pool: pool.clone(), inventory: local.clone() }),
        auth,
        inventory: local,
        feed,
        backend: Backend::Postgres(pool),
        worker,
        worker_metrics,
        redis: cache,
    })
}

/// Checks the Kafka topics (creating the missing ones; failing within seconds, naming the brokers,
/// when none answers), then supervises the Kafka worker that runs the outbox relays of the
/// services this process serves and their consumer groups. `None` when it has nothing to run.
async fn start_kafka_worker(
    url: &str,
    kafka: &redstore_platform::kafka::KafkaConfig,
    config: &ServerConfig,
    metrics: crate::metrics::WorkerMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    use crate::kafka_worker::{self, Launch, WorkerConfig};
    let worker = WorkerConfig {
        database_url: url.to_owned(),
        redis_url: config.redis_url.clone(),
        kafka: kafka.clone(),
        relays: [(ServiceName::Inventory, "inventory"), (ServiceName::Sales, "sales")]
            .into_iter()
            .filter(|(service, _)| config.serves(*service))
            .map(|(_, schema)| schema)
            .collect(),
        analytics: config.serves(ServiceName::Analytics),
        stock_cache: config.serves(ServiceName::Inventory),
    };
    if worker.is_empty() {
        return Ok(None);
    }
    redstore_platform::kafka::ensure_topics(kafka, &redstore_platform::kafka::DOMAINS).await?;
    let program = match &config.worker_program {
        Some(program) => program.clone(),
        None => std::env::current_exe().context("cannot find this program to start its kafka worker")?,
    };
    let launch = Launch { program, log_format: config.log_format, metrics };
    Ok(Some(kafka_worker::supervise(launch, worker, shutdown.clone())))
}

/// Splits the process's connection budget between the main pool and the sales pool (at least two
/// each).
fn split_pool_size(total: u32) -> (u32, u32) {
    let main = (total / 2).max(2);
    (main, total.saturating_sub(main).max(2))
}

/// Opens the stock cache and checks that Redis answers, so a wrong URL fails at start, naming it.
async fn connect_redis(url: &str) -> anyhow::Result<redstore_inventory::cache::StockCache> {
    let place = url.rsplit('@').next().unwrap_or(url).to_owned();
    let cache = redstore_inventory::cache::StockCache::new(url)
        .map_err(|e| anyhow::anyhow!("--redis-url {place:?} is not usable: {e}"))?;
    cache
        .version("startup-check")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(redstore_platform::unreachable::Unreachable(format!("Redis at {place}")))?;
    Ok(cache)
}

/// Finishes or releases checkouts left pending by a crash or an unreachable inventory, and records
/// checkouts inventory applied that sales never recorded: every few seconds, what is older than a
/// few seconds, in the stores the database names as having such work (`PgSales::stores_pending`,
/// `PgSales::reconcile_applied`): a chain at rest costs two statements a round, not a transaction
/// per store.
fn spawn_pending_healer(sales: Arc<redstore_sales::pg::PgSales>, shutdown: CancellationToken) {
    const OLDER_THAN: Duration = Duration::from_secs(5);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let pending = match sales.stores_pending(OLDER_THAN).await {
                Ok(s) => s,
                Err(e) => {
                    redstore_platform::warn_throttled!(error = %e, "pending-sale healer cannot list the stores with pending sales");
                    Vec::new()
                }
            };
            for store_id in &pending {
                match sales.resume_pending(store_id, OLDER_THAN).await {
                    Ok(r) if r.completed + r.rejected + r.failed > 0 => tracing::info!(
                        store_id = %store_id, completed = r.completed, rejected = r.rejected, failed = r.failed,
                        "resumed pending sales"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        redstore_platform::warn_throttled!(error = %e, store_id = %store_id, "cannot resume pending sales")
                    }
                }
            }
            match sales.reconcile_applied(OLDER_THAN).await {
                Ok(0) => {}
                Ok(recorded) => {
                    tracing::info!(recorded, "recorded checkouts inventory applied and sales never recorded")
                }
                Err(e) => redstore_platform::warn_throttled!(error = %e, "cannot reconcile applied checkouts"),
            }
        }
    });
}

/// Deletes what has expired (`what`: idempotency keys and scan ids, `platform::retention`; sign-in
/// records) soon after start and then every `every`; a failed sweep is logged and tried again at
/// the next.
fn spawn_retention<F>(what: &'static str, every: Duration, shutdown: CancellationToken, sweep: F)
where
    F: Fn() -> futures::future::BoxFuture<'static, redstore_platform::Result<u64>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match sweep().await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, what, "expired records deleted"),
                Err(e) => redstore_platform::warn_throttled!(error = %e, what, "cannot delete expired records"),
            }
        }
    });
}

/// Keeps health in step with whether the embedded database can be written.
fn follow_writable(mut writable: tokio::sync::watch::Receiver<bool>, health: HealthState, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            health.set_writable(*writable.borrow_and_update());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = writable.changed() => if changed.is_err() { break },
            }
        }
    });
}

/// Starts the configured services on `config.listen` and returns once the port is bound.
pub async fn start(config: ServerConfig) -> anyhow::Result<Running> {
    redstore_platform::metrics::install();
    let shutdown = CancellationToken::new();
    let keys = Arc::new(config.auth.token_keys(&config.data_dir)?);
    let revoked = Arc::new(Revoked::default());
    let edge = Arc::new(Edge::new(&config.edge, keys.clone(), revoked.clone())?);
    crate::tls::install_provider();
    let tls = crate::tls::acceptor(&config.tls)?;
    let remote_inventory = config.inventory_url.is_some() && !config.serves(ServiceName::Inventory);
    anyhow::ensure!(
        !remote_inventory || edge.service_token().is_some(),
        "sales applies its sales to a separate inventory through internal RPCs: give it the service token \
         inventory has (REDSTORE_SERVICE_TOKEN, --service-token-file or --service-token)"
    );
    let separate_inventory = config.serves(ServiceName::Inventory) && !config.serves(ServiceName::Sales);
    if separate_inventory && edge.service_token().is_none() {
        tracing::warn!(
            "no service token (--service-token): inventory's internal RPCs refuse every caller, so no separate \
             sales process can apply sales here"
        );
    }
    let wiring = match config.database_url.as_deref() {
        None if config.redis_url.is_some() || config.kafka.is_some() => {
            anyhow::bail!(
                "--redis-url and --kafka-brokers belong to the distributed shape: give --database-url postgres://… too"
            )
        }
        None => embedded(&config, &shutdown).await?,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            postgres(url, &config, &edge, &shutdown).await?
        }
        Some(_) => anyhow::bail!(
            "--database-url must be a postgres:// URL; leave it out to use the embedded database in --data-dir"
        ),
    };
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    redstore_auth::revoked::watch(wiring.auth.clone(), revoked.clone(), shutdown.clone());
    edge.keep_audit(wiring.auth.clone());
    if config.serves(ServiceName::Auth) {
        let auth = wiring.auth.clone();
        spawn_retention("sign-in records", config.retention.every, shutdown.clone(), move || {
            let auth = auth.clone();
            Box::pin(async move {
                let before_ms = redstore_auth::domain::expired_before(std::time::SystemTime::now());
                retention::in_chunks(|| auth.expire(before_ms)).await
            })
        });
    }
    let mut backend = wiring.backend;
    if let Backend::Embedded(embedded) = &mut backend {
        embedded.lock.record(&format!("redstore serving on {addr}"));
    }

    let services: Vec<ServiceName> = [
        ServiceName::Inventory,
        ServiceName::Sales,
        ServiceName::Analytics,
        ServiceName::StreamBridge,
        ServiceName::Auth,
    ]
    .into_iter()
    .filter(|s| config.serves(*s))
    .collect();
    let on_postgres = matches!(backend, Backend::Postgres(_));
    let health = health_for(&services, on_postgres, wiring.redis.is_some());
    match &backend {
        Backend::Embedded(embedded) => follow_writable(embedded.db.watch_writable(), health.clone(), shutdown.clone()),
        Backend::Postgres(pool) => {
            let pool = pool.clone();
            spawn_probe(
                "postgres",
                Some((crate::health::Deps::DATABASE, health.clone())),
                shutdown.clone(),
                move || {
                    let pool = pool.clone();
                    Box::pin(async move { sqlx::query("SELECT 1").execute(&pool).await.is_ok() })
                },
            );
        }
    }
    if let Some(cache) = wiring.redis.clone() {
        spawn_probe("redis", Some((crate::health::Deps::REDIS, health.clone())), shutdown.clone(), move || {
            let cache = cache.clone();
            Box::pin(async move { cache.version("health-probe").await.is_ok() })
        });
    }
    let web = GrpcWebLayer::new();
    let mut routes = tonic::service::Routes::new(web.layer(health.clone().into_server()));
    // Reflection tells grpcurl every RPC and message; a deployment that would rather not say turns
    // it off (`--reflection=false`).
    if config.edge.reflection {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(redstore_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(redstore_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        routes = routes.add_service(web.layer(reflection_v1)).add_service(web.layer(reflection_v1alpha));
    }
    if config.serves(ServiceName::Inventory) {
        routes =
            routes.add_service(web.layer(Observed::new(InventoryGrpc::new(wiring.inventory.clone()).into_server())));
    }
    if config.serves(ServiceName::Sales) {
        routes = routes.add_service(web.layer(Observed::new(SalesGrpc::new(wiring.sales.clone()).into_server())));
    }
    if config.serves(ServiceName::Analytics) {
        routes = routes.add_service(web.layer(Observed::new(AnalyticsGrpc::new(wiring.reports.clone()).into_server())));
    }
    if config.serves(ServiceName::Auth) {
        let auth = AuthGrpc::new(
            wiring.auth.clone(),
            wiring.inventory.clone(),
            keys,
            config.code_sender.0.clone(),
            config.auth.policy(),
            revoked,
        );
        routes = routes.add_service(web.layer(Observed::new(auth.into_server())));
    }
    let live_streams = LiveStreams::new(config.connections.max_live_streams as usize);
    let watching = live_streams.clone();
    redstore_platform::metrics::on_render(move || {
        metrics::gauge!("redstore_live_watchers").set(watching.open() as f64);
    });
    if config.serves(ServiceName::StreamBridge) {
        let stream =
            StreamGrpc::new(wiring.inventory.clone(), wiring.feed.clone(), live_streams.clone(), shutdown.clone());
        routes = routes.add_service(web.layer(Observed::new(stream.into_server())));
    }
    let mut router = routes.into_axum_router();
    let metrics_addr = match config.metrics_listen {
        None => {
            router = router.merge(crate::metrics::router(wiring.worker_metrics.clone()));
            addr
        }
        Some(listen) => crate::metrics::serve_alone(listen, wiring.worker_metrics.clone(), shutdown.clone()).await?,
    };
    if config.serves(ServiceName::StreamBridge) {
        router = router.merge(redstore_stream_bridge::sse::router(
            wiring.inventory.clone(),
            wiring.feed.clone(),
            live_streams,
            shutdown.clone(),
            config.sse_keep_alive,
        ));
    }
    // The iPad terminal's page and assets: whatever no service claims.
    let router = router.fallback(crate::terminal::serve);
    let in_flight = InFlight::default();
    let router = router
        .layer(axum::middleware::from_fn(crate::oversized::as_resource_exhausted))
        .layer(axum::middleware::from_fn_with_state(edge.clone(), crate::edge::guard))
        .layer(edge.cors())
        .layer(axum::middleware::from_fn_with_state(edge.clone(), crate::edge::browser_rules))
        .layer(axum::middleware::from_fn_with_state(
            crate::forwarded::TrustedProxies::new(&config.edge.trusted_proxies),
            crate::forwarded::client_address,
        ))
        .layer(axum::middleware::from_fn_with_state(in_flight.clone(), InFlight::track));

    let mut connections = config.connections;
    let open_files = crate::connections::open_file_limit();
    connections.max_connections = crate::connections::fitting_connections(connections.max_connections, open_files);
    // A cap lowered a little to fit is news; one lowered to a few hundred clients is a problem.
    match connections.max_connections {
        fitted if fitted == config.connections.max_connections => {}
        fitted if fitted < 1024 => tracing::warn!(
            open_files,
            max_connections = fitted,
            "the open-file limit allows few connections; the connection cap is lowered to fit (raise `ulimit -n`)"
        ),
        fitted => tracing::info!(
            open_files,
            max_connections = fitted,
            "the connection cap is lowered to fit the open-file limit"
        ),
    }
    let stop_accepting = CancellationToken::new();
    let stop = stop_accepting.clone();
    let secure = tls.is_some();
    let task = tokio::spawn(async move {
        crate::connections::serve(listener, router, connections, tls, stop).await.context("server failed")
    });
    tracing::info!(%addr, tls = secure, backend = match backend { Backend::Embedded(_) => "embedded", Backend::Postgres(_) => "postgres" },
        "red store is listening");
    Ok(Running {
        addr,
        metrics_addr,
        backend,
        shutdown,
        stop_accepting,
        health,
        in_flight,
        task,
        worker: wiring.worker,
        grace_period: config.grace_period,
        drain_delay: config.drain_delay,
    })
}
