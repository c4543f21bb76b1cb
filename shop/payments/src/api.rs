//! Payments' HTTP API. Every write needs an `Idempotency-Key` and a caller holding the
//! `payments.charge` scope (orders) or the `admin` role; a payment is read by its customer, an
//! admin or a service holding `payments.read` (anyone else gets 404); the reconciliation
//! report needs the `admin` role. A write's changes and its idempotent answer commit in one
//! transaction. Every handler verifies its caller before it reads the body.

use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::config::LiveConfig;
use flotilla::http::{idempotency, Json, Query};
use flotilla::store::Store;
use flotilla::utoipa::{self, IntoParams, IntoResponses, OpenApi, ToSchema};
use flotilla::Problem;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::PaymentsConfig;
use crate::payments::{self, Money, Outcome, Payment, PaymentError};
use crate::reconcile::{self, Standing};

/// The scope a service needs to authorize, capture, void and refund.
pub const CHARGE_SCOPE: &str = "payments.charge";

/// The scope a service needs to read any customer's payments.
pub(crate) const READ_SCOPE: &str = "payments.read";

#[derive(Clone)]
struct AppState {
    store: Store,
    config: LiveConfig<PaymentsConfig>,
    tokens: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.tokens.clone()
    }
}

/// The routes. `tokens` checks the callers' tokens; the handlers check scope and role.
pub fn router(store: Store, config: LiveConfig<PaymentsConfig>, tokens: Verifier) -> Router {
    Router::new()
        .route("/api/v1/payments", post(authorize).get(list))
        .route("/api/v1/payments/reconciliation", get(reconciliation))
        .route("/api/v1/payments/{id}", get(one))
        .route("/api/v1/payments/{id}/capture", post(capture))
        .route("/api/v1/payments/{id}/void", post(void))
        .route("/api/v1/payments/{id}/refund", post(refund))
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(AppState { store, config, tokens })
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(authorize, list, reconciliation, one, capture, void, refund))]
pub(crate) struct Api;

/// A string that is one of `values`, for the OpenAPI document (`#[schema(schema_with = …)]`).
pub(crate) fn one_of(values: &[&str], description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

fn problem(err: PaymentError) -> Problem {
    match err {
        PaymentError::Invalid { field, reason } => Problem::invalid_field(field, reason),
        PaymentError::Declined(detail) => Problem::new(402, "payment-declined", "Payment declined").with_detail(detail),
        PaymentError::Unavailable => Problem::new(503, "provider-unavailable", "Payment provider unavailable")
            .with_detail("the payment provider did not answer; retry with the same Idempotency-Key"),
        PaymentError::NotFound(id) => Problem::not_found(format!("no payment `{id}`")),
        PaymentError::WrongState { .. } => {
            Problem::new(409, "payment-state", "Payment state").with_detail(err.to_string())
        }
        PaymentError::OrderPaid { .. } => {
            Problem::new(409, "order-has-payment", "Order has a payment").with_detail(err.to_string())
        }
        PaymentError::Database(e) => {
            tracing::error!(error = %e, "payments database error");
            Problem::internal()
        }
    }
}

/// A write's answer: the payment (`created` or 200), a declined one as 402, or the refusal;
/// with the write's transaction, so the idempotent answer commits with it.
fn answer(result: Result<Outcome, PaymentError>, created: bool) -> idempotency::Answer {
    match result {
        Ok(Outcome { payment, tx }) => {
            let (status, body) = if payment.state == "declined" {
                idempotency::problem_answer(problem(payments::declined(&payment)))
            } else {
                // A new payment is 201; an order's existing one given again is 200.
                let status = if created && tx.is_some() {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (status, serde_json::to_value(payment).unwrap_or_default())
            };
            match tx {
                Some(tx) => idempotency::Answer::with(status, body, tx),
                None => idempotency::Answer::new(status, body),
            }
        }
        Err(err) => idempotency::Answer::problem(problem(err)),
    }
}

/// How a write (authorize, capture, void, refund) may be refused, for the OpenAPI document.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "described in the document; the handlers answer `Problem`s")]
enum WriteRefusal {
    /// A field is malformed, or no Idempotency-Key.
    #[response(status = 400, content_type = "application/problem+json")]
    Invalid(Problem),
    /// No valid token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The provider declined the payment.
    #[response(status = 402, content_type = "application/problem+json")]
    Declined(Problem),
    /// Neither the `payments.charge` scope nor an admin.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such payment.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The payment is in another state, the order's payment is for another amount, or a request
    /// with this key is in progress.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The Idempotency-Key was used for another request.
    #[response(status = 422, content_type = "application/problem+json")]
    KeyReused(Problem),
    /// The provider did not answer; retry with the same Idempotency-Key.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// What orders sends to authorize an order's total.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    /// The order: 1 to 64 printable characters.
    #[schema(max_length = 64)]
    order_id: String,
    /// What to authorize.
    amount: Money,
    /// The account the order belongs to: the only customer who may read the payment.
    #[schema(max_length = 128)]
    customer: String,
}

/// Authorize an order's total.
///
/// One payment per order: 201 with a new authorization, or 200 with the order's payment when it
/// has one (409 if that one is for another amount).
#[utoipa::path(post, path = "/api/v1/payments", operation_id = "authorize",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = String, Header, max_length = 255,
            description = "The same key with the same request gets the first answer again")
    ),
    request_body = AuthorizeRequest,
    responses(
        (status = 201, description = "The payment, authorized now", body = Payment),
        (status = 200, description = "The order's payment, authorized before", body = Payment),
        WriteRefusal,
    ))]
