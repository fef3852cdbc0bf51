//! The network edge: what a browser on the shop's network may reach, and the service identity of
//! internal RPCs. Three parts, in the order a request meets them (`server::start` layers them):
//!
//! 1. [`browser_rules`]: a request carrying an `Origin` of another origin is refused unless
//!    `--cors-origin` names it (preflights too), and a request a browser could have sent (HTTP/1.x,
//!    or carrying `Origin`) naming a `Host` this server does not answer to is refused, so that a
//!    web page whose name was pointed at the shop's server (DNS rebinding) reaches nothing.
//! 2. [`Edge::cors`]: CORS headers for the configured origins only, `authorization` allowed by
//!    name.
//! 3. [`guard`]: the access table (`access::RPCS`): an RPC for staff needs a signed-in staff
//!    member's access token of a role that may call it (or the service token), which it checks
//!    and hands to the handler as a `Caller`; the live stream needs a token or a stream ticket of
//!    its store; an internal RPC needs the service token and is never offered over gRPC-web.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use redstore_auth::revoked::Revoked;
use redstore_platform::access_token::{Claims, Refused, STREAM_SCOPE, TokenKeys};
use redstore_platform::audit::{self, Actor, AuditLog, AuditSink, Entry, Trail};
use redstore_platform::caller::Caller;
use redstore_platform::service_token::{self, ServiceToken};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::{self, Access};

/// How the server meets browsers and other services (flags of `redstore up` and `serve`).
#[derive(Clone, Debug, clap::Args)]
pub struct EdgeOptions {
    /// Offer gRPC reflection, which lets grpcurl list every RPC and message without the protos
    /// (`--reflection=false` to say nothing of them).
    #[arg(long, env = "REDSTORE_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,
    /// A browser origin (scheme://host[:port]) whose pages may call this server: CORS allows it
    /// and no other. Pages the server itself serves need none. Repeat, or separate with commas.
    #[arg(long = "cors-origin", env = "REDSTORE_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// A host name browsers reach this server by (as in http://NAME:port/), besides IP addresses,
    /// localhost and this machine's own name; a browser naming any other is refused (DNS
    /// rebinding). `*` allows any (only behind a proxy that checks Host itself). Repeat, or
    /// separate with commas.
    #[arg(long = "allowed-host", env = "REDSTORE_ALLOWED_HOSTS", value_delimiter = ',', value_parser = parse_host)]
    pub allowed_hosts: Vec<String>,
    /// The secret shared by the processes of one deployment: inventory requires it on its internal
    /// RPCs (applying sales and refunds), a separate sales process sends it. At least 32
    /// characters; prefer the environment variable or --service-token-file to a flag, which
    /// other users of the machine can see.
    #[arg(long, env = "REDSTORE_SERVICE_TOKEN", hide_env_values = true, value_parser = secret,
          conflicts_with = "service_token_file")]
    pub service_token: Option<Secret>,
    /// A file holding the service token (a Kubernetes secret mounted as a file).
    #[arg(long, env = "REDSTORE_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// A proxy (an Ingress controller's network, or an address) whose `X-Forwarded-For` names the
    /// client: auth's per-address limits and the audit log then see each terminal, not the
    /// proxy. Any other peer's header is ignored. Repeat, or separate with commas.
    #[arg(long = "trusted-proxy", env = "REDSTORE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::forwarded::parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            reflection: true,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            service_token: None,
            service_token_file: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A secret as configured, checked at start ([`Edge::new`]) so that no error repeats it (clap's
/// own errors quote the value), and never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(value.to_owned()))
}

/// An origin as browsers send it: `scheme://host[:port]`, lower-case, without a path.
fn parse_origin(value: &str) -> Result<String, String> {
    let bad = || format!("{value:?} is not an origin: give scheme://host[:port], e.g. https://pos.example.com");
    let uri: axum::http::Uri = value.trim().parse().map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(bad()) };
    if !matches!(scheme, "http" | "https")
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
        || authority.as_str().contains('@')
    {
        return Err(bad());
    }
    Ok(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// A host name without scheme or port, lower-case; or `*`.
fn parse_host(value: &str) -> Result<String, String> {
    let name = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = name == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }));
    if valid {
        Ok(name)
    } else {
        Err(format!("{value:?} is not a host name: give the name alone, without scheme or port (e.g. pos.example.com)"))
    }
}

