//! The spans Flotilla instruments, named and attributed as OpenTelemetry's semantic
//! conventions say, so the control plane (or any collector) reads them the same way.
//!
//! Each constructor returns a `tracing` span; `tracing-opentelemetry` turns its `otel.*`
//! fields into the span's name, kind and status. Record the outcome with
//! [`record_http_status`] or [`record_error`] before the span closes.

use std::fmt::Display;

use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterFn};

use super::propagation;

/// What the OpenTelemetry layer sees: Flotilla's own spans, and warnings and errors (they
/// become span events), nothing from libraries.
pub fn only_spans() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| {
        meta.target().starts_with("flotilla")
            && (meta.is_span() && *meta.level() <= tracing::Level::INFO || *meta.level() <= tracing::Level::WARN)
    })
}

/// A request being served. `route` is the matched template (`/api/v1/orders/{id}`), the
/// span's name with the method; the caller's `traceparent` in `headers` becomes its parent.
pub fn server(method: &http::Method, route: &str, path: &str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "server",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        http.request.method = %method,
        http.route = route,
        url.path = path,
        http.response.status_code = Empty,
        flotilla.fault = Empty,
    );
    let parent = propagation::extract(headers);
    let _ = span.set_parent(parent);
    span
}

/// A gRPC call's client span, named as OpenTelemetry's RPC conventions say
/// (`package.Service/Method`), with `rpc.system = grpc` and the status code once known.
pub fn grpc_client(service: &str, path: &str) -> Span {
    let method = path.trim_start_matches('/');
    tracing::info_span!(
        "client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        peer.service = service,
        rpc.system = "grpc",
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        http.response.status_code = Empty,
    )
}

/// Records a gRPC call's status code on its span; a status the server is to blame for marks it
/// an error.
pub fn record_grpc_status(span: &Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if crate::resilience::grpc_server_failure(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// A call to another service (`peer.service`), child of the current span.
pub fn client(service: &str, method: &http::Method, path: &str) -> Span {
    tracing::info_span!(
        "client",
        otel.name = %format_args!("{method} {service}"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        peer.service = service,
        http.request.method = %method,
        url.path = path,
        http.response.status_code = Empty,
    )
}

/// An event being emitted (written to the outbox or published), child of the current span;
/// its context travels in the event's `traceparent`.
pub fn producer(topic: &str, event_type: &str, event_id: &str) -> Span {
    tracing::info_span!(
        "producer",
        otel.name = %format_args!("{event_type} publish"),
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.operation.type = "publish",
        messaging.destination.name = topic,
        messaging.message.id = event_id,
    )
}

/// An event being handled: its parent is the producer span its `traceparent` names.
pub fn consumer(topic: &str, group: &str, event_type: &str, event_id: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        "consumer",
        otel.name = %format_args!("{event_type} process"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.message.id = event_id,
        flotilla.redelivered = Empty,
    );
    if traceparent.is_some() {
        let _ = span.set_parent(propagation::from_traceparent(traceparent));
    }
    span
}

/// One step (or compensation) of a saga instance; `parent` is the `traceparent` of what
/// started the instance (empty: none), so every step joins that trace.
pub fn saga_step(saga: &str, step: &str, compensation: bool, saga_id: &str, parent: &str) -> Span {
    let span = tracing::info_span!(
        "saga step",
        otel.name = %format_args!("{saga} {}{step}", if compensation { "compensate " } else { "" }),
        otel.kind = "internal",
        otel.status_code = Empty,
        otel.status_message = Empty,
        flotilla.saga.id = saga_id,
        flotilla.saga.step = step,
        flotilla.saga.compensation = compensation,
    );
    if !parent.is_empty() {
        let _ = span.set_parent(propagation::from_traceparent(Some(parent)));
    }
    span
}

/// A database operation (`db.operation.name`, e.g. `place order`), child of the current span.
pub fn database(system: &str, operation: &str) -> Span {
    tracing::info_span!(
        "database",
        otel.name = %format_args!("{system} {operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        db.system.name = system,
        db.operation.name = operation,
    )
}

/// Records an HTTP status on a server or client span; 5xx marks it failed (4xx is the
/// caller's mistake, not the server's, as the conventions say for server spans).
pub fn record_http_status(span: &Span, status: u16) {
    // As i64: the OpenTelemetry layer records unsigned integers as text.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// Marks a span failed, saying why.
pub fn record_error(span: &Span, error: impl Display) {
    span.record("otel.status_code", "error");
    span.record("otel.status_message", tracing::field::display(error));
}

/// Marks a server span whose request a fault rule delayed or failed on purpose
/// (`delay 200ms`, `abort 503`), so a trace tells an injected fault from a real one.
pub fn record_fault(span: &Span, fault: &str) {
    span.record("flotilla.fault", fault);
}
