//! Composes every service onto one port: native gRPC (HTTP/2), gRPC-web (HTTP/1.1 and HTTP/2,
//! with CORS for browser origins), SSE, health and reflection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderName, Method};
use axum::serve::ListenerExt as _;
use redstore_inventory::{InventoryStore, SqliteInventory};
use redstore_platform::Db;
use redstore_proto::analytics::analytics_service_server::AnalyticsServiceServer;
use redstore_proto::inventory::inventory_service_server::InventoryServiceServer;
use redstore_proto::sales::sales_service_server::SalesServiceServer;
use redstore_proto::stream::inventory_stream_service_server::InventoryStreamServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tonic_web::GrpcWebLayer;
use tower::Layer as _;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Everything `redstore up` needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Seed the demo chain into a new data directory.
    pub demo: bool,
    /// How long in-flight requests and streams get to finish after a shutdown signal.
    pub grace_period: Duration,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            demo: true,
            grace_period: Duration::from_secs(10),
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// Every service's SQLite migrations, in dependency order.
pub fn migrations() -> [&'static [redstore_platform::Migration]; 4] {
    [
        redstore_inventory::SQLITE_MIGRATIONS,
        redstore_sales::SQLITE_MIGRATIONS,
        redstore_analytics::SQLITE_MIGRATIONS,
        &[],
    ]
}

/// Opens the database under `data_dir`, creating the directory, and applies every migration.
pub fn open_db(data_dir: &Path) -> anyhow::Result<Db> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let probe = data_dir.join(".redstore-write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data directory {} is not writable", data_dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Db::open(&data_dir.join("redstore.db"), &migrations())
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub db: Db,
    shutdown: CancellationToken,
    health: HealthReporter,
    task: JoinHandle<anyhow::Result<()>>,
    grace_period: Duration,
}

impl Running {
    /// Token that is cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Marks every service NOT_SERVING, ends streams, waits for in-flight requests for at most
    /// the grace period, and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: health is NOT_SERVING, streams are ending");
        set_all(&self.health, ServingStatus::NotServing).await;
        self.shutdown.cancel();
        let result = match tokio::time::timeout(self.grace_period, self.task).await {
            Ok(joined) => joined.context("server task failed")?,
            Err(_) => {
                tracing::warn!(grace_period = ?self.grace_period, "grace period over; closing remaining connections");
                Ok(())
            }
        };
        self.db.close();
        result
    }

    /// Waits until the server stops by itself (it only does on an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task failed")?
    }
}

async fn set_all(health: &HealthReporter, status: ServingStatus) {
    for name in [
        "",
        <InventoryServiceServer<redstore_inventory::InventoryGrpc> as NamedService>::NAME,
        <SalesServiceServer<redstore_sales::SalesGrpc> as NamedService>::NAME,
        <AnalyticsServiceServer<redstore_analytics::AnalyticsGrpc> as NamedService>::NAME,
        <InventoryStreamServiceServer<redstore_stream_bridge::StreamGrpc> as NamedService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}

fn cors() -> CorsLayer {
    let expose = ["grpc-status", "grpc-message", "grpc-status-details-bin"].map(HeaderName::from_static);
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers(expose)
        .max_age(Duration::from_secs(86_400))
}

/// Starts every service on `config.listen` and returns once the port is bound.
pub async fn start(config: ServerConfig) -> anyhow::Result<Running> {
    let db = open_db(&config.data_dir)?;
    if config.demo && redstore_inventory::seed::seed_demo(&db).await? {
        tracing::info!("seeded the demo chain: store-1 (strict), store-2 (allows negative stock), 20 products");
    }
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();

    let inventory: Arc<dyn InventoryStore> = SqliteInventory::new(db.clone());
    let feed = redstore_stream_bridge::LiveFeed::from_embedded(&db, shutdown.clone());
    redstore_analytics::spawn_consumer(db.clone(), shutdown.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(redstore_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(redstore_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let web = GrpcWebLayer::new();
    let routes =
        tonic::service::Routes::new(web.layer(redstore_inventory::InventoryGrpc::new(inventory.clone()).into_server()))
            .add_service(
                web.layer(redstore_sales::SalesGrpc::new(redstore_sales::SqliteSales::new(db.clone())).into_server()),
            )
            .add_service(
                web.layer(
                    redstore_analytics::AnalyticsGrpc::new(Arc::new(redstore_analytics::SqliteReports(db.clone())))
                        .into_server(),
                ),
            )
            .add_service(
                web.layer(
                    redstore_stream_bridge::StreamGrpc::new(inventory.clone(), feed.clone(), shutdown.clone())
                        .into_server(),
                ),
            )
            .add_service(web.layer(health_service))
            .add_service(web.layer(reflection_v1))
            .add_service(web.layer(reflection_v1alpha));
    let router = routes
        .into_axum_router()
        .merge(redstore_stream_bridge::sse::router(inventory, feed, shutdown.clone(), config.sse_keep_alive))
        .layer(cors());

    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        // Small gRPC frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.context("server failed")
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "red store is listening");
    Ok(Running { addr, db, shutdown, health, task, grace_period: config.grace_period })
}
