//! The order saga (orchestration): reserve stock → authorize payment → create the shipment
//! (held) → confirm (capture, commit stock). What each step did is recorded as an order event
//! in the transaction that records the saga's progress (the journal is the saga's
//! [`Recorder`]), so the order's history tells the saga's story; on failure the earlier steps are undone in
//! reverse (cancel the shipment, void or refund the payment, release the stock) and the order
//! is cancelled. Payments out of reach is not a failure: the order waits in
//! `PAYMENT_PENDING` and the step is retried until payments answers.

use std::time::Duration;

use flotilla::saga::{Milestone, RecordFuture, Recorder, Saga, StepError};
use serde::{Deserialize, Serialize};

use crate::downstream::Downstream;
use crate::journal::{Facts, Journal};
use crate::order::{Address, Money, OrderEvent, OrderLine};

/// The saga's kind in the saga tables.
pub const KIND: &str = "order";

/// What the saga carries from step to step (stored after every step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSaga {
    /// The order.
    pub order_id: String,
    /// The customer (empty in sagas started before it was kept: their events fold the order).
    #[serde(default)]
    pub user_id: String,
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

/// What the order and its customer are told when its saga was undone: the refusal that
/// started it (a decline, a shortage) as it was given; an operational failure that ran out of
/// tries (timeouts, a service away too long) only in general terms, since its detail is the
/// operator's (logged and traced), not the customer's.
pub fn customer_reason(why: &str, refused: bool) -> String {
    if refused {
        why.to_owned()
    } else {
        OPERATIONAL_REASON.to_owned()
    }
}

/// The cancellation reason of an order whose saga failed for an operational reason.
pub const OPERATIONAL_REASON: &str = "the order could not be completed just now; any payment taken was released";

/// The order event a saga milestone is, if any: what each step did becomes part of the
/// order's history in the same transaction as the saga's progress.
pub fn event_of(milestone: &Milestone<'_, OrderSaga>) -> Option<OrderEvent> {
    match milestone {
        Milestone::Done { step, state } => match *step {
            "reserve-stock" => Some(OrderEvent::StockReserved),
            "authorize-payment" => state
                .payment_id
                .clone()
                .map(|payment_id| OrderEvent::PaymentAuthorized { payment_id }),
            "create-shipment" => state
                .shipment_id
                .clone()
                .map(|shipment_id| OrderEvent::ShipmentCreated { shipment_id }),
            "confirm" => Some(OrderEvent::Confirmed),
            _ => None,
        },
        Milestone::Undone { step, .. } => match *step {
            "reserve-stock" => Some(OrderEvent::StockReleased),
            "authorize-payment" => Some(OrderEvent::PaymentReleased),
            "create-shipment" => Some(OrderEvent::ShipmentCancelled),
            _ => None,
        },
        Milestone::Compensated { why, refused, .. } => Some(OrderEvent::Cancelled {
            reason: customer_reason(why, *refused),
        }),
    }
}

impl Recorder<OrderSaga> for Journal {
    fn record<'a>(
        &'a self,
        tx: &'a mut sqlx::Transaction<'static, sqlx::Any>,
        _id: &'a str,
        milestone: Milestone<'a, OrderSaga>,
    ) -> RecordFuture<'a> {
        Box::pin(async move {
            let state = match &milestone {
                Milestone::Done { state, .. }
                | Milestone::Undone { state, .. }
                | Milestone::Compensated { state, .. } => *state,
            };
            let order_id = &state.order_id;
            let facts = (!state.user_id.is_empty()).then_some(Facts {
                user_id: &state.user_id,
                lines: &state.lines,
                total: &state.total,
            });
            if let Milestone::Compensated {
                why, refused: false, ..
            } = &milestone
            {
                tracing::warn!(order_id = %order_id, reason = %why, "order cancelled after an operational failure");
            }
            if let Some(event) = event_of(&milestone) {
                let confirmed = matches!(event, OrderEvent::Confirmed);
                let added = self.record_in(tx, order_id, event, facts).await?;
                if confirmed && added {
                    tracing::info!(order_id = %order_id, "order confirmed");
                }
            }
            Ok(())
        })
    }

    fn committed(&self) {
        Journal::committed(self);
    }
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
    // Longer than a call's own deadline (10 s): a call ends by its deadline, reported to its
    // breaker, rather than being dropped by the step's timeout.
    let timeout = Duration::from_secs(15);
    let pending = journal.clone();
    Saga::new(KIND)
        .recorder(journal)
        .step(
            "reserve-stock",
            move |_id, state: OrderSaga| {
                let d = d1.clone();
                async move {
                    let lines: Vec<(i64, i64)> = state.lines.iter().map(|l| (l.product_id, l.quantity)).collect();
                    d.reserve(&state.order_id, &lines).await?;
                    Ok(state)
                }
            },
            move |_id, state: OrderSaga| {
                let d = d2.clone();
                async move {
                    d.release(&state.order_id).await?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "authorize-payment",
            move |_id, mut state: OrderSaga| {
                let (d, j) = (d3.clone(), pending.clone());
                async move {
                    match d.authorize(&state.order_id, &state.total, &state.user_id).await {
                        Ok(payment_id) => {
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
                let d = d4.clone();
                async move {
                    d.release_payments(&state.order_id).await?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "create-shipment",
            move |_id, mut state: OrderSaga| {
                let d = d5.clone();
                async move {
                    state.shipment_id = Some(d.ship(&state.order_id, &state.address, &state.user_id).await?);
                    Ok(state)
                }
            },
            move |_id, state: OrderSaga| {
                let d = d6.clone();
                async move {
                    d.cancel_shipment(&state.order_id).await?;
                    Ok(state)
                }
            },
        )
        .with_policy(timeout, 5)
        .step(
            "confirm",
            move |_id, state: OrderSaga| {
                let d = d7.clone();
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
                    Ok(state)
                }
            },
            // Confirming is the last step: when it fails, the steps before it are undone
            // (the payment compensation refunds a capture that went through).
            |_id, state: OrderSaga| async move { Ok(state) },
        )
        .with_policy(timeout, 5)
}
