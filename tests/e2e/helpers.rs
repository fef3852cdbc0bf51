//! `TestApp`: boots the whole server on port 0 in a fresh data directory and hands out typed
//! clients, plus small builders for requests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use redstore::{Running, ServerConfig};
use redstore_auth::CodeSender;
use redstore_auth::domain::StaffRecord;
use redstore_platform::access_token::{Bearer, SigningKey, TokenKeys};
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::service_token::{ServiceToken, WithServiceToken};
use redstore_proto::analytics::analytics_service_client::AnalyticsServiceClient;
use redstore_proto::analytics::{GetSalesReportRequest, GetSalesReportResponse, Granularity};
use redstore_proto::auth::auth_service_client::AuthServiceClient;
use redstore_proto::auth::{IssueDeviceCredentialRequest, RequestCodeRequest, Session, VerifyCodeRequest};
use redstore_proto::common::Money;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{
    AdjustStockRequest, AdjustmentReason, CreateProductRequest, CreateStoreRequest, GetStockRequest, OversellPolicy,
    RegisterTerminalRequest,
};
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::sales::{CheckoutLine, CheckoutRequest, Tender, TenderType};
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use tempfile::TempDir;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct TestApp {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub dir: TempDir,
    running: Option<Running>,
    /// A connection whose calls carry an admin's access token.
    channel: Ch,
    /// The same connection, carrying nothing.
    raw: Channel,
    /// The PostgreSQL database of this test, when the suite runs on the distributed backend.
    scratch: Option<ScratchDb>,
    /// The one-time codes the server sent.
    pub inbox: Arc<Inbox>,
    /// Device credentials issued to terminals, by (store, terminal).
    devices: parking_lot::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// Where a test server's one-time codes go: kept for the test to read, as a staff member reads
/// their messages.
#[derive(Default)]
pub struct Inbox {
    sent: parking_lot::Mutex<Vec<(String, String)>>,
}

impl Inbox {
    /// The codes sent to `staff_id`, oldest first.
    pub fn codes(&self, staff_id: &str) -> Vec<String> {
        let sent = self.sent.lock();
        sent.iter().filter(|(to, _)| to == staff_id).map(|(_, code)| code.clone()).collect()
    }

    /// The latest code sent to `staff_id`.
    pub fn last(&self, staff_id: &str) -> String {
        self.codes(staff_id).pop().unwrap_or_else(|| panic!("no code was sent to {staff_id}"))
    }
}

#[tonic::async_trait]
impl CodeSender for Inbox {
    async fn send(&self, staff: &StaffRecord, code: &str, _expires_at: std::time::SystemTime) -> anyhow::Result<()> {
        self.sent.lock().push((staff.staff_id.clone(), code.to_owned()));
        Ok(())
    }
}

/// Which backend the contract suite runs on: `REDSTORE_TEST_BACKEND=postgres` runs every test
/// body against PostgreSQL; anything else (the default) against the embedded database.
pub fn on_postgres() -> bool {
    std::env::var("REDSTORE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A connection whose calls carry an access token.
pub type Ch = InterceptedService<Channel, Bearer>;

/// The signing key of every server and process of this test (a file, as operators give it).
pub fn test_key_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        TokenKeys::in_dir(&dir, []).expect("a signing key");
        dir.join(redstore_platform::access_token::KEY_FILE)
    })
}

/// The keys of [`test_key_file`].
pub fn test_keys() -> &'static TokenKeys {
    static KEYS: std::sync::OnceLock<TokenKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let pem = std::fs::read_to_string(test_key_file()).expect("the test key");
        TokenKeys::new(SigningKey::from_pem(&pem).expect("a signing key"), [])
    })
}

/// The store of a demo staff member; store-1 for others.
pub fn store_of(staff_id: &str) -> &'static str {
    redstore_auth::seed::DEMO_STAFF
        .iter()
        .find(|(id, ..)| *id == staff_id)
        .and_then(|(_, _, _, store)| *store)
        .unwrap_or("store-1")
}

