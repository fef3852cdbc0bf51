//! `redstore`: one binary for every shape of Red Store.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use redstore::bench::{self, ChainBench, CheckoutBench, IdleBench, IdleChainBench, LiveBench, Report, ScanBench};
use redstore::connections::ConnectionOptions;
use redstore::server::{self, ServerConfig, ServiceName};
use redstore_platform::telemetry::{self, LogFormat};

/// mimalloc rather than glibc's allocator: a service allocates and frees many small buffers per
/// request, and glibc's malloc/free (with its consolidation) was a tenth of each process's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration the process cannot start with (like linkerd and sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a backend (PostgreSQL, Redis) that could not be reached at start (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for a failure of the running server itself (EX_SOFTWARE).
const EXIT_INTERNAL: u8 = 70;

/// The exit code for an error that stopped the process from starting.
fn start_failure(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(if redstore_platform::unreachable::is_unreachable(error) { EXIT_UNAVAILABLE } else { EXIT_CONFIG })
}

#[derive(Parser, Debug)]
#[command(name = "redstore", version, about = "Red Store: point of sale and inventory for retail chains")]
struct Cli {
    /// Log format: human-readable or JSON lines.
    #[arg(long, env = "REDSTORE_LOG_FORMAT", value_enum, default_value = "human", global = true)]
    log_format: LogFormatArg,
    /// Threads that run requests (default: one per CPU). Several services sharing a few cores (or
    /// a pod limited to one) do better with as many as the CPUs each may use: idle threads woken
    /// for every task cost more than they run.
    #[arg(long, env = "REDSTORE_WORKER_THREADS", global = true, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// A TOML file of settings, beneath flags and REDSTORE_* variables: keys are the flags' long
    /// names (`listen = "0.0.0.0:50051"`; `[kafka] brokers = "…"` for --kafka-brokers).
    #[arg(long, env = "REDSTORE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print the settings in effect, as a configuration file with secrets redacted, and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every service in one process on one port (embedded by default, or on PostgreSQL).
    Up(UpArgs),
    /// Run one service in this process (the distributed shape).
    Serve(ServeArgs),
    /// Apply every service's migrations (to the data directory, or to PostgreSQL) and exit.
    Migrate(MigrateArgs),
    /// Benchmarks against a running server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Onboard a chain from CSV files: stores with terminals, the catalog, stock counts. The whole
    /// file is checked first (a bad row names its line and column, and nothing is sent); then it
    /// goes in batches, each applied whole and once (running the command again doubles nothing).
    #[command(subcommand)]
    Import(ImportCommand),
    /// The Kafka side of `up` and `serve` (outbox relays, consumer groups), which they run as a
    /// child process of their own and start again whenever it ends.
    #[command(name = "kafka-worker", hide = true)]
    KafkaWorker(KafkaWorkerArgs),
}

#[derive(Args, Debug)]
struct KafkaWorkerArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// An outbox to relay to Kafka (`inventory`, `sales`); repeat for both.
    #[arg(long, value_parser = ["inventory", "sales"])]
    relay: Vec<String>,
    /// Run analytics' consumer group.
    #[arg(long)]
    analytics: bool,
    /// Run the stock cache's consumer group (needs --redis-url).
    #[arg(long)]
    stock_cache: bool,
}

