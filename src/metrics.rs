//! `GET /metrics`: the process's Prometheus text, with its Kafka worker's appended (the worker is
//! a child process with metrics of its own: relays, consumer lag, outbox backlog). On the server's
//! port by default, or alone on `--metrics-listen` (an address only the scraper reaches).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long a scrape waits for the worker's metrics before answering without them.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the process's Kafka worker serves its metrics, once it said; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WorkerMetrics(Arc<Mutex<Option<SocketAddr>>>);

impl WorkerMetrics {
    pub fn set(&self, addr: Option<SocketAddr>) {
        *self.0.lock() = addr;
    }

    async fn fetch(&self) -> Option<String> {
        let addr = (*self.0.lock())?;
        let fetch = async {
            let client = reqwest::Client::new();
            client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()
        };
        tokio::time::timeout(WORKER_TIMEOUT, fetch).await.ok().flatten()
    }
}

/// The `/metrics` route, to merge into a router.
pub fn router(worker: WorkerMetrics) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(worker)
}

async fn scrape(State(worker): State<WorkerMetrics>) -> impl IntoResponse {
    let mut text = redstore_platform::metrics::render();
    let has_worker = worker.0.lock().is_some();
    let worker_text = worker.fetch().await;
    if has_worker {
        text.push_str("# HELP redstore_kafka_worker_up Whether the Kafka worker answered this scrape.\n");
        text.push_str("# TYPE redstore_kafka_worker_up gauge\n");
        text.push_str(&format!("redstore_kafka_worker_up {}\n", u8::from(worker_text.is_some())));
    }
    if let Some(worker_text) = worker_text {
        text.push_str(&worker_text);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` alone on `addr` until `shutdown`; returns the address bound.
pub async fn serve_alone(
    addr: SocketAddr,
    worker: WorkerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(worker)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    Ok(bound)
}
