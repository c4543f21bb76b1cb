//! The sagas a service runs, served to the control plane for the dashboard: every service
//! whose runners were made through (or registered with) its [`crate::app::Setup`] answers
//!
//! * `GET /flotilla/sagas?status=&kind=&limit=` — per kind, its steps, how many instances are
//!   in each [`SagaState`] (all of them, whatever the filter), and the newest `limit`
//!   (default 50, at most 500) instances in `status` (one of `running`, `waiting`,
//!   `compensating`, `done`, `failed`), the most recently changed first ([`SagaList`]);
//! * `GET /flotilla/sagas/{id}` — one instance with every transition ([`SagaDetail`]).
//!
//! Without the instances' state: that is the owner's (users') data, and the dashboard needs
//! where an instance is, not what it carries. Even so, the routes are the platform's: they
//! answer only the control plane, known by its workload certificate over mTLS
//! ([`crate::runtime::platform`]); on a plain connection they refuse everyone. The instance
//! says in the registry which kinds it serves ([`METADATA_KEY`]), so the control plane asks
//! only the instances that have sagas to show.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use flotilla_api::Problem;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::store::{SagaState, SagaStatus, SagaSummary, StateCounts};
use super::{SagaRunner, SagaStore, Transition};
use crate::http::{Json, Query};

/// Where the list is served.
pub const PATH: &str = "/flotilla/sagas";

/// The registry metadata key naming the saga kinds an instance serves (`order,refund`).
pub const METADATA_KEY: &str = "sagas";

/// How many instances a list holds unless asked.
pub const DEFAULT_LIMIT: i64 = 50;

/// The most instances one list holds.
pub const MAX_LIMIT: i64 = 500;

/// The kinds a service runs, to serve: each kind's store and its steps' names. Cheap to
/// clone; clones share the kinds.
#[derive(Clone, Default)]
pub struct SagaEndpoint {
    kinds: Arc<Mutex<BTreeMap<String, Kind>>>,
}

#[derive(Clone)]
struct Kind {
    store: SagaStore,
    steps: Vec<String>,
}

impl std::fmt::Debug for SagaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaEndpoint").field("kinds", &self.kinds()).finish()
    }
}

impl SagaEndpoint {
    /// Serves `runner`'s kind (a second runner of the same kind replaces the first).
    pub fn register<S>(&self, runner: &SagaRunner<S>)
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let kind = Kind {
            store: runner.store().clone(),
            steps: runner.saga.step_names().into_iter().map(str::to_owned).collect(),
        };
        self.lock().insert(runner.saga.kind.clone(), kind);
    }

    /// The kinds served, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether no kind is served (then there is nothing to route).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Kind>> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kind(&self, kind: &str) -> Option<Kind> {
        self.lock().get(kind).cloned()
    }

    /// The two routes, guarded: they answer only a platform caller
    /// ([`crate::runtime::platform::only_platform`]) wherever they are merged.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, get(list))
            .route(&format!("{PATH}/{{id}}"), get(one))
            .layer(axum::middleware::from_fn(crate::runtime::platform::only_platform))
            .with_state(self.clone())
    }
}

/// The list's filters, as a URL's query gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    /// Only instances in this state (`waiting`); every state when unset or empty.
    pub status: Option<String>,
    /// Only this kind; every kind when unset or empty.
    pub kind: Option<String>,
    /// At most this many instances per kind ([`DEFAULT_LIMIT`] unless given; at most
    /// [`MAX_LIMIT`]).
    pub limit: Option<i64>,
}

/// `GET /flotilla/sagas`: the kinds a service runs, each with its counts and newest instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaList {
    /// Every kind asked for, by name.
    pub kinds: Vec<KindSagas>,
}

/// One kind in a [`SagaList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSagas {
    /// The kind.
    pub kind: String,
    /// Its steps' names, in order.
    pub steps: Vec<String>,
    /// How many of its instances are in each state (every instance, whatever the filter).
    pub counts: StateCounts,
    /// Its newest instances that pass the filter, the most recently changed first.
    pub sagas: Vec<SagaSummary>,
}

/// `GET /flotilla/sagas/{id}`: one instance and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaDetail {
    /// Where it is.
    pub saga: SagaSummary,
    /// Its kind's steps' names, in order.
    pub steps: Vec<String>,
    /// Every transition, oldest first.
    pub history: Vec<Transition>,
}

/// The name of the step a summary is at: the one running, or (compensating) the one being
/// undone; none once it ended or between its last compensation and its end.
fn step_name(steps: &[String], saga: &SagaSummary) -> String {
    let at = match saga.status {
        SagaStatus::Running | SagaStatus::Failed => saga.step,
        SagaStatus::Compensating => saga.step - 1,
        SagaStatus::Completed | SagaStatus::Compensated => return String::new(),
    };
    usize::try_from(at)
        .ok()
        .and_then(|at| steps.get(at))
        .cloned()
        .unwrap_or_default()
}

