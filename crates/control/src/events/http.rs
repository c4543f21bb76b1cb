//! The event log's HTTP API, under `/v1/events`. Every call needs the token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::http::{Json, Query};
use flotilla::utoipa::{self, IntoParams, ToSchema};
use flotilla_api::events::{Ack, Appended, CloudEvent, Delivery, Nack, TopicInfo};
use flotilla_api::Problem;
use serde::{Deserialize, Serialize};

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
        LogError::Unavailable(reason) => crate::store::unavailable(reason),
        LogError::Database(e) => {
            tracing::error!(error = %e, "event log failed");
            Problem::internal()
        }
    }
}

/// One event or a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum Events {
    /// Up to 1000 events, appended in order.
    Many(Vec<CloudEvent>),
    /// One event.
    One(Box<CloudEvent>),
}

/// Appends events to a topic, answering once they are on disk; an id the topic already
/// holds is not appended again.
#[utoipa::path(post, path = "/v1/events/{topic}", operation_id = "publish", tag = "events",
    security(("bearer" = [])), request_body = Events,
    params(("topic" = String, Path, description = "The topic (lowercase letters, digits, `.`, `_`, `-`)")),
    responses(
        (status = 200,
            description = "What became of each event, in order; a duplicate id is answered with its first offset",
            body = [Appended]),
        (status = 400, description = "A bad topic or event (named in `invalid-params`), or too many",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A service publishes only to the topic named after it (or `<service>.*`)",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FetchQuery {
    /// The consumer group (a service consumes as itself).
    group: String,
    /// At most this many events (default 100).
    max: Option<u32>,
    /// Block until there are some, at most this long (`500ms`, `30s`; at most 5 minutes).
    /// Without it, answer at once.
    #[param(example = "30s")]
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

/// Hands a consumer group its next events: due redeliveries first, then new ones.
#[utoipa::path(get, path = "/v1/events/{topic}", operation_id = "fetch", tag = "events",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic (lowercase letters, digits, `.`, `_`, `-`)"),
        FetchQuery),
    responses(
        (status = 200, description = "The deliveries; ack each by its offset", body = [Delivery]),
        (status = 400, description = "A bad topic, group, `max` or `wait`",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not consume as this group",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

/// What `ack` answers.
#[derive(Debug, Serialize, ToSchema)]
struct Acked {
    /// How many of the offsets were in flight and are now done.
    acked: u64,
}

/// A group is done with these offsets.
#[utoipa::path(post, path = "/v1/events/{topic}/ack", operation_id = "ack", tag = "events",
    security(("bearer" = [])), request_body = Ack,
    params(("topic" = String, Path, description = "The topic (lowercase letters, digits, `.`, `_`, `-`)")),
    responses(
        (status = 200, description = "How many were acked", body = Acked),
        (status = 400, description = "A bad topic, group or offset list",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not consume as this group",
            body = Problem, content_type = "application/problem+json"),
    ))]
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
    Ok(Json(Acked { acked: done }).into_response())
}

/// A handler failed: the event is due again at once, or dead-lettered after its last delivery.
#[utoipa::path(post, path = "/v1/events/{topic}/nack", operation_id = "nack", tag = "events",
    security(("bearer" = [])), request_body = Nack,
    params(("topic" = String, Path, description = "The topic (lowercase letters, digits, `.`, `_`, `-`)")),
    responses(
        (status = 204, description = "Due again (or dead-lettered)"),
        (status = 400, description = "A bad topic, group or reason",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential may not consume as this group",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The offset is not in flight for the group",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// The first offset (default 0).
    from: Option<u64>,
    /// At most this many (default 100).
    limit: Option<u32>,
}

/// A topic's events from an offset, without a group (inspection).
#[utoipa::path(get, path = "/v1/events/{topic}/messages", operation_id = "readTopic", tag = "events",
    security(("bearer" = [])),
    params(("topic" = String, Path, description = "The topic (lowercase letters, digits, `.`, `_`, `-`)"), ReadQuery),
    responses(
        (status = 200, description = "The events, oldest first", body = [Delivery]),
        (status = 400, description = "A bad topic or limit",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator and readers read a topic's log",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

/// Which dead letter to replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// The dead letter's offset in the dead-letter topic.
    offset: u64,
}

/// What `replay` answers.
#[derive(Debug, Serialize, ToSchema)]
struct Replayed {
    /// The dead letter's new id.
    id: String,
    /// Its offset in the topic it was appended to again.
    offset: u64,
    /// The topic it was appended to again.
    topic: String,
}

/// Appends a dead letter again to its topic, under a new id (the operator's).
#[utoipa::path(post, path = "/v1/events/{topic}/replay", operation_id = "replay", tag = "events",
    security(("bearer" = [])), request_body = Replay,
    params(("topic" = String, Path, pattern = "\\.dead-letter$",
        description = "The dead-letter topic (`<topic>.dead-letter`)")),
    responses(
        (status = 200, description = "Where the event went", body = Replayed),
        (status = 400, description = "Not a dead-letter topic, or a bad body",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the operator replays",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event at that offset",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn replay(
    _auth: Authorized,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Json(body): Json<Replay>,
) -> Result<Response, Problem> {
    let (to, appended) = state.events.replay(&topic, body.offset).await.map_err(problem)?;
    Ok(Json(Replayed {
        id: appended.id,
        offset: appended.offset,
        topic: to,
    })
    .into_response())
}

/// Every topic, with its event count and each group's progress.
#[utoipa::path(get, path = "/v1/events", operation_id = "listTopics", tag = "events",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The topics", body = [TopicInfo]),
        (status = 403, description = "Only the operator and readers list the topics",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn topics(who: Principal, State(state): State<Arc<ControlState>>) -> Result<Response, Problem> {
    if !who.may_observe() {
        return Err(forbidden("only the operator and readers list the topics"));
    }
    Ok(Json(state.events.topics().await.map_err(problem)?).into_response())
}
