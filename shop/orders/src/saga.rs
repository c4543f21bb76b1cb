//! The order saga (orchestration): reserve stock → authorize payment → create the shipment
//! (held) → confirm (capture, commit stock). Each step records what it did as an order event,
//! so the order's history tells the saga's story; on failure the earlier steps are undone in
//! reverse (cancel the shipment, void or refund the payment, release the stock) and the order
//! is cancelled. Payments out of reach is not a failure: the order waits in
//! `PAYMENT_PENDING` and the step is retried until payments answers.

use std::time::Duration;

use flotilla::saga::{Saga, StepError};
use serde::{Deserialize, Serialize};

use crate::downstream::Downstream;
use crate::journal::Journal;
use crate::order::{Address, Money, OrderEvent, OrderLine};

/// The saga's kind in the saga tables.
pub const KIND: &str = "order";

/// What the saga carries from step to step (stored after every step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSaga {
    /// The order.
    pub order_id: String,
    /// What to reserve.
    pub lines: Vec<OrderLine>,
    /// What to charge.
    pub total: Money,
    /// Where to ship.
    pub address: Address,
    /// The payment, once authorized.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// The shipment, once created.
    #[serde(default)]
    pub shipment_id: Option<String>,
}

fn database(err: sqlx::Error) -> StepError {
    StepError::Failed(format!("recording the order's event: {err}"))
}

/// The saga over `downstream`, recording into `journal`.
pub fn definition(downstream: Downstream, journal: Journal) -> Saga<OrderSaga> {
    let (d1, d2, d3, d4, d5, d6, d7) = (
        downstream.clone(),
        downstream.clone(),
        downstream.clone(),
        downstream.clone(),
        downstream.clone(),
        downstream.clone(),
        downstream,
    );
    let (j1, j2, j3, j4, j5, j6, j7, j8) = (
        journal.clone(),
        journal.clone(),
        journal.clone(),
        journal.clone(),
        journal.clone(),
        journal.clone(),
        journal.clone(),
        journal,
    );
    let timeout = Duration::from_secs(10);
    Saga::new(KIND)
        .step(
            "reserve-stock",
            move |_id, state: OrderSaga| {
                let (d, j) = (d1.clone(), j1.clone());
                async move {
                    let lines: Vec<(i64, i64)> = state.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
                    d.reserve(&state.order_id, &lines).await?;
                    j.record(&state.order_id, OrderEvent::StockReserved)
                        .await
                        .map_err(database)?;
                    Ok(state)
                }
            },
            move |_id, state: OrderSaga| {
                let (d, j) = (d2.clone(), j2.clone());
                async move {
                    d.release(&state.order_id).await?;
                    j.record(&state.order_id, OrderEvent::StockReleased)
                        .await
                        .map_err(database)?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "authorize-payment",
            move |_id, mut state: OrderSaga| {
                let (d, j) = (d3.clone(), j3.clone());
                async move {
                    match d.authorize(&state.order_id, &state.total).await {
                        Ok(payment_id) => {
                            j.record(
                                &state.order_id,
                                OrderEvent::PaymentAuthorized {
                                    payment_id: payment_id.clone(),
                                },
                            )
                            .await
                            .map_err(database)?;
                            state.payment_id = Some(payment_id);
                            Ok(state)
                        }
                        Err(StepError::Unavailable(reason)) => {
                            // The customer sees why the order waits; the saga tries again.
                            j.record(&state.order_id, OrderEvent::PaymentPending { reason: reason.clone() })
                                .await
                                .map_err(database)?;
                            Err(StepError::Unavailable(reason))
                        }
                        Err(other) => Err(other),
                    }
                }
            },
            move |_id, state: OrderSaga| {
                let (d, j) = (d4.clone(), j4.clone());
                async move {
                    d.release_payments(&state.order_id).await?;
                    j.record(&state.order_id, OrderEvent::PaymentReleased)
                        .await
                        .map_err(database)?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "create-shipment",
            move |_id, mut state: OrderSaga| {
                let (d, j) = (d5.clone(), j5.clone());
                async move {
                    let shipment_id = d.ship(&state.order_id, &state.address).await?;
                    j.record(
                        &state.order_id,
                        OrderEvent::ShipmentCreated {
                            shipment_id: shipment_id.clone(),
                        },
                    )
                    .await
                    .map_err(database)?;
                    state.shipment_id = Some(shipment_id);
                    Ok(state)
                }
            },
            move |_id, state: OrderSaga| {
                let (d, j) = (d6.clone(), j6.clone());
                async move {
                    d.cancel_shipment(&state.order_id).await?;
                    j.record(&state.order_id, OrderEvent::ShipmentCancelled)
                        .await
                        .map_err(database)?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "confirm",
            move |_id, state: OrderSaga| {
                let (d, j) = (d7.clone(), j7.clone());
                async move {
                    let Some(payment_id) = state.payment_id.as_deref() else {
                        return Err(StepError::Rejected("no payment to capture".into()));
                    };
                    d.capture(&state.order_id, payment_id).await?;
                    // Once the money is taken, the stock must follow: wait out anything but a
                    // definite refusal rather than undo a captured payment.
                    d.commit(&state.order_id).await.map_err(|e| match e {
                        StepError::Failed(why) => StepError::Unavailable(why),
                        other => other,
                    })?;
                    j.record(&state.order_id, OrderEvent::Confirmed)
                        .await
                        .map_err(database)?;
                    tracing::info!(order_id = %state.order_id, "order confirmed");
                    Ok(state)
                }
            },
            // Confirming is the last step: when it fails, the steps before it are undone
            // (the payment compensation refunds a capture that went through).
            |_id, state: OrderSaga| async move { Ok(state) },
        )
        .with_policy(timeout, 5)
        .on_compensated(move |_id, state: OrderSaga, why| {
            let j = j8.clone();
            async move {
                j.record(&state.order_id, OrderEvent::Cancelled { reason: why })
                    .await
                    .map_err(database)?;
                Ok(state)
            }
        })
}
