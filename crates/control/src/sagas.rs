//! Reading the sagas the services run, for the dashboard: each instance that registered saga
//! kinds (metadata [`METADATA_KEY`]) serves them at `/flotilla/sagas` to the control plane
//! alone, over mTLS ([`flotilla::saga::endpoint`]). The control plane calls as itself: a
//! workload certificate naming `spiffe://flotilla/control`, which its own CA issues it without
//! a round trip (kept, and replaced at two thirds of its life), and it checks that the peer
//! is the service it meant. Every passing instance is asked at once, each for at most
//! [`TIMEOUT`]; one that does not answer is reported, never a failed page.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use flotilla::http::{HttpClient, HttpError};
use flotilla::mtls::Workload;
use flotilla::saga::endpoint::{ListQuery, SagaDetail, SagaList, METADATA_KEY, PATH};
use flotilla_api::{Health, Instance};

use crate::ca::{Authority, LEAF_LIFETIME};
use crate::ControlState;

/// How long one instance is given to answer: the dashboard refreshes every few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Why an instance's sagas could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The instance speaks plain HTTP (a system run without mTLS), where nobody can be told
    /// apart: it serves its sagas to no one.
    #[error("it speaks plain HTTP (the system runs without mTLS), and serves its sagas only over mTLS")]
    Plain,
    /// The control plane could not issue itself a certificate.
    #[error("the control plane could not issue itself a certificate: {0}")]
    Identity(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed or was refused.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// One instance's answer.
#[derive(Debug)]
pub struct Answer<T> {
    /// The instance's service.
    pub service: String,
    /// The instance.
    pub instance: String,
    /// What it said.
    pub result: Result<T, ReadError>,
}

/// The passing instances that serve sagas (of `service` only, if given), by service and id.
pub fn instances(state: &ControlState, service: Option<&str>) -> Vec<Instance> {
    state
        .registry
        .list(service)
        .instances
        .into_iter()
        .filter(|i| i.health == Health::Passing && i.metadata.contains_key(METADATA_KEY))
        .collect()
}

/// The sagas of every passing instance of every service that runs some (of `service` only,
/// if given), asked concurrently with `query`.
pub async fn lists(state: &ControlState, service: Option<&str>, query: &ListQuery) -> Vec<Answer<SagaList>> {
    let query = serde_urlencoded::to_string(query).unwrap_or_default();
    let path = if query.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}?{query}")
    };
    ask(state, instances(state, service), &path).await
}

/// One saga of `service`, asked of every passing instance of it at once (they share the
/// service's database): the first that has it, else `None`; and the instances that did not
/// answer (a 404 is an answer).
pub async fn detail(
    state: &ControlState,
    service: &str,
    id: &str,
) -> (Option<Answer<SagaDetail>>, Vec<Answer<SagaDetail>>) {
    let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let answers = ask(state, instances(state, Some(service)), &format!("{PATH}/{encoded}")).await;
    let mut found = None;
    let mut failed = Vec::new();
    for answer in answers {
        match &answer.result {
            Ok(_) if found.is_none() => found = Some(answer),
            Ok(_) => {}
            Err(ReadError::Http(err)) if err.status() == Some(axum::http::StatusCode::NOT_FOUND) => {}
            Err(_) => failed.push(answer),
        }
    }
    (found, failed)
}

async fn ask<T: serde::de::DeserializeOwned>(
    state: &ControlState,
    instances: Vec<Instance>,
    path: &str,
) -> Vec<Answer<T>> {
    let calls = instances.into_iter().map(|instance| {
        // The peer must be the service registered: an address is not an identity.
        let client = match instance.serves_mtls() {
            true => client_for(&state.authority, &instance.service).map_err(ReadError::Identity),
            false => Err(ReadError::Plain),
        };
        let url = format!("https://{}{path}", instance.address);
        async move {
            let result = match client {
                Err(err) => Err(err),
                Ok(client) => match tokio::time::timeout(TIMEOUT, client.get_json::<T>(&url, None)).await {
                    Ok(answer) => answer.map_err(ReadError::from),
                    Err(_) => Err(ReadError::Timeout(TIMEOUT)),
                },
            };
            Answer {
                service: instance.service,
                instance: instance.instance_id,
                result,
            }
        }
    });
    futures_util::future::join_all(calls).await
}

/// The control plane as a client of the services: its certificate, the CA it came from, and
/// a client per service, kept so that the dashboard's refreshes reuse their connections
/// rather than shaking hands with every instance every few seconds.
struct Own {
    ca: String,
    workload: Workload,
    clients: BTreeMap<String, HttpClient>,
}

static OWN: Mutex<Option<Own>> = Mutex::new(None);