#[derive(Args, Debug)]
struct DataDirArgs {
    /// Where the embedded database lives.
    #[arg(long, env = "REDSTORE_DATA_DIR", default_value = "./redstore-data")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
struct MigrateArgs {
    #[command(flatten)]
    data: DataDirArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Apply nothing: wait until every migration this binary knows is applied to
    /// --database-url (by a `redstore migrate` elsewhere), then exit 0. What a pod's init
    /// container runs, so services start after the migration Job instead of crash-looping.
    #[arg(long, requires = "database_url")]
    wait: bool,
    /// How long --wait waits before it gives up (exit 69).
    #[arg(long, default_value = "10m", requires = "wait", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct BackendArgs {
    /// PostgreSQL for the distributed shape (postgres://user@host:port/db); leave it out for the
    /// embedded SQLite database in --data-dir. Services connect as a role without superuser or
    /// BYPASSRLS (`redstore migrate` creates `redstore_app`), so row-level security holds.
    #[arg(long, env = "REDSTORE_DATABASE_URL")]
    database_url: Option<String>,
    /// Redis for the distributed shape's live fan-out and stock cache (redis://host:port). Without
    /// it, stream bridges are woken by PostgreSQL notifications instead.
    #[arg(long, env = "REDSTORE_REDIS_URL")]
    redis_url: Option<String>,
    /// Kafka brokers for the distributed shape's events (host:port,host:port). Without them,
    /// consumers read the PostgreSQL outbox directly.
    #[arg(long, env = "REDSTORE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// First part of every topic name: `<prefix>.inventory.v1`, `<prefix>.sales.v1`.
    #[arg(long, env = "REDSTORE_KAFKA_TOPIC_PREFIX", default_value = "redstore")]
    kafka_topic_prefix: String,
    /// Partitions of topics created at start.
    #[arg(long, env = "REDSTORE_KAFKA_PARTITIONS", default_value_t = 3)]
    kafka_partitions: i32,
    /// Replication factor of topics created at start.
    #[arg(long, env = "REDSTORE_KAFKA_REPLICATION", default_value_t = 1)]
    kafka_replication: i16,
    #[command(flatten)]
    kafka_security: redstore::kafka_security::KafkaSecurityArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The service to run.
    #[arg(value_enum)]
    service: ServiceName,
    #[command(flatten)]
    server: ServerArgs,
    /// Seed the demo chain (stores, products, staff) into an empty database: for trying the
    /// distributed shape, never for a chain's own.
    #[arg(long, env = "REDSTORE_DEMO")]
    demo: bool,
    /// The inventory service's URL, which a separate sales process calls over gRPC.
    #[arg(long, env = "REDSTORE_INVENTORY_URL")]
    inventory_url: Option<String>,
}

/// What every server takes, `up` and `serve` alike.
#[derive(Args, Debug)]
struct ServerArgs {
    /// Address to serve gRPC, gRPC-web and SSE on.
    #[arg(long, env = "REDSTORE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    backend: BackendArgs,
    /// How long requests and streams get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "REDSTORE_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    grace_period: Duration,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "REDSTORE_DB_POOL_SIZE", default_value_t = 32)]
    db_pool_size: u32,
    /// Interval of SSE keep-alive comments.
    #[arg(long, env = "REDSTORE_SSE_KEEP_ALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    sse_keep_alive: Duration,
    /// After SIGTERM, how long the port stays open at least, answering health NOT_SERVING, so load
    /// balancers stop sending before it closes (it also stays open while requests are in flight).
    #[arg(long, env = "REDSTORE_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Serve Prometheus' `/metrics` on this address alone (one only the scraper reaches) instead
    /// of on --listen's port.
    #[arg(long, env = "REDSTORE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    connections: ConnectionOptions,
    #[command(flatten)]
    edge: redstore::edge::EdgeOptions,
    #[command(flatten)]
    tls: redstore::tls::TlsOptions,
    #[command(flatten)]
    auth: redstore::auth::AuthOptions,
}

/// `redstore up`: every service in one process, embedded by default.
#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    data: DataDirArgs,
    /// Start with an empty database instead of the demo chain.
    #[arg(long, env = "REDSTORE_NO_DEMO")]
    no_demo: bool,
    #[command(flatten)]
    embedded: EmbeddedDbArgs,
}

/// How long answers kept for retries are kept.
#[derive(Args, Debug)]
struct RetentionArgs {
    /// How long idempotency keys (checkouts, refunds, adjustments, …) are kept: a retry with a key
    /// after this is a new request. At least 7 days.
    #[arg(long, env = "REDSTORE_KEY_RETENTION", default_value = "7d", value_parser = at_least(redstore_platform::retention::MIN_KEYS))]
    key_retention: Duration,
    /// How long scan ids and cart adds' keys are kept. At least 1 hour.
    #[arg(long, env = "REDSTORE_SCAN_RETENTION", default_value = "24h", value_parser = at_least(redstore_platform::retention::MIN_SCANS))]
    scan_retention: Duration,
}

/// A duration flag of at least `min`.
fn at_least(min: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |value| {
        let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
        if d < min {
            return Err(format!("must be at least {}", humantime::format_duration(min)));
        }
        Ok(d)
    }
}

/// The embedded database under contention.
#[derive(Args, Debug)]
struct EmbeddedDbArgs {
    /// How long a write waits for the database's lock when another program holds it (a backup,
    /// an operator's sqlite3 shell) before it is refused with UNAVAILABLE; health is NOT_SERVING
    /// until the lock is released.
    #[arg(long, env = "REDSTORE_DB_BUSY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    db_busy_timeout: Duration,
    /// Most writes waiting for the embedded database; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDSTORE_WRITE_QUEUE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    write_queue: u32,
}

