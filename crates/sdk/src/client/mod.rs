//! The service-to-service client: discovery + balance + resilience, with deadline, auth and
//! trace-context propagation. The gateway builds its upstream stacks with the same
//! [`Stack`], so both share one balancer, one breaker, one retry policy.
//!
//! ```no_run
//! # async fn demo(ctx: flotilla::runtime::Context) -> Result<(), flotilla::resilience::CallError> {
//! #[derive(serde::Deserialize)]
//! struct Stock { available: u32 }
//! let stock: Stock = ctx.client("inventory").get_json("/api/v1/inventory/7").await?;
//! # Ok(()) }
//! ```

mod body;
mod config;
mod connecting;
mod endpoint;
pub mod grpc;
pub mod h1;
mod propagate;
mod target;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

pub use body::{BodyError, RequestBody, ResponseBody};
pub use config::ClientConfig;
pub use connecting::{Limited, MAX_CONNECTING_PER_ENDPOINT};
pub use endpoint::{pool, pool_for, pool_h2, EndpointService, Pool, SendError};
pub use grpc::GrpcChannel;
pub use propagate::{Propagated, PROPAGATED_HEADERS};
pub use target::Target;

use crate::balance::Balancer;
use crate::resilience::{
    BreakerLayer, BreakerService, Bulkhead, BulkheadLayer, BulkheadService, CallError, CircuitBreaker, DeadlineLayer,
    DeadlineService, RetryBudget, RetryLayer, RetryService,
};

/// The full stack a call goes through, outermost first.
pub type StackService = BulkheadService<BreakerService<DeadlineService<RetryService<EndpointService>>>>;

/// A resilient route to one destination: the layered service plus handles on its parts.
#[derive(Clone)]
pub struct Stack {
    service: StackService,
    breaker: Arc<CircuitBreaker>,
    balancer: Arc<Balancer>,
    target: Arc<Target>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Builds the stack for `target` over a shared connection pool.
    pub fn new(target: Target, config: &ClientConfig, pool: Pool) -> Self {
        let name = target.name().to_owned();
        let target = Arc::new(target);
        let balancer = Arc::new(Balancer::new(config.balance.clone()));
        // An open breaker probes at once when the service's instances change: the restarted
        // instance is tried as soon as it has registered, not after the open time.
        let watched = target.clone();
        let breaker = Arc::new(
            CircuitBreaker::new(name.clone(), config.breaker)
                .probe_when_instances_change(move || watched.instances_digest()),
        );
        let budget = Arc::new(RetryBudget::new(config.budget));
        let endpoint = EndpointService::new(target.clone(), balancer.clone(), pool, config.per_try_timeout)
            .http2(config.http2)
            .wait_for_instance(config.wait_for_instance);
        let service = BulkheadLayer::new(Bulkhead::new(config.max_in_flight), name.clone()).layer(
            BreakerLayer::new(breaker.clone(), name.clone()).layer(
                DeadlineLayer::new(config.timeout, name.clone())
                    .layer(RetryLayer::new(config.retry, budget).layer(endpoint)),
            ),
        );
        Self {
            service,
            breaker,
            balancer,
            target,
        }
    }

    /// Sends a request (its URI needs only a path; the endpoint supplies the authority).
    pub async fn call(&self, request: Request<RequestBody>) -> Result<Response<ResponseBody>, CallError> {
        self.service.clone().oneshot(request).await
    }

    /// The destination's circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The destination's balancer.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// The destination.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }
}

impl Service<Request<RequestBody>> for Stack {
    type Response = Response<ResponseBody>;
    type Error = CallError;
    type Future = crate::resilience::CallFuture<Response<ResponseBody>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), CallError>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        self.service.call(request)
    }
}

/// Counts one call in the client's RED series: by upstream, method and outcome (a status, a
/// gRPC code, or the error's kind), and its duration.
pub(crate) fn count_call(upstream: &str, method: &str, outcome: &str, started: std::time::Instant) {
    use crate::telemetry::metrics;
    metrics::add(metrics::HTTP_CLIENT_REQUESTS, &[upstream, method, outcome], 1.0);
    metrics::observe(metrics::HTTP_CLIENT_DURATION, &[upstream, method], started.elapsed());
}

/// A client for one service, with typed JSON helpers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceClient {
    stack: Stack,
}

impl ServiceClient {
    /// A client over a stack.
    pub fn new(stack: Stack) -> Self {
        Self { stack }
    }

    /// The stack underneath.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Sends a request with a body in memory; the answer is read whole. Headers of the
    /// request being served (`Authorization`, `traceparent`, ...) travel on, unless set here.
    /// The call runs in a client span whose context is the `traceparent` sent on.
    pub async fn send(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, CallError> {
        use crate::telemetry::span;
        let call = span::client(self.stack.target.name(), request.method(), request.uri().path());
        crate::telemetry::propagation::inject(&call, request.headers_mut());
        Propagated::apply(request.headers_mut());
        let method = request.method().clone();
        let started = std::time::Instant::now();
        let result = self.send_traced(request).instrument(call.clone()).await;
        let upstream = self.stack.target.name();
        let outcome = match &result {
            Ok(response) => {
                span::record_http_status(&call, response.status().as_u16());
                response.status().as_u16().to_string()
            }
            Err(err) => {
                span::record_error(&call, err);
                err.kind().to_owned()
            }
        };
        count_call(upstream, method.as_str(), &outcome, started);
        result
    }

    async fn send_traced(&self, request: Request<Bytes>) -> Result<Response<Bytes>, CallError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, RequestBody::from(body));
        let response = self.stack.call(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|err| CallError::Body {
                service: self.stack.target.name().to_owned(),
                cause: err,
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }

    async fn json<T: DeserializeOwned>(&self, request: Request<Bytes>) -> Result<T, CallError> {
        let service = self.stack.target.name().to_owned();
        let response = self.send(request).await?;
        if !response.status().is_success() {
            let problem = serde_json::from_slice(response.body()).ok();
            return Err(CallError::Status {
                service,
                status: response.status(),
                problem,
            });
        }
        serde_json::from_slice(response.body()).map_err(|err| CallError::Body {
            service,
            cause: Box::new(err),
        })
    }

    /// `GET path` and decode the JSON answer; a non-2xx answer is `CallError::Status`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let request = Request::get(path)
            .header(header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        self.json(request).await
    }

    /// `method path` with a JSON body, and decode the JSON answer.
    pub async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(header::ACCEPT, "application/json")
            .body(Bytes::from(bytes))
            .map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        self.json(request).await
    }

    /// `POST path` with a JSON body. Not retried after it may have arrived, unless
    /// `RetryNonIdempotent` is in the request's extensions (use [`ServiceClient::send`]).
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        self.send_json(Method::POST, path, body).await
    }
}

#[cfg(test)]
mod tests;
