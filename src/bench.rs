//! `redstore bench checkout`: many terminals checking out 3-line sales as fast as they can
//! against a running server, reporting sales/s and latency percentiles; `live`, `idle-streams`,
//! `idle-chain` (what a chain of many stores costs at rest, `bench/idle_chain.rs`), `chain`
//! (all of issue #14's chain figures in one run and one summary, `bench/chain.rs`) and `scan`
//! (many barcode scanners on `ScanStream`, `bench/scan.rs`).
//!
//! Every bench shows its phases' progress on standard error (`bench/progress.rs`) and answers a
//! [`Report`]: its summary for people, and the same figures as one JSON object for scripts
//! (`--json`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use redstore_platform::access_token::Bearer;
use redstore_proto::common::Money;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{
    AdjustStockRequest, AdjustmentReason, CreateProductRequest, CreateStoreRequest, OversellPolicy,
    RegisterTerminalRequest,
};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::sales::{CheckoutLine, CheckoutRequest, Tender, TenderType};
use serde::Serialize;
use tokio::time::Instant;
use tonic::Code;

use crate::client_auth::{Authed, ClientAuth, cashier_token};

mod chain;
mod idle_chain;
mod progress;
mod scan;

pub use chain::{ChainBench, ChainSummary, Spread, chain};
pub use idle_chain::{IdleChainBench, IdleChainSummary, idle_chain};
pub use scan::{ScanBench, ScanSummary, scan};

/// What a bench answers: its summary for people (`Display`), and the same figures for scripts
/// (`--json`: [`Report::json`], one JSON object).
pub trait Report: std::fmt::Display {
    type Json: Serialize;

    fn json(&self) -> Self::Json;
}

/// A run's latency percentiles.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Of latencies sorted from the shortest.
    pub fn of(sorted: &[Duration]) -> Self {
        Self {
            p50: percentile(sorted, 50.0),
            p95: percentile(sorted, 95.0),
            p99: percentile(sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }

    /// In milliseconds, as every `--json` gives them.
    pub fn ms(&self) -> LatencyMs {
        LatencyMs { p50: ms(self.p50), p95: ms(self.p95), p99: ms(self.p99), max: ms(self.max) }
    }
}

/// Latency percentiles in milliseconds, as every `--json` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl std::fmt::Display for LatencyMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms", self.p50, self.p95, self.p99, self.max)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const PRODUCTS: usize = 30;

/// Cash of `minor` euro cents.
fn tender(minor: i64) -> Tender {
    Tender { r#type: TenderType::Cash as i32, amount: Some(Money { currency_code: "EUR".into(), units_minor: minor }) }
}

#[derive(Clone, Debug)]
pub struct CheckoutBench {
    /// Server URL, e.g. http://127.0.0.1:50051.
    pub target: String,
    /// Where the store, terminals and products are set up: the inventory service (the target
    /// when it serves inventory too).
    pub inventory_target: String,
    pub terminals: usize,
    /// Stop after this many sales (all terminals together)...
    pub sales: Option<u64>,
    /// ...or after this long.
    pub duration: Option<Duration>,
    /// With `duration`: the load runs this long first, unmeasured (connections opened, caches
    /// and the database's plans warm), so that the figures are the steady state's.
    pub warmup: Duration,
    /// Lines per sale.
    pub lines: usize,
    /// The store the bench sells in (created strict, with ample stock); with `stores` > 1, the
    /// terminals are spread round-robin over `<store_id>-1` … `<store_id>-<stores>`.
    pub store_id: String,
    pub stores: usize,
    pub progress: bool,
    pub auth: ClientAuth,
}

/// The name of the bench's terminal `t` (0-based).
fn terminal_name(t: usize) -> String {
    format!("bench-{:03}", t + 1)
}

impl CheckoutBench {
    /// The store terminal `t` (0-based) sells in.
    fn store_of(&self, t: usize) -> String {
        if self.stores <= 1 { self.store_id.clone() } else { format!("{}-{}", self.store_id, t % self.stores + 1) }
    }
}

/// What a checkout bench ran with (`--json`'s `settings`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckoutSettings {
    pub target: String,
    pub inventory_target: String,
    pub store: String,
    pub stores: usize,
    pub terminals: usize,
    pub lines: usize,
    /// The sales to make, when the run is counted in sales (`--sales`) rather than time.
    pub sales: Option<u64>,
    pub duration_s: Option<f64>,
    /// 0 when counted in sales: the warm-up is only for a run on the clock.
    pub warmup_s: f64,
}

impl CheckoutSettings {
    fn of(cfg: &CheckoutBench) -> Self {
        Self {
            target: cfg.target.clone(),
            inventory_target: cfg.inventory_target.clone(),
            store: cfg.store_id.clone(),
            stores: cfg.stores.max(1),
            terminals: cfg.terminals,
            lines: cfg.lines,
            sales: cfg.sales,
            duration_s: cfg.duration.map(|d| d.as_secs_f64()),
            warmup_s: if cfg.duration.is_some() { cfg.warmup.as_secs_f64() } else { 0.0 },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub settings: CheckoutSettings,
    /// Sales begun after the warm-up that succeeded.
    pub sales: u64,
    /// Sales begun after the warm-up that failed.
    pub failed: u64,
    /// Sales begun during the warm-up that failed: reported, never mixed into `failed`.
    pub warmup_failures: u64,
    pub elapsed: Duration,
    pub latency: Percentiles,
}

impl Summary {
    pub fn sales_per_second(&self) -> f64 {
        self.sales as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sales: {} ok, {} failed in {:.2} s = {:.0} sales/s",
            self.sales,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.sales_per_second()
        )?;
        if self.settings.warmup_s > 0.0 {
            write!(f, " (warm-up {:.1} s: {} failed, not counted)", self.settings.warmup_s, self.warmup_failures)?;
        }
        write!(f, "\nlatency: {}", self.latency.ms())
    }
}

/// `redstore bench checkout --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckoutJson {
    pub bench: &'static str,
    pub settings: CheckoutSettings,
    pub sales: u64,
    pub failed: u64,
    pub warmup_failures: u64,
    pub elapsed_s: f64,
    pub sales_per_second: f64,
    pub latency_ms: LatencyMs,
}

impl Report for Summary {
    type Json = CheckoutJson;

    fn json(&self) -> CheckoutJson {
        CheckoutJson {
            bench: "checkout",
            settings: self.settings.clone(),
            sales: self.sales,
            failed: self.failed,
            warmup_failures: self.warmup_failures,
            elapsed_s: self.elapsed.as_secs_f64(),
            sales_per_second: self.sales_per_second(),
            latency_ms: self.latency.ms(),
        }
    }
}

fn ignore_exists<T>(r: Result<T, tonic::Status>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(anyhow::anyhow!("bench set-up failed: {s}")),
    }
}

