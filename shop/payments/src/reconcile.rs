//! Reconciliation: no authorization stays standing without a live order behind it. Payments
//! reads what became of each order from the order events (topic `orders`, group `payments`)
//! and a sweep voids any `authorized` payment whose order was cancelled, or confirmed on
//! another payment (data from before one payment per order was enforced). The order saga's
//! compensation voids its payments itself; the sweep catches what a fault let through (an
//! authorization that landed after its order had been compensated), logs each and counts it
//! in `shop_payments_reconciled_total`. [`standing`] is the invariant a chaos run checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla::config::LiveConfig;
use flotilla::events::{Consumer, Delivery, EventsClient};
use flotilla::store::{now_ms, Store};
use flotilla::telemetry::metrics::{self, Kind, MetricDoc};
use flotilla::utoipa::{self, ToSchema};
use flotilla_shop_contracts::orders::{self, OrderEventData};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;

use crate::config::PaymentsConfig;
use crate::payments::{self, PaymentError};

/// Authorizations the sweep voided, by the outcome of their order.
pub const RECONCILED: &str = "shop_payments_reconciled_total";

/// Payments' own metrics.
pub static METRICS: &[MetricDoc] = &[metrics::doc(
    RECONCILED,
    Kind::Counter,
    &["order_outcome"],
    "Authorizations voided by the reconciliation sweep because no live order stands behind them, by the order's outcome.",
)];

static VOIDED: AtomicU64 = AtomicU64::new(0);

/// How many authorizations this process's sweep voided.
pub fn voided_since_start() -> u64 {
    VOIDED.load(Ordering::Relaxed)
}

/// An authorization no live order stands behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Standing {
    /// The payment.
    pub payment_id: String,
    /// Its order.
    pub order_id: String,
    /// What became of the order: `cancelled`, or `confirmed` (on another payment).
    #[schema(schema_with = order_outcome)]
    pub order_outcome: String,
    /// What is held on the customer's card, in minor units.
    pub amount_minor: i64,
    /// In what currency.
    pub currency: String,
    /// When the order's outcome was learned, ms since the epoch.
    pub outcome_ms: i64,
}

fn order_outcome() -> utoipa::openapi::Object {
    crate::api::one_of(
        &["confirmed", "cancelled"],
        "What became of the order: `cancelled`, or `confirmed` (on another payment).",
    )
}

/// Authorizations whose order ended at least `grace_ms` ago without them: cancelled, or
/// confirmed with another payment captured.
pub async fn standing(store: &Store, grace_ms: i64) -> Result<Vec<Standing>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.id, p.order_id, o.outcome, p.amount_minor, p.currency, o.at_ms FROM payments p \
         JOIN order_outcomes o ON o.order_id = p.order_id \
         WHERE p.state = 'authorized' AND o.at_ms <= $1 AND (o.outcome = 'cancelled' OR EXISTS \
           (SELECT 1 FROM payments c WHERE c.order_id = p.order_id AND c.id <> p.id AND c.state IN ('captured', 'refunded'))) \
         ORDER BY o.at_ms, p.id",
    )
    .bind(now_ms() - grace_ms)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Standing {
                payment_id: r.try_get("id")?,
                order_id: r.try_get("order_id")?,
                order_outcome: r.try_get("outcome")?,
                amount_minor: r.try_get("amount_minor")?,
                currency: r.try_get("currency")?,
                outcome_ms: r.try_get("at_ms")?,
            })
        })
        .collect()
}

/// Voids every standing authorization whose order ended at least the configured grace ago
/// (the saga's own compensation goes first); returns how many it voided. One that cannot be
/// voided now (the provider away) is tried again on the next sweep.
pub async fn sweep(store: &Store, config: &PaymentsConfig) -> Result<usize, sqlx::Error> {
    metrics::declare(METRICS);
    let mut voided = 0;
    for standing in standing(store, config.reconcile_grace_ms as i64).await? {
        match payments::void(store, config, &standing.payment_id).await {
            Ok(outcome) => match outcome.commit().await {
                Ok(_) => {
                    voided += 1;
                    VOIDED.fetch_add(1, Ordering::Relaxed);
                    metrics::add(RECONCILED, &[&standing.order_outcome], 1.0);
                    tracing::warn!(
                        payment_id = %standing.payment_id,
                        order_id = %standing.order_id,
                        order_outcome = %standing.order_outcome,
                        amount_minor = standing.amount_minor,
                        "voided an authorization no live order stands behind"
                    );
                }
                Err(err) => {
                    tracing::warn!(payment_id = %standing.payment_id, error = %err, "voiding a standing authorization failed; next sweep")
                }
            },
            // Voided or captured meanwhile: nothing standing any more.
            Err(PaymentError::WrongState { .. }) => {}
            Err(err) => {
                tracing::warn!(payment_id = %standing.payment_id, error = %err, "voiding a standing authorization failed; next sweep")
            }
        }
    }
    Ok(voided)
}

/// Keeps what became of an order (its confirmed or cancelled event) inside the inbox's
/// transaction; other order events are acknowledged and ignored.
pub async fn on_order_event(
    delivery: Delivery,
    mut tx: Transaction<'static, Any>,
) -> Result<Transaction<'static, Any>, String> {
    let event = &delivery.event;
    let outcome = match event.kind.as_str() {
        orders::CONFIRMED => "confirmed",
        orders::CANCELLED => "cancelled",
        _ => return Ok(tx),
    };
    let order = OrderEventData::from_event(event)
        .map_err(|e| format!("event `{}` ({}): the data is not an order: {e}", event.id, event.kind))?;
    if order.order_id.is_empty() {
        return Err(format!("event `{}`: no order id", event.id));
    }
    sqlx::query(
        "INSERT INTO order_outcomes (order_id, outcome, at_ms) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&order.order_id)
    .bind(outcome)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(|e| format!("event `{}`: {e}", event.id))?;
    Ok(tx)
}

/// Consumes order events and sweeps for the life of the process: after each batch of order
/// outcomes (once their grace is over) and at least every `reconcile_every_ms`.
pub fn spawn(tasks: &flotilla::app::Tasks, store: Store, config: LiveConfig<PaymentsConfig>, events: EventsClient) {
    metrics::declare(METRICS);
    let wake = Arc::new(Notify::new());
    let consumer = Consumer::new(store.clone(), events, orders::TOPIC, crate::SERVICE);
    let woken = wake.clone();
    tasks.spawn(
        "order events",
        consumer.run(move |delivery, tx| {
            let woken = woken.clone();
            async move {
                let handled = on_order_event(delivery, tx).await;
                woken.notify_one();
                handled
            }
        }),
    );
    tasks.spawn("reconciliation sweep", async move {
        loop {
            let current = config.current();
            let every = Duration::from_millis(current.reconcile_every_ms.max(100));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = wake.notified() => tokio::time::sleep(Duration::from_millis(current.reconcile_grace_ms)).await,
            }
            if let Err(err) = sweep(&store, &config.current()).await {
                tracing::warn!(error = %err, "reconciliation sweep failed; next sweep");
            }
        }
    });
}