/// A VerifyCode of `code` for `challenge_id`, with a fresh idempotency key.
pub fn verify_code(challenge_id: &str, code: &str) -> VerifyCodeRequest {
    VerifyCodeRequest { idempotency_key: key(), challenge_id: challenge_id.into(), code: code.into() }
}

/// An admin's access token (an operator's, acting in every store).
pub fn admin_token() -> String {
    test_keys().admin_token("e2e-admin", Duration::from_secs(3600))
}

/// An HTTP/1.1 client (as a browser's page) whose requests carry an admin's token.
pub fn admin_http1() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {}", admin_token()).parse().expect("a header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().http1_only().default_headers(headers).build().expect("http client")
}

/// `channel` with `token` on every call.
pub fn with_token(channel: Channel, token: &str) -> Ch {
    InterceptedService::new(channel, Bearer::new(token).expect("a token"))
}

/// `channel` with an admin's token on every call.
pub fn as_admin(channel: Channel) -> Ch {
    with_token(channel, &admin_token())
}

/// The service token of the tests' servers and processes.
pub const SERVICE_TOKEN: &str = "e2e-service-token-0123456789abcdef0123456789";

pub fn service_token() -> ServiceToken {
    ServiceToken::parse(SERVICE_TOKEN).expect("the tests' service token")
}

