//! The event log's HTTP API, under `/v1/events`. Every call needs the token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::http::{Json, Query};
use flotilla_api::events::{Ack, CloudEvent, Nack};
use flotilla_api::Problem;
use serde::Deserialize;

use super::LogError;
use crate::api::{forbidden, parse_wait, Authorized, Principal};
use crate::ControlState;

/// The event routes, to merge into the control plane's router.
pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route("/v1/events", get(topics))
        .route("/v1/events/{topic}", post(append).get(fetch))
        .route("/v1/events/{topic}/ack", post(ack))
        .route("/v1/events/{topic}/nack", post(nack))
        .route("/v1/events/{topic}/messages", get(read))
        .route("/v1/events/{topic}/replay", post(replay))
}

fn problem(err: LogError) -> Problem {
    match err {
        LogError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        LogError::NotFound(what) => Problem::not_found(what),
        LogError::Database(e) => {
            tracing::error!(error = %e, "event log failed");
            Problem::internal()
        }
    }
}

/// One event or a batch.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Events {
    Many(Vec<CloudEvent>),
    One(Box<CloudEvent>),
}

async fn append(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Json(events): Json<Events>,
) -> Result<Response, Problem> {
    if !who.may_publish(&topic) {
        return Err(forbidden(format!(
            "this credential may not publish to `{topic}` (a service publishes to the topic named after it)"
        )));
    }
    let events = match events {
        Events::Many(events) => events,
        Events::One(event) => vec![*event],
    };
    Ok(Json(state.events.append(&topic, &events).await.map_err(problem)?).into_response())
}

#[derive(Debug, Deserialize)]
struct FetchQuery {
    group: String,
    max: Option<u32>,
    wait: Option<String>,
}

/// Refuses a principal that may not consume as `group`.
fn consumer(who: &Principal, group: &str) -> Result<(), Problem> {
    if who.may_consume(group) {
        Ok(())
    } else {
        Err(forbidden(format!(
            "this credential may not consume as group `{group}` (a service consumes as itself)"
        )))
    }
}

async fn fetch(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Query(q): Query<FetchQuery>,
) -> Result<Response, Problem> {
    consumer(&who, &q.group)?;
    let wait = match q.wait.as_deref() {
        None => std::time::Duration::ZERO,
        Some(_) => parse_wait(q.wait.as_deref())?,
    };
    let handed = tokio::select! {
        handed = state.events.fetch(&topic, &q.group, q.max.unwrap_or(100), wait) => handed.map_err(problem)?,
        () = state.closing() => Vec::new(),
    };
    Ok(Json(handed).into_response())
}

async fn ack(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Json(body): Json<Ack>,
) -> Result<Response, Problem> {
    consumer(&who, &body.group)?;
    let done = state
        .events
        .ack(&topic, &body.group, &body.offsets)
        .await
        .map_err(problem)?;
    Ok(Json(serde_json::json!({ "acked": done })).into_response())
}

async fn nack(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Json(body): Json<Nack>,
) -> Result<axum::http::StatusCode, Problem> {
    consumer(&who, &body.group)?;
    state
        .events
        .nack(&topic, &body.group, body.offset, &body.reason)
        .await
        .map_err(problem)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    from: Option<u64>,
    limit: Option<u32>,
}

async fn read(
    who: Principal,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, Problem> {
    if !who.may_observe() {
        return Err(forbidden("only the operator and readers read a topic's log"));
    }
    let events = state
        .events
        .read(&topic, q.from.unwrap_or(0), q.limit.unwrap_or(100))
        .await
        .map_err(problem)?;
    Ok(Json(events).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    offset: u64,
}

async fn replay(
    _auth: Authorized,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Json(body): Json<Replay>,
) -> Result<Response, Problem> {
    let (to, appended) = state.events.replay(&topic, body.offset).await.map_err(problem)?;
    Ok(Json(serde_json::json!({ "topic": to, "offset": appended.offset, "id": appended.id })).into_response())
}

async fn topics(who: Principal, State(state): State<Arc<ControlState>>) -> Result<Response, Problem> {
    if !who.may_observe() {
        return Err(forbidden("only the operator and readers list the topics"));
    }
    Ok(Json(state.events.topics().await.map_err(problem)?).into_response())
}