fn sku(i: usize) -> String {
    format!("BENCH-{:04}", i + 1)
}

async fn connect(target: &str, bearer: Bearer) -> anyhow::Result<Authed> {
    crate::client_auth::connect(target, bearer).await
}

/// An admin's token for the bench's set-up and watching.
fn admin(auth: &ClientAuth) -> anyhow::Result<Bearer> {
    auth.admin("redstore-bench")
}

/// Creates the bench stores, their terminals and the products (once) and tops up their stock:
/// the stores several at a time over one connection, each with only the terminals that sell in it.
async fn set_up(cfg: &CheckoutBench) -> anyhow::Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let inv = InventoryServiceClient::new(connect(&cfg.inventory_target, admin(&cfg.auth)?).await?);
    create_products(&mut inv.clone()).await?;
    let stores = cfg.stores.max(1);
    futures::stream::iter(0..stores)
        .map(|s| {
            let terminals: Vec<usize> = (0..cfg.terminals).filter(|t| t % stores == s).collect();
            let (mut inv, store_id) = (inv.clone(), cfg.store_of(s));
            async move { set_up_store(&mut inv, &store_id, &terminals).await }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// The bench's products (once: they exist after the first run).
async fn create_products(inv: &mut InventoryServiceClient<Authed>) -> anyhow::Result<()> {
    for i in 0..PRODUCTS {
        ignore_exists(
            inv.create_product(CreateProductRequest {
                idempotency_key: String::new(),
                sku: sku(i),
                name: format!("Bench item {}", i + 1),
                price: Some(Money { currency_code: "EUR".into(), units_minor: 100 + i as i64 }),
                barcodes: vec![],
            })
            .await,
        )?;
    }
    Ok(())
}

/// A bench store (created strict, once) with the terminals numbered in `terminals` (0-based) and
/// ample stock of every product.
async fn set_up_store(
    inv: &mut InventoryServiceClient<Authed>,
    store_id: &str,
    terminals: &[usize],
) -> anyhow::Result<()> {
    ignore_exists(
        inv.create_store(CreateStoreRequest {
            idempotency_key: String::new(),
            store_id: store_id.to_owned(),
            name: "Benchmark store".into(),
            oversell_policy: OversellPolicy::Strict as i32,
        })
        .await,
    )?;
    for t in terminals {
        ignore_exists(
            inv.register_terminal(RegisterTerminalRequest {
                idempotency_key: String::new(),
                store_id: store_id.to_owned(),
                terminal_id: format!("bench-{:03}", t + 1),
                name: String::new(),
            })
            .await,
        )?;
    }
    let run = uuid::Uuid::now_v7();
    for i in 0..PRODUCTS {
        inv.adjust_stock(AdjustStockRequest {
            idempotency_key: format!("bench-{run}-{i}"),
            store_id: store_id.to_owned(),
            sku: sku(i),
            quantity_delta: 1_000_000_000,
            reason: AdjustmentReason::Received as i32,
            note: "benchmark stock".into(),
        })
        .await
        .context("bench set-up: stock")?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn checkout(cfg: CheckoutBench) -> anyhow::Result<Summary> {
    anyhow::ensure!(cfg.terminals > 0, "--terminals must be at least 1");
    anyhow::ensure!(cfg.lines > 0 && cfg.lines <= PRODUCTS, "--lines must be between 1 and {PRODUCTS}");
    {
        let _phase = progress::spinner(
            cfg.progress,
            format!("set-up: {} store(s), {} terminals, {PRODUCTS} products", cfg.stores.max(1), cfg.terminals),
        );
        set_up(&cfg).await?;
    }
    let issued = Arc::new(AtomicU64::new(0));
    let sold = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let warmup_failed = Arc::new(AtomicU64::new(0));
    let warmup = if cfg.duration.is_some() { cfg.warmup } else { Duration::ZERO };
    // Measured from the end of the warm-up: the sales that began after it, until the deadline.
    let began_at = Instant::now();
    let start = began_at + warmup;
    let deadline = cfg.duration.map(|d| start + d);
    let counted = cfg.sales.map(|n| progress::counter(cfg.progress, "sales", n));
    let timeline = deadline.map(|deadline| {
        let (sold, failed, warmup_failed) = (sold.clone(), failed.clone(), warmup_failed.clone());
        progress::Timeline::start(
            cfg.progress,
            vec![("warm-up", began_at, start), ("measuring", start, deadline)],
            move || {
                format!(
                    "{} sales, {} failed ({} in the warm-up)",
                    sold.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed) + warmup_failed.load(Ordering::Relaxed),
                    warmup_failed.load(Ordering::Relaxed)
                )
            },
        )
    });
    let mut workers = Vec::with_capacity(cfg.terminals);
    // Each terminal calls as a cashier signed in at it, when the bench holds the deployment's key.
    let keys = cfg.auth.keys()?;
    for t in 0..cfg.terminals {
        let bearer = match &keys {
            Some(keys) => Bearer::new(&cashier_token(keys, &cfg.store_of(t), &terminal_name(t)))?,
            None => admin(&cfg.auth)?,
        };
        let channel = connect(&cfg.target, bearer).await?;
        let (cfg, issued, sold, failed, warmup_failed) =
            (cfg.clone(), issued.clone(), sold.clone(), failed.clone(), warmup_failed.clone());
        let counted = counted.as_ref().map(|c| c.bar());
        workers.push(tokio::spawn(async move {
            let mut client = SalesServiceClient::new(channel);
            let mut latencies = Vec::with_capacity(4096);
            let terminal_id = terminal_name(t);
            let store_id = cfg.store_of(t);
            let mut n = t;
            loop {
                if let Some(limit) = cfg.sales
                    && issued.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                n += 1;
                let lines = (0..cfg.lines)
                    .map(|l| CheckoutLine {
                        sku: sku((n * 7 + l * 11) % PRODUCTS),
                        quantity: 1 + (l as i64 % 2),
                        ..Default::default()
                    })
                    .collect();
                let req = CheckoutRequest {
                    idempotency_key: uuid::Uuid::now_v7().to_string(),
                    store_id: store_id.clone(),
                    terminal_id: terminal_id.clone(),
                    lines,
                    tenders: vec![Tender {
                        r#type: TenderType::Cash as i32,
                        amount: Some(Money { currency_code: "EUR".into(), units_minor: 100_000 }),
                    }],
                };
                let began = Instant::now();
                match client.checkout(req).await {
                    Ok(_) => {
                        sold.fetch_add(1, Ordering::Relaxed);
                        if began >= start {
                            latencies.push(began.elapsed());
                        }
                    }
                    Err(e) => {
                        // A sale begun in the warm-up is the warm-up's, failed or not.
                        let in_warmup = began < start;
                        let count = if in_warmup { &warmup_failed } else { &failed };
                        if count.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(error = %e, in_warmup, "a checkout failed");
                        }
                    }
                }
                if let Some(counted) = &counted {
                    counted.inc(1);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.context("bench worker failed")?);
    }
    let elapsed = start.elapsed();
    if let Some(timeline) = timeline {
        timeline.finish().await;
    }
    drop(counted);
    all.sort_unstable();
    Ok(Summary {
        settings: CheckoutSettings::of(&cfg),
        sales: all.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        warmup_failures: warmup_failed.load(Ordering::Relaxed),
        elapsed,
        latency: Percentiles::of(&all),
    })
}

/// `redstore bench live`: many SSE clients watch one store while a terminal sells; each event's
/// latency is measured from its commit (the event's `occurred_at`, written in the committing
/// transaction) to its arrival at every client.
#[derive(Clone, Debug)]
pub struct LiveBench {
    /// Where sales go (gRPC).
    pub target: String,
    /// Where the stores and products are set up: the inventory service (the target when it
    /// serves inventory too).
    pub inventory_target: String,
    /// Where the SSE clients connect (a stream bridge); defaults to `target`.
    pub sse_target: String,
    pub clients: usize,
    pub sales: u64,
    /// Sales per second.
    pub rate: u32,
    /// The store sold in; with `stores` > 1, sales and clients are spread round-robin over
    /// `<store_id>-1` … `<store_id>-<stores>` (client `c` watches store `c % stores`).
    pub store_id: String,
    pub stores: usize,
    pub progress: bool,
    pub auth: ClientAuth,
}

/// What a live bench ran with (`--json`'s `settings`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveSettings {
    pub target: String,
    pub inventory_target: String,
    pub sse_target: String,
    pub store: String,
    pub stores: usize,
    pub clients: usize,
    pub sales: u64,
    pub rate: u32,
}

#[derive(Clone, Debug)]
pub struct LiveSummary {
    pub settings: LiveSettings,
    pub clients: usize,
    pub stores: usize,
    pub sales: u64,
    /// Events that came to a client out of its store's order (a gap, a repeat) or of another
    /// store: a correct stream has none.
    pub misdelivered: u64,
    /// Events every client should have received, all together.
    pub expected: u64,
    pub received: u64,
    /// SSE clients whose stream broke, or that had not received every event 30 s after the last
    /// sale.
    pub failed_clients: u64,
    pub latency: Percentiles,
}

impl LiveSummary {}

impl std::fmt::Display for LiveSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} SSE clients over {} stores, {} sales: {} of {} events received, {} out of order or of another store",
            self.clients, self.stores, self.sales, self.received, self.expected, self.misdelivered
        )?;
        if self.failed_clients > 0 {
            write!(f, ", {} clients failed", self.failed_clients)?;
        }
        write!(f, "\ncommit-to-client latency: {}", self.latency.ms())
    }
}

/// `redstore bench live --json`.
#[derive(Clone, Debug, Serialize)]
pub struct LiveJson {
    pub bench: &'static str,
    pub settings: LiveSettings,
    pub expected: u64,
    pub received: u64,
    pub misdelivered: u64,
    pub failed_clients: u64,
    pub latency_ms: LatencyMs,
}

impl Report for LiveSummary {
    type Json = LiveJson;

    fn json(&self) -> LiveJson {
        LiveJson {
            bench: "live",
            settings: self.settings.clone(),
            expected: self.expected,
            received: self.received,
            misdelivered: self.misdelivered,
            failed_clients: self.failed_clients,
            latency_ms: self.latency.ms(),
        }
    }
}

fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// What one SSE client saw.
struct Watched {
    latencies: Vec<Duration>,
    /// Events out of its store's order, or of another store.
    misdelivered: u64,
}

/// One SSE client of `store_id`'s stream from `after`: reads `want` events and returns each one's
/// commit-to-arrival latency, counting those whose id (the store sequence) is not the next one or
/// whose store is another.
///
/// It reads bytes and looks for nothing but each event's `id:`, `storeId` and `occurredAt`:
/// 2,000 of these share the machine with the server they measure, and decoding every event into
/// text and a JSON value was a fifth of their work.
async fn sse_client(
    client: reqwest::Client,
    store_id: String,
    url: String,
    after: u64,
    want: u64,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Watched> {
    let mut response = client.get(&url).header("accept", "text/event-stream").send().await?.error_for_status()?;
    let _ = ready.send(()).await;
    let own_store = format!("\"storeId\":\"{store_id}\"");
    let mut buffer: Vec<u8> = Vec::new();
    let mut watched = Watched { latencies: Vec::with_capacity(usize::try_from(want).unwrap_or(0)), misdelivered: 0 };
    let mut last = after;
    while (watched.latencies.len() as u64) < want {
        let Some(chunk) = response.chunk().await? else { break };
        let arrived = unix_now_us();
        buffer.extend_from_slice(&chunk);
        let mut done = 0;
        while let Some(end) = find(&buffer[done..], b"\n\n") {
            let block = &buffer[done..done + end];
            if let Some(at_ms) = occurred_at_ms(block) {
                let micros = (arrived - at_ms * 1000).max(0);
                watched.latencies.push(Duration::from_micros(u64::try_from(micros).unwrap_or(0)));
                let next = event_id(block) == Some(last + 1);
                if !next || find(block, own_store.as_bytes()).is_none() {
                    watched.misdelivered += 1;
                }
                last = event_id(block).unwrap_or(last);
            }
            done += end + 2;
        }
        buffer.drain(..done);
    }
    Ok(watched)
}

/// The `id:` of an SSE event block (the store sequence).
fn event_id(block: &[u8]) -> Option<u64> {
    let at = if block.starts_with(b"id:") { 3 } else { find(block, b"\nid:")? + 4 };
    let rest = &block[at..];
    let start = rest.iter().take_while(|b| **b == b' ').count();
    let digits = rest[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[start..start + digits]).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The commit time (Unix ms) of an SSE event block's JSON data, its `occurredAt` (events carry
/// it; comments and the snapshot do not).
fn occurred_at_ms(block: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"occurredAt\":\"";
    let at = find(block, KEY)? + KEY.len();
    let len = block[at..].iter().position(|b| *b == b'"')?;
    let at = humantime::parse_rfc3339(std::str::from_utf8(&block[at..at + len]).ok()?).ok()?;
    Some(redstore_platform::time::unix_ms(at))
}

/// The store's newest sequence, from the snapshot that opens a watch.
async fn store_head(stream_bridge: &str, store_id: &str, auth: &ClientAuth) -> anyhow::Result<u64> {
    use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
    use redstore_proto::stream::{WatchInventoryRequest, watch_inventory_response::Item};
    let mut watch = InventoryStreamServiceClient::new(connect(stream_bridge, admin(auth)?).await?)
        .watch_inventory(WatchInventoryRequest {
            store_id: store_id.to_owned(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    match watch.message().await?.and_then(|m| m.item) {
        Some(Item::Snapshot(s)) => Ok(s.as_of_seq),
        _ => anyhow::bail!("the stream bridge did not start with a snapshot"),
    }
}

pub async fn live(cfg: LiveBench) -> anyhow::Result<LiveSummary> {
    use futures::{StreamExt as _, TryStreamExt as _};
    anyhow::ensure!(
        cfg.clients > 0 && cfg.sales > 0 && cfg.rate > 0 && cfg.stores > 0,
        "--clients, --sales, --rate and --stores must be positive"
    );
    let store_of = |i: usize| {
        if cfg.stores <= 1 { cfg.store_id.clone() } else { format!("{}-{}", cfg.store_id, i % cfg.stores + 1) }
    };
    let setting_up = progress::counter(cfg.progress, "set-up: stores", cfg.stores as u64);
    let inv = InventoryServiceClient::new(connect(&cfg.inventory_target, admin(&cfg.auth)?).await?);
    create_products(&mut inv.clone()).await?;
    // Each store with its terminal, then where its stream starts: several stores at a time.
    let heads: Vec<u64> = futures::stream::iter(0..cfg.stores)
        .map(|s| {
            let (mut inv, store_id, sse, auth) = (inv.clone(), store_of(s), cfg.sse_target.clone(), &cfg.auth);
            let bar = setting_up.bar();
            async move {
                set_up_store(&mut inv, &store_id, &[0]).await?;
                let head = store_head(&sse, &store_id, auth).await;
                bar.inc(1);
                head
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    drop(setting_up);

    // Sale n goes to store n % stores: each store's share.
    let sales_in = |s: usize| (cfg.sales + (cfg.stores - 1 - s) as u64) / cfg.stores as u64;
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", cfg.auth.admin_token("redstore-bench")?);
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse()?);
    let http = reqwest::Client::builder().http1_only().pool_max_idle_per_host(0).default_headers(headers).build()?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(cfg.clients);
    let mut clients = Vec::with_capacity(cfg.clients);
    let mut expected = 0;
    for c in 0..cfg.clients {
        let s = c % cfg.stores;
        let (store_id, after) = (store_of(s), heads[s]);
        let url = format!("{}/v1/stores/{store_id}/inventory/events?after={after}", cfg.sse_target);
        expected += sales_in(s);
        clients.push(tokio::spawn(sse_client(http.clone(), store_id, url, after, sales_in(s), ready_tx.clone())));
    }
    drop(ready_tx);
    let connecting = progress::counter(cfg.progress, "connecting SSE clients", cfg.clients as u64);
    for _ in 0..cfg.clients {
        ready_rx.recv().await.context("an SSE client failed to connect")?;
        connecting.inc(1);
    }
    drop(connecting);

    // At the rate, each sale in a task of its own: a slow answer does not hold the next sale back.
    let selling = progress::counter(cfg.progress, "selling", cfg.sales);
    let sales = SalesServiceClient::new(connect(&cfg.target, admin(&cfg.auth)?).await?);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.rate)));
    let mut checkouts = Vec::with_capacity(usize::try_from(cfg.sales).unwrap_or(0));
    for n in 0..cfg.sales {
        tick.tick().await;
        selling.inc(1);
        let i = usize::try_from(n).unwrap_or(0);
        let req = CheckoutRequest {
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            store_id: store_of(i),
            terminal_id: "bench-001".into(),
            lines: vec![CheckoutLine { sku: sku(i % PRODUCTS), quantity: 1, ..Default::default() }],
            tenders: vec![Tender {
                r#type: TenderType::Cash as i32,
                amount: Some(Money { currency_code: "EUR".into(), units_minor: 100_000 }),
            }],
        };
        let mut sales = sales.clone();
        checkouts.push(tokio::spawn(async move { sales.checkout(req).await }));
    }
    for checkout in checkouts {
        checkout.await?.context("checkout")?;
    }
    drop(selling);
    // Every client gets the same 30 s after the last sale (not 30 s each, one after another).
    let _waiting = progress::spinner(cfg.progress, "waiting for every client's events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut all, mut misdelivered, mut failed_clients) = (Vec::new(), 0, 0);
    for c in clients {
        match tokio::time::timeout_at(deadline, c).await {
            Ok(Ok(Ok(watched))) => {
                all.extend(watched.latencies);
                misdelivered += watched.misdelivered;
                continue;
            }
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "an SSE client failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "an SSE client panicked"),
            Err(_) => tracing::warn!("an SSE client did not receive every event within 30 s"),
        }
        failed_clients += 1;
    }
    all.sort_unstable();
    Ok(LiveSummary {
        settings: LiveSettings {
            target: cfg.target.clone(),
            inventory_target: cfg.inventory_target.clone(),
            sse_target: cfg.sse_target.clone(),
            store: cfg.store_id.clone(),
            stores: cfg.stores,
            clients: cfg.clients,
            sales: cfg.sales,
            rate: cfg.rate,
        },
        failed_clients,
        clients: cfg.clients,
        stores: cfg.stores,
        sales: cfg.sales,
        misdelivered,
        expected,
        received: all.len() as u64,
        latency: Percentiles::of(&all),
    })
}

/// `redstore bench idle-streams`: many SSE clients that open a store's stream and then sit idle,
/// as the terminals of a quiet chain do; the server's cost of holding them, read from the
/// outside (`/proc/<pid>`) before they open, while they are open and after they close.
#[derive(Clone, Debug)]
pub struct IdleBench {
    /// Where the store is set up (gRPC).
    pub target: String,
    /// Where the SSE clients connect (a stream bridge); defaults to `target`.
    pub sse_target: String,
    pub streams: usize,
    /// The store to watch; created if missing.
    pub store_id: String,
    /// The server's process, whose memory, threads and open files are read.
    pub server_pid: Option<u32>,
    /// How long to wait, once every stream is open, before reading the server's figures.
    pub settle: Duration,
    pub progress: bool,
    pub auth: ClientAuth,
}

/// A process's figures from `/proc/<pid>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcessFigures {
    /// Resident memory (`VmRSS`), bytes.
    #[serde(rename = "rss_bytes")]
    pub rss: u64,
    /// Peak resident memory so far (`VmHWM`), bytes.
    #[serde(rename = "peak_rss_bytes")]
    pub peak_rss: u64,
    pub threads: u64,
    pub open_files: u64,
}

impl ProcessFigures {
    /// Reads them; `None` when the process cannot be read (gone, or another user's).
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Self {
            rss: field("VmRSS")? * 1024,
            peak_rss: field("VmHWM")? * 1024,
            threads: field("Threads")?,
            open_files,
        })
    }
}

/// What an idle-streams bench ran with (`--json`'s `settings`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleSettings {
    pub target: String,
    pub sse_target: String,
    pub store: String,
    pub streams: usize,
    pub server_pid: Option<u32>,
    pub settle_s: f64,
}

#[derive(Clone, Debug)]
pub struct IdleSummary {
    pub settings: IdleSettings,
    pub wanted: usize,
    pub open: usize,
    /// Answered 503: past the server's cap on live streams.
    pub refused: usize,
    pub failed: usize,
    pub opening: Duration,
    pub before: Option<ProcessFigures>,
    pub held: Option<ProcessFigures>,
    pub after: Option<ProcessFigures>,
}

impl std::fmt::Display for IdleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "idle SSE streams: {} open of {} ({} refused with 503, {} failed), opened in {:.1} s",
            self.open,
            self.wanted,
            self.refused,
            self.failed,
            self.opening.as_secs_f64()
        )?;
        let (Some(before), Some(held), Some(per_stream)) = (self.before, self.held, self.kib_per_stream()) else {
            return write!(f, "\n(no --server-pid: the server's figures were not read)");
        };
        write!(
            f,
            "\nserver RSS {:.1} MiB -> {:.1} MiB with them open: {:.1} KiB per stream (peak RSS {:.1} MiB)\
             \nserver threads {} -> {}, open files {} -> {}",
            mib(before.rss),
            mib(held.rss),
            per_stream,
            mib(held.peak_rss),
            before.threads,
            held.threads,
            before.open_files,
            held.open_files
        )?;
        if let Some(after) = self.after {
            write!(
                f,
                "\nafter they closed: RSS {:.1} MiB, threads {}, open files {}",
                mib(after.rss),
                after.threads,
                after.open_files
            )?;
        }
        Ok(())
    }
}

