//! Shipping's part in the order choreography: a consumer of topic `orders` as group
//! `shipping`. `shop.order.confirmed` releases the order's held shipment (its timeline starts
//! then); `shop.order.cancelled` cancels the order's shipment if it has not left. Each event
//! is handled in the inbox's transaction, so a redelivery has no second effect; other event
//! types are acknowledged and ignored.

use flotilla::events::{Consumer, Delivery, EventsClient};
use flotilla::store::{now_ms, Store};
use flotilla_shop_contracts::orders::{self, OrderEventData};
use sqlx::{Any, AnyConnection, Transaction};

use crate::shipments::{self, OrderCancel, Release};

/// Why an order event could not be handled (the log redelivers it, then dead-letters it).
#[derive(Debug, thiserror::Error)]
pub enum OrderEventError {
    /// The event's `data` is not an order.
    #[error("event `{id}` ({kind}): the data is not an order: {source}")]
    Malformed {
        /// The event's id.
        id: String,
        /// Its type.
        kind: String,
        /// Why it does not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The database failed.
    #[error("event `{id}`: {source}")]
    Database {
        /// The event's id.
        id: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

/// Consumes order events for the life of the process.
pub fn spawn_order_events(tasks: &flotilla::app::Tasks, store: Store, events: EventsClient) {
    let consumer = Consumer::new(store, events, orders::TOPIC, crate::SERVICE);
    tasks.spawn("order events", consumer.run(on_order_event));
}

/// Handles one order event inside the inbox's transaction `tx` (give it to
/// [`Consumer::run`] or [`Consumer::handle_one`]).
pub async fn on_order_event(
    delivery: Delivery,
    mut tx: Transaction<'static, Any>,
) -> Result<Transaction<'static, Any>, String> {
    apply(&delivery, &mut tx).await.map_err(|e| e.to_string())?;
    Ok(tx)
}

async fn apply(delivery: &Delivery, conn: &mut AnyConnection) -> Result<(), OrderEventError> {
    let event = &delivery.event;
    if event.kind != orders::CONFIRMED && event.kind != orders::CANCELLED {
        return Ok(());
    }
    let order = OrderEventData::from_event(event).map_err(|source| OrderEventError::Malformed {
        id: event.id.clone(),
        kind: event.kind.clone(),
        source,
    })?;
    let database = |source| OrderEventError::Database {
        id: event.id.clone(),
        source,
    };
    let order_id = order.order_id.as_str();
    if event.kind == orders::CONFIRMED {
        match shipments::release_in(conn, order_id, now_ms())
            .await
            .map_err(database)?
        {
            Release::Released => tracing::info!(order_id, "order confirmed: shipment released"),
            Release::NotHeld => tracing::debug!(order_id, "order confirmed: its shipment was not held"),
            Release::Missing => tracing::debug!(order_id, "order confirmed: no shipment to release"),
        }
    } else {
        match shipments::cancel_order_in(conn, order_id, now_ms())
            .await
            .map_err(database)?
        {
            OrderCancel::Cancelled => tracing::info!(order_id, "order cancelled: shipment cancelled"),
            OrderCancel::Missing => tracing::debug!(order_id, "order cancelled: no shipment to cancel"),
            OrderCancel::TooLate(status) => {
                tracing::info!(
                    order_id,
                    ?status,
                    "order cancelled after its shipment left: nothing to undo"
                )
            }
        }
    }
    Ok(())
}
