//! TLS on the one port: `--tls-cert` and `--tls-key` (PEM) serve native gRPC, gRPC-web and SSE
//! over TLS (rustls), offering HTTP/2 and HTTP/1.1 by ALPN; each connection then speaks the
//! protocol it negotiated. And the trust a sales process places in the inventory it calls over
//! `https://` (`--inventory-ca`, else the system's roots).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// TLS flags of `redstore up` and `serve`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsOptions {
    /// PEM certificate chain (the server's own first) to serve TLS with, on the same port; with
    /// --tls-key. Without them the port speaks plain text, for a trusted network or a proxy that
    /// ends TLS.
    #[arg(long, env = "REDSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "REDSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of the authority that signed inventory's certificate, which a sales
    /// process calling --inventory-url https://… checks it against; without it, the system's
    /// trusted roots.
    #[arg(long, env = "REDSTORE_INVENTORY_CA")]
    pub inventory_ca: Option<PathBuf>,
}

/// Makes aws-lc-rs the process's TLS provider, for the clients that take the process-wide one
/// (sqlx to PostgreSQL, redis): left to choose, rustls refuses when a build holds two providers.
pub fn install_provider() {
    // Already installed (by an earlier start in this process) is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The TLS acceptor of `--tls-cert` and `--tls-key`, or `None` when they are not given. Errors
/// name the flag and the file.
pub fn acceptor(options: &TlsOptions) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) else { return Ok(None) };
    let (_, chain) = certificates(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: no PEM private key ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("--tls-key does not fit --tls-cert {}", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// A PEM file read once: its text and its certificates, at least one.
fn certificates(path: &Path, flag: &str) -> anyhow::Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: cannot read its PEM certificates ({e})", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{flag} {}: the file holds no PEM certificate", path.display());
    Ok((pem, chain))
}

/// How a client checks the server it calls over `https://`: the authority of `ca` (a PEM file),
/// or the system's trusted roots.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let config = tonic::transport::ClientTlsConfig::new();
    Ok(match ca {
        Some(path) => {
            let (pem, _) = certificates(path, "--inventory-ca")?;
            config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    })
}