/// Runs `redstore up` on `data_dir` with `extra` flags and `env`, as an operator starting it with a
/// mistake would (without the tests' service token): its exit code and what it printed.
pub fn up_exits(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .env_remove("REDSTORE_SERVICE_TOKEN")
        .env_remove("REDSTORE_SERVICE_TOKEN_FILE")
        .args(["up", "--listen", "127.0.0.1:0", "--no-demo", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("run redstore up");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An inventory client that calls as another Red Store service: internal RPCs accept it.
pub fn internal_client(channel: Channel) -> InventoryServiceClient<InterceptedService<Channel, WithServiceToken>> {
    InventoryServiceClient::with_interceptor(channel, service_token().interceptor())
}

pub fn config(dir: &TempDir, demo: bool, scratch: Option<&ScratchDb>) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
    cfg.demo = demo;
    cfg.grace_period = Duration::from_secs(5);
    cfg.sse_keep_alive = Duration::from_millis(300);
    cfg.database_url = scratch.map(|s| s.app_url.clone());
    cfg.db_pool_size = 8;
    cfg.edge.service_token = Some(redstore::edge::Secret(SERVICE_TOKEN.to_owned()));
    cfg.auth.auth_signing_key_file = Some(test_key_file().to_owned());
    cfg
}

impl TestApp {
    /// A server with the demo chain seeded.
    pub async fn spawn() -> Self {
        Self::spawn_with(true).await
    }

    /// A server with an empty database.
    pub async fn spawn_empty() -> Self {
        Self::spawn_with(false).await
    }

    async fn spawn_with(demo: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let scratch = if on_postgres() {
            Some(ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch PostgreSQL database"))
        } else {
            None
        };
        Self::start(dir, scratch, demo).await
    }

    /// A server with the demo chain seeded, configured by `configure`.
    pub async fn spawn_configured(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let scratch = if on_postgres() {
            Some(ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch PostgreSQL database"))
        } else {
            None
        };
        let mut cfg = config(&dir, true, scratch.as_ref());
        configure(&mut cfg);
        Self::start_with(dir, scratch, cfg).await
    }

    async fn start(dir: TempDir, scratch: Option<ScratchDb>, demo: bool) -> Self {
        let cfg = config(&dir, demo, scratch.as_ref());
        Self::start_with(dir, scratch, cfg).await
    }

    async fn start_with(dir: TempDir, scratch: Option<ScratchDb>, mut cfg: ServerConfig) -> Self {
        let inbox = Arc::new(Inbox::default());
        cfg.code_sender = redstore::auth::Sender(inbox.clone());
        let running = redstore::start(cfg).await.expect("server starts");
        let addr = running.addr;
        let url = format!("http://{addr}");
        let raw = Channel::from_shared(url.clone()).expect("url").connect().await.expect("connect");
        let devices = Default::default();
        Self { url, addr, dir, running: Some(running), channel: as_admin(raw.clone()), raw, scratch, inbox, devices }
    }

    /// Stops the server gracefully and starts it again on the same data.
    pub async fn restart(mut self) -> Self {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let scratch = self.scratch.take();
        Self::start(dir, scratch, true).await
    }

    /// A fresh HTTP/2 connection, as another client would have, signed in as an admin.
    pub async fn new_channel(&self) -> Ch {
        as_admin(self.new_raw_channel().await)
    }

    /// A fresh HTTP/2 connection whose calls carry nothing.
    pub async fn new_raw_channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).expect("url").connect().await.expect("connect")
    }

    /// The app's connection, carrying nothing.
    pub fn raw_channel(&self) -> Channel {
        self.raw.clone()
    }

    /// The app's connection with `token` on every call.
    pub fn channel_with(&self, token: &str) -> Ch {
        with_token(self.raw.clone(), token)
    }

    pub fn inventory(&self) -> InventoryServiceClient<Ch> {
        InventoryServiceClient::new(self.channel.clone())
    }

    /// Inventory as a sales process calls it, with the service token: for its internal RPCs.
    pub fn internal(&self) -> InventoryServiceClient<InterceptedService<Channel, WithServiceToken>> {
        internal_client(self.raw.clone())
    }

    pub fn sales(&self) -> SalesServiceClient<Ch> {
        SalesServiceClient::new(self.channel.clone())
    }

    pub fn analytics(&self) -> AnalyticsServiceClient<Ch> {
        AnalyticsServiceClient::new(self.channel.clone())
    }

    pub fn stream(&self) -> InventoryStreamServiceClient<Ch> {
        InventoryStreamServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Ch> {
        AuthServiceClient::new(self.channel.clone())
    }

    /// The device credential of a terminal, issued (as an admin) the first time it is asked for;
    /// empty when it cannot be (a terminal that is not registered).
    pub async fn device_credential(&self, store_id: &str, terminal_id: &str) -> String {
        let terminal = (store_id.to_owned(), terminal_id.to_owned());
        if let Some(credential) = self.devices.lock().get(&terminal) {
            return credential.clone();
        }
        let request = IssueDeviceCredentialRequest {
            idempotency_key: key(),
            store_id: store_id.into(),
            terminal_id: terminal_id.into(),
        };
        let Ok(issued) = self.auth().issue_device_credential(request).await else { return String::new() };
        let credential = issued.into_inner().device_credential;
        self.devices.lock().insert(terminal, credential.clone());
        credential
    }

    /// Asks for a code for `staff_id` (on `terminal_id`, with its device credential, or none when
    /// empty): the challenge.
    pub async fn request_code(&self, staff_id: &str, terminal_id: &str) -> String {
        let device_credential = match terminal_id {
            "" => String::new(),
            terminal => self.device_credential(store_of(staff_id), terminal).await,
        };
        let request = RequestCodeRequest {
            idempotency_key: key(),
            staff_id: staff_id.into(),
            terminal_id: terminal_id.into(),
            device_credential,
        };
        self.auth().request_code(request).await.expect("request a code").into_inner().challenge_id
    }

    /// Signs `staff_id` in on `terminal_id` (none when empty) with the code the server sent.
    pub async fn sign_in(&self, staff_id: &str, terminal_id: &str) -> Session {
        let challenge_id = self.request_code(staff_id, terminal_id).await;
        let request = verify_code(&challenge_id, &self.inbox.last(staff_id));
        let answer = self.auth().verify_code(request).await.expect("verify the code");
        answer.into_inner().session.expect("a session")
    }

    /// The keys this server signs tokens with.
    pub fn token_keys(&self) -> &'static TokenKeys {
        test_keys()
    }

    /// The test's PostgreSQL database, when the suite runs on PostgreSQL.
    pub fn scratch(&self) -> Option<&ScratchDb> {
        self.scratch.as_ref()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Shuts the server down gracefully.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn create_store(&self, store_id: &str, policy: OversellPolicy, terminals: &[&str]) {
        self.inventory()
            .create_store(CreateStoreRequest {
                idempotency_key: String::new(),
                store_id: store_id.into(),
                name: format!("Store {store_id}"),
                oversell_policy: policy as i32,
            })
            .await
            .expect("create store");
        for t in terminals {
            self.inventory()
                .register_terminal(RegisterTerminalRequest {
                    idempotency_key: String::new(),
                    store_id: store_id.into(),
                    terminal_id: (*t).into(),
                    name: String::new(),
                })
                .await
                .expect("register terminal");
        }
    }

    pub async fn create_product(&self, sku: &str, price_minor: i64, barcodes: &[&str]) {
        self.inventory()
            .create_product(CreateProductRequest {
                idempotency_key: String::new(),
                sku: sku.into(),
                name: format!("Product {sku}"),
                price: Some(eur(price_minor)),
                barcodes: barcodes.iter().map(|b| (*b).to_owned()).collect(),
            })
            .await
            .expect("create product");
    }

    pub async fn receive(&self, store_id: &str, sku: &str, quantity: i64) {
        self.inventory()
            .adjust_stock(AdjustStockRequest {
                idempotency_key: uuid::Uuid::now_v7().to_string(),
                store_id: store_id.into(),
                sku: sku.into(),
                quantity_delta: quantity,
                reason: AdjustmentReason::Received as i32,
                note: String::new(),
            })
            .await
            .expect("receive stock");
    }

    pub async fn stock(&self, store_id: &str, sku: &str) -> i64 {
        self.inventory()
            .get_stock(GetStockRequest { store_id: store_id.into(), sku: sku.into() })
            .await
            .expect("get stock")
            .into_inner()
            .stock
            .expect("stock")
            .quantity
    }

    pub async fn report(&self, store_id: &str) -> GetSalesReportResponse {
        self.analytics()
            .get_sales_report(GetSalesReportRequest {
                store_id: store_id.into(),
                from: None,
                to: Some(prost_types_now_plus_minute()),
                granularity: Granularity::Day as i32,
                top_products_limit: 10,
            })
            .await
            .expect("report")
            .into_inner()
    }

    /// Waits (bounded) until analytics has counted `sales` sales in the store, and returns the
    /// report. Analytics is eventually consistent: it consumes the event log.
    pub async fn report_with_sales(&self, store_id: &str, sales: i64) -> GetSalesReportResponse {
        let mut last = None;
        for _ in 0..200 {
            let report = self.report(store_id).await;
            let count = report.totals.iter().map(|t| t.sales_count).sum::<i64>();
            if count >= sales {
                return report;
            }
            last = Some(report);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("analytics never reached {sales} sales; last report: {last:?}");
    }
}

fn prost_types_now_plus_minute() -> prost_types::Timestamp {
    let now = std::time::SystemTime::now() + Duration::from_secs(60);
    let d = now.duration_since(std::time::UNIX_EPOCH).expect("clock");
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: 0 }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Drop the test's PostgreSQL database, even when the test failed. Async work cannot run
        // in `drop`, so a short-lived runtime on its own thread does it.
        if let Some(scratch) = self.scratch.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                if let Err(e) = rt.block_on(scratch.drop_db()) {
                    eprintln!("could not drop a test database: {e:#}");
                }
            })
            .join();
        }
    }
}

