//! Orders' HTTP API. Placing and reading orders needs a customer's token; a customer sees
//! only their own orders (another's is a 404, not a 403: its existence is not told). Admins
//! may read any order, list and inspect the sagas, and rebuild the read model.

use std::time::Duration;
use tracing::Instrument;

use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::config::LiveConfig;
use flotilla::http::{idempotency, Json, Query};
use flotilla::saga::{SagaRecord, SagaRunner, Transition};
use flotilla::utoipa::{self, IntoParams, OpenApi, ToSchema};
use flotilla::Problem;
use serde::{Deserialize, Serialize};

use crate::config::OrdersConfig;
use crate::downstream::{Downstream, PriceError};
use crate::journal::{Journal, Summary};
use crate::openapi::{Saga, SagaTransition};
use crate::order::{Money, Order, OrderEvent, OrderLine, PlaceOrder, Recorded, Status};
use crate::saga::{OrderSaga, KIND};

/// What the handlers share.
#[derive(Clone)]
pub struct Orders {
    /// The event store and read model.
    pub journal: Journal,
    /// The order saga (to start instances).
    pub runner: SagaRunner<OrderSaga>,
    /// The other services.
    pub downstream: Downstream,
    /// The knobs.
    pub config: LiveConfig<OrdersConfig>,
    /// Checks callers' tokens.
    pub tokens: Verifier,
}

impl FromRef<Orders> for Verifier {
    fn from_ref(orders: &Orders) -> Verifier {
        orders.tokens.clone()
    }
}

/// The scope a service needs to read any customer's orders.
pub(crate) const READ_SCOPE: &str = "orders.read";

/// The routes.
pub fn router(orders: Orders) -> Router {
    Router::new()
        .route("/api/v1/orders", post(place).get(list))
        .route("/api/v1/orders/sagas", get(sagas))
        .route("/api/v1/orders/read-model/rebuild", post(rebuild))
        .route("/api/v1/orders/{id}", get(one))
        .route("/api/v1/orders/{id}/saga", get(saga))
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(orders)
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(place, list, sagas, rebuild, one, saga))]
pub(crate) struct Api;

fn internal(err: sqlx::Error) -> Problem {
    tracing::error!(error = %err, "orders database error");
    Problem::internal()
}

