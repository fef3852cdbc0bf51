//! Every gRPC call observed once, inside gRPC-web's translation (so browser calls count alike):
//! a server span after OpenTelemetry's RPC conventions, child of the caller's `traceparent`, and
//! `redstore_rpc_requests_total` / `redstore_rpc_duration_seconds` by service, method and code.
//! Health checks are neither traced nor counted: probes would drown everything else.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::body::Body as TonicBody;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::server::NamedService;
use tracing::{Instrument as _, Span};

/// Wraps a tonic service so that its calls are observed.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S> Observed<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for Observed<S>
where
    S: tower::Service<Request<B>, Response = Response<TonicBody>> + NamedService + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<TonicBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was made ready serves this call; a fresh clone waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let method = method_name(S::NAME, req.uri().path());
        let span = tracing::info_span!(
            target: "redstore::trace",
            "grpc",
            otel.name = %format_args!("{}/{}", S::NAME, method),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = S::NAME,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        redstore_platform::trace::set_parent_from_headers(&span, req.headers());
        let started = Instant::now();
        Box::pin(
            async move {
                let response = inner.call(req).await?;
                let (parts, body) = response.into_parts();
                let status = grpc_status(&parts.headers);
                let body = ObservedBody {
                    inner: body,
                    call: Some(Call { service: S::NAME, method, started, span: Span::current(), status }),
                };
                Ok(Response::from_parts(parts, TonicBody::new(body)))
            }
            .instrument(span),
        )
    }
}

/// The response body of an observed call: the call ends when its trailers are sent (or the body
/// is dropped unfinished: the client went away).
struct ObservedBody {
    inner: TonicBody,
    call: Option<Call>,
}

struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
    span: Span,
    /// Known from the headers when the answer is trailers-only.
    status: Option<tonic::Code>,
}

impl Call {
    fn end(self, status: tonic::Code) {
        let code = code_name(status);
        metrics::counter!("redstore_rpc_requests_total", "service" => self.service, "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("redstore_rpc_duration_seconds", "service" => self.service, "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
        self.span.record("rpc.grpc.status_code", status as i32);
        if redstore_platform::metrics::server_fault(status) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let status = call.status.unwrap_or(tonic::Code::Cancelled);
            call.end(status);
        }
    }
}

impl Body for ObservedBody {
    type Data = <TonicBody as Body>::Data;
    type Error = <TonicBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(|t| grpc_status(t).unwrap_or(tonic::Code::Unknown)),
            Some(Err(_)) => Some(tonic::Code::Unknown),
            None => Some(tonic::Code::Ok),
        };
        if let Some(trailer_status) = ended
            && let Some(call) = self.call.take()
        {
            let status = call.status.unwrap_or(trailer_status);
            call.end(status);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

/// The code's name as gRPC spells it (`NOT_FOUND`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The method a path names, when `service` has it; "unknown" otherwise, so that made-up paths
/// cannot grow the metrics without bound.
fn method_name(service: &str, path: &str) -> &'static str {
    let path = path.strip_prefix('/').unwrap_or(path);
    if !path.starts_with(service) {
        return "unknown";
    }
    KNOWN.get_or_init(known_methods).get(path).copied().unwrap_or("unknown")
}

static KNOWN: OnceLock<HashMap<String, &'static str>> = OnceLock::new();

/// `package.Service/Method` → `Method`, for every method the served protos declare.
fn known_methods() -> HashMap<String, &'static str> {
    let sets = [redstore_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
    let mut known = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                    known.insert(format!("{}.{}/{}", file.package(), service.name(), name), name);
                }
            }
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_method_is_named_and_a_made_up_one_is_not() {
        let sales = "redstore.sales.v1.SalesService";
        assert_eq!(method_name(sales, "/redstore.sales.v1.SalesService/Checkout"), "Checkout");
        assert_eq!(method_name(sales, "/redstore.sales.v1.SalesService/Xyz123"), "unknown");
        assert_eq!(method_name(sales, "/redstore.inventory.v1.InventoryService/ListStock"), "unknown");
    }
}
