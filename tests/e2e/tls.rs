//! TLS on the one port (`--tls-cert`, `--tls-key`): native gRPC, gRPC-web over HTTP/1.1, SSE and
//! grpcurl over TLS, with a certificate authority made for each test; a client that does not
//! trust the certificate, or speaks plain text, gets nothing; a sales process checks the
//! certificate of the inventory it calls (`--inventory-ca`).

use std::path::PathBuf;
use std::time::Duration;

use redstore_platform::pg::scratch::ScratchDb;
use redstore_proto::inventory::GetStockRequest;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::sales::sales_service_client::SalesServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::helpers::*;

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1 it signed, as
/// PEM files in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut authority = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(authority, KeyPair::generate().expect("CA key")).expect("CA");
        let key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server parameters")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        let dir = tempfile::tempdir().expect("temporary directory");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let (ca, cert, key) = (
            write("ca.pem", &issuer.pem()),
            write("server.pem", &server.pem()),
            write("server.key", &key.serialize_pem()),
        );
        Self { ca, cert, key, ca_pem: issuer.pem(), _dir: dir }
    }

    fn options(&self) -> redstore::tls::TlsOptions {
        redstore::tls::TlsOptions {
            tls_cert: Some(self.cert.clone()),
            tls_key: Some(self.key.clone()),
            inventory_ca: None,
        }
    }

    /// A native gRPC channel that trusts this authority.
    /// A TLS connection that trusts this authority, signed in as an admin.
    async fn channel(&self, addr: std::net::SocketAddr) -> Ch {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("localhost");
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .expect("url")
            .tls_config(tls)
            .expect("TLS config")
            .connect()
            .await
            .expect("a TLS connection");
        as_admin(channel)
    }

    /// An HTTP/1.1 client that trusts this authority (a browser that was given it), signed in as
    /// an admin.
    fn http1(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", admin_token()).parse().expect("header"));
        reqwest::Client::builder()
            .http1_only()
            .default_headers(headers)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA"))
            .build()
            .expect("client")
    }
}

