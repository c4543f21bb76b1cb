//! An order as a fold over its events. The events are the source of truth: everything the
//! API shows of one order — its status, its lines, its history — is computed from them, so
//! the read model can always be rebuilt and nothing is ever updated in place.

use flotilla::utoipa::{self, ToSchema};
use serde::{Deserialize, Serialize};

pub use flotilla_shop_contracts::orders::{Money, OrderLine};

// `Money` and `OrderLine` come from the shop's contracts, which derive no schema: fields of
// those types name their mirrors in `crate::openapi` (`value_type`).

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = OrderStatus)]
pub enum Status {
    /// Accepted; the saga is working on it.
    Pending,
    /// Accepted, waiting for payments to come back (the saga resumes by itself).
    PaymentPending,
    /// Stock committed, payment captured, shipment released.
    Confirmed,
    /// Could not be completed; every step taken was undone.
    Cancelled,
}

impl Status {
    /// The statuses of an order that can still change (not confirmed or cancelled).
    pub const OPEN: [Status; 2] = [Status::Pending, Status::PaymentPending];

    /// Whether the order can still change: one of [`Status::OPEN`].
    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }

    /// [`Status::OPEN`] as an SQL list (`'PENDING', 'PAYMENT_PENDING'`), so the read model's
    /// update goes by the same rule as the fold.
    pub fn open_sql() -> String {
        Self::OPEN.map(|s| format!("'{}'", s.as_str())).join(", ")
    }

    /// The name the API and the read model use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::PaymentPending => "PAYMENT_PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// Parses a name the API accepts in filters.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::PaymentPending,
            Status::Confirmed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
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
    #[serde(default, skip_serializing_if = "String::is_empty")]
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

/// Something that happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// A customer placed it; prices as the catalog had them then.
    Placed {
        /// The customer (token subject).
        user_id: String,
        /// What, at which price.
        #[schema(value_type = Vec<crate::openapi::OrderLine>)]
        lines: Vec<OrderLine>,
        /// The sum of the lines.
        #[schema(value_type = crate::openapi::Money)]
        total: Money,
        /// Where to.
        shipping_address: Address,
    },
    /// Inventory holds its stock.
    StockReserved,
    /// Payments could not be reached; the order waits.
    PaymentPending {
        /// What the call said.
        reason: String,
    },
    /// Payments authorized the total.
    PaymentAuthorized {
        /// The payment.
        payment_id: String,
    },
    /// Shipping has a shipment for it, held until the order is confirmed.
    ShipmentCreated {
        /// The shipment.
        shipment_id: String,
    },
    /// Payment captured and stock committed: done.
    Confirmed,
    /// Compensation: the shipment was cancelled.
    ShipmentCancelled,
    /// Compensation: the payment was voided or refunded.
    PaymentReleased,
    /// Compensation: the reserved stock was released.
    StockReleased,
    /// The order cannot be completed; every step taken was undone.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl OrderEvent {
    /// The status this event gives an order that is not finished yet (`None`: unchanged).
    /// The fold and the read model's update both go by it.
    pub fn moves_open_order_to(&self) -> Option<Status> {
        match self {
            OrderEvent::Placed { .. } | OrderEvent::PaymentAuthorized { .. } => Some(Status::Pending),
            OrderEvent::PaymentPending { .. } => Some(Status::PaymentPending),
            OrderEvent::Confirmed => Some(Status::Confirmed),
            OrderEvent::Cancelled { .. } => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// The event's kind, as stored (each kind happens at most once per order).
    pub fn kind(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "placed",
            OrderEvent::StockReserved => "stock_reserved",
            OrderEvent::PaymentPending { .. } => "payment_pending",
            OrderEvent::PaymentAuthorized { .. } => "payment_authorized",
            OrderEvent::ShipmentCreated { .. } => "shipment_created",
            OrderEvent::Confirmed => "confirmed",
            OrderEvent::ShipmentCancelled => "shipment_cancelled",
            OrderEvent::PaymentReleased => "payment_released",
            OrderEvent::StockReleased => "stock_released",
            OrderEvent::Cancelled { .. } => "cancelled",
        }
    }
}