/// The client that calls `service`'s instances as the control plane: a certificate its own CA
/// issues it on first use and again at two thirds of its life (or when the CA is another:
/// tests run several control planes), the peer checked to be `service`.
fn client_for(authority: &Authority, service: &str) -> Result<HttpClient, String> {
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = own
        .as_ref()
        .is_some_and(|own| own.ca == authority.ca_pem() && SystemTime::now() < own.workload.renew_at());
    if !fresh {
        let (key, csr) = flotilla::mtls::key_and_csr().map_err(|e| e.to_string())?;
        let issued = authority
            .issue(flotilla_api::identity::CONTROL_SERVICE, &csr, LEAF_LIFETIME)
            .map_err(|e| e.to_string())?;
        let workload =
            Workload::new(&issued.certificate, key, &issued.ca, issued.not_after()).map_err(|e| e.to_string())?;
        *own = Some(Own {
            ca: authority.ca_pem().to_owned(),
            workload,
            clients: BTreeMap::new(),
        });
    }
    let own = own.as_mut().ok_or("no certificate")?;
    let workload = &own.workload;
    Ok(own
        .clients
        .entry(service.to_owned())
        .or_insert_with(|| HttpClient::with_tls(workload.client_config(Some(service)), TIMEOUT))
        .clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use flotilla::mtls::Callers;
    use flotilla::saga::{Saga, SagaEndpoint, SagaRunner, SagaState, SagaStore, StepError};
    use flotilla::store::test_util::TestDatabase;
    use flotilla::store::Store;
    use flotilla_api::registry::meta;
    use flotilla_api::Registration;
    use tokio::net::TcpListener;

    use super::*;
    use crate::{ControlConfig, RegistryConfig};

    async fn control() -> Arc<ControlState> {
        let (_closing, closed) = tokio::sync::watch::channel(false);
        let config = ControlConfig {
            registry: RegistryConfig::default(),
            token: "operator".into(),
            warm_up: Duration::ZERO,
        };
        let storage = crate::Storage::in_memory().await.unwrap();
        Arc::new(ControlState::new(config, storage, closed))
    }

    /// An orders instance serving one waiting saga over mTLS with a certificate of `state`'s
    /// CA, as the SDK's runtime would: the control plane admitted for the platform's routes.
    async fn orders(state: &ControlState) -> (String, TestDatabase) {
        let db = TestDatabase::create("control_sagas").await;
        let store = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        let saga = Saga::new("order").step(
            "authorize-payment",
            |_id, _s: serde_json::Value| async move { Err(StepError::Unavailable("payments: no instance".into())) },
            |_id, s| async move { Ok(s) },
        );
        let runner = SagaRunner::new(saga, SagaStore::prepare(store).await.unwrap());
        runner.start("o-1", &serde_json::json!({})).await.unwrap();
        runner.tick().await.unwrap();
        let endpoint = SagaEndpoint::default();
        endpoint.register(&runner);
        let (key, csr) = flotilla::mtls::key_and_csr().unwrap();
        let issued = state.authority.issue("orders", &csr, LEAF_LIFETIME).unwrap();
        let workload = Workload::new(&issued.certificate, key, &issued.ca, issued.not_after()).unwrap();
        let callers = Callers::only(["gateway"]).admitting_platform(["control"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(flotilla::http::serve(
            listener,
            endpoint.router(),
            Some(workload.server_config(callers)),
            std::future::pending(),
        ));
        (address, db)
    }

    async fn register(state: &ControlState, instance: &str, address: &str, mtls: bool) {
        let mut metadata = BTreeMap::from([(METADATA_KEY.to_owned(), "order".to_owned())]);
        if mtls {
            metadata.insert(meta::TLS.to_owned(), meta::TLS_MUTUAL.to_owned());
        }
        state
            .registry
            .register(Registration {
                service: "orders".into(),
                instance_id: instance.into(),
                address: address.into(),
                version: "1".into(),
                metadata,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn every_instance_is_asked_and_one_that_does_not_answer_is_said() {
        let state = control().await;
        let (address, db) = orders(&state).await;
        register(&state, "orders-1", &address, true).await;
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        register(&state, "orders-2", &gone.to_string(), true).await;
        register(&state, "orders-3", &address, false).await;

        let query = ListQuery {
            status: Some("waiting".into()),
            ..ListQuery::default()
        };
        let answers = lists(&state, None, &query).await;
        let by_instance: BTreeMap<&str, &Answer<SagaList>> = answers.iter().map(|a| (a.instance.as_str(), a)).collect();
        assert_eq!(by_instance.len(), 3);
        let list = by_instance["orders-1"].result.as_ref().unwrap();
        assert_eq!(list.kinds[0].counts.waiting, 1);
        assert_eq!(list.kinds[0].sagas[0].state, SagaState::Waiting);
        assert!(
            matches!(
                by_instance["orders-2"].result,
                Err(ReadError::Http(_) | ReadError::Timeout(_))
            ),
            "{:?}",
            by_instance["orders-2"].result
        );
        assert!(matches!(by_instance["orders-3"].result, Err(ReadError::Plain)));

        let (found, failed) = detail(&state, "orders", "o-1").await;
        let found = found.unwrap();
        assert_eq!(found.instance, "orders-1");
        let saga = found.result.unwrap();
        assert_eq!(saga.history.last().unwrap().event, "waiting");
        assert_eq!(failed.len(), 2, "the instances that did not answer");
        let (missing, _) = detail(&state, "orders", "o-404").await;
        assert!(missing.is_none());
        db.remove().await;
    }
}
