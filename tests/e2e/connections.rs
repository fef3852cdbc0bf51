//! Connections: clients that send too little are closed, idle connections are closed but idle
//! streams are not, and the caps on connections and live streams refuse precisely and admit again.

use std::io::ErrorKind;
use std::time::Duration;

use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use redstore_proto::stream::watch_inventory_response::Item;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::*;

/// Reads until the server closes the connection; what it sent, or None if it was still open
/// after `wait`.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_by_the_server() {
    let app = TestApp::spawn_configured(|cfg| cfg.connections.header_read_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let sent = closed_within(&mut silent, Duration::from_secs(10)).await.expect("a silent client is closed");
    assert!(sent.is_empty(), "nothing is answered to a client that asked nothing: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_by_the_server() {
    let app = TestApp::spawn_configured(|cfg| cfg.connections.header_read_timeout = Duration::from_millis(300)).await;
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    // The headers never end: no blank line.
    half.write_all(b"GET /v1/stores/store-1/inventory/events HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let sent = closed_within(&mut half, Duration::from_secs(10)).await.expect("a half-sent request is closed");
    assert!(sent.is_empty(), "the request never began, so nothing is answered: {sent:?}");

    // A keep-alive connection waiting for its next request is held to the same timeout.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(&unknown_store_stream("")).await.unwrap();
    let sent =
        closed_within(&mut kept, Duration::from_secs(10)).await.expect("an idle keep-alive connection is closed");
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 404"), "the complete request was answered first: {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_but_idle_live_streams_stay_open() {
    let idle = Duration::from_millis(300);
    let app = TestApp::spawn_configured(|cfg| {
        cfg.connections.idle_timeout = idle;
        cfg.connections.header_read_timeout = idle;
        cfg.connections.http2_keep_alive_timeout = idle;
    })
    .await;
    let now = app.inventory_seq("store-1").await;
    let mut watch = watch_after(InventoryStreamServiceClient::new(app.new_channel().await), "store-1", now).await;
    let mut sse = SseClient::connect(&app, "store-1", "", Some(now)).await;

    // An HTTP/2 connection that never sends a request: GOAWAY, then closed.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (_requests, connection) = hyper::client::conn::http2::handshake::<_, _, axum::body::Body>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an HTTP/2 handshake");
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .expect("closed cleanly, with a GOAWAY");

    // Both streams sat idle past every timeout, and still deliver.
    tokio::time::sleep(idle * 4).await;
    let mut sales = redstore_proto::sales::sales_service_client::SalesServiceClient::new(app.new_channel().await);
    sales.checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0006", 1)], vec![cash(1000)])).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("an event").unwrap();
    assert!(matches!(event.and_then(|m| m.item), Some(Item::Event(e)) if e.store_seq == now + 1));
    assert_eq!(sse.next_change().await.seq(), now + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_cap_is_closed_at_once_and_one_is_admitted_once_another_closes() {
    // The test's own gRPC connection is the first of three.
    let app = TestApp::spawn_configured(|cfg| {
        cfg.connections.max_connections = 3;
        cfg.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    app.inventory_seq("store-1").await;
    let second = TcpStream::connect(app.addr).await.unwrap();
    let _third = TcpStream::connect(app.addr).await.unwrap();

    let mut fourth = TcpStream::connect(app.addr).await.unwrap();
    let sent =
        closed_within(&mut fourth, Duration::from_secs(10)).await.expect("the connection past the cap is closed");
    assert!(sent.is_empty(), "{sent:?}");

    drop(second);
    let admitted = async {
        loop {
            let mut tcp = TcpStream::connect(app.addr).await.unwrap();
            tcp.write_all(&unknown_store_stream("Connection: close\r\n")).await.unwrap();
            let sent = closed_within(&mut tcp, Duration::from_secs(10)).await.expect("an answer, then close");
            if !sent.is_empty() {
                return String::from_utf8_lossy(&sent).into_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), admitted).await.expect("served again below the cap");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

/// A complete HTTP/1.1 request for the live stream of a store that does not exist (answered 404),
/// signed in as an admin, with `extra` headers.
fn unknown_store_stream(extra: &str) -> Vec<u8> {
    let token = crate::helpers::admin_token();
    format!(
        "GET /v1/stores/nowhere/inventory/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Opens an SSE request and returns its status and Retry-After, without reading the stream.
async fn sse_status(app: &TestApp) -> (reqwest::StatusCode, Option<String>, reqwest::Response) {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let response = client
        .get(format!("{}/v1/stores/store-1/inventory/events", app.url))
        .header("authorization", format!("Bearer {}", crate::helpers::admin_token()))
        .send()
        .await
        .unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry_after, response)
}

async fn watch(
    app: &TestApp,
) -> Result<tonic::Streaming<redstore_proto::stream::WatchInventoryResponse>, tonic::Status> {
    InventoryStreamServiceClient::new(app.new_channel().await)
        .watch_inventory(WatchInventoryRequest {
            store_id: "store-1".into(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_cap_refuses_the_next_stream_and_admits_again_once_one_closes() {
    let app = TestApp::spawn_configured(|cfg| cfg.connections.max_live_streams = 2).await;
    let sse = SseClient::connect(&app, "store-1", "", None).await;
    let grpc = watch(&app).await.expect("the second stream is admitted");

    let (status, retry_after, _) = sse_status(&app).await;
    assert_eq!(status, 503, "an SSE stream past the cap");
    assert_eq!(retry_after.as_deref(), Some("5"), "with a hint of when to retry");
    let refused = watch(&app).await.expect_err("a WatchInventory past the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let hint = refused.get_error_details().retry_info().and_then(|info| info.retry_delay);
    assert_eq!(hint, Some(Duration::from_secs(5)), "with a retry hint: {refused:?}");

    // A stream that closes gives its place back (once the server sees its client leave).
    drop(sse);
    let sse_again = async {
        loop {
            let (status, _, response) = sse_status(&app).await;
            if status == 200 {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let sse_again = tokio::time::timeout(Duration::from_secs(10), sse_again).await.expect("SSE admitted again");
    assert_eq!(watch(&app).await.expect_err("full again").code(), Code::ResourceExhausted);

    drop(grpc);
    let grpc_again = async {
        loop {
            match watch(&app).await {
                Ok(stream) => return stream,
                Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut grpc_again = tokio::time::timeout(Duration::from_secs(10), grpc_again).await.expect("gRPC admitted again");
    let first = grpc_again.message().await.unwrap().and_then(|m| m.item);
    assert!(matches!(first, Some(Item::Snapshot(_))), "{first:?}");
    drop(sse_again);
}

/// Open files of this process that are the database file itself (not its journal or lock).
fn open_database_files(db: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| fds.filter_map(Result::ok).filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == db)).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_opening_at_once_take_no_more_database_connections_or_threads() {
    if on_postgres() {
        return; // PostgreSQL connections come from sqlx's pool, bounded by --db-pool-size
    }
    let app = TestApp::spawn().await;
    let db = app.dir.path().join("redstore.db").canonicalize().unwrap();
    let at_rest = open_database_files(&db);
    assert!(at_rest > 0, "the database is open");
    let threads_at_rest = threads();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (stop, db) = (stop.clone(), db.clone());
        move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_database_files(&db));
            }
            most
        }
    });
    // Each stream reads the store, its stock and its log as it opens.
    let streams = futures::future::join_all((0..200).map(|_| async {
        let mut sse = SseClient::connect(&app, "store-1", "?snapshot=true", None).await;
        sse.next().await.expect("a snapshot")
    }))
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert!(streams.iter().all(|e| e.event.as_deref() == Some("snapshot")));
    assert!(most <= at_rest, "{most} database connections while streams opened, {at_rest} at rest");
    // Reads wait for the reader threads rather than each taking one of its own (the test's
    // sampler thread has ended).
    let threads_after = threads();
    assert!(
        threads_after <= threads_at_rest,
        "{threads_after} threads after streams opened, {threads_at_rest} at rest"
    );
}

/// Threads of this process: the test's runtime and the server's.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(0)
}
