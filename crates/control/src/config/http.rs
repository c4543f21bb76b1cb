//! The config store's HTTP API, under `/v1/config`. Listings mask secrets; a single value,
//! its history and a service's resolved document show them only to a caller with the token.
//! Writes need the token; `If-Match: "<revision>"` (or `If-None-Match: *`) makes them
//! compare-and-set, answered `412` with the key's current revision when it moved on.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use flotilla::http::{Json, Query};
use flotilla::utoipa::{self, IntoParams};
use flotilla_api::config::{
    diff, ApplyReport, ConfigDiff, ConfigEntry, ConfigKey, ConfigWrite, InstanceConfig, Resolved, Rollback,
    DEFAULT_PROFILE,
};
use flotilla_api::{Problem, INDEX_HEADER};
use serde::Deserialize;

use super::{ConfigError, Reveal, WriteOptions};
use crate::api::{forbidden, parse_wait, Authorized, Principal};
use crate::ControlState;

/// The header a writer may name itself in (the body's `author` wins).
const AUTHOR_HEADER: &str = "x-flotilla-author";

/// The config routes, to merge into the control plane's router.
pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/config", get(list))
        .route("/v1/config/resolve/{service}", get(resolve))
        .route("/v1/config/applied", get(applied))
        .route("/v1/config/applied/{instance_id}", put(report))
        .route(
            "/v1/config/{scope}/{profile}/{key}",
            get(read).put(write).delete(remove),
        )
        .route("/v1/config/{scope}/{profile}/{key}/history", get(history))
        .route("/v1/config/{scope}/{profile}/{key}/diff", get(diff_revisions))
        .route("/v1/config/{scope}/{profile}/{key}/rollback", post(rollback))
}

fn problem(err: ConfigError) -> Problem {
    match err {
        ConfigError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        ConfigError::NotFound(_) | ConfigError::NoSuchRevision { .. } => Problem::not_found(err.to_string()),
        ConfigError::Conflict { .. } => Problem::new(412, "revision-conflict", "Revision conflict").with_detail(
            format!("{err}: read it again, and write with `If-Match: \"<revision>\"` of what you read"),
        ),
        ConfigError::Store(crate::store::StoreError::Unavailable(reason)) => crate::store::unavailable(reason),
        ConfigError::Database(_) | ConfigError::Secret(_) | ConfigError::Store(_) => {
            tracing::error!(error = %err, "config store failed");
            Problem::internal()
        }
    }
}

/// Passes a principal that may read `scope`; how much of it: secrets only for those who may.
fn readable(who: &Principal, scope: &str) -> Result<Reveal, Problem> {
    if !who.may_read_scope(scope) {
        return Err(forbidden(format!(
            "this credential may not read the config of `{scope}`"
        )));
    }
    Ok(if who.may_see_secrets(scope) {
        Reveal::Secrets
    } else {
        Reveal::Masked
    })
}

fn etag(revision: u64) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// The compare-and-set condition a request carries, if any.
fn expectation(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        return match value.to_str() {
            Ok("*") => Ok(Some(0)),
            _ => Err(Problem::invalid_field(
                "If-None-Match",
                "only `*` (create, only if the key has no value) is understood",
            )),
        };
    }
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| {
        Problem::invalid_field(
            "If-Match",
            format!("`{text}` is not a revision: send the ETag you read, like `\"42\"`"),
        )
    })
}

