//! Telemetry's wire types: spans as the control plane stores and answers them (received as
//! OTLP, answered as these), trace lists, the service dependency graph, Prometheus HTTP
//! service discovery, and the JSON log line every Flotilla process writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Standard OpenTelemetry environment variables Flotilla honours.
pub mod otel_env {
    /// Base URL of an OTLP/HTTP collector; traces go to `<it>/v1/traces`.
    pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// Full URL for traces, taking precedence over [`ENDPOINT`].
    pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    /// Extra headers for the exporter, `k=v,k2=v2`.
    pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    /// The sampling ratio for new traces, `0.0..=1.0` (parent-based otherwise).
    pub const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    /// `none` turns trace export off.
    pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
}

/// Selects the log format: `json` (one [`LogLine`] per line; what the supervisor asks for)
/// or `text`. Unset: text on a terminal, JSON otherwise.
pub const LOG_FORMAT_ENV: &str = "FLOTILLA_LOG_FORMAT";

/// What a span stands for, as OTLP's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// Work inside a process (a saga step).
    #[default]
    Internal,
    /// Handling a request.
    Server,
    /// Making a request (HTTP call, database statement).
    Client,
    /// Emitting an event.
    Producer,
    /// Handling an event.
    Consumer,
}

/// A span's outcome, as OTLP's `Status.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SpanStatus {
    /// Not set by the instrumentation.
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed.
    Error,
}

/// One span as stored: the fields a trace view needs, with attribute values as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; none for a trace's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The emitting process's `service.name`.
    pub service: String,
    /// The emitting process's `service.instance.id`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The operation (`GET /api/v1/orders/{id}`).
    pub name: String,
    /// What the span stands for.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Outcome.
    #[serde(default)]
    pub status: SpanStatus,
    /// Why it failed, when it did and said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// The span's attributes (`http.route`, `http.response.status_code`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Timed events recorded inside the span.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    /// Spans of other traces (or of this one) this span is causally tied to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SpanLink>,
}

impl Span {
    /// How long the span lasted, in nanoseconds.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// A timed event inside a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpanEvent {
    /// What happened.
    pub name: String,
    /// When, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Its attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// A link to another span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpanLink {
    /// The linked span's trace.
    pub trace_id: String,
    /// The linked span.
    pub span_id: String,
}

/// `GET /v1/traces/{trace_id}`: every stored span of one trace, ordered by start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trace {
    /// The trace.
    pub trace_id: String,
    /// Its spans, earliest first.
    pub spans: Vec<Span>,
}

/// One line of `GET /v1/traces`: a trace at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: String,
    /// Service of the root span (or of the earliest span when the root is not stored).
    pub root_service: String,
    /// Operation of that span.
    pub root_name: String,
    /// Earliest span start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Latest span end minus earliest start.
    pub duration_nanos: u64,
    /// Spans stored for it.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Every service with a span in it, sorted.
    pub services: Vec<String>,
}

/// `GET /v1/traces?service=&operation=&min_duration_ms=&errors=&since_ms=&until_ms=&limit=`:
/// the newest traces that match, newest first. A trace matches `service`/`operation` when any
/// of its spans does; `min_duration_ms`, `errors` and the time range apply to the trace as a
/// whole (its start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceQuery {
    /// A service with a span in the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// An operation (span name) in the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Only traces at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration_ms: Option<u64>,
    /// Only traces with an error span.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub errors: bool,
    /// At most this many (default 20, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only traces that started at or after this time (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Only traces that started before this time (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// The answer to a [`TraceQuery`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceList {
    /// Newest first.
    pub traces: Vec<TraceSummary>,
}

/// How a dependency was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// A request: a server span whose parent is in another service, or a client span naming
    /// a `peer.service` whose server span was not stored.
    Http,
    /// An event: a consumer span whose parent is a producer span of another service.
    Event,
}

/// One edge of the service dependency graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dependency {
    /// Who called (or emitted).
    pub caller: String,
    /// Who was called (or consumed).
    pub callee: String,
    /// By request or by event.
    pub kind: DependencyKind,
    /// Calls seen in the window.
    pub calls: u64,
    /// Of them, with status error (the callee's span).
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Median duration of the callee's spans, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// `GET /v1/dependencies?lookback_seconds=`: the graph derived from the spans stored in the
/// window (default one hour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyGraph {
    /// Every service with a span in the window, and every `peer.service` an edge names (a
    /// callee without spans of its own is still a node), sorted.
    pub services: Vec<String>,
    /// Edges, sorted by caller then callee.
    pub edges: Vec<Dependency>,
}

/// One target group of Prometheus HTTP service discovery (`GET /v1/sd/prometheus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrapeTargetGroup {
    /// `host:port` of each instance to scrape.
    pub targets: Vec<String>,
    /// Labels for every target (`service`, `instance`, `__metrics_path__`).
    pub labels: BTreeMap<String, String>,
}

/// One line of a Flotilla process's JSON log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 with microseconds, UTC (`2026-11-30T22:01:02.123456Z`).
    pub timestamp: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The process's service (`orders`, `gateway`, `control`).
    pub service: String,
    /// The supervisor's name for the process (`orders-1`), when supervised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The trace of the request or event being handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The span within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The message.
    pub message: String,
    /// The module that logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The event's other fields.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
