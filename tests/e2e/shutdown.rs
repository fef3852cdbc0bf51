//! Operations: graceful shutdown, and the real binary's start-up checks and signals.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_health_watchers_and_ends_streams_with_unavailable_without_waiting_for_them() {
    // A grace period far longer than the test waits: open watches must not hold the server for it.
    let app = TestApp::spawn_configured(|cfg| cfg.grace_period = Duration::from_secs(60)).await;
    let mut health = HealthClient::new(app.new_channel().await)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let now = app.inventory_seq("store-1").await;
    let mut watch = watch_after(app.stream(), "store-1", now).await;
    let mut sse = SseClient::connect(&app, "store-1", "", Some(now)).await;

    let stopping = tokio::spawn(app.stop());
    let status = tokio::time::timeout(Duration::from_secs(5), health.next()).await.expect("health update");
    assert_eq!(status.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    let closed = tokio::time::timeout(Duration::from_secs(5), health.next()).await.expect("the health watch ends");
    assert_eq!(closed.expect("an end status").expect_err("ends with a status").code(), Code::Unavailable);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("gRPC stream ends");
    let end = end.expect("a last item").expect_err("the watch ends with a status, not OK");
    assert_eq!(end.code(), Code::Unavailable, "a terminal reconnects: {end:?}");
    assert!(end.message().contains("reconnect"), "{end:?}");
    assert_eq!(sse.next().await, None, "the SSE stream ends (EventSource reconnects by itself)");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops once nothing is in flight, not at the end of the grace period")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_health_answers_not_serving_until_the_port_closes() {
    let app = TestApp::spawn_configured(|cfg| cfg.drain_delay = Duration::from_secs(2)).await;
    let addr = app.addr;
    let channel = app.new_raw_channel().await;
    let check = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await
    };
    assert_eq!(check(channel.clone()).await.unwrap().into_inner().status, ServingStatus::Serving as i32);

    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let draining = check(channel.clone()).await.expect("health answers on an open connection during the drain");
    assert_eq!(draining.into_inner().status, ServingStatus::NotServing as i32);
    let fresh = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    let fresh = fresh.expect("the port is still open during the drain");
    assert_eq!(check(fresh).await.unwrap().into_inner().status, ServingStatus::NotServing as i32);

    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops after the drain").unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "the port is closed after the drain");
}

fn redstore() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
}

#[test]
fn a_bad_flag_exits_early_naming_it() {
    let out = redstore().args(["up", "--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "a usage error (EX_USAGE)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_is_an_answer_not_an_error() {
    let out = redstore().args(["up", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
}

#[test]
fn a_database_that_cannot_be_reached_exits_69_naming_it_and_a_bad_url_64() {
    // A supervisor retries EX_UNAVAILABLE (the database may be starting too); EX_USAGE needs a
    // person to fix the flags.
    let dir = tempfile::tempdir().unwrap();
    let unreachable = "postgres://postgres@127.0.0.1:1/nowhere";
    let (code, stderr) = up_exits(dir.path(), &["--database-url", unreachable], &[]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");
    let out = redstore().args(["migrate", "--database-url", unreachable]).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, stderr) = up_exits(dir.path(), &["--database-url", "mysql://somewhere/db"], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    // A URL that names no reachable place is a mistake in it, not a database that is down.
    let (code, stderr) = up_exits(dir.path(), &["--database-url", "postgres://postgres@127.0.0.1:port/db"], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("not a valid postgres:// URL"), "{stderr}");
}

#[test]
fn an_unusable_data_dir_exits_early_with_a_clear_message() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out =
        redstore().args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(file.path().join("sub")).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data directory"), "{stderr}");
}

#[test]
fn sigterm_stops_the_real_binary_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = redstore()
        .args(["--log-format", "json", "up", "--listen", "127.0.0.1:0", "--grace-period", "3s", "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the server logs where it listens");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if v["message"] == "red store is listening" {
            break v;
        }
    };
    assert!(listening["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the process exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = redstore().args(["migrate", "--data-dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(dir.path().join("redstore.db").exists());
}
