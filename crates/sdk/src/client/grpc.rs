//! gRPC over the resilient stack: a tonic "channel" whose calls go through the bulkhead,
//! breaker, deadline, retry budget and balancer like every other call of the service, in a
//! client span whose context is the `traceparent` sent, with the served request's propagated
//! headers. Generated clients take it as their transport:
//! `InventoryClient::new(ctx.grpc("inventory"))`.
//!
//! Unary and server-streaming calls: the request (one message) is held whole, so a retry can
//! send it again. gRPC errors come back as HTTP 200 with `grpc-status`; the stack counts the
//! server's failures (UNAVAILABLE, INTERNAL, …) against the instance and the breaker, and asks
//! another instance after UNAVAILABLE only for methods marked safe to repeat.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use tracing::Instrument;

use super::{Propagated, RequestBody, Stack};
use crate::resilience::{CallError, RetryNonIdempotent};

/// The largest request message held for a call (gRPC's default receive limit).
const MAX_REQUEST: usize = 4 << 20;

/// A tonic transport over a [`Stack`] built with `http2: true` on an HTTP/2 pool.
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    stack: Stack,
    retry_safe: Arc<[String]>,
}

impl GrpcChannel {
    /// Calls over `stack`, whose configuration says `http2: true`.
    pub fn new(stack: Stack) -> Self {
        Self {
            stack,
            retry_safe: Arc::from([]),
        }
    }

    /// Methods (`/package.Service/Method`) that may be sent again after they may have arrived:
    /// reads, and writes made idempotent by their request. gRPC says nothing of it on the wire.
    pub fn retry_safe<I: IntoIterator<Item = S>, S: Into<String>>(mut self, methods: I) -> Self {
        self.retry_safe = methods.into_iter().map(Into::into).collect();
        self
    }

    /// The stack underneath.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    async fn send(self, request: Request<tonic::body::Body>) -> Result<Response<super::ResponseBody>, tonic::Status> {
        use crate::telemetry::span;
        let (mut parts, body) = request.into_parts();
        let message: Bytes = Limited::new(body, MAX_REQUEST)
            .collect()
            .await
            .map_err(|e| tonic::Status::internal(format!("reading the request message: {e}")))?
            .to_bytes();
        let path = parts.uri.path().to_owned();
        let upstream = self.stack.target().name().to_owned();
        let call = span::grpc_client(&upstream, &path);
        crate::telemetry::propagation::inject(&call, &mut parts.headers);
        Propagated::apply(&mut parts.headers);
        // The deadline travels as gRPC's own header too, for servers that are not Flotilla's.
        if let Some(deadline) = crate::resilience::Deadline::current() {
            let millis = deadline.remaining().as_millis().clamp(1, 99_999_999);
            if let Ok(value) = http::HeaderValue::from_str(&format!("{millis}m")) {
                parts.headers.insert("grpc-timeout", value);
            }
        }
        if self.retry_safe.contains(&path) {
            parts.extensions.insert(RetryNonIdempotent);
        }
        let started = std::time::Instant::now();
        let request = Request::from_parts(parts, RequestBody::from(message));
        let result = self.stack.call(request).instrument(call.clone()).await;
        let outcome = match &result {
            Ok(response) => {
                // A unary error comes in the headers; a success's status in the trailers is 0.
                let code = crate::resilience::grpc_status(response.headers()).unwrap_or(0);
                span::record_grpc_status(&call, code);
                code.to_string()
            }
            Err(err) => {
                span::record_error(&call, err);
                err.kind().to_owned()
            }
        };
        super::count_call(&upstream, "POST", &outcome, started);
        result.map_err(status_of)
    }
}

/// The gRPC status a failed call becomes: what could not reach a server is UNAVAILABLE (a
/// caller may try again later), a passed deadline DEADLINE_EXCEEDED, a full bulkhead
/// RESOURCE_EXHAUSTED.
pub fn status_of(err: CallError) -> tonic::Status {
    let message = err.to_string();
    match err {
        CallError::NoInstance { .. }
        | CallError::CircuitOpen { .. }
        | CallError::Connect { .. }
        | CallError::Transport { .. } => tonic::Status::unavailable(message),
        CallError::BulkheadFull { .. } => tonic::Status::resource_exhausted(message),
        CallError::DeadlineExceeded { .. } | CallError::Timeout { .. } => tonic::Status::deadline_exceeded(message),
        _ => tonic::Status::internal(message),
    }
}

impl tower::Service<Request<tonic::body::Body>> for GrpcChannel {
    type Response = Response<super::ResponseBody>;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<super::ResponseBody>, tonic::Status>> + Send>>;

    /// Always ready: the bulkhead refuses in the call, as for every other call.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}

#[cfg(test)]
mod tests;
