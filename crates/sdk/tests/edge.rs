//! The gateway's edge span: sampled requests are exported with their outcome; unsampled
//! ones cost no span unless they failed or were slow, in which case the tail rule exports
//! them after the fact under the very ids their `traceparent` carried upstream.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use flotilla::telemetry::edge::{EdgeSpan, Outcome};
use flotilla::telemetry::{Endpoint, LogFormat, Sampling, TailPolicy, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Received = Arc<Mutex<Vec<Span>>>;

async fn collector() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        received.lock().unwrap().extend(scope.spans);
                    }
                }
                ExportTraceServiceRequest::default().encode_to_vec()
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| format!("{:?}", kv.value))
        .unwrap_or_default()
}

/// Runs one request through an edge span: its `traceparent` upstream, then its outcome.
fn request(incoming: &http::HeaderMap, status: u16, took: Duration) -> http::HeaderMap {
    let edge = EdgeSpan::start(incoming);
    let mut upstream = http::HeaderMap::new();
    edge.inject(&mut upstream);
    std::thread::sleep(took);
    let error = "upstream refused the connection";
    edge.finish(&Outcome {
        method: &http::Method::GET,
        route: "catalog",
        path: "/api/v1/products",
        status,
        upstream: "127.0.0.1:9",
        error: (status >= 500).then_some(&error as &dyn std::fmt::Display),
    });
    upstream
}

fn trace_of(headers: &http::HeaderMap) -> (String, String, bool) {
    let value = headers["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = value.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned(), parts[3] == "01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_cost_no_span_unless_they_fail_or_are_slow() {
    let (addr, received) = collector().await;
    let telemetry = flotilla::telemetry::init(TelemetryConfig {
        service: "gateway".into(),
        instance: None,
        endpoint: Some(Endpoint {
            url: format!("http://{addr}/v1/traces"),
            headers: Vec::new(),
            replicas: Vec::new(),
        }),
        sampling: Sampling {
            ratio: 0.0,
            tail: Some(TailPolicy {
                slow: Duration::from_millis(80),
            }),
        },
        format: LogFormat::Json,
    });

    let none = http::HeaderMap::new();
    let fast = request(&none, 200, Duration::ZERO);
    let failed = request(&none, 502, Duration::ZERO);
    let slow = request(&none, 200, Duration::from_millis(100));
    let mut sampled_by_caller = http::HeaderMap::new();
    sampled_by_caller.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let sampled = request(&sampled_by_caller, 201, Duration::ZERO);

    for headers in [&fast, &failed, &slow] {
        let (_, _, flag) = trace_of(headers);
        assert!(!flag, "upstream is told the trace is not sampled");
    }
    assert!(trace_of(&sampled).2, "a caller's sampled trace stays sampled");
    assert_eq!(trace_of(&sampled).0, "4bf92f3577b34da6a3ce929d0e0e4736");

    telemetry.flush();
    let spans = received.lock().unwrap().clone();
    let find = |headers: &http::HeaderMap| {
        let (trace, span, _) = trace_of(headers);
        spans
            .iter()
            .find(|s| hex(&s.trace_id) == trace && hex(&s.span_id) == span)
            .cloned()
    };
    assert!(
        find(&fast).is_none(),
        "a fast, successful, unsampled request leaves no span"
    );

    let failed = find(&failed).expect("the tail rule keeps a failed request, under the ids sent upstream");
    assert_eq!(failed.name, "GET catalog");
    assert_eq!(failed.kind, 2, "server");
    assert!(failed.parent_span_id.is_empty(), "a root");
    assert!(attribute(&failed, "flotilla.sampling").contains("tail"));
    assert!(attribute(&failed, "http.response.status_code").contains("502"));
    let status = failed.status.clone().unwrap();
    assert_eq!(status.code, 2, "error");
    assert!(status.message.contains("refused"), "{status:?}");

    let slow = find(&slow).expect("the tail rule keeps a slow request");
    assert!(slow.end_time_unix_nano - slow.start_time_unix_nano >= 100_000_000);

    let sampled = find(&sampled).expect("a sampled request is exported with its outcome");
    assert_eq!(hex(&sampled.parent_span_id), "00f067aa0ba902b7");
    assert!(attribute(&sampled, "http.route").contains("catalog"));
    assert!(
        attribute(&sampled, "flotilla.sampling").is_empty(),
        "kept by the head decision"
    );
    assert_eq!(spans.len(), 3, "{spans:#?}");
}
