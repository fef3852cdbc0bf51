//! Accepting and serving connections on the one port: HTTP/1.1 and HTTP/2 (prior knowledge) on
//! the same socket, with a cap on open connections, timeouts for clients that send too little or
//! nothing, and HTTP/2 keep-alive pings that find dead peers of long streams.
//!
//! `axum::serve` has none of these knobs, so the connections are driven here with hyper-util's
//! `auto::Builder`, as axum does inside.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpConnectInfo;
use tower::Service as _;

/// How the server treats connections: timeouts, keep-alive and caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct ConnectionOptions {
    /// How long a client gets to send a request's headers: after connecting (a client that sends
    /// nothing is closed), and for every HTTP/1.1 request, including the wait for the next one
    /// on a keep-alive connection.
    #[arg(long, env = "REDSTORE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no stream open for this long is closed
    /// (HTTP/2: with a GOAWAY first).
    #[arg(long, env = "REDSTORE_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// HTTP/2: how often the server pings a client it has heard nothing from, to find dead peers
    /// of long streams (`0s`: never).
    #[arg(long, env = "REDSTORE_HTTP2_KEEP_ALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keep_alive_interval: Duration,
    /// HTTP/2: a connection whose ping is not answered within this is closed.
    #[arg(long, env = "REDSTORE_HTTP2_KEEP_ALIVE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http2_keep_alive_timeout: Duration,
    /// HTTP/2: most requests and streams open at once on one connection.
    #[arg(long, env = "REDSTORE_HTTP2_MAX_STREAMS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
    /// Most connections open at once; a connection beyond it is closed as soon as it is accepted.
    /// Lowered at start to what the process's open-file limit allows.
    #[arg(long, env = "REDSTORE_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most live streams (SSE and WatchInventory) open at once in the process; beyond it SSE
    /// answers 503 with Retry-After and WatchInventory RESOURCE_EXHAUSTED with a retry hint.
    #[arg(long, env = "REDSTORE_MAX_LIVE_STREAMS", default_value_t = 15_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_live_streams: u32,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(10),
            http2_max_streams: 200,
            max_connections: 20_000,
            max_live_streams: 15_000,
        }
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// File descriptors the process keeps for everything but client connections: database files,
/// PostgreSQL, Redis and Kafka connections, the runtime's own.
const RESERVED_FILES: u64 = 256;

/// Raises the process's soft limit of open files to its hard limit, so that the connection cap,
/// not a default of 1,024 files, decides how many clients it serves. Returns the soft limit.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    open_file_limit()
}

/// The soft limit of open files (`u64::MAX`: none).
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection cap that fits in the open-file limit.
pub fn fitting_connections(wanted: u32, open_files: u64) -> u32 {
    let room = open_files.saturating_sub(RESERVED_FILES).max(1);
    u32::try_from(room).map_or(wanted, |room| wanted.min(room))
}

/// Accepts connections on `listener` and serves `router` on each until `stop`; then asks every
/// connection to finish (HTTP/2: GOAWAY; HTTP/1.1: close after the response in progress) and
/// returns once all have closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    options: ConnectionOptions,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let max = options.max_connections.max(1);
    // One permit per open connection; all of them back means every connection has closed.
    let open = Arc::new(Semaphore::new(max as usize));
    let builders = Arc::new(Builders::new(&options));
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Closed at once rather than left in the listen queue: the client can tell and go
            // elsewhere or retry, instead of waiting for nothing.
            drop(tcp);
            redstore_platform::warn_throttled!(
                max_connections = max,
                "connection cap reached; closing new connections"
            );
            continue;
        };
        // Small gRPC frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (router, builders, stop, tls) = (router.clone(), builders.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            serve_connection(tcp, router, &builders, &options, tls, &stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _all_closed = open.acquire_many(max).await;
    Ok(())
}

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The same settings three ways: for a connection known to speak HTTP/1.1, one known to speak
/// HTTP/2, and one that cannot be told yet (hyper-util then reads until it can).
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    detect: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(options: &ConnectionOptions) -> Self {
        let mut detect = auto::Builder::new(TokioExecutor::new());
        detect.http1().timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).keep_alive(true);
        let keep_alive = Some(options.http2_keep_alive_interval).filter(|d| !d.is_zero());
        detect
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(keep_alive)
            .keep_alive_timeout(options.http2_keep_alive_timeout)
            .max_concurrent_streams(options.http2_max_streams);
        Self { h1: detect.clone().http1_only(), h2: detect.clone().http2_only(), detect }
    }

    /// The builder for a connection whose first bytes are `first`. Telling the protocol from a
    /// peek spares hyper-util's own detection, which reads the first bytes and hands them back
    /// in front of the socket: HTTP/1.1 then reads them into one buffer and the rest of the
    /// request into a second, twice the size, that stays with the connection while it lives.
    fn for_first_bytes(&self, first: &[u8]) -> &auto::Builder<TokioExecutor> {
        if first == H2_PREFACE {
            &self.h2
        } else if H2_PREFACE.starts_with(first) {
            &self.detect
        } else {
            &self.h1
        }
    }
}

