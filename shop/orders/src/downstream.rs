//! Orders' calls to the other services, through the SDK's resilient clients (balancing,
//! breaker, retries on another instance), with orders' own client-credentials token. Every
//! write carries an idempotency key or is idempotent by order id, so a retry after a timeout
//! or a crash never does anything twice. What each call relies on is stated next to it as a
//! contract, checked against the provider's OpenAPI document in CI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::auth::ClientCredentials;
use flotilla::client::ServiceClient;
use flotilla::contract::Expectation;
use flotilla::resilience::{CallError, RetryNonIdempotent};
use flotilla::saga::StepError;
use http::{header, Method, Request, StatusCode};
use serde_json::Value;

use flotilla::grpc::GrpcChannel;
use flotilla_shop_contracts::inventory_v1::{self, inventory_client::InventoryClient, AvailabilityRequest};

use crate::order::Money;

/// The clients orders calls with.
#[derive(Clone)]
pub struct Downstream {
    catalog: ServiceClient,
    inventory: ServiceClient,
    payments: ServiceClient,
    shipping: ServiceClient,
    credentials: Arc<ClientCredentials>,
    prices: Arc<Mutex<HashMap<i64, (Product, Instant)>>>,
    /// Inventory over gRPC, asked before an order is accepted (none: not asked).
    availability: Option<InventoryClient<GrpcChannel>>,
}

/// What orders relies on in inventory's gRPC API, beside the call that relies on it: the method
/// (`/package.Service/Method`) and each field it sends or reads as (message, field, number,
/// type). `tests/contracts.rs` checks them against the compiled `.proto`.
pub const AVAILABILITY_CONTRACT: (&str, &[(&str, &str, i32, &str)]) = (
    inventory_v1::GET_AVAILABILITY,
    &[
        ("AvailabilityRequest", "product_ids", 1, "TYPE_INT64"),
        ("AvailabilityReply", "items", 1, "TYPE_MESSAGE"),
        ("Availability", "product_id", 1, "TYPE_INT64"),
        ("Availability", "available", 2, "TYPE_INT64"),
        ("Availability", "known", 3, "TYPE_BOOL"),
    ],
);

/// A line inventory cannot fill now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    /// The product.
    pub product_id: i64,
    /// Units asked for.
    pub wanted: i64,
    /// Units that may be reserved now.
    pub available: i64,
}

/// What orders keeps of a product: its name and price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Display name.
    pub name: String,
    /// Price of one.
    pub price: Money,
}

/// Why a product could not be priced.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The catalog has no such product.
    #[error("no product {0}")]
    Unknown(i64),
    /// The catalog could not be asked.
    #[error("the catalog is unavailable: {0}")]
    Unavailable(String),
}

/// The catalog call: a product's name and price.
pub const PRODUCT_CONTRACT: Expectation = Expectation {
    consumer: "orders",
    provider: "catalog",
    method: "GET",
    path: "/api/v1/products/{id}",
    status: 200,
    sends: &[],
    reads: &["name", "price.amount_minor", "price.currency"],
};

/// Every other call orders makes, with the provider it goes to.
pub const CONTRACTS: &[Expectation] = &[
    PRODUCT_CONTRACT,
    Expectation {
        consumer: "orders",
        provider: "identity",
        method: "POST",
        path: "/oauth2/token",
        status: 200,
        sends: &["grant_type", "client_id", "client_secret", "scope"],
        reads: &["access_token", "expires_in"],
    },
    Expectation {
        consumer: "orders",
        provider: "inventory",
        method: "POST",
        path: "/api/v1/inventory/reservations",
        status: 200,
        sends: &["order_id", "lines"],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "inventory",
        method: "POST",
        path: "/api/v1/inventory/reservations/{order_id}/release",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "inventory",
        method: "POST",
        path: "/api/v1/inventory/reservations/{order_id}/commit",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "payments",
        method: "POST",
        path: "/api/v1/payments",
        status: 201,
        sends: &["order_id", "amount", "customer"],
        reads: &["id"],
    },
    Expectation {
        consumer: "orders",
        provider: "payments",
        method: "GET",
        path: "/api/v1/payments",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "payments",
        method: "POST",
        path: "/api/v1/payments/{id}/capture",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "payments",
        method: "POST",
        path: "/api/v1/payments/{id}/void",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "payments",
        method: "POST",
        path: "/api/v1/payments/{id}/refund",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "shipping",
        method: "POST",
        path: "/api/v1/shipments",
        status: 201,
        sends: &["order_id", "address", "hold", "customer"],
        reads: &["id"],
    },
    Expectation {
        consumer: "orders",
        provider: "shipping",
        method: "GET",
        path: "/api/v1/shipments",
        status: 200,
        sends: &[],
        reads: &[],
    },
    Expectation {
        consumer: "orders",
        provider: "shipping",
        method: "POST",
        path: "/api/v1/shipments/{id}/cancel",
        status: 200,
        sends: &[],
        reads: &[],
    },
];

