//! Payments and the simulated provider. The provider is called before anything is written: a
//! provider failure leaves no trace, so a retry may run again; a state change is one
//! conditional `UPDATE`, so of two racing captures one moves the payment and the other finds
//! it captured. An order has one payment at most (a unique index): authorizing an order that
//! has one gives that one back. Each operation leaves what it wrote in an open transaction
//! ([`Outcome`]) for the caller to commit, so the request's idempotent answer commits with it.

use std::time::Duration;

use flotilla::store::{now_ms, GroupedTx, Store};
use flotilla::utoipa::{self, ToSchema};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::config::PaymentsConfig;

/// Money in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Amount in minor units (1999 = 19.99).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// A payment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    /// Its id.
    pub id: String,
    /// The order it pays for.
    pub order_id: String,
    /// What was authorized.
    pub amount: Money,
    /// `authorized`, `captured`, `voided`, `refunded` or `declined`.
    #[schema(schema_with = state)]
    pub state: String,
    /// How much of it was refunded.
    pub refunded_minor: i64,
    /// The provider's reference.
    pub provider_ref: String,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
    /// Whose it is: the customer's account id (none on payments from before owners were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub customer: Option<String>,
}

fn state() -> utoipa::openapi::Object {
    crate::api::one_of(
        &["authorized", "captured", "voided", "refunded", "declined"],
        "Where the payment stands.",
    )
}

/// Why an operation did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// A field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The provider declined (a final answer).
    #[error("declined: {0}")]
    Declined(String),
    /// The provider did not answer (try again).
    #[error("the payment provider is unavailable")]
    Unavailable,
    /// No such payment.
    #[error("no payment `{0}`")]
    NotFound(String),
    /// The operation does not apply in the payment's state.
    #[error("payment `{id}` is {state}")]
    WrongState {
        /// The payment.
        id: String,
        /// Its state.
        state: String,
    },
    /// The order already has a payment of another amount (an order's total never changes,
    /// so this is someone else's mistake, not a retry).
    #[error("order `{order_id}` already has payment `{id}` of {amount_minor} {currency}")]
    OrderPaid {
        /// The order.
        order_id: String,
        /// Its payment.
        id: String,
        /// What that payment is for.
        amount_minor: i64,
        /// In what currency.
        currency: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an operation did: the payment as it now stands, and the transaction holding what the
/// operation wrote, uncommitted (`None` when it found its effect already done and wrote
/// nothing). The caller commits it, with the request's idempotent answer inside.
#[derive(Debug)]
pub struct Outcome {
    /// The payment after the operation.
    pub payment: Payment,
    /// The operation's writes, not yet committed (a grouped commit: durable once it returns).
    pub tx: Option<GroupedTx>,
}

impl Outcome {
    fn unchanged(payment: Payment) -> Self {
        Self { payment, tx: None }
    }

    /// Commits the operation's writes on their own (no idempotent answer to keep with them).
    pub async fn commit(self) -> Result<Payment, PaymentError> {
        if let Some(tx) = self.tx {
            tx.commit().await?;
        }
        Ok(self.payment)
    }
}

/// One provider call: its latency, and its failure rate.
async fn provider(config: &PaymentsConfig) -> Result<String, PaymentError> {
    tokio::time::sleep(Duration::from_millis(config.provider_latency_ms)).await;
    let (fail, reference) = {
        let mut rng = rand::rng();
        (rng.random_bool(config.provider_failure_rate), rng.random::<u64>())
    };
    if fail {
        Err(PaymentError::Unavailable)
    } else {
        Ok(format!("sim_{reference:016x}"))
    }
}

fn payment(row: &sqlx::any::AnyRow) -> Result<Payment, sqlx::Error> {
    Ok(Payment {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        amount: Money {
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
        },
        state: row.try_get("state")?,
        refunded_minor: row.try_get("refunded_minor")?,
        provider_ref: row.try_get("provider_ref")?,
        created_ms: row.try_get("created_ms")?,
        customer: row.try_get("customer")?,
    })
}

const COLUMNS: &str = "id, order_id, amount_minor, currency, state, refunded_minor, provider_ref, created_ms, customer";

/// One payment.
pub async fn get(store: &Store, id: &str) -> Result<Payment, PaymentError> {
    let mut conn = store.pool().acquire().await?;
    get_in(&mut conn, id).await
}

/// One payment, as a connection (or a transaction) sees it.
async fn get_in(conn: &mut AnyConnection, id: &str) -> Result<Payment, PaymentError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| PaymentError::NotFound(id.to_owned()))?;
    Ok(payment(&row)?)
}

