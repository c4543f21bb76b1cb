//! The control plane's HTTP API, under `/v1`. Deny by default: every request but the health
//! checks and the OpenAPI document carries a credential, and [`crate::acl`] says what its
//! principal may do. Each handler tells [`openapi`] what it takes and answers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use flotilla::http::{with_problem_fallbacks, Json, Query};
use flotilla::utoipa::{self, IntoParams, ToSchema};
use flotilla_api::{InstanceList, Lease, Problem, Registration, ServiceSummary, INDEX_HEADER};
use serde::{Deserialize, Serialize};

pub mod openapi;

pub use crate::acl::Principal;
use crate::registry::{Registered, Registry, RegistryError};
use crate::ControlState;

/// Where an instance asks for its certificate.
const CERTIFICATES: &str = "/v1/identity/certificates";

/// The longest a blocking query may wait.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long a blocking query waits when it names an index but no `wait`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The whole API as an axum router.
pub fn router(state: Arc<ControlState>) -> Router {
    let api = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/v1/control", get(replica_status))
        // A public contract, like the health checks: no credential asked.
        .merge(flotilla::openapi::route_at(openapi::PATH, openapi::document()))
        .route("/v1/registry/instances", post(register).get(list_instances))
        .route("/v1/registry/instances/{id}", axum::routing::delete(deregister))
        .route("/v1/registry/instances/{id}/heartbeat", put(heartbeat))
        .route("/v1/registry/services", get(list_services))
        .route("/v1/registry/services/{name}", get(list_service))
        .route("/v1/identity/ca", get(authority))
        .route(CERTIFICATES, post(certificate))
        .merge(crate::config::http::routes())
        .merge(crate::events::http::routes())
        .merge(crate::telemetry::http::routes())
        .with_state(state.clone());
    // The dashboard answers people with HTML pages, its refusals included: outside the
    // problem+json rewriting of the API's failed answers.
    let ui = crate::ui::routes().with_state(state.clone());
    with_problem_fallbacks(api)
        .merge(ui)
        .layer(axum::middleware::map_response(retry_after_unavailable))
        .layer(axum::middleware::from_fn_with_state(state, mark_stale))
}

/// While the store has no quorum every answer says it comes from the replica's watched view
/// (`x-flotilla-stale: true`, Consul's `X-Consul-KnownLeader: false`): still right as of the
/// last change the replica saw, but nothing newer can have been written.
async fn mark_stale(
    State(state): State<Arc<ControlState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if !state.has_quorum() {
        response
            .headers_mut()
            .insert(HeaderName::from_static(STALE_HEADER), HeaderValue::from_static("true"));
    }
    response
}

/// Set on every answer of a replica whose store has no quorum.
pub const STALE_HEADER: &str = "x-flotilla-stale";

/// A 503 says when to try again: the store lost quorum, and any replica answers the same until
/// it is back.
async fn retry_after_unavailable(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(axum::http::header::RETRY_AFTER)
    {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(crate::store::RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// A request's principal: a credential is needed for everything but the health checks and
/// the OpenAPI document (which take no `Principal`).
impl FromRequestParts<Arc<ControlState>> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ControlState>) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let principal = match presented {
            Some(credential) => state
                .identify(credential.trim())
                .ok_or_else(|| unauthorized("the credential is not one of this control plane's"))?,
            None => Err(unauthorized(
                "the control plane needs `Authorization: Bearer <credential>`: the operator's token (in the data dir), a service instance's credential, or a read-only one",
            ))?,
        };
        // A service speaks over mTLS, and its certificate and credential must agree.
        if let Principal::Service { service, .. } = &principal {
            let peer = parts
                .extensions
                .get::<flotilla::mtls::Peer>()
                .cloned()
                .unwrap_or_default();
            match peer.service.as_deref() {
                Some(named) if named != service => {
                    return Err(unauthorized(&format!(
                        "the certificate names `{named}`, the credential speaks for `{service}`"
                    )))
                }
                Some(_) => {}
                // Before it has a certificate, an instance may only ask for one.
                None if peer.tls && parts.uri.path() == CERTIFICATES => {}
                // A service the operator declared plain (written without the SDK).
                None if !peer.tls && state.plain_allowed(service) => {}
                None if peer.tls || state.workloads_over_tls => {
                    return Err(forbidden(
                        "a service's credential is taken only over mTLS with its certificate (the control plane's TLS listener); the plain listener is the operator's",
                    )
                    .into_response())
                }
                None => {}
            }
        }
        Ok(principal)
    }
}

