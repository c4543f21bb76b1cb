//! The trace store through a real control plane over loopback: spans exported as OTLP JSON
//! are answered as a trace, outlive a control plane restart over the same data dir, and
//! Prometheus service discovery offers the control plane at the address it was bound to.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use flotilla::http::HttpClient;
use flotilla_api::telemetry::{ScrapeTargetGroup, Trace, TraceList};
use flotilla_control::{ControlConfig, RegistryConfig, Storage, StorageConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "test-token";

/// A control plane over `data_dir`; dropping (or sending on) the sender stops it, and the
/// handle resolves once it has.
async fn control(data_dir: &Path) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    let storage = Storage::open(data_dir, StorageConfig::default()).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        flotilla_control::serve(listener, config, storage, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, served)
}

/// An export of one server span of `orders`, started a second ago, as an OTLP JSON sender
/// writes it.
fn export(trace_id: &str) -> Value {
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 1_000_000_000;
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "orders"}},
                {"key": "service.instance.id", "value": {"stringValue": "orders-1-ab12"}}
            ]},
            "scopeSpans": [{"spans": [{
                "traceId": trace_id,
                "spanId": "00f067aa0ba902b7",
                "name": "POST /api/v1/orders",
                "kind": 2,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + 12_000_000).to_string(),
                "attributes": [{"key": "http.response.status_code", "value": {"intValue": "201"}}]
            }]}]
        }]
    })
}

#[tokio::test]
async fn spans_are_served_after_a_restart_and_the_control_plane_is_a_scrape_target() {
    let dir = tempfile::tempdir().unwrap();
    let client = HttpClient::default();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";

    let (addr, stop, served) = control(dir.path()).await;
    let answer = client
        .send::<Value, Value>(
            Method::POST,
            &format!("http://{addr}/v1/traces"),
            Some(TOKEN),
            Some(&export(trace_id)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.body, json!({}), "a full success");

    let groups: Vec<ScrapeTargetGroup> = client
        .get_json(&format!("http://{addr}/v1/sd/prometheus"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].targets, vec![addr.to_string()]);
    assert_eq!(groups[0].labels["service"], "control");

    let _ = stop.send(());
    served.await.unwrap();

    let (addr, _stop, _served) = control(dir.path()).await;
    let trace: Trace = client
        .get_json(&format!("http://{addr}/v1/traces/{trace_id}"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(trace.spans.len(), 1);
    assert_eq!(trace.spans[0].instance.as_deref(), Some("orders-1-ab12"));
    assert_eq!(trace.spans[0].attributes["http.response.status_code"], json!(201));
    let list: TraceList = client
        .get_json(&format!("http://{addr}/v1/traces?service=orders"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(list.traces[0].trace_id, trace_id);
    assert_eq!(list.traces[0].duration_nanos, 12_000_000);
}