/// An event as recorded: its place in the order's stream and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    /// 1, 2, … within the order.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// What.
    #[serde(flatten)]
    pub event: OrderEvent,
}

/// An order, as its events say (the API adds their history: `Order`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderWithoutHistory)]
pub struct Order {
    /// Its id.
    pub id: String,
    /// The customer.
    pub user_id: String,
    /// Where it is.
    pub status: Status,
    /// What.
    #[schema(value_type = Vec<crate::openapi::OrderLine>)]
    pub lines: Vec<OrderLine>,
    /// The sum of the lines.
    #[schema(value_type = crate::openapi::Money)]
    pub total: Money,
    /// Where to.
    pub shipping_address: Address,
    /// The payment, once authorized.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub payment_id: Option<String>,
    /// The shipment, once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub shipment_id: Option<String>,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cancel_reason: Option<String>,
    /// How many events it has.
    pub version: i64,
    /// When it was placed, ms since the epoch.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

impl Order {
    /// The order its events describe; `None` if they do not start with `Placed`.
    pub fn fold(id: &str, events: &[Recorded]) -> Option<Order> {
        let (first, rest) = events.split_first()?;
        let OrderEvent::Placed {
            user_id,
            lines,
            total,
            shipping_address,
        } = &first.event
        else {
            return None;
        };
        let mut order = Order {
            id: id.to_owned(),
            user_id: user_id.clone(),
            status: Status::Pending,
            lines: lines.clone(),
            total: total.clone(),
            shipping_address: shipping_address.clone(),
            payment_id: None,
            shipment_id: None,
            cancel_reason: None,
            version: first.seq,
            created_ms: first.at_ms,
            updated_ms: first.at_ms,
        };
        for recorded in rest {
            order.apply(recorded);
        }
        Some(order)
    }

    /// One more event.
    pub fn apply(&mut self, recorded: &Recorded) {
        self.version = recorded.seq;
        self.updated_ms = recorded.at_ms;
        // A finished order stays finished, whatever arrives late.
        if self.status.is_open() {
            if let Some(status) = recorded.event.moves_open_order_to() {
                self.status = status;
            }
        }
        match &recorded.event {
            OrderEvent::PaymentAuthorized { payment_id } => self.payment_id = Some(payment_id.clone()),
            OrderEvent::ShipmentCreated { shipment_id } => self.shipment_id = Some(shipment_id.clone()),
            OrderEvent::Cancelled { reason } if self.status == Status::Cancelled => {
                self.cancel_reason = Some(reason.clone());
            }
            _ => {}
        }
    }

    /// How many items (the sum of the quantities).
    pub fn items(&self) -> i64 {
        self.lines.iter().map(|l| l.quantity).sum()
    }
}

/// What a customer sends to place an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Products and quantities (at most the service's `max_lines`).
    #[schema(min_items = 1, max_items = 500)]
    pub lines: Vec<LineRequest>,
    /// Where to ship.
    pub shipping_address: Address,
}

/// One line as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// The catalog's product id.
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// How many (1 to the service's `max_quantity`).
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
}