/// Proof that the operator asks (config writes, replays).
pub(crate) struct Authorized;

impl FromRequestParts<Arc<ControlState>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ControlState>) -> Result<Self, Response> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if principal.is_operator() {
            Ok(Authorized)
        } else {
            Err(forbidden("only the operator may do this").into_response())
        }
    }
}

/// 403 problem+json: the credential is good but its principal may not do this.
pub(crate) fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(403, "forbidden", "Forbidden").with_detail(detail)
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(401, "unauthorized", "Unauthorized")
        .with_detail(detail)
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"flotilla\""),
    );
    response
}

/// A health check's answer.
#[derive(Debug, Serialize, ToSchema)]
struct HealthStatus {
    /// `live`; `ready`, `degraded` (the store lost quorum: reads are served from the
    /// watched cache, writes refused) or `syncing` (not caught up with the store yet).
    #[schema(example = "live")]
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", operation_id = "live", tag = "health",
    responses((status = 200, description = "Live", body = HealthStatus)))]
async fn live() -> Json<HealthStatus> {
    Json(HealthStatus { status: "live" })
}

/// The control plane answers requests: once its view has caught up with the store. A replica
/// whose store lost quorum stays ready (`degraded`): every replica shares the store, and
/// failing them all at once would take away the reads they still serve.
#[utoipa::path(get, path = "/health/ready", operation_id = "ready", tag = "health",
    responses(
        (status = 200, description = "Ready, or degraded", body = HealthStatus),
        (status = 503, description = "Still catching up with the store", body = HealthStatus),
    ))]
async fn ready(State(state): State<Arc<ControlState>>) -> Response {
    if !state.synced() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthStatus { status: "syncing" }),
        )
            .into_response();
    }
    let status = if state.store_health().quorum {
        "ready"
    } else {
        "degraded"
    };
    Json(HealthStatus { status }).into_response()
}

fn problem(err: RegistryError) -> Problem {
    match err {
        RegistryError::UnknownInstance(id) => Problem::not_found(format!("no instance `{id}` is registered")),
        RegistryError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        RegistryError::Unavailable(reason) => crate::store::unavailable(reason),
    }
}

/// Registers an instance, or renews the lease of one already registered.
#[utoipa::path(post, path = "/v1/registry/instances", operation_id = "register", tag = "registry",
    security(("bearer" = [])), request_body = Registration,
    responses(
        (status = 201, description = "Registered: a new lease", body = Lease),
        (status = 200, description = "Already registered: the lease renewed", body = Lease),
        (status = 400, description = "A field is invalid (named in `invalid-params`); unknown fields are refused",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not speak for the registration's service",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Json(registration): Json<Registration>,
) -> Result<Response, Problem> {
    let (service, id) = (registration.service.clone(), registration.instance_id.clone());
    if !who.may_register(&service) {
        return Err(forbidden(format!(
            "this credential may not register instances of `{service}`"
        )));
    }
    match state.registry.register(registration).await.map_err(problem)? {
        Registered::Created(lease) => {
            tracing::info!(%service, instance = %id, "instance registered");
            Ok((StatusCode::CREATED, Json(lease)).into_response())
        }
        Registered::Renewed(lease) => Ok(Json(lease).into_response()),
    }
}

/// Passes the principal for an instance of its own service (an unknown instance is left to
/// the registry's own answer).
fn own_instance(state: &ControlState, who: &Principal, id: &str) -> Result<(), Problem> {
    match state.registry.service_of(id) {
        Some(service) if !who.may_register(&service) => Err(forbidden(format!(
            "instance `{id}` is of `{service}`, which this credential does not speak for"
        ))),
        _ => Ok(()),
    }
}

/// One replica's view of itself and its store: what `flotilla status` shows per replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaStatus {
    /// Where this replica listens (the operator's listener).
    pub listen: Option<String>,
    /// `ready`, `degraded` or `syncing`, as readiness says.
    pub status: &'static str,
    /// The store: its kind, quorum, servers and copies.
    pub store: crate::store::StoreHealth,
    /// The registry's index (the store's sequence on NATS).
    pub registry_index: u64,
    /// Instances this replica lists.
    pub instances: usize,
    /// Leases held past their expiry by self-preservation.
    pub held: usize,
    /// The config store's newest revision.
    pub config_revision: u64,
}

