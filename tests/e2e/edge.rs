//! The network edge, tried as a stranger on the shop's network would: a web page of another
//! origin, a web page whose name was pointed at the shop's server (DNS rebinding), a caller of the
//! internal RPCs without the service token, and an operator's typos in the edge's flags.

use redstore_proto::inventory::{
    AdjustStockRequest, AdjustmentReason, ApplyRefundRequest, GetStockRequest, ListAppliedCheckoutsRequest, SaleLine,
};
use tonic::Code;

use crate::helpers::*;
use crate::interop::{grpc_web_with, http1, preflight};

const EVIL: &str = "https://evil.example";
const ADJUST: &str = "redstore.inventory.v1.InventoryService/AdjustStock";

fn take_seven() -> AdjustStockRequest {
    AdjustStockRequest {
        idempotency_key: uuid::Uuid::now_v7().to_string(),
        store_id: "store-1".into(),
        sku: "SKU-0001".into(),
        quantity_delta: -7,
        reason: AdjustmentReason::Damaged as i32,
        note: String::new(),
    }
}

/// A grpc-message as sent (percent-encoded), readable.
fn percent_decoded(message: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = message.bytes();
    while let Some(b) = bytes.next() {
        let hex = |b: Option<u8>| (b? as char).to_digit(16);
        match b {
            b'%' => match (hex(bytes.next()), hex(bytes.next())) {
                (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                _ => out.push(b'?'),
            },
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An SSE request (a browser's `EventSource`) with the given extra headers: its HTTP status.
async fn sse_status(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::StatusCode {
    let mut call = http1().get(format!("{}/v1/stores/store-1/inventory/events", app.url));
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    call.send().await.expect("an answer").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_can_neither_preflight_nor_change_stock() {
    let app = TestApp::spawn().await;
    let preflight = preflight(&app, ADJUST, EVIL).await;
    assert_eq!(preflight.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{:?}", preflight.headers());

    // Sent anyway (a browser would not, after that preflight): refused before any handler runs.
    let reply = grpc_web_with(&app, ADJUST, &take_seven(), &[("origin", EVIL)]).await;
    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("7"), "PERMISSION_DENIED: {:?}", reply.headers);
    let message = reply.grpc("grpc-message").unwrap_or_default();
    assert!(message.contains("evil.example") && message.contains("--cors-origin"), "{message}");
    assert!(reply.headers.get("access-control-allow-origin").is_none());
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40, "stock untouched");

    // Its live stream too.
    assert_eq!(sse_status(&app, &[("origin", EVIL)]).await, reqwest::StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_origins_and_the_servers_own_pages_may_call() {
    let app = TestApp::spawn_configured(|cfg| cfg.edge.cors_origins = vec!["https://pos.example.com".into()]).await;
    let get = GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    let path = "redstore.inventory.v1.InventoryService/GetStock";

    let configured = grpc_web_with(&app, path, &get, &[("origin", "https://pos.example.com")]).await;
    assert_eq!(configured.grpc("grpc-status").as_deref(), Some("0"), "{:?}", configured.trailers);
    let allowed = configured.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(allowed.as_deref(), Some("https://pos.example.com"));

    // A look-alike is another origin.
    let lookalike = grpc_web_with(&app, path, &get, &[("origin", "https://pos.example.com.evil.example")]).await;
    assert_eq!(lookalike.grpc("grpc-status").as_deref(), Some("7"));

    // A page the server itself serves: its origin is the address the iPad opened.
    let own = format!("http://{}", app.addr);
    let same = grpc_web_with(&app, path, &get, &[("origin", &own)]).await;
    assert_eq!(same.grpc("grpc-status").as_deref(), Some("0"), "{:?}", same.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_name_was_pointed_at_the_server_reaches_nothing() {
    let app = TestApp::spawn_configured(|cfg| cfg.edge.allowed_hosts = vec!["pos.example.com".into()]).await;
    // DNS rebinding: evil.example now resolves to the shop's server, so to the browser the page and
    // the server are one origin, and no CORS rule applies. The Host header still says evil.example.
    let port = app.addr.port();
    let (host, origin) = (format!("evil.example:{port}"), format!("http://evil.example:{port}"));
    let reply = grpc_web_with(&app, ADJUST, &take_seven(), &[("host", &host), ("origin", &origin)]).await;
    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("7"), "PERMISSION_DENIED: {:?}", reply.headers);
    let message = reply.grpc("grpc-message").unwrap_or_default();
    assert!(message.contains("evil.example") && message.contains("--allowed-host"), "{message}");
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40, "stock untouched");
    // `EventSource` sends no Origin to its own origin: the Host alone refuses it.
    assert_eq!(sse_status(&app, &[("host", &host)]).await, reqwest::StatusCode::FORBIDDEN);

    // The names the server answers to: a configured one, an address, localhost.
    for host in [format!("POS.example.com:{port}"), app.addr.to_string(), format!("localhost:{port}")] {
        let reply = grpc_web_with(&app, ADJUST, &take_seven(), &[("host", &host)]).await;
        assert_eq!(reply.grpc("grpc-status").as_deref(), Some("0"), "via {host}: {:?}", reply.headers);
    }
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40 - 3 * 7);
}

fn refund_of(units: i64) -> ApplyRefundRequest {
    ApplyRefundRequest {
        refund_id: uuid::Uuid::now_v7().to_string(),
        store_id: "store-1".into(),
        terminal_id: "till-1".into(),
        lines: vec![SaleLine { sku: "SKU-0001".into(), quantity: units, unit_price: None, ..Default::default() }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_need_the_service_token_and_are_never_offered_to_browsers() {
    let app = TestApp::spawn_configured(|cfg| cfg.edge.cors_origins = vec!["http://ipad.local".into()]).await;

    // A stranger raising stock with a refund that never happened: refused, naming what is missing.
    let err = app.inventory().apply_refund(refund_of(1000)).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("ApplyRefund") && err.message().contains("service token"), "{}", err.message());
    // Someone else's token.
    let mut forged = tonic::Request::new(refund_of(1000));
    forged.metadata_mut().insert("authorization", "Bearer not-this-deployments-token-0123456789".parse().unwrap());
    let err = app.inventory().apply_refund(forged).await.expect_err("a wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("not this deployment's"), "{}", err.message());
    let err =
        app.inventory().list_applied_checkouts(ListAppliedCheckoutsRequest::default()).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40, "stock untouched");

    // From a browser, even an allowed origin holding the token: not offered.
    let bearer = format!("Bearer {SERVICE_TOKEN}");
    let path = "redstore.inventory.v1.InventoryService/ApplyRefund";
    let headers = [("origin", "http://ipad.local"), ("authorization", bearer.as_str())];
    let reply = grpc_web_with(&app, path, &refund_of(1000), &headers).await;
    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("7"), "PERMISSION_DENIED: {:?}", reply.headers);
    let message = percent_decoded(&reply.grpc("grpc-message").unwrap_or_default());
    assert!(message.contains("not offered to browsers"), "{message}");
    // The allowed origin can read why.
    assert!(reply.headers.get("access-control-allow-origin").is_some(), "{:?}", reply.headers);
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40, "stock untouched");

    // Another Red Store service, with the token: applied.
    let applied = app.internal().apply_refund(refund_of(2)).await.expect("a service applies a refund").into_inner();
    assert_eq!(applied.stock[0].quantity, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_service_token_no_caller_may_apply_sales() {
    let app = TestApp::spawn_configured(|cfg| cfg.edge.service_token = None).await;
    let err = app.internal().apply_refund(refund_of(5)).await.expect_err("the server holds no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("no --service-token"), "{}", err.message());
    // The server's own sales still reach its inventory in-process.
    let sale = checkout(&key(), "store-1", "till-2", &[("SKU-0001", 1)], vec![cash(500)]);
    app.sales().checkout(sale).await.expect("a checkout in one process needs no token");
    assert_eq!(app.stock("store-1", "SKU-0001").await, 39);
}

fn redstore() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"));
    command.env_remove("REDSTORE_SERVICE_TOKEN").env_remove("REDSTORE_SERVICE_TOKEN_FILE");
    command
}

#[test]
fn edge_typos_and_a_missing_token_stop_the_server_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let up = |extra: &[&str], env: &[(&str, &str)]| up_exits(dir.path(), extra, env);
    let (code, stderr) = up(&["--cors-origin", "pos.example.com"], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--cors-origin") && stderr.contains("scheme://host"), "{stderr}");
    let (code, stderr) = up(&["--allowed-host", "https://pos.example.com"], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--allowed-host"), "{stderr}");
    // A weak secret is refused without being repeated.
    let (code, stderr) = up(&[], &[("REDSTORE_SERVICE_TOKEN", "hunter2")]);
    assert_eq!(code, Some(64), "a configuration refused at start (EX_USAGE): {stderr}");
    assert!(stderr.contains("at least 32") && !stderr.contains("hunter2"), "{stderr}");

    // A separate sales process without the token cannot apply its sales: it says so and stops.
    let out = redstore()
        .args(["serve", "sales", "--listen", "127.0.0.1:0", "--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .args(["--inventory-url", "http://127.0.0.1:1"])
        .env("REDSTORE_AUTH_SIGNING_KEY_FILE", crate::helpers::test_key_file())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("service token") && stderr.contains("REDSTORE_SERVICE_TOKEN"), "{stderr}");
}

#[test]
fn serve_offers_no_flag_it_would_ignore_and_needs_the_deployments_signing_key() {
    let serve = |extra: &[&str], key: bool| {
        let mut command = redstore();
        command.args([
            "serve",
            "analytics",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ]);
        command.args(extra).env_remove("REDSTORE_AUTH_SIGNING_KEY_FILE");
        if key {
            command.env("REDSTORE_AUTH_SIGNING_KEY_FILE", crate::helpers::test_key_file());
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The embedded database's flags belong to `up`: serve refuses them as unknown.
    for flag in [&["--data-dir", "/tmp/x"][..], &["--no-demo"], &["--write-queue", "10"]] {
        let (code, stderr) = serve(flag, true);
        assert_eq!(code, Some(64), "{flag:?}: {stderr}");
        assert!(stderr.contains(flag[0]), "{stderr}");
    }
    // Each process making a key of its own would refuse every other process's tokens.
    let (code, stderr) = serve(&[], false);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--auth-signing-key-file"), "{stderr}");
    // With the key it goes on, to the database it cannot reach.
    let (code, stderr) = serve(&[], true);
    assert_eq!(code, Some(69), "{stderr}");
}