/// The edge's rules, fixed at start.
pub struct Edge {
    origins: HashSet<String>,
    any_host: bool,
    hosts: HashSet<String>,
    token: Option<ServiceToken>,
    keys: Arc<TokenKeys>,
    /// Access tokens whose signature was checked, with their claims: a terminal sends the same
    /// token with every call until it refreshes it, and a signature check costs more than a
    /// lookup.
    verified: moka::sync::Cache<String, Arc<Claims>>,
    revoked: Arc<Revoked>,
    /// Where each request's trail records, once the backend is open ([`Edge::keep_audit`]).
    audit: std::sync::OnceLock<Arc<dyn AuditLog>>,
}

impl Edge {
    /// The rules of `options`; the service token file is read here. Access tokens are checked
    /// with `keys`, and refused for the sessions `revoked` holds.
    pub fn new(options: &EdgeOptions, keys: Arc<TokenKeys>, revoked: Arc<Revoked>) -> anyhow::Result<Self> {
        // The secret and where it came from, for an error that names the setting, not the secret.
        let configured = match (&options.service_token, &options.service_token_file) {
            (Some(Secret(secret)), _) => Some((secret.clone(), "--service-token (REDSTORE_SERVICE_TOKEN)".to_owned())),
            (None, Some(path)) => {
                let secret = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --service-token-file {}", path.display()))?;
                Some((secret, format!("--service-token-file {}", path.display())))
            }
            (None, None) => None,
        };
        let token = configured
            .map(|(secret, source)| ServiceToken::parse(&secret).map_err(|e| anyhow::anyhow!("{source}: {e}")))
            .transpose()?;
        let mut hosts: HashSet<String> = options.allowed_hosts.iter().cloned().collect();
        hosts.insert("localhost".to_owned());
        if let Ok(name) = rustix::system::uname().nodename().to_str() {
            let name = name.to_ascii_lowercase();
            if !name.is_empty() {
                if !name.contains('.') {
                    hosts.insert(format!("{name}.local"));
                }
                hosts.insert(name);
            }
        }
        Ok(Self {
            origins: options.cors_origins.iter().cloned().collect(),
            any_host: options.allowed_hosts.iter().any(|h| h == "*"),
            hosts,
            token,
            keys,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            revoked,
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Gives every request from now on a trail recording into `log`.
    pub fn keep_audit(&self, log: Arc<dyn AuditLog>) {
        let _ = self.audit.set(log);
    }

    /// The trail of a request by `caller` refused here (a handler makes its own: `Trail::of`).
    fn trail(&self, req: &Request, caller: &Caller) -> Option<Trail> {
        let log = self.audit.get()?.clone();
        Some(Trail::new(log, Actor::of(Some(caller), audit::peer_address(req.extensions().get()))))
    }

    /// Where the request's handler records, once the backend is open.
    fn sink(&self) -> Option<AuditSink> {
        self.audit.get().map(|log| AuditSink(log.clone()))
    }

    /// The caller a bearer token names: this deployment's service, or a staff member whose
    /// access token verifies, has not expired and whose session has not ended.
    fn caller(&self, bearer: &str, scope: Option<&str>) -> Result<Caller, tonic::Status> {
        if self.token.as_ref().is_some_and(|token| token.is(bearer)) {
            return Ok(Caller::Service);
        }
        let claims = match self.verified.get(bearer) {
            Some(claims) if !claims.expired() => claims,
            Some(_) => return Err(tonic::Status::unauthenticated(Refused::Expired.to_string())),
            None => {
                let claims =
                    Arc::new(self.keys.verify(bearer).map_err(|e| tonic::Status::unauthenticated(e.to_string()))?);
                self.verified.insert(bearer.to_owned(), claims.clone());
                claims
            }
        };
        if claims.scope.as_deref() != scope {
            return Err(tonic::Status::unauthenticated(match scope {
                None => "a stream ticket opens a live stream and nothing else: call with the access token",
                Some(_) => "this token is not a stream ticket: ask AuthService/IssueStreamTicket for one",
            }));
        }
        if self.revoked.contains(&claims.sid) {
            return Err(tonic::Status::unauthenticated("the session of this access token has ended: sign in again"));
        }
        Ok(Caller::Staff(claims))
    }

    /// The service token this process holds, if one was configured.
    pub fn service_token(&self) -> Option<&ServiceToken> {
        self.token.as_ref()
    }

    /// CORS for the configured origins: the headers a gRPC-web client and the live stream send,
    /// `authorization` by name (a `*` would not cover it), the gRPC status headers exposed.
    pub fn cors(&self) -> CorsLayer {
        let origins: Vec<HeaderValue> = self.origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        let allow = ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "authorization", "last-event-id"]
            .map(HeaderName::from_static);
        let expose = ["grpc-status", "grpc-message", "grpc-status-details-bin"].map(HeaderName::from_static);
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(allow)
            .expose_headers(expose)
            .max_age(Duration::from_secs(600))
    }

    /// Whether a request's origin may call: a configured origin, or the server's own (the page's
    /// origin names the host the request is sent to).
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }

    /// Whether the server answers to `host` (`name[:port]` or `[v6]:port`).
    fn host_allowed(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(v6) => return v6.split(']').next().is_some_and(|ip| ip.parse::<IpAddr>().is_ok()),
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok() || name.ends_with(".localhost") || self.hosts.contains(&name)
    }
}

/// The host a request is sent to: HTTP/1's `Host`, or HTTP/2's `:authority`.
fn request_host(req: &Request) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// A refusal in the caller's protocol: a gRPC status (trailers-only, so gRPC-web clients read it
/// too) for gRPC and gRPC-web calls, a plain 403 for anything else (SSE, preflights).
fn refuse(req: &Request, status: tonic::Status) -> Response {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    match content_type {
        Some(ct) if ct.as_bytes().starts_with(b"application/grpc") => {
            let mut response = status.into_http::<Body>();
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
            response
        }
        _ => (StatusCode::FORBIDDEN, format!("{}\n", status.message())).into_response(),
    }
}

/// A live stream refused: 401 without a valid token or ticket, 403 for another store's stream.
fn refuse_stream(status: tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    (code, format!("{}\n", status.message())).into_response()
}

/// Middleware, outside CORS: a page of an origin not configured is refused, preflights included,
/// and so is a browser-shaped request to a host this server does not answer to.
pub async fn browser_rules(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    let origin = req.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("null"));
    if let Some(origin) = origin
        && !edge.origin_allowed(origin, host)
    {
        let message =
            format!("pages of origin {origin} may not call this server (--cors-origin names the ones that may)");
        return refuse(&req, tonic::Status::permission_denied(message));
    }
    let from_a_browser = origin.is_some() || req.version() < Version::HTTP_2;
    if from_a_browser && !host.is_some_and(|h| edge.host_allowed(h)) {
        let message = match host {
            Some(host) => {
                format!("this server does not answer to the host {host} (--allowed-host names the ones it does)")
            }
            None => "a request without a Host header is refused".to_owned(),
        };
        return refuse(&req, tonic::Status::permission_denied(message));
    }
    next.run(req).await
}

