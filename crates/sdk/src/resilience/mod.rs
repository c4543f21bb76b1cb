//! Resilience: the tower layers every outgoing call goes through, shared by the gateway and
//! the service-to-service client. Outermost first:
//!
//! 1. [`BulkheadLayer`]: at most N calls in flight; refuse, don't queue.
//! 2. [`BreakerLayer`]: fail fast while the service is failing.
//! 3. [`DeadlineLayer`]: the call's overall time, capped by the caller's own deadline, which
//!    travels on in a header.
//! 4. [`RetryLayer`]: retry on another instance within a budget, with jittered backoff.
//! 5. the endpoint service (in [`crate::client`]): pick an instance, per-try timeout, send.
//!
//! Every layer speaks [`CallError`], which says where a failure came from and whether it may
//! be retried. Defaults and their reasons are in `docs/resilience.md`.

mod backoff;
mod breaker;
mod budget;
mod bulkhead;
mod deadline;
mod error;
mod retry;
pub mod stall;

pub use backoff::Backoff;
pub use breaker::{
    BreakerConfig, BreakerLayer, BreakerMetrics, BreakerService, BreakerState, CircuitBreaker, InstancesDigest, Permit,
    SlidingWindow,
};
pub use budget::{BudgetConfig, RetryBudget};
pub use bulkhead::{Bulkhead, BulkheadLayer, BulkheadService};
pub use deadline::{Deadline, DeadlineLayer, DeadlineService, DEADLINE_HEADER};
pub use error::{
    grpc_server_failure, grpc_status, idempotent, retryable_answer, retryable_status, server_failure, shed, BoxError,
    CallError, Origin,
};
pub use retry::{Attempts, RetryLayer, RetryNonIdempotent, RetryPolicy, RetryService};

use std::future::Future;
use std::pin::Pin;

/// The future every resilience layer returns.
pub type CallFuture<T> = Pin<Box<dyn Future<Output = Result<T, CallError>> + Send>>;

/// A request body that can be sent again. Bodies that cannot (a client's stream being
/// forwarded) answer `None`, and their requests are tried once.
pub trait Replay: Sized {
    /// A copy to send on the next attempt.
    fn try_replay(&self) -> Option<Self>;
}

impl Replay for http_body_util::Full<bytes::Bytes> {
    fn try_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl Replay for http_body_util::Empty<bytes::Bytes> {
    fn try_replay(&self) -> Option<Self> {
        Some(Self::new())
    }
}

/// Copies a request for another attempt, if its body allows.
pub fn replay_request<B: Replay>(request: &http::Request<B>) -> Option<http::Request<B>> {
    let body = request.body().try_replay()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests;
