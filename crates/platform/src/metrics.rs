//! Prometheus metrics: recorded anywhere through the `metrics` facade, rendered as Prometheus text
//! by whoever serves `/metrics`. Labels are low-cardinality only (a method, an outcome, a stage,
//! never a store).
//!
//! Before [`install`] nothing is recorded and every macro call costs next to nothing.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

/// Latency buckets, in seconds: from a cached read to a slow saga.
const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Batch-size buckets: one write alone up to a full batch.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

type Sampler = Arc<dyn Fn() + Send + Sync>;

struct Registry {
    handle: PrometheusHandle,
    samplers: Mutex<Vec<Sampler>>,
}

static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing), from within the tokio runtime.
/// False when another recorder was installed first.
pub fn install() -> bool {
    REGISTRY
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZES))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histogram samples wait in buckets until upkeep folds them in: without a scrape
            // they would pile up, so upkeep runs on its own too.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let handle = handle.clone();
                runtime.spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        handle.run_upkeep();
                    }
                });
            }
            Some(Registry { handle, samplers: Mutex::new(Vec::new()) })
        })
        .is_some()
}

/// Runs `sample` before every rendering: for gauges read from elsewhere (a pool's size) rather
/// than kept up to date.
pub fn on_render(sample: impl Fn() + Send + Sync + 'static) {
    if let Some(Some(registry)) = REGISTRY.get() {
        registry.samplers.lock().push(Arc::new(sample));
    }
}

/// Every metric as Prometheus text; empty before [`install`].
pub fn render() -> String {
    let Some(Some(registry)) = REGISTRY.get() else { return String::new() };
    let samplers = registry.samplers.lock().clone();
    for sample in samplers {
        sample();
    }
    registry.handle.run_upkeep();
    registry.handle.render()
}

/// Seconds since `at_ms` (Unix milliseconds), never negative: how late an event is.
pub fn seconds_since_ms(at_ms: i64) -> f64 {
    let now = crate::time::unix_ms(std::time::SystemTime::now());
    now.saturating_sub(at_ms).max(0) as f64 / 1000.0
}

/// How late an event is, from its envelope's `occurred_at`; `None` when it has none.
pub fn event_age_seconds(event: &redstore_proto::events::EventEnvelope) -> Option<f64> {
    Some(seconds_since_ms(crate::time::timestamp_ms(event.occurred_at.as_ref()?)))
}

/// The use of a PostgreSQL pool, sampled at every rendering: `redstore_db_pool_connections` by
/// `state` (idle, in use) and `redstore_db_pool_max_connections`, labelled with `pool`.
pub fn watch_pg_pool(pool: &'static str, handle: &sqlx::PgPool) {
    let handle = handle.clone();
    on_render(move || {
        let size = handle.size();
        let idle = handle.num_idle() as u32;
        metrics::gauge!("redstore_db_pool_connections", "pool" => pool, "state" => "idle").set(idle);
        metrics::gauge!("redstore_db_pool_connections", "pool" => pool, "state" => "in_use")
            .set(size.saturating_sub(idle));
        metrics::gauge!("redstore_db_pool_max_connections", "pool" => pool).set(handle.options().get_max_connections());
    });
}

/// A request's outcome as a label: `ok`, `refused` (the caller's to mend: invalid, not found, not
/// allowed, out of stock) or `failed` (the server's or a backend's fault).
pub fn outcome<T>(result: &Result<T, crate::error::Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) if server_fault(e.code()) => "failed",
        Err(_) => "refused",
    }
}

/// The codes that are the server's fault rather than the caller's, after OpenTelemetry's gRPC
/// conventions for servers.
pub fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}