/// Errors of `accept` that concern one connection only (it was gone before it was accepted).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn accept_failed(e: std::io::Error) {
    if is_connection_error(&e) {
        return;
    }
    // Out of file descriptors or memory: trying again at once would spin.
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    router: axum::Router,
    builders: &Builders,
    options: &ConnectionOptions,
    tls: Option<TlsAcceptor>,
    stop: &CancellationToken,
) {
    // hyper times out HTTP/1.1 headers, but not a client that sends nothing: it would wait
    // forever to learn which protocol the client speaks. (A peek, not `readable`, which can be
    // ready with nothing to read.) Over TLS the handshake is held to the same timeout.
    let peer = TcpConnectInfo { local_addr: tcp.local_addr().ok(), remote_addr: tcp.peer_addr().ok() };
    let Some(tls) = tls else {
        let mut first = [0u8; H2_PREFACE.len()];
        let peeked = tokio::select! {
            _ = stop.cancelled() => return,
            peeked = tokio::time::timeout(options.header_read_timeout, tcp.peek(&mut first)) => peeked,
        };
        if let Ok(Ok(n)) = peeked
            && n > 0
        {
            drive(tcp, peer, builders.for_first_bytes(&first[..n]), router, options, stop).await;
        }
        return;
    };
    let handshake = tokio::select! {
        _ = stop.cancelled() => return,
        handshake = tokio::time::timeout(options.header_read_timeout, tls.accept(tcp)) => handshake,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    // The protocol is the one ALPN settled on; a client that named none is detected.
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => &builders.h2,
        Some(b"http/1.1") => &builders.h1,
        _ => &builders.detect,
    };
    drive(stream, peer, builder, router, options, stop).await;
}

/// Serves one connection, whose protocol is settled, until it closes: closed when idle, asked to
/// finish at `stop`.
async fn drive<I>(
    io: I,
    peer: TcpConnectInfo,
    builder: &auto::Builder<TokioExecutor>,
    router: axum::Router,
    options: &ConnectionOptions,
    stop: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = Tracked { router, activity: activity.clone(), peer };
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut idle = pin!(activity.idle_for(options.idle_timeout));
    let mut closing = false;
    // After an idle connection's GOAWAY, when it is closed whether the client acknowledged it
    // or not (a client that does not answer within a keep-alive timeout is gone).
    let mut close_by: Option<Instant> = None;
    loop {
        let closed_by = async {
            match close_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + options.http2_keep_alive_timeout);
            }
            // Unless a request slipped in before the client saw the GOAWAY: it is served.
            _ = closed_by => {
                if activity.open.load(Ordering::Acquire) == 0 {
                    break;
                }
                close_by = None;
            }
        }
    }
}

/// Requests in flight on one connection, counted until their responses (streams included) end.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    changed: Notify,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let mut changed = pin!(self.changed.notified());
            // Registered before the count is read, so no change in between is missed.
            changed.as_mut().enable();
            if self.open.load(Ordering::Acquire) > 0 {
                changed.await;
            } else if tokio::time::timeout(timeout, changed).await.is_err() {
                return;
            }
        }
    }
}

/// One request in flight; ends when its response body is finished or dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// The router as a hyper service that counts each request as in flight until its response ends,
/// and tells each request who sent it (tonic's `Request::remote_addr`).
#[derive(Clone)]
struct Tracked {
    router: axum::Router,
    activity: Arc<Activity>,
    peer: TcpConnectInfo,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Counted>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        let busy = self.activity.begin();
        let answer = self.router.clone().call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Counted { body, _busy: busy }))
        })
    }
}

/// A response body that keeps its request counted as in flight.
struct Counted {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_library_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: ConnectionOptions,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(["redstore"]).expect("no flags parse");
        assert_eq!(parsed.options, ConnectionOptions::default());
    }

    #[test]
    fn the_first_bytes_tell_the_protocol_or_leave_it_to_be_read() {
        let builders = Builders::new(&ConnectionOptions::default());
        let chosen = |first: &[u8]| builders.for_first_bytes(first) as *const _;
        assert_eq!(chosen(H2_PREFACE), &builders.h2 as *const _);
        assert_eq!(chosen(b"GET /v1/stores/store-1/inventory/events HTTP/1.1\r\n"), &builders.h1 as *const _);
        assert_eq!(chosen(b"POST /redstore.sales.v1.SalesService/Checkout HTTP/1.1"), &builders.h1 as *const _);
        assert_eq!(chosen(b"PRI * HTTP/2"), &builders.detect as *const _, "only part of the preface so far");
    }

    #[test]
    fn the_connection_cap_leaves_room_for_the_process_own_files() {
        assert_eq!(fitting_connections(20_000, 1_024), 768);
        assert_eq!(fitting_connections(20_000, 1_048_576), 20_000);
        assert_eq!(fitting_connections(20_000, u64::MAX), 20_000);
        assert_eq!(fitting_connections(20_000, 10), 1);
    }
}
