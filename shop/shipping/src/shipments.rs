//! Shipments and their timeline. One shipment per order (creating it again answers the first);
//! a ticker moves each shipment a step on when its time in the current step is up, with one
//! conditional `UPDATE` per step, so several instances ticking at once move it once. Each
//! step's event carries the time it became due, not the time the ticker noticed.
//!
//! A shipment created on hold waits, `created`, until its order is confirmed; the release
//! starts its clock. A shipment that has not left (created or packed) can be cancelled; the
//! same conditional `UPDATE`s keep a cancel and a tick racing each other from both winning.

use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::config::ShippingConfig;

/// Where a shipment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ShipmentStatus)]
pub enum Status {
    /// Accepted.
    Created,
    /// Packed in the warehouse.
    Packed,
    /// With the carrier.
    Shipped,
    /// At the door.
    Delivered,
    /// Called off before it left; the end of its timeline.
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Packed => "packed",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "packed" => Status::Packed,
            "shipped" => Status::Shipped,
            "delivered" => Status::Delivered,
            "cancelled" => Status::Cancelled,
            _ => Status::Created,
        }
    }

    fn next(self) -> Option<Self> {
        match self {
            Status::Created => Some(Status::Packed),
            Status::Packed => Some(Status::Shipped),
            Status::Shipped => Some(Status::Delivered),
            Status::Delivered | Status::Cancelled => None,
        }
    }
}

/// Where to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient's name.
    #[schema(max_length = 100)]
    pub name: String,
    /// Street and number.
    #[schema(max_length = 200)]
    pub line1: String,
    /// More.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: String,
    /// City.
    #[schema(max_length = 100)]
    pub city: String,
    /// Postal code.
    #[schema(max_length = 20)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ShipmentEvent)]
pub struct Event {
    /// The status reached.
    pub status: Status,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// A shipment with its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shipment {
    /// Its id.
    pub id: String,
    /// The order it ships.
    pub order_id: String,
    /// Where to.
    pub address: Address,
    /// Where it is.
    pub status: Status,
    /// Waiting for its order to be confirmed: the timeline does not advance until then.
    #[serde(default)]
    #[schema(required = true)]
    pub held: bool,
    /// Every step so far, oldest first.
    pub timeline: Vec<Event>,
    /// Whose it is: the customer's account id (none on shipments from before owners were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub customer: Option<String>,
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    /// A field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The order already has a shipment to another address or customer.
    #[error("order `{0}` already has a shipment to another address or customer")]
    Mismatch(String),
    /// The shipment is past the point where the operation applies (cancelling one shipped).
    #[error("shipment `{id}` is already {}", .status.as_str())]
    State {
        /// The shipment.
        id: String,
        /// Where it is.
        status: Status,
    },
    /// No such shipment.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn check(order_id: &str, address: &Address) -> Result<(), ShippingError> {
    let invalid = |field: &'static str, reason: &str| ShippingError::Invalid {
        field,
        reason: reason.into(),
    };
    if order_id.is_empty() || order_id.len() > 64 || !order_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid("order_id", "1 to 64 printable characters"));
    }
    for (field, value, max) in [
        ("address.name", &address.name, 100),
        ("address.line1", &address.line1, 200),
        ("address.city", &address.city, 100),
        ("address.postal_code", &address.postal_code, 20),
    ] {
        if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
            return Err(invalid(field, "required, printable, not too long"));
        }
    }
    if address.line2.chars().count() > 200 || address.line2.chars().any(char::is_control) {
        return Err(invalid("address.line2", "printable, at most 200 characters"));
    }
    if address.country.len() != 2 || !address.country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(invalid("address.country", "an ISO 3166-1 alpha-2 code like DE"));
    }
    Ok(())
}

