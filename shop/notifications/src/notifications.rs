//! Notifications: what a customer is told about their orders, one per order and kind (the
//! table's unique index makes a second write of the same one a no-op), listed newest first.

use flotilla::store::Store;
use flotilla::utoipa::{self, ToSchema};
use flotilla_shop_contracts::orders::{Money, OrderEventData};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = NotificationKind)]
pub enum Kind {
    /// The order is confirmed.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    /// The order was cancelled.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
}

impl Kind {
    /// The name stored and shown (`order.confirmed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderConfirmed => "order.confirmed",
            Kind::OrderCancelled => "order.cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "order.confirmed" => Some(Kind::OrderConfirmed),
            "order.cancelled" => Some(Kind::OrderCancelled),
            _ => None,
        }
    }
}

/// One thing a customer was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// Its id.
    pub id: String,
    /// Whom it is for: the account id (a token's `sub`).
    pub user_id: String,
    /// The order it is about.
    pub order_id: String,
    /// What happened.
    pub kind: Kind,
    /// The text shown to the customer.
    pub message: String,
    /// When it was written, ms since the epoch.
    pub created_ms: i64,
}

/// Why notifications could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    /// A stored row names a kind this version does not know.
    #[error("notification `{id}` has an unknown kind `{kind}`")]
    UnknownKind {
        /// The notification.
        id: String,
        /// Its kind.
        kind: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The user's notifications, newest first, at most `limit`.
pub async fn for_user(store: &Store, user_id: &str, limit: u32) -> Result<Vec<Notification>, NotificationsError> {
    let rows = sqlx::query(
        "SELECT id, user_id, order_id, kind, message, created_ms FROM notifications WHERE user_id = $1 ORDER BY created_ms DESC, id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            Ok(Notification {
                kind: Kind::parse(&kind).ok_or_else(|| NotificationsError::UnknownKind { id: id.clone(), kind })?,
                id,
                user_id: row.try_get("user_id")?,
                order_id: row.try_get("order_id")?,
                message: row.try_get("message")?,
                created_ms: row.try_get("created_ms")?,
            })
        })
        .collect()
}

/// Writes the notification of `kind` about `order` for its customer inside the caller's
/// transaction, unless the order has one of that kind; answers whether it was written.
pub(crate) async fn record(
    conn: &mut AnyConnection,
    kind: Kind,
    order: &OrderEventData,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO notifications (id, user_id, order_id, kind, message, created_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&order.user_id)
    .bind(&order.order_id)
    .bind(kind.as_str())
    .bind(message(kind, order))
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1;
    Ok(written)
}

/// The text a customer reads: "Your order 3f2a9c1e… is confirmed: 2 items, 19.98 EUR", or
/// "Your order 3f2a9c1e… was cancelled: payment declined".
pub fn message(kind: Kind, order: &OrderEventData) -> String {
    let order_id = short(&order.order_id);
    match kind {
        Kind::OrderConfirmed => {
            let units = order.units();
            let items = if units == 1 { "item" } else { "items" };
            format!(
                "Your order {order_id} is confirmed: {units} {items}, {}",
                money(&order.total)
            )
        }
        Kind::OrderCancelled => {
            // The reason comes from another service: keep it one short line.
            let reason: String = order
                .reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REASON)
                .collect();
            match reason.trim() {
                "" => format!("Your order {order_id} was cancelled."),
                reason => format!("Your order {order_id} was cancelled: {reason}"),
            }
        }
    }
}

/// The most of a cancellation's reason a message repeats.
const MAX_REASON: usize = 300;

/// An order id as a message shows it: the first 8 characters, `…` if there are more.
fn short(order_id: &str) -> String {
    if order_id.chars().count() > 8 {
        order_id.chars().take(8).chain(['…']).collect()
    } else {
        order_id.to_owned()
    }
}

/// An amount in its currency's major unit: `1998 EUR` is `19.98 EUR`, `500 JPY` is `500 JPY`.
pub fn money(money: &Money) -> String {
    // ISO 4217 minor-unit exponents other than 2.
    let exponent = match money.currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    let amount = money.amount_minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{amount} {}", money.currency);
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$} {}",
        amount / scale,
        amount % scale,
        money.currency,
        width = exponent as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shop_contracts::orders::OrderLine;

    fn order(reason: &str) -> OrderEventData {
        let line = |quantity| OrderLine {
            product_id: 1,
            quantity,
            name: "Mug".into(),
            unit_price_minor: 999,
        };
        OrderEventData {
            order_id: "3f2a9c1e-0000-4000-8000-000000000000".into(),
            user_id: "acct-1".into(),
            status: "CONFIRMED".into(),
            total: Money {
                amount_minor: 2997,
                currency: "EUR".into(),
            },
            lines: vec![line(2), line(1)],
            reason: reason.into(),
        }
    }

    #[test]
    fn messages_say_what_became_of_the_order() {
        assert_eq!(
            message(Kind::OrderConfirmed, &order("")),
            "Your order 3f2a9c1e… is confirmed: 3 items, 29.97 EUR"
        );
        assert_eq!(
            message(Kind::OrderCancelled, &order("payment\ndeclined")),
            "Your order 3f2a9c1e… was cancelled: payment declined"
        );
        assert_eq!(
            message(Kind::OrderCancelled, &order(" ")),
            "Your order 3f2a9c1e… was cancelled."
        );
        let mut one = order("");
        one.order_id = "o-1".into();
        one.lines.truncate(1);
        one.lines[0].quantity = 1;
        assert_eq!(
            message(Kind::OrderConfirmed, &one),
            "Your order o-1 is confirmed: 1 item, 29.97 EUR"
        );
    }

    #[test]
    fn amounts_use_the_currency_minor_unit() {
        let m = |amount_minor, currency: &str| {
            money(&Money {
                amount_minor,
                currency: currency.into(),
            })
        };
        assert_eq!(m(1998, "EUR"), "19.98 EUR");
        assert_eq!(m(5, "USD"), "0.05 USD");
        assert_eq!(m(-150, "EUR"), "-1.50 EUR");
        assert_eq!(m(500, "JPY"), "500 JPY");
        assert_eq!(m(1234, "KWD"), "1.234 KWD");
    }
}