pub fn eur(minor: i64) -> Money {
    Money { currency_code: "EUR".into(), units_minor: minor }
}

pub fn cash(minor: i64) -> Tender {
    Tender { r#type: TenderType::Cash as i32, amount: Some(eur(minor)) }
}

pub fn card(minor: i64) -> Tender {
    Tender { r#type: TenderType::Card as i32, amount: Some(eur(minor)) }
}

pub fn checkout(
    key: &str,
    store: &str,
    terminal: &str,
    lines: &[(&str, i64)],
    tenders: Vec<Tender>,
) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: key.into(),
        store_id: store.into(),
        terminal_id: terminal.into(),
        lines: lines
            .iter()
            .map(|(sku, q)| CheckoutLine { sku: (*sku).into(), quantity: *q, ..Default::default() })
            .collect(),
        tenders,
    }
}

pub fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The demo chain's barcode for product n (1-based), as the seed made it.
pub fn demo_barcode(n: usize) -> String {
    redstore_inventory::seed::demo_barcode(n)
}

/// One Server-Sent Event as a browser's EventSource would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }

    pub fn seq(&self) -> u64 {
        self.id.as_deref().expect("event id").parse().expect("numeric id")
    }
}

/// A minimal SSE client over HTTP/1.1 that also records keep-alive comments.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    pub comments: usize,
}

