//! The iPad terminal (built from `web/` by `build.rs` and embedded), served at `/` on the one
//! port. The page and its assets hold no store data, so they are open to anyone: everything a
//! store has comes through the APIs, after signing in.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "$OUT_DIR/terminal"]
struct Assets;

/// Everything comes from this server; the page is never framed (a framed till could be clicked
/// through by another page), and no inline script runs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Vite names everything under `assets/` by its content, so those never change; the page itself
/// is checked on every load, so a new release reaches every terminal at its next reload.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Answers what no service claimed: the terminal's files for GET and HEAD, and for any other
/// method what tonic answers for an unknown path (a gRPC client gets UNIMPLEMENTED).
pub async fn serve(req: Request<Body>) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let status = tonic::Status::unimplemented(format!("nothing answers {} {}", req.method(), req.uri().path()));
        return status.into_http::<Body>().into_response();
    }
    let path = match req.uri().path() {
        "/" => "index.html",
        path => path.trim_start_matches('/'),
    };
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "no such page: the terminal is at /\n").into_response();
    };
    let etag = etag(&file.metadata.sha256_hash());
    let mut headers = HeaderMap::new();
    let content_type =
        HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    let cache = if path.starts_with("assets/") { IMMUTABLE } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    if req.headers().get(header::IF_NONE_MATCH) == Some(&etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if req.method() == Method::HEAD {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.data.len()));
        return (headers, Body::empty()).into_response();
    }
    (headers, Body::from(file.data)).into_response()
}

fn etag(hash: &[u8; 32]) -> HeaderValue {
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}
