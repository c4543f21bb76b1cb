//! Notifications' HTTP API: a signed-in customer reads their own notifications.

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::http::{Json, Query};
use flotilla::store::Store;
use flotilla::utoipa::{self, IntoParams, OpenApi};
use flotilla::Problem;
use serde::Deserialize;

use crate::notifications::{self, Notification, NotificationsError};

/// How many notifications a list answers unless `?limit=` says otherwise.
pub(crate) const DEFAULT_LIMIT: u32 = 20;

/// The most a list answers.
pub(crate) const MAX_LIMIT: u32 = 100;

#[derive(Clone)]
struct AppState {
    store: Store,
    tokens: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.tokens.clone()
    }
}

/// The routes. `tokens` checks the callers' tokens; each caller sees only their own
/// notifications (the token's `sub`).
pub fn router(store: Store, tokens: Verifier) -> Router {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(AppState { store, tokens })
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(list))]
pub(crate) struct Api;

fn problem(err: NotificationsError) -> Problem {
    tracing::error!(error = %err, "notifications database error");
    Problem::internal()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// How many to list at most.
    #[serde(default = "default_limit")]
    // MAX_LIMIT, which an attribute cannot name (the tests hold them equal).
    #[param(minimum = 1, maximum = 100, default = default_limit)]
    limit: u32,
}

fn default_limit() -> u32 {
    DEFAULT_LIMIT
}

/// The signed-in customer's notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", operation_id = "listNotifications",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "The notifications", body = [Notification]),
        (status = 400, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(State(state): State<AppState>, who: Caller, Query(q): Query<ListQuery>) -> Result<Response, Problem> {
    if !(1..=MAX_LIMIT).contains(&q.limit) {
        return Err(Problem::invalid_field("limit", format!("1 to {MAX_LIMIT}")));
    }
    let found = notifications::for_user(&state.store, who.subject(), q.limit)
        .await
        .map_err(problem)?;
    Ok(Json(found).into_response())
}