#[derive(Subcommand, Debug)]
enum ImportCommand {
    /// Products: `sku,name,price_minor,currency[,barcodes][,active]` (barcodes separated by `|`
    /// or spaces; active true/false, default true). An existing sku is replaced.
    Products(ImportFileArgs),
    /// Stock counts: `store_id,sku,quantity` (the count on hand, which replaces the level; live
    /// terminals see it as an `import` change).
    Stock(ImportFileArgs),
    /// Stores: `store_id,name[,oversell_policy][,terminals]` (strict or allow_negative, default
    /// strict; terminal ids separated by `|` or spaces).
    Stores(ImportFileArgs),
}

#[derive(Args, Debug)]
struct ImportFileArgs {
    /// The CSV file, with a header row.
    file: PathBuf,
    #[command(flatten)]
    options: redstore::import::ImportOptions,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Concurrent terminals checking out multi-line sales; prints sales/s and latency percentiles.
    Checkout(CheckoutArgs),
    /// Many SSE clients watching one store while a terminal sells; prints commit-to-client latency.
    Live(LiveArgs),
    /// Many SSE clients that open a store's stream and sit idle; prints what holding them costs
    /// the server (memory, threads, open files, read from /proc/<pid>).
    IdleStreams(IdleArgs),
    /// Creates a chain of many stores through the API, waits for quiet, then reads what it costs
    /// at rest: the database's transactions/s and each server process's CPU and memory.
    IdleChain(IdleChainArgs),
    /// Issue #14's chain figures in one run against a running deployment: the chain at rest at
    /// each size, the pgbench anchor, checkout at each spread of stores × terminals, live updates
    /// across stores; prints one summary with each figure's ratio to the anchor and its target.
    Chain(ChainBench),
    /// Many barcode scanners, each a ScanStream into its own terminal's cart, scanning the
    /// catalog's barcodes; prints scans/s and each scan's round-trip latency percentiles.
    Scan(ScanArgs),
}

