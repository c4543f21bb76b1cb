//! The one error type of a resilient call. Every variant says where the failure came from
//! and whether trying again may help, so retry, breaker and ejection logic decide from data,
//! not from string matching (as pingora's errors do).

use std::time::Duration;

use flotilla_api::Problem;
use http::StatusCode;

use crate::http::chain;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The service being called (or the network on the way to it).
    Upstream,
    /// The caller: a bad request, or a deadline the caller set.
    Downstream,
    /// This process: a breaker, a bulkhead, no instance known.
    Internal,
}

/// Why a call to a service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Discovery knows no (usable) instance of the service.
    #[error("no instance of `{service}` is available")]
    NoInstance {
        /// The service.
        service: String,
    },
    /// The service's circuit breaker is open: calls fail fast until it probes again.
    #[error("the circuit breaker for `{service}` is open; next probe in {retry_after:?}")]
    CircuitOpen {
        /// The service.
        service: String,
        /// When the breaker lets a probe through.
        retry_after: Duration,
    },
    /// Too many calls to the service are in flight.
    #[error("`{service}` already has {limit} calls in flight")]
    BulkheadFull {
        /// The service.
        service: String,
        /// The limit.
        limit: usize,
    },
    /// The call's deadline (its own timeout, or its caller's) passed.
    #[error("the deadline for the call to `{service}` passed")]
    DeadlineExceeded {
        /// The service.
        service: String,
    },
    /// One attempt got no response headers in time.
    #[error("{endpoint} did not answer within {after:?}")]
    Timeout {
        /// The endpoint tried.
        endpoint: String,
        /// The per-try timeout.
        after: Duration,
    },
    /// No connection could be made: the request was never sent, so any method may be retried.
    #[error("connecting to {endpoint}: {}", chain(cause.as_ref()))]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// What the connector said.
        cause: BoxError,
    },
    /// The connection failed after the request may have been sent.
    #[error("{endpoint}: {}", chain(cause.as_ref()))]
    Transport {
        /// The endpoint tried.
        endpoint: String,
        /// What the connection said.
        cause: BoxError,
    },
    /// The service answered with an error status (typed JSON helpers only; the stack itself
    /// passes responses through).
    #[error("{service} answered {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Status {
        /// The service.
        service: String,
        /// The status.
        status: StatusCode,
        /// The problem document it sent, if any.
        problem: Option<Problem>,
    },
    /// The request could not be built or sent as given.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The caller's own streamed request body failed while it was being sent (a client that
    /// went away, a chunk that does not parse): the caller's fault, never the upstream's.
    #[error("the request body failed: {}", chain(cause.as_ref()))]
    RequestBody {
        /// Why.
        cause: BoxError,
    },
    /// The response body could not be read or decoded.
    #[error("reading the answer of `{service}`: {}", chain(cause.as_ref()))]
    Body {
        /// The service.
        service: String,
        /// Why.
        cause: BoxError,
    },
}

impl CallError {
    /// A short, stable name of the failure, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoInstance { .. } => "no_instance",
            CallError::CircuitOpen { .. } => "circuit_open",
            CallError::BulkheadFull { .. } => "bulkhead",
            CallError::DeadlineExceeded { .. } => "deadline",
            CallError::Timeout { .. } => "timeout",
            CallError::Connect { .. } => "connect",
            CallError::Transport { .. } => "transport",
            CallError::Status { .. } => "status",
            CallError::InvalidRequest(_) => "invalid_request",
            CallError::RequestBody { .. } => "request_body",
            CallError::Body { .. } => "body",
        }
    }

    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        match self {
            CallError::Timeout { .. }
            | CallError::Connect { .. }
            | CallError::Transport { .. }
            | CallError::Status { .. }
            | CallError::Body { .. } => Origin::Upstream,
            CallError::DeadlineExceeded { .. } | CallError::InvalidRequest(_) | CallError::RequestBody { .. } => {
                Origin::Downstream
            }
            CallError::NoInstance { .. } | CallError::CircuitOpen { .. } | CallError::BulkheadFull { .. } => {
                Origin::Internal
            }
        }
    }

    /// Whether another attempt (on another instance) may succeed and is safe: a failed
    /// connect always (nothing was sent); a timeout, reset or 502/503/504 only when the
    /// request is idempotent.
    pub fn retryable(&self, idempotent: bool) -> bool {
        match self {
            CallError::Connect { .. } => true,
            CallError::Timeout { .. } | CallError::Transport { .. } => idempotent,
            CallError::Status { status, .. } => idempotent && retryable_status(*status),
            _ => false,
        }
    }

    /// The endpoint the failure belongs to, when it belongs to one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            CallError::Timeout { endpoint, .. }
            | CallError::Connect { endpoint, .. }
            | CallError::Transport { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    /// The problem document a client of ours sees. Internals stay in the log.
    pub fn to_problem(&self) -> Problem {
        match self {
            CallError::NoInstance { service } => Problem::new(503, "no-instance", "Service unavailable")
                .with_detail(format!("no instance of `{service}` is available")),
            CallError::CircuitOpen { service, .. } => Problem::new(503, "circuit-open", "Service unavailable")
                .with_detail(format!("`{service}` is failing; calls are paused while it recovers")),
            CallError::BulkheadFull { service, .. } => Problem::new(503, "bulkhead-full", "Service unavailable")
                .with_detail(format!("too many calls to `{service}` are in flight")),
            CallError::DeadlineExceeded { service } => Problem::new(504, "deadline-exceeded", "Gateway timeout")
                .with_detail(format!("the call to `{service}` ran out of time")),
            CallError::Timeout { after, .. } => Problem::new(504, "upstream-timeout", "Gateway timeout")
                .with_detail(format!("the upstream did not answer within {} ms", after.as_millis())),
            CallError::Connect { .. } | CallError::Transport { .. } | CallError::Body { .. } => {
                Problem::new(502, "upstream-unavailable", "Bad gateway")
                    .with_detail("the upstream could not be reached or failed mid-response")
            }
            CallError::Status { service, status, .. } => Problem::new(502, "upstream-status", "Bad gateway")
                .with_detail(format!("`{service}` answered {status}")),
            CallError::InvalidRequest(reason) => {
                Problem::new(400, "bad-request", "Bad request").with_detail(reason.clone())
            }
            CallError::RequestBody { .. } => Problem::new(400, "bad-request-body", "Bad request")
                .with_detail("the request body could not be read whole"),
        }
    }
}

