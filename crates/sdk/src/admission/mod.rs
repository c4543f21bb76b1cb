//! Admission control: work a service cannot finish in time is refused at once — `503` with
//! `Retry-After`, before anything is written — instead of queued until its caller gives up.
//! A refusal costs the caller one round trip and tells it when to come back; a queue that
//! grows without bound costs every caller its deadline (the gateway's `504`) and the service
//! the work of requests nobody waits for any more.
//!
//! Two rules, as Netflix's concurrency-limits has them:
//! * [`ConcurrencyLimit`] for requests: as many at once as the service's latency says it can
//!   take (a gradient of the long-run latency over the latest one adjusts the limit), the
//!   rest wait in line for at most a queue age, then are refused ([`limited`] puts it in
//!   front of a router's routes);
//! * [`Backlog`] for work that goes on after the answer (a saga, a job): a new unit is taken
//!   only while those already open would finish within a target, by Little's law — open
//!   units over the rate units finish at.

mod backlog;
mod limit;

pub use backlog::Backlog;
pub use limit::{limited, ConcurrencyLimit, LimitConfig, Permit};

use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use flotilla_api::Problem;

/// The problem slug of a refusal for overload: retry after `Retry-After`, nothing was done.
pub const OVERLOADED: &str = "overloaded";

/// Work refused because the service cannot take it in time; nothing of it was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; retry in {} s", retry_after_seconds(*.retry_after))]
pub struct Overloaded {
    /// What is full, for the problem's detail (`12 orders are still being confirmed`).
    pub what: String,
    /// When a retry is likely to be taken.
    pub retry_after: Duration,
}

/// Whole seconds for `Retry-After`: at least one (the header has no fractions).
fn retry_after_seconds(after: Duration) -> u64 {
    after.as_millis().div_ceil(1000).max(1) as u64
}

impl Overloaded {
    /// The refusal as a problem (without its `Retry-After` header: see [`IntoResponse`]).
    pub fn problem(&self) -> Problem {
        Problem::new(503, OVERLOADED, "Overloaded").with_detail(self.to_string())
    }
}

impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(self.retry_after)),
        );
        response
    }
}

#[cfg(test)]
mod tests;