impl SseClient {
    /// Connects to a store's event stream; `last_event_id` resumes after that sequence.
    pub async fn connect(app: &TestApp, store_id: &str, query: &str, last_event_id: Option<u64>) -> Self {
        let client = reqwest::Client::builder().http1_only().build().expect("client");
        let mut req = client
            .get(format!("{}/v1/stores/{store_id}/inventory/events{query}", app.url))
            .header("accept", "text/event-stream")
            .header("authorization", format!("Bearer {}", admin_token()));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = req.send().await.expect("sse connect");
        assert_eq!(response.status(), 200, "SSE status");
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Self { response, buffer: String::new(), comments: 0 }
    }

    /// The next event, or None if the stream ended. Panics if nothing arrives for 10 s.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut ev = SseEvent { id: None, event: None, data: String::new() };
                let mut is_event = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                        is_event = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = Some(v.trim().to_owned());
                        is_event = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        is_event = true;
                    }
                }
                if is_event {
                    return Some(ev);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an SSE event within 10 s")
                .expect("SSE read");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next event that is not a snapshot.
    pub async fn next_change(&mut self) -> SseEvent {
        loop {
            let ev = self.next().await.expect("stream open");
            if ev.event.as_deref() != Some("snapshot") {
                return ev;
            }
        }
    }
}

impl TestApp {
    /// The store sequence of the last change to a sku's stock.
    pub async fn stock_level_seq(&self, store_id: &str, sku: &str) -> u64 {
        self.inventory()
            .get_stock(GetStockRequest { store_id: store_id.into(), sku: sku.into() })
            .await
            .expect("get stock")
            .into_inner()
            .stock
            .expect("stock")
            .last_seq
    }
}

