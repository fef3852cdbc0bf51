//! Distributed tracing: OpenTelemetry spans made from `tracing` spans, exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, and W3C trace context carried
//! across every hop (gRPC metadata, the event envelope, Kafka headers, Redis).
//!
//! Spans meant for traces use the target [`TARGET`]; the human and JSON logs leave them out, and
//! without an exporter nothing subscribes to them, so they cost nothing.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of the spans that make up traces (`tracing::info_span!(target: "redstore::trace", …)`).
pub const TARGET: &str = "redstore::trace";

/// The W3C header that carries a span's context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether this process exports traces: without, there is no context to carry, and the helpers
/// below (and whoever carries a caller's span to another task) do nothing.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the standard variables ask for traces to be exported.
pub fn export_requested() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter_none = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && !exporter_none && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The exporter and provider, built from the standard `OTEL_*` variables (endpoint, headers,
/// timeout, sampler, batch sizes, resource); `default_service` names the service unless
/// `OTEL_SERVICE_NAME` does. Must run inside the tokio runtime (the gRPC exporter needs it).
pub fn provider(default_service: &str) -> anyhow::Result<SdkTracerProvider> {
    match std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Ok(protocol) if protocol != "grpc" => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?}: Red Store exports traces over OTLP/gRPC only; set it to \"grpc\" \
             (the collector's port 4317)"
        ),
        _ => {}
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot make the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service.to_owned());
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans for `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("redstore")).with_tracked_inactivity(false)
}

/// The current span, for work another task or thread does on the caller's behalf (a batch, the
/// database writer) to run in; none while nothing is exported, when it would only cost.
pub fn span_to_carry() -> Span {
    if exporting() { Span::current() } else { Span::none() }
}

/// The current span's context as a W3C `traceparent`; empty when nothing is traced.
pub fn current_traceparent() -> String {
    traceparent_of(&Span::current())
}

/// `span`'s context as a W3C `traceparent`; empty when it is not traced.
pub fn traceparent_of(span: &Span) -> String {
    if !exporting() || span.is_disabled() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the operation a W3C `traceparent` names (nothing when it is empty or
/// malformed: the span starts a trace of its own).
pub fn set_parent(span: &Span, traceparent: &str) {
    if !exporting() || traceparent.is_empty() || span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
}

/// Makes `span` a child of the operation the headers' `traceparent` names.
pub fn set_parent_from_headers(span: &Span, headers: &tonic::codegen::http::HeaderMap) {
    if !exporting() || span.is_disabled() {
        return;
    }
    let _ = span.set_parent(TraceContextPropagator::new().extract(&HeaderExtractor(headers)));
}

/// Adds the current span's `traceparent` to outgoing gRPC metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let span = Span::current();
    if !exporting() || span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut MetadataInjector(metadata));
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}
