//! One trace across a request, the call it makes, its database work and the event it emits:
//! exported as OTLP to a collector, with every parent link right.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use flotilla::client::{pool, ClientConfig, ServiceClient, Stack, Target};
use flotilla::events::{Consumer, EventsClient, Outbox};
use flotilla::runtime::{Service, ServiceEnv};
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use flotilla::telemetry::{Endpoint, LogFormat, Sampling, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// A collector: keeps every span posted to `/v1/traces` with its `service.name`.
async fn collector() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Received>, headers: http::HeaderMap, body: Bytes| async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    assert_eq!(headers["authorization"], "Bearer sesame");
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                received.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    ExportTraceServiceRequest::default().encode_to_vec()
                },
            ),
        )
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

async fn serve(name: &str, router: Router) -> SocketAddr {
    let listener = Service::bind(None).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::new(name, "1").env(ServiceEnv::default()).router(router);
    tokio::spawn(service.run(listener, std::future::pending()));
    addr
}

#[derive(Clone)]
struct Shop {
    stock: ServiceClient,
    store: Store,
    outbox: Outbox,
}

async fn buy(State(shop): State<Shop>) -> Result<&'static str, String> {
    let stock: serde_json::Value = shop.stock.get_json("/stock/7").await.map_err(|e| e.to_string())?;
    assert_eq!(stock["available"], 3);
    let event = flotilla::api::events::CloudEvent {
        specversion: "1.0".into(),
        id: "order-1:placed".into(),
        source: "/shop".into(),
        kind: "shop.order.placed".into(),
        subject: Some("order/1".into()),
        time: None,
        traceparent: None,
        data: serde_json::json!({"order": 1}),
        deadletterreason: None,
    };
    let write = async {
        let mut tx = shop.store.pool().begin().await?;
        shop.outbox.add(&mut tx, "shop.order", &event).await?;
        tx.commit().await
    };
    tracing::Instrument::instrument(write, shop.store.span("place order"))
        .await
        .map_err(|e| e.to_string())?;
    Ok("bought")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_call_its_database_work_and_its_event_make_one_trace() {
    let (collector, received) = collector().await;
    let telemetry = flotilla::telemetry::init(TelemetryConfig {
        service: "shop".into(),
        instance: Some("shop-1".into()),
        endpoint: Some(Endpoint {
            url: format!("http://{collector}/v1/traces"),
            headers: vec![("authorization".into(), "Bearer sesame".into())],
            replicas: Vec::new(),
        }),
        sampling: Sampling { ratio: 0.0, tail: None },
        format: LogFormat::Json,
    });

    let stock = serve(
        "stock",
        Router::new().route(
            "/stock/{id}",
            get(|| async { axum::Json(serde_json::json!({"available": 3})) }),
        ),
    )
    .await;
    let db = TestDatabase::create("telemetry").await;
    let store = flotilla::events::open(&db.url, &sqlx::migrate::Migrator::DEFAULT)
        .await
        .unwrap();
    let uri: http::Uri = format!("http://{stock}").parse().unwrap();
    let shop = Shop {
        stock: ServiceClient::new(Stack::new(
            Target::fixed("stock", &[uri]),
            &ClientConfig::default(),
            pool(),
        )),
        store: store.clone(),
        outbox: Outbox::new(),
    };
    let front = serve("shop", Router::new().route("/buy/{id}", post(buy)).with_state(shop)).await;

    // The caller sampled the trace: with a ratio of 0, only its decision keeps the spans.
    let http = flotilla::http::HttpClient::new(std::time::Duration::from_secs(5));
    let answer = http
        .send_with_headers(
            http::Method::POST,
            &format!("http://{front}/buy/1"),
            None,
            &[(
                http::HeaderName::from_static("traceparent"),
                format!("00-{TRACE}-{CALLER_SPAN}-01"),
            )],
            Some(&serde_json::json!({})),
            None,
        )
        .await
        .expect("the shop answers");
    assert_eq!(answer.0, 200, "{:?}", answer.3);

    // The event, as the log would deliver it, handled by a consumer.
    let envelope: String = sqlx::query_scalar("SELECT envelope FROM flotilla_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let event: flotilla::api::events::CloudEvent = serde_json::from_str(&envelope).unwrap();
    assert!(
        event.traceparent.as_deref().is_some_and(|t| t.contains(TRACE)),
        "{event:?}"
    );
    let delivery = flotilla::api::events::Delivery {
        offset: 1,
        attempt: 1,
        event,
    };
    let consumer = Consumer::new(
        store.clone(),
        EventsClient::new("127.0.0.1:9", None),
        "shop.order",
        "mailer",
    );
    let handled = consumer
        .handle_one(&delivery, &|_, tx| async move { Ok(tx) })
        .await
        .unwrap();
    assert!(handled);

    // The same request, as metrics (both services share this process's registry).
    let (status, _, _, body) = http
        .send_raw::<()>(http::Method::GET, &format!("http://{front}/metrics"), None, None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    for line in [
        "flotilla_http_server_requests_total{route=\"/buy/{id}\",method=\"POST\",status=\"200\"} 1",
        "flotilla_http_server_requests_total{route=\"/stock/{id}\",method=\"GET\",status=\"200\"} 1",
        "flotilla_http_server_request_duration_seconds_count{route=\"/buy/{id}\",method=\"POST\"} 1",
        "flotilla_http_client_requests_total{upstream=\"stock\",method=\"GET\",outcome=\"200\"} 1",
        "flotilla_events_consumed_total{topic=\"shop.order\",group=\"mailer\",outcome=\"handled\"} 1",
    ] {
        assert!(text.contains(line), "`{line}` in\n{text}");
    }
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    assert!(text.contains("\ntokio_workers 2"), "{text}");

    telemetry.flush();
    let spans = received.lock().unwrap().clone();
    let in_trace: Vec<_> = spans.iter().filter(|(_, s)| hex(&s.trace_id) == TRACE).collect();
    let find = |name: &str| {
        in_trace
            .iter()
            .find(|(_, s)| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span `{name}` in {:#?}",
                    in_trace.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
                )
            })
            .1
            .clone()
    };
    let served = find("POST /buy/{id}");
    let call = find("GET stock");
    let called = find("GET /stock/{id}");
    let db = find("sqlite place order");
    let produced = find("shop.order.placed publish");
    let consumed = find("shop.order.placed process");
    assert_eq!(
        hex(&served.parent_span_id),
        CALLER_SPAN,
        "the server span's parent is the caller's"
    );
    assert_eq!(served.kind, 2, "server");
    assert_eq!(call.parent_span_id, served.span_id, "the call is inside the request");
    assert_eq!(call.kind, 3, "client");
    assert_eq!(
        called.parent_span_id, call.span_id,
        "the callee's span is the call's child"
    );
    assert_eq!(db.parent_span_id, served.span_id);
    assert_eq!(
        produced.parent_span_id, db.span_id,
        "the event was emitted in the database work"
    );
    assert_eq!(produced.kind, 4, "producer");
    assert_eq!(
        consumed.parent_span_id, produced.span_id,
        "the consumer's parent is the producer"
    );
    assert_eq!(consumed.kind, 5, "consumer");
    let status = served
        .attributes
        .iter()
        .find(|kv| kv.key == "http.response.status_code")
        .and_then(|kv| kv.value.clone());
    assert!(format!("{status:?}").contains("200"), "{status:?}");
    assert!(
        in_trace
            .iter()
            .any(|(service, s)| service.contains("shop") && s.name == "GET /stock/{id}"),
        "spans carry the process's service.name"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
