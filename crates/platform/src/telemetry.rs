//! Logging with `tracing`: human-readable on a terminal, JSON lines for log shippers; repeated
//! warnings are logged once per window with a count.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// What [`init`] installed; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use = "shut it down before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level. Traces are
/// exported when the standard `OTEL_*` variables ask for it ([`crate::trace`]); `service` names
/// this process in them unless `OTEL_SERVICE_NAME` does. Call it inside the tokio runtime.
pub fn init(format: LogFormat, service: &str) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, filter};

    let level = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if crate::trace::export_requested() { Some(crate::trace::provider(service)?) } else { None };
    let Some(provider) = provider else {
        // Logs alone: one global filter, with the spans made for traces turned off at their
        // call sites (per-layer filters cost every span a check per layer, on the hot paths).
        let level = level().add_directive(format!("{}=off", crate::trace::TARGET).parse().expect("a valid directive"));
        let _ = tracing_subscriber::registry().with(level).with(fmt_layer(format)).try_init();
        return Ok(Telemetry { provider: None });
    };
    // Spans made for traces say nothing a log line needs.
    let logs = filter::Targets::new()
        .with_target(crate::trace::TARGET, filter::LevelFilter::OFF)
        .with_default(filter::LevelFilter::TRACE);
    // The trace's own spans, the handlers' (`#[instrument]`, info), and warnings and errors as
    // events on them. A span left out would cut its children off their trace.
    let wanted = filter::filter_fn(|meta| {
        meta.target() == crate::trace::TARGET
            || (meta.is_span() && *meta.level() <= tracing::Level::INFO)
            || *meta.level() <= tracing::Level::WARN
    });
    let traces = crate::trace::layer(&provider).with_filter(wanted);
    let fmt = fmt_layer(format).with_filter(level()).with_filter(logs);
    let _ = tracing_subscriber::registry().with(fmt).with(traces).try_init();
    Ok(Telemetry { provider: Some(provider) })
}

/// Log lines on stderr, human or JSON.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour(&std::io::stderr()));
    match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }
}

/// Colour in human logs only on a terminal, and not when `NO_COLOR` is set (no-color.org): escape
/// codes in a log file or a journal are noise to whoever reads it.
fn colour(output: &impl IsTerminal) -> bool {
    output.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How often a repeated warning is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Admits one occurrence of a repeated event per window: while a backend is down, the same warning
/// would otherwise be written once per event and store (thousands a second).
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    /// When the last admitted occurrence was, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl Throttle {
    pub const fn new(window: Duration) -> Self {
        Self { window, state: parking_lot::const_mutex(None) }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were held back since the
    /// last one logged; `None` while the window lasts.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock();
        match &mut *state {
            Some((since, held)) if now.duration_since(*since) < self.window => {
                *held += 1;
                None
            }
            last => {
                let held = last.map_or(0, |(_, held)| held);
                *last = Some((now, 0));
                Some(held)
            }
        }
    }
}

/// `tracing::warn!` at most once per [`WARN_EVERY`] from this call site, with a `repeated` field
/// counting the occurrences held back since the last one logged.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::telemetry::Throttle = $crate::telemetry::Throttle::new($crate::telemetry::WARN_EVERY);
        if let Some(repeated) = THROTTLE.admit() {
            tracing::warn!(repeated, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_is_admitted_once_per_window_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_millis(200));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.admit(), Some(1000), "the next window says how many were held back");
        assert_eq!(throttle.admit(), None);
    }
}
