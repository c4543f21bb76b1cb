//! A service's sagas endpoint over real mTLS handshakes, with certificates from the control
//! plane's CA: the control plane reads `/flotilla/sagas` and nothing else of the service; the
//! service's own caller reaches its routes but not the sagas; a service on neither list is
//! refused in the handshake.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use flotilla::http::{HttpClient, HttpError};
use flotilla::mtls::Workload;
use flotilla::runtime::{Service, ServiceEnv};
use flotilla::saga::endpoint::SagaList;
use flotilla::saga::{Saga, SagaEndpoint, SagaRunner, SagaStore, StepError};
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use flotilla_control::ca::{Authority, LEAF_LIFETIME};
use tokio::net::TcpListener;

fn workload(ca: &Authority, service: &str) -> Workload {
    let (key, csr) = flotilla::mtls::key_and_csr().unwrap();
    let issued = ca.issue(service, &csr, LEAF_LIFETIME).unwrap();
    Workload::new(&issued.certificate, key, &issued.ca, issued.not_after()).unwrap()
}

async fn call(client: &Workload, url: &str) -> Result<u16, HttpError> {
    let client = HttpClient::with_tls(client.client_config(Some("orders")), Duration::from_secs(5));
    let (status, _, _, _) = client.send_raw::<()>(http::Method::GET, url, None, None, None).await?;
    Ok(status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_control_plane_reads_the_sagas_and_it_reads_nothing_else() {
    let ca = Authority::ephemeral().unwrap();
    // This process is the orders instance: the runtime serves mTLS with its identity.
    flotilla::mtls::install(workload(&ca, "orders"));
    let db = TestDatabase::create("saga_mtls").await;
    let store = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    let saga = Saga::new("order").step(
        "authorize-payment",
        |_id, s: serde_json::Value| async move {
            let _ = s;
            Err::<serde_json::Value, _>(StepError::Unavailable("payments: no instance".into()))
        },
        |_id, s| async move { Ok(s) },
    );
    let runner = SagaRunner::new(saga, SagaStore::prepare(store).await.unwrap());
    runner.start("o-1", &serde_json::json!({})).await.unwrap();
    runner.tick().await.unwrap();
    let sagas = SagaEndpoint::default();
    sagas.register(&runner);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let service = Service::new("orders", "1.0.0")
        .env(ServiceEnv::default())
        .callers(["gateway"])
        .router(Router::new().route("/api/v1/orders", get(|| async { "orders" })))
        .platform(sagas.router());
    tokio::spawn(service.run(listener, std::future::pending()));

    let control = workload(&ca, "control");
    let list = HttpClient::with_tls(control.client_config(Some("orders")), Duration::from_secs(5))
        .get_json::<SagaList>(&format!("{base}/flotilla/sagas?status=waiting"), None)
        .await
        .unwrap();
    assert_eq!(list.kinds[0].sagas[0].id, "o-1");
    assert_eq!(list.kinds[0].sagas[0].last_error, "payments: no instance");
    assert_eq!(
        call(&control, &format!("{base}/flotilla/sagas/o-1")).await.unwrap(),
        200
    );
    let fenced = call(&control, &format!("{base}/api/v1/orders")).await.unwrap_err();
    assert_eq!(fenced.status().map(|s| s.as_u16()), Some(403), "{fenced}");

    let gateway = workload(&ca, "gateway");
    assert_eq!(call(&gateway, &format!("{base}/api/v1/orders")).await.unwrap(), 200);
    let refused = call(&gateway, &format!("{base}/flotilla/sagas")).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(403), "{refused}");

    let catalog = workload(&ca, "catalog");
    let refused = call(&catalog, &format!("{base}/flotilla/sagas")).await.unwrap_err();
    assert!(
        matches!(refused, HttpError::Transport { .. }),
        "refused in the handshake: {refused}"
    );
    db.remove().await;
}
