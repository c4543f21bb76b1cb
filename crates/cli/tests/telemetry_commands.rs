//! The real `flotilla logs`, `flotilla traces`, `flotilla trace` and `flotilla deps`: on a
//! temp data dir of fabricated log files, and against a small fake control plane on a free
//! port answering fabricated telemetry.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flotilla_api::telemetry::{
    Dependency, DependencyGraph, DependencyKind, Span, SpanKind, SpanStatus, Trace, TraceList, TraceSummary,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OTHER: &str = "0af7651916cd43dd8448eb211c80319c";
const MS: u64 = 1_000_000;
/// 2026-11-30T22:01:02Z.
const T0: u64 = 1_796_076_062_000_000_000;

/// Runs the binary with a fixed zone, width and no colour, so its output can be compared.
async fn flotilla(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("TZ", "UTC")
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn log(ts: &str, service: &str, level: &str, trace: &str, message: &str) -> String {
    serde_json::json!({
        "timestamp": ts, "level": level, "service": service, "instance": format!("{service}-1"),
        "trace_id": trace, "span_id": "00f067aa0ba902b7", "message": message,
        "target": "shop", "fields": {"order_id": 7}
    })
    .to_string()
}

/// Two processes' logs whose lines interleave, with a plain panic line among them.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let write = |name: &str, lines: Vec<String>| std::fs::write(logs.join(name), lines.join("\n") + "\n").unwrap();
    write(
        "gateway.log",
        vec![
            log("2026-11-30T22:01:02.100000Z", "gateway", "INFO", TRACE, "request in"),
            log("2026-11-30T22:01:02.150000Z", "gateway", "INFO", OTHER, "other request"),
            log("2026-11-30T22:01:02.400000Z", "gateway", "WARN", TRACE, "slow answer"),
        ],
    );
    write(
        "orders-1.log",
        vec![
            log("2026-11-30T22:01:02.200000Z", "orders", "INFO", TRACE, "order placed"),
            "thread 'tokio-runtime-worker' panicked at shop/orders/src/saga.rs:10:5".to_owned(),
            log(
                "2026-11-30T22:01:02.300000Z",
                "orders",
                "ERROR",
                TRACE,
                "payment failed",
            ),
            log("2026-11-30T22:01:02.350000Z", "orders", "INFO", OTHER, "unrelated"),
        ],
    );
    dir
}

