use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use flotilla_api::telemetry::{ScrapeTargetGroup, SpanEvent, SpanLink};
use flotilla_api::Registration;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use prost::Message as _;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::{ControlConfig, ControlState, RegistryConfig, Storage};

const TOKEN: &str = "trace-token";
/// A fixed "now" for the tests that need one (2023-11-14), in nanoseconds.
const BASE: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

// ---- building spans ----

fn trace_bytes(n: u8) -> Vec<u8> {
    let mut id = vec![0x5b; 16];
    id[15] = n;
    id
}

fn span_bytes(n: u8) -> Vec<u8> {
    let mut id = vec![0xe1; 8];
    id[7] = n;
    id
}

fn trace_hex(n: u8) -> String {
    otlp::hex(&trace_bytes(n))
}

fn span_hex(n: u8) -> String {
    otlp::hex(&span_bytes(n))
}

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(service: Option<&str>, instance: Option<&str>, spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
    let mut attributes = Vec::new();
    if let Some(service) = service {
        attributes.push(kv("service.name", V::StringValue(service.into())));
    }
    if let Some(instance) = instance {
        attributes.push(kv("service.instance.id", V::StringValue(instance.into())));
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn otlp_span(trace: u8, id: u8, name: &str) -> OtlpSpan {
    OtlpSpan {
        trace_id: trace_bytes(trace),
        span_id: span_bytes(id),
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: BASE,
        end_time_unix_nano: BASE + 5 * MS,
        ..Default::default()
    }
}

/// A stored span, to adjust with the setters below.
fn sp(trace: u8, id: u8, service: &str, kind: SpanKind) -> Span {
    Span {
        trace_id: trace_hex(trace),
        span_id: span_hex(id),
        parent_span_id: None,
        service: service.into(),
        instance: None,
        name: format!("op-{id}"),
        kind,
        start_unix_nano: BASE,
        end_unix_nano: BASE + MS,
        status: SpanStatus::Unset,
        status_message: None,
        attributes: BTreeMap::new(),
        events: Vec::new(),
        links: Vec::new(),
    }
}

trait Adjust {
    fn parent(self, parent: u8) -> Self;
    fn at(self, start_ms: u64, duration_ms: u64) -> Self;
    fn named(self, name: &str) -> Self;
    fn failed(self) -> Self;
    fn peer(self, service: &str) -> Self;
}

impl Adjust for Span {
    fn parent(mut self, parent: u8) -> Self {
        self.parent_span_id = Some(span_hex(parent));
        self
    }
    fn at(mut self, start_ms: u64, duration_ms: u64) -> Self {
        self.start_unix_nano = BASE + start_ms * MS;
        self.end_unix_nano = self.start_unix_nano + duration_ms * MS;
        self
    }
    fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    fn failed(mut self) -> Self {
        self.status = SpanStatus::Error;
        self
    }
    fn peer(mut self, service: &str) -> Self {
        self.attributes.insert("peer.service".into(), json!(service));
        self
    }
}

async fn store() -> TraceStore {
    TraceStore::in_memory(TraceStoreConfig::default()).await.unwrap()
}

/// Which database a test's spans are in: the suite runs on both.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

type Guard = Option<crate::store::test_postgres::TestPostgres>;

impl Backend {
    /// A store with `config`, and on PostgreSQL the database dropped with the guard.
    async fn open(self, config: TraceStoreConfig) -> (TraceStore, Guard) {
        match self {
            Backend::Sqlite => (TraceStore::in_memory(config).await.unwrap(), None),
            Backend::Postgres => {
                let db = crate::store::test_postgres::TestPostgres::create("traces").await;
                (TraceStore::on_postgres(&db.url, config).await.unwrap(), Some(db))
            }
        }
    }

    /// The control plane's router over such a store.
    async fn app(self) -> (Router, Arc<ControlState>, Guard) {
        let (store, guard) = self.open(TraceStoreConfig::default()).await;
        let (app, state) = app_over(store).await;
        (app, state, guard)
    }
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod on_postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

on_both_databases!(
    a_protobuf_export_is_stored_and_answered_in_protobuf,
    an_otlp_json_export_is_stored_and_answered_in_json,
    malformed_spans_are_counted_in_partial_success_and_the_rest_are_kept,
    a_span_sent_again_replaces_its_copy,
    a_trace_comes_ordered_by_start_and_bad_or_unknown_ids_are_problems,
    a_trace_is_found_by_the_first_eight_hex_digits_the_logs_show,
    trace_lists_are_newest_first_and_filtered,
    bad_list_parameters_are_named,
    the_dependency_graph_has_http_edges_from_parents_and_peer_services_and_event_edges,
    dependency_error_rate_and_percentiles_come_from_the_callee_spans,
    the_dependency_endpoint_checks_its_window,
    pruning_keeps_at_most_max_spans_the_newest,
    pruning_drops_spans_older_than_max_age,
    the_pruning_task_acts_as_soon_as_an_insert_passes_the_bound
);

// ---- calling the router ----

async fn app_over(traces: TraceStore) -> (Router, Arc<ControlState>) {
    let (_closing, rx) = watch::channel(false);
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    let storage = Storage {
        traces,
        ..Storage::in_memory().await.unwrap()
    };
    let state = Arc::new(ControlState::new(config, storage, rx).listening_on("0.0.0.0:47070".parse().unwrap()));
    (crate::api::router(state.clone()), state)
}

async fn app() -> (Router, Arc<ControlState>) {
    app_over(store().await).await
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn export(content_type: &str, body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/v1/traces").header("content-type", content_type);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(body.into()).unwrap()
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let request = Request::get(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app, request).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post_proto(app: &Router, request: &ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let (status, headers, body) = send(
        app,
        export("application/x-protobuf", request.encode_to_vec(), Some(TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/x-protobuf");
    ExportTraceServiceResponse::decode(body).unwrap()
}

// ---- ingest ----

async fn a_protobuf_export_is_stored_and_answered_in_protobuf(backend: Backend) {
    let (app, _, _db) = backend.app().await;
    let mut otlp = otlp_span(1, 2, "GET /api/v1/orders/{id}");
    otlp.parent_span_id = span_bytes(1);
    otlp.attributes = vec![
        kv("http.route", V::StringValue("/api/v1/orders/{id}".into())),
        kv("http.response.status_code", V::IntValue(503)),
        kv("retry", V::BoolValue(true)),
        kv("ratio", V::DoubleValue(0.25)),
        kv("nan", V::DoubleValue(f64::NAN)),
        kv(
            "tags",
            V::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(V::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(V::IntValue(2)),
                    },
                ],
            }),
        ),
        kv(
            "nested",
            V::KvlistValue(KeyValueList {
                values: vec![kv("inner", V::BoolValue(false))],
            }),
        ),
        kv("raw", V::BytesValue(vec![0, 1, 2, 255])),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..Default::default()
        },
    ];
    otlp.events = vec![span::Event {
        time_unix_nano: BASE + MS,
        name: "retrying".into(),
        attributes: vec![kv("attempt", V::IntValue(2))],
        ..Default::default()
    }];
    otlp.links = vec![span::Link {
        trace_id: trace_bytes(9),
        span_id: span_bytes(9),
        ..Default::default()
    }];
    otlp.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "payments unreachable".into(),
    });
    let answer = post_proto(&app, &request(Some("orders"), Some("orders-1-ab12"), vec![otlp])).await;
    assert_eq!(answer.partial_success, None, "everything was taken");

    let (status, trace) = get(&app, &format!("/v1/traces/{}", trace_hex(1))).await;
    assert_eq!(status, StatusCode::OK);
    let trace: Trace = serde_json::from_value(trace).unwrap();
    let expected = Span {
        trace_id: trace_hex(1),
        span_id: span_hex(2),
        parent_span_id: Some(span_hex(1)),
        service: "orders".into(),
        instance: Some("orders-1-ab12".into()),
        name: "GET /api/v1/orders/{id}".into(),
        kind: SpanKind::Server,
        start_unix_nano: BASE,
        end_unix_nano: BASE + 5 * MS,
        status: SpanStatus::Error,
        status_message: Some("payments unreachable".into()),
        attributes: BTreeMap::from([
            ("http.route".to_owned(), json!("/api/v1/orders/{id}")),
            ("http.response.status_code".to_owned(), json!(503)),
            ("retry".to_owned(), json!(true)),
            ("ratio".to_owned(), json!(0.25)),
            ("nan".to_owned(), json!("NaN")),
            ("tags".to_owned(), json!(["a", 2])),
            ("nested".to_owned(), json!({"inner": false})),
            ("raw".to_owned(), json!("AAEC/w==")),
            ("empty".to_owned(), Value::Null),
        ]),
        events: vec![SpanEvent {
            name: "retrying".into(),
            time_unix_nano: BASE + MS,
            attributes: BTreeMap::from([("attempt".to_owned(), json!(2))]),
        }],
        links: vec![SpanLink {
            trace_id: trace_hex(9),
            span_id: span_hex(9),
        }],
    };
    assert_eq!(trace.spans, vec![expected]);
}

/// The example of the OTLP specification (`examples/trace.json` in opentelemetry-proto), as a
/// sender writes it: hex ids (here in capitals), 64-bit integers as strings, enums as numbers.
const SPEC_EXAMPLE: &str = r#"{
  "resourceSpans": [{
    "resource": {
      "attributes": [{ "key": "service.name", "value": { "stringValue": "my.service" } }]
    },
    "scopeSpans": [{
      "scope": {
        "name": "my.library", "version": "1.0.0",
        "attributes": [{ "key": "my.scope.attribute", "value": { "stringValue": "some scope attribute" } }]
      },
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 2,
        "attributes": [
          { "key": "my.span.attr", "value": { "stringValue": "some value" } },
          { "key": "retries", "value": { "intValue": "3" } }
        ],
        "status": { "code": 2, "message": "boom" }
      }]
    }]
  }]
}"#;