/// Access tokens remembered as checked, at most.
const VERIFIED_TOKENS: u64 = 100_000;

/// The token of `authorization: Bearer <token>`.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The stream ticket of a live stream's URL (`?ticket=`).
fn ticket(req: &Request) -> Option<&str> {
    req.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("ticket=")).filter(|t| !t.is_empty())
}

/// Middleware, inside CORS: the access table. An RPC for staff needs an access token of a role
/// that may call it (or the service token): the caller goes to the handler in the request's
/// extensions. The live stream needs an access token or a stream ticket of its store. An
/// internal RPC over gRPC-web is refused whatever it carries; over native gRPC it needs the
/// service token.
pub async fn guard(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    if let Some(store_id) = access::stream_store(req.uri().path()) {
        let caller = match (bearer(&req), ticket(&req)) {
            (Some(token), _) => edge.caller(token, None),
            (None, Some(ticket)) => edge.caller(ticket, Some(STREAM_SCOPE)),
            (None, None) => Err(tonic::Status::unauthenticated(
                "the live stream needs an access token (authorization: Bearer …) or a stream ticket (?ticket=, from \
                 AuthService/IssueStreamTicket)",
            )),
        };
        let checked = caller.and_then(|caller| {
            caller.may_act_in(store_id).map_err(tonic::Status::from)?;
            Ok(caller)
        });
        return match checked {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            Err(status) => refuse_stream(status),
        };
    }
    let (access, method) = access::of(req.uri().path());
    if let Access::Staff(role) = access {
        let method = method.unwrap_or("this RPC");
        let Some(token) = bearer(&req) else {
            let message = format!(
                "{method} needs a signed-in staff member: call it with authorization: Bearer <access token> \
                 (AuthService/VerifyCode gives one)"
            );
            return refuse(&req, tonic::Status::unauthenticated(message));
        };
        return match edge.caller(token, None) {
            Ok(Caller::Staff(claims)) if claims.role < role => {
                let message = format!(
                    "{method} needs a {} or above; {} is signed in as a {}",
                    role.as_str(),
                    claims.sub,
                    claims.role.as_str()
                );
                // A signed-in staff member reaching past their role is recorded.
                let store_id = claims.store.clone().unwrap_or_default();
                let refusal = redstore_platform::Error::PermissionDenied(message);
                if let Some(trail) = edge.trail(&req, &Caller::Staff(claims)) {
                    let outcome = audit::refused(&refusal);
                    let subject = method.to_owned();
                    trail
                        .record(Entry { store_id, action: "access.refused", subject, detail: String::new(), outcome })
                        .await;
                }
                refuse(&req, refusal.into())
            }
            Ok(caller) => {
                if let Some(sink) = edge.sink() {
                    req.extensions_mut().insert(sink);
                }
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            Err(status) => refuse(&req, status),
        };
    }
    if access == Access::Open
        && let Some(sink) = edge.sink()
    {
        req.extensions_mut().insert(sink);
    }
    if access == Access::Service {
        let method = method.unwrap_or("this RPC");
        let web = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
        if web {
            let message = format!("{method} is internal to Red Store's services and not offered to browsers");
            return refuse(&req, tonic::Status::permission_denied(message));
        }
        let presented = req.headers().get(service_token::METADATA_KEY).map(HeaderValue::as_bytes);
        let message = match (&edge.token, presented) {
            (Some(token), Some(presented)) if token.matches(presented) => return next.run(req).await,
            (None, _) => {
                format!("{method} is internal: this server has no --service-token, so it refuses every caller")
            }
            (Some(_), None) => {
                format!("{method} is internal: call it with the service token (authorization: Bearer …)")
            }
            (Some(_), Some(_)) => format!("{method} is internal: the service token presented is not this deployment's"),
        };
        return refuse(&req, tonic::Status::unauthenticated(message));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(origins: &[&str], hosts: &[&str]) -> Edge {
        let options = EdgeOptions {
            cors_origins: origins.iter().map(|o| parse_origin(o).unwrap()).collect(),
            allowed_hosts: hosts.iter().map(|h| parse_host(h).unwrap()).collect(),
            ..Default::default()
        };
        let keys = TokenKeys::new(redstore_platform::access_token::SigningKey::generate().unwrap(), []);
        Edge::new(&options, Arc::new(keys), Arc::default()).unwrap()
    }

    #[test]
    fn origins_are_checked_as_browsers_send_them() {
        assert_eq!(parse_origin("HTTPS://Pos.Example.com/").unwrap(), "https://pos.example.com");
        assert_eq!(parse_origin("http://ipad.local:8080").unwrap(), "http://ipad.local:8080");
        for typo in ["pos.example.com", "ftp://pos.example.com", "https://pos.example.com/app", "*", ""] {
            let e = parse_origin(typo).unwrap_err();
            assert!(e.contains("scheme://host"), "{typo:?}: {e}");
        }
        let edge = rules(&["https://pos.example.com"], &[]);
        assert!(edge.origin_allowed("https://POS.example.com", Some("api.example.com")));
        assert!(!edge.origin_allowed("https://evil.example", Some("api.example.com")));
        assert!(!edge.origin_allowed("null", Some("api.example.com")));
        // The server's own pages: the origin is the host the request goes to.
        assert!(edge.origin_allowed("http://192.168.1.20:50051", Some("192.168.1.20:50051")));
        assert!(!edge.origin_allowed("http://192.168.1.20:8080", Some("192.168.1.20:50051")));
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_this_machine_or_configured() {
        let edge = rules(&[], &["pos.example.com"]);
        for ok in [
            "127.0.0.1:50051",
            "192.168.1.20",
            "[::1]:50051",
            "localhost:50051",
            "app.localhost",
            "POS.example.com:443",
        ] {
            assert!(edge.host_allowed(ok), "{ok}");
        }
        for refused in ["evil.example", "evil.example:50051", "pos.example.com.evil.example", "[nonsense]:1", ""] {
            assert!(!edge.host_allowed(refused), "{refused}");
        }
        assert!(rules(&[], &["*"]).host_allowed("anything.example"));
        assert!(parse_host("http://pos.example.com").is_err());
        assert!(parse_host("pos.example.com:443").is_err());
    }
}