#[derive(Args, Debug)]
struct ScanArgs {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    auth: redstore::client_auth::ClientAuth,
    /// Server to benchmark (the sales service, gRPC).
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The inventory service, where the store and terminals are set up and the catalog's
    /// barcodes read (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_INVENTORY_TARGET")]
    inventory_target: Option<String>,
    /// Scanners, each a ScanStream on its own connection into the cart of its own terminal.
    #[arg(long, env = "REDSTORE_BENCH_SCANNERS", default_value_t = 64)]
    scanners: usize,
    /// Scans each scanner keeps on its stream, sent and not answered yet.
    #[arg(long, env = "REDSTORE_BENCH_IN_FLIGHT", default_value_t = 1)]
    in_flight: usize,
    /// How long scans are measured.
    #[arg(long, env = "REDSTORE_BENCH_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Run the load this long first without measuring it (steady-state figures).
    #[arg(long, env = "REDSTORE_BENCH_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Barcodes each scanner scans in turn: its cart keeps this many lines, whose quantities grow.
    #[arg(long, env = "REDSTORE_BENCH_CART_LINES", default_value_t = 5)]
    cart_lines: usize,
    /// The store the scanners' terminals (`scanner-001` …) are in; created if missing.
    #[arg(long, env = "REDSTORE_BENCH_STORE", default_value = "bench-scan")]
    store: String,
    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct IdleChainArgs {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    auth: redstore::client_auth::ClientAuth,
    /// Server that takes the sales (gRPC).
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The inventory service, where the stores are created (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_INVENTORY_TARGET")]
    inventory_target: Option<String>,
    /// Stores in the chain (`<prefix>-1` …); those that exist already are kept as they are.
    #[arg(long, env = "REDSTORE_BENCH_STORES", default_value_t = 10_000)]
    stores: usize,
    #[arg(long, env = "REDSTORE_BENCH_PREFIX", default_value = "chain")]
    prefix: String,
    /// Set-up requests in flight.
    #[arg(long, env = "REDSTORE_BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Make no sale in the stores created (only a terminal and a stock level).
    #[arg(long)]
    no_sales: bool,
    /// The deployment's database, whose transactions are counted (the application role will do).
    #[arg(long, env = "REDSTORE_BENCH_DATABASE_URL")]
    database_url: String,
    /// Server processes to read (comma-separated; their children too).
    #[arg(long, env = "REDSTORE_BENCH_SERVER_PIDS", value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// How long to wait after setting up, for the deployment to go quiet.
    #[arg(long, env = "REDSTORE_BENCH_SETTLE", default_value = "20s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// How long to count.
    #[arg(long, env = "REDSTORE_BENCH_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    auth: redstore::client_auth::ClientAuth,
    /// Server where the store is set up (gRPC).
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Stream bridge the SSE clients connect to (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_SSE_TARGET")]
    sse_target: Option<String>,
    /// Idle SSE streams to open (each needs an open file here and one in the server).
    #[arg(long, env = "REDSTORE_BENCH_STREAMS", default_value_t = 10_000)]
    streams: usize,
    /// The server's process id, to read its memory, threads and open files.
    #[arg(long, env = "REDSTORE_BENCH_SERVER_PID")]
    server_pid: Option<u32>,
    /// How long to wait once every stream is open (and once they are closed) before reading.
    #[arg(long, env = "REDSTORE_BENCH_SETTLE", default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// The store to watch; created if missing.
    #[arg(long, env = "REDSTORE_BENCH_STORE", default_value = "bench-idle")]
    store: String,
    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LiveArgs {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    auth: redstore::client_auth::ClientAuth,
    /// Server that takes the sales (gRPC).
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The inventory service, where the stores are set up (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_INVENTORY_TARGET")]
    inventory_target: Option<String>,
    /// Stream bridge the SSE clients connect to (default: --target).
    #[arg(long, env = "REDSTORE_BENCH_SSE_TARGET")]
    sse_target: Option<String>,
    /// Connected SSE clients.
    #[arg(long, env = "REDSTORE_BENCH_CLIENTS", default_value_t = 2000)]
    clients: usize,
    /// Sales to make while they watch.
    #[arg(long, env = "REDSTORE_BENCH_SALES", default_value_t = 200)]
    sales: u64,
    /// Sales per second.
    #[arg(long, env = "REDSTORE_BENCH_RATE", default_value_t = 20)]
    rate: u32,
    /// The store to sell in; created if missing.
    #[arg(long, env = "REDSTORE_BENCH_STORE", default_value = "bench-live")]
    store: String,
    /// Spread the sales and the clients over this many stores (`<store>-1`, `<store>-2`, …;
    /// client c watches store c mod stores).
    #[arg(long, env = "REDSTORE_BENCH_STORES", default_value_t = 1)]
    stores: usize,
    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct CheckoutArgs {
    /// How the bench proves who it is (the deployment's signing key, or an admin's token).
    #[command(flatten)]
    auth: redstore::client_auth::ClientAuth,
    /// Server to benchmark.
    #[arg(long, env = "REDSTORE_BENCH_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The inventory service, where the store and products are set up (default: --target);
    /// for services running as separate processes.
    #[arg(long, env = "REDSTORE_BENCH_INVENTORY_TARGET")]
    inventory_target: Option<String>,
    /// Concurrent terminals, each on its own connection.
    #[arg(long, env = "REDSTORE_BENCH_TERMINALS", default_value_t = 32)]
    terminals: usize,
    /// Total sales to make (default: run for --duration).
    #[arg(long, env = "REDSTORE_BENCH_SALES", conflicts_with = "duration")]
    sales: Option<u64>,
    /// How long to run when --sales is not given.
    #[arg(long, env = "REDSTORE_BENCH_DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// With --duration: run the load this long first without measuring it (steady-state figures).
    #[arg(long, env = "REDSTORE_BENCH_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Lines per sale.
    #[arg(long, env = "REDSTORE_BENCH_LINES", default_value_t = 3)]
    lines: usize,
    /// The store to sell in; created if missing.
    #[arg(long, env = "REDSTORE_BENCH_STORE", default_value = "bench")]
    store: String,
    /// Spread the terminals over this many stores (`<store>-1`, `<store>-2`, …).
    #[arg(long, env = "REDSTORE_BENCH_STORES", default_value_t = 1)]
    stores: usize,
    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas, and the kernel then backs them 2 MiB
    // at a time: thousands of idle connections, each a few small buffers spread over the arenas,
    // would hold far more resident memory than they use (docs/BENCHMARKS.md, idle live streams).
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("redstore: cannot turn transparent huge pages off: {e}");
    }
    let command = <Cli as clap::CommandFactory>::command();
    let resolved = match redstore::config_file::resolve(&command, std::env::args_os().collect()) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("redstore: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cli = match Cli::try_parse_from(&resolved.args) {
        Ok(cli) => cli,
        // --help and --version are answers, not errors; a command line clap refuses is a usage
        // error, 64 like every other configuration the process cannot start with.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.print_config {
        return match redstore::config_file::print(&command, &resolved) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("redstore: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    // A server holds a file per client connection, and a benchmark one per client.
    redstore::connections::raise_open_file_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redstore: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let format = match cli.log_format {
        LogFormatArg::Human => LogFormat::Human,
        LogFormatArg::Json => LogFormat::Json,
    };
    // The OTLP exporter is made inside the runtime: its gRPC client needs it.
    let telemetry = match runtime.block_on(async { telemetry::init(format, &trace_service_name(&cli.command)) }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("redstore: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    runtime.block_on(async {
        let code = run(cli).await;
        telemetry.shutdown();
        code
    })
}

/// How traces name this process unless `OTEL_SERVICE_NAME` does.
fn trace_service_name(command: &Command) -> String {
    match command {
        Command::Up(_) => "redstore".to_owned(),
        Command::Serve(args) => {
            let name = args.service.to_possible_value().map(|v| v.get_name().to_owned());
            format!("redstore-{}", name.unwrap_or_default())
        }
        Command::Migrate(_) => "redstore-migrate".to_owned(),
        Command::Bench(_) => "redstore-bench".to_owned(),
        Command::Import(_) => "redstore-import".to_owned(),
        Command::KafkaWorker(_) => "redstore-kafka-worker".to_owned(),
    }
}

async fn run(cli: Cli) -> ExitCode {
    let log_format = match cli.log_format {
        LogFormatArg::Human => LogFormat::Human,
        LogFormatArg::Json => LogFormat::Json,
    };
    match cli.command {
        Command::Up(args) => match config(args.server, Vec::new(), None, log_format).map(|mut config| {
            config.data_dir = args.data.data_dir;
            config.demo = !args.no_demo;
            config.db = redstore_platform::DbOptions {
                busy_timeout: args.embedded.db_busy_timeout,
                write_queue: args.embedded.write_queue as usize,
            };
            config
        }) {
            Ok(config) => up(config).await,
            Err(e) => {
                eprintln!("redstore up: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve(args) => {
            if args.service == ServiceName::Sales && args.inventory_url.is_none() {
                eprintln!("redstore serve sales: --inventory-url is required (the inventory service's gRPC URL)");
                return ExitCode::from(EXIT_CONFIG);
            }
            if args.server.backend.database_url.is_none() {
                eprintln!("redstore serve: --database-url is required (one service a process runs on PostgreSQL)");
                return ExitCode::from(EXIT_CONFIG);
            }
            if args.server.auth.auth_signing_key_file.is_none() {
                eprintln!(
                    "redstore serve: --auth-signing-key-file is required (REDSTORE_AUTH_SIGNING_KEY_FILE): every \
                     process checks staff tokens with the same Ed25519 key; make one with \
                     `openssl genpkey -algorithm ed25519 -out signing-key.pem`"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            match config(args.server, vec![args.service], args.inventory_url, log_format) {
                Ok(mut config) => {
                    config.demo = args.demo;
                    up(config).await
                }
                Err(e) => {
                    eprintln!("redstore serve: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Migrate(args) if args.wait => {
            let url = args.backend.database_url.as_deref().unwrap_or_default();
            match server::wait_for_migrations(url, args.timeout).await {
                Ok(()) => {
                    tracing::info!("every migration is applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("redstore migrate --wait: {e:#}");
                    start_failure(&e)
                }
            }
        }
        Command::Migrate(args) => {
            let migrated = match &args.backend.database_url {
                Some(url) => {
                    server::migrate_postgres(url).await.map(|()| url.split('@').next_back().unwrap_or("").to_owned())
                }
                None => server::open_db(&args.data.data_dir, Default::default(), "redstore migrate").map(|embedded| {
                    embedded.db.close();
                    args.data.data_dir.display().to_string()
                }),
            };
            match migrated {
                Ok(place) => {
                    tracing::info!(%place, "migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("redstore migrate: {e:#}");
                    start_failure(&e)
                }
            }
        }
        Command::KafkaWorker(args) => kafka_worker(args).await,
        Command::Import(command) => {
            use redstore::import;
            let (name, result) = match command {
                ImportCommand::Products(a) => ("products", import::products(&a.file, &a.options).await),
                ImportCommand::Stock(a) => ("stock", import::stock(&a.file, &a.options).await),
                ImportCommand::Stores(a) => ("stores", import::stores(&a.file, &a.options).await),
            };
            match result {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("redstore import {name}: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(BenchCommand::Live(args)) => {
            let json = args.json;
            let cfg = LiveBench {
                sse_target: args.sse_target.unwrap_or_else(|| args.target.clone()),
                inventory_target: args.inventory_target.unwrap_or_else(|| args.target.clone()),
                target: args.target,
                clients: args.clients,
                sales: args.sales,
                rate: args.rate,
                store_id: args.store,
                stores: args.stores,
                progress: true,
                auth: args.auth,
            };
            bench_note(
                json,
                format_args!(
                    "live bench: {} SSE clients on {}, {} sales at {}/s",
                    cfg.clients, cfg.sse_target, cfg.sales, cfg.rate
                ),
            );
            bench_result("live", json, bench::live(cfg).await)
        }
        Command::Bench(BenchCommand::IdleStreams(args)) => {
            let json = args.json;
            let cfg = IdleBench {
                sse_target: args.sse_target.unwrap_or_else(|| args.target.clone()),
                target: args.target,
                streams: args.streams,
                store_id: args.store,
                server_pid: args.server_pid,
                settle: args.settle,
                progress: true,
                auth: args.auth,
            };
            bench_note(
                json,
                format_args!("idle streams bench: {} idle SSE streams on {}", cfg.streams, cfg.sse_target),
            );
            bench_result("idle-streams", json, bench::idle_streams(cfg).await)
        }
        Command::Bench(BenchCommand::IdleChain(args)) => {
            let json = args.json;
            let cfg = IdleChainBench {
                inventory_target: args.inventory_target.unwrap_or_else(|| args.target.clone()),
                target: args.target,
                stores: args.stores,
                prefix: args.prefix,
                concurrency: args.concurrency,
                sell: !args.no_sales,
                database_url: args.database_url,
                pids: args.server_pid,
                settle: args.settle,
                measure: args.duration,
                progress: true,
                auth: args.auth,
            };
            bench_note(json, format_args!("idle chain bench: {} stores against {}", cfg.stores, cfg.target));
            bench_result("idle-chain", json, bench::idle_chain(cfg).await)
        }
        Command::Bench(BenchCommand::Chain(cfg)) => {
            let json = cfg.json;
            bench_result("chain", json, bench::chain(cfg).await)
        }
        Command::Bench(BenchCommand::Scan(args)) => {
            let json = args.json;
            let cfg = ScanBench {
                inventory_target: args.inventory_target.unwrap_or_else(|| args.target.clone()),
                target: args.target,
                scanners: args.scanners,
                in_flight: args.in_flight,
                duration: args.duration,
                warmup: args.warmup,
                cart_lines: args.cart_lines,
                store_id: args.store,
                progress: true,
                auth: args.auth,
            };
            bench_note(
                json,
                format_args!(
                    "scan bench: {} scanners, {} scan(s) in flight each, {}-line carts, against {}",
                    cfg.scanners, cfg.in_flight, cfg.cart_lines, cfg.target
                ),
            );
            bench_result("scan", json, bench::scan(cfg).await)
        }
        Command::Bench(BenchCommand::Checkout(args)) => {
            let json = args.json;
            let cfg = CheckoutBench {
                inventory_target: args.inventory_target.unwrap_or_else(|| args.target.clone()),
                target: args.target.clone(),
                terminals: args.terminals,
                sales: args.sales,
                duration: args.sales.is_none().then_some(args.duration),
                warmup: args.warmup,
                lines: args.lines,
                store_id: args.store,
                stores: args.stores,
                progress: true,
                auth: args.auth,
            };
            bench_note(
                json,
                format_args!(
                    "checkout bench: {} terminals, {}-line sales, against {}",
                    cfg.terminals, cfg.lines, cfg.target
                ),
            );
            bench_result("checkout", json, bench::checkout(cfg).await)
        }
    }
}

/// A benchmark's line for people: on stdout, or on stderr with `--json` (whose stdout is the
/// JSON object alone).
fn bench_note(json: bool, line: std::fmt::Arguments<'_>) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Prints a benchmark's summary (as one JSON object with `--json`), or why it failed.
fn bench_result(name: &str, json: bool, result: anyhow::Result<impl Report>) -> ExitCode {
    let printed = result.and_then(|summary| {
        if json { Ok(serde_json::to_string_pretty(&summary.json())?) } else { Ok(summary.to_string()) }
    });
    match printed {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redstore bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(
    args: ServerArgs,
    services: Vec<ServiceName>,
    inventory_url: Option<String>,
    log_format: LogFormat,
) -> Result<ServerConfig, String> {
    // No data directory, no demo chain and the embedded database's defaults: `up` sets its own.
    Ok(ServerConfig {
        listen: args.listen,
        data_dir: PathBuf::new(),
        demo: false,
        db: redstore_platform::DbOptions::default(),
        kafka: kafka_config(&args.backend)?,
        database_url: args.backend.database_url,
        redis_url: args.backend.redis_url,
        services,
        inventory_url,
        grace_period: args.grace_period,
        sse_keep_alive: args.sse_keep_alive,
        db_pool_size: args.db_pool_size,
        drain_delay: args.drain_delay,
        metrics_listen: args.metrics_listen,
        retention: redstore_platform::retention::Retention {
            keys: args.retention.key_retention,
            scans: args.retention.scan_retention,
            ..Default::default()
        },
        log_format,
        worker_program: None,
        connections: args.connections,
        edge: args.edge,
        tls: args.tls,
        auth: args.auth,
        code_sender: Default::default(),
    })
}

fn kafka_config(backend: &BackendArgs) -> Result<Option<redstore_platform::kafka::KafkaConfig>, String> {
    let Some(brokers) = backend.kafka_brokers.clone() else {
        return Ok(None);
    };
    Ok(Some(redstore_platform::kafka::KafkaConfig {
        brokers,
        security: backend.kafka_security.security()?,
        topic_prefix: backend.kafka_topic_prefix.clone(),
        partitions: backend.kafka_partitions,
        replication: backend.kafka_replication,
    }))
}

async fn kafka_worker(args: KafkaWorkerArgs) -> ExitCode {
    use redstore::kafka_worker::{self, WorkerConfig};
    let kafka = match kafka_config(&args.backend) {
        Ok(kafka) => kafka,
        Err(e) => {
            eprintln!("redstore kafka-worker: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (Some(kafka), Some(database_url)) = (kafka, args.backend.database_url) else {
        eprintln!("redstore kafka-worker: --kafka-brokers and --database-url are required");
        return ExitCode::from(EXIT_CONFIG);
    };
    let relays =
        args.relay.iter().filter_map(|r| redstore_platform::kafka::DOMAINS.into_iter().find(|d| d == r)).collect();
    let config = WorkerConfig {
        database_url,
        redis_url: args.backend.redis_url,
        kafka,
        relays,
        analytics: args.analytics,
        stock_cache: args.stock_cache,
    };
    kafka_worker::run(config).await
}

async fn up(config: ServerConfig) -> ExitCode {
    // Listen for signals before the port opens, so an early SIGTERM still stops the server
    // gracefully instead of killing it.
    let signal = shutdown_signal();
    let transport = if config.tls.tls_cert.is_some() { "-cacert <the CA's PEM>" } else { "-plaintext" };
    let mut running = match server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redstore up: {e:#}");
            return start_failure(&e);
        }
    };
    tracing::info!(
        "try it: grpcurl {transport} -d '{{\"store_id\":\"store-1\"}}' {} redstore.inventory.v1.InventoryService/ListStock",
        running.addr
    );
    let stopped = tokio::select! {
        _ = signal => None,
        r = running.wait() => Some(r),
    };
    match stopped {
        Some(Err(e)) => {
            eprintln!("redstore up: {e:#}");
            ExitCode::from(EXIT_INTERNAL)
        }
        Some(Ok(())) => ExitCode::SUCCESS,
        None => match running.shutdown().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("redstore up: {e:#}");
                ExitCode::from(EXIT_INTERNAL)
            }
        },
    }
}

/// Registers SIGINT and SIGTERM handlers now and resolves when either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {},
                    _ = t.recv() => {},
                }
            }
            _ => {
                tracing::warn!("cannot listen for SIGINT/SIGTERM; stop the server with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
