//! The embedded database as an operator's machine treats it: another program holding its lock (a
//! backup tool, a `sqlite3` shell), a second server started on the same data directory, and more
//! writes at once than the writer queues.

use std::time::Duration;

use redstore_proto::sales::ListSalesRequest;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

use crate::helpers::*;

const SALES: &str = "redstore.sales.v1.SalesService";
const STREAM: &str = "redstore.stream.v1.InventoryStreamService";

/// Another connection to the server's database file holding its write lock, as `sqlite3` does
/// after `BEGIN IMMEDIATE`, until dropped.
struct LockHolder(rusqlite::Connection);

impl LockHolder {
    fn take(app: &TestApp) -> Self {
        let conn = rusqlite::Connection::open(app.dir.path().join("redstore.db")).expect("open the database file");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the lock");
    }
}

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    let status = HealthClient::new(app.new_channel().await)
        .check(HealthCheckRequest { service: service.into() })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a serving status")
}

async fn wait_for_health(app: &TestApp, service: &str, want: ServingStatus) {
    for _ in 0..100 {
        if health(app, service).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health of {service:?} never became {want:?}");
}

async fn sales_of(app: &TestApp, store_id: &str) -> usize {
    app.sales()
        .list_sales(ListSalesRequest { store_id: store_id.into(), page: None, ..Default::default() })
        .await
        .expect("list sales")
        .into_inner()
        .sales
        .len()
}

/// The retry hint an UNAVAILABLE or RESOURCE_EXHAUSTED answer carries.
fn retry_after(status: &tonic::Status) -> Duration {
    let details = status.get_error_details();
    let info = details.retry_info().unwrap_or_else(|| panic!("a retry hint on {status:?}"));
    info.retry_delay.expect("a retry delay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_refuses_writes_until_it_is_released() {
    if on_postgres() {
        return; // the embedded database's own writer
    }
    let app = TestApp::spawn_configured(|cfg| cfg.db.busy_timeout = Duration::from_millis(300)).await;
    let before = app.stock("store-1", "SKU-0001").await;
    let sale = checkout("held-lock", "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(10_000)]);

    let holder = LockHolder::take(&app);
    let refused = app.sales().checkout(sale.clone()).await.expect_err("refused while the lock is held");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("locked by another program"), "{refused:?}");
    assert!(retry_after(&refused) > Duration::ZERO);
    // Once the database is known to be unwritable, a write hears at once (not after another busy
    // timeout), and still nothing half-done: the retry below finds nothing of the first attempt.
    let again = app.sales().checkout(sale.clone()).await.expect_err("still refused");
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    wait_for_health(&app, "", ServingStatus::NotServing).await;
    assert_eq!(health(&app, SALES).await, ServingStatus::NotServing);
    assert_eq!(health(&app, STREAM).await, ServingStatus::Serving, "reading needs no write lock");
    assert_eq!(app.stock("store-1", "SKU-0001").await, before, "reads go on");

    holder.release();
    wait_for_health(&app, "", ServingStatus::Serving).await;
    let sold = app.sales().checkout(sale.clone()).await.expect("the retry sells once the lock is gone").into_inner();
    let replay = app.sales().checkout(sale).await.expect("a second retry is answered").into_inner();
    assert_eq!(sold.sale.unwrap().sale_id, replay.sale.unwrap().sale_id);
    assert_eq!(app.stock("store-1", "SKU-0001").await, before - 2, "sold exactly once");
    assert_eq!(sales_of(&app, "store-1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_queue_bound_are_refused_at_once_and_nothing_is_written() {
    if on_postgres() {
        return;
    }
    let app = TestApp::spawn_configured(|cfg| {
        cfg.db.busy_timeout = Duration::from_secs(2);
        cfg.db.write_queue = 4;
    })
    .await;
    let before = app.stock("store-1", "SKU-0002").await;
    let holder = LockHolder::take(&app);
    let attempts = (0..24).map(|i| {
        let mut sales = app.sales();
        let sale = checkout(&format!("queued-{i}"), "store-1", "till-2", &[("SKU-0002", 1)], vec![cash(10_000)]);
        async move { sales.checkout(sale).await }
    });
    let answers = futures::future::join_all(attempts).await;
    holder.release();

    let mut exhausted = 0;
    for answer in &answers {
        let status = answer.as_ref().expect_err("nothing can be written while the lock is held");
        match status.code() {
            Code::ResourceExhausted => {
                exhausted += 1;
                assert!(status.message().contains("writes are waiting"), "{status:?}");
                assert!(retry_after(status) > Duration::ZERO);
            }
            Code::Unavailable => assert!(retry_after(status) > Duration::ZERO),
            _ => panic!("only UNAVAILABLE or RESOURCE_EXHAUSTED: {status:?}"),
        }
    }
    assert!(exhausted >= 24 - 1 - 2 * 4, "a queue of 4 holds at most 4 (and the writer a group): {exhausted}");
    wait_for_health(&app, "", ServingStatus::Serving).await;
    assert_eq!(app.stock("store-1", "SKU-0002").await, before, "nothing was written");
    assert_eq!(sales_of(&app, "store-1").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_exits_at_once_naming_the_first() {
    if on_postgres() {
        return;
    }
    let app = TestApp::spawn_configured(|_| {}).await;
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(app.dir.path())
        .output()
        .expect("run redstore");
    assert_eq!(out.status.code(), Some(64), "a configuration error");
    assert!(started.elapsed() < Duration::from_secs(10), "it exits at once, not after a timeout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use by another Red Store process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", std::process::id())), "names the holder: {stderr}");
    assert!(stderr.contains(&format!("serving on {}", app.addr)), "says where the holder serves: {stderr}");

    // The first server was not disturbed.
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0003", 1)], vec![cash(10_000)]);
    app.sales().checkout(sale).await.expect("the first server sells on");
}

#[test]
fn logs_written_to_a_file_or_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead as _;
    if on_postgres() {
        return; // the same binary and logs on either backend
    }
    // An operator's `redstore up 2> redstore.log`, or systemd's journal: no escape codes.
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .args(["up", "--listen", "127.0.0.1:0", "--no-demo", "--data-dir"])
        .arg(dir.path())
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run redstore up");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines.by_ref().map_while(Result::ok).find(|line| line.contains("red store is listening"));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = listening.expect("the server says it listens");
    assert!(!line.contains('\u{1b}'), "no colour codes in piped logs: {line:?}");
    assert!(line.contains("INFO"), "still a human log line: {line}");
}
