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
use flotilla::utoipa::{self, OpenApi, ToSchema};
use flotilla::Problem;
use serde::Deserialize;
use tracing::Instrument;

use crate::stock::{self, Line, Reservation, Stock, StockError};

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
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(AppState { store, tokens })
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(reserve, reservation, release, commit, stock_of, set_stock))]
pub(crate) struct Api;

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

/// A product's stock.
#[utoipa::path(get, path = "/api/v1/inventory/{product_id}", operation_id = "getStock",
    security(("bearer" = [])), params(("product_id" = i64, Path, minimum = 1, description = "The product")),
    responses(
        (status = 200, description = "Stock", body = Stock),
        (status = 400, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No stock is kept for the product",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn stock_of(State(state): State<AppState>, _who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let stock = stock::stock(&state.store, product_id(&id)?).await.map_err(problem)?;
    Ok(Json(stock).into_response())
}

/// The units on hand to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetStock {
    /// Units in the warehouse.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    on_hand: i64,
}

/// Set units on hand (admin).
#[utoipa::path(put, path = "/api/v1/inventory/{product_id}", operation_id = "setStock",
    security(("bearer" = [])), params(("product_id" = i64, Path, minimum = 1, description = "The product")),
    request_body = SetStock,
    responses(
        (status = 200, description = "Stock", body = Stock),
        (status = 400, description = "Not a product id, or units out of range",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Fewer units than are reserved",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

/// What to reserve for an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    /// The order: 1 to 64 printable characters without '/'.
    #[schema(pattern = "^[!-.0-~]{1,64}$", max_length = 64)]
    order_id: String,
    /// What to reserve, each product at most once.
    #[schema(min_items = 1, max_items = 100)]
    lines: Vec<Line>,
}

/// Reserve every line or none (idempotent by order_id).
#[utoipa::path(post, path = "/api/v1/inventory/reservations", operation_id = "reserve",
    security(("bearer" = [])), request_body = ReserveRequest,
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 400, description = "A field is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `inventory.reserve` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too few units, or the order's reservation holds other lines or has ended",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn reserve(
    State(state): State<AppState>,
    who: Caller,
    Json(body): Json<ReserveRequest>,
) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    let reservation = stock::reserve(&state.store, &body.order_id, &body.lines)
        .instrument(state.store.span("reserve stock"))
        .await
        .map_err(problem)?;
    Ok((StatusCode::OK, Json(reservation)).into_response())
}

/// An order's reservation.
#[utoipa::path(get, path = "/api/v1/inventory/reservations/{order_id}", operation_id = "getReservation",
    security(("bearer" = [])), params(("order_id" = String, Path, max_length = 64, description = "The order")),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 400, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `inventory.reserve` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The order has no reservation",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn reservation(
    State(state): State<AppState>,
    who: Caller,
    Path(order_id): Path<String>,
) -> Result<Response, Problem> {
    who.require(Some(RESERVE_SCOPE))?;
    Ok(Json(stock::reservation(&state.store, &order_id).await.map_err(problem)?).into_response())
}

/// Give the units back (idempotent).
///
/// Held units are released; committed ones (the order was given up after its commit went
/// through) are returned to stock. A release for an order never reserved is kept, so a
/// reservation arriving after it is refused.
#[utoipa::path(post, path = "/api/v1/inventory/reservations/{order_id}/release", operation_id = "release",
    security(("bearer" = [])), params(("order_id" = String, Path, max_length = 64, description = "The order")),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 400, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `inventory.reserve` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

/// The units leave the warehouse (idempotent).
#[utoipa::path(post, path = "/api/v1/inventory/reservations/{order_id}/commit", operation_id = "commit",
    security(("bearer" = [])), params(("order_id" = String, Path, max_length = 64, description = "The order")),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 400, description = "Not an order id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `inventory.reserve` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The order has no reservation",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The reservation was released or returned",
            body = Problem, content_type = "application/problem+json"),
    ))]
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
