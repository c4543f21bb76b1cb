use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span as OtlpSpan};
use serde_json::json;

use super::*;

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

#[tokio::test]
async fn a_span_sent_again_replaces_its_copy() {
    let store = store().await;
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

// ---- dependencies ----

#[tokio::test]
async fn the_dependency_graph_has_http_edges_from_parents_and_peer_services_and_event_edges() {
    let store = store().await;
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

#[tokio::test]
async fn dependency_error_rate_and_percentiles_come_from_the_callee_spans() {
    let store = store().await;
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

// ---- bounds and durability ----

#[tokio::test]
async fn pruning_keeps_at_most_max_spans_the_newest() {
    let store = TraceStore::in_memory(TraceStoreConfig {
        max_spans: 5,
        ..TraceStoreConfig::default()
    })
    .await
    .unwrap();
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

#[tokio::test]
async fn pruning_drops_spans_older_than_max_age() {
    let store = TraceStore::in_memory(TraceStoreConfig {
        max_age: Duration::from_secs(3600),
        ..TraceStoreConfig::default()
    })
    .await
    .unwrap();
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

#[tokio::test]
async fn the_pruning_task_acts_as_soon_as_an_insert_passes_the_bound() {
    let store = Arc::new(
        TraceStore::in_memory(TraceStoreConfig {
            max_spans: 3,
            ..TraceStoreConfig::default()
        })
        .await
        .unwrap(),
    );
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
