//! `redstore bench scan`: many barcode scanners against a running server, each a `ScanStream`
//! (the bidirectional stream native scanners use) into the cart of a terminal of its own, sending
//! scans of the catalog's barcodes (the demo chain's on `redstore up`) as fast as their answers
//! come back; it reports scans/s and each scan's round trip (sent → its `ScanResponse`).
//!
//! Pipelining: each scanner keeps `in_flight` scans on its stream (1: send, wait for the answer,
//! send the next), each with a fresh scan id (a UUIDv7, as the server keeps scan ids for retries).
//! The server answers a stream's scans in order, one after the other.
//!
//! Carts: each scan writes its cart and answers with the whole cart, so a cart of thousands of
//! lines would make every scan slower (and a cart stops at 500 lines). Each scanner scans a small
//! rotating set of barcodes (`cart_lines` of them), so its cart keeps that many lines and their
//! quantities grow, as a basket of a few items scanned many times over; its cart is emptied before
//! the run. (A line holds at most 1,000,000 units: a run long enough for a line to reach it sees its
//! scans refused as too large, and wants more `cart_lines`.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use redstore_platform::access_token::Bearer;
use redstore_proto::common::PageRequest;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{CreateStoreRequest, ListProductsRequest, OversellPolicy, RegisterTerminalRequest};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::sales::{ClearCartRequest, ScanRequest, ScanResponse, scan_response};
use serde::Serialize;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::{LatencyMs, Percentiles, Report, admin, connect, ignore_exists, progress};
use crate::client_auth::{Authed, ClientAuth, cashier_token};

/// Issue #17's target for scanning on one machine.
pub const TARGET_SCANS_PER_SECOND: f64 = 30_000.0;
pub const TARGET_P99_MS: f64 = 5.0;

/// Scanners set up at once (terminals registered, connections opened, carts emptied).
const SETTING_UP_AT_ONCE: usize = 16;

/// How long a scanner waits for an answer before it gives its stream up as broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ScanBench {
    /// The sales service (gRPC).
    pub target: String,
    /// Where the store and its terminals are set up, and the catalog read: the inventory service
    /// (the target when it serves inventory too).
    pub inventory_target: String,
    /// Scanners, each a stream on a connection of its own into the cart of its own terminal.
    pub scanners: usize,
    /// Scans each scanner keeps on its stream, sent but not answered.
    pub in_flight: usize,
    /// How long scans are measured...
    pub duration: Duration,
    /// ...after this long of the same load, unmeasured (connections, caches and the database warm).
    pub warmup: Duration,
    /// Barcodes each scanner scans in turn: the lines of its cart.
    pub cart_lines: usize,
    /// The store the scanners' terminals are in (created if missing, allowing negative stock).
    pub store_id: String,
    pub progress: bool,
    pub auth: ClientAuth,
}

/// The name of the bench's scanner `s` (0-based): its terminal.
fn scanner_terminal(s: usize) -> String {
    format!("scanner-{:03}", s + 1)
}

/// The barcode scanner `s` sends as its `n`-th scan (0-based): its own `lines` consecutive codes
/// of `barcodes`, in turn (neighbouring scanners share some).
fn scan_code(barcodes: &[String], s: usize, lines: usize, n: u64) -> &str {
    let lines = lines.clamp(1, barcodes.len()) as u64;
    let at = (s as u64 + n % lines) % barcodes.len() as u64;
    &barcodes[at as usize]
}

/// What a scan bench ran with (`--json`'s `settings`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScanSettings {
    pub target: String,
    pub inventory_target: String,
    pub store: String,
    pub scanners: usize,
    pub in_flight: usize,
    pub cart_lines: usize,
    /// Distinct barcodes the catalog gave the scanners.
    pub barcodes: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
}

#[derive(Clone, Debug)]
pub struct ScanSummary {
    pub settings: ScanSettings,
    /// Scans sent after the warm-up that answered with their cart line.
    pub scans: u64,
    /// Scans sent after the warm-up that answered with an error, or were lost with a stream
    /// that broke or went unanswered for 10 s (and a stream that could not be opened counts one
    /// each time it is tried).
    pub failed: u64,
    /// Scans sent during the warm-up: answered with their line, and failed. Never counted above.
    pub warmup_scans: u64,
    pub warmup_failures: u64,
    /// From the end of the warm-up until the last scan sent before the deadline was answered.
    pub elapsed: Duration,
    pub latency: Percentiles,
}

