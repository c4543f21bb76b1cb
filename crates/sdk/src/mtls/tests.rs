use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Extension, Router};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::*;
use crate::http::HttpClient;

/// A CA of the test's own, standing in for the control plane's.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A workload of `service` under this CA, its certificate naming `spiffe_ids`.
    fn workload_named(&self, spiffe_ids: &[String]) -> Result<Workload, MtlsError> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = spiffe_ids
            .iter()
            .map(|id| SanType::URI(id.clone().try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Workload::new(
            &cert.pem(),
            key.serialize_der(),
            &self.pem,
            SystemTime::now() + Duration::from_secs(3600),
        )
    }

    fn workload(&self, service: &str) -> Workload {
        self.workload_named(&[flotilla_api::identity::spiffe_id(service)])
            .unwrap()
    }
}

/// Serves a route answering with the caller's service, as the handshake found it.
async fn server(workload: &Workload, callers: Callers) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/who",
        get(|Extension(peer): Extension<Peer>| async move { peer.service.as_deref().unwrap_or("-").to_owned() }),
    );
    tokio::spawn(crate::http::serve(
        listener,
        router,
        Some(workload.server_config(callers)),
        std::future::pending(),
    ));
    format!("https://{addr}/who")
}

async fn call(config: ClientConfig, url: &str) -> Result<String, crate::http::HttpError> {
    let client = HttpClient::with_tls(config, Duration::from_secs(5));
    let (_, _, _, body) = client.send_raw::<()>(http::Method::GET, url, None, None, None).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_allowed_caller_is_served_and_named_to_the_handler() {
    let ca = Ca::new();
    let url = server(&ca.workload("payments"), Callers::only(["orders"])).await;
    let orders = ca.workload("orders");
    assert_eq!(
        call(orders.client_config(Some("payments")), &url).await.unwrap(),
        "orders"
    );
}

#[tokio::test]
async fn a_caller_without_a_certificate_or_not_allowed_is_refused_in_the_handshake() {
    let ca = Ca::new();
    let url = server(&ca.workload("payments"), Callers::only(["orders"])).await;
    // No certificate at all: the CA is known, nothing is presented.
    let anonymous = bootstrap_client_config(&ca.pem, "payments").unwrap();
    let err = call(anonymous, &url).await.unwrap_err();
    assert!(matches!(err, crate::http::HttpError::Transport { .. }), "{err}");
    // A good certificate of a service that may not call payments.
    let catalog = ca.workload("catalog");
    let err = call(catalog.client_config(Some("payments")), &url).await.unwrap_err();
    assert!(matches!(err, crate::http::HttpError::Transport { .. }), "{err}");
    // A certificate naming an allowed service, from another CA.
    let impostor = Ca::new().workload("orders");
    let err = call(impostor.client_config(Some("payments")), &url).await.unwrap_err();
    assert!(matches!(err, crate::http::HttpError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn a_client_refuses_a_server_that_is_not_the_service_it_meant() {
    let ca = Ca::new();
    let url = server(&ca.workload("catalog"), Callers::only(["orders"])).await;
    let orders = ca.workload("orders");
    let err = call(orders.client_config(Some("payments")), &url).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(call(orders.client_config(None), &url).await.unwrap(), "orders");
}

#[tokio::test]
async fn the_allow_list_changes_for_the_next_handshake() {
    let ca = Ca::new();
    let callers = Callers::only(["orders"]);
    let url = server(&ca.workload("payments"), callers.clone()).await;
    let catalog = ca.workload("catalog");
    assert!(call(catalog.client_config(Some("payments")), &url).await.is_err());
    callers.set(["orders", "catalog"]);
    assert_eq!(
        call(catalog.client_config(Some("payments")), &url).await.unwrap(),
        "catalog"
    );
}

#[tokio::test]
async fn a_listener_for_anyone_checks_a_certificate_only_when_one_is_presented() {
    let ca = Ca::new();
    let url = server(&ca.workload("control"), Callers::anyone()).await;
    assert_eq!(
        call(bootstrap_client_config(&ca.pem, "control").unwrap(), &url)
            .await
            .unwrap(),
        "-"
    );
    assert_eq!(
        call(ca.workload("orders").client_config(Some("control")), &url)
            .await
            .unwrap(),
        "orders"
    );
    let impostor = Ca::new().workload("orders");
    assert!(call(impostor.client_config(None), &url).await.is_err());
}

#[test]
fn a_certificate_must_name_exactly_one_service_of_the_trust_domain() {
    let ca = Ca::new();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["payments.example".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let none = Workload::new(&cert.pem(), key.serialize_der(), &ca.pem, SystemTime::now());
    assert!(matches!(none, Err(MtlsError::NoIdentity)));
    let two = ca.workload_named(&[
        flotilla_api::identity::spiffe_id("a"),
        flotilla_api::identity::spiffe_id("b"),
    ]);
    assert!(
        matches!(two, Err(MtlsError::NoIdentity)),
        "two SPIFFE IDs make no identity"
    );
}

#[test]
fn a_renewal_must_keep_the_service() {
    let ca = Ca::new();
    let orders = ca.workload("orders");
    let at = orders.renew_at();
    assert!(at > SystemTime::now() + Duration::from_secs(2000) && at < orders.not_after());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        flotilla_api::identity::spiffe_id("payments").try_into().unwrap(),
    )];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    assert!(orders.renew(&cert.pem(), key.serialize_der(), &ca.pem, later).is_err());
    assert_eq!(orders.renewals(), 0);
}

#[tokio::test]
async fn any_service_lets_in_every_workload_of_the_ca_and_nobody_else() {
    let ca = Ca::new();
    let url = server(&ca.workload("identity"), Callers::only([ANY_SERVICE])).await;
    let reviews = ca.workload("reviews");
    assert_eq!(
        call(reviews.client_config(Some("identity")), &url).await.unwrap(),
        "reviews"
    );
    // Still a certificate, and one of this CA.
    let anonymous = bootstrap_client_config(&ca.pem, "identity").unwrap();
    assert!(call(anonymous, &url).await.is_err());
    let stranger = Ca::new().workload("reviews");
    assert!(call(stranger.client_config(Some("identity")), &url).await.is_err());
}