/// Creates the order's shipment, or answers the one it has (same address; whether it is held
/// is the first call's say). A shipment created with `hold` waits for its order's
/// confirmation before its timeline advances.
pub async fn create(
    store: &Store,
    order_id: &str,
    address: Address,
    hold: bool,
    customer: &str,
) -> Result<(Shipment, bool), ShippingError> {
    check(order_id, &address)?;
    if customer.is_empty() || customer.len() > 128 || !customer.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ShippingError::Invalid {
            field: "customer",
            reason: "the customer's account id: 1 to 128 printable characters".into(),
        });
    }
    let now = now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let address_json = serde_json::to_string(&address).unwrap_or_default();
    let mut tx = store.begin_grouped().await?;
    let created = sqlx::query(
        "INSERT INTO shipments (id, order_id, recipient, address, status, created_ms, updated_ms, held, customer) VALUES ($1, $2, $3, $4, 'created', $5, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&id)
    .bind(order_id)
    .bind(&address.name)
    .bind(&address_json)
    .bind(now)
    .bind(i64::from(hold))
    .bind(customer)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        sqlx::query("INSERT INTO shipment_events (shipment_id, status, at_ms) VALUES ($1, 'created', $2)")
            .bind(&id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    tx.commit().await?;
    let shipment = by_order(store, order_id)
        .await?
        .ok_or_else(|| ShippingError::NotFound(format!("no shipment for order `{order_id}`")))?;
    if !created && (shipment.address != address || shipment.customer.as_deref().is_some_and(|c| c != customer)) {
        return Err(ShippingError::Mismatch(order_id.to_owned()));
    }
    Ok((shipment, created))
}

async fn load(store: &Store, row: &sqlx::any::AnyRow) -> Result<Shipment, ShippingError> {
    let id: String = row.try_get("id")?;
    let address: String = row.try_get("address")?;
    let status: String = row.try_get("status")?;
    let held: i64 = row.try_get("held")?;
    let timeline =
        sqlx::query("SELECT status, at_ms FROM shipment_events WHERE shipment_id = $1 ORDER BY at_ms, status")
            .bind(&id)
            .fetch_all(store.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(Event {
                    status: Status::parse(&r.try_get::<String, _>("status")?),
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Shipment {
        id,
        order_id: row.try_get("order_id")?,
        address: serde_json::from_str(&address).map_err(|e| ShippingError::Invalid {
            field: "address",
            reason: e.to_string(),
        })?,
        status: Status::parse(&status),
        held: held != 0,
        timeline,
        customer: row.try_get("customer")?,
    })
}

/// The order's shipment, if any.
pub async fn by_order(store: &Store, order_id: &str) -> Result<Option<Shipment>, ShippingError> {
    let row = sqlx::query("SELECT id, order_id, address, status, held, customer FROM shipments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(store.pool())
        .await?;
    match row {
        Some(row) => Ok(Some(load(store, &row).await?)),
        None => Ok(None),
    }
}

/// One shipment.
pub async fn get(store: &Store, id: &str) -> Result<Shipment, ShippingError> {
    let row = sqlx::query("SELECT id, order_id, address, status, held, customer FROM shipments WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| ShippingError::NotFound(format!("no shipment `{id}`")))?;
    load(store, &row).await
}

/// Moves every shipment whose step is due at `now` on by one step; returns how many moved.
/// Called again, it moves the next steps (a shipment long overdue catches up in a few ticks).
pub async fn advance(store: &Store, config: &ShippingConfig, now: i64) -> Result<u64, ShippingError> {
    let mut moved = 0;
    for status in [Status::Shipped, Status::Packed, Status::Created] {
        let (Some(after), Some(next)) = (config.step_after(status), status.next()) else {
            continue;
        };
        let due_before = now - (after as i64) * 1000;
        let rows = sqlx::query(
            "SELECT id, updated_ms FROM shipments WHERE status = $1 AND held = 0 AND updated_ms <= $2 LIMIT 500",
        )
        .bind(status.as_str())
        .bind(due_before)
        .fetch_all(store.pool())
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let since: i64 = row.try_get("updated_ms")?;
            let at = since + (after as i64) * 1000;
            let mut tx = store.pool().begin().await?;
            let stepped =
                sqlx::query("UPDATE shipments SET status = $1, updated_ms = $2 WHERE id = $3 AND status = $4")
                    .bind(next.as_str())
                    .bind(at)
                    .bind(&id)
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if stepped {
                sqlx::query(
                    "INSERT INTO shipment_events (shipment_id, status, at_ms) VALUES ($1, $2, $3) ON CONFLICT (shipment_id, status) DO NOTHING",
                )
                .bind(&id)
                .bind(next.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                moved += 1;
            }
            tx.commit().await?;
        }
    }
    Ok(moved)
}

/// Cancels a shipment that has not left (created or packed) and answers it; one cancelled
/// before is answered as it is, one shipped or delivered is [`ShippingError::State`].
pub async fn cancel(store: &Store, id: &str) -> Result<Shipment, ShippingError> {
    let mut tx = store.begin_grouped().await?;
    let status = cancel_in(&mut tx, id, now_ms()).await?;
    tx.commit().await?;
    match status {
        None => Err(ShippingError::NotFound(format!("no shipment `{id}`"))),
        Some(Status::Cancelled) => get(store, id).await,
        Some(status) => Err(ShippingError::State {
            id: id.to_owned(),
            status,
        }),
    }
}

/// Cancels the shipment `id` inside the caller's transaction if it has not left; answers its
/// status afterwards (`None`: no such shipment). The conditional `UPDATE` comes first, so on
/// SQLite the transaction takes the write lock before it reads.
async fn cancel_in(conn: &mut AnyConnection, id: &str, now: i64) -> Result<Option<Status>, sqlx::Error> {
    let cancelled = sqlx::query(
        "UPDATE shipments SET status = 'cancelled', held = 0, updated_ms = $1 WHERE id = $2 AND status IN ('created', 'packed')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if cancelled {
        sqlx::query(
            "INSERT INTO shipment_events (shipment_id, status, at_ms) VALUES ($1, 'cancelled', $2) ON CONFLICT (shipment_id, status) DO NOTHING",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM shipments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(status.as_deref().map(Status::parse))
}

/// What an order's cancellation did to its shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderCancel {
    /// The order has no shipment.
    Missing,
    /// The shipment is cancelled (now, or before).
    Cancelled,
    /// The shipment had left already: nothing to undo.
    TooLate(Status),
}

/// Cancels the order's shipment inside the caller's transaction, if it has one that has not
/// left. The caller's transaction has written already (the inbox row), so reading first
/// cannot leave it a stale reader on SQLite.
pub(crate) async fn cancel_order_in(
    conn: &mut AnyConnection,
    order_id: &str,
    now: i64,
) -> Result<OrderCancel, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM shipments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else {
        return Ok(OrderCancel::Missing);
    };
    Ok(match cancel_in(conn, &id, now).await? {
        None => OrderCancel::Missing,
        Some(Status::Cancelled) => OrderCancel::Cancelled,
        Some(status) => OrderCancel::TooLate(status),
    })
}

/// What an order's confirmation did to its shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The order has no shipment (yet).
    Missing,
    /// Released: its timeline starts now.
    Released,
    /// It was not held (or was cancelled): nothing changed.
    NotHeld,
}

/// Releases the order's held shipment inside the caller's transaction; its clock starts at
/// `now` (`updated_ms`), so the first step is due `pack_seconds` after the release.
pub(crate) async fn release_in(conn: &mut AnyConnection, order_id: &str, now: i64) -> Result<Release, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE shipments SET held = 0, updated_ms = $1 WHERE order_id = $2 AND held = 1 AND status = 'created'",
    )
    .bind(now)
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if released {
        return Ok(Release::Released);
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM shipments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(if exists.is_some() {
        Release::NotHeld
    } else {
        Release::Missing
    })
}
