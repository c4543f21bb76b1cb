//! The telemetry routes: the OTLP/HTTP trace receiver (`POST /v1/traces`, token-guarded like
//! every write), trace and dependency queries (open, like every read), Prometheus HTTP
//! service discovery over the registry (`GET /v1/sd/prometheus`) and the control plane's own
//! metrics (`GET /metrics`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::http::{Json, Query};
use flotilla::utoipa::{self, IntoParams};
use flotilla_api::telemetry::{DependencyGraph, ScrapeTargetGroup, Trace, TraceList, TraceQuery};
use flotilla_api::Problem;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde::Deserialize;

use super::{metrics, Ingested, TraceError, DEFAULT_LOOKBACK};
use crate::api::{forbidden, Principal};
use crate::ControlState;

/// The largest export request taken (413 beyond): a batch exporter's default batch (512
/// spans) is far below it, a runaway one is stopped before it costs memory.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// OTLP/HTTP's binary encoding.
const PROTOBUF: &str = "application/x-protobuf";
/// OTLP/HTTP's JSON encoding.
const JSON: &str = "application/json";

/// The telemetry routes, to merge into the control plane's router.
pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route(
            "/v1/traces",
            post(export).get(list).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/v1/traces/{trace_id}", get(trace))
        .route("/v1/dependencies", get(dependencies))
        .route("/v1/sd/prometheus", get(service_discovery))
        .route("/metrics", get(render_metrics))
}

fn problem(err: TraceError) -> Problem {
    match err {
        TraceError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        TraceError::Ambiguous(_) => {
            Problem::new(409, "ambiguous-trace-id", "Ambiguous trace id").with_detail(err.to_string())
        }
        TraceError::Database(_) | TraceError::Corrupt(_) | TraceError::Config(_) => {
            tracing::error!(error = %err, "trace store failed");
            Problem::internal()
        }
    }
}

/// How an export request is encoded, and so its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn unsupported(detail: String) -> Problem {
    Problem::new(415, "unsupported-media-type", "Unsupported media type").with_detail(detail)
}

/// The encoding the headers declare, or 415 naming what is not understood.
fn encoding(headers: &HeaderMap) -> Result<Encoding, Problem> {
    if let Some(coding) = headers.get(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("(not text)").trim();
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(unsupported(format!(
                "`Content-Encoding: {coding}` is not supported; send the body uncompressed"
            )));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        "" => Err(unsupported(format!(
            "no Content-Type; OTLP/HTTP is `{PROTOBUF}` or `{JSON}`"
        ))),
        _ => Err(unsupported(format!(
            "`Content-Type: {content_type}` is not OTLP/HTTP; send `{PROTOBUF}` or `{JSON}`"
        ))),
    }
}

fn malformed(detail: String) -> Problem {
    Problem::new(400, "malformed-otlp", "Malformed OTLP request").with_detail(detail)
}

