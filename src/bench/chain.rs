//! `redstore bench chain`: issue #14's chain simulation against a running deployment, in one run,
//! and one summary of it: what the chain costs at rest at each size (`idle_chain`), the pgbench
//! anchor on the same PostgreSQL, checkouts at each spread of stores × terminals (`checkout`),
//! and live updates across stores (`live`); each figure with its ratio to the anchor and the
//! issue's target, met or not.
//!
//! The chain at rest is measured first, on the deployment as it is given (a fresh one from
//! `bench/chain.sh`), so that its sizes are the whole chain's and nothing the sales left behind
//! (autovacuum, late statistics) is counted; the sales then run in a chain of that size, as a real
//! chain's do.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::process::Command;

use super::{
    CheckoutBench, IdleChainBench, IdleChainSummary, LiveBench, LiveSummary, Report, Summary, ms, percentile, progress,
};

/// Issue #14's targets.
const MIN_ANCHOR_RATIO: f64 = 0.6;
/// The checkout p99 target holds at this many concurrent terminals.
const P99_TERMINALS: usize = 32;
const CHECKOUT_P99_MS: f64 = 25.0;
const LIVE_P99_MS: f64 = 50.0;
const IDLE_MAX_TRANSACTIONS_PER_SECOND: f64 = 10.0;
const IDLE_MAX_CPU_PERCENT: f64 = 1.0;

/// pgbench's scratch database, made and dropped by the anchor on the deployment's server.
const ANCHOR_DATABASE: &str = "redstore_chain_anchor";
/// pgbench's scale factor (100,000 accounts per unit), as bench/anchor.sh uses.
const ANCHOR_SCALE: &str = "10";

/// What `redstore bench chain` runs, and against what.
#[derive(clap::Args, Clone, Debug)]
pub struct ChainBench {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    pub auth: crate::client_auth::ClientAuth,
    /// The deployment's sales service (gRPC); with every service in one process, the only target.
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// The inventory service, where stores and products are set up (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_INVENTORY_TARGET")]
    pub inventory_target: Option<String>,
    /// The stream bridge the live bench's SSE clients connect to (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_SSE_TARGET")]
    pub sse_target: Option<String>,
    /// The deployment's database, whose transactions are counted at rest (the application role
    /// will do). Without it the chain at rest is not measured.
    #[arg(long, env = "REDSTORE_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// An admin role on the deployment's PostgreSQL server (postgres://postgres@host:5432/postgres):
    /// the anchor makes pgbench's scratch database there and drops it after. Without it there is
    /// no anchor.
    #[arg(long, env = "REDSTORE_BENCH_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// The pgbench program (PostgreSQL's client programs have it).
    #[arg(long, env = "REDSTORE_BENCH_PGBENCH", default_value = "pgbench")]
    pub pgbench: String,
    /// The deployment's processes, comma-separated (their children too: the Kafka worker), whose
    /// CPU and RSS at rest are read from /proc.
    #[arg(long, env = "REDSTORE_BENCH_SERVER_PIDS", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// How long the anchor and each spread's checkouts are measured.
    #[arg(long, env = "REDSTORE_BENCH_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Each spread's checkouts first run this long unmeasured.
    #[arg(long, env = "REDSTORE_BENCH_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Checkout spreads, stores × terminals in each, comma-separated (1x32: 32 terminals in one store).
    #[arg(long, env = "REDSTORE_BENCH_SPREADS", value_delimiter = ',', default_value = "1x32,32x1,256x1,1000x1")]
    pub spreads: Vec<Spread>,
    /// First part of every store id the bench makes (`<prefix>-32x1-7`, `<prefix>-live-3`, …).
    #[arg(long, env = "REDSTORE_BENCH_PREFIX", default_value = "chain")]
    pub prefix: String,
    /// Live: connected SSE clients (client c watches store c mod --live-stores).
    #[arg(long, env = "REDSTORE_BENCH_LIVE_CLIENTS", default_value_t = 2000)]
    pub live_clients: usize,
    /// Live: stores the clients watch and the sales go to.
    #[arg(long, env = "REDSTORE_BENCH_LIVE_STORES", default_value_t = 1000)]
    pub live_stores: usize,
    /// Live: sales made while they watch.
    #[arg(long, env = "REDSTORE_BENCH_LIVE_SALES", default_value_t = 2000)]
    pub live_sales: u64,
    /// Live: sales per second.
    #[arg(long, env = "REDSTORE_BENCH_LIVE_RATE", default_value_t = 100)]
    pub live_rate: u32,
    /// Leave out live updates.
    #[arg(long)]
    pub no_live: bool,
    /// The chain's sizes at rest, comma-separated: stores made before each is measured (each
    /// size counts the ones before it).
    #[arg(long, env = "REDSTORE_BENCH_IDLE_STORES", value_delimiter = ',', default_value = "1000,10000")]
    pub idle_stores: Vec<usize>,
    /// Leave out the chain at rest.
    #[arg(long)]
    pub no_idle: bool,
    /// How long to wait at each size before counting (default: 20 s and 1 s per 100 stores).
    #[arg(long, env = "REDSTORE_BENCH_IDLE_SETTLE", value_parser = humantime::parse_duration)]
    pub idle_settle: Option<Duration>,
    /// How long to count at each size.
    #[arg(long, env = "REDSTORE_BENCH_IDLE_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_duration: Duration,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Stores × terminals in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub stores: usize,
    pub terminals_each: usize,
}