impl ScanSummary {
    pub fn scans_per_second(&self) -> f64 {
        self.scans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The parts of the target missed (none: met).
    pub fn missed(&self) -> Vec<&'static str> {
        let mut missed = Vec::new();
        if self.scans_per_second() < TARGET_SCANS_PER_SECOND {
            missed.push("scans/s");
        }
        if self.latency.ms().p99 > TARGET_P99_MS {
            missed.push("p99");
        }
        if self.failed > 0 {
            missed.push("failed scans");
        }
        missed
    }
}

impl std::fmt::Display for ScanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "scans: {} ok, {} failed in {:.2} s = {:.0} scans/s ({} scanners, {} in flight each, {}-line carts)",
            self.scans,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.scans_per_second(),
            s.scanners,
            s.in_flight,
            s.cart_lines.min(s.barcodes)
        )?;
        if s.warmup_s > 0.0 {
            writeln!(
                f,
                "warm-up {:.1} s: {} scans, {} failed (not counted)",
                s.warmup_s, self.warmup_scans, self.warmup_failures
            )?;
        }
        writeln!(f, "latency (sent → its answer): {}", self.latency.ms())?;
        let missed = self.missed();
        let verdict = if missed.is_empty() { "met".to_owned() } else { format!("not met: {}", missed.join(", ")) };
        write!(f, "target ≥ {TARGET_SCANS_PER_SECOND:.0} scans/s, p99 ≤ {TARGET_P99_MS} ms: {verdict}")
    }
}

/// Issue #17's target and whether this run met it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScanTarget {
    pub scans_per_second: f64,
    pub p99_ms: f64,
    pub met: bool,
    /// The parts missed: `scans/s`, `p99`, `failed scans`.
    pub missed: Vec<&'static str>,
}

/// `redstore bench scan --json`.
#[derive(Clone, Debug, Serialize)]
pub struct ScanJson {
    pub bench: &'static str,
    pub settings: ScanSettings,
    pub scans: u64,
    pub failed: u64,
    pub warmup_scans: u64,
    pub warmup_failures: u64,
    pub elapsed_s: f64,
    pub scans_per_second: f64,
    pub latency_ms: LatencyMs,
    pub target: ScanTarget,
}

impl Report for ScanSummary {
    type Json = ScanJson;

    fn json(&self) -> ScanJson {
        let missed = self.missed();
        ScanJson {
            bench: "scan",
            settings: self.settings.clone(),
            scans: self.scans,
            failed: self.failed,
            warmup_scans: self.warmup_scans,
            warmup_failures: self.warmup_failures,
            elapsed_s: self.elapsed.as_secs_f64(),
            scans_per_second: self.scans_per_second(),
            latency_ms: self.latency.ms(),
            target: ScanTarget {
                scans_per_second: TARGET_SCANS_PER_SECOND,
                p99_ms: TARGET_P99_MS,
                met: missed.is_empty(),
                missed,
            },
        }
    }
}

/// The first barcode of each active product of the catalog (at most 500: a first page).
async fn catalog_barcodes(inv: &mut InventoryServiceClient<Authed>) -> anyhow::Result<Vec<String>> {
    let products = inv
        .list_products(ListProductsRequest {
            page: Some(PageRequest { page_size: 500, page_token: String::new() }),
            include_inactive: false,
        })
        .await
        .context("bench set-up: the catalog")?
        .into_inner()
        .products;
    let barcodes: Vec<String> =
        products.into_iter().filter(|p| p.active).filter_map(|p| p.barcodes.into_iter().next()).collect();
    anyhow::ensure!(
        !barcodes.is_empty(),
        "no product of the catalog has a barcode to scan: start the server with its demo chain (no --no-demo), \
         or import products with barcodes"
    );
    Ok(barcodes)
}

/// Counts every scanner adds to as it goes, for the progress line.
#[derive(Default)]
struct Live {
    answered: AtomicU64,
    failed: AtomicU64,
    /// Whether a failure was logged: the first is, the rest only counted.
    warned: AtomicBool,
}