fn options(headers: &HeaderMap, author: Option<String>, comment: Option<String>) -> Result<WriteOptions, Problem> {
    let author = author
        .or_else(|| {
            headers
                .get(AUTHOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if author.len() > 128 {
        return Err(Problem::invalid_field("author", "at most 128 characters"));
    }
    let comment = comment.unwrap_or_default();
    if comment.len() > 1024 {
        return Err(Problem::invalid_field("comment", "at most 1024 characters"));
    }
    Ok(WriteOptions {
        expect: expectation(headers)?,
        author,
        comment,
    })
}

fn with_etag(entry: &flotilla_api::config::ConfigEntry, status: StatusCode) -> Response {
    (status, [etag(entry.revision)], Json(entry)).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this scope (a service must name its own).
    scope: Option<String>,
    /// Only this profile.
    profile: Option<String>,
}

/// Every key with a value, secrets masked.
#[utoipa::path(get, path = "/v1/config", operation_id = "listConfig", tag = "config",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "Every key with a value, secrets masked", body = [ConfigEntry]),
        (status = 403, description = "A service lists only its own scope (`?scope=`)",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    if !who.may_observe() && !q.scope.as_deref().is_some_and(|scope| who.may_read_scope(scope)) {
        return Err(forbidden("a service lists only its own scope's keys (`?scope=`)"));
    }
    Ok(Json(state.config.list(q.scope.as_deref(), q.profile.as_deref())).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// An older revision of the key instead of its current value.
    revision: Option<u64>,
}

/// A key's value (or one of its revisions); secrets shown only to who may see them.
#[utoipa::path(get, path = "/v1/config/{scope}/{profile}/{key}", operation_id = "readConfig", tag = "config",
    security(("bearer" = [])),
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        ReadQuery),
    responses(
        (status = 200, description = "The entry", body = ConfigEntry, headers(("ETag" = String,
            description = "The entry's revision, quoted (`\"14\"`): send it back as `If-Match`"))),
        (status = 400, description = "A bad scope, profile or key",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not read this scope",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key has no value (or no such revision)",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn read(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, Problem> {
    let reveal = readable(&who, &scope)?;
    let key = ConfigKey::new(scope, profile, key);
    let entry = match q.revision {
        Some(revision) => state.config.at(&key, revision, reveal).await,
        None => state.config.get(&key, reveal),
    }
    .map_err(problem)?;
    Ok(with_etag(&entry, StatusCode::OK))
}

/// Sets a key's value: a new revision (the operator's).
#[utoipa::path(put, path = "/v1/config/{scope}/{profile}/{key}", operation_id = "writeConfig", tag = "config",
    security(("bearer" = [])), request_body = ConfigWrite,
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "Compare-and-set: write only if the key is at this revision (the ETag read, `\"42\"`)"),
        ("If-None-Match" = Option<String>, Header, nullable = false,
            description = "`*`: write only if the key has no value"),
        ("x-flotilla-author" = Option<String>, Header, nullable = false,
            description = "Who writes, when the body does not say"),
    ),
    responses(
        (status = 200, description = "The new entry", body = ConfigEntry, headers(("ETag" = String,
            description = "The entry's revision, quoted (`\"14\"`): send it back as `If-Match`"))),
        (status = 400, description = "A bad scope, profile, key, value, author, comment or condition",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator writes config",
            body = Problem, content_type = "application/problem+json"),
        (status = 412,
            description = "The key moved on from the `If-Match` revision (or has a value, with \
                `If-None-Match: *`): the detail names its current revision",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn write(
    _auth: Authorized,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<ConfigWrite>,
) -> Result<Response, Problem> {
    let key = ConfigKey::new(scope, profile, key);
    let options = options(&headers, body.author, body.comment)?;
    let entry = state
        .config
        .set(&key, body.value, body.secret, options)
        .await
        .map_err(problem)?;
    Ok(with_etag(&entry, StatusCode::OK))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Why.
    comment: Option<String>,
}

/// Deletes a key's value: a tombstone revision, so its history keeps what it was (the
/// operator's).
#[utoipa::path(delete, path = "/v1/config/{scope}/{profile}/{key}", operation_id = "deleteConfig", tag = "config",
    security(("bearer" = [])),
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        DeleteQuery,
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "Compare-and-set: write only if the key is at this revision (the ETag read, `\"42\"`)"),
        ("x-flotilla-author" = Option<String>, Header, nullable = false, description = "Who deletes"),
    ),
    responses(
        (status = 200, description = "The tombstone entry (`deleted: true`, `value: null`)", body = ConfigEntry,
            headers(("ETag" = String,
            description = "The entry's revision, quoted (`\"14\"`): send it back as `If-Match`"))),
        (status = 400, description = "A bad scope, profile, key, comment or condition",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator writes config",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key has no value",
            body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The key moved on from the `If-Match` revision",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove(
    _auth: Authorized,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, Problem> {
    let key = ConfigKey::new(scope, profile, key);
    let entry = state
        .config
        .delete(&key, options(&headers, None, q.comment)?)
        .await
        .map_err(problem)?;
    Ok(with_etag(&entry, StatusCode::OK))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

/// A key's revisions, newest first.
#[utoipa::path(get, path = "/v1/config/{scope}/{profile}/{key}/history", operation_id = "configHistory",
    tag = "config",
    security(("bearer" = [])),
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        HistoryQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = [ConfigEntry]),
        (status = 400, description = "A bad scope, profile or key",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not read this scope",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key was never written",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn history(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    let reveal = readable(&who, &scope)?;
    let key = ConfigKey::new(scope, profile, key);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state.config.history(&key, limit, reveal).await.map_err(problem)?;
    Ok(Json(entries).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DiffQuery {
    /// The older revision.
    from: u64,
    /// The newer revision (default: the newest).
    to: Option<u64>,
}

/// What changed between two revisions of a key.
#[utoipa::path(get, path = "/v1/config/{scope}/{profile}/{key}/diff", operation_id = "diffConfig", tag = "config",
    security(("bearer" = [])),
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        DiffQuery),
    responses(
        (status = 200, description = "Both entries and every change, with RFC 6901 pointers", body = ConfigDiff),
        (status = 400, description = "A bad scope, profile, key or revision",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not read this scope",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such revision",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn diff_revisions(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, Problem> {
    let reveal = readable(&who, &scope)?;
    let key = ConfigKey::new(scope, profile, key);
    let from = state.config.at(&key, q.from, reveal).await.map_err(problem)?;
    let to = match q.to {
        Some(to) => state.config.at(&key, to, reveal).await,
        None => match state.config.history(&key, 1, reveal).await {
            Ok(mut newest) => newest.pop().ok_or(ConfigError::NotFound(key.clone())),
            Err(err) => Err(err),
        },
    }
    .map_err(problem)?;
    let changes = diff(&from.value, &to.value);
    Ok(Json(ConfigDiff { from, to, changes }).into_response())
}

/// A new revision carrying an older one's value (the operator's).
#[utoipa::path(post, path = "/v1/config/{scope}/{profile}/{key}/rollback", operation_id = "rollbackConfig",
    tag = "config",
    security(("bearer" = [])), request_body = Rollback,
    params(("scope" = String, Path, description = "`application` or a service name"),
        ("profile" = String, Path, description = "`default`, `dev`, `prod`, …"),
        ("key" = String, Path, description = "The key (`page_size`)"),
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "Compare-and-set: write only if the key is at this revision (the ETag read, `\"42\"`)"),
        ("x-flotilla-author" = Option<String>, Header, nullable = false,
            description = "Who rolls back, when the body does not say"),
    ),
    responses(
        (status = 200, description = "The new entry", body = ConfigEntry, headers(("ETag" = String,
            description = "The entry's revision, quoted (`\"14\"`): send it back as `If-Match`"))),
        (status = 400, description = "A bad scope, profile, key, author, comment or condition",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator writes config",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such revision",
            body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The key moved on from the `If-Match` revision",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn rollback(
    _auth: Authorized,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Rollback>,
) -> Result<Response, Problem> {
    let key = ConfigKey::new(scope, profile, key);
    let options = options(&headers, body.author, body.comment)?;
    let entry = state
        .config
        .rollback(&key, body.revision, options)
        .await
        .map_err(problem)?;
    Ok(with_etag(&entry, StatusCode::OK))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ResolveQuery {
    /// The instance's profile (default `default`).
    profile: Option<String>,
    /// Block until the document's revision passes this index.
    index: Option<u64>,
    /// How long to block (`500ms`, `30s`; default 30 s, at most 5 minutes).
    #[param(example = "30s")]
    wait: Option<String>,
}

/// A service's document: `application` and its own scope merged; a service reads only its
/// own (with the secrets of both). With `index`, a blocking query on the service's layers.
#[utoipa::path(get, path = "/v1/config/resolve/{service}", operation_id = "resolveConfig", tag = "config",
    security(("bearer" = [])),
    params(("service" = String, Path, description = "The service"), ResolveQuery),
    responses(
        (status = 200, description = "The merged document", body = Resolved, headers(("x-flotilla-index" = u64,
            description = "The document's revision (`revision`): pass it back as `index` to wait for a change"))),
        (status = 400, description = "A bad service, profile or `wait`",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A service resolves only its own document",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn resolve(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(service): Path<String>,
    Query(q): Query<ResolveQuery>,
) -> Result<Response, Problem> {
    let profile = q.profile.as_deref().unwrap_or(DEFAULT_PROFILE);
    let reveal = readable(&who, &service)?;
    let resolved = match q.index {
        None => state.config.resolve(&service, profile, reveal),
        Some(index) => {
            let wait = parse_wait(q.wait.as_deref())?;
            tokio::select! {
                resolved = state.config.resolve_after(&service, profile, index, wait, reveal) => resolved,
                () = state.closing() => state.config.resolve(&service, profile, reveal),
            }
        }
    }
    .map_err(problem)?;
    let index = HeaderValue::from(resolved.revision);
    Ok(([(HeaderName::from_static(INDEX_HEADER), index)], Json(resolved)).into_response())
}

/// What an instance did with a revision: applied it, or refused it and runs on its last
/// good one.
#[utoipa::path(put, path = "/v1/config/applied/{instance_id}", operation_id = "reportApplied", tag = "config",
    security(("bearer" = [])), request_body = ApplyReport,
    params(("instance_id" = String, Path, description = "The reporting instance")),
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "A bad instance id or error (at most 4096 characters)",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not speak for the report's service",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn report(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(instance_id): Path<String>,
    Json(report): Json<ApplyReport>,
) -> Result<StatusCode, Problem> {
    if !who.may_register(&report.service) {
        return Err(forbidden(format!(
            "this credential does not speak for `{}`",
            report.service
        )));
    }
    if instance_id.is_empty() || instance_id.len() > 128 {
        return Err(Problem::invalid_field("instance_id", "must be 1 to 128 characters"));
    }
    if report.error.as_ref().is_some_and(|e| e.len() > 4096) {
        return Err(Problem::invalid_field("error", "at most 4096 characters"));
    }
    state.config.report(&instance_id, report).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AppliedQuery {
    /// Only this service's instances.
    service: Option<String>,
    /// Block until a report newer than this index arrives.
    index: Option<u64>,
    /// How long to block (`500ms`, `30s`; default 30 s, at most 5 minutes).
    #[param(example = "30s")]
    wait: Option<String>,
}

/// Each live instance's latest report; with `index`, a blocking query.
#[utoipa::path(get, path = "/v1/config/applied", operation_id = "listApplied", tag = "config",
    security(("bearer" = [])), params(AppliedQuery),
    responses(
        (status = 200, description = "The reports", body = [InstanceConfig], headers(("x-flotilla-index" = u64,
            description = "The reports' revision: pass it back as `index` to wait for a new one"))),
        (status = 400, description = "A bad `wait`",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator and readers see what every instance applied",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn applied(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Query(q): Query<AppliedQuery>,
) -> Result<Response, Problem> {
    if !who.may_observe() {
        return Err(forbidden(
            "only the operator and readers see what every instance applied",
        ));
    }
    if let Some(index) = q.index {
        let wait = parse_wait(q.wait.as_deref())?;
        tokio::select! {
            _ = state.config.reports_after(index, wait) => {}
            () = state.closing() => {}
        }
    }
    let (index, mut list) = live_reports(&state);
    if let Some(service) = &q.service {
        list.retain(|i| &i.report.service == service);
    }
    Ok((
        [(HeaderName::from_static(INDEX_HEADER), HeaderValue::from(index))],
        Json(list),
    )
        .into_response())
}

/// Each instance's latest report, for the instances the registry still holds (a report
/// outlives no instance), and the reports' index.
pub(crate) fn live_reports(state: &ControlState) -> (u64, Vec<InstanceConfig>) {
    let live: std::collections::BTreeSet<String> = state
        .registry
        .list(None)
        .instances
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    state.config.reports(|id| live.contains(id))
}