/// `POST /v1/traces`: an OTLP/HTTP export. Answered in the request's encoding, after the
/// spans are stored; spans that were malformed are counted in `partial_success`.
#[utoipa::path(post, path = "/v1/traces", operation_id = "exportTraces", tag = "telemetry",
    security(("bearer" = [])),
    request_body(
        description = "An OTLP `ExportTraceServiceRequest` (OTLP/HTTP), uncompressed: protobuf or its JSON mapping",
        content(("application/x-protobuf"), ("application/json"))),
    responses(
        (status = 200,
            description = "An OTLP `ExportTraceServiceResponse` in the request's encoding; rejected spans are \
                counted in `partial_success` (`{}` in JSON when none were)",
            content(("application/x-protobuf"), ("application/json"))),
        (status = 400, description = "The body is not an `ExportTraceServiceRequest`",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A read-only credential sends no spans",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 8 MiB: send smaller batches",
            body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/x-protobuf` or `application/json`, or compressed",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The spans could not be stored: send them again (OTLP exporters retry)",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn export(who: Principal, State(state): State<Arc<ControlState>>, request: Request) -> Response {
    if !who.may_export() {
        return forbidden("a read-only credential sends no spans").into_response();
    }
    match receive(&state, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn receive(state: &ControlState, request: Request) -> Result<Response, Problem> {
    let encoding = encoding(request.headers())?;
    let body = Bytes::from_request(request, &()).await.map_err(|rejection| {
        let status = rejection.status().as_u16();
        if status == 413 {
            Problem::new(413, "body-too-large", "Request body too large").with_detail(format!(
                "an export request may be at most {MAX_BODY} bytes; send smaller batches"
            ))
        } else {
            Problem::new(status, "unreadable-body", "Request body could not be read").with_detail(rejection.body_text())
        }
    })?;
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| malformed(format!("the body is not a protobuf ExportTraceServiceRequest: {e}")))?,
        Encoding::Json => serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map_err(|e| malformed(format!("the body is not an OTLP JSON ExportTraceServiceRequest: {e}")))?,
    };
    let ingested = state.traces.ingest(request).await.map_err(|err| {
        tracing::error!(error = %err, "storing spans failed");
        // OTLP exporters retry a 503 (with backoff); the spans are not lost yet.
        Problem::new(503, "trace-store-unavailable", "Trace store unavailable")
            .with_detail("the spans could not be stored; send them again")
    })?;
    if let Some(message) = &ingested.message {
        tracing::debug!(rejected = ingested.rejected, %message, "spans rejected");
    }
    Ok(answer(encoding, &ingested))
}

/// The `ExportTraceServiceResponse` for what was ingested, encoded as the request was.
fn answer(encoding: Encoding, ingested: &Ingested) -> Response {
    let response = ExportTraceServiceResponse {
        partial_success: (ingested.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(ingested.rejected).unwrap_or(i64::MAX),
            error_message: ingested.message.clone().unwrap_or_default(),
        }),
    };
    let (content_type, body) = match encoding {
        Encoding::Protobuf => (PROTOBUF, response.encode_to_vec()),
        // Full success is `{}`: an unset message is left out, as protobuf's JSON mapping does.
        Encoding::Json => (
            JSON,
            match response.partial_success {
                None => b"{}".to_vec(),
                Some(_) => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            },
        ),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Refuses a service: what the system observed (span attributes hold order and payment ids)
/// is for the operator and readers.
fn observer(who: &Principal) -> Result<(), Problem> {
    if who.may_observe() {
        Ok(())
    } else {
        Err(forbidden(
            "only the operator and readers read traces, dependencies and service discovery",
        ))
    }
}

/// `GET /v1/traces/{trace_id}`: every stored span of one trace.
#[utoipa::path(get, path = "/v1/traces/{trace_id}", operation_id = "getTrace", tag = "telemetry",
    security(("bearer" = [])),
    params(("trace_id" = String, Path, description = "32 hex digits, or the first 8 or more of them")),
    responses(
        (status = 200, description = "The trace, its spans earliest first", body = Trace),
        (status = 400, description = "Not a trace id",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator and readers read traces",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No span of the trace is stored (never received, or pruned)",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The shortened id names more than one trace",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn trace(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(trace_id): Path<String>,
) -> Result<Response, Problem> {
    observer(&who)?;
    match state.traces.trace(&trace_id).await.map_err(problem)? {
        Some(trace) => Ok(Json(trace).into_response()),
        None => Err(Problem::not_found(format!(
            "no span of trace `{trace_id}` is stored (never received, or pruned)"
        ))),
    }
}

/// The query of `GET /v1/traces`; an unknown parameter is refused rather than ignored, so a
/// misspelt filter does not quietly match everything.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// A service with a span in the trace.
    service: Option<String>,
    /// An operation (span name) in the trace.
    operation: Option<String>,
    /// Only traces at least this long.
    min_duration_ms: Option<u64>,
    /// Only traces with an error span.
    errors: Option<bool>,
    /// At most this many (default 20, at most 1000).
    limit: Option<u32>,
    /// Only traces that started at or after this time (ms since the Unix epoch).
    since_ms: Option<u64>,
    /// Only traces that started before this time (ms since the Unix epoch).
    until_ms: Option<u64>,
}

/// `GET /v1/traces?service=&operation=&min_duration_ms=&errors=&since_ms=&until_ms=&limit=`.
#[utoipa::path(get, path = "/v1/traces", operation_id = "listTraces", tag = "telemetry",
    security(("bearer" = [])), params(ListParams),
    responses(
        (status = 200, description = "The newest matching traces, newest first", body = TraceList),
        (status = 400, description = "A bad or unknown parameter",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator and readers read traces",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Query(q): Query<ListParams>,
) -> Result<Response, Problem> {
    observer(&who)?;
    let query = TraceQuery {
        service: q.service,
        operation: q.operation,
        min_duration_ms: q.min_duration_ms,
        errors: q.errors.unwrap_or(false),
        limit: q.limit,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    Ok(Json(state.traces.list(&query).await.map_err(problem)?).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DependencyParams {
    /// The window of spans the graph is derived from (default one hour).
    #[param(minimum = 1)]
    lookback_seconds: Option<u64>,
}

/// `GET /v1/dependencies?lookback_seconds=`.
#[utoipa::path(get, path = "/v1/dependencies", operation_id = "dependencies", tag = "telemetry",
    security(("bearer" = [])), params(DependencyParams),
    responses(
        (status = 200, description = "The service dependency graph", body = DependencyGraph),
        (status = 400, description = "A bad or unknown parameter",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator and readers read dependencies",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn dependencies(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Query(q): Query<DependencyParams>,
) -> Result<Response, Problem> {
    observer(&who)?;
    let lookback = match q.lookback_seconds {
        None => DEFAULT_LOOKBACK,
        Some(0) => return Err(Problem::invalid_field("lookback_seconds", "must be at least 1")),
        Some(seconds) => Duration::from_secs(seconds),
    };
    Ok(Json(state.traces.dependencies(lookback).await.map_err(problem)?).into_response())
}

/// `GET /v1/sd/prometheus`: Prometheus HTTP service discovery. One target group per
/// registered instance (its address, and labels `service`, `instance` and
/// `__metrics_path__`), and one for the control plane itself when it knows its address.
#[utoipa::path(get, path = "/v1/sd/prometheus", operation_id = "prometheusTargets", tag = "telemetry",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus HTTP service discovery's target groups", body = [ScrapeTargetGroup]),
        (status = 403, description = "Only the operator and readers read service discovery",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn service_discovery(
    who: Principal,
    State(state): State<Arc<ControlState>>,
) -> Result<Json<Vec<ScrapeTargetGroup>>, Problem> {
    observer(&who)?;
    Ok(Json(scrape_targets(&state)))
}

/// Where an instance serves its metrics: its address and `/metrics`, unless it says otherwise
/// (the gateway: `/-/metrics` on its admin listener).
pub(crate) fn metrics_target(instance: &flotilla_api::Instance) -> (&str, &str) {
    let path = instance
        .metadata
        .get(flotilla_api::registry::meta::METRICS_PATH)
        .filter(|p| p.starts_with('/'))
        .map_or("/metrics", String::as_str);
    let address = instance
        .metadata
        .get(flotilla_api::registry::meta::METRICS_ADDRESS)
        .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
        .unwrap_or(&instance.address);
    (address, path)
}

/// The target groups `GET /v1/sd/prometheus` answers.
pub fn scrape_targets(state: &ControlState) -> Vec<ScrapeTargetGroup> {
    let group = |address: String, service: &str, instance: &str, path: &str| ScrapeTargetGroup {
        targets: vec![address],
        labels: BTreeMap::from([
            ("service".to_owned(), service.to_owned()),
            ("instance".to_owned(), instance.to_owned()),
            ("__metrics_path__".to_owned(), path.to_owned()),
        ]),
    };
    let mut groups: Vec<ScrapeTargetGroup> = state
        .registry
        .list(None)
        .instances
        .into_iter()
        .map(|i| {
            let (address, path) = metrics_target(&i);
            group(address.to_owned(), &i.service, &i.instance_id, path)
        })
        .collect();
    if let Some(addr) = state.scrape_address() {
        groups.push(group(addr.to_string(), "control", "control", "/metrics"));
    }
    groups
}

/// `GET /metrics`: the control plane's own metrics, in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "telemetry",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4"),
        (status = 403, description = "Only the operator and readers read metrics",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn render_metrics(who: Principal, State(state): State<Arc<ControlState>>) -> Result<impl IntoResponse, Problem> {
    observer(&who)?;
    let store_bytes = match state.traces.size_bytes().await {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            tracing::warn!(error = %err, "reading the trace store's size failed");
            None
        }
    };
    let snapshot = metrics::Snapshot {
        services: state.registry.services(),
        traces: state.traces.stats(),
        max_spans: state.traces.config().max_spans,
        store_bytes,
    };
    let mut text = metrics::render(&snapshot);
    text.push_str(&flotilla::telemetry::metrics::render_process());
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}
