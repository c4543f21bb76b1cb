//! The client against real upstreams on loopback: a dead one, a hung one, a healthy pair.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::*;
use crate::resilience::Deadline;

/// An upstream answering `/who` with its name and the headers it got, counting its calls.
async fn upstream(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/who",
            get(move |headers: http::HeaderMap| {
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let answer = serde_json::json!({
                    "name": name,
                    "auth": seen("authorization"),
                    "traceparent": seen("traceparent"),
                    "deadline": seen("x-flotilla-deadline-ms"),
                });
                async move { axum::Json(answer) }
            }),
        )
        .route("/missing", get(|| async { crate::Problem::not_found("nothing here") }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// A port nothing listens on.
async fn dead() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

/// A listener that accepts connections and never answers (a SIGSTOPped process looks so).
async fn hung() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

fn client(addrs: &[SocketAddr], config: ClientConfig) -> ServiceClient {
    let uris: Vec<http::Uri> = addrs.iter().map(|a| format!("http://{a}").parse().unwrap()).collect();
    ServiceClient::new(Stack::new(Target::fixed("who", &uris), &config, pool()))
}

#[derive(serde::Deserialize)]
struct Who {
    name: String,
    auth: String,
    traceparent: String,
    deadline: String,
}

#[tokio::test]
async fn a_dead_instance_costs_no_failed_call_and_is_ejected_at_once() {
    let (a, a_hits) = upstream("a").await;
    let (b, b_hits) = upstream("b").await;
    let gone = dead().await;
    let client = client(&[a, gone, b], ClientConfig::default());
    for _ in 0..60 {
        let who: Who = client.get_json("/who").await.unwrap();
        assert!(who.name == "a" || who.name == "b");
    }
    assert_eq!(a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst), 60);
    let stats = client.stack().balancer().stats(&gone.to_string()).unwrap();
    assert_eq!(stats.ejections(), 1, "ejected on its first refused connection, once");
}

#[tokio::test]
async fn a_hung_instance_times_out_and_the_call_moves_on() {
    let (a, _) = upstream("a").await;
    let stuck = hung().await;
    let config = ClientConfig {
        per_try_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let client = client(&[stuck, a], config);
    let started = Instant::now();
    for _ in 0..20 {
        let who: Who = client.get_json("/who").await.unwrap();
        assert_eq!(who.name, "a");
    }
    // At most a few calls waited out the per-try timeout before the balancer shunned it.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn headers_of_the_request_being_served_travel_on_with_the_deadline() {
    let (a, _) = upstream("a").await;
    let client = client(&[a], ClientConfig::default());
    let mut incoming = http::HeaderMap::new();
    incoming.insert("authorization", "Bearer user-token".parse().unwrap());
    incoming.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    incoming.insert("cookie", "secret=1".parse().unwrap());
    let who: Who = Propagated::capture(&incoming)
        .scope(Deadline::after(Duration::from_millis(2_000)).scope(client.get_json("/who")))
        .await
        .unwrap();
    assert_eq!(who.auth, "Bearer user-token");
    assert!(who.traceparent.starts_with("00-4bf92f35"));
    let left: u64 = who.deadline.parse().unwrap();
    assert!(
        left <= 2_000 && left > 1_000,
        "the caller's deadline, not the client's 10 s: {left}"
    );
}

#[tokio::test]
async fn typed_errors_for_status_and_no_instance() {
    let (a, _) = upstream("a").await;
    let client_a = client(&[a], ClientConfig::default());
    match client_a.get_json::<serde_json::Value>("/missing").await {
        Err(CallError::Status { status, problem, .. }) => {
            assert_eq!(status, http::StatusCode::NOT_FOUND);
            assert_eq!(problem.unwrap().slug(), "not-found");
        }
        other => panic!("unexpected {other:?}"),
    }
    let nobody = client(&[], ClientConfig::default());
    assert!(matches!(
        nobody.get_json::<serde_json::Value>("/who").await,
        Err(CallError::NoInstance { .. })
    ));
}
