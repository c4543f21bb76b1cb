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
use flotilla::utoipa::{self, IntoParams, OpenApi, ToSchema};
use flotilla::Problem;
use serde::Deserialize;
use tracing::Instrument;

use crate::shipments::{self, Address, Shipment, ShippingError};

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
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(AppState { store, tokens })
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(create, for_order, one, cancel))]
pub(crate) struct Api;

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

/// What orders sends to ship an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateShipment {
    /// The order: 1 to 64 printable characters.
    #[schema(max_length = 64)]
    order_id: String,
    /// Where to.
    address: Address,
    /// Wait for the order's confirmation (a `shop.order.confirmed` event) before the timeline
    /// starts.
    #[serde(default)]
    #[schema(default = false)]
    hold: bool,
    /// The account the order belongs to: the only customer who may read the shipment.
    #[schema(max_length = 128)]
    customer: String,
}

/// Ship an order (idempotent by order_id).
///
/// The order's shipment is made, or the one it has is answered (200; whether it is held is the
/// first call's say).
#[utoipa::path(post, path = "/api/v1/shipments", operation_id = "createShipment",
    security(("bearer" = [])), request_body = CreateShipment,
    responses(
        (status = 201, description = "The shipment, new", body = Shipment),
        (status = 200, description = "The order's shipment, made before", body = Shipment),
        (status = 400, description = "A field is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `shipping.create` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order's shipment goes to another address or customer",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    State(state): State<AppState>,
    who: Caller,
    Json(body): Json<CreateShipment>,
) -> Result<Response, Problem> {
    who.require(Some(CREATE_SCOPE))?;
    let (shipment, created) = shipments::create(&state.store, &body.order_id, body.address, body.hold, &body.customer)
        .instrument(state.store.span("create shipment"))
        .await
        .map_err(problem)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(shipment)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ByOrder {
    /// The order.
    order_id: String,
}

/// An order's shipment, as a list.
///
/// A customer sees only their own: an order without one of theirs is 404, the same whether it
/// has someone else's shipment or none.
#[utoipa::path(get, path = "/api/v1/shipments", operation_id = "shipmentsOfOrder",
    security(("bearer" = [])), params(ByOrder),
    responses(
        (status = 200, description = "The order's shipments", body = [Shipment]),
        (status = 400, description = "No order_id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The order has no shipment the caller may see",
            body = Problem, content_type = "application/problem+json"),
    ))]
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

/// One shipment.
#[utoipa::path(get, path = "/api/v1/shipments/{id}", operation_id = "getShipment",
    security(("bearer" = [])), params(("id" = String, Path, description = "The shipment")),
    responses(
        (status = 200, description = "The shipment", body = Shipment),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No shipment the caller may see",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn one(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let shipment = shipments::get(&state.store, &id).await.map_err(problem)?;
    who.owns(
        shipment.customer.as_deref(),
        READ_SCOPE,
        format_args!("shipment `{id}`"),
    )?;
    Ok(Json(shipment).into_response())
}

/// Cancel a shipment that has not left (idempotent; 409 once shipped or delivered).
///
/// The compensation of creating it (orders' saga). Cancelling again answers the cancelled
/// shipment.
#[utoipa::path(post, path = "/api/v1/shipments/{id}/cancel", operation_id = "cancelShipment",
    security(("bearer" = [])), params(("id" = String, Path, description = "The shipment")),
    responses(
        (status = 200, description = "The cancelled shipment", body = Shipment),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither the `shipping.create` scope nor an admin",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such shipment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The shipment has left",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    who.require(Some(CREATE_SCOPE))?;
    Ok(Json(shipments::cancel(&state.store, &id).await.map_err(problem)?).into_response())
}
