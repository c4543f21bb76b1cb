//! Inventory's HTTP API. Reading a product's stock needs any valid token; the reservation
//! calls (reading one too) are for services holding the `inventory.reserve` scope (orders) or
//! for admins; setting stock is for admins. Every handler verifies its caller before it reads
//! the body.

use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::http::Json;
use flotilla::store::Store;
use flotilla::Problem;
use serde::Deserialize;
use tracing::Instrument;

use crate::stock::{self, Line, StockError};

/// The scope a service needs to reserve, release and commit.
pub const RESERVE_SCOPE: &str = "inventory.reserve";

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

/// The routes. `tokens` checks the callers' tokens (signature, issuer, audience); the
/// handlers check scope and role.
pub fn router(store: Store, tokens: Verifier) -> Router {
    Router::new()
        .route("/api/v1/inventory/reservations", post(reserve))
        .route("/api/v1/inventory/reservations/{order_id}", get(reservation))
        .route("/api/v1/inventory/reservations/{order_id}/release", post(release))
        .route("/api/v1/inventory/reservations/{order_id}/commit", post(commit))
        .route("/api/v1/inventory/{product_id}", get(stock_of).put(set_stock))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(AppState { store, tokens })
}

fn problem(err: StockError) -> Problem {
    match err {
        StockError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        StockError::Insufficient(shortages) => {
            let detail = shortages
                .iter()
                .map(|s| {
                    format!(
                        "product {}: {} asked, {} available",
                        s.product_id, s.requested, s.available
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Problem::new(409, "insufficient-stock", "Insufficient stock").with_detail(detail)
        }
        StockError::Mismatch(_) => {
            Problem::new(409, "reservation-mismatch", "Reservation mismatch").with_detail(err.to_string())
        }
        StockError::WrongState { .. } => {
            Problem::new(409, "reservation-state", "Reservation state").with_detail(err.to_string())
        }
        StockError::BelowReserved { .. } => {
            Problem::new(409, "below-reserved", "Below reserved").with_detail(err.to_string())
        }
        StockError::NotFound(what) => Problem::not_found(what),
        StockError::Database(e) => {
            tracing::error!(error = %e, "inventory database error");
            Problem::internal()
        }
    }
}

fn product_id(text: &str) -> Result<i64, Problem> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Problem::invalid_field("product_id", format!("`{text}` is not a product id")))
}

async fn stock_of(State(state): State<AppState>, _who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let stock = stock::stock(&state.store, product_id(&id)?).await.map_err(problem)?;
    Ok(Json(stock).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    on_hand: i64,
}

async fn set_stock(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetStock>,
) -> Result<Response, Problem> {
    who.require(None)?;
    let id = product_id(&id)?;
    let stock = stock::set_on_hand(&state.store, id, body.on_hand)
        .await
        .map_err(problem)?;
    tracing::info!(product = id, on_hand = body.on_hand, by = %who.subject(), "stock set");
    Ok(Json(stock).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserve {
    order_id: String,
    lines: Vec<Line>,
}

async fn reserve(State(state): State<AppState>, who: Caller, Json(body): Json<Reserve>) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    let reservation = stock::reserve(&state.store, &body.order_id, &body.lines)
        .instrument(state.store.span("reserve stock"))
        .await
        .map_err(problem)?;
    Ok((StatusCode::OK, Json(reservation)).into_response())
}

async fn reservation(
    State(state): State<AppState>,
    who: Caller,
    Path(order_id): Path<String>,
) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    Ok(Json(stock::reservation(&state.store, &order_id).await.map_err(problem)?).into_response())
}

async fn release(
    State(state): State<AppState>,
    who: Caller,
    Path(order_id): Path<String>,
) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    Ok(Json(
        stock::release(&state.store, &order_id)
            .instrument(state.store.span("release stock"))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

async fn commit(State(state): State<AppState>, who: Caller, Path(order_id): Path<String>) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    Ok(Json(
        stock::commit(&state.store, &order_id)
            .instrument(state.store.span("commit stock"))
            .await
            .map_err(problem)?,
    )
    .into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
