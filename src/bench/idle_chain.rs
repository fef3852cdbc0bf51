//! `redstore bench idle-chain`: what a chain of many stores costs at rest. It creates the stores
//! through the API (each with a terminal, a stock level and, optionally, a sale, so that every
//! per-store table has its rows), waits for the deployment to go quiet, then counts the
//! database's transactions (`pg_stat_database`) and each server process's CPU time and memory
//! (`/proc/<pid>`, with its children: the Kafka worker) over a measured window.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{AdjustStockRequest, AdjustmentReason, CreateStoreRequest, OversellPolicy};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    ProcessFigures, Report, admin, connect, create_products, ignore_exists, progress, set_up_store, sku, tender,
};

#[derive(Clone, Debug)]
pub struct IdleChainBench {
    /// Where the stores are created (inventory).
    pub inventory_target: String,
    /// Where the sales are made.
    pub target: String,
    /// The chain's size: stores `<prefix>-1` … `<prefix>-<stores>` (those that exist are kept).
    pub stores: usize,
    pub prefix: String,
    /// Requests in flight while setting up.
    pub concurrency: usize,
    /// One sale in each store created.
    pub sell: bool,
    /// The database whose transactions are counted (any role may read its statistics).
    pub database_url: String,
    /// The server processes to read (their children too).
    pub pids: Vec<u32>,
    /// How long to wait after setting up, for the deployment to go quiet.
    pub settle: Duration,
    /// How long to count.
    pub measure: Duration,
    pub progress: bool,
    pub auth: crate::client_auth::ClientAuth,
}

/// What an idle-chain bench ran with (`--json`'s `settings`; never the database's URL, which may
/// hold a password).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleChainSettings {
    pub target: String,
    pub inventory_target: String,
    pub stores: usize,
    pub prefix: String,
    pub concurrency: usize,
    pub sell: bool,
    pub server_pids: Vec<u32>,
    pub settle_s: f64,
    pub duration_s: f64,
}