impl IdleSummary {
    /// The server's RSS grown with the streams open, per open stream, in KiB (`None` without the
    /// server's figures).
    pub fn kib_per_stream(&self) -> Option<f64> {
        let (before, held) = (self.before?, self.held?);
        Some(held.rss.saturating_sub(before.rss) as f64 / self.open.max(1) as f64 / 1024.0)
    }
}

/// `redstore bench idle-streams --json`: the server's figures are `null` without `--server-pid`.
#[derive(Clone, Debug, Serialize)]
pub struct IdleStreamsJson {
    pub bench: &'static str,
    pub settings: IdleSettings,
    pub open: usize,
    /// Answered 503: past the server's cap on live streams.
    pub refused: usize,
    pub failed: usize,
    pub opening_s: f64,
    pub kib_per_stream: Option<f64>,
    pub server_before: Option<ProcessFigures>,
    pub server_held: Option<ProcessFigures>,
    pub server_after: Option<ProcessFigures>,
}

impl Report for IdleSummary {
    type Json = IdleStreamsJson;

    fn json(&self) -> IdleStreamsJson {
        IdleStreamsJson {
            bench: "idle-streams",
            settings: self.settings.clone(),
            open: self.open,
            refused: self.refused,
            failed: self.failed,
            opening_s: self.opening.as_secs_f64(),
            kib_per_stream: self.kib_per_stream(),
            server_before: self.before,
            server_held: self.held,
            server_after: self.after,
        }
    }
}

