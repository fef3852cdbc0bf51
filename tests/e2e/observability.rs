//! What an operator's monitoring sees: Prometheus text on `/metrics`, and one trace per sale
//! across the distributed shape's processes, exported over OTLP to a collector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use parking_lot::Mutex;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use redstore_proto::stream::WatchInventoryRequest;
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use redstore_proto::stream::watch_inventory_response::Item;

use crate::distributed::TestTopics;
use crate::helpers::*;

async fn scrape(addr: std::net::SocketAddr) -> reqwest::Response {
    reqwest::Client::new().get(format!("http://{addr}/metrics")).send().await.expect("GET /metrics")
}

/// The value of the sample whose name and labels contain every one of `parts`.
fn sample(text: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_a_sale_by_method_and_outcome_and_leave_made_up_paths_out() {
    let app = TestApp::spawn().await;
    let mut sales = app.sales();
    sales.checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(5000)])).await.expect("a sale");
    let refused = sales.checkout(checkout(&key(), "store-1", "till-1", &[("NO-SUCH-SKU", 1)], vec![cash(5000)])).await;
    assert!(refused.is_err(), "an unknown sku is refused");
    // A stranger's made-up method: answered UNIMPLEMENTED, counted without its name.
    // A stranger's made-up method, over gRPC-web: answered UNIMPLEMENTED, counted without its name.
    let path = format!("redstore.sales.v1.SalesService/Made{}", uuid::Uuid::now_v7().simple());
    let made_up = crate::interop::grpc_web_with(&app, &path, &(), &[]).await;
    assert_eq!(made_up.grpc("grpc-status").as_deref(), Some("12"), "{:?}", made_up.headers);

    let response = scrape(app.addr).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    let checkout = r#"method="Checkout""#;
    assert!(sample(&text, &["redstore_rpc_requests_total{", checkout, r#"code="OK""#]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, &["redstore_rpc_requests_total{", checkout, r#"code="NOT_FOUND""#]).is_some(), "{text}");
    assert!(sample(&text, &["redstore_rpc_duration_seconds_count{", checkout]).unwrap_or(0.0) >= 2.0, "{text}");
    assert!(sample(&text, &["redstore_checkouts_total{", r#"outcome="ok""#]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, &["redstore_checkouts_total{", r#"outcome="refused""#]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        sample(&text, &["redstore_rpc_requests_total{", r#"method="unknown""#, r#"code="UNIMPLEMENTED""#]).is_some()
    );
    assert!(!text.contains("Made"), "a made-up method name never becomes a label");
    assert!(!text.contains("store-1"), "no store id in any label");
    assert!(sample(&text, &["redstore_live_watchers"]).is_some(), "{text}");
    if on_postgres() {
        assert!(sample(&text, &["redstore_db_pool_max_connections{", r#"pool="main""#]).is_some(), "{text}");
    }
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_from_the_public_port() {
    let app = TestApp::spawn_configured(|cfg| cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = app.running().metrics_addr;
    assert_ne!(metrics_addr, app.addr);
    let apart = scrape(metrics_addr).await;
    assert_eq!(apart.status(), 200);
    assert!(apart.text().await.unwrap().contains("redstore_live_watchers"));
    let public = scrape(app.addr).await.text().await.unwrap();
    assert!(!public.contains("redstore_"), "the public port does not say: {public:.200}");
}

/// An OTLP collector in the test: keeps every span it is sent, with its process's service name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Exported>>>);

#[derive(Clone, Debug)]
struct Exported {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    start_ns: u64,
    end_ns: u64,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(Exported {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn start() -> (Self, String) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Exported> {
        self.0.lock().clone()
    }
}

/// A terminal watching store-1 on `bridge` while another sells there through `sales`; returns once
/// the bridge has pushed the sale's stock change.
async fn sell_and_see_the_push(sales: &Process, bridge: &Process) {
    let mut watch = InventoryStreamServiceClient::new(bridge.channel().await)
        .watch_inventory(WatchInventoryRequest { store_id: "store-1".into(), ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    SalesServiceClient::new(sales.channel().await)
        .checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0008", 1)], vec![cash(5000)]))
        .await
        .expect("a sale");
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("the bridge pushes");
        if let Some(Item::Event(_)) = item.expect("open").expect("an item").item {
            return;
        }
    }
}

/// The span names one sale's trace must hold, with the process that makes each.
fn wanted(prefix: &str) -> Vec<(String, &'static str)> {
    vec![
        ("redstore.sales.v1.SalesService/Checkout".to_owned(), "redstore-sales"),
        ("write batch".to_owned(), "redstore-sales"),
        ("redstore.inventory.v1.InventoryService/ApplySales".to_owned(), "redstore-inventory"),
        (format!("{prefix}.sales.v1 publish"), "redstore-kafka-worker"),
        (format!("{prefix}.sales.v1 process"), "redstore-kafka-worker"),
        (format!("{prefix}.inventory.v1 publish"), "redstore-kafka-worker"),
        (format!("{prefix}.inventory.v1 process"), "redstore-kafka-worker"),
        ("inventory.changed push".to_owned(), "redstore-stream-bridge"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_is_one_trace_from_the_terminal_call_to_the_bridge_and_analytics() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let topics = TestTopics::new();
    let (collector, endpoint) = Collector::start().await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let start = |args: Vec<String>| Process::start_with_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    let inventory =
        start(topics.args(&["serve", "inventory", "--demo", "--database-url", &url, "--redis-url", &redis_url]));
    let inventory_url = inventory.url();
    let sales = start(topics.args(&["serve", "sales", "--database-url", &url, "--inventory-url", &inventory_url]));
    let analytics = start(topics.args(&["serve", "analytics", "--database-url", &url]));
    let bridge = start(vec![
        "serve".into(),
        "stream-bridge".into(),
        "--database-url".into(),
        url.clone(),
        "--redis-url".into(),
        redis_url.clone(),
    ]);

    sell_and_see_the_push(&sales, &bridge).await;

    let wanted = wanted(&topics.prefix);
    let mut trace = Vec::new();
    for _ in 0..200 {
        let spans = collector.spans();
        let root = spans.iter().find(|s| s.name == wanted[0].0 && s.parent_span_id.is_empty());
        if let Some(root) = root {
            trace = spans.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect();
            if wanted.iter().all(|(name, _)| trace.iter().any(|s| &s.name == name)) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<(&str, &str)> = trace.iter().map(|s| (s.name.as_str(), s.service.as_str())).collect();
    let everything = collector.spans();
    let all: Vec<(&str, &str, String)> = everything
        .iter()
        .map(|s| (s.name.as_str(), s.service.as_str(), s.trace_id.iter().take(3).map(|b| format!("{b:02x}")).collect()))
        .collect();
    for (name, service) in &wanted {
        assert!(
            trace.iter().any(|s| &s.name == name && s.service == *service),
            "the sale's trace has no {name:?} from {service}: {names:?}; every span exported: {all:?}"
        );
    }
    // One tree: every span but the terminal's call hangs from another span of the same trace.
    let ids: HashMap<&[u8], &Exported> = trace.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    for span in &trace {
        if span.name == wanted[0].0 {
            assert!(span.parent_span_id.is_empty(), "the terminal's call is the root");
            continue;
        }
        assert!(
            ids.contains_key(span.parent_span_id.as_slice()),
            "{:?} of {} hangs from a span outside the trace: {names:?}",
            span.name,
            span.service
        );
    }
    // The consumers continue from the publish of the message they process.
    for topic in ["sales", "inventory"] {
        let process = trace.iter().find(|s| s.name == format!("{}.{topic}.v1 process", topics.prefix)).unwrap();
        assert_eq!(ids[process.parent_span_id.as_slice()].name, format!("{}.{topic}.v1 publish", topics.prefix));
    }

    // The sales process's /metrics carries its Kafka worker's too, each family declared once.
    let text = scrape(sales.addr).await.text().await.unwrap();
    assert!(text.contains("redstore_kafka_worker_up 1"), "{text}");
    assert!(sample(&text, &["redstore_db_pool_max_connections{", r#"pool="kafka_worker""#]).is_some(), "{text}");
    let declared: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let once: std::collections::HashSet<&&str> = declared.iter().collect();
    assert_eq!(once.len(), declared.len(), "a family declared twice makes Prometheus refuse the scrape: {text}");

    // docs/operations.md shows one: `REDSTORE_TRACE_PICTURE=<file> cargo nextest run … one_trace`.
    if let Ok(path) = std::env::var("REDSTORE_TRACE_PICTURE") {
        std::fs::write(path, picture(&trace, &topics.prefix)).expect("write the trace's picture");
    }
    drop((inventory, sales, analytics, bridge));
    db.drop_db().await.expect("drop scratch database");
    topics.delete().await;
}

/// A trace as text (topics under `topic_prefix` shown under the default one): each span under its parent, when it began after the trace did, how long it
/// took, and a bar on a common time scale.
fn picture(trace: &[Exported], topic_prefix: &str) -> String {
    const WIDTH: f64 = 40.0;
    let begin = trace.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = trace.iter().map(|s| s.end_ns).max().unwrap_or(begin).max(begin + 1);
    let scale = WIDTH / (end - begin) as f64;
    fn walk<'a>(trace: &'a [Exported], parent: &[u8], depth: usize, out: &mut Vec<(usize, &'a Exported)>) {
        let mut children: Vec<&Exported> = trace.iter().filter(|s| s.parent_span_id == parent).collect();
        children.sort_by_key(|s| s.start_ns);
        for child in children {
            out.push((depth, child));
            walk(trace, &child.span_id, depth + 1, out);
        }
    }
    let mut ordered = Vec::new();
    walk(trace, &[], 0, &mut ordered);
    // Topics under the default prefix, as a deployment names them.
    let named: Vec<String> = ordered
        .iter()
        .map(|(depth, s)| format!("{}{}", "  ".repeat(*depth), s.name.replace(topic_prefix, "redstore")))
        .collect();
    let width = named.iter().map(|n| n.chars().count()).max().unwrap_or(4);
    let mut lines = vec![format!("{:>9} {:>9}  {:<22} {:<width$} time", "start", "took", "process", "span")];
    for ((_, span), name) in ordered.iter().zip(&named) {
        let from = ((span.start_ns - begin) as f64 * scale) as usize;
        let length = (((span.end_ns - span.start_ns) as f64 * scale) as usize).max(1);
        lines.push(format!(
            "{:>6.1} ms {:>6.1} ms  {:<22} {:<width$} {}{}",
            (span.start_ns - begin) as f64 / 1e6,
            (span.end_ns - span.start_ns) as f64 / 1e6,
            span.service,
            name,
            " ".repeat(from),
            "█".repeat(length),
        ));
    }
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_shape_a_sale_and_its_push_to_terminals_are_one_trace() {
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let up = Process::start_with_env(&["up", "--data-dir", dir.path().to_str().unwrap()], &env);
    sell_and_see_the_push(&up, &up).await;
    let checkout = "redstore.sales.v1.SalesService/Checkout";
    for _ in 0..100 {
        let spans = collector.spans();
        if let Some(root) = spans.iter().find(|s| s.name == checkout) {
            let pushed = spans.iter().any(|s| s.name == "inventory.changed push" && s.trace_id == root.trace_id);
            if pushed {
                assert!(spans.iter().all(|s| s.service == "redstore"), "one process, one service name");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = collector.spans().iter().map(|s| s.name.clone()).collect();
    panic!("the push is not in the sale's trace: {names:?}");
}

/// Scrapes `addr` until the sample named by `parts` reads `want` (the probes run every 5 s).
async fn wait_for_sample(addr: std::net::SocketAddr, parts: &[&str], want: f64, deadline: Duration) -> String {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let text = scrape(addr).await.text().await.expect("metrics text");
        if sample(&text, parts) == Some(want) {
            return text;
        }
        assert!(tokio::time::Instant::now() < until, "{parts:?} never read {want}: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An operator's alert on Kafka: `redstore_backend_up{backend="kafka"}` follows the broker, from
/// the Kafka worker through the server's scrape, while the services stay SERVING (the outboxes
/// hold the events while the broker is away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_gauge_follows_the_broker_while_sales_stay_serving() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let mut broker = KafkaBroker::start();
    let brokers = broker.brokers();
    let server = Process::start(&["up", "--database-url", &db.app_url, "--kafka-brokers", &brokers]);
    let kafka = ["redstore_backend_up{", r#"backend="kafka""#];
    wait_for_sample(server.addr, &kafka, 1.0, Duration::from_secs(30)).await;

    broker.kill();
    let text = wait_for_sample(server.addr, &kafka, 0.0, Duration::from_secs(20)).await;
    assert_eq!(sample(&text, &["redstore_backend_up{", r#"backend="postgres""#]), Some(1.0), "{text}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.raw_channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "redstore.sales.v1.SalesService".into() })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    broker.restart();
    wait_for_sample(server.addr, &kafka, 1.0, Duration::from_secs(30)).await;
}