/// What a failed call means for a saga step: the other side said no (4xx) → `Rejected`;
/// it cannot be reached or gave no answer (no instance, refused, breaker open, 503, a
/// timeout, a connection cut) → `Unavailable` (wait: every call here is idempotent, so an
/// answer that never came is asked for again, never compensated as if it were a refusal);
/// anything else (a 500) → `Failed` (retry, then compensate).
pub fn classify(err: &CallError) -> StepError {
    let text = err.to_string();
    match err {
        CallError::NoInstance { .. }
        | CallError::Connect { .. }
        | CallError::CircuitOpen { .. }
        | CallError::BulkheadFull { .. }
        | CallError::Timeout { .. }
        | CallError::DeadlineExceeded { .. }
        | CallError::Transport { .. } => StepError::Unavailable(text),
        CallError::Status { status, problem, .. } => {
            let detail = problem
                .as_ref()
                .and_then(|p| p.detail.clone())
                .unwrap_or_else(|| text.clone());
            match *status {
                StatusCode::SERVICE_UNAVAILABLE => StepError::Unavailable(detail),
                // An earlier attempt with the same Idempotency-Key still runs: its effect may
                // land after this answer, so wait for it (a later retry gets its answer)
                // rather than compensate now and miss it.
                StatusCode::CONFLICT
                    if problem
                        .as_ref()
                        .is_some_and(|p| p.slug() == flotilla::http::idempotency::IN_PROGRESS) =>
                {
                    StepError::Unavailable(detail)
                }
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED => {
                    StepError::Failed(detail)
                }
                s if s.is_client_error() => StepError::Rejected(detail),
                _ => StepError::Failed(detail),
            }
        }
        _ => StepError::Failed(text),
    }
}

impl Downstream {
    /// Orders' clients; `credentials` gets its tokens from identity.
    pub fn new(
        catalog: ServiceClient,
        inventory: ServiceClient,
        payments: ServiceClient,
        shipping: ServiceClient,
        credentials: Arc<ClientCredentials>,
    ) -> Self {
        Self {
            catalog,
            inventory,
            payments,
            shipping,
            credentials,
            prices: Arc::default(),
            availability: None,
        }
    }

    /// Asks inventory over gRPC, before an order is accepted, whether its lines can be had.
    pub fn with_availability(mut self, channel: GrpcChannel) -> Self {
        let channel = channel.retry_safe([inventory_v1::GET_AVAILABILITY]);
        self.availability = Some(InventoryClient::new(channel));
        self
    }