/// This replica and its store, for the operator and readers.
#[utoipa::path(get, path = "/v1/control", operation_id = "replicaStatus", tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This replica's view", body = ReplicaStatus),
        (status = 403, description = "Only the operator and readers see it",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn replica_status(
    who: Principal,
    State(state): State<Arc<ControlState>>,
) -> Result<Json<ReplicaStatus>, Problem> {
    if !who.may_observe() {
        return Err(forbidden("only the operator and readers see a replica's status"));
    }
    let store = state.store_health();
    let status = match (state.synced(), store.quorum) {
        (false, _) => "syncing",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    Ok(Json(ReplicaStatus {
        listen: state.scrape_address().map(|a| a.to_string()),
        status,
        store,
        registry_index: state.registry.revision(),
        instances: state.registry.list(None).instances.len(),
        held: state.registry.held(),
        config_revision: state.config.revision(),
    }))
}

/// Renews an instance's lease.
#[utoipa::path(put, path = "/v1/registry/instances/{id}/heartbeat", operation_id = "heartbeat", tag = "registry",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The renewed lease", body = Lease),
        (status = 403, description = "The instance is of a service the credential does not speak for",
            body = Problem, content_type = "application/problem+json"),
        (status = 404,
            description = "The registry does not know the instance (a restarted control plane): register again",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn heartbeat(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    own_instance(&state, &who, &id)?;
    let lease = state.registry.heartbeat(&id).await.map_err(problem)?;
    Ok(Json(lease).into_response())
}

/// Removes an instance from the registry.
#[utoipa::path(delete, path = "/v1/registry/instances/{id}", operation_id = "deregister", tag = "registry",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The instance's id")),
    responses(
        (status = 204, description = "Deregistered"),
        (status = 403, description = "The instance is of a service the credential does not speak for",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such instance is registered",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn deregister(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    own_instance(&state, &who, &id)?;
    let gone = state.registry.deregister(&id).await.map_err(problem)?;
    tracing::info!(service = %gone.service, instance = %id, "instance deregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of a (blocking) list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this service.
    service: Option<String>,
    /// Block until the revision passes this index.
    index: Option<u64>,
    /// How long to block (`500ms`, `30s`); at most 5 minutes.
    #[param(example = "30s")]
    wait: Option<String>,
}

pub(crate) fn parse_wait(wait: Option<&str>) -> Result<Duration, Problem> {
    match wait {
        None => Ok(DEFAULT_WAIT),
        Some(text) => humantime::parse_duration(text).map(|d| d.min(MAX_WAIT)).map_err(|e| {
            Problem::invalid_field("wait", format!("`{text}` is not a duration like `500ms` or `30s`: {e}"))
        }),
    }
}

async fn list(
    state: &ControlState,
    service: Option<&str>,
    index: Option<u64>,
    wait: Option<&str>,
) -> Result<Response, Problem> {
    if let Some(service) = service {
        Registry::check_service_name(service).map_err(problem)?;
    }
    let mut wait = parse_wait(wait)?;
    // While warming, answer no later than the end of the warm-up, so watchers learn at once
    // that the list is complete.
    let warming = state.warming_for();
    if !warming.is_zero() {
        wait = wait.min(warming);
    }
    let mut list = match index {
        None => state.registry.list(service),
        Some(index) => {
            let mut closing = state.closing.clone();
            tokio::select! {
                list = state.registry.list_after(service, index, wait) => list,
                _ = closing.wait_for(|c| *c) => state.registry.list(service),
            }
        }
    };
    list.warming = !state.warming_for().is_zero();
    let index = list.index;
    let mut response = Json(list).into_response();
    response
        .headers_mut()
        .insert(HeaderName::from_static(INDEX_HEADER), HeaderValue::from(index));
    Ok(response)
}

/// Every registered instance, or a service's; with `index`, a blocking query that answers when
/// the registry's revision passes it (or `wait` elapses).
#[utoipa::path(get, path = "/v1/registry/instances", operation_id = "listInstances", tag = "registry",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "The instances at a registry revision", body = InstanceList,
            headers(("x-flotilla-index" = u64, description = "The registry revision the list reflects"))),
        (status = 400, description = "A bad service name or `wait`",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_instances(
    _who: Principal,
    State(state): State<Arc<ControlState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    list(&state, q.service.as_deref(), q.index, q.wait.as_deref()).await
}

/// The instances of one service; with `index`, a blocking query.
#[utoipa::path(get, path = "/v1/registry/services/{name}", operation_id = "listServiceInstances", tag = "registry",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The service"),
        ("index" = Option<u64>, Query, description = "Block until the revision passes this index"),
        ("wait" = Option<String>, Query, description = "How long to block (`500ms`, `30s`); at most 5 minutes",
            example = "30s"),
    ),
    responses(
        (status = 200, description = "The service's instances at a registry revision", body = InstanceList,
            headers(("x-flotilla-index" = u64, description = "The registry revision the list reflects"))),
        (status = 400, description = "A bad service name or `wait`",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_service(
    _who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    list(&state, Some(&name), q.index, q.wait.as_deref()).await
}

/// Every service with instances, and how many of them pass.
#[utoipa::path(get, path = "/v1/registry/services", operation_id = "listServices", tag = "registry",
    security(("bearer" = [])),
    responses((status = 200, description = "The services", body = [ServiceSummary])))]
async fn list_services(_who: Principal, State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    Json(state.registry.services())
}

/// `GET /v1/identity/ca`: the CA's certificate, which every instance verifies peers against.
#[utoipa::path(get, path = "/v1/identity/ca", operation_id = "caCertificate", tag = "identity",
    security(("bearer" = [])),
    responses((status = 200, description = "The CA's certificate (PEM)", body = String,
        content_type = "application/x-pem-file")))]
async fn authority(_who: Principal, State(state): State<Arc<ControlState>>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"))],
        state.authority.ca_pem().to_owned(),
    )
        .into_response()
}

/// `POST /v1/identity/certificates`: a day-long (or, asked, shorter) certificate for the key of the request, naming
/// the service the credential speaks for (`spiffe://flotilla/<service>`) and nothing else.
#[utoipa::path(post, path = "/v1/identity/certificates", operation_id = "issueCertificate", tag = "identity",
    security(("bearer" = [])), request_body = flotilla_api::identity::CertificateRequest,
    responses(
        (status = 201, description = "A certificate for the request's key, naming only `spiffe://flotilla/<service>`",
            body = flotilla_api::identity::IssuedCertificate),
        (status = 400,
            description = "The CSR is not a valid request, `lifetime_seconds` is 0, or the operator named no service",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not have a certificate for that service",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Signing failed",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn certificate(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Json(request): Json<flotilla_api::identity::CertificateRequest>,
) -> Result<Response, Problem> {
    let service = match (&who, request.service.as_deref()) {
        (Principal::Service { service, .. }, None) => service.clone(),
        (Principal::Service { service, .. }, Some(asked)) if asked == service => service.clone(),
        (Principal::Operator, Some(asked)) => asked.to_owned(),
        (Principal::Operator, None) => return Err(Problem::invalid_field("service", "the operator names the service")),
        _ => return Err(forbidden("this credential may not have a certificate for that service")),
    };
    let lifetime = match request.lifetime_seconds {
        None => crate::ca::LEAF_LIFETIME,
        Some(0) => {
            return Err(Problem::invalid_field(
                "lifetime_seconds",
                "a certificate lives at least a second",
            ))
        }
        Some(seconds) => Duration::from_secs(seconds).min(crate::ca::LEAF_LIFETIME),
    };
    match state.authority.issue(&service, &request.csr, lifetime) {
        Ok(issued) => {
            tracing::info!(%service, not_after_ms = issued.not_after_ms, "certificate issued");
            Ok((StatusCode::CREATED, Json(issued)).into_response())
        }
        Err(err @ (crate::ca::CaError::BadRequest(_) | crate::ca::CaError::BadName(_))) => {
            Err(Problem::invalid_field("csr", err.to_string()))
        }
        Err(err) => {
            tracing::error!(error = %err, "issuing a certificate failed");
            Err(Problem::internal())
        }
    }
}

#[cfg(test)]
mod tests;