/// The order's payment, if it has one (the first, where older data holds several).
async fn of_order(store: &Store, order_id: &str) -> Result<Option<Payment>, PaymentError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 ORDER BY nth LIMIT 1"
    ))
    .bind(order_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|r| payment(&r)).transpose()?)
}

/// An authorization asked again for an order that has its payment: that payment, if it is
/// for the same amount and customer.
fn again(existing: Payment, amount: &Money, customer: &str) -> Result<Outcome, PaymentError> {
    if existing.amount != *amount || existing.customer.as_deref().is_some_and(|c| c != customer) {
        return Err(PaymentError::OrderPaid {
            order_id: existing.order_id,
            id: existing.id,
            amount_minor: existing.amount.amount_minor,
            currency: existing.amount.currency,
        });
    }
    Ok(Outcome::unchanged(existing))
}

/// An order's payments, oldest first.
pub async fn for_order(store: &Store, order_id: &str) -> Result<Vec<Payment>, PaymentError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_ms, id"
    ))
    .bind(order_id)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(payment).collect::<Result<_, _>>()?)
}

/// Checks an order id, an amount and a customer.
pub fn check(order_id: &str, amount: &Money, customer: &str) -> Result<(), PaymentError> {
    if customer.is_empty() || customer.len() > 128 || !customer.chars().all(|c| c.is_ascii_graphic()) {
        return Err(PaymentError::Invalid {
            field: "customer",
            reason: "the customer's account id: 1 to 128 printable characters".into(),
        });
    }
    if order_id.is_empty() || order_id.len() > 64 || !order_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(PaymentError::Invalid {
            field: "order_id",
            reason: "1 to 64 printable characters".into(),
        });
    }
    if !(1..=1_000_000_000_000).contains(&amount.amount_minor) {
        return Err(PaymentError::Invalid {
            field: "amount.amount_minor",
            reason: "1 to 10^12 minor units".into(),
        });
    }
    if amount.currency.len() != 3 || !amount.currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(PaymentError::Invalid {
            field: "amount.currency",
            reason: "an ISO 4217 code like EUR".into(),
        });
    }
    Ok(())
}

/// Authorizes `amount` for the order: a new payment, `authorized` or `declined`; or the
/// order's payment if it has one already (one per order, whatever the idempotency key).
pub async fn authorize(
    store: &Store,
    config: &PaymentsConfig,
    order_id: &str,
    amount: Money,
    customer: &str,
) -> Result<Outcome, PaymentError> {
    check(order_id, &amount, customer)?;
    if let Some(existing) = of_order(store, order_id).await? {
        return again(existing, &amount, customer);
    }
    let reference = provider(config).await?;
    let declined = amount.amount_minor > config.decline_over_minor;
    let now = now_ms();
    let created = Payment {
        id: uuid::Uuid::new_v4().to_string(),
        order_id: order_id.to_owned(),
        amount,
        state: if declined { "declined" } else { "authorized" }.into(),
        refunded_minor: 0,
        provider_ref: reference,
        created_ms: now,
        customer: Some(customer.to_owned()),
    };
    let mut tx = store.begin_grouped().await?;
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_minor, currency, state, refunded_minor, provider_ref, created_ms, updated_ms, nth, customer) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7, 0, $8) \
         ON CONFLICT (order_id, nth) DO NOTHING",
    )
    .bind(&created.id)
    .bind(&created.order_id)
    .bind(created.amount.amount_minor)
    .bind(&created.amount.currency)
    .bind(&created.state)
    .bind(&created.provider_ref)
    .bind(now)
    .bind(customer)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another authorization of this order got there first (a retry that took over a hold
        // whose holder was only paused): that one stands; this provider authorization is
        // released, never recorded.
        tx.rollback().await?;
        tracing::warn!(order_id, provider_ref = %created.provider_ref, "the order was authorized meanwhile; releasing this second authorization at the provider");
        let existing = of_order(store, order_id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("of order {order_id}")))?;
        return again(existing, &created.amount, customer);
    }
    Ok(Outcome {
        payment: created,
        tx: Some(tx),
    })
}