#[tokio::test]
async fn logs_merges_two_processes_and_filters_by_trace() {
    let dir = data_dir();
    let data = dir.path().to_str().unwrap();
    let text = stdout(&flotilla(&["logs", "--trace", "4bf92f35", "--data-dir", data]).await);
    assert_eq!(
        text,
        "gateway  │ 22:01:02.100 INFO  request in order_id=7 trace=4bf92f35\n\
         orders-1 │ 22:01:02.200 INFO  order placed order_id=7 trace=4bf92f35\n\
         orders-1 │ 22:01:02.300 ERROR payment failed order_id=7 trace=4bf92f35\n\
         gateway  │ 22:01:02.400 WARN  slow answer order_id=7 trace=4bf92f35\n"
    );

    // Without a trace filter the panic is kept, where it happened.
    let text = stdout(&flotilla(&["logs", "orders", "--data-dir", data]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[1],
        "orders-1 │ thread 'tokio-runtime-worker' panicked at shop/orders/src/saga.rs:10:5"
    );

    // Level and JSON: the lines as written, in time order.
    let text = stdout(&flotilla(&["logs", "--level", "warn", "--output", "json", "--data-dir", data]).await);
    let messages: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(messages, ["payment failed", "slow answer"]);
}

#[tokio::test]
async fn logs_without_a_logs_dir_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla(&["logs", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&Path::new(dir.path()).join("logs").display().to_string()),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");

    let out = flotilla(&["logs", "--trace", "abc", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trace abc"));
}

fn span(id: &str, parent: Option<&str>, service: &str, name: &str, kind: SpanKind, from_ms: u64, to_ms: u64) -> Span {
    Span {
        trace_id: TRACE.into(),
        span_id: id.into(),
        parent_span_id: parent.map(str::to_owned),
        service: service.into(),
        instance: None,
        name: name.into(),
        kind,
        start_unix_nano: T0 + from_ms * MS,
        end_unix_nano: T0 + to_ms * MS,
        status: SpanStatus::Unset,
        status_message: None,
        attributes: Default::default(),
        events: Vec::new(),
        links: Vec::new(),
    }
}

fn stored_trace() -> Trace {
    let mut payment = span("p1", Some("o1"), "payments", "POST /payments", SpanKind::Server, 40, 90);
    payment.status = SpanStatus::Error;
    payment.status_message = Some("card declined".into());
    Trace {
        trace_id: TRACE.into(),
        spans: vec![
            span("g1", None, "gateway", "POST /api/v1/orders", SpanKind::Server, 0, 100),
            span("o1", Some("g1"), "orders", "POST /orders", SpanKind::Server, 10, 95),
            payment,
        ],
    }
}

/// What the fake control plane was asked.
type Asked = Arc<Mutex<Vec<String>>>;

fn problem(status: StatusCode, detail: &str) -> Response {
    let body =
        serde_json::json!({"type": "about:blank", "title": "Not found", "status": status.as_u16(), "detail": detail});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn fake_control_plane() -> (String, Asked) {
    let asked: Asked = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            get(|State(asked): State<Asked>, RawQuery(query): RawQuery| async move {
                asked.lock().unwrap().push(query.unwrap_or_default());
                Json(TraceList {
                    traces: vec![TraceSummary {
                        trace_id: TRACE.into(),
                        root_service: "gateway".into(),
                        root_name: "POST /api/v1/orders".into(),
                        start_unix_nano: T0 + 123 * MS,
                        duration_nanos: 100 * MS,
                        span_count: 3,
                        error_count: 1,
                        services: vec!["gateway".into(), "orders".into(), "payments".into()],
                    }],
                })
            }),
        )
        .route(
            "/v1/traces/{id}",
            get(|UrlPath(id): UrlPath<String>| async move {
                if id == TRACE {
                    Json(stored_trace()).into_response()
                } else {
                    problem(StatusCode::NOT_FOUND, "no such trace")
                }
            }),
        )
        .route(
            "/v1/dependencies",
            get(|State(asked): State<Asked>, RawQuery(query): RawQuery| async move {
                asked.lock().unwrap().push(query.unwrap_or_default());
                Json(DependencyGraph {
                    services: vec!["gateway".into(), "orders".into()],
                    edges: vec![Dependency {
                        caller: "gateway".into(),
                        callee: "orders".into(),
                        kind: DependencyKind::Http,
                        calls: 40,
                        errors: 4,
                        error_rate: 0.1,
                        p50_ms: 12.5,
                        p99_ms: 250.0,
                    }],
                })
            }),
        )
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, asked)
}

fn join<'a>(args: &[&'a str], common: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(common).copied().collect()
}

#[tokio::test]
async fn traces_trace_and_deps_against_a_control_plane() {
    let (addr, asked) = fake_control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "--control-addr",
        addr.as_str(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ];
    let with = |args: &[&'static str]| join(args, &common);

    let text = stdout(
        &flotilla(&with(&[
            "traces",
            "--service",
            "orders",
            "--errors",
            "--min-duration",
            "100ms",
            "--limit",
            "5",
        ]))
        .await,
    );
    assert_eq!(
        asked.lock().unwrap().first().map(String::as_str),
        Some("service=orders&min_duration_ms=100&errors=true&limit=5")
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TRACE "), "{text}");
    assert_eq!(
        lines[1],
        format!(
            "{TRACE}  22:01:02.123    100 ms      3       1  gateway POST /api/v1/orders  gateway, orders, payments"
        )
    );

    // Ids are taken in any case.
    let upper = TRACE.to_uppercase();
    let text = stdout(&flotilla(&join(&["trace", &upper], &common)).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("trace {TRACE}  100 ms  3 spans  1 error  services: gateway, orders, payments")
    );
    assert!(lines[3].starts_with("⇠ gateway POST /api/v1/orders"), "{text}");
    assert!(lines[4].starts_with("  ⇠ orders POST /orders"), "{text}");
    assert!(lines[5].starts_with("    ⇠ payments POST /payments"), "{text}");
    assert!(lines[5].ends_with("✗ card declined"), "{text}");

    let out = flotilla(&with(&["trace", OTHER])).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("trace {OTHER} is not stored")), "{err}");

    let json = stdout(&flotilla(&with(&["trace", TRACE, "--output", "json"])).await);
    assert_eq!(serde_json::from_str::<Trace>(&json).unwrap(), stored_trace());

    let text = stdout(&flotilla(&with(&["deps", "--lookback", "15m"])).await);
    assert_eq!(
        asked.lock().unwrap().last().map(String::as_str),
        Some("lookback_seconds=900")
    );
    assert!(
        text.contains("gateway  ──http──▶  orders     40  4 (10.0%)    12.5     250"),
        "{text}"
    );
}

#[tokio::test]
async fn an_absent_control_plane_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla(&[
        "traces",
        "--control-addr",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the control plane at {addr}")),
        "{err}"
    );
}