/// 502, 503 and 504 say "this instance could not serve it": another may.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The status of a gRPC answer carried in its headers (Trailers-Only: an error before any
/// message, as a unary call's errors are), if it is one.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Whether a gRPC status is the server's fault (not the request's): UNKNOWN 2,
/// DEADLINE_EXCEEDED 4, INTERNAL 13, UNAVAILABLE 14, DATA_LOSS 15. A caller's own fault
/// (INVALID_ARGUMENT, NOT_FOUND, …) says nothing about the instance's health.
pub fn grpc_server_failure(code: i32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
}

/// Whether an answer failed on the server's side, so the breaker and outlier ejection count it:
/// a 5xx, or a gRPC status [`grpc_server_failure`] blames on the server. Not a [`shed`]
/// answer: a server that refuses what it cannot do in time is working as it should, and a
/// breaker that opened on its refusals would refuse everything it can still do.
pub fn server_failure(status: StatusCode, headers: &http::HeaderMap) -> bool {
    (status.is_server_error() && !shed(status, headers)) || grpc_status(headers).is_some_and(grpc_server_failure)
}

/// Whether an answer is load shed: `503` with `Retry-After` (RFC 9110 §15.6.4: the server is
/// overloaded for now and says when to come back), as the SDK's admission control answers.
pub fn shed(status: StatusCode, headers: &http::HeaderMap) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE && headers.contains_key(http::header::RETRY_AFTER)
}

/// Whether an answer may be asked of another instance, when the request may be repeated:
/// 502/503/504, or gRPC UNAVAILABLE (14).
pub fn retryable_answer(status: StatusCode, headers: &http::HeaderMap) -> bool {
    retryable_status(status) || grpc_status(headers) == Some(14)
}

/// Methods that RFC 9110 §9.2.2 calls idempotent: repeating them has no further effect.
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_with_retry_after_is_shed_load_not_a_failure() {
        let mut headers = http::HeaderMap::new();
        assert!(server_failure(StatusCode::SERVICE_UNAVAILABLE, &headers));
        assert!(server_failure(StatusCode::INTERNAL_SERVER_ERROR, &headers));
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        assert!(shed(StatusCode::SERVICE_UNAVAILABLE, &headers));
        assert!(!server_failure(StatusCode::SERVICE_UNAVAILABLE, &headers));
        assert!(
            server_failure(StatusCode::INTERNAL_SERVER_ERROR, &headers),
            "only a 503 says overloaded"
        );
        assert!(
            retryable_answer(StatusCode::SERVICE_UNAVAILABLE, &headers),
            "another instance may take it"
        );
    }

    #[test]
    fn connect_failures_are_always_retryable_others_only_when_idempotent() {
        let connect = CallError::Connect {
            endpoint: "a".into(),
            cause: "refused".into(),
        };
        assert!(connect.retryable(false));
        let reset = CallError::Transport {
            endpoint: "a".into(),
            cause: "reset".into(),
        };
        assert!(reset.retryable(true));
        assert!(!reset.retryable(false));
        let open = CallError::CircuitOpen {
            service: "s".into(),
            retry_after: Duration::from_secs(1),
        };
        assert!(!open.retryable(true));
        assert_eq!(open.origin(), Origin::Internal);
        assert_eq!(open.to_problem().status, 503);
        assert!(idempotent(&http::Method::PUT));
        assert!(!idempotent(&http::Method::POST));
    }
}
