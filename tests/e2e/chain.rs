//! A chain, not a store: background work on PostgreSQL costs nothing per store at rest, and finds
//! the one quiet store among many that has unfinished work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{CreateStoreRequest, OversellPolicy, RegisterTerminalRequest};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::sales::{AddCartItemRequest, GetCartRequest, ListSalesRequest, SaleStatus};

use crate::helpers::*;

/// Creates stores `<prefix>-0` … `<prefix>-<n-1>` (allowing negative stock, one terminal `till-1`
/// each) through the inventory API, 32 at a time.
pub async fn create_stores(channel: Ch, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let mut client = InventoryServiceClient::new(channel.clone());
            async move {
                let store_id = format!("{prefix}-{i}");
                client
                    .create_store(CreateStoreRequest {
                        idempotency_key: String::new(),
                        store_id: store_id.clone(),
                        name: format!("Store {i}"),
                        oversell_policy: OversellPolicy::AllowNegative as i32,
                    })
                    .await
                    .expect("create store");
                client
                    .register_terminal(RegisterTerminalRequest {
                        idempotency_key: String::new(),
                        store_id,
                        terminal_id: "till-1".into(),
                        name: String::new(),
                    })
                    .await
                    .expect("register terminal");
            }
        })
        .await;
}

/// Transactions committed or rolled back in the database so far, as its statistics say (each
/// backend reports its own within a second or so of going idle).
async fn transactions(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .expect("database statistics")
}

/// A chain of a few hundred stores at rest costs a handful of transactions, not some per store:
/// every safety sweep (the analytics consumer's, the pending-sale healer's, the reconciler's) asks
/// the database in one statement which stores have work, and there are none. Counted over 10 s of
/// the whole server (`redstore up` on PostgreSQL); when each sweep visited every store, the same
/// chain cost about two transactions per store every 5 s (over a thousand here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_chain_of_many_stores_commits_a_bounded_number_of_transactions() {
    if !on_postgres() {
        return;
    }
    let app = TestApp::spawn().await;
    create_stores(app.new_channel().await, "idle", 300).await;
    // Some work to finish first: a sale, which analytics counts and the sweeps then leave alone.
    SalesServiceClient::new(app.new_channel().await)
        .checkout(checkout(&key(), "idle-7", "till-1", &[("SKU-0008", 1)], vec![cash(100_000)]))
        .await
        .expect("a sale");
    let pool = sqlx::PgPool::connect(&app.scratch().expect("a scratch database").app_url).await.expect("connect");
    // Quiet: past the slowest sweep's period twice, and the backends' statistics reported.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = transactions(&pool).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let spent = transactions(&pool).await - before;
    eprintln!("an idle chain of 300 stores: {spent} transactions in 10 s");
    // Analytics every 5 s (1), the healer every 5 s (2), this test's own reads, and slack for
    // statistics reported late and autovacuum on a busy machine (up to 57 seen): well under the
    // 600 and more that a sweep visiting every store costs here.
    assert!(spent <= 120, "an idle chain of 300 stores committed {spent} transactions in 10 s");
    pool.close().await;
    app.stop().await;
}