/// A store's failure as the caller sees it: 500, logged with its cause, no detail out.
fn unavailable(err: sqlx::Error) -> Problem {
    tracing::error!(error = %err, "reading the sagas failed");
    Problem::internal()
}

async fn list(State(endpoint): State<SagaEndpoint>, Query(query): Query<ListQuery>) -> Result<Json<SagaList>, Problem> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let state = match given(&query.status) {
        None => None,
        Some(text) => Some(SagaState::parse(&text).ok_or_else(|| {
            Problem::invalid_field(
                "status",
                format!("`{text}` is not a state: running, waiting, compensating, done or failed"),
            )
        })?),
    };
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(Problem::invalid_field(
                "limit",
                format!("{n} is not between 1 and {MAX_LIMIT}"),
            ))
        }
    };
    let kinds: Vec<(String, Kind)> = match given(&query.kind) {
        Some(kind) => endpoint.kind(&kind).map(|k| (kind, k)).into_iter().collect(),
        None => endpoint.lock().iter().map(|(n, k)| (n.clone(), k.clone())).collect(),
    };
    let mut answer = SagaList::default();
    for (kind, Kind { store, steps }) in kinds {
        let counts = store.counts(&kind).await.map_err(unavailable)?;
        let mut sagas = store.summaries(&kind, state, limit).await.map_err(unavailable)?;
        for saga in &mut sagas {
            saga.step_name = step_name(&steps, saga);
        }
        answer.kinds.push(KindSagas {
            kind,
            steps,
            counts,
            sagas,
        });
    }
    Ok(Json(answer))
}