    /// The lines inventory says it cannot fill now (`GetAvailability`, with orders' own
    /// token). Only a fast refusal: when inventory cannot be asked, or keeps no stock for a
    /// product, nothing is short here and the saga's reservation decides, so an order is never
    /// refused because inventory is away.
    pub async fn short(&self, lines: &[(i64, i64)]) -> Vec<Short> {
        let Some(client) = &self.availability else {
            return Vec::new();
        };
        let token = match self.credentials.token().await {
            Ok(token) => token,
            Err(err) => {
                tracing::debug!(error = %err, "no token for the availability check; the saga decides");
                return Vec::new();
            }
        };
        let mut request = tonic::Request::new(AvailabilityRequest {
            product_ids: lines.iter().map(|(product, _)| *product).collect(),
        });
        match format!("Bearer {token}").parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => return Vec::new(),
        }
        let reply = match client.clone().get_availability(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "inventory's availability unknown; the saga decides");
                return Vec::new();
            }
        };
        lines
            .iter()
            .filter_map(|(product_id, wanted)| {
                let item = reply.items.iter().find(|i| i.product_id == *product_id && i.known)?;
                (item.available < *wanted).then_some(Short {
                    product_id: *product_id,
                    wanted: *wanted,
                    available: item.available,
                })
            })
            .collect()
    }

    /// A product's name and price, from a short-lived cache or the catalog.
    pub async fn product(&self, id: i64, keep: Duration) -> Result<Product, PriceError> {
        if let Ok(prices) = self.prices.lock() {
            if let Some((product, at)) = prices.get(&id) {
                if at.elapsed() < keep {
                    return Ok(product.clone());
                }
            }
        }
        let answer: Value = match self.catalog.get_json(&format!("/api/v1/products/{id}")).await {
            Ok(answer) => answer,
            Err(CallError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Err(PriceError::Unknown(id))
            }
            Err(err) => return Err(PriceError::Unavailable(err.to_string())),
        };
        let product = Product {
            name: answer["name"].as_str().unwrap_or_default().to_owned(),
            price: serde_json::from_value(answer["price"].clone())
                .map_err(|e| PriceError::Unavailable(format!("the catalog's price of {id}: {e}")))?,
        };
        if let Ok(mut prices) = self.prices.lock() {
            if prices.len() > 10_000 {
                prices.clear();
            }
            prices.insert(id, (product.clone(), Instant::now()));
        }
        Ok(product)
    }

    /// One authorized call; the answer's JSON, or what the failure means for the saga.
    async fn call(
        &self,
        client: &ServiceClient,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StepError> {
        let token = self.credentials.token().await.map_err(|e| match classify(&e) {
            // Identity refusing orders' credentials is a configuration fault: keep waiting.
            StepError::Rejected(why) => StepError::Unavailable(format!("orders' client credentials: {why}")),
            other => other,
        })?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "application/json");
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let bytes = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let mut request = request
            .body(bytes)
            .map_err(|e| StepError::Failed(format!("building {path}: {e}")))?;
        // Every write here is idempotent (by key or by order id): safe to retry anywhere.
        request.extensions_mut().insert(RetryNonIdempotent);
        let service = client.stack().target().name().to_owned();
        let response = client.send(request).await.map_err(|e| classify(&e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            self.credentials.invalidate().await;
        }
        if !status.is_success() {
            let problem = serde_json::from_slice(response.body()).ok();
            return Err(classify(&CallError::Status {
                service,
                status,
                problem,
            }));
        }
        if response.body().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(response.body()).map_err(|e| StepError::Failed(format!("{service} answered: {e}")))
    }

    /// Holds the lines' stock for the order (idempotent by order id).
    pub async fn reserve(&self, order_id: &str, lines: &[(i64, i64)]) -> Result<(), StepError> {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(product_id, quantity)| serde_json::json!({"product_id": product_id, "quantity": quantity}))
            .collect();
        let body = serde_json::json!({"order_id": order_id, "lines": lines});
        self.call(
            &self.inventory,
            Method::POST,
            "/api/v1/inventory/reservations",
            Some(&body),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Gives the order's held stock back; no reservation is nothing to undo.
    pub async fn release(&self, order_id: &str) -> Result<(), StepError> {
        let path = format!("/api/v1/inventory/reservations/{order_id}/release");
        match self.call(&self.inventory, Method::POST, &path, None, None).await {
            Ok(_) => Ok(()),
            Err(StepError::Rejected(why)) => {
                // Not found (never reserved): nothing to give back. (A committed reservation
                // is returned to stock by the release itself.)
                tracing::warn!(order = order_id, %why, "releasing stock: nothing to release");
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// Takes the order's held stock for good.
    pub async fn commit(&self, order_id: &str) -> Result<(), StepError> {
        let path = format!("/api/v1/inventory/reservations/{order_id}/commit");
        self.call(&self.inventory, Method::POST, &path, None, None)
            .await
            .map(|_| ())
    }

    /// Authorizes the total for the order's customer (the one who may read the payment); the
    /// payment's id.
    pub async fn authorize(&self, order_id: &str, amount: &Money, customer: &str) -> Result<String, StepError> {
        let body = serde_json::json!({"order_id": order_id, "amount": amount, "customer": customer});
        let answer = self
            .call(
                &self.payments,
                Method::POST,
                "/api/v1/payments",
                Some(&body),
                Some(&format!("{order_id}:authorize")),
            )
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StepError::Failed("payments answered without an id".into()))
    }

    /// Captures the authorized payment.
    pub async fn capture(&self, order_id: &str, payment_id: &str) -> Result<(), StepError> {
        let path = format!("/api/v1/payments/{payment_id}/capture");
        let key = format!("{order_id}:capture:{payment_id}");
        self.call(&self.payments, Method::POST, &path, None, Some(&key))
            .await
            .map(|_| ())
    }

    /// Voids what is authorized and refunds what was captured for the order (found by
    /// order id, so a payment whose answer never arrived is undone too).
    pub async fn release_payments(&self, order_id: &str) -> Result<(), StepError> {
        let path = format!("/api/v1/payments?order_id={order_id}");
        let payments = self.call(&self.payments, Method::GET, &path, None, None).await?;
        for payment in payments.as_array().into_iter().flatten() {
            let (Some(id), Some(state)) = (payment["id"].as_str(), payment["state"].as_str()) else {
                continue;
            };
            let operation = match state {
                "authorized" => "void",
                "captured" => "refund",
                _ => continue,
            };
            let path = format!("/api/v1/payments/{id}/{operation}");
            let key = format!("{order_id}:{operation}:{id}");
            self.call(&self.payments, Method::POST, &path, None, Some(&key)).await?;
        }
        Ok(())
    }

    /// Creates the order's shipment for its customer, held until the order is confirmed; its id.
    pub async fn ship(
        &self,
        order_id: &str,
        address: &crate::order::Address,
        customer: &str,
    ) -> Result<String, StepError> {
        let body = serde_json::json!({"order_id": order_id, "address": address, "hold": true, "customer": customer});
        let answer = self
            .call(&self.shipping, Method::POST, "/api/v1/shipments", Some(&body), None)
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StepError::Failed("shipping answered without an id".into()))
    }

    /// Cancels the order's shipment, if it has one.
    pub async fn cancel_shipment(&self, order_id: &str) -> Result<(), StepError> {
        let path = format!("/api/v1/shipments?order_id={order_id}");
        let found = self.call(&self.shipping, Method::GET, &path, None, None).await?;
        for shipment in found.as_array().into_iter().flatten() {
            let Some(id) = shipment["id"].as_str() else { continue };
            let path = format!("/api/v1/shipments/{id}/cancel");
            match self.call(&self.shipping, Method::POST, &path, None, None).await {
                Ok(_) => {}
                Err(StepError::Rejected(why)) => {
                    // Already on its way: a person must stop it.
                    tracing::error!(order = order_id, shipment = id, %why, "cannot cancel the shipment");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod classify_tests {
    use flotilla::Problem;
    use http::StatusCode;

    use super::*;

    fn status(status: StatusCode, problem: Option<Problem>) -> StepError {
        classify(&CallError::Status {
            service: "payments".into(),
            status,
            problem,
        })
    }

    #[test]
    fn a_request_still_running_under_its_key_is_waited_for_not_compensated() {
        let running = Problem::new(409, flotilla::http::idempotency::IN_PROGRESS, "Request in progress");
        assert!(matches!(
            status(StatusCode::CONFLICT, Some(running)),
            StepError::Unavailable(_)
        ));
        let other = Problem::new(409, "reservation-conflict", "Conflict");
        assert!(
            matches!(status(StatusCode::CONFLICT, Some(other)), StepError::Rejected(_)),
            "any other conflict is still a refusal"
        );
        assert!(matches!(status(StatusCode::CONFLICT, None), StepError::Rejected(_)));
        assert!(matches!(
            status(StatusCode::SERVICE_UNAVAILABLE, None),
            StepError::Unavailable(_)
        ));
    }

    #[test]
    fn an_answer_that_never_came_is_waited_for_not_compensated() {
        let timeout = CallError::Timeout {
            endpoint: "127.0.0.1:1".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(matches!(classify(&timeout), StepError::Unavailable(_)));
        let deadline = CallError::DeadlineExceeded {
            service: "payments".into(),
        };
        assert!(matches!(classify(&deadline), StepError::Unavailable(_)));
        assert!(matches!(
            status(StatusCode::INTERNAL_SERVER_ERROR, None),
            StepError::Failed(_)
        ));
    }
}