/// Place an order: accepted at once (202); the saga confirms or cancels it.
#[utoipa::path(post, path = "/api/v1/orders", operation_id = "placeOrder", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
        description = "A retry with the same key and body gets the same order")),
    request_body = PlaceOrder,
    responses(
        (status = 202, description = "Accepted", body = Accepted),
        (status = 400, description = "A field is malformed, or a product is unknown or priced in another currency",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is in progress, or inventory cannot fill a line now (`out-of-stock`)",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used for another request",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The order could not be priced (`catalog-unavailable`), or more orders are being confirmed than finish in time (`overloaded`): retry after `Retry-After` with the same Idempotency-Key",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn place(
    State(orders): State<Orders>,
    who: Caller,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, Problem> {
    let config = orders.config.current();
    body.validate(config.max_lines, config.max_quantity)
        .map_err(|e| Problem::invalid_field(e.field, e.reason))?;
    let keyed = match headers.contains_key("idempotency-key") {
        true => Some(Keyed {
            key: idempotency::key(&headers, who.subject())?,
            fingerprint: idempotency::fingerprint("place-order", &serde_json::to_value(&body).unwrap_or_default()),
        }),
        false => None,
    };
    if let Some(keyed) = &keyed {
        if let Some(earlier) = idempotency::recall(orders.journal.store(), &keyed.key, &keyed.fingerprint).await {
            return Ok(earlier);
        }
    }
    // More than the saga confirms in time is refused now, before anything is written.
    if let Err(overloaded) = orders.runner.admit(Duration::from_millis(config.confirm_within_ms)) {
        return Ok(overloaded.into_response());
    }
    // Refused at once what inventory says it cannot fill (over gRPC); the saga still reserves.
    let lines: Vec<(i64, i64)> = body.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    if let Some(short) = orders.downstream.short(&lines).await.first() {
        let reason = format!(
            "product {} has {} units available, {} asked for",
            short.product_id, short.available, short.wanted
        );
        return Err(Problem::new(409, "out-of-stock", "Out of stock")
            .with_detail(reason.clone())
            .with_param("lines", reason));
    }
    Ok(accept(&orders, who.subject(), body, keyed.as_ref()).await)
}

/// What placing an order answers at once.
#[derive(Serialize, ToSchema)]
struct Accepted {
    /// The order's id.
    id: String,
    /// `PENDING`: the saga is working on it.
    status: Status,
    /// What it costs.
    #[schema(value_type = crate::openapi::Money)]
    total: Money,
    /// Where to follow it.
    links: Links,
}

/// Where to follow an order.
#[derive(Serialize, ToSchema)]
struct Links {
    /// The order (`GET`).
    #[serde(rename = "self")]
    me: String,
}

/// A request's `Idempotency-Key` (scoped to its caller) and what identifies the request.
struct Keyed {
    key: String,
    fingerprint: String,
}

/// A refusal as the answer, kept under the request's key when it has one (a retry with the
/// same key gets the same refusal; a 5xx is not kept, so a retry runs again).
async fn refuse(orders: &Orders, keyed: Option<&Keyed>, problem: Problem) -> Response {
    let (status, body) = idempotency::problem_answer(problem);
    if let Some(keyed) = keyed {
        let kept = async {
            let mut tx = orders.journal.store().begin_grouped().await?;
            let kept = idempotency::keep_in(&mut tx, &keyed.key, &keyed.fingerprint, status, &body).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(kept)
        }
        .await;
        match kept {
            Ok(true) => {}
            // Another request with the key answered first: its answer is the key's.
            Ok(false) => {
                if let Some(earlier) = idempotency::recall(orders.journal.store(), &keyed.key, &keyed.fingerprint).await
                {
                    return earlier;
                }
            }
            Err(err) => tracing::error!(error = %err, "could not keep an idempotent answer"),
        }
    }
    idempotency::respond(status, body)
}

/// Prices the lines, then records the placement, starts the saga and keeps the answer under
/// the request's key in one transaction: one durable commit per order.
async fn accept(orders: &Orders, user_id: &str, body: PlaceOrder, keyed: Option<&Keyed>) -> Response {
    let keep = Duration::from_secs(orders.config.current().price_cache_seconds);
    let priced = futures_util::future::join_all(
        body.lines
            .iter()
            .map(|line| orders.downstream.product(line.product_id, keep)),
    )
    .await;
    let mut lines = Vec::with_capacity(body.lines.len());
    let mut currency: Option<String> = None;
    for (i, (line, product)) in body.lines.iter().zip(priced).enumerate() {
        let product = match product {
            Ok(product) => product,
            Err(PriceError::Unknown(id)) => {
                return refuse(
                    orders,
                    keyed,
                    Problem::invalid_field(
                        format!("lines[{i}].product_id"),
                        format!("the catalog has no product {id}"),
                    ),
                )
                .await
            }
            Err(PriceError::Unavailable(why)) => {
                tracing::warn!(%why, "pricing an order");
                return refuse(
                    orders,
                    keyed,
                    Problem::new(503, "catalog-unavailable", "Catalog unavailable")
                        .with_detail("the order could not be priced; retry with the same Idempotency-Key"),
                )
                .await;
            }
        };
        if currency.get_or_insert_with(|| product.price.currency.clone()) != &product.price.currency {
            return refuse(
                orders,
                keyed,
                Problem::invalid_field(
                    format!("lines[{i}].product_id"),
                    "priced in another currency than the other lines; order them separately",
                ),
            )
            .await;
        }
        lines.push(OrderLine {
            product_id: line.product_id,
            quantity: line.quantity,
            name: product.name,
            unit_price_minor: product.price.amount_minor,
        });
    }
    let total = Money {
        amount_minor: lines.iter().map(|l| l.unit_price_minor * l.quantity).sum(),
        currency: currency.unwrap_or_else(|| "EUR".into()),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let saga = OrderSaga {
        order_id: id.clone(),
        user_id: user_id.to_owned(),
        lines: lines.clone(),
        total: total.clone(),
        address: body.shipping_address.clone(),
        payment_id: None,
        shipment_id: None,
    };
    let answer = serde_json::to_value(Accepted {
        id: id.clone(),
        status: Status::Pending,
        total: total.clone(),
        links: Links {
            me: format!("/api/v1/orders/{id}"),
        },
    })
    .unwrap_or_default();
    let placed = OrderEvent::Placed {
        user_id: user_id.to_owned(),
        lines,
        total,
        shipping_address: body.shipping_address,
    };
    // A run under `once` may hold the key, or a racing request may answer first: its answer
    // is given instead. When it let go between our write and our read (it failed, or its
    // hold ran out), the key is free again: write once more.
    for _ in 0..3 {
        let written = async {
            let mut tx = orders.journal.store().begin_grouped().await?;
            if let Some(keyed) = keyed {
                if !idempotency::keep_in(&mut tx, &keyed.key, &keyed.fingerprint, StatusCode::ACCEPTED, &answer).await?
                {
                    // Another request with this key answered while this one priced.
                    return Ok(None);
                }
            }
            orders.journal.record_in(&mut tx, &id, placed.clone(), None).await?;
            orders.runner.start_in(&mut tx, &id, &saga).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(saga.lines.len()))
        }
        .instrument(orders.journal.store().span("place order"))
        .await;
        match (written, keyed) {
            (Ok(Some(lines)), _) => {
                orders.journal.committed();
                orders.runner.wake();
                tracing::info!(order_id = %id, lines, "order placed");
                return idempotency::respond(StatusCode::ACCEPTED, answer);
            }
            (Ok(None), Some(keyed)) => {
                if let Some(earlier) = idempotency::recall(orders.journal.store(), &keyed.key, &keyed.fingerprint).await
                {
                    return earlier;
                }
            }
            (Ok(None), None) => return internal(sqlx::Error::RowNotFound).into_response(),
            (Err(err), _) => return internal(err).into_response(),
        }
    }
    // The key changed hands three times while this request wrote: let the caller retry.
    idempotency::in_progress(Duration::from_secs(1))
}

/// The order if the caller may see it.
async fn visible(orders: &Orders, who: &Caller, id: &str) -> Result<(Order, Vec<crate::order::Recorded>), Problem> {
    let Some((order, events)) = orders.journal.order(id).await.map_err(internal)? else {
        return Err(Problem::not_found(format!("no order `{id}`")));
    };
    who.owns(Some(&order.user_id), READ_SCOPE, format_args!("order `{id}`"))?;
    Ok((order, events))
}

/// An order with the events it is folded from.
#[derive(Serialize, ToSchema)]
#[schema(as = Order)]
struct OrderWithHistory {
    #[serde(flatten)]
    order: Order,
    /// Its events, oldest first.
    history: Vec<Recorded>,
}

/// One order, folded from its events, with its history.
#[utoipa::path(get, path = "/api/v1/orders/{id}", operation_id = "getOrder", security(("bearer" = [])),
    params(("id" = String, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = OrderWithHistory),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No order the caller may see",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn one(State(orders): State<Orders>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let (order, history) = visible(&orders, &who, &id).await?;
    Ok(Json(OrderWithHistory { order, history }).into_response())
}

/// An order's saga instance with its transitions.
#[derive(Serialize, ToSchema)]
struct SagaWithHistory {
    /// The instance.
    #[schema(value_type = Saga)]
    saga: SagaRecord,
    /// Its transitions, oldest first.
    #[schema(value_type = Vec<SagaTransition>)]
    history: Vec<Transition>,
}

/// The order's saga instance and its transitions.
#[utoipa::path(get, path = "/api/v1/orders/{id}/saga", operation_id = "getOrderSaga", security(("bearer" = [])),
    params(("id" = String, Path, description = "The order")),
    responses(
        (status = 200, description = "The saga", body = SagaWithHistory),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No order the caller may see, or it has no saga",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn saga(State(orders): State<Orders>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    visible(&orders, &who, &id).await?;
    let store = orders.runner.store();
    let record = store
        .get(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found(format!("no saga for order `{id}`")))?;
    let history = store.history(&id).await.map_err(internal)?;
    Ok(Json(SagaWithHistory { saga: record, history }).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only orders where this is.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// How many at most.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

fn limit(asked: Option<i64>) -> Result<i64, Problem> {
    match asked {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(Problem::invalid_field("limit", "1 to 100")),
    }
}

/// The caller's orders, newest first (read model).
#[utoipa::path(get, path = "/api/v1/orders", operation_id = "listOrders", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Orders", body = [Summary]),
        (status = 400, description = "A bad status or limit",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(State(orders): State<Orders>, who: Caller, Query(q): Query<ListQuery>) -> Result<Response, Problem> {
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(
            Status::parse(text)
                .ok_or_else(|| Problem::invalid_field("status", "PENDING, PAYMENT_PENDING, CONFIRMED or CANCELLED"))?,
        ),
    };
    let found = orders
        .journal
        .list(who.subject(), status, limit(q.limit)?)
        .await
        .map_err(internal)?;
    Ok(Json(found).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SagaQuery {
    /// How many at most.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

/// Saga instances, newest first (admin).
#[utoipa::path(get, path = "/api/v1/orders/sagas", operation_id = "listSagas", security(("bearer" = [])),
    params(SagaQuery),
    responses(
        (status = 200, description = "Sagas", body = [Saga]),
        (status = 400, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn sagas(State(orders): State<Orders>, who: Caller, Query(q): Query<SagaQuery>) -> Result<Response, Problem> {
    who.require(None)?;
    let found = orders
        .runner
        .store()
        .list(KIND, limit(q.limit)?)
        .await
        .map_err(internal)?;
    Ok(Json(found).into_response())
}

/// How a rebuild of the read model went.
#[derive(Serialize, ToSchema)]
struct Rebuilt {
    /// Orders folded again.
    orders: u64,
    /// How long it took.
    took_ms: u64,
}

/// Fold the read model again from every event (admin).
#[utoipa::path(post, path = "/api/v1/orders/read-model/rebuild", operation_id = "rebuildReadModel",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rebuilt", body = Rebuilt),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rebuild(State(orders): State<Orders>, who: Caller) -> Result<Response, Problem> {
    who.require(None)?;
    let started = std::time::Instant::now();
    let count = orders.journal.rebuild().await.map_err(internal)?;
    let took_ms = started.elapsed().as_millis() as u64;
    tracing::info!(orders = count, took_ms, by = %who.subject(), "read model rebuilt from the events");
    Ok(Json(Rebuilt { orders: count, took_ms }).into_response())
}