/// The problem a declined payment is answered with.
pub fn declined(payment: &Payment) -> PaymentError {
    PaymentError::Declined(format!(
        "payment {} of {} {} is over the limit",
        payment.id, payment.amount.amount_minor, payment.amount.currency
    ))
}

/// Moves a payment from `from` to `to` after a provider call; already in `to` is success.
async fn transition(
    store: &Store,
    config: &PaymentsConfig,
    id: &str,
    from: &str,
    to: &str,
) -> Result<Outcome, PaymentError> {
    let current = get(store, id).await?;
    if current.state == to {
        return Ok(Outcome::unchanged(current));
    }
    if current.state != from {
        return Err(PaymentError::WrongState {
            id: id.to_owned(),
            state: current.state,
        });
    }
    provider(config).await?;
    let mut tx = store.begin_grouped().await?;
    let moved = sqlx::query("UPDATE payments SET state = $1, updated_ms = $2 WHERE id = $3 AND state = $4")
        .bind(to)
        .bind(now_ms())
        .bind(id)
        .bind(from)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let after = get_in(&mut tx, id).await?;
    if after.state != to {
        return Err(PaymentError::WrongState {
            id: id.to_owned(),
            state: after.state,
        });
    }
    if moved == 0 {
        // Moved meanwhile by another request: nothing of ours to commit.
        tx.rollback().await?;
        return Ok(Outcome::unchanged(after));
    }
    Ok(Outcome {
        payment: after,
        tx: Some(tx),
    })
}

/// Captures an authorized payment (whole).
pub async fn capture(store: &Store, config: &PaymentsConfig, id: &str) -> Result<Outcome, PaymentError> {
    transition(store, config, id, "authorized", "captured").await
}

/// Voids an authorized payment.
pub async fn void(store: &Store, config: &PaymentsConfig, id: &str) -> Result<Outcome, PaymentError> {
    transition(store, config, id, "authorized", "voided").await
}

/// Refunds part (or, with `None`, the rest) of a captured payment.
pub async fn refund(
    store: &Store,
    config: &PaymentsConfig,
    id: &str,
    amount_minor: Option<i64>,
) -> Result<Outcome, PaymentError> {
    let current = get(store, id).await?;
    if current.state != "captured" {
        return Err(PaymentError::WrongState {
            id: id.to_owned(),
            state: current.state,
        });
    }
    let left = current.amount.amount_minor - current.refunded_minor;
    let amount = amount_minor.unwrap_or(left);
    if !(1..=left).contains(&amount) {
        return Err(PaymentError::Invalid {
            field: "amount_minor",
            reason: format!("1 to {left}, what is left to refund"),
        });
    }
    provider(config).await?;
    let mut tx = store.begin_grouped().await?;
    let done = sqlx::query(
        "UPDATE payments SET refunded_minor = refunded_minor + $1, state = CASE WHEN refunded_minor + $1 = amount_minor THEN 'refunded' ELSE state END, updated_ms = $2 \
         WHERE id = $3 AND state = 'captured' AND refunded_minor + $1 <= amount_minor",
    )
    .bind(amount)
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    let after = get_in(&mut tx, id).await?;
    if done.rows_affected() == 1 {
        Ok(Outcome {
            payment: after,
            tx: Some(tx),
        })
    } else {
        Err(PaymentError::WrongState {
            id: id.to_owned(),
            state: after.state,
        })
    }
}
