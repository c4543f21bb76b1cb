//! A service whose only instance restarts, through a real registry: the dead instance is
//! still listed (killed, it never deregistered) and its successor registers a moment later.
//! A call in that moment is not failed with `NoInstance`: it waits for the new instance and
//! goes there. Without a successor it tries the dead one again after the wait, and fails.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use flotilla::api::Registration;
use flotilla::client::{pool, ClientConfig, ServiceClient, Stack, Target};
use flotilla::discovery::{Discovery, RegistryClient};
use flotilla::resilience::CallError;
use flotilla_control::{ControlConfig, RegistryConfig};
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

fn registration(id: &str, addr: SocketAddr) -> Registration {
    Registration {
        service: "who".into(),
        instance_id: id.into(),
        address: addr.to_string(),
        version: "1".into(),
        metadata: BTreeMap::new(),
    }
}

#[tokio::test]
async fn a_call_while_the_only_instance_restarts_waits_for_its_successor() {
    let first = control().await;
    let registry = RegistryClient::new(&first.to_string(), Some(TOKEN.into()));
    // The killed instance: registered, nothing listening any more.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    registry.register(&registration("who-old", dead)).await.unwrap();
    let discovery = Discovery::spawn(registry.clone(), std::future::pending());
    discovery.ready().await;
    let client = ServiceClient::new(Stack::new(
        Target::service("who", discovery),
        &ClientConfig::default(),
        pool(),
    ));

    // Its successor comes up 500 ms later.
    let successor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = successor.local_addr().unwrap();
    let started = Instant::now();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let app = Router::new().route("/who", get(|| async { axum::Json("new") }));
        tokio::spawn(async move { axum::serve(successor, app).await });
        registry.register(&registration("who-new", live)).await.unwrap();
    });
    let answer: String = client.get_json("/who").await.unwrap();
    assert_eq!(answer, "new");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "it waited for the successor: {:?}",
        started.elapsed()
    );
    restart.await.unwrap();

    // With nobody coming, it gives up after the wait.
    let lonely = control().await;
    let registry = RegistryClient::new(&lonely.to_string(), Some(TOKEN.into()));
    registry.register(&registration("who-gone", dead)).await.unwrap();
    let discovery = Discovery::spawn(registry, std::future::pending());
    discovery.ready().await;
    let config = ClientConfig {
        wait_for_instance: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    let client = ServiceClient::new(Stack::new(Target::service("who", discovery), &config, pool()));
    let started = Instant::now();
    let err = client.get_json::<String>("/who").await.unwrap_err();
    assert!(
        matches!(err, CallError::Connect { .. }),
        "the dead one tried again: {err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}