async fn an_otlp_json_export_is_stored_and_answered_in_json(backend: Backend) {
    let (app, _, _db) = backend.app().await;
    let (status, headers, body) = send(&app, export("application/json", SPEC_EXAMPLE, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({}));

    let (status, trace) = get(&app, "/v1/traces/5b8efff798038103d269b633813fc60c").await;
    assert_eq!(status, StatusCode::OK);
    let span = &trace["spans"][0];
    assert_eq!(span["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(span["span_id"], "eee19b7ec3c1b174");
    assert_eq!(span["parent_span_id"], "eee19b7ec3c1b173");
    assert_eq!(span["service"], "my.service");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["start_unix_nano"], 1_544_712_660_000_000_000u64);
    assert_eq!(span["end_unix_nano"], 1_544_712_661_000_000_000u64);
    assert_eq!(span["status"], "error");
    assert_eq!(span["status_message"], "boom");
    assert_eq!(span["attributes"], json!({"my.span.attr": "some value", "retries": 3}));
    // Upper-case ids are found too.
    let (status, _) = get(&app, "/v1/traces/5B8EFFF798038103D269B633813FC60C").await;
    assert_eq!(status, StatusCode::OK);
}

async fn malformed_spans_are_counted_in_partial_success_and_the_rest_are_kept(backend: Backend) {
    let (app, state, _db) = backend.app().await;
    let mut short = otlp_span(1, 3, "short trace id");
    short.trace_id = vec![1; 8];
    let mut backwards = otlp_span(1, 4, "ends before it starts");
    backwards.end_time_unix_nano = BASE - 1;
    let request = request(None, None, vec![otlp_span(1, 2, "fine"), short, backwards]);

    let answer = post_proto(&app, &request).await;
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("trace_id is 8 bytes, not 16")
            && partial.error_message.contains("ends before it starts"),
        "{}",
        partial.error_message
    );

    // The same in JSON: the answer is JSON, with the same counts.
    let (status, headers, body) = send(
        &app,
        export("application/json", serde_json::to_vec(&request).unwrap(), Some(TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 2);

    let (_, trace) = get(&app, &format!("/v1/traces/{}", trace_hex(1))).await;
    assert_eq!(trace["spans"].as_array().unwrap().len(), 1);
    assert_eq!(trace["spans"][0]["service"], otlp::UNKNOWN_SERVICE);
    let stats = state.traces.stats();
    assert_eq!(
        (stats.received, stats.rejected, stats.stored, stats.spans),
        (6, 4, 2, 1)
    );
}

#[tokio::test]
async fn exports_without_the_token_in_another_type_or_malformed_are_refused() {
    let (app, state) = app().await;
    let body = request(Some("orders"), None, vec![otlp_span(1, 1, "x")]).encode_to_vec();

    let (status, headers, _) = send(&app, export("application/x-protobuf", body.clone(), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, _, _) = send(&app, export("application/x-protobuf", body.clone(), Some("wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, headers, problem) = send(&app, export("text/plain", body.clone(), Some(TOKEN))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("text/plain"), "{problem}");

    let mut gzipped = export("application/x-protobuf", body.clone(), Some(TOKEN));
    gzipped
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let (status, _, problem) = send(&app, gzipped).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&problem).contains("gzip"));

    let (status, _, problem) = send(
        &app,
        export("application/x-protobuf", &b"\xff\xff\xff"[..], Some(TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(problem["type"], "urn:flotilla:problem:malformed-otlp");
    assert!(problem["detail"].as_str().unwrap().contains("protobuf"), "{problem}");

    let (status, _, problem) = send(
        &app,
        export(
            "application/json",
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#,
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("JSON"), "{problem}");

    let too_big = vec![0u8; http::MAX_BODY + 1];
    let (status, _, _) = send(&app, export("application/x-protobuf", too_big, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(state.traces.stats().spans, 0, "nothing was stored");
}

async fn a_span_sent_again_replaces_its_copy(backend: Backend) {
    let (store, _db) = backend.open(TraceStoreConfig::default()).await;
    store
        .ingest(request(Some("orders"), None, vec![otlp_span(1, 1, "first")]))
        .await
        .unwrap();
    store
        .ingest(request(Some("orders"), None, vec![otlp_span(1, 1, "second")]))
        .await
        .unwrap();
    let trace = store.trace(&trace_hex(1)).await.unwrap().unwrap();
    assert_eq!(trace.spans.len(), 1);
    assert_eq!(trace.spans[0].name, "second");
    assert_eq!((store.stats().stored, store.stats().spans), (2, 1));
}

// ---- queries ----

async fn a_trace_comes_ordered_by_start_and_bad_or_unknown_ids_are_problems(backend: Backend) {
    let (app, state, _db) = backend.app().await;
    state
        .traces
        .insert(&[
            sp(1, 3, "payments", SpanKind::Server).parent(2).at(20, 5),
            sp(1, 1, "gateway", SpanKind::Server).at(0, 50),
            sp(1, 2, "orders", SpanKind::Server).parent(1).at(10, 30),
        ])
        .await
        .unwrap();
    let (status, trace) = get(&app, &format!("/v1/traces/{}", trace_hex(1))).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["span_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(span_hex(1)), json!(span_hex(2)), json!(span_hex(3))]);

    let (status, problem) = get(&app, "/v1/traces/not-a-trace-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["invalid-params"][0]["name"], "trace_id");
    let (status, problem) = get(&app, &format!("/v1/traces/{}", trace_hex(2))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["type"], "urn:flotilla:problem:not-found");
}

async fn a_trace_is_found_by_the_first_eight_hex_digits_the_logs_show(backend: Backend) {
    let (app, state, _db) = backend.app().await;
    let (one, two) = (
        "abcdef01".to_owned() + &"0".repeat(23) + "1",
        "abcdef01".to_owned() + &"0".repeat(23) + "2",
    );
    let other = "1234567800000000000000000000000a";
    for (i, id) in [&one, &two, &other.to_owned()].into_iter().enumerate() {
        let mut span = sp(1, i as u8 + 1, "gateway", SpanKind::Server).at(0, 5);
        span.trace_id = id.clone();
        state.traces.insert(&[span]).await.unwrap();
    }
    let (status, trace) = get(&app, "/v1/traces/12345678").await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["trace_id"], other);
    let (status, trace) = get(&app, "/v1/traces/12345678000").await;
    assert_eq!((status, trace["trace_id"].as_str()), (StatusCode::OK, Some(other)));
    // Two traces start with it: more digits are needed, and the answer says so.
    let (status, problem) = get(&app, "/v1/traces/ABCDEF01").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("more than one"),
        "{problem}"
    );
    let (status, trace) = get(&app, &format!("/v1/traces/{}", &two[..32])).await;
    assert_eq!(
        (status, trace["trace_id"].as_str()),
        (StatusCode::OK, Some(two.as_str()))
    );
    let (status, _) = get(&app, "/v1/traces/ffffffff").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/v1/traces/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Three traces: A (oldest, 100 ms, gateway → orders), B (500 ms, gateway → payments, which
/// failed), C (newest, 10 ms, catalog alone, its root not stored).
async fn three_traces(backend: Backend) -> (Router, Arc<ControlState>, Guard) {
    let (app, state, guard) = backend.app().await;
    state
        .traces
        .insert(&[
            sp(1, 1, "gateway", SpanKind::Server).named("GET /orders").at(1000, 100),
            sp(1, 2, "orders", SpanKind::Server)
                .named("list")
                .parent(1)
                .at(1010, 80),
            sp(2, 3, "gateway", SpanKind::Server)
                .named("POST /payments")
                .at(2000, 500),
            sp(2, 4, "payments", SpanKind::Server)
                .named("charge")
                .parent(3)
                .at(2100, 100)
                .failed(),
            sp(3, 6, "catalog", SpanKind::Server)
                .named("search")
                .parent(5)
                .at(3000, 10),
            sp(3, 7, "catalog", SpanKind::Internal)
                .named("query")
                .parent(6)
                .at(3002, 4),
        ])
        .await
        .unwrap();
    (app, state, guard)
}

async fn listed(app: &Router, query: &str) -> Vec<String> {
    let (status, list) = get(app, &format!("/v1/traces{query}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn trace_lists_are_newest_first_and_filtered(backend: Backend) {
    let (app, _, _db) = three_traces(backend).await;
    let (a, b, c) = (trace_hex(1), trace_hex(2), trace_hex(3));
    assert_eq!(listed(&app, "").await, vec![c.clone(), b.clone(), a.clone()]);
    assert_eq!(listed(&app, "?limit=2").await, vec![c.clone(), b.clone()]);
    assert_eq!(listed(&app, "?service=orders").await, vec![a.clone()]);
    assert_eq!(listed(&app, "?service=gateway").await, vec![b.clone(), a.clone()]);
    assert_eq!(listed(&app, "?operation=charge").await, vec![b.clone()]);
    assert_eq!(
        listed(&app, "?service=gateway&operation=GET%20%2Forders").await,
        vec![a.clone()]
    );
    // Service and operation must match the same span.
    assert!(listed(&app, "?service=gateway&operation=charge").await.is_empty());
    assert_eq!(listed(&app, "?min_duration_ms=100").await, vec![b.clone(), a.clone()]);
    assert_eq!(listed(&app, "?min_duration_ms=101").await, vec![b.clone()]);
    assert_eq!(listed(&app, "?errors=true").await, vec![b.clone()]);
    assert_eq!(listed(&app, "?errors=false").await.len(), 3);
    assert!(listed(&app, "?errors=true&service=orders").await.is_empty());

    let (_, list) = get(&app, "/v1/traces?errors=true").await;
    let summary: TraceSummary = serde_json::from_value(list["traces"][0].clone()).unwrap();
    assert_eq!(
        summary,
        TraceSummary {
            trace_id: b,
            root_service: "gateway".into(),
            root_name: "POST /payments".into(),
            start_unix_nano: BASE + 2000 * MS,
            duration_nanos: 500 * MS,
            span_count: 2,
            error_count: 1,
            services: vec!["gateway".into(), "payments".into()],
        }
    );
    // C's root is not stored: it is named after its earliest span.
    let (_, list) = get(&app, "/v1/traces?limit=1").await;
    assert_eq!(list["traces"][0]["root_name"], "search");
    assert_eq!(list["traces"][0]["duration_nanos"], 10 * MS);
}

async fn bad_list_parameters_are_named(backend: Backend) {
    let (app, _, _db) = three_traces(backend).await;
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("min_duration_ms=slow", "min_duration_ms"),
        ("errors=maybe", "errors"),
        ("service=", "service"),
        ("servise=orders", "servise"),
    ] {
        let (status, problem) = get(&app, &format!("/v1/traces?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["invalid-params"][0]["name"], parameter, "{query}: {problem}");
    }
    assert_eq!(listed(&app, "?limit=1000").await.len(), 3);
}

// ---- dependencies ----

async fn the_dependency_graph_has_http_edges_from_parents_and_peer_services_and_event_edges(backend: Backend) {
    let (store, _db) = backend.open(TraceStoreConfig::default()).await;
    let mut old_call = sp(2, 1, "gateway", SpanKind::Client).peer("catalog");
    old_call.start_unix_nano = BASE - 1_000_000 * MS;
    old_call.end_unix_nano = old_call.start_unix_nano + MS;
    store
        .insert(&[
            // gateway calls orders; the orders server span's parent is gateway's client span.
            sp(1, 1, "gateway", SpanKind::Server).at(0, 50),
            sp(1, 2, "gateway", SpanKind::Client).parent(1).at(1, 40).peer("orders"),
            sp(1, 3, "orders", SpanKind::Server).parent(2).at(2, 30).failed(),
            // orders calls itself through an internal server span: no edge.
            sp(1, 4, "orders", SpanKind::Server).parent(3).at(3, 5),
            // orders calls payments, whose spans were not stored: the client span counts.
            sp(1, 5, "orders", SpanKind::Client)
                .parent(3)
                .at(10, 7)
                .peer("payments"),
            // orders emits an event shipping consumes.
            sp(1, 6, "orders", SpanKind::Producer).parent(3).at(20, 1),
            sp(1, 7, "shipping", SpanKind::Consumer).parent(6).at(100, 9),
            // A consumer under a non-producer span is no event edge (and no http edge).
            sp(1, 8, "notifications", SpanKind::Consumer).parent(3).at(100, 2),
            // Outside the window: not counted.
            old_call,
        ])
        .await
        .unwrap();
    // The last span started 1000 s before BASE: a 60 s window ending at BASE + 1 s leaves it out.
    let graph = store
        .dependencies_at((BASE + 1000 * MS) as i64, Duration::from_secs(60))
        .await
        .unwrap();
    let edges: Vec<_> = graph
        .edges
        .iter()
        .map(|e| (e.caller.as_str(), e.callee.as_str(), e.kind, e.calls, e.errors))
        .collect();
    assert_eq!(
        edges,
        vec![
            ("gateway", "orders", DependencyKind::Http, 1, 1),
            ("orders", "payments", DependencyKind::Http, 1, 0),
            ("orders", "shipping", DependencyKind::Event, 1, 0),
        ]
    );
    assert_eq!(graph.edges[0].p50_ms, 30.0, "counted on the callee's span");
    assert_eq!(graph.edges[1].p50_ms, 7.0, "counted on the client span");
    assert_eq!(graph.edges[2].p99_ms, 9.0);
    assert_eq!(
        graph.services,
        vec!["gateway", "notifications", "orders", "payments", "shipping"]
    );

    // With the window reaching back, the old client span adds gateway → catalog.
    let all = store
        .dependencies_at((BASE + 1000 * MS) as i64, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(all.edges.iter().any(|e| e.caller == "gateway" && e.callee == "catalog"));
}

async fn dependency_error_rate_and_percentiles_come_from_the_callee_spans(backend: Backend) {
    let (store, _db) = backend.open(TraceStoreConfig::default()).await;
    // 100 calls gateway → orders lasting 1..=100 ms; every 10th failed.
    let mut spans = Vec::new();
    for n in 1..=100u8 {
        spans.push(sp(n, 1, "gateway", SpanKind::Client).at(0, 200));
        let mut server = sp(n, 2, "orders", SpanKind::Server).parent(1).at(1, u64::from(n));
        if n % 10 == 0 {
            server = server.failed();
        }
        spans.push(server);
    }
    // Three calls orders → payments (by peer.service) of 30, 10 and 20 ms, one failed: the
    // nearest rank of p50 is the 2nd (20 ms), of p99 the 3rd.
    for (n, ms) in [(1u8, 30u64), (2, 10), (3, 20)] {
        let mut call = sp(200 + n, 1, "orders", SpanKind::Client).peer("payments").at(5, ms);
        if n == 1 {
            call = call.failed();
        }
        spans.push(call);
    }
    store.insert(&spans).await.unwrap();
    let graph = store
        .dependencies_at((BASE + 1000 * MS) as i64, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(graph.edges.len(), 2);
    let edge = &graph.edges[0];
    assert_eq!((edge.caller.as_str(), edge.callee.as_str()), ("gateway", "orders"));
    assert_eq!((edge.calls, edge.errors), (100, 10));
    assert!((edge.error_rate - 0.1).abs() < 1e-9, "{}", edge.error_rate);
    assert_eq!((edge.p50_ms, edge.p99_ms), (50.0, 99.0));
    let edge = &graph.edges[1];
    assert_eq!((edge.caller.as_str(), edge.callee.as_str()), ("orders", "payments"));
    assert_eq!((edge.calls, edge.errors), (3, 1));
    assert!((edge.error_rate - 1.0 / 3.0).abs() < 1e-9, "{}", edge.error_rate);
    assert_eq!((edge.p50_ms, edge.p99_ms), (20.0, 30.0));
}

async fn the_dependency_endpoint_checks_its_window(backend: Backend) {
    let (app, state, _db) = backend.app().await;
    let now = now_nanos() as u64;
    let mut client = sp(1, 1, "gateway", SpanKind::Client).peer("orders");
    client.start_unix_nano = now - 1000 * MS;
    client.end_unix_nano = now - 990 * MS;
    state.traces.insert(&[client]).await.unwrap();
    let (status, graph) = get(&app, "/v1/dependencies").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(graph["edges"][0]["caller"], "gateway");
    assert_eq!(graph["edges"][0]["kind"], "http");
    let (status, problem) = get(&app, "/v1/dependencies?lookback_seconds=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["invalid-params"][0]["name"], "lookback_seconds");
    let (status, problem) = get(&app, "/v1/dependencies?lookback_seconds=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["invalid-params"][0]["name"], "lookback_seconds");
}

// ---- bounds and durability ----

async fn pruning_keeps_at_most_max_spans_the_newest(backend: Backend) {
    let (store, _db) = backend
        .open(TraceStoreConfig {
            max_spans: 5,
            ..TraceStoreConfig::default()
        })
        .await;
    let spans: Vec<_> = (1..=8u8)
        .map(|n| sp(n, 1, "orders", SpanKind::Server).at(u64::from(n) * 10, 1))
        .collect();
    store.insert(&spans).await.unwrap();
    assert_eq!(store.stats().spans, 8);
    assert_eq!(store.prune_at(BASE as i64).await.unwrap(), 3);
    let left = store.list(&TraceQuery::default()).await.unwrap();
    let left: Vec<_> = left.traces.iter().map(|t| t.trace_id.clone()).collect();
    assert_eq!(left, (4..=8u8).rev().map(trace_hex).collect::<Vec<_>>());
    let stats = store.stats();
    assert_eq!((stats.spans, stats.pruned), (5, 3));
    assert_eq!(store.prune_at(BASE as i64).await.unwrap(), 0, "within bounds");
}

async fn pruning_drops_spans_older_than_max_age(backend: Backend) {
    let (store, _db) = backend
        .open(TraceStoreConfig {
            max_age: Duration::from_secs(3600),
            ..TraceStoreConfig::default()
        })
        .await;
    let hour = 3_600_000;
    store
        .insert(&[
            sp(1, 1, "orders", SpanKind::Server).at(0, 1),
            sp(2, 1, "orders", SpanKind::Server).at(hour / 2, 1),
            sp(3, 1, "orders", SpanKind::Server).at(hour * 2, 1),
        ])
        .await
        .unwrap();
    // At BASE + 2 h, only the span of trace 3 started within the hour.
    let now = (BASE + 2 * hour * MS) as i64;
    assert_eq!(store.prune_at(now).await.unwrap(), 2);
    assert!(store.trace(&trace_hex(1)).await.unwrap().is_none());
    assert!(store.trace(&trace_hex(2)).await.unwrap().is_none());
    assert!(store.trace(&trace_hex(3)).await.unwrap().is_some());
}

async fn the_pruning_task_acts_as_soon_as_an_insert_passes_the_bound(backend: Backend) {
    let (store, _db) = backend
        .open(TraceStoreConfig {
            max_spans: 3,
            ..TraceStoreConfig::default()
        })
        .await;
    let store = Arc::new(store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .run_pruning(async move {
                    let _ = stopped.await;
                })
                .await
        }
    });
    // Spans of now, so the age bound leaves them alone.
    let now = now_nanos() as u64;
    let spans: Vec<_> = (1..=10u8)
        .map(|n| {
            let mut s = sp(n, 1, "orders", SpanKind::Server);
            s.start_unix_nano = now + u64::from(n);
            s.end_unix_nano = s.start_unix_nano + MS;
            s
        })
        .collect();
    store.insert(&spans).await.unwrap();
    let started = std::time::Instant::now();
    while store.stats().spans > 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "not pruned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.stats().pruned, 7);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn spans_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = TraceStore::open(dir.path(), TraceStoreConfig::default()).await.unwrap();
        store
            .ingest(request(Some("orders"), Some("orders-1"), vec![otlp_span(1, 1, "kept")]))
            .await
            .unwrap();
    }
    assert!(dir.path().join("telemetry.db").exists());
    let store = TraceStore::open(dir.path(), TraceStoreConfig::default()).await.unwrap();
    assert_eq!(store.stats().spans, 1, "the count is read back");
    let trace = store.trace(&trace_hex(1)).await.unwrap().unwrap();
    assert_eq!(
        (trace.spans[0].name.as_str(), trace.spans[0].instance.as_deref()),
        ("kept", Some("orders-1"))
    );
    assert!(store.size_bytes().await.unwrap() > 0);
}

#[tokio::test]
async fn a_config_without_room_is_refused() {
    let zero = TraceStoreConfig {
        max_spans: 0,
        ..TraceStoreConfig::default()
    };
    assert!(matches!(TraceStore::in_memory(zero).await, Err(TraceError::Config(_))));
    let ageless = TraceStoreConfig {
        max_age: Duration::ZERO,
        ..TraceStoreConfig::default()
    };
    assert!(ageless.validate().is_err());
}

// ---- service discovery and metrics ----

fn registration(service: &str, id: &str, address: &str) -> Registration {
    Registration {
        service: service.into(),
        instance_id: id.into(),
        address: address.into(),
        version: "0.1.0".into(),
        metadata: BTreeMap::new(),
    }
}

#[tokio::test]
async fn service_discovery_lists_registered_instances_and_the_control_plane() {
    let (app, state) = app().await;
    state
        .registry
        .register(registration("catalog", "catalog-1-abcd", "127.0.0.1:40001"))
        .await
        .unwrap();
    let (status, groups) = get(&app, "/v1/sd/prometheus").await;
    assert_eq!(status, StatusCode::OK);
    let groups: Vec<ScrapeTargetGroup> = serde_json::from_value(groups).unwrap();
    let labels = |service: &str, instance: &str| {
        BTreeMap::from([
            ("__metrics_path__".to_owned(), "/metrics".to_owned()),
            ("instance".to_owned(), instance.to_owned()),
            ("service".to_owned(), service.to_owned()),
        ])
    };
    assert_eq!(
        groups,
        vec![
            ScrapeTargetGroup {
                targets: vec!["127.0.0.1:40001".into()],
                labels: labels("catalog", "catalog-1-abcd"),
            },
            // Listening on 0.0.0.0: scraped over loopback.
            ScrapeTargetGroup {
                targets: vec!["127.0.0.1:47070".into()],
                labels: labels("control", "control"),
            },
        ]
    );

    state.registry.deregister("catalog-1-abcd").await.unwrap();
    let (_, groups) = get(&app, "/v1/sd/prometheus").await;
    let groups: Vec<ScrapeTargetGroup> = serde_json::from_value(groups).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].labels["service"], "control");
}

#[tokio::test]
async fn metrics_show_instances_and_span_counters_with_help_and_type() {
    let (app, state) = app().await;
    state
        .registry
        .register(registration("catalog", "catalog-1", "127.0.0.1:40001"))
        .await
        .unwrap();
    state
        .registry
        .register(registration("catalog", "catalog-2", "127.0.0.1:40002"))
        .await
        .unwrap();
    let mut bad = otlp_span(1, 2, "bad");
    bad.span_id = vec![1; 4];
    post_proto(&app, &request(Some("orders"), None, vec![otlp_span(1, 1, "ok"), bad])).await;

    let (status, headers, body) = send(
        &app,
        Request::get("/metrics")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], metrics::CONTENT_TYPE);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for (name, kind) in [
        ("flotilla_control_registered_instances", "gauge"),
        ("flotilla_control_spans_received_total", "counter"),
        ("flotilla_control_spans_rejected_total", "counter"),
        ("flotilla_control_spans_stored_total", "counter"),
        ("flotilla_control_spans_pruned_total", "counter"),
        ("flotilla_control_trace_store_spans", "gauge"),
        ("flotilla_control_trace_store_max_spans", "gauge"),
        ("flotilla_control_trace_store_bytes", "gauge"),
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is no {kind}:\n{text}"
        );
    }
    for sample in [
        "flotilla_control_registered_instances{service=\"catalog\"} 2\n",
        "flotilla_control_spans_received_total 2\n",
        "flotilla_control_spans_rejected_total 1\n",
        "flotilla_control_spans_stored_total 1\n",
        "flotilla_control_spans_pruned_total 0\n",
        "flotilla_control_trace_store_spans 1\n",
        "flotilla_control_trace_store_max_spans 200000\n",
    ] {
        assert!(text.contains(sample), "missing `{sample}` in:\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    let text = metrics::render(&metrics::Snapshot {
        services: vec![flotilla_api::ServiceSummary {
            name: "we\"ird\\".into(),
            instances: 1,
            passing: 1,
        }],
        ..Default::default()
    });
    assert!(
        text.contains(r#"flotilla_control_registered_instances{service="we\"ird\\"} 1"#),
        "{text}"
    );
}