/// One process over the window.
#[derive(Clone, Debug)]
pub struct ProcessIdle {
    pub pid: u32,
    pub command: String,
    /// CPU time used over the window, as a share of one core.
    pub cpu_share: f64,
    pub rss: u64,
    /// RSS before the stores were created (`None`: the process appeared since).
    pub rss_before: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct IdleChainSummary {
    pub settings: IdleChainSettings,
    pub stores: usize,
    pub created: usize,
    /// Every store in the database once set up (`None`: it could not be read), which is more
    /// than `stores` when the deployment had others.
    pub stores_in_database: Option<i64>,
    pub setting_up: Duration,
    pub measured: Duration,
    pub transactions: i64,
    pub processes: Vec<ProcessIdle>,
}

impl IdleChainSummary {
    pub fn transactions_per_second(&self) -> f64 {
        self.transactions as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// How much a process's RSS grew per store set up (`None`: no store was, or the process
    /// appeared since).
    fn bytes_per_store(&self, p: &ProcessIdle) -> Option<f64> {
        let before = p.rss_before.filter(|_| self.created > 0)?;
        Some((p.rss as f64 - before as f64) / self.created as f64)
    }
}

impl std::fmt::Display for IdleChainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.measured.as_secs_f64();
        let in_database = self.stores_in_database.map(|n| format!(", {n} in the database")).unwrap_or_default();
        writeln!(
            f,
            "idle chain of {} stores ({} set up in {:.1} s{in_database}): {:.2} PostgreSQL transactions/s over {:.0} s ({} in all)",
            self.stores,
            self.created,
            self.setting_up.as_secs_f64(),
            self.transactions_per_second(),
            secs,
            self.transactions
        )?;
        for p in &self.processes {
            let mib = p.rss as f64 / (1024.0 * 1024.0);
            write!(f, "  pid {} ({}): {:.2} % of a core, RSS {:.1} MiB", p.pid, p.command, p.cpu_share * 100.0, mib)?;
            if let Some(per_store) = self.bytes_per_store(p) {
                write!(f, " ({:+.0} B per store set up)", per_store)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// One server process at rest, in `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleChainProcessJson {
    pub pid: u32,
    pub command: String,
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub bytes_per_store_set_up: Option<f64>,
}

/// `redstore bench idle-chain --json`.
#[derive(Clone, Debug, Serialize)]
pub struct IdleChainJson {
    pub bench: &'static str,
    pub settings: IdleChainSettings,
    pub created: usize,
    pub stores_in_database: Option<i64>,
    pub setting_up_s: f64,
    pub measured_s: f64,
    pub transactions: i64,
    pub transactions_per_second: f64,
    pub processes: Vec<IdleChainProcessJson>,
}

impl Report for IdleChainSummary {
    type Json = IdleChainJson;

    fn json(&self) -> IdleChainJson {
        IdleChainJson {
            bench: "idle-chain",
            settings: self.settings.clone(),
            created: self.created,
            stores_in_database: self.stores_in_database,
            setting_up_s: self.setting_up.as_secs_f64(),
            measured_s: self.measured.as_secs_f64(),
            transactions: self.transactions,
            transactions_per_second: self.transactions_per_second(),
            processes: self
                .processes
                .iter()
                .map(|p| IdleChainProcessJson {
                    pid: p.pid,
                    command: p.command.clone(),
                    cpu_percent: p.cpu_share * 100.0,
                    rss_mib: p.rss as f64 / (1024.0 * 1024.0),
                    bytes_per_store_set_up: self.bytes_per_store(p),
                })
                .collect(),
        }
    }
}

/// User + system CPU ticks of a process (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The process and its children (one level: `redstore up` and its Kafka worker).
fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    for &pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

fn command(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> =
        raw.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    words.iter().skip(1).take(2).cloned().collect::<Vec<_>>().join(" ")
}

/// Linux's clock ticks per second for /proc (USER_HZ), which is 100 on every architecture it
/// exposes to user space through /proc.
const TICKS_PER_SECOND: f64 = 100.0;

async fn transactions(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?)
}

/// Sets up one store: created, a terminal, a stock level of the first bench product, and a sale.
async fn set_up_chain_store(
    inventory: &mut InventoryServiceClient<crate::client_auth::Authed>,
    sales: &mut SalesServiceClient<crate::client_auth::Authed>,
    store_id: String,
    sell: bool,
) -> anyhow::Result<bool> {
    let created = inventory
        .create_store(CreateStoreRequest {
            idempotency_key: String::new(),
            store_id: store_id.clone(),
            name: "Chain store".into(),
            oversell_policy: OversellPolicy::AllowNegative as i32,
        })
        .await;
    if matches!(&created, Err(s) if s.code() == tonic::Code::AlreadyExists) {
        return Ok(false);
    }
    created.context("create a store")?;
    ignore_exists(
        inventory
            .register_terminal(redstore_proto::inventory::RegisterTerminalRequest {
                idempotency_key: String::new(),
                store_id: store_id.clone(),
                terminal_id: "bench-001".into(),
                name: String::new(),
            })
            .await,
    )?;
    inventory
        .adjust_stock(AdjustStockRequest {
            idempotency_key: format!("chain-{store_id}"),
            store_id: store_id.clone(),
            sku: sku(0),
            quantity_delta: 1_000,
            reason: AdjustmentReason::Received as i32,
            note: String::new(),
        })
        .await
        .context("stock a store")?;
    if sell {
        sales
            .checkout(redstore_proto::sales::CheckoutRequest {
                idempotency_key: format!("chain-sale-{store_id}"),
                store_id,
                terminal_id: "bench-001".into(),
                lines: vec![redstore_proto::sales::CheckoutLine { sku: sku(0), quantity: 1, ..Default::default() }],
                tenders: vec![tender(10_000)],
            })
            .await
            .context("a sale")?;
    }
    Ok(true)
}

pub async fn idle_chain(cfg: IdleChainBench) -> anyhow::Result<IdleChainSummary> {
    anyhow::ensure!(cfg.stores > 0, "--stores must be positive");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cfg.database_url)
        .await
        .with_context(|| "cannot connect to --database-url to read its statistics".to_owned())?;
    let pids = with_children(&cfg.pids);
    let rss_before: Vec<(u32, u64)> =
        pids.iter().filter_map(|&pid| Some((pid, ProcessFigures::read(pid)?.rss))).collect();