async fn one(State(endpoint): State<SagaEndpoint>, Path(id): Path<String>) -> Result<Json<SagaDetail>, Problem> {
    let not_found = || Problem::not_found(format!("no saga `{id}` here"));
    // Any kind served keeps its instances in its store; they may share one.
    let kinds: Vec<Kind> = endpoint.lock().values().cloned().collect();
    for Kind { store, .. } in kinds {
        let Some(mut saga) = store.summary(&id).await.map_err(unavailable)? else {
            continue;
        };
        // An instance of a kind this service does not serve stays unseen.
        let Some(kind) = endpoint.kind(&saga.kind) else {
            return Err(not_found());
        };
        saga.step_name = step_name(&kind.steps, &saga);
        let history = kind.store.history(&id).await.map_err(unavailable)?;
        return Ok(Json(SagaDetail {
            saga,
            steps: kind.steps,
            history,
        }));
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::mtls::Peer;
    use crate::saga::{Saga, StepError};
    use crate::store::test_util::TestDatabase;
    use crate::store::Store;

    /// reserve → authorize → ship, where an id says how authorize goes: `wait-…` finds
    /// payments away, `reject-…` is declined, `stuck-…` is declined and then cannot undo its
    /// reservation; anything else succeeds.
    fn saga() -> Saga<serde_json::Value> {
        let ok = |_id: String, s: serde_json::Value| async move { Ok(s) };
        Saga::new("order")
            .step("reserve", ok, |id: String, s| async move {
                if id.starts_with("stuck") {
                    Err(StepError::Failed("inventory refused the release".into()))
                } else {
                    Ok(s)
                }
            })
            .step(
                "authorize",
                |id: String, s| async move {
                    match id.split('-').next() {
                        Some("wait") => Err(StepError::Unavailable("payments: no instance".into())),
                        Some("reject" | "stuck") => Err(StepError::Rejected("card declined".into())),
                        _ => Ok(s),
                    }
                },
                ok,
            )
            .step("ship", ok, ok)
    }

    /// One instance in each state, on a throwaway database (SQLite, or PostgreSQL when
    /// `FLOTILLA_TEST_POSTGRES` names a server).
    async fn endpoint() -> (SagaEndpoint, SagaRunner<serde_json::Value>, TestDatabase) {
        let db = TestDatabase::create("saga_endpoint").await;
        let store = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        let runner = SagaRunner::new(saga(), SagaStore::prepare(store).await.unwrap());
        for id in ["done-1", "done-2", "reject-1", "wait-1", "stuck-1"] {
            runner.start(id, &serde_json::json!({ "order": id })).await.unwrap();
        }
        let started = std::time::Instant::now();
        loop {
            let get = |id: &'static str| {
                let store = runner.store().clone();
                async move { store.summary(id).await.unwrap().unwrap() }
            };
            let (done, rejected, waiting, stuck) = (
                get("done-2").await,
                get("reject-1").await,
                get("wait-1").await,
                get("stuck-1").await,
            );
            if done.state == SagaState::Done
                && rejected.state == SagaState::Failed
                && waiting.waits > 0
                && stuck.state == SagaState::Compensating
                && stuck.attempts > 0
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stuck: {waiting:?} {stuck:?}"
            );
            runner.tick().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Started after the others moved on: at its first step.
        runner.start("new-1", &serde_json::json!({})).await.unwrap();
        let endpoint = SagaEndpoint::default();
        endpoint.register(&runner);
        (endpoint, runner, db)
    }

    #[tokio::test]
    async fn counts_by_state_come_from_one_grouped_query() {
        let (_, runner, db) = endpoint().await;
        let counts = runner.store().counts("order").await.unwrap();
        assert_eq!(
            counts,
            StateCounts {
                running: 1,
                waiting: 1,
                compensating: 1,
                done: 2,
                failed: 1,
            },
            "on {:?}",
            db.engine()
        );
        assert_eq!(counts.total(), 6);
        assert_eq!(runner.store().counts("refund").await.unwrap(), StateCounts::default());
        let waiting = runner
            .store()
            .summaries("order", Some(SagaState::Waiting), 10)
            .await
            .unwrap();
        assert_eq!(waiting.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["wait-1"]);
        assert_eq!(waiting[0].last_error, "payments: no instance");
        let all = runner.store().summaries("order", None, 10).await.unwrap();
        assert_eq!(all.len(), 6);
        assert!(
            all.windows(2).all(|w| w[0].updated_ms >= w[1].updated_ms),
            "newest change first"
        );
        assert_eq!(runner.store().summaries("order", None, 2).await.unwrap().len(), 2);
        db.remove().await;
    }

    fn control() -> Peer {
        Peer {
            tls: true,
            service: Some(Arc::from("control")),
        }
    }

    async fn get(router: &Router, uri: &str, peer: Option<Peer>) -> (u16, serde_json::Value, String) {
        let mut request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default(), cache)
    }

    #[tokio::test]
    async fn the_control_plane_reads_the_list_and_one_saga_with_its_history() {
        let (endpoint, _runner, db) = endpoint().await;
        let router = endpoint.router();
        let (status, body, cache) = get(&router, "/flotilla/sagas", Some(control())).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(cache, "no-store", "users' data is never cached");
        let list: SagaList = serde_json::from_value(body).unwrap();
        assert_eq!(list.kinds.len(), 1);
        let order = &list.kinds[0];
        assert_eq!(order.steps, ["reserve", "authorize", "ship"]);
        assert_eq!(order.counts.waiting, 1);
        assert_eq!(order.sagas.len(), 6);
        let waiting = order.sagas.iter().find(|s| s.id == "wait-1").unwrap();
        assert_eq!(
            (waiting.state, waiting.step_name.as_str()),
            (SagaState::Waiting, "authorize")
        );
        let stuck = order.sagas.iter().find(|s| s.id == "stuck-1").unwrap();
        assert_eq!(stuck.step_name, "reserve", "the step being undone");
        assert!(
            !serde_json::to_string(&list).unwrap().contains("\"order\":\"wait-1\""),
            "no state"
        );

        let (status, body, _) = get(
            &router,
            "/flotilla/sagas?status=waiting&kind=order&limit=5",
            Some(control()),
        )
        .await;
        assert_eq!(status, 200);
        let list: SagaList = serde_json::from_value(body).unwrap();
        assert_eq!(
            list.kinds[0].sagas.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["wait-1"]
        );
        assert_eq!(list.kinds[0].counts.total(), 6, "the counts are never filtered");
        let (_, body, _) = get(&router, "/flotilla/sagas?kind=refund", Some(control())).await;
        assert_eq!(body["kinds"], serde_json::json!([]));
        for bad in ["status=stalled", "limit=0", "limit=501", "state=waiting"] {
            let (status, body, _) = get(&router, &format!("/flotilla/sagas?{bad}"), Some(control())).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }

        let (status, body, _) = get(&router, "/flotilla/sagas/reject-1", Some(control())).await;
        assert_eq!(status, 200, "{body}");
        let detail: SagaDetail = serde_json::from_value(body).unwrap();
        assert_eq!(detail.saga.state, SagaState::Failed);
        assert_eq!(detail.saga.status, SagaStatus::Compensated);
        assert_eq!(detail.saga.reason, "card declined");
        let events: Vec<(&str, &str)> = detail
            .history
            .iter()
            .map(|t| (t.step.as_str(), t.event.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                ("", "started"),
                ("reserve", "done"),
                ("authorize", "failed"),
                ("reserve", "compensated"),
                ("", "compensated"),
            ]
        );
        assert!(detail.history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let (status, body, _) = get(&router, "/flotilla/sagas/nobody", Some(control())).await;
        assert_eq!((status, body["status"].as_u64()), (404, Some(404)));
        db.remove().await;
    }

    #[tokio::test]
    async fn anyone_but_the_control_plane_over_mtls_is_refused() {
        let (endpoint, _runner, db) = endpoint().await;
        let router = endpoint.router();
        let gateway = Peer {
            tls: true,
            service: Some(Arc::from("gateway")),
        };
        for uri in ["/flotilla/sagas", "/flotilla/sagas/wait-1"] {
            for peer in [Some(gateway.clone()), Some(Peer::default()), None] {
                let (status, body, _) = get(&router, uri, peer.clone()).await;
                assert_eq!(status, 403, "{uri} by {peer:?}");
                assert!(body.get("kinds").is_none() && body.get("saga").is_none(), "{body}");
            }
        }
        db.remove().await;
    }
}