/// How one idle client's request was answered.
enum Opened {
    Streaming,
    Refused,
}

/// Clients connecting at once: more would only overflow the server's listen queue.
const OPENING_AT_ONCE: usize = 256;

/// One idle SSE client: a plain HTTP/1.1 request, as `EventSource` sends it; once the stream is
/// open it reads (and drops) the keep-alive comments until `stop`.
async fn idle_client(
    addr: std::net::SocketAddr,
    request: Arc<[u8]>,
    opening: Arc<tokio::sync::Semaphore>,
    opened: tokio::sync::mpsc::Sender<anyhow::Result<Opened>>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let open = async {
        let _turn = opening.acquire().await?;
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(&request).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while find(&head, b"\r\n\r\n").is_none() {
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "the server closed the connection before answering");
            head.extend_from_slice(&buf[..n]);
        }
        let status = head.split(|b| *b == b' ').nth(1).unwrap_or_default();
        match status {
            b"200" => Ok((tcp, Opened::Streaming)),
            b"503" => Ok((tcp, Opened::Refused)),
            other => anyhow::bail!("the server answered {}", String::from_utf8_lossy(other)),
        }
    };
    let (mut tcp, how) = match open.await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = opened.send(Err(e)).await;
            return;
        }
    };
    let streaming = matches!(how, Opened::Streaming);
    let _ = opened.send(Ok(how)).await;
    if !streaming {
        return;
    }
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            read = tcp.read(&mut buf) => if !matches!(read, Ok(n) if n > 0) { return },
        }
    }
}