/// A TCP forwarder to `target` that can be cut (open connections closed, new ones refused) and
/// restored: an unreachable service, as a network fault makes it.
struct Cuttable {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped by every cut: each open connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let cuts = tokio::sync::watch::Sender::new(0);
        let (up2, cuts2) = (up.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::Acquire) {
                    continue;
                }
                let mut cut = cuts2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = cut.changed() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { addr, up, cuts, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

/// Among 200 stores, one quiet store's checkout of a cart is left pending (inventory unreachable
/// when it was sent) and that store sells nothing more: the sales process's healer, which looks
/// only at the stores the database names as having pending sales, completes it once inventory is
/// back, and the cart is sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_checkout_in_a_quiet_store_of_a_chain_is_healed() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let inventory = Process::start(&["serve", "inventory", "--demo", "--database-url", &url]);
    let link = Cuttable::start(inventory.addr).await;
    let sales = Process::start(&["serve", "sales", "--database-url", &url, "--inventory-url", &link.url()]);
    create_stores(inventory.channel().await, "quiet", 200).await;
    let store = "quiet-137";
    let mut client = SalesServiceClient::new(sales.channel().await);
    client
        .add_cart_item(AddCartItemRequest {
            idempotency_key: key(),
            store_id: store.into(),
            terminal_id: "till-1".into(),
            sku: "SKU-0008".into(),
            quantity: 2,
        })
        .await
        .expect("a cart line");

    // Sales prices from its copy of the catalog (products for 5 s): a sale of the same product in
    // another store has it there, so the checkout below is drafted and recorded pending before
    // inventory is asked, and only that fails.
    client
        .checkout(checkout(&key(), "quiet-1", "till-1", &[("SKU-0008", 1)], vec![cash(100_000)]))
        .await
        .expect("a sale in another store");
    link.cut();
    let failed = client.checkout(checkout(&key(), store, "till-1", &[], vec![cash(100_000)])).await;
    // How the cut surfaces depends on where the call was (refused, reset, cancelled): any failure
    // but a refusal, which would have released the checkout.
    let code = failed.expect_err("inventory is unreachable").code();
    assert!(
        !matches!(
            code,
            tonic::Code::FailedPrecondition
                | tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::AlreadyExists
        ),
        "a failure to reach inventory, not a refusal: {code:?}"
    );
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let mut tx = redstore_platform::pg::store_tx(&pool, store).await.expect("a store transaction");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM sales.sales WHERE status = 'pending'")
        .fetch_one(&mut *tx)
        .await
        .expect("pending sales");
    drop(tx);
    assert_eq!(pending, 1, "the checkout was left pending");
    link.restore();

    // The healer looks every 5 s at what has been pending for 5 s.
    let list = ListSalesRequest { store_id: store.into(), page: None, ..Default::default() };
    let mut sold = Vec::new();
    for _ in 0..120 {
        sold = client.list_sales(list.clone()).await.expect("list sales").into_inner().sales;
        if !sold.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sold.len(), 1, "the pending checkout of the quiet store was completed");
    assert_eq!(sold[0].status, SaleStatus::Completed as i32);
    let cart = client
        .get_cart(GetCartRequest { store_id: store.into(), terminal_id: "till-1".into() })
        .await
        .expect("cart")
        .into_inner()
        .cart
        .expect("a cart");
    assert!(cart.lines.is_empty(), "the sold cart is empty");

    pool.close().await;
    drop(sales);
    drop(link);
    drop(inventory);
    db.drop_db().await.expect("drop scratch database");
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (scripts/test.sh installs redis)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// At start the stock-cache projector checks every hash against the event log without a
/// transaction per store (the log heads in one statement, the hashes' versions in pipelines):
/// among 50 stores, the one hash ahead of its log (a database restored from an older backup) is
/// rebuilt from a snapshot, and the others are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_hash_ahead_of_the_log_is_rebuilt_at_start_among_many_stores() {
    use redstore_proto::inventory::{AdjustStockRequest, AdjustmentReason};
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let redis = RedisServer::start();
    let args = ["serve", "inventory", "--demo", "--database-url", url.as_str(), "--redis-url", &redis.url()];
    let mut inventory = Process::start(&args);
    create_stores(inventory.channel().await, "cache", 50).await;
    let mut client = InventoryServiceClient::new(inventory.channel().await);
    for store in ["cache-7", "cache-8"] {
        client
            .adjust_stock(AdjustStockRequest {
                idempotency_key: key(),
                store_id: store.into(),
                sku: "SKU-0008".into(),
                quantity_delta: 5,
                reason: AdjustmentReason::Received as i32,
                note: String::new(),
            })
            .await
            .expect("stock received");
    }
    let seq = |store: &str| redis_cli(&redis, &["HGET", &format!("rs:{{{store}}}:stock"), "_seq"]);
    for _ in 0..100 {
        if seq("cache-7") == "1" && seq("cache-8") == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((seq("cache-7"), seq("cache-8")), ("1".to_owned(), "1".to_owned()), "both projected");

    inventory.kill();
    // The hash of cache-7 reflects events the log does not have.
    redis_cli(&redis, &["HSET", "rs:{cache-7}:stock", "_seq", "99", "SKU-0008", "123"]);
    let inventory = Process::start(&args);
    for _ in 0..100 {
        if seq("cache-7") == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seq("cache-7"), "1", "the hash ahead of the log was rebuilt from a snapshot");
    assert_eq!(redis_cli(&redis, &["HGET", "rs:{cache-7}:stock", "SKU-0008"]), "5");
    assert_eq!(seq("cache-8"), "1");

    drop(inventory);
    db.drop_db().await.expect("drop scratch database");
}

/// `redstore bench chain`'s arguments as the command line gives them.
#[derive(clap::Parser)]
struct ChainCommand {
    #[command(flatten)]
    bench: redstore::bench::ChainBench,
}

/// `redstore bench chain` in tiny doses: its summary has a line for the anchor (here: no pgbench,
/// said so rather than failing), each spread, live updates and each size of the chain at rest
/// (counted on PostgreSQL only), and what it measured is the benchmarks' own figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_benchmark_summarises_every_phase_and_says_what_it_could_not_measure() {
    use clap::Parser as _;
    let app = TestApp::spawn_empty().await;
    let database_url = app.scratch().map(|s| s.app_url.clone());
    let pid = std::process::id().to_string();
    let key = test_key_file().to_str().expect("a UTF-8 path").to_owned();
    let mut args = vec!["chain", "--target", &app.url, "--pgbench", "redstore-no-such-pgbench"];
    args.extend(["--auth-signing-key-file", &key]);
    args.extend(["--duration", "300ms", "--warmup", "0s", "--spreads", "1x2,2x1"]);
    args.extend(["--live-clients", "4", "--live-stores", "2", "--live-sales", "4", "--live-rate", "50"]);
    args.extend(["--idle-stores", "3", "--idle-settle", "0s", "--idle-duration", "1s", "--server-pid", &pid]);
    if let Some(url) = &database_url {
        args.extend(["--database-url", url]);
    }
    let summary = redstore::bench::chain(ChainCommand::parse_from(args).bench).await.expect("the chain benchmark");
    let json = summary.to_json();
    let rows = json["rows"].as_array().expect("rows");
    let figures: Vec<&str> = rows.iter().map(|r| r["figure"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        figures[..4],
        [
            "anchor: `pgbench -b simple-update -c 32 -j 2 -T 1`",
            "checkout, 1 store × 2 terminals",
            "checkout, 2 stores × 1 terminal",
            "live updates, 4 SSE clients over 2 stores, 4 sales",
        ]
    );
    assert_eq!(
        rows[0]["result"],
        "not measured: redstore-no-such-pgbench is not installed (PostgreSQL's client programs have it)"
    );
    for spread in &rows[1..3] {
        assert_eq!(spread["verdict"], "not known: × anchor (no anchor)", "{spread}");
    }
    let live = &json["summary"]["live"]["measured"];
    assert_eq!(live["received"], live["expected"], "{live}");
    assert_eq!(live["misdelivered"], 0);
    let at_rest = &json["summary"]["idle"][0]["at_rest"];
    match database_url {
        Some(_) => {
            assert!(figures[4].starts_with("chain at rest, 3 stores ("), "{}", figures[4]);
            // Measured first: the 3 stores and the one that set up their products, no other yet.
            assert_eq!(at_rest["measured"]["stores_in_database"], 4);
            assert_eq!(at_rest["measured"]["processes"][0]["pid"], std::process::id());
        }
        None => assert_eq!(at_rest["not_measured"], "no --database-url to count its transactions"),
    }
    app.stop().await;
}
