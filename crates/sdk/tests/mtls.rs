//! Workload certificates from a real control plane's CA, rotated under load: with 3-second
//! certificates renewed at two thirds of their life, a caller on kept-alive connections and
//! one that opens a new connection (a new handshake) for every request lose nothing while
//! both sides' certificates are replaced several times over, and handshakes long after the
//! first certificates expired still succeed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use flotilla::http::HttpClient;
use flotilla::mtls::{enroll, keep_renewed, Callers, Enrollment, Peer, Workload};
use flotilla_control::{ControlConfig, RegistryConfig};
use tokio::net::TcpListener;

const TOKEN: &str = "operator-token";

/// A control plane with its mTLS listener; (plain, tls) addresses.
async fn control() -> (SocketAddr, SocketAddr) {
    let storage = flotilla_control::Storage::in_memory().await.unwrap();
    let (plain, tls) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let addrs = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    tokio::spawn(flotilla_control::serve_with_tls(
        plain,
        Some(tls),
        config,
        storage,
        std::future::pending(),
    ));
    addrs
}

/// A workload of `service` with `life`-long certificates, renewed in the background.
async fn workload(plain: SocketAddr, tls: SocketAddr, service: &str, life: Duration) -> Workload {
    let ca = HttpClient::default();
    let (_, _, _, ca_pem) = ca
        .send_raw::<()>(
            http::Method::GET,
            &format!("http://{plain}/v1/identity/ca"),
            Some(TOKEN),
            None,
            None,
        )
        .await
        .unwrap();
    let enrollment = Enrollment {
        control: format!("https://{tls}"),
        token: Some(TOKEN.into()),
        ca_pem: String::from_utf8(ca_pem.to_vec()).unwrap(),
        lifetime: Some(life),
        service: Some(service.into()),
    };
    let workload = enroll(&enrollment).await.unwrap();
    tokio::spawn(keep_renewed(workload.clone(), enrollment));
    workload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotation_under_load_loses_no_request() {
    let (plain, tls) = control().await;
    let life = Duration::from_secs(3);
    let payments = workload(plain, tls, "payments", life).await;
    let orders = workload(plain, tls, "orders", life).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/who", listener.local_addr().unwrap());
    let router = Router::new().route(
        "/who",
        get(|Extension(peer): Extension<Peer>| async move { peer.service.as_deref().unwrap_or("-").to_owned() }),
    );
    tokio::spawn(flotilla::http::serve(
        listener,
        router,
        Some(payments.server_config(Callers::only(["orders"]))),
        std::future::pending(),
    ));

    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let run_for = Duration::from_secs(9);
    let started = Instant::now();
    let mut callers = Vec::new();
    for fresh in [false, false, false, true] {
        let (orders, url, ok, failed) = (orders.clone(), url.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let kept = HttpClient::with_tls(orders.client_config(Some("payments")), Duration::from_secs(5));
            while started.elapsed() < run_for {
                // A new client is a new connection: a handshake with the certificates in force.
                let client = if fresh {
                    HttpClient::with_tls(orders.client_config(Some("payments")), Duration::from_secs(5))
                } else {
                    kept.clone()
                };
                match client.send_raw::<()>(http::Method::GET, &url, None, None, None).await {
                    Ok((_, _, _, body)) if &body[..] == b"orders" => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("a request failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(if fresh { 20 } else { 5 })).await;
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{ok} requests, {failed} failed; renewals: payments {}, orders {}",
        payments.renewals(),
        orders.renewals()
    );
    assert_eq!(failed, 0, "no request is lost to a rotation");
    assert!(ok > 500, "the load ran: {ok}");
    // 9 s of 3 s certificates renewed at 2 s: both sides rotated several times, and the
    // handshakes of the last seconds were made long after the first certificates expired.
    assert!(
        payments.renewals() >= 3,
        "payments renewed {} times",
        payments.renewals()
    );
    assert!(orders.renewals() >= 3, "orders renewed {} times", orders.renewals());
}

#[tokio::test]
async fn the_control_plane_takes_a_service_credential_only_with_a_matching_certificate() {
    let (plain, tls) = control().await;
    let orders = workload(plain, tls, "orders", Duration::from_secs(3600)).await;
    let payments = workload(plain, tls, "payments", Duration::from_secs(3600)).await;
    // A credential of payments' (minted the way `up` mints them), over orders' certificate.
    let credential = flotilla_control::acl::Keyring::new(TOKEN)
        .service("payments", "p1")
        .unwrap();
    let registration = serde_json::json!({"service": "payments", "instance_id": "p1", "address": "127.0.0.1:9"});
    let register = |workload: &Workload| {
        let client = HttpClient::with_tls(workload.client_config(Some("control")), Duration::from_secs(5));
        let (url, credential, registration) = (
            format!("https://{tls}/v1/registry/instances"),
            credential.clone(),
            registration.clone(),
        );
        async move {
            client
                .send::<_, serde_json::Value>(http::Method::POST, &url, Some(&credential), Some(&registration), None)
                .await
        }
    };
    let err = register(&orders).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    register(&payments).await.unwrap();
    // And never on the plain listener.
    let plain_client = HttpClient::default();
    let err = plain_client
        .send::<_, serde_json::Value>(
            http::Method::POST,
            &format!("http://{plain}/v1/registry/instances"),
            Some(&credential),
            Some(&registration),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
    // Unless the operator declared the service plain (one written without the SDK): then its
    // credential is taken there, and still speaks only for it.
    let config = flotilla::config::ConfigClient::new(&plain.to_string(), Some(TOKEN.to_owned()));
    let key = flotilla::api::config::ConfigKey::new("control", "default", flotilla_control::PLAIN_SERVICES_KEY);
    config
        .set(&key, serde_json::json!(["payments"]), false, Default::default())
        .await
        .unwrap();
    let send_plain = |body: serde_json::Value| {
        let (client, url, credential) = (
            plain_client.clone(),
            format!("http://{plain}/v1/registry/instances"),
            credential.clone(),
        );
        async move {
            client
                .send::<_, serde_json::Value>(http::Method::POST, &url, Some(&credential), Some(&body), None)
                .await
        }
    };
    send_plain(registration.clone()).await.unwrap();
    let as_orders = serde_json::json!({"service": "orders", "instance_id": "p1", "address": "127.0.0.1:9"});
    let err = send_plain(as_orders).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
}
