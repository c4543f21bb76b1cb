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
use flotilla::Problem;
use serde::Deserialize;
use tracing::Instrument;

use crate::config::PaymentsConfig;
use crate::payments::{self, Money, Outcome, PaymentError};
use crate::reconcile;

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
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(AppState { store, config, tokens })
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

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Authorize {
    order_id: String,
    amount: Money,
    /// The account the order belongs to: the only customer who may read the payment.
    customer: String,
}

async fn authorize(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    Json(body): Json<Authorize>,
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

async fn capture(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    change(state, who, headers, id, "capture", None).await
}

async fn void(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    change(state, who, headers, id, "void", None).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refund {
    amount_minor: Option<i64>,
}

async fn refund(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    who.require(Some(CHARGE_SCOPE))?;
    // The body is optional: none refunds the rest.
    let refund: Refund = if body.iter().all(u8::is_ascii_whitespace) {
        Refund::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Problem::invalid_field("body", e.to_string()))?
    };
    change(state, who, headers, id, "refund", refund.amount_minor).await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    order_id: String,
}

/// An order's payments. A customer sees only their own: an order with none of theirs is 404,
/// the same whether it has someone else's payments or none at all.
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

async fn one(State(state): State<AppState>, who: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let payment = payments::get(&state.store, &id).await.map_err(problem)?;
    who.owns(payment.customer.as_deref(), READ_SCOPE, format_args!("payment `{id}`"))?;
    Ok(Json(payment).into_response())
}

/// Authorizations no live order stands behind (its order cancelled, or confirmed on another
/// payment), which the sweep voids, and how many it voided since the process started: the
/// invariant a chaos run checks is `standing` empty once the system has settled.
async fn reconciliation(State(state): State<AppState>, who: Caller) -> Result<Response, Problem> {
    who.require(None)?;
    let standing = reconcile::standing(&state.store, 0)
        .await
        .map_err(|e| problem(e.into()))?;
    Ok(Json(serde_json::json!({
        "standing": standing,
        "voided_since_start": reconcile::voided_since_start(),
    }))
    .into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