    // The products the stores stock and sell (one bench store sets them up).
    let setting_up_bar = progress::counter(cfg.progress, "set-up: stores", cfg.stores as u64);
    let mut inv = InventoryServiceClient::new(connect(&cfg.inventory_target, admin(&cfg.auth)?).await?);
    create_products(&mut inv).await?;
    set_up_store(&mut inv, &format!("{}-0", cfg.prefix), &[]).await?;
    let started = Instant::now();
    let (inventory, sales) =
        (connect(&cfg.inventory_target, admin(&cfg.auth)?).await?, connect(&cfg.target, admin(&cfg.auth)?).await?);
    let created = futures::stream::iter(1..=cfg.stores)
        .map(|i| {
            let (mut inventory, mut sales) =
                (InventoryServiceClient::new(inventory.clone()), SalesServiceClient::new(sales.clone()));
            let store_id = format!("{}-{i}", cfg.prefix);
            let bar = setting_up_bar.bar();
            async move {
                let made = set_up_chain_store(&mut inventory, &mut sales, store_id, cfg.sell).await;
                bar.inc(1);
                made
            }
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .fold(Ok(0usize), |count, created| async move {
            match (count, created) {
                (Ok(n), Ok(made)) => Ok(n + usize::from(made)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        })
        .await?;
    let setting_up = started.elapsed();
    drop(setting_up_bar);
    // Read before settling, so that its transaction is not counted in the window.
    let stores_in_database =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM inventory.stores").fetch_one(&pool).await.ok();

    let settled = Instant::now() + cfg.settle;
    let timeline = progress::Timeline::start(
        cfg.progress,
        vec![("settling", Instant::now(), settled), ("measuring", settled, settled + cfg.measure)],
        String::new,
    );
    tokio::time::sleep_until(settled).await;
    let pids = with_children(&cfg.pids);
    let ticks_before: Vec<Option<u64>> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let before = transactions(&pool).await?;
    let window = Instant::now();
    tokio::time::sleep(cfg.measure).await;
    let after = transactions(&pool).await?;
    let measured = window.elapsed();
    timeline.finish().await;
    let processes = pids
        .iter()
        .zip(ticks_before)
        .filter_map(|(&pid, before)| {
            let used = cpu_ticks(pid)?.saturating_sub(before?);
            Some(ProcessIdle {
                pid,
                command: command(pid),
                cpu_share: used as f64 / TICKS_PER_SECOND / measured.as_secs_f64(),
                rss: ProcessFigures::read(pid)?.rss,
                rss_before: rss_before.iter().find(|(p, _)| *p == pid).map(|(_, rss)| *rss),
            })
        })
        .collect();
    pool.close().await;
    // The two reads of the statistics are this benchmark's own transactions.
    Ok(IdleChainSummary {
        settings: IdleChainSettings {
            target: cfg.target.clone(),
            inventory_target: cfg.inventory_target.clone(),
            stores: cfg.stores,
            prefix: cfg.prefix.clone(),
            concurrency: cfg.concurrency,
            sell: cfg.sell,
            server_pids: cfg.pids.clone(),
            settle_s: cfg.settle.as_secs_f64(),
            duration_s: cfg.measure.as_secs_f64(),
        },
        stores: cfg.stores,
        created,
        stores_in_database,
        setting_up,
        measured,
        transactions: after - before - 1,
        processes,
    })
}

#[cfg(test)]
mod tests {
    //! Invented figures for the summary's shapes, not measurements.
    use super::*;

    #[test]
    fn the_idle_chain_json_has_the_rate_each_process_and_never_the_database_url() {
        let summary = IdleChainSummary {
            settings: IdleChainSettings {
                target: "http://127.0.0.1:50051".into(),
                inventory_target: "http://127.0.0.1:50051".into(),
                stores: 1000,
                prefix: "chain".into(),
                concurrency: 64,
                sell: true,
                server_pids: vec![100],
                settle_s: 20.0,
                duration_s: 30.0,
            },
            stores: 1000,
            created: 1000,
            stores_in_database: Some(1001),
            setting_up: Duration::from_secs(12),
            measured: Duration::from_secs(30),
            transactions: 18,
            processes: vec![ProcessIdle {
                pid: 100,
                command: "up --database-url".into(),
                cpu_share: 0.0004,
                rss: 40 * 1024 * 1024,
                rss_before: Some(40 * 1024 * 1024 - 512_000),
            }],
        };
        let json = serde_json::to_value(summary.json()).expect("JSON");
        assert_eq!(json["bench"], "idle-chain");
        assert_eq!(json["transactions"], 18);
        assert_eq!(json["transactions_per_second"], 0.6);
        assert_eq!(json["stores_in_database"], 1001);
        let process = &json["processes"][0];
        assert_eq!(process["cpu_percent"], 0.04);
        assert_eq!(process["rss_mib"], 40.0);
        assert_eq!(process["bytes_per_store_set_up"], 512.0);
        assert_eq!(json["settings"]["server_pids"], serde_json::json!([100]));
        assert!(!json["settings"].to_string().contains("postgres"), "no database URL: {json}");
        let text = summary.to_string();
        assert!(text.contains("0.60 PostgreSQL transactions/s over 30 s (18 in all)"), "{text}");
        assert!(text.contains("pid 100 (up --database-url): 0.04 % of a core, RSS 40.0 MiB (+512 B per store set up)"));
    }
}