fn get_stock() -> GetStockRequest {
    GetStockRequest { store_id: "store-1".into(), sku: "SKU-0001".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tls_port_serves_grpc_grpc_web_sse_and_grpcurl() {
    let pki = Pki::new();
    let app = TestApp::spawn_configured(|cfg| cfg.tls = pki.options()).await;
    let port = app.addr.port();

    // Native gRPC over HTTP/2, negotiated by ALPN.
    let stock = InventoryServiceClient::new(pki.channel(app.addr).await).get_stock(get_stock()).await;
    assert_eq!(stock.expect("GetStock over TLS").into_inner().stock.expect("stock").quantity, 40);

    // gRPC-web over HTTP/1.1, as an iPad's browser speaks it.
    let frame = {
        let body = prost::Message::encode_to_vec(&get_stock());
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    };
    let reply = pki
        .http1()
        .post(format!("https://localhost:{port}/redstore.inventory.v1.InventoryService/GetStock"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame)
        .send()
        .await
        .expect("gRPC-web over TLS");
    assert_eq!(reply.version(), reqwest::Version::HTTP_11);
    assert_eq!(reply.status(), 200);
    let body = reply.bytes().await.expect("body");
    assert!(body.windows(13).any(|w| w == b"grpc-status:0"), "trailer frame with grpc-status:0: {body:?}");

    // The live stream (SSE) sends its snapshot.
    let mut sse = pki
        .http1()
        .get(format!("https://localhost:{port}/v1/stores/store-1/inventory/events?snapshot=true"))
        .send()
        .await
        .expect("SSE over TLS");
    assert_eq!(sse.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), sse.chunk()).await.expect("in time").expect("read");
    let first = String::from_utf8_lossy(&first.expect("a first event")).into_owned();
    assert!(first.contains("SKU-0001"), "{first}");

    // grpcurl, trusting the authority.
    let ca = pki.ca.to_str().expect("utf-8 path").to_owned();
    let target = format!("localhost:{port}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("grpcurl").args(["-cacert", &ca, "-max-time", "30", &target, "list"]).output()
    })
    .await
    .unwrap()
    .expect("grpcurl runs (scripts/test.sh installs it)");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed} {}", String::from_utf8_lossy(&out.stderr));
    assert!(listed.contains("redstore.sales.v1.SalesService"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_certificate_or_speaks_plain_text_gets_nothing() {
    let pki = Pki::new();
    let app = TestApp::spawn_configured(|cfg| cfg.tls = pki.options()).await;
    let port = app.addr.port();

    // Another authority's client refuses the server (and so sends nothing).
    let stranger = Pki::new();
    let refused =
        stranger.http1().get(format!("https://localhost:{port}/v1/stores/store-1/inventory/events")).send().await;
    assert!(refused.is_err(), "a certificate of an unknown authority must not be accepted");

    // Plain-text HTTP/2 (grpcurl -plaintext, a misconfigured service): no answer.
    let plain =
        Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_timeout(Duration::from_secs(5));
    let answered = match plain.connect().await {
        Ok(channel) => InventoryServiceClient::new(as_admin(channel)).get_stock(get_stock()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plain-text call must not be served on the TLS port");
    // Plain-text HTTP/1.1 (curl http://): no answer either.
    let plain =
        reqwest::Client::new().get(format!("http://127.0.0.1:{port}/v1/stores/store-1/inventory/events")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // The server is unharmed.
    let stock = InventoryServiceClient::new(pki.channel(app.addr).await).get_stock(get_stock()).await;
    assert_eq!(stock.expect("still served").into_inner().stock.expect("stock").quantity, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_process_calls_its_inventory_over_tls_checking_its_certificate() {
    let pki = Pki::new();
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let url = db.app_url.clone();
    let (cert, pem_key, ca) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap(), pki.ca.to_str().unwrap());
    let inventory = Process::start(&[
        "serve",
        "inventory",
        "--demo",
        "--database-url",
        &url,
        "--tls-cert",
        cert,
        "--tls-key",
        pem_key,
    ]);
    let inventory_url = format!("https://localhost:{}", inventory.addr.port());
    // A sales process calling that inventory, trusting the authority in `ca`.
    let sales_trusting = |ca: &str| {
        Process::start(&[
            "serve",
            "sales",
            "--database-url",
            &url,
            "--inventory-url",
            &inventory_url,
            "--inventory-ca",
            ca,
        ])
    };
    let sales = sales_trusting(ca);
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(500)]);
    SalesServiceClient::new(sales.channel().await).checkout(sale).await.expect("a checkout through TLS");
    let stock = InventoryServiceClient::new(pki.channel(inventory.addr).await).get_stock(get_stock()).await;
    assert_eq!(stock.expect("GetStock").into_inner().stock.expect("stock").quantity, 38);

    // A sales process that trusts another authority does not sell through this inventory.
    let stranger = Pki::new();
    let doubting = sales_trusting(stranger.ca.to_str().unwrap());
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 1)], vec![cash(500)]);
    let err = SalesServiceClient::new(doubting.channel().await).checkout(sale).await.expect_err("untrusted inventory");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let stock = InventoryServiceClient::new(pki.channel(inventory.addr).await).get_stock(get_stock()).await;
    assert_eq!(stock.expect("GetStock").into_inner().stock.expect("stock").quantity, 38, "nothing sold");
}

#[test]
fn tls_typos_stop_the_server_at_start_naming_the_flag() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let up = |extra: &[&str]| up_exits(dir.path(), extra, &[]);
    let cert = pki.cert.to_str().unwrap();
    let (code, stderr) = up(&["--tls-cert", cert]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (code, stderr) = up(&["--tls-cert", "/nonexistent/server.pem", "--tls-key", pki.key.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--tls-cert /nonexistent/server.pem"), "{stderr}");
    // The CA's certificate with the server's key: they do not fit.
    let (code, stderr) = up(&["--tls-cert", pki.ca.to_str().unwrap(), "--tls-key", pki.key.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--tls-key does not fit"), "{stderr}");
}

/// The server on `database_url`, its data directory and a channel to it.
async fn start_on(database_url: String) -> anyhow::Result<(redstore::Running, Ch, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(&dir, true, None);
    cfg.database_url = Some(database_url);
    let running = redstore::start(cfg).await?;
    let channel = Channel::from_shared(format!("http://{}", running.addr))?.connect().await?;
    Ok((running, as_admin(channel), dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_tls_when_its_url_asks_and_checked_against_its_authority() {
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let admin = sqlx::PgPool::connect(&db.admin_url).await.expect("admin connection");
    let ssl: bool = sqlx::query_scalar("SELECT current_setting('ssl') = 'on'").fetch_one(&admin).await.unwrap();
    assert!(ssl, "PostgreSQL on 127.0.0.1:5432 must have ssl = on (Debian's default, with its snakeoil certificate)");

    let (running, channel, _dir) = start_on(format!("{}?sslmode=require", db.app_url)).await.expect("starts over TLS");
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0001", 2)], vec![cash(500)]);
    SalesServiceClient::new(channel.clone()).checkout(sale).await.expect("a checkout");
    let stock = InventoryServiceClient::new(channel).get_stock(get_stock()).await.expect("GetStock");
    assert_eq!(stock.into_inner().stock.expect("stock").quantity, 38);
    // Every connection the server holds to its database is encrypted.
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1 AND a.usename = 'redstore_app'",
    )
    .bind(&db.name)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(connections > 0 && encrypted == connections, "{encrypted} of {connections} connections encrypted");
    running.shutdown().await.expect("stops");

    // A server told to check the database's certificate against an authority that did not sign
    // it refuses to start, naming the database.
    let stranger = Pki::new();
    let url = format!("{}?sslmode=verify-ca&sslrootcert={}", db.app_url, stranger.ca.display());
    let refused = start_on(url).await.err().expect("an unverifiable database is refused");
    let message = format!("{refused:#}");
    assert!(message.contains("cannot reach PostgreSQL at redstore_app@"), "{message}");
    assert!(message.contains("invalid peer certificate"), "refused for its certificate: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_is_reached_over_tls_trusting_what_the_process_is_told_to() {
    let pki = Pki::new();
    let redis = RedisServer::start_tls(&pki.cert, &pki.key);
    let db = ScratchDb::create(&redstore::server::pg_migrations()).await.expect("scratch database");
    let redis_url = format!("rediss://localhost:{}", redis.port);
    let args = ["up", "--database-url", db.app_url.as_str(), "--redis-url", redis_url.as_str()];

    // Trusting another authority: refused at start, naming Redis.
    let stranger = Pki::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--no-demo"])
        .env("SSL_CERT_FILE", &stranger.ca)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot reach Redis at") && stderr.contains(&format!("localhost:{}", redis.port)),
        "{stderr}"
    );

    // Trusting this one (SSL_CERT_FILE, as for OpenSSL's tools): a sale reaches a live watcher
    // through Redis.
    let ca = pki.ca.to_str().unwrap();
    let server = Process::start_with_env(&args, &[("SSL_CERT_FILE", ca)]);
    let mut watch = admin_http1()
        .get(format!("http://{}/v1/stores/store-1/inventory/events", server.addr))
        .send()
        .await
        .expect("a live stream");
    assert_eq!(watch.status(), 200);
    let sale = checkout(&key(), "store-1", "till-1", &[("SKU-0007", 1)], vec![cash(5000)]);
    SalesServiceClient::new(server.channel().await).checkout(sale).await.expect("a checkout");
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        while !text.contains("SKU-0007") {
            let chunk = watch.chunk().await.expect("read").expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(seen.is_ok(), "the sale's stock change arrives through Redis over TLS");
}
