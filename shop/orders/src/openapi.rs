//! Schemas for what orders shows but does not define: the shop contracts' `Money` and
//! `OrderLine`, and the SDK's saga records. Their crates derive no schema, so each has a
//! mirror here that fields name with `#[schema(value_type = …)]`; the tests hold every mirror
//! to what its original serializes.

#![expect(dead_code, reason = "mirrors are described in the document, never built")]

use flotilla::utoipa::{self, ToSchema};

/// An amount of money in integer minor units (cents).
#[derive(ToSchema)]
pub(crate) struct Money {
    /// The amount in the currency's minor unit (`1999` is 19.99 EUR).
    amount_minor: i64,
    /// ISO 4217 code (`EUR`).
    currency: String,
}

/// One line of an order.
#[derive(ToSchema)]
pub(crate) struct OrderLine {
    /// The catalog's product id.
    product_id: i64,
    /// How many.
    quantity: i64,
    /// The product's name when ordered.
    name: String,
    /// The price of one, in the order's currency's minor unit.
    unit_price_minor: i64,
}

/// A saga instance as stored.
#[derive(ToSchema)]
pub(crate) struct Saga {
    /// Its id (the order's).
    id: String,
    /// Its kind.
    kind: String,
    /// Where it is.
    status: SagaStatus,
    /// The step running, or (compensating) the step that failed.
    step: i64,
    /// Tries of the current step so far.
    attempts: u32,
    /// Times the current step waited for a dependency that is away (not counted as tries).
    waits: u32,
    /// The saga's state.
    #[schema(value_type = Object)]
    state: serde_json::Value,
    /// The last failure.
    last_error: String,
    /// Why the saga is being undone (only while it is).
    #[schema(required = false)]
    reason: String,
    /// Whether that failure was a refusal (a decline, a shortage) rather than an operational
    /// failure that ran out of tries.
    refused: bool,
    /// The W3C trace context of what started it (when it had one).
    #[schema(required = false)]
    traceparent: String,
}

/// Where a saga instance is.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum SagaStatus {
    /// Steps are running (or waiting to retry).
    Running,
    /// A step failed for good; earlier steps are being undone.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Every earlier step was undone.
    Compensated,
    /// The state could not be read: needs a person.
    Failed,
}

/// One line of a saga instance's history.
#[derive(ToSchema)]
pub(crate) struct SagaTransition {
    /// The step.
    step: String,
    /// `done`, `retry`, `waiting`, `failed`, `compensated`, `completed`, ….
    event: String,
    /// Why, when it failed.
    detail: String,
    /// When, ms since the epoch.
    at_ms: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use flotilla::saga::{SagaRecord, SagaStatus, Transition};
    use flotilla::utoipa::PartialSchema;
    use flotilla_shop_contracts::orders as contract;
    use serde_json::{json, Value};

    /// The properties a mirror's schema names.
    fn described<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"].as_object().unwrap().keys().cloned().collect()
    }

    /// The fields a value serializes to.
    fn fields(value: impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn every_mirror_names_what_its_original_serializes() {
        let money = contract::Money {
            amount_minor: 1,
            currency: "EUR".into(),
        };
        assert_eq!(described::<super::Money>(), fields(&money));
        let line = contract::OrderLine {
            product_id: 1,
            quantity: 1,
            name: "Mug".into(),
            unit_price_minor: 1,
        };
        assert_eq!(described::<super::OrderLine>(), fields(line));
        // Every optional field set, so that every field is serialized.
        let saga = SagaRecord {
            id: "o-1".into(),
            kind: "order".into(),
            status: SagaStatus::Running,
            step: 0,
            attempts: 0,
            waits: 0,
            state: json!({}),
            last_error: String::new(),
            reason: "r".into(),
            refused: false,
            traceparent: "t".into(),
        };
        assert_eq!(described::<super::Saga>(), fields(&saga));
        let transition = Transition {
            step: "reserve".into(),
            event: "done".into(),
            detail: String::new(),
            at_ms: 0,
        };
        assert_eq!(described::<super::SagaTransition>(), fields(transition));
        let statuses: Vec<Value> = [
            SagaStatus::Running,
            SagaStatus::Compensating,
            SagaStatus::Completed,
            SagaStatus::Compensated,
            SagaStatus::Failed,
        ]
        .into_iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
        let schema = serde_json::to_value(<super::SagaStatus as PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], Value::Array(statuses));
    }
}
