//! Kafka over TLS, as managed services offer it: each test starts its own tansu broker on a free
//! port behind a TLS terminator of the test's own, with a certificate authority made for the
//! test; the broker advertises the terminator's address, so every connection a client makes is
//! TLS. (tansu 0.6's `--cert` and `--key` cannot be given together: its command line puts them
//! in one exclusive group.)
//!
//! SASL is not tried against a broker here: tansu 0.6 offers only SCRAM, checked against
//! credentials it stores, and its in-memory storage cannot be given any once authentication is
//! on. The login's settings are tested where they are made (`kafka::tests`,
//! `src/kafka_security.rs`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use redstore_platform::kafka::{self, KafkaConfig, KafkaSecurity};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::test_config;

/// A certificate authority (its PEM file) and a certificate for `localhost` it signed.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut authority = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: OpenSSL (librdkafka's TLS) takes a certificate whose subject is its
        // issuer's for a self-signed one.
        authority.distinguished_name.push(DnType::CommonName, "Red Store test authority");
        let issuer = CertifiedIssuer::self_signed(authority, KeyPair::generate().expect("CA key")).expect("CA");
        let key = KeyPair::generate().expect("broker key");
        let mut broker = CertificateParams::new(vec!["localhost".to_owned()]).expect("broker parameters");
        broker.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = broker.signed_by(&key, &issuer).expect("broker certificate");
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, issuer.pem()).expect("write the CA");
        Self { dir, ca, cert: cert.der().clone(), key: key.serialize_der() }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("the key fits the certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A tansu broker of the test's own, reached only through TLS.
struct SecuredBroker {
    child: Child,
    /// Where clients connect (TLS).
    port: u16,
    terminator: tokio::task::JoinHandle<()>,
}

impl SecuredBroker {
    async fn start(pki: &Pki) -> Self {
        let free = || TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let (plain, tls) = (free(), free());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", tls)).await.expect("the TLS port");
        let log = std::fs::File::create(pki.dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{plain}")])
            .args(["--advertised-listener-url", &format!("tcp://localhost:{tls}")])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", plain)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {plain}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let acceptor = pki.acceptor();
        let terminator = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends its handshake here.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", plain)).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                });
            }
        });
        Self { child, port: tls, terminator }
    }

    /// A configuration reaching this broker with `security`.
    fn config(&self, security: KafkaSecurity) -> KafkaConfig {
        KafkaConfig { brokers: format!("localhost:{}", self.port), security, ..test_config() }
    }
}

impl Drop for SecuredBroker {
    fn drop(&mut self) {
        self.terminator.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tansu on the PATH, else where `cargo install` puts it.
fn tansu() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("tansu")).find(|p| p.exists()));
    let installed = || std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/tansu"));
    on_path.or_else(installed).unwrap_or_else(|| PathBuf::from("tansu"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_a_broker_reached_only_over_tls() {
    let pki = Pki::new();
    let broker = SecuredBroker::start(&pki).await;
    let cfg = broker.config(KafkaSecurity { tls: true, ca_file: Some(pki.ca.clone()), sasl: None });

    kafka::ensure_topics(&cfg, &["sales"]).await.expect("topics made over TLS");
    let consumer = kafka::consumer(&cfg, "secured", &["sales"]).expect("consumer");
    let producer = kafka::producer(&cfg).expect("producer");
    producer
        .send(FutureRecord::to(&cfg.topic("sales")).key("store-1").payload("sold"), Duration::from_secs(10))
        .await
        .expect("delivered over TLS");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("the event arrives")
        .expect("a message");
    assert_eq!((message.key(), message.payload()), (Some(&b"store-1"[..]), Some(&b"sold"[..])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_certificate_another_authority_signed_is_refused() {
    let (pki, stranger) = (Pki::new(), Pki::new());
    let broker = SecuredBroker::start(&pki).await;
    let cfg = broker.config(KafkaSecurity { tls: true, ca_file: Some(stranger.ca.clone()), sasl: None });
    let err = kafka::ensure_topics(&cfg, &["sales"]).await.expect_err("an impostor's certificate is not trusted");
    assert!(format!("{err:#}").contains(&cfg.brokers), "the error names the brokers: {err:#}");
}
