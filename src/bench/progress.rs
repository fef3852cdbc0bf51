//! Every bench's progress, phase by phase (set-up, warm-up, measuring, …): indicatif spinners and
//! bars on standard error, drawn only when it is a terminal. Piped or captured (scripts, tests,
//! `--json` into a file), nothing is drawn, and standard output is never touched.

use std::borrow::Cow;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// How often a spinner turns and a timed phase's bar moves.
const TICK: Duration = Duration::from_millis(200);

/// A bar on standard error (hidden when it is not a terminal), or a hidden one.
fn bar(enabled: bool, len: Option<u64>) -> ProgressBar {
    if enabled { ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() }
}

fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| fallback())
}

/// A phase of unknown length (set-up, settling): a spinner with `message` and the time it took.
pub(crate) fn spinner(enabled: bool, message: impl Into<Cow<'static, str>>) -> Phase {
    let bar = bar(enabled, None);
    bar.set_style(style("{spinner} {msg} [{elapsed}]", ProgressStyle::default_spinner));
    bar.set_message(message);
    if !bar.is_hidden() {
        bar.enable_steady_tick(TICK);
    }
    Phase(bar)
}

/// A phase of `len` steps (stores set up, clients connected, sales made): `inc` it as they go.
pub(crate) fn counter(enabled: bool, message: impl Into<Cow<'static, str>>, len: u64) -> Phase {
    let bar = bar(enabled, Some(len));
    bar.set_style(style("{msg} {bar:40} {pos}/{len} [{elapsed}]", ProgressStyle::default_bar));
    bar.set_message(message);
    Phase(bar)
}

/// A phase's spinner or bar, cleared from the terminal when dropped (its work done, failed or
/// cancelled), so that the summary after it stands alone.
pub(crate) struct Phase(ProgressBar);

impl Phase {
    /// The bar itself, for tasks that move it.
    pub(crate) fn bar(&self) -> ProgressBar {
        self.0.clone()
    }

    pub(crate) fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub(crate) fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.0.set_message(message);
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Phases on the clock (the warm-up, then the measured run): a bar for each, from its start to
/// its end, with `status()` (the counts so far) beside it, until the timeline is dropped.
pub(crate) struct Timeline(Option<tokio::task::JoinHandle<()>>);

impl Timeline {
    /// `phases`: (name, from, until), one after the other; an empty one is skipped.
    pub(crate) fn start(
        enabled: bool,
        phases: Vec<(&'static str, Instant, Instant)>,
        status: impl Fn() -> String + Send + 'static,
    ) -> Self {
        // A hidden bar draws nothing: no task to move it.
        if !enabled || ProgressDrawTarget::stderr().is_hidden() {
            return Self(None);
        }
        Self(Some(tokio::spawn(async move {
            for (name, from, until) in phases {
                let Some(length) = until.checked_duration_since(from).filter(|d| !d.is_zero()) else { continue };
                tokio::time::sleep_until(from).await;
                let phase = Phase(bar(true, Some(length.as_millis() as u64)));
                phase.0.set_style(style("{prefix:>10} {bar:40} {msg}", ProgressStyle::default_bar));
                phase.0.set_prefix(name);
                loop {
                    let now = Instant::now();
                    phase.0.set_position(now.saturating_duration_since(from).as_millis() as u64);
                    phase.0.set_message(format!(
                        "{:.0}/{:.0} s  {}",
                        now.saturating_duration_since(from).as_secs_f64().min(length.as_secs_f64()),
                        length.as_secs_f64(),
                        status()
                    ));
                    if now >= until {
                        break;
                    }
                    tokio::time::sleep(TICK.min(until - now)).await;
                }
            }
        })))
    }
}

impl Timeline {
    /// Stops it and clears its bar before the summary is printed.
    pub(crate) async fn finish(mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