impl TestApp {
    /// The store's newest inventory sequence, from the snapshot that opens a watch.
    pub async fn inventory_seq(&self, store_id: &str) -> u64 {
        use redstore_proto::stream::WatchInventoryRequest;
        use redstore_proto::stream::watch_inventory_response::Item;
        let mut watch = self
            .stream()
            .watch_inventory(WatchInventoryRequest {
                store_id: store_id.into(),
                resume_after: 0,
                include_snapshot: true,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        match watch.message().await.expect("stream").expect("snapshot").item {
            Some(Item::Snapshot(s)) => s.as_of_seq,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
}

/// A terminal's live watch of a store through `stream`, resuming after sequence `after` (no
/// snapshot).
pub async fn watch_after(
    mut stream: InventoryStreamServiceClient<Ch>,
    store_id: &str,
    after: u64,
) -> tonic::Streaming<redstore_proto::stream::WatchInventoryResponse> {
    let request = redstore_proto::stream::WatchInventoryRequest {
        store_id: store_id.into(),
        resume_after: after,
        include_snapshot: false,
        ..Default::default()
    };
    stream.watch_inventory(request).await.expect("watch inventory").into_inner()
}

/// A free TCP port on the loopback interface, for a server of the test's own.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port()
}

/// A server process of the test's own, killed when dropped (or when killed, as an outage would).
#[derive(Default)]
struct OwnServer(Option<std::process::Child>);

impl OwnServer {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redstore` process of the real binary, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// Its JSON log lines after the one saying where it listens.
    logs: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// Starts `redstore <args> --listen 127.0.0.1:0` and waits until it logs where it listens.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Process::start`] with these environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
            .env("REDSTORE_AUTH_SIGNING_KEY_FILE", test_key_file())
            .envs(env.iter().copied())
            .arg("--log-format")
            .arg("json")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--grace-period", "2s", "--db-pool-size", "6"])
            .env("REDSTORE_SERVICE_TOKEN", SERVICE_TOKEN)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn redstore");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Drained to the end so the child never blocks on a pipe, and echoed for the test's
            // output.
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line =
                rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("redstore {args:?} did not start"));
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["message"] == "red store is listening" {
                break v["addr"].as_str().expect("addr").parse().expect("socket address");
            }
            if v["level"] == "ERROR" {
                panic!("redstore {args:?} failed: {line}");
            }
        };
        Self { child, addr, logs: rx }
    }

    /// The log lines written since the last call.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.try_iter().filter_map(|line| serde_json::from_str(&line).ok()).collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The one-time code the development code sender logged last (waiting for it a while).
    pub async fn logged_code(&self) -> String {
        for _ in 0..100 {
            let code = self.logs().iter().rev().find_map(|line| {
                let message = line["message"].as_str()?;
                Some(message.strip_prefix("sign-in code ")?.get(..6)?.to_owned())
            });
            if let Some(code) = code {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no sign-in code was logged")
    }

    /// A connection signed in as an admin.
    pub async fn channel(&self) -> Ch {
        as_admin(self.raw_channel().await)
    }

    /// A connection whose calls carry nothing.
    pub async fn raw_channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("url").connect().await.expect("connect")
    }

    /// Kills the process at once (no graceful shutdown), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` of the test's own on a free port (never the machine's), killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: OwnServer,
    /// The certificate and key it serves TLS with, on `port` (and nothing in plain text).
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self { port: free_port(), child: OwnServer::default(), tls: None };
        server.restart();
        server
    }

    /// A server that speaks only TLS, with this PEM certificate and key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let tls = Some((cert.to_owned(), key.to_owned()));
        let mut server = Self { port: free_port(), child: OwnServer::default(), tls };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let mut command = std::process::Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child =
            command.stdout(std::process::Stdio::null()).spawn().expect("redis-server (scripts/test.sh installs it)");
        self.child = OwnServer(Some(child));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server at once, as an outage would.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// A tansu broker of the test's own on a free port, storing in memory: killed and started again,
/// it comes back empty (no topics, no consumer groups), as a cluster whose topics were deleted and
/// created again. Never the machine's shared broker. Killed when dropped.
pub struct KafkaBroker {
    pub port: u16,
    child: OwnServer,
}

impl KafkaBroker {
    pub fn start() -> Self {
        let mut broker = Self { port: free_port(), child: OwnServer::default() };
        broker.restart();
        broker
    }

    /// `host:port`, as `--kafka-brokers` takes it.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let program = std::env::var("REDSTORE_TEST_TANSU").unwrap_or_else(|_| "tansu".to_owned());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let mut child = std::process::Command::new(&program)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("tansu (scripts/test.sh installs it)");
            // The old broker's connections may still hold the port for a moment: tansu then exits
            // at once, and is started again.
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = OwnServer(Some(child));
                    return;
                }
                if child.try_wait().expect("tansu status").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tansu did not start on port {}", self.port);
    }

    /// Kills the broker at once; in memory, everything it held is gone.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}
