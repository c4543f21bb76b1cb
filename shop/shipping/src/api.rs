//! Shipping's HTTP API: creating and cancelling a shipment is for services holding
//! `shipping.create` (orders) or admins; a shipment is read by its customer, an admin or a
//! service holding `shipping.read` (anyone else gets 404). Every handler verifies its caller
//! before it reads the body.

use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::http::{Json, Query};
use flotilla::store::Store;
use flotilla::Problem;
use serde::Deserialize;
use tracing::Instrument;

use crate::shipments::{self, Address, ShippingError};

/// The scope a service needs to create and cancel shipments.
pub const CREATE_SCOPE: &str = "shipping.create";

/// The scope a service needs to read any customer's shipments.
pub(crate) const READ_SCOPE: &str = "shipping.read";

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

/// The routes. `tokens` checks the callers' tokens; the handlers check scope and role.
pub fn router(store: Store, tokens: Verifier) -> Router {
    Router::new()
        .route("/api/v1/shipments", post(create).get(for_order))
        .route("/api/v1/shipments/{id}", get(one))
        .route("/api/v1/shipments/{id}/cancel", post(cancel))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(AppState { store, tokens })
}

fn problem(err: ShippingError) -> Problem {
    match err {
        ShippingError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        ShippingError::Mismatch(_) => {
            Problem::new(409, "shipment-mismatch", "Shipment mismatch").with_detail(err.to_string())
        }
        ShippingError::State { .. } => {
            Problem::new(409, "shipment-state", "Shipment state conflict").with_detail(err.to_string())
        }
        ShippingError::NotFound(what) => Problem::not_found(what),
        ShippingError::Database(e) => {
            tracing::error!(error = %e, "shipping database error");
            Problem::internal()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    order_id: String,
    address: Address,
    /// Wait for the order's confirmation (a `shop.order.confirmed` event) before the timeline
    /// starts.
    #[serde(default)]
    hold: bool,
    /// The account the order belongs to: the only customer who may read the shipment.
    customer: String,
}

async fn create(State(state): State<AppState>, who: Caller, Json(body): Json<Create>) -> Result<Response, Problem> {
    who.require(Some(CREATE_SCOPE))?;
    let (shipment, created) = shipments::create(&state.store, &body.order_id, body.address, body.hold, &body.customer)
        .instrument(state.store.span("create shipment"))
        .await
        .map_err(problem)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(shipment)).into_response())
}

#[derive(Debug, Deserialize)]
struct ByOrder {
    order_id: String,
}

/// An order's shipment, as a list. A customer sees only their own: an order without one of
/// theirs is 404, the same whether it has someone else's shipment or none.
async fn for_order(State(state): State<AppState>, who: Caller, Query(q): Query<ByOrder>) -> Result<Response, Problem> {
    let found = shipments::by_order(&state.store, &q.order_id).await.map_err(problem)?;
    let found = who.own_only(
        found.into_iter().collect(),
        |s| s.customer.as_deref(),
        READ_SCOPE,
        format_args!("shipment of order `{}`", q.order_id),
    )?;
    Ok(Json(found).into_response())
}

async fn one(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let shipment = shipments::get(&state.store, &id).await.map_err(problem)?;
    who.owns(
        shipment.customer.as_deref(),
        READ_SCOPE,
        format_args!("shipment `{id}`"),
    )?;
    Ok(Json(shipment).into_response())
}

/// Cancels a shipment that has not left; the compensation of creating it (orders' saga).
/// Cancelling again answers the cancelled shipment; one shipped or delivered is `409`.
async fn cancel(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    who.require(Some(CREATE_SCOPE))?;
    Ok(Json(shipments::cancel(&state.store, &id).await.map_err(problem)?).into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