pub async fn idle_streams(cfg: IdleBench) -> anyhow::Result<IdleSummary> {
    anyhow::ensure!(cfg.streams > 0, "--streams must be positive");
    let open_files = crate::connections::open_file_limit();
    anyhow::ensure!(
        open_files > cfg.streams as u64 + 64,
        "{} streams need as many open files, and the limit is {open_files}: raise `ulimit -n`",
        cfg.streams
    );
    let setting_up = progress::spinner(cfg.progress, format!("set-up: store {}", cfg.store_id));
    let mut inv = InventoryServiceClient::new(connect(&cfg.target, admin(&cfg.auth)?).await?);
    create_products(&mut inv).await?;
    set_up_store(&mut inv, &cfg.store_id, &[]).await?;
    let head = store_head(&cfg.sse_target, &cfg.store_id, &cfg.auth).await?;
    drop(setting_up);
    let token = cfg.auth.admin_token("redstore-bench")?;
    let url = reqwest::Url::parse(&cfg.sse_target).with_context(|| format!("--sse-target {}", cfg.sse_target))?;
    let host = url.host_str().context("the SSE target has no host")?.to_owned();
    let port = url.port_or_known_default().context("the SSE target has no port")?;
    let addr =
        tokio::net::lookup_host((host.as_str(), port)).await?.next().context("the SSE target does not resolve")?;
    let request: Arc<[u8]> = format!(
        "GET /v1/stores/{}/inventory/events?after={head} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n",
        cfg.store_id
    )
    .into_bytes()
    .into();

    let figures = || cfg.server_pid.and_then(ProcessFigures::read);
    let before = figures();
    anyhow::ensure!(
        cfg.server_pid.is_none() || before.is_some(),
        "cannot read /proc/{}/status: is --server-pid the server's?",
        cfg.server_pid.unwrap_or_default()
    );
    let started = Instant::now();
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    let stop = tokio_util::sync::CancellationToken::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(cfg.streams);
    let mut clients = Vec::with_capacity(cfg.streams);
    for _ in 0..cfg.streams {
        let client = idle_client(addr, request.clone(), opening.clone(), opened_tx.clone(), stop.clone());
        clients.push(tokio::spawn(client));
    }
    drop(opened_tx);
    let (mut open, mut refused, mut failed) = (0, 0, 0);
    let opening_bar = progress::counter(cfg.progress, "opening streams", cfg.streams as u64);
    // Each client reports once; an open one keeps its sender while it stays open.
    for _ in 0..cfg.streams {
        let Some(result) = opened_rx.recv().await else { break };
        opening_bar.inc(1);
        match result {
            Ok(Opened::Streaming) => open += 1,
            Ok(Opened::Refused) => refused += 1,
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    tracing::warn!(error = %e, "an idle client failed to open its stream");
                }
            }
        }
    }
    let opening_took = started.elapsed();
    drop(opening_bar);
    let holding = progress::spinner(cfg.progress, format!("{open} streams open: settling"));
    tokio::time::sleep(cfg.settle).await;
    let held = figures();
    holding.set_message("closing the streams");
    stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    holding.set_message("closed: settling");
    tokio::time::sleep(cfg.settle).await;
    let after = figures();
    drop(holding);
    let settings = IdleSettings {
        target: cfg.target.clone(),
        sse_target: cfg.sse_target.clone(),
        store: cfg.store_id.clone(),
        streams: cfg.streams,
        server_pid: cfg.server_pid,
        settle_s: cfg.settle.as_secs_f64(),
    };
    Ok(IdleSummary { settings, wanted: cfg.streams, open, refused, failed, opening: opening_took, before, held, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_block_gives_its_commit_time_and_others_none() {
        let event =
            b"event: inventory.changed\nid: 7\ndata: {\"storeSeq\":\"7\",\"occurredAt\":\"2026-11-30T11:40:12.824Z\"}";
        assert_eq!(occurred_at_ms(event), Some(1_796_038_812_824));
        assert_eq!(occurred_at_ms(b": keep-alive"), None);
        assert_eq!(occurred_at_ms(b"event: snapshot\nid: 3\ndata: {\"asOfSeq\":\"3\"}"), None);
    }

    // The figures below are invented inputs for the summaries' shapes, not measurements.

    fn checkout_summary(warmup_s: f64) -> Summary {
        Summary {
            settings: CheckoutSettings {
                target: "http://127.0.0.1:50051".into(),
                inventory_target: "http://127.0.0.1:50051".into(),
                store: "bench".into(),
                stores: 1,
                terminals: 32,
                lines: 3,
                sales: None,
                duration_s: Some(3.0),
                warmup_s,
            },
            sales: 300,
            failed: 2,
            warmup_failures: 5,
            elapsed: Duration::from_secs(3),
            latency: Percentiles {
                p50: Duration::from_micros(2_500),
                p95: Duration::from_millis(5),
                p99: Duration::from_millis(7),
                max: Duration::from_millis(20),
            },
        }
    }

    #[test]
    fn the_checkout_summary_keeps_the_warm_up_failures_apart() {
        let text = checkout_summary(2.0).to_string();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "sales: 300 ok, 2 failed in 3.00 s = 100 sales/s (warm-up 2.0 s: 5 failed, not counted)",
                "latency: p50 2.50 ms, p95 5.00 ms, p99 7.00 ms, max 20.00 ms",
            ]
        );
        let without = checkout_summary(0.0).to_string();
        assert!(without.starts_with("sales: 300 ok, 2 failed in 3.00 s = 100 sales/s\n"), "{without}");
    }

    #[test]
    fn the_checkout_json_has_its_figures_in_milliseconds_and_its_settings() {
        let json = serde_json::to_value(checkout_summary(2.0).json()).expect("JSON");
        assert_eq!(json["bench"], "checkout");
        assert_eq!(json["sales"], 300);
        assert_eq!(json["failed"], 2);
        assert_eq!(json["warmup_failures"], 5);
        assert_eq!(json["elapsed_s"], 3.0);
        assert_eq!(json["sales_per_second"], 100.0);
        assert_eq!(json["latency_ms"], serde_json::json!({"p50": 2.5, "p95": 5.0, "p99": 7.0, "max": 20.0}));
        assert_eq!(json["settings"]["terminals"], 32);
        assert_eq!(json["settings"]["duration_s"], 3.0);
        assert_eq!(json["settings"]["warmup_s"], 2.0);
        assert_eq!(json["settings"]["sales"], serde_json::Value::Null);
    }

    #[test]
    fn the_live_json_has_every_count_and_the_clients_that_failed() {
        let summary = LiveSummary {
            settings: LiveSettings {
                target: "http://127.0.0.1:50051".into(),
                inventory_target: "http://127.0.0.1:50051".into(),
                sse_target: "http://127.0.0.1:50052".into(),
                store: "bench-live".into(),
                stores: 2,
                clients: 4,
                sales: 10,
                rate: 20,
            },
            clients: 4,
            stores: 2,
            sales: 10,
            misdelivered: 1,
            expected: 20,
            received: 15,
            failed_clients: 1,
            latency: Percentiles {
                p50: Duration::from_millis(3),
                p95: Duration::from_millis(8),
                p99: Duration::from_millis(9),
                max: Duration::from_millis(10),
            },
        };
        let json = serde_json::to_value(summary.json()).expect("JSON");
        assert_eq!(json["bench"], "live");
        assert_eq!((&json["expected"], &json["received"]), (&20.into(), &15.into()));
        assert_eq!(json["misdelivered"], 1);
        assert_eq!(json["failed_clients"], 1);
        assert_eq!(json["latency_ms"]["p99"], 9.0);
        assert_eq!(json["settings"]["sse_target"], "http://127.0.0.1:50052");
        assert_eq!(json["settings"]["rate"], 20);
        assert_eq!(
            summary.to_string(),
            "4 SSE clients over 2 stores, 10 sales: 15 of 20 events received, 1 out of order or of another store, \
             1 clients failed\ncommit-to-client latency: p50 3.00 ms, p95 8.00 ms, p99 9.00 ms, max 10.00 ms"
        );
    }

    #[test]
    fn the_idle_streams_json_has_the_server_figures_only_when_read() {
        let process = |rss_mib: u64, threads| ProcessFigures {
            rss: rss_mib * 1024 * 1024,
            peak_rss: rss_mib * 1024 * 1024,
            threads,
            open_files: 10,
        };
        let mut summary = IdleSummary {
            settings: IdleSettings {
                target: "http://127.0.0.1:50051".into(),
                sse_target: "http://127.0.0.1:50051".into(),
                store: "bench-idle".into(),
                streams: 1024,
                server_pid: Some(42),
                settle_s: 3.0,
            },
            wanted: 1024,
            open: 1024,
            refused: 0,
            failed: 0,
            opening: Duration::from_millis(1500),
            before: Some(process(20, 4)),
            held: Some(process(34, 4)),
            after: Some(process(22, 4)),
        };
        let json = serde_json::to_value(summary.json()).expect("JSON");
        assert_eq!(json["bench"], "idle-streams");
        assert_eq!(json["open"], 1024);
        assert_eq!(json["opening_s"], 1.5);
        assert_eq!(json["kib_per_stream"], 14.0);
        assert_eq!(json["server_held"]["rss_bytes"], 34 * 1024 * 1024);
        assert_eq!(json["server_held"]["threads"], 4);
        assert_eq!(json["settings"]["server_pid"], 42);
        assert!(summary.to_string().contains("14.0 KiB per stream"), "{summary}");

        (summary.before, summary.held, summary.after, summary.settings.server_pid) = (None, None, None, None);
        let json = serde_json::to_value(summary.json()).expect("JSON");
        assert_eq!(json["kib_per_stream"], serde_json::Value::Null);
        assert_eq!(json["server_held"], serde_json::Value::Null);
        assert!(summary.to_string().ends_with("(no --server-pid: the server's figures were not read)"));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
