//! A request message over the size limit is RESOURCE_EXHAUSTED, gRPC's code for it, not the
//! OUT_OF_RANGE tonic's decoder answers.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The gRPC code tonic's decoder gives a message over `max_decoding_message_size`. No handler of
/// this server answers OUT_OF_RANGE, so every one in a response's headers comes from there.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Middleware: rewrites an OUT_OF_RANGE status in a response's headers (a request refused before
/// its handler ran: a trailers-only response, also over gRPC-web) to RESOURCE_EXHAUSTED.
pub async fn as_resource_exhausted(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if response.headers().get("grpc-status").is_some_and(|v| v == OUT_OF_RANGE) {
        response.headers_mut().insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}
