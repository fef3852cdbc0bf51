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

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
