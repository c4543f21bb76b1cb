//! Notifications' part in the order choreography: a consumer of topic `orders` as group
//! `notifications`. A confirmed or cancelled order gets its customer one notification of
//! that kind: the inbox skips a redelivered event, and the table's unique index keeps even a
//! repeat that passes the inbox (a replayed dead letter has a new event id) from telling the
//! customer twice. Other event types are acknowledged and ignored.

use flotilla::events::{Consumer, Delivery, EventsClient};
use flotilla::store::{now_ms, Store};
use flotilla_shop_contracts::orders::{self, OrderEventData};
use sqlx::{Any, AnyConnection, Transaction};

use crate::notifications::{self, Kind};

/// Why an order event could not be handled (the log redelivers it, then dead-letters it).
#[derive(Debug, thiserror::Error)]
pub enum OrderEventError {
    /// The event's `data` is not an order, or names no customer.
    #[error("event `{id}` ({kind}): the data is not an order: {reason}")]
    Malformed {
        /// The event's id.
        id: String,
        /// Its type.
        kind: String,
        /// Why it does not fit.
        reason: String,
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
    let kind = match event.kind.as_str() {
        orders::CONFIRMED => Kind::OrderConfirmed,
        orders::CANCELLED => Kind::OrderCancelled,
        _ => return Ok(()),
    };
    let malformed = |reason: String| OrderEventError::Malformed {
        id: event.id.clone(),
        kind: event.kind.clone(),
        reason,
    };
    let order = OrderEventData::from_event(event).map_err(|e| malformed(e.to_string()))?;
    if order.user_id.is_empty() || order.order_id.is_empty() {
        return Err(malformed("`order_id` and `user_id` must not be empty".into()));
    }
    let written = notifications::record(conn, kind, &order, now_ms())
        .await
        .map_err(|source| OrderEventError::Database {
            id: event.id.clone(),
            source,
        })?;
    if written {
        tracing::info!(order_id = %order.order_id, kind = kind.as_str(), "customer notified");
    } else {
        tracing::debug!(order_id = %order.order_id, kind = kind.as_str(), "customer notified before");
    }
    Ok(())
}
