//! Fault rules through a real control plane: a service run by the SDK's runtime follows the
//! `faults` key of its scope, delays or fails its application requests as the rules say and
//! never its health checks, goes back to normal when the key is deleted, and its own live
//! configuration is not disturbed by the key.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use flotilla::api::config::ConfigKey;
use flotilla::api::faults::FAULTS_KEY;
use flotilla::config::{ConfigClient, ConfigLoader, Write};
use flotilla::http::HttpClient;
use flotilla::runtime::{Service, ServiceEnv};
use flotilla_control::{ControlConfig, RegistryConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

const TOKEN: &str = "test-token";

async fn control() -> SocketAddr {
    let storage = flotilla_control::Storage::in_memory().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    tokio::spawn(flotilla_control::serve(
        listener,
        config,
        storage,
        std::future::pending(),
    ));
    addr
}

/// The service's own configuration, as strict as the shop's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Knobs {
    page_size: u32,
}

/// (status, content type, time taken) of a GET.
async fn get_timed(http: &HttpClient, addr: SocketAddr, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let result = http
        .send_raw::<()>(http::Method::GET, &format!("http://{addr}{path}"), None, None, None)
        .await;
    let took = started.elapsed();
    match result {
        Ok((status, headers, _, _)) => {
            let content_type = headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status.as_u16(), content_type, took)
        }
        Err(flotilla::http::HttpError::Status { problem, .. }) => {
            (problem.status, "application/problem+json".into(), took)
        }
        Err(err) => panic!("GET {path}: {err}"),
    }
}

/// Calls `path` until `check` holds for an answer (the rules travel by watch: milliseconds).
async fn until(
    http: &HttpClient,
    addr: SocketAddr,
    path: &str,
    what: &str,
    check: impl Fn(&(u16, String, Duration)) -> bool,
) -> (u16, String, Duration) {
    let started = Instant::now();
    loop {
        let answer = get_timed(http, addr, path).await;
        if check(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never {what}: last {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_service_delays_and_fails_its_application_requests_as_its_fault_rules_say() {
    let control = control().await;
    let admin = ConfigClient::new(&control.to_string(), Some(TOKEN.into()));
    let env = ServiceEnv {
        control_addr: Some(control.to_string()),
        token: Some(TOKEN.into()),
        ..ServiceEnv::default()
    };
    let knobs = ConfigLoader::<Knobs>::new("catalog")
        .env_prefix("TEST_FAULTS_NONE_")
        .start(Some(admin.clone()), std::future::pending())
        .unwrap();
    let listener = Service::bind(None).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/products", get(|| async { "[]" }))
        .route("/products/{id}", get(|| async { "{}" }));
    let service = Service::new("catalog", "1").env(env).config(&knobs).router(router);
    tokio::spawn(service.run(listener, std::future::pending()));
    let http = HttpClient::new(Duration::from_secs(5));
    let (_, _, took) = until(&http, addr, "/products", "served", |a| a.0 == 200).await;
    assert!(took < Duration::from_millis(300), "{took:?} before any rule");

    let key = ConfigKey::new("catalog", "default", FAULTS_KEY);
    let delay = json!([{"id": "d1", "kind": "delay", "delay_ms": 300, "share": 1.0}]);
    admin.set(&key, delay, false, Write::default()).await.unwrap();
    until(&http, addr, "/products", "delayed", |a| {
        a.2 >= Duration::from_millis(300)
    })
    .await;
    for _ in 0..3 {
        let (status, _, took) = get_timed(&http, addr, "/products").await;
        assert_eq!(status, 200);
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let (status, _, took) = get_timed(&http, addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(took < Duration::from_millis(300), "{path} took {took:?}");
    }

    // The key is not the service's own: its strict configuration still applies changes.
    let page_size = ConfigKey::new("catalog", "default", "page_size");
    admin.set(&page_size, json!(7), false, Write::default()).await.unwrap();
    let started = Instant::now();
    while knobs.current().page_size != 7 {
        assert!(started.elapsed() < Duration::from_secs(10), "page_size never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let abort = json!([{"id": "a1", "kind": "abort", "status": 503, "share": 1.0}]);
    admin.set(&key, abort, false, Write::default()).await.unwrap();
    let (_, content_type, took) = until(&http, addr, "/products", "aborted", |a| a.0 == 503).await;
    assert_eq!(content_type, "application/problem+json");
    assert!(
        took < Duration::from_millis(300),
        "an abort alone answers at once: {took:?}"
    );
    assert_eq!(get_timed(&http, addr, "/health/ready").await.0, 200);

    // A rule aimed at one method and path leaves every other request alone.
    let aimed = json!([{"id": "a4", "kind": "abort", "status": 409, "method": "GET", "path": "/products/*"}]);
    admin.set(&key, aimed, false, Write::default()).await.unwrap();
    until(&http, addr, "/products/7", "aimed", |a| a.0 == 409).await;
    assert_eq!(get_timed(&http, addr, "/products").await.0, 200);

    // A rule that has ended does nothing, and a deleted key clears every rule.
    let ended = json!([{"id": "a2", "kind": "abort", "share": 1.0, "until_ms": 1}]);
    admin.set(&key, ended, false, Write::default()).await.unwrap();
    until(&http, addr, "/products", "back to normal", |a| a.0 == 200).await;
    admin
        .set(&key, json!([{"id": "a3", "kind": "abort"}]), false, Write::default())
        .await
        .unwrap();
    until(&http, addr, "/products", "aborted again", |a| a.0 == 503).await;
    admin.delete(&key, Write::default()).await.unwrap();
    until(&http, addr, "/products", "cleared", |a| a.0 == 200).await;
}