async fn authorize(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    Json(body): Json<AuthorizeRequest>,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    let key = idempotency::key(&headers, who.subject())?;
    let fingerprint = idempotency::fingerprint("authorize", &serde_json::to_value(&body).unwrap_or_default());
    let config = state.config.current();
    Ok(idempotency::once(&state.store, &key, &fingerprint, || async {
        answer(
            payments::authorize(&state.store, &config, &body.order_id, body.amount, &body.customer)
                .instrument(state.store.span("authorize payment"))
                .await,
            true,
        )
    })
    .await)
}

async fn change(
    state: AppState,
    who: Caller,
    headers: HeaderMap,
    id: String,
    operation: &'static str,
    amount: Option<i64>,
) -> Result<Response, Problem> {
    let key = idempotency::key(&headers, who.subject())?;
    let fingerprint = idempotency::fingerprint(operation, &serde_json::json!({ "id": id, "amount_minor": amount }));
    let config = state.config.current();
    Ok(idempotency::once(&state.store, &key, &fingerprint, || async {
        let result = match operation {
            "capture" => {
                payments::capture(&state.store, &config, &id)
                    .instrument(state.store.span("capture payment"))
                    .await
            }
            "void" => {
                payments::void(&state.store, &config, &id)
                    .instrument(state.store.span("void payment"))
                    .await
            }
            _ => {
                payments::refund(&state.store, &config, &id, amount)
                    .instrument(state.store.span("refund payment"))
                    .await
            }
        };
        answer(result, false)
    })
    .await)
}

/// Capture an authorized payment.
#[utoipa::path(post, path = "/api/v1/payments/{id}/capture", operation_id = "capture",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The payment"),
        ("Idempotency-Key" = String, Header, max_length = 255,
            description = "The same key with the same request gets the first answer again")
    ),
    responses(
        (status = 200, description = "The payment", body = Payment),
        WriteRefusal,
    ))]
async fn capture(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    change(state, who, headers, id, "capture", None).await
}

/// Void an authorized payment.
#[utoipa::path(post, path = "/api/v1/payments/{id}/void", operation_id = "void",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The payment"),
        ("Idempotency-Key" = String, Header, max_length = 255,
            description = "The same key with the same request gets the first answer again")
    ),
    responses(
        (status = 200, description = "The payment", body = Payment),
        WriteRefusal,
    ))]
async fn void(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    change(state, who, headers, id, "void", None).await
}

/// How much to refund.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Refund {
    /// Minor units, at most what is left to refund (none: all of it).
    #[schema(minimum = 1)]
    amount_minor: Option<i64>,
}

/// Refund part or the rest of a captured payment.
///
/// With no body, the rest is refunded.
#[utoipa::path(post, path = "/api/v1/payments/{id}/refund", operation_id = "refund",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The payment"),
        ("Idempotency-Key" = String, Header, max_length = 255,
            description = "The same key with the same request gets the first answer again")
    ),
    request_body(content = Option<Refund>, description = "How much (none: the rest)"),
    responses(
        (status = 200, description = "The payment", body = Payment),
        WriteRefusal,
    ))]
async fn refund(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    // The body is optional: none (or `null`) refunds the rest.
    let refund: Option<Refund> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&body).map_err(|e| Problem::invalid_field("body", e.to_string()))?
    };
    let refund = refund.unwrap_or_default();
    change(state, who, headers, id, "refund", refund.amount_minor).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The order.
    order_id: String,
}

/// An order's payments.
///
/// A customer sees only their own: an order with none of theirs is 404, the same whether it has
/// someone else's payments or none at all.
#[utoipa::path(get, path = "/api/v1/payments", operation_id = "listPayments",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "The order's payments", body = [Payment]),
        (status = 400, description = "No order_id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The order has no payment the caller may see",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(State(state): State<AppState>, who: Caller, Query(q): Query<ListQuery>) -> Result<Response, Problem> {
    let found = payments::for_order(&state.store, &q.order_id).await.map_err(problem)?;
    let found = who.own_only(
        found,
        |p| p.customer.as_deref(),
        READ_SCOPE,
        format_args!("payments of order `{}`", q.order_id),
    )?;
    Ok(Json(found).into_response())
}

/// One payment.
#[utoipa::path(get, path = "/api/v1/payments/{id}", operation_id = "getPayment",
    security(("bearer" = [])), params(("id" = String, Path, description = "The payment")),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No payment the caller may see",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn one(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let payment = payments::get(&state.store, &id).await.map_err(problem)?;
    who.owns(payment.customer.as_deref(), READ_SCOPE, format_args!("payment `{id}`"))?;
    Ok(Json(payment).into_response())
}

/// What stands, and how many the sweep voided.
#[derive(Serialize, ToSchema)]
struct Reconciliation {
    /// Authorizations no live order stands behind (the sweep voids them); empty once the
    /// system has settled.
    standing: Vec<Standing>,
    /// Authorizations the sweep voided since the process started.
    voided_since_start: u64,
}

/// Authorizations no live order stands behind (the sweep voids them), for administrators.
///
/// Their order was cancelled, or confirmed on another payment. The invariant a chaos run checks
/// is `standing` empty once the system has settled.
#[utoipa::path(get, path = "/api/v1/payments/reconciliation", operation_id = "reconciliation",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What stands, and how many the sweep voided", body = Reconciliation),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reconciliation(State(state): State<AppState>, who: Caller) -> Result<Response, Problem> {
    who.require(None)?;
    let standing = reconcile::standing(&state.store, 0)
        .await
        .map_err(|e| problem(e.into()))?;
    Ok(Json(Reconciliation {
        standing,
        voided_since_start: reconcile::voided_since_start(),
    })
    .into_response())
}
