//! The shop's order events: what the orders service publishes on topic [`TOPIC`], and what
//! shipping, notifications and any other consumer read. Defined once here so that the
//! publisher and its consumers cannot drift apart.
//!
//! Each event is a [`CloudEvent`] with `type` one of [`PLACED`], [`CONFIRMED`] or
//! [`CANCELLED`], `source` [`SOURCE`], `subject` the order id, and `data` an
//! [`OrderEventData`]. Consumers ignore types they do not know and fields they do not read.

use serde::{Deserialize, Serialize};

use flotilla_api::events::CloudEvent;

/// The topic order events are published on.
pub const TOPIC: &str = "orders";

/// An order was placed (status `PENDING`); its saga starts.
pub const PLACED: &str = "shop.order.placed";

/// An order's saga completed: stock reserved, payment taken, shipment created (status
/// `CONFIRMED`).
pub const CONFIRMED: &str = "shop.order.confirmed";

/// An order was given up on, by its customer or by its saga (status `CANCELLED`, with a
/// `reason`).
pub const CANCELLED: &str = "shop.order.cancelled";

/// The `source` of every order event.
pub const SOURCE: &str = "/shop/orders";

/// The `data` of an order event: the order as it stands after the change announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEventData {
    /// The order's id (also the event's `subject`).
    pub order_id: String,
    /// The account that placed it: the `sub` of the customer's token.
    pub user_id: String,
    /// `PENDING`, `CONFIRMED` or `CANCELLED`.
    pub status: String,
    /// What the order costs in all.
    pub total: Money,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Why the order was cancelled; only on [`CANCELLED`] (empty, and left out, otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl OrderEventData {
    /// The order data of an event (of any of the order types).
    pub fn from_event(event: &CloudEvent) -> Result<Self, serde_json::Error> {
        Self::deserialize(&event.data)
    }

    /// How many units were ordered, over all lines.
    pub fn units(&self) -> i64 {
        self.lines.iter().map(|line| line.quantity).sum()
    }
}

/// An amount of money in integer minor units (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's minor unit (`1999` is 19.99 EUR).
    pub amount_minor: i64,
    /// ISO 4217 code (`EUR`).
    pub currency: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The catalog's product id.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
    /// The product's name when ordered.
    pub name: String,
    /// The price of one, in the order's currency's minor unit.
    pub unit_price_minor: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_published_shape_and_leaves_out_an_empty_reason() {
        let data = serde_json::json!({
            "order_id": "o-1", "user_id": "acct-7", "status": "CONFIRMED",
            "total": {"amount_minor": 1998, "currency": "EUR"},
            "lines": [{"product_id": 1, "quantity": 2, "name": "Mug", "unit_price_minor": 999}],
            "added_later": true
        });
        let event = CloudEvent {
            specversion: "1.0".into(),
            id: "e-1".into(),
            source: SOURCE.into(),
            kind: CONFIRMED.into(),
            subject: Some("o-1".into()),
            time: None,
            traceparent: None,
            data,
            deadletterreason: None,
        };
        let order = OrderEventData::from_event(&event).expect("the published shape");
        assert_eq!((order.units(), order.total.amount_minor), (2, 1998));
        assert_eq!(order.reason, "");
        let back = serde_json::to_value(&order).expect("serializable");
        assert!(back.get("reason").is_none());
    }
}