impl Spread {
    pub fn terminals(&self) -> usize {
        self.stores * self.terminals_each
    }
}

impl std::str::FromStr for Spread {
    type Err = String;

    /// `32x1`: 32 stores with a terminal each.
    fn from_str(s: &str) -> Result<Self, String> {
        let wrong = || format!("{s:?} is not stores x terminals, e.g. 32x1");
        let (stores, each) = s.trim().split_once(['x', '×']).ok_or_else(wrong)?;
        let number = |n: &str| n.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(wrong);
        Ok(Self { stores: number(stores)?, terminals_each: number(each)? })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{} {}", thousands(n as f64), if n == 1 { one } else { many });
        write!(
            f,
            "{} × {}",
            plural(self.stores, "store", "stores"),
            plural(self.terminals_each, "terminal", "terminals")
        )
    }
}

/// A figure, or why there is none (left out, no pgbench, a phase that failed).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    Measured(T),
    NotMeasured(String),
}

impl<T> Outcome<T> {
    fn of<U>(result: anyhow::Result<U>, figures: impl FnOnce(U) -> T) -> Self {
        match result {
            Ok(u) => Self::Measured(figures(u)),
            Err(e) => Self::NotMeasured(format!("failed: {e:#}")),
        }
    }

    fn measured(&self) -> Option<&T> {
        match self {
            Self::Measured(t) => Some(t),
            Self::NotMeasured(_) => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AnchorFigures {
    pub transactions_per_second: f64,
    /// From pgbench's per-transaction log; `None` when it logged nothing.
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckoutFigures {
    pub sales: u64,
    pub failed: u64,
    /// Failed in the warm-up: reported, not held against the target.
    pub warmup_failures: u64,
    pub sales_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<Summary> for CheckoutFigures {
    fn from(s: Summary) -> Self {
        Self {
            sales: s.sales,
            failed: s.failed,
            warmup_failures: s.warmup_failures,
            sales_per_second: s.sales_per_second(),
            p50_ms: ms(s.latency.p50),
            p99_ms: ms(s.latency.p99),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SpreadRun {
    pub spread: Spread,
    pub checkout: Outcome<CheckoutFigures>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveFigures {
    pub clients: usize,
    pub stores: usize,
    pub sales: u64,
    pub expected: u64,
    pub received: u64,
    pub misdelivered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<LiveSummary> for LiveFigures {
    fn from(s: LiveSummary) -> Self {
        Self {
            clients: s.clients,
            stores: s.stores,
            sales: s.sales,
            expected: s.expected,
            received: s.received,
            misdelivered: s.misdelivered,
            p50_ms: ms(s.latency.p50),
            p99_ms: ms(s.latency.p99),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleProcess {
    pub pid: u32,
    pub command: String,
    pub cpu_percent: f64,
    pub rss_mib: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleFigures {
    /// Every store in the deployment's database (the chain's and the bench's own set-up store).
    pub stores_in_database: Option<i64>,
    pub transactions_per_second: f64,
    pub processes: Vec<IdleProcess>,
}

impl From<IdleChainSummary> for IdleFigures {
    fn from(s: IdleChainSummary) -> Self {
        Self {
            stores_in_database: s.stores_in_database,
            transactions_per_second: s.transactions as f64 / s.measured.as_secs_f64().max(1e-9),
            processes: s
                .processes
                .into_iter()
                .map(|p| IdleProcess {
                    pid: p.pid,
                    command: p.command,
                    cpu_percent: p.cpu_share * 100.0,
                    rss_mib: p.rss as f64 / (1024.0 * 1024.0),
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleRun {
    pub stores: usize,
    pub at_rest: Outcome<IdleFigures>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChainSummary {
    pub target: String,
    /// How long the anchor and each spread were measured.
    pub seconds: f64,
    pub anchor: Outcome<AnchorFigures>,
    pub checkout: Vec<SpreadRun>,
    pub live: Outcome<LiveFigures>,
    pub idle: Vec<IdleRun>,
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub figure: String,
    pub result: String,
    /// The figure ÷ the anchor's transactions/s, where the issue compares them.
    pub ratio: Option<f64>,
    pub target: String,
    pub verdict: Verdict,
}

/// One part of a target, and whether it held (`None`: cannot tell, e.g. no anchor to compare with).
struct Check {
    what: &'static str,
    held: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    /// The parts that did not hold.
    NotMet(Vec<&'static str>),
    /// Every part that could be told held; these could not be.
    NotKnown(Vec<&'static str>),
    NoTarget,
    NotMeasured,
}

impl Verdict {
    fn of(checks: &[Check]) -> Self {
        let failed: Vec<_> = checks.iter().filter(|c| c.held == Some(false)).map(|c| c.what).collect();
        let unknown: Vec<_> = checks.iter().filter(|c| c.held.is_none()).map(|c| c.what).collect();
        match (failed.is_empty(), unknown.is_empty()) {
            (false, _) => Self::NotMet(failed),
            (true, false) => Self::NotKnown(unknown),
            (true, true) => Self::Met,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Met => write!(f, "met"),
            Self::NotMet(what) => write!(f, "not met: {}", what.join(", ")),
            Self::NotKnown(what) => write!(f, "not known: {}", what.join(", ")),
            Self::NoTarget => Ok(()),
            Self::NotMeasured => write!(f, "not measured"),
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl ChainSummary {
    /// The summary's lines: the anchor, each spread, live, the chain at rest at each size.
    pub fn rows(&self) -> Vec<Row> {
        let anchor_tps = self.anchor.measured().map(|a| a.transactions_per_second);
        let mut rows = vec![anchor_row(&self.anchor, self.seconds)];
        rows.extend(self.checkout.iter().map(|run| checkout_row(run, anchor_tps)));
        rows.push(live_row(&self.live));
        rows.extend(self.idle.iter().map(idle_row));
        rows
    }

    /// [`Report::json`] as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.json()).unwrap_or_default()
    }
}

/// `redstore bench chain --json`: every figure (`summary`) and the table's lines (`rows`).
#[derive(Clone, Debug, Serialize)]
pub struct ChainJson {
    pub bench: &'static str,
    pub summary: ChainSummary,
    pub rows: Vec<Row>,
}

impl Report for ChainSummary {
    type Json = ChainJson;

    fn json(&self) -> ChainJson {
        ChainJson { bench: "chain", summary: self.clone(), rows: self.rows() }
    }
}

/// A Markdown table, as docs/BENCHMARKS.md keeps its figures.
impl std::fmt::Display for ChainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chain benchmark against {}, {} s per checkout figure and the anchor", self.target, self.seconds)?;
        writeln!(f)?;
        writeln!(f, "| figure | result | × anchor | target | verdict |")?;
        write!(f, "|---|---|---|---|---|")?;
        for row in self.rows() {
            let ratio = row.ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
            write!(f, "\n| {} | {} | {ratio} | {} | {} |", row.figure, row.result, row.target, row.verdict)?;
        }
        Ok(())
    }
}

fn not_measured_row(figure: String, target: String, why: &str) -> Row {
    Row { figure, result: format!("not measured: {why}"), ratio: None, target, verdict: Verdict::NotMeasured }
}

fn anchor_row(anchor: &Outcome<AnchorFigures>, seconds: f64) -> Row {
    let figure = format!("anchor: `pgbench -b simple-update -c 32 -j 2 -T {}`", pgbench_seconds(seconds));
    match anchor {
        Outcome::NotMeasured(why) => not_measured_row(figure, String::new(), why),
        Outcome::Measured(a) => {
            let p99 = a.p99_ms.map(|p| format!(", p99 {p:.1} ms")).unwrap_or_default();
            Row {
                figure,
                result: format!("{} tps{p99}", thousands(a.transactions_per_second)),
                ratio: None,
                target: String::new(),
                verdict: Verdict::NoTarget,
            }
        }
    }
}

fn checkout_row(run: &SpreadRun, anchor_tps: Option<f64>) -> Row {
    let figure = format!("checkout, {}", run.spread);
    let p99_applies = run.spread.terminals() == P99_TERMINALS;
    let target = if p99_applies {
        format!("≥ {MIN_ANCHOR_RATIO}×, p99 ≤ {CHECKOUT_P99_MS} ms")
    } else {
        format!("≥ {MIN_ANCHOR_RATIO}×")
    };
    let c = match &run.checkout {
        Outcome::NotMeasured(why) => return not_measured_row(figure, target, why),
        Outcome::Measured(c) => c,
    };
    let ratio = anchor_tps.filter(|tps| *tps > 0.0).map(|tps| c.sales_per_second / tps);
    let mut checks = vec![match ratio {
        Some(r) => Check { what: "× anchor", held: Some(r >= MIN_ANCHOR_RATIO) },
        None => Check { what: "× anchor (no anchor)", held: None },
    }];
    if p99_applies {
        checks.push(Check { what: "p99", held: Some(c.p99_ms <= CHECKOUT_P99_MS) });
    }
    checks.push(Check { what: "failed sales", held: Some(c.failed == 0) });
    let failed = if c.failed > 0 { format!(", {} failed", thousands(c.failed as f64)) } else { String::new() };
    Row {
        figure,
        result: format!("{} sales/s, p99 {:.1} ms{failed}", thousands(c.sales_per_second), c.p99_ms),
        ratio,
        target,
        verdict: Verdict::of(&checks),
    }
}

fn live_row(live: &Outcome<LiveFigures>) -> Row {
    let target = format!("p99 ≤ {LIVE_P99_MS} ms, every event to its own store's clients in order");
    let l = match live {
        Outcome::NotMeasured(why) => return not_measured_row("live updates".to_owned(), target, why),
        Outcome::Measured(l) => l,
    };
    let checks = [
        Check { what: "p99", held: Some(l.p99_ms <= LIVE_P99_MS) },
        Check { what: "missed events", held: Some(l.received >= l.expected) },
        Check { what: "misdelivered events", held: Some(l.misdelivered == 0) },
    ];
    Row {
        figure: format!(
            "live updates, {} SSE clients over {} stores, {} sales",
            thousands(l.clients as f64),
            thousands(l.stores as f64),
            thousands(l.sales as f64)
        ),
        result: format!(
            "p99 {:.1} ms, {} of {} events, {} out of order or of another store",
            l.p99_ms,
            thousands(l.received as f64),
            thousands(l.expected as f64),
            thousands(l.misdelivered as f64)
        ),
        ratio: None,
        target,
        verdict: Verdict::of(&checks),
    }
}

fn idle_row(run: &IdleRun) -> Row {
    let target = format!("≤ {IDLE_MAX_TRANSACTIONS_PER_SECOND} tx/s, < {IDLE_MAX_CPU_PERCENT} % of a core per process");
    let mut figure = format!("chain at rest, {} stores", thousands(run.stores as f64));
    let i = match &run.at_rest {
        Outcome::NotMeasured(why) => return not_measured_row(figure, target, why),
        Outcome::Measured(i) => i,
    };
    if let Some(n) = i.stores_in_database {
        figure.push_str(&format!(" ({} in the database)", thousands(n as f64)));
    }
    let cpu = if i.processes.is_empty() {
        Check { what: "CPU (no --server-pid)", held: None }
    } else {
        Check { what: "CPU", held: Some(i.processes.iter().all(|p| p.cpu_percent < IDLE_MAX_CPU_PERCENT)) }
    };
    let checks =
        [Check { what: "tx/s", held: Some(i.transactions_per_second <= IDLE_MAX_TRANSACTIONS_PER_SECOND) }, cpu];
    let mut result = format!("{:.1} tx/s", i.transactions_per_second);
    for p in &i.processes {
        result.push_str(&format!("; `{}` {:.2} %, {:.1} MiB", p.command, p.cpu_percent, p.rss_mib));
    }
    Row { figure, result, ratio: None, target, verdict: Verdict::of(&checks) }
}

/// A whole number with thousands separators: 12,345.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if n.round() < 0.0 { format!("-{grouped}") } else { grouped }
}

/// Runs every phase in turn; a phase that fails is reported as not measured, and the rest run.
pub async fn chain(cfg: ChainBench) -> anyhow::Result<ChainSummary> {
    let inventory_target = cfg.inventory_target.clone().unwrap_or_else(|| cfg.target.clone());
    let idle = at_rest(&cfg, &inventory_target).await;

    eprintln!("chain: the anchor, pgbench for {} s", pgbench_seconds(cfg.duration.as_secs_f64()));
    let anchor = anchor(&cfg).await;

    let mut checkout = Vec::with_capacity(cfg.spreads.len());
    for &spread in &cfg.spreads {
        eprintln!("chain: checkout, {spread}, {}", humantime::format_duration(cfg.duration));
        let bench = CheckoutBench {
            target: cfg.target.clone(),
            inventory_target: inventory_target.clone(),
            terminals: spread.terminals(),
            sales: None,
            duration: Some(cfg.duration),
            warmup: cfg.warmup,
            lines: 3,
            store_id: format!("{}-{}x{}", cfg.prefix, spread.stores, spread.terminals_each),
            stores: spread.stores,
            progress: true,
            auth: cfg.auth.clone(),
        };
        checkout.push(SpreadRun { spread, checkout: Outcome::of(super::checkout(bench).await, CheckoutFigures::from) });
    }

    let live = if cfg.no_live {
        Outcome::NotMeasured("--no-live".to_owned())
    } else {
        eprintln!("chain: live updates, {} SSE clients over {} stores", cfg.live_clients, cfg.live_stores);
        let bench = LiveBench {
            target: cfg.target.clone(),
            inventory_target: inventory_target.clone(),
            sse_target: cfg.sse_target.clone().unwrap_or_else(|| cfg.target.clone()),
            clients: cfg.live_clients,
            sales: cfg.live_sales,
            rate: cfg.live_rate,
            store_id: format!("{}-live", cfg.prefix),
            stores: cfg.live_stores,
            progress: true,
            auth: cfg.auth.clone(),
        };
        Outcome::of(super::live(bench).await, LiveFigures::from)
    };

    Ok(ChainSummary { target: cfg.target.clone(), seconds: cfg.duration.as_secs_f64(), anchor, checkout, live, idle })
}

/// The chain at rest at each size, one after the other (each size adds to the stores before it).
async fn at_rest(cfg: &ChainBench, inventory_target: &str) -> Vec<IdleRun> {
    let why_not = match (&cfg.database_url, cfg.no_idle) {
        (_, true) => Some("--no-idle"),
        (None, false) => Some("no --database-url to count its transactions"),
        (Some(_), false) => None,
    };
    let mut runs = Vec::with_capacity(cfg.idle_stores.len());
    for &stores in &cfg.idle_stores {
        let at_rest = match (why_not, &cfg.database_url) {
            (None, Some(database_url)) => {
                let settle = cfg.idle_settle.unwrap_or_else(|| settle_for(stores));
                eprintln!(
                    "chain: at rest, {stores} stores (set up, {} to settle, {} counted)",
                    humantime::format_duration(settle),
                    humantime::format_duration(cfg.idle_duration)
                );
                let bench = IdleChainBench {
                    inventory_target: inventory_target.to_owned(),
                    target: cfg.target.clone(),
                    stores,
                    prefix: format!("{}-idle", cfg.prefix),
                    concurrency: 64,
                    sell: true,
                    database_url: database_url.clone(),
                    pids: cfg.server_pid.clone(),
                    settle,
                    measure: cfg.idle_duration,
                    progress: true,
                    auth: cfg.auth.clone(),
                };
                Outcome::of(super::idle_chain(bench).await, IdleFigures::from)
            }
            _ => Outcome::NotMeasured(why_not.unwrap_or_default().to_owned()),
        };
        runs.push(IdleRun { stores, at_rest });
    }
    runs
}

/// How long a chain of `stores` takes to go quiet after it is set up: the slowest sweep's period
/// a few times over, and the stores' last events relayed and consumed.
fn settle_for(stores: usize) -> Duration {
    Duration::from_secs(20 + stores as u64 / 100)
}

/// pgbench's transactions/s on a scratch database of the deployment's server, as bench/anchor.sh
/// measured it: initialised, a checkpoint, `simple-update` with 32 clients on 2 threads.
async fn anchor(cfg: &ChainBench) -> Outcome<AnchorFigures> {
    match Command::new(&cfg.pgbench).arg("--version").kill_on_drop(true).output().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::NotMeasured(format!(
                "{} is not installed (PostgreSQL's client programs have it)",
                cfg.pgbench
            ));
        }
        Err(e) => return Outcome::NotMeasured(format!("cannot run {}: {e}", cfg.pgbench)),
        Ok(_) => {}
    }
    let Some(admin_url) = &cfg.admin_url else {
        return Outcome::NotMeasured("no --admin-url to make pgbench's database".to_owned());
    };
    let _phase =
        progress::spinner(true, format!("anchor: pgbench for {} s", pgbench_seconds(cfg.duration.as_secs_f64())));
    Outcome::of(measure_anchor(admin_url, &cfg.pgbench, cfg.duration).await, |a| a)
}

async fn measure_anchor(admin_url: &str, pgbench: &str, duration: Duration) -> anyhow::Result<AnchorFigures> {
    use sqlx::ConnectOptions as _;
    // Its statements are slow by nature (DROP DATABASE, CHECKPOINT): not worth a warning each.
    let options: sqlx::postgres::PgConnectOptions =
        admin_url.parse().context("--admin-url is not a postgres:// URL")?;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.disable_statement_logging())
        .await
        .context("cannot connect to --admin-url")?;
    let drop_database = format!("DROP DATABASE IF EXISTS {ANCHOR_DATABASE} WITH (FORCE)");
    // One left by a run that was killed (asked first: PostgreSQL's notice of a database that is
    // not there would be logged in the middle of the benchmark's output).
    let left: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(ANCHOR_DATABASE)
        .fetch_optional(&admin)
        .await?;
    if left.is_some() {
        sqlx::query(&drop_database).execute(&admin).await?;
    }
    sqlx::query(&format!("CREATE DATABASE {ANCHOR_DATABASE}"))
        .execute(&admin)
        .await
        .context("create pgbench's database (does --admin-url name a role that may?)")?;
    let url = redstore_platform::pg::scratch::with_database(admin_url, ANCHOR_DATABASE);
    let measured = run_pgbench(&admin, &url, pgbench, duration).await;
    // pgbench measured a quiet server: so do the checkouts after it, with no autovacuum of its
    // dead rows and none of its dirty pages behind them.
    let dropped = sqlx::query(&drop_database).execute(&admin).await;
    checkpoint(&admin).await;
    admin.close().await;
    let figures = measured?;
    dropped.context("drop pgbench's database")?;
    Ok(figures)
}

async fn run_pgbench(
    admin: &sqlx::PgPool,
    url: &str,
    pgbench: &str,
    duration: Duration,
) -> anyhow::Result<AnchorFigures> {
    output(Command::new(pgbench).args(["-i", "-q", "-s", ANCHOR_SCALE, url])).await.context("pgbench -i")?;
    checkpoint(admin).await;
    let logs = tempfile::tempdir()?;
    let seconds = pgbench_seconds(duration.as_secs_f64()).to_string();
    let printed = output(
        Command::new(pgbench)
            .args(["-b", "simple-update", "-c", "32", "-j", "2", "-T", &seconds, "-l", "--log-prefix"])
            .arg(logs.path().join("tx"))
            .arg(url),
    )
    .await
    .context("pgbench")?;
    let transactions_per_second = pgbench_tps(&printed).context("pgbench printed no tps")?;
    let mut latencies = Vec::new();
    let mut files = tokio::fs::read_dir(logs.path()).await?;
    while let Some(file) = files.next_entry().await? {
        latencies.extend(logged_latencies(&tokio::fs::read_to_string(file.path()).await?));
    }
    latencies.sort_unstable();
    let p99_ms = (!latencies.is_empty()).then(|| ms(percentile(&latencies, 99.0)));
    Ok(AnchorFigures { transactions_per_second, p99_ms })
}

/// pgbench runs for whole seconds (`-T`), at least one.
fn pgbench_seconds(seconds: f64) -> u64 {
    (seconds as u64).max(1)
}

/// A program's standard output; its standard error is the error when it fails.
async fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command.kill_on_drop(true).output().await?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A checkpoint, so that the next phase does not pay for the last one's dirty pages; a role that
/// may not is only warned about.
async fn checkpoint(admin: &sqlx::PgPool) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(admin).await {
        tracing::warn!(error = %e, "no checkpoint between the benchmark's phases");
    }
}

/// `tps = 1234.567890 (without initial connection time)`.
fn pgbench_tps(printed: &str) -> Option<f64> {
    printed.lines().find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
}

/// Each transaction's latency from pgbench's per-transaction log (`-l`): the third column, in
/// microseconds.
fn logged_latencies(log: &str) -> impl Iterator<Item = Duration> + '_ {
    log.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse().ok().map(Duration::from_micros))
}

#[cfg(test)]
mod tests {
    //! The figures below are invented inputs for the summary's ratios, verdicts and formatting,
    //! not measurements (those are in docs/BENCHMARKS.md).
    use super::*;

    fn spread(stores: usize, terminals_each: usize) -> Spread {
        Spread { stores, terminals_each }
    }

    fn sold(sales_per_second: f64, p99_ms: f64, failed: u64) -> Outcome<CheckoutFigures> {
        Outcome::Measured(CheckoutFigures {
            sales: 1000,
            failed,
            warmup_failures: 0,
            sales_per_second,
            p50_ms: p99_ms / 2.0,
            p99_ms,
        })
    }

    fn anchor(tps: f64) -> Outcome<AnchorFigures> {
        Outcome::Measured(AnchorFigures { transactions_per_second: tps, p99_ms: Some(12.0) })
    }

    fn idle(tps: f64, cpu_percents: &[f64]) -> IdleRun {
        let processes = cpu_percents
            .iter()
            .enumerate()
            .map(|(i, &cpu_percent)| IdleProcess {
                pid: i as u32 + 100,
                command: "up --database-url".into(),
                cpu_percent,
                rss_mib: 40.0,
            })
            .collect();
        IdleRun {
            stores: 10_000,
            at_rest: Outcome::Measured(IdleFigures {
                stores_in_database: Some(10_001),
                transactions_per_second: tps,
                processes,
            }),
        }
    }

    fn live(p99_ms: f64, received: u64, misdelivered: u64) -> Outcome<LiveFigures> {
        Outcome::Measured(LiveFigures {
            clients: 2000,
            stores: 1000,
            sales: 2000,
            expected: 4000,
            received,
            misdelivered,
            p50_ms: 10.0,
            p99_ms,
        })
    }

    fn summary(anchor: Outcome<AnchorFigures>, checkout: Vec<SpreadRun>) -> ChainSummary {
        ChainSummary {
            target: "http://127.0.0.1:50081".into(),
            seconds: 15.0,
            anchor,
            checkout,
            live: Outcome::NotMeasured("--no-live".into()),
            idle: vec![],
        }
    }

    #[test]
    fn spreads_parse_as_stores_by_terminals() {
        assert_eq!("32x1".parse::<Spread>(), Ok(spread(32, 1)));
        assert_eq!(" 1×32 ".parse::<Spread>(), Ok(spread(1, 32)));
        for bad in ["32", "x1", "0x1", "3x-1", "axb", ""] {
            assert!(bad.parse::<Spread>().is_err(), "{bad:?}");
        }
        assert_eq!(spread(1000, 1).to_string(), "1,000 stores × 1 terminal");
        assert_eq!(spread(1, 32).to_string(), "1 store × 32 terminals");
    }

    #[test]
    fn a_spread_is_compared_with_the_anchor_and_held_to_p99_only_at_32_terminals() {
        // Made-up figures, chosen around the targets.
        let s = summary(
            anchor(4000.0),
            vec![
                SpreadRun { spread: spread(1, 32), checkout: sold(4000.0, 10.0, 0) },
                SpreadRun { spread: spread(32, 1), checkout: sold(2000.0, 26.0, 0) },
                SpreadRun { spread: spread(256, 1), checkout: sold(2480.0, 100.0, 0) },
                SpreadRun { spread: spread(1000, 1), checkout: sold(2320.0, 400.0, 0) },
            ],
        );
        let rows = s.rows();
        let ratios: Vec<_> = rows[1..5].iter().map(|r| r.ratio.map(|x| (x * 100.0).round() / 100.0)).collect();
        assert_eq!(ratios, [Some(1.0), Some(0.5), Some(0.62), Some(0.58)]);
        assert_eq!(rows[1].verdict, Verdict::Met);
        assert_eq!(rows[2].verdict, Verdict::NotMet(vec!["× anchor", "p99"]));
        assert_eq!(rows[3].verdict, Verdict::Met, "no p99 target at 256 terminals");
        assert_eq!(rows[4].verdict, Verdict::NotMet(vec!["× anchor"]));
        assert_eq!(rows[1].target, "≥ 0.6×, p99 ≤ 25 ms");
        assert_eq!(rows[3].target, "≥ 0.6×");
    }

    #[test]
    fn failed_sales_fail_the_target() {
        let s = summary(anchor(4000.0), vec![SpreadRun { spread: spread(1, 32), checkout: sold(4000.0, 10.0, 3) }]);
        let row = &s.rows()[1];
        assert_eq!(row.verdict, Verdict::NotMet(vec!["failed sales"]));
        assert_eq!(row.result, "4,000 sales/s, p99 10.0 ms, 3 failed");
    }

    #[test]
    fn without_an_anchor_the_ratio_is_not_known_but_a_missed_p99_still_fails() {
        let missing = Outcome::NotMeasured("pgbench is not installed".into());
        let s = summary(
            missing,
            vec![
                SpreadRun { spread: spread(1, 32), checkout: sold(4000.0, 10.0, 0) },
                SpreadRun { spread: spread(32, 1), checkout: sold(2000.0, 30.0, 0) },
            ],
        );
        let rows = s.rows();
        assert_eq!(rows[0].result, "not measured: pgbench is not installed");
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[1].verdict, Verdict::NotKnown(vec!["× anchor (no anchor)"]));
        assert_eq!(rows[2].verdict, Verdict::NotMet(vec!["p99"]));
    }

    #[test]
    fn live_needs_its_p99_and_every_event_delivered_once_in_order() {
        let mut s = summary(anchor(4000.0), vec![]);
        for (figures, verdict) in [
            (live(20.0, 4000, 0), Verdict::Met),
            (live(51.0, 4000, 0), Verdict::NotMet(vec!["p99"])),
            (live(20.0, 3999, 0), Verdict::NotMet(vec!["missed events"])),
            (live(20.0, 4000, 2), Verdict::NotMet(vec!["misdelivered events"])),
        ] {
            s.live = figures;
            assert_eq!(s.rows()[1].verdict, verdict);
        }
    }

    #[test]
    fn a_chain_at_rest_is_held_to_its_transactions_and_each_process_cpu() {
        let mut s = summary(anchor(4000.0), vec![]);
        s.idle = vec![idle(1.0, &[0.02]), idle(12.0, &[0.02, 1.5]), idle(2.0, &[])];
        let rows = s.rows();
        assert_eq!(rows[2].verdict, Verdict::Met);
        assert_eq!(rows[2].figure, "chain at rest, 10,000 stores (10,001 in the database)");
        assert_eq!(rows[2].result, "1.0 tx/s; `up --database-url` 0.02 %, 40.0 MiB");
        assert_eq!(rows[3].verdict, Verdict::NotMet(vec!["tx/s", "CPU"]));
        assert_eq!(rows[4].verdict, Verdict::NotKnown(vec!["CPU (no --server-pid)"]));
    }

    #[test]
    fn the_table_has_a_line_per_figure_and_says_what_was_not_measured() {
        let s = summary(
            anchor(4321.4),
            vec![SpreadRun {
                spread: spread(32, 1),
                checkout: Outcome::NotMeasured("failed: connection refused".into()),
            }],
        );
        let table = s.to_string();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines[2], "| figure | result | × anchor | target | verdict |");
        assert_eq!(
            lines[4],
            "| anchor: `pgbench -b simple-update -c 32 -j 2 -T 15` | 4,321 tps, p99 12.0 ms | — |  |  |"
        );
        assert_eq!(
            lines[5],
            "| checkout, 32 stores × 1 terminal | not measured: failed: connection refused | — | ≥ 0.6×, p99 ≤ 25 ms | not measured |"
        );
        assert_eq!(
            lines[6],
            "| live updates | not measured: --no-live | — | p99 ≤ 50 ms, every event to its own store's clients in order | not measured |"
        );
        assert_eq!(lines.len(), 7);
        let json = s.to_json();
        assert_eq!(json["bench"], "chain");
        assert_eq!(json["summary"]["anchor"]["measured"]["transactions_per_second"], 4321.4);
        assert_eq!(json["summary"]["checkout"][0]["spread"]["stores"], 32);
        assert_eq!(json["rows"][1]["verdict"], "not measured");
    }

    #[test]
    fn pgbench_output_gives_tps_and_its_log_the_latencies() {
        let printed = "transaction type: <builtin: simple update>\nlatency average = 5.9 ms\n\
                       initial connection time = 20.1 ms\ntps = 1234.567890 (without initial connection time)\n";
        assert_eq!(pgbench_tps(printed), Some(1234.56789));
        assert_eq!(pgbench_tps("no figures"), None);
        let log = "0 1 5120 0 1796038812 824000\n3 1 12034 0 1796038812 825000\n\n";
        let latencies: Vec<_> = logged_latencies(log).collect();
        assert_eq!(latencies, [Duration::from_micros(5120), Duration::from_micros(12034)]);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(4321.6), "4,322");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