/// A field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field (`lines[0].quantity`).
    pub field: String,
    /// Why.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl PlaceOrder {
    /// Checks every field; the first wrong one is named.
    pub fn validate(&self, max_lines: usize, max_quantity: i64) -> Result<(), Invalid> {
        if self.lines.is_empty() || self.lines.len() > max_lines {
            return Err(invalid("lines", format!("1 to {max_lines} lines")));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.product_id <= 0 {
                return Err(invalid(format!("lines[{i}].product_id"), "a product id (above 0)"));
            }
            if !(1..=max_quantity).contains(&line.quantity) {
                return Err(invalid(format!("lines[{i}].quantity"), format!("1 to {max_quantity}")));
            }
            if self.lines[..i].iter().any(|l| l.product_id == line.product_id) {
                return Err(invalid(
                    format!("lines[{i}].product_id"),
                    "each product once (add up the quantity)",
                ));
            }
        }
        let address = &self.shipping_address;
        for (field, value, max) in [
            ("shipping_address.name", &address.name, 100),
            ("shipping_address.line1", &address.line1, 200),
            ("shipping_address.city", &address.city, 100),
            ("shipping_address.postal_code", &address.postal_code, 20),
        ] {
            if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
                return Err(invalid(field, format!("required, printable, at most {max} characters")));
            }
        }
        if address.line2.chars().count() > 200 || address.line2.chars().any(char::is_control) {
            return Err(invalid("shipping_address.line2", "printable, at most 200 characters"));
        }
        if address.country.len() != 2 || !address.country.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(
                "shipping_address.country",
                "an ISO 3166-1 alpha-2 code like DE",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed() -> Recorded {
        Recorded {
            seq: 1,
            at_ms: 10,
            event: OrderEvent::Placed {
                user_id: "u1".into(),
                lines: vec![OrderLine {
                    product_id: 1,
                    quantity: 2,
                    name: "Mug".into(),
                    unit_price_minor: 500,
                }],
                total: Money {
                    amount_minor: 1000,
                    currency: "EUR".into(),
                },
                shipping_address: Address {
                    name: "A".into(),
                    line1: "B 1".into(),
                    line2: String::new(),
                    city: "C".into(),
                    postal_code: "1".into(),
                    country: "DE".into(),
                },
            },
        }
    }

    fn at(seq: i64, event: OrderEvent) -> Recorded {
        Recorded {
            seq,
            at_ms: seq * 10,
            event,
        }
    }

    #[test]
    fn the_status_follows_the_events_and_a_finished_order_stays_finished() {
        let mut events = vec![placed()];
        let order = Order::fold("o1", &events).unwrap();
        assert_eq!((order.status, order.items(), order.version), (Status::Pending, 2, 1));
        events.push(at(2, OrderEvent::StockReserved));
        events.push(at(3, OrderEvent::PaymentPending { reason: "down".into() }));
        assert_eq!(Order::fold("o1", &events).unwrap().status, Status::PaymentPending);
        events.push(at(4, OrderEvent::PaymentAuthorized { payment_id: "p".into() }));
        assert_eq!(Order::fold("o1", &events).unwrap().status, Status::Pending);
        events.push(at(5, OrderEvent::Confirmed));
        events.push(at(6, OrderEvent::Cancelled { reason: "late".into() }));
        let order = Order::fold("o1", &events).unwrap();
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.payment_id.as_deref(), Some("p"));
        assert_eq!((order.version, order.updated_ms), (6, 60));
    }

    #[test]
    fn events_without_a_placement_are_no_order() {
        assert!(Order::fold("o1", &[at(1, OrderEvent::Confirmed)]).is_none());
        assert!(Order::fold("o1", &[]).is_none());
    }

    #[test]
    fn the_first_wrong_field_is_named() {
        let OrderEvent::Placed { shipping_address, .. } = placed().event else {
            unreachable!()
        };
        let mut order = PlaceOrder {
            lines: vec![LineRequest {
                product_id: 1,
                quantity: 1,
            }],
            shipping_address,
        };
        assert!(order.validate(50, 100).is_ok());
        order.lines.push(LineRequest {
            product_id: 1,
            quantity: 0,
        });
        assert_eq!(order.validate(50, 100).unwrap_err().field, "lines[1].quantity");
        order.lines[1].quantity = 1;
        assert_eq!(order.validate(50, 100).unwrap_err().field, "lines[1].product_id");
        order.lines.pop();
        order.shipping_address.country = "de".into();
        assert_eq!(order.validate(50, 100).unwrap_err().field, "shipping_address.country");
        order.lines.clear();
        assert_eq!(order.validate(50, 100).unwrap_err().field, "lines");
    }
}
