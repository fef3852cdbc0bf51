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

/// Where the process's Kafka worker serves its metrics, once it said, and the client every scrape
/// reads them with; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WorkerMetrics {
    addr: Arc<Mutex<Option<SocketAddr>>>,
    client: reqwest::Client,
}

impl WorkerMetrics {
    pub fn set(&self, addr: Option<SocketAddr>) {
        *self.addr.lock() = addr;
    }

    fn known(&self) -> bool {
        self.addr.lock().is_some()
    }

    async fn fetch(&self) -> Option<String> {
        let addr = (*self.addr.lock())?;
        let fetch = async { self.client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok() };
        tokio::time::timeout(WORKER_TIMEOUT, fetch).await.ok().flatten()
    }
}

/// The `/metrics` route, to merge into a router.
pub fn router(worker: WorkerMetrics) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(worker)
}

async fn scrape(State(worker): State<WorkerMetrics>) -> impl IntoResponse {
    let mut text = redstore_platform::metrics::render();
    let has_worker = worker.known();
    let worker_text = worker.fetch().await;
    if has_worker {
        text.push_str("# HELP redstore_kafka_worker_up Whether the Kafka worker answered this scrape.\n");
        text.push_str("# TYPE redstore_kafka_worker_up gauge\n");
        text.push_str(&format!("redstore_kafka_worker_up {}\n", u8::from(worker_text.is_some())));
    }
    if let Some(worker_text) = worker_text {
        text = merged(&text, &worker_text);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Two expositions as one: a family both have (the pools' gauges) keeps one `# HELP` and `# TYPE`
/// with both's samples, as Prometheus refuses a family declared twice; the rest follow.
fn merged(ours: &str, theirs: &str) -> String {
    let mut merged = families(ours);
    for (name, lines) in families(theirs) {
        match merged.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => known.extend(lines.into_iter().filter(|l| !l.starts_with('#'))),
            None => merged.push((name, lines)),
        }
    }
    merged.into_iter().flat_map(|(_, lines)| lines).map(|line| format!("{line}\n")).collect()
}

/// The families of an exposition, in order: each named by its `# HELP`/`# TYPE` lines (samples
/// before any belong to a family with no name), with its lines.
fn families(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut families: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let declared = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE "));
        let name = declared.and_then(|rest| rest.split_whitespace().next());
        match (name, families.last_mut()) {
            (Some(name), Some((current, lines))) if *current == name => lines.push(line),
            (Some(name), _) => families.push((name, vec![line])),
            (None, Some((_, lines))) => lines.push(line),
            (None, None) => families.push(("", vec![line])),
        }
    }
    families
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_both_processes_have_is_declared_once_with_both_samples() {
        let ours = "# TYPE redstore_db_pool_max_connections gauge\nredstore_db_pool_max_connections{pool=\"main\"} 16\n\n\
                    # TYPE redstore_live_watchers gauge\nredstore_live_watchers 0\n";
        let theirs = "# TYPE redstore_db_pool_max_connections gauge\nredstore_db_pool_max_connections{pool=\"kafka_worker\"} 10\n\n\
                      # TYPE redstore_outbox_backlog_events gauge\nredstore_outbox_backlog_events{outbox=\"sales\"} 0\n";
        assert_eq!(
            merged(ours, theirs),
            "# TYPE redstore_db_pool_max_connections gauge\n\
             redstore_db_pool_max_connections{pool=\"main\"} 16\n\
             redstore_db_pool_max_connections{pool=\"kafka_worker\"} 10\n\
             # TYPE redstore_live_watchers gauge\n\
             redstore_live_watchers 0\n\
             # TYPE redstore_outbox_backlog_events gauge\n\
             redstore_outbox_backlog_events{outbox=\"sales\"} 0\n"
        );
    }
}