impl Live {
    fn first_failure(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// What one scanner measured.
#[derive(Default)]
struct Scanned {
    /// Each scan's round trip, of scans sent after the warm-up that answered with their line.
    latencies: Vec<Duration>,
    failed: u64,
    warmup_scans: u64,
    warmup_failures: u64,
}

impl Scanned {
    /// A scan sent at `sent` that answered at `answered` (`ok`: with its line), or was lost.
    fn record(&mut self, sent: Instant, answered: Instant, ok: bool, start: Instant, live: &Live) {
        let in_warmup = sent < start;
        match (ok, in_warmup) {
            (true, true) => self.warmup_scans += 1,
            (true, false) => self.latencies.push(answered - sent),
            (false, true) => self.warmup_failures += 1,
            (false, false) => self.failed += 1,
        }
        let count = if ok { &live.answered } else { &live.failed };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// One scanner, ready: its connection, and its terminal with an empty cart.
struct Scanner {
    index: usize,
    client: SalesServiceClient<Authed>,
    terminal_id: String,
}

/// Registers scanner `s`'s terminal, connects it (as a cashier signed in at it when the bench
/// holds the deployment's key) and empties its cart.
async fn set_up_scanner(
    cfg: &ScanBench,
    inv: &mut InventoryServiceClient<Authed>,
    keys: Option<&redstore_platform::access_token::TokenKeys>,
    s: usize,
) -> anyhow::Result<Scanner> {
    let terminal_id = scanner_terminal(s);
    ignore_exists(
        inv.register_terminal(RegisterTerminalRequest {
            idempotency_key: String::new(),
            store_id: cfg.store_id.clone(),
            terminal_id: terminal_id.clone(),
            name: String::new(),
        })
        .await,
    )?;
    let bearer = match keys {
        Some(keys) => Bearer::new(&cashier_token(keys, &cfg.store_id, &terminal_id))?,
        None => admin(&cfg.auth)?,
    };
    let mut client = SalesServiceClient::new(connect(&cfg.target, bearer).await?);
    client
        .clear_cart(ClearCartRequest {
            idempotency_key: String::new(),
            store_id: cfg.store_id.clone(),
            terminal_id: terminal_id.clone(),
        })
        .await
        .with_context(|| format!("bench set-up: empty the cart of {terminal_id}"))?;
    Ok(Scanner { index: s, client, terminal_id })
}

/// Opens a scanner's stream: where its scans go, and where their answers come from.
async fn open_stream(
    client: &mut SalesServiceClient<Authed>,
    in_flight: usize,
) -> Result<(tokio::sync::mpsc::Sender<ScanRequest>, tonic::Streaming<ScanResponse>), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(in_flight);
    let answers = client.scan_stream(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, answers))
}

/// Runs one scanner until `deadline`: keeps `in_flight` scans on its stream, then waits for the
/// last answers. A stream that breaks loses the scans on it (failed) and is opened again.
async fn run_scanner(
    mut scanner: Scanner,
    cfg: Arc<ScanBench>,
    barcodes: Arc<[String]>,
    start: Instant,
    deadline: Instant,
    live: Arc<Live>,
) -> Scanned {
    let mut scanned = Scanned { latencies: Vec::with_capacity(16 * 1024), ..Default::default() };
    let in_flight = cfg.in_flight.max(1);
    let mut pending: VecDeque<(String, Instant)> = VecDeque::with_capacity(in_flight);
    let mut n: u64 = 0;
    let mut stream = None;
    while Instant::now() < deadline || !pending.is_empty() {
        if stream.is_none() {
            match open_stream(&mut scanner.client, in_flight).await {
                Ok(open) => stream = Some(open),
                Err(e) => {
                    let now = Instant::now();
                    scanned.record(now, now, false, start, &live);
                    if live.first_failure() {
                        tracing::warn!(error = %e, terminal = %scanner.terminal_id, "cannot open a scan stream");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((tx, answers)) = stream.as_mut() else { continue };
        let mut broke = false;
        while pending.len() < in_flight && Instant::now() < deadline {
            let scan_id = uuid::Uuid::now_v7().to_string();
            let scan = ScanRequest {
                store_id: cfg.store_id.clone(),
                terminal_id: scanner.terminal_id.clone(),
                scan_id: scan_id.clone(),
                code: scan_code(&barcodes, scanner.index, cfg.cart_lines, n).to_owned(),
                quantity: 0,
            };
            n += 1;
            let sent = Instant::now();
            if tx.send(scan).await.is_err() {
                broke = true;
                break;
            }
            pending.push_back((scan_id, sent));
        }
        if pending.is_empty() && !broke {
            break;
        }
        if !broke {
            let answer = tokio::time::timeout(ANSWER_TIMEOUT, answers.message())
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 10 s")));
            match answer {
                Ok(Some(answer)) => {
                    let answered = Instant::now();
                    // Answered in order; looked up by id all the same.
                    let at = pending.iter().position(|(id, _)| *id == answer.scan_id);
                    match at.and_then(|i| pending.remove(i)) {
                        Some((_, sent)) => {
                            let ok = matches!(answer.result, Some(scan_response::Result::Line(_)));
                            if let Some(scan_response::Result::Error(e)) = &answer.result
                                && live.first_failure()
                            {
                                tracing::warn!(code = %e.code, message = %e.message, "a scan was refused");
                            }
                            scanned.record(sent, answered, ok, start, &live);
                        }
                        None => tracing::warn!(scan_id = %answer.scan_id, "an answer to a scan never sent"),
                    }
                    continue;
                }
                Ok(None) if live.first_failure() => {
                    tracing::warn!(terminal = %scanner.terminal_id, "the server ended a scan stream");
                }
                Err(e) if live.first_failure() => {
                    tracing::warn!(error = %e, terminal = %scanner.terminal_id, "a scan stream broke");
                }
                Ok(None) | Err(_) => {}
            }
        }
        // The stream is gone, and every scan on it with it.
        let now = Instant::now();
        for (_, sent) in pending.drain(..) {
            scanned.record(sent, now, false, start, &live);
        }
        stream = None;
    }
    scanned
}

pub async fn scan(cfg: ScanBench) -> anyhow::Result<ScanSummary> {
    anyhow::ensure!(cfg.scanners > 0, "--scanners must be at least 1");
    anyhow::ensure!(cfg.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(cfg.cart_lines > 0, "--cart-lines must be at least 1");
    anyhow::ensure!(!cfg.duration.is_zero(), "--duration must be more than 0");

    let setting_up = progress::counter(cfg.progress, "set-up: scanners", cfg.scanners as u64);
    let mut inv = InventoryServiceClient::new(connect(&cfg.inventory_target, admin(&cfg.auth)?).await?);
    let barcodes: Arc<[String]> = catalog_barcodes(&mut inv).await?.into();
    ignore_exists(
        inv.create_store(CreateStoreRequest {
            idempotency_key: String::new(),
            store_id: cfg.store_id.clone(),
            name: "Scanning benchmark store".into(),
            oversell_policy: OversellPolicy::AllowNegative as i32,
        })
        .await,
    )?;
    let keys = cfg.auth.keys()?;
    let scanners: Vec<Scanner> = futures::stream::iter(0..cfg.scanners)
        .map(|s| {
            let (cfg, mut inv, keys, bar) = (&cfg, inv.clone(), keys.as_ref(), setting_up.bar());
            async move {
                let scanner = set_up_scanner(cfg, &mut inv, keys, s).await;
                bar.inc(1);
                scanner
            }
        })
        .buffered(SETTING_UP_AT_ONCE)
        .try_collect()
        .await?;
    drop(setting_up);

    let settings = ScanSettings {
        target: cfg.target.clone(),
        inventory_target: cfg.inventory_target.clone(),
        store: cfg.store_id.clone(),
        scanners: cfg.scanners,
        in_flight: cfg.in_flight,
        cart_lines: cfg.cart_lines,
        barcodes: barcodes.len(),
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
    };
    let live = Arc::new(Live::default());
    let began = Instant::now();
    let start = began + cfg.warmup;
    let deadline = start + cfg.duration;
    let timeline = {
        let live = live.clone();
        progress::Timeline::start(
            cfg.progress,
            vec![("warm-up", began, start), ("measuring", start, deadline)],
            move || {
                format!(
                    "{} scans, {} failed",
                    live.answered.load(Ordering::Relaxed),
                    live.failed.load(Ordering::Relaxed)
                )
            },
        )
    };
    let cfg = Arc::new(cfg);
    let workers: Vec<_> = scanners
        .into_iter()
        .map(|scanner| tokio::spawn(run_scanner(scanner, cfg.clone(), barcodes.clone(), start, deadline, live.clone())))
        .collect();
    let mut all = Vec::new();
    let (mut failed, mut warmup_scans, mut warmup_failures) = (0, 0, 0);
    for worker in workers {
        let scanned = worker.await.context("a scanner failed")?;
        all.extend(scanned.latencies);
        failed += scanned.failed;
        warmup_scans += scanned.warmup_scans;
        warmup_failures += scanned.warmup_failures;
    }
    let elapsed = start.elapsed();
    timeline.finish().await;
    all.sort_unstable();
    Ok(ScanSummary {
        settings,
        scans: all.len() as u64,
        failed,
        warmup_scans,
        warmup_failures,
        elapsed,
        latency: Percentiles::of(&all),
    })
}

#[cfg(test)]
mod tests {
    //! Invented figures for the summary's shapes and verdicts, not measurements (those are in
    //! docs/BENCHMARKS.md).
    use super::*;

    fn codes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("code-{i}")).collect()
    }

    fn summary(scans: u64, p99_ms: u64, failed: u64) -> ScanSummary {
        ScanSummary {
            settings: ScanSettings {
                target: "http://127.0.0.1:50051".into(),
                inventory_target: "http://127.0.0.1:50051".into(),
                store: "bench-scan".into(),
                scanners: 64,
                in_flight: 1,
                cart_lines: 5,
                barcodes: 20,
                duration_s: 10.0,
                warmup_s: 2.0,
            },
            scans,
            failed,
            warmup_scans: 400,
            warmup_failures: 3,
            elapsed: Duration::from_secs(10),
            latency: Percentiles {
                p50: Duration::from_micros(1_500),
                p95: Duration::from_millis(3),
                p99: Duration::from_millis(p99_ms),
                max: Duration::from_millis(12),
            },
        }
    }

    #[test]
    fn a_scanner_rotates_over_its_own_few_codes() {
        let barcodes = codes(20);
        let sent: Vec<&str> = (0..7).map(|n| scan_code(&barcodes, 3, 3, n)).collect();
        assert_eq!(sent, ["code-4", "code-5", "code-6", "code-4", "code-5", "code-6", "code-4"]);
        // Past the catalog's end it wraps around; more lines than codes is every code.
        assert_eq!(scan_code(&barcodes, 19, 2, 1), "code-1");
        let few = codes(2);
        let all: std::collections::BTreeSet<&str> = (0..10).map(|n| scan_code(&few, 0, 5, n)).collect();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn the_json_has_every_figure_in_milliseconds_and_the_warm_up_apart() {
        let json = serde_json::to_value(summary(350_000, 4, 0).json()).expect("JSON");
        assert_eq!(json["bench"], "scan");
        assert_eq!(json["scans"], 350_000);
        assert_eq!(json["failed"], 0);
        assert_eq!(json["warmup_scans"], 400);
        assert_eq!(json["warmup_failures"], 3);
        assert_eq!(json["elapsed_s"], 10.0);
        assert_eq!(json["scans_per_second"], 35_000.0);
        assert_eq!(json["latency_ms"]["p50"], 1.5);
        assert_eq!(json["latency_ms"]["p99"], 4.0);
        assert_eq!(json["latency_ms"]["max"], 12.0);
        assert_eq!(json["settings"]["scanners"], 64);
        assert_eq!(json["settings"]["in_flight"], 1);
        assert_eq!(json["settings"]["cart_lines"], 5);
        assert_eq!(json["settings"]["warmup_s"], 2.0);
        assert_eq!(json["target"]["met"], true);
        assert_eq!(json["target"]["missed"], serde_json::json!([]));
    }

    #[test]
    fn the_target_needs_the_rate_the_p99_and_no_failed_scan() {
        assert!(summary(300_000, 5, 0).missed().is_empty(), "30,000/s with p99 5 ms is the target itself");
        assert_eq!(summary(299_990, 5, 0).missed(), ["scans/s"]);
        assert_eq!(summary(400_000, 6, 2).missed(), ["p99", "failed scans"]);
        let json = serde_json::to_value(summary(100_000, 9, 0).json()).expect("JSON");
        assert_eq!(json["target"]["met"], false);
        assert_eq!(json["target"]["missed"], serde_json::json!(["scans/s", "p99"]));
    }

    #[test]
    fn the_summary_says_the_rate_the_warm_up_the_latencies_and_the_verdict() {
        let text = summary(1_000, 7, 1).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "scans: 1000 ok, 1 failed in 10.00 s = 100 scans/s (64 scanners, 1 in flight each, 5-line carts)",
                "warm-up 2.0 s: 400 scans, 3 failed (not counted)",
                "latency (sent → its answer): p50 1.50 ms, p95 3.00 ms, p99 7.00 ms, max 12.00 ms",
                "target ≥ 30000 scans/s, p99 ≤ 5 ms: not met: scans/s, p99, failed scans",
            ]
        );
    }
}
