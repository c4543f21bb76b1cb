//! A bulkhead: at most N calls to one service in flight; the next one is refused at once
//! instead of queueing, so a slow dependency cannot take every task and socket with it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A concurrency limit that refuses rather than waits.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

impl Bulkhead {
    /// A bulkhead of `limit` concurrent calls.
    pub fn new(limit: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot, held until dropped; `None` when all are taken.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }
}

/// Puts a [`Bulkhead`] in front of a service.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
    service: std::sync::Arc<str>,
}

impl BulkheadLayer {
    /// A layer sharing `bulkhead`; `service` names it in errors.
    pub fn new(bulkhead: Bulkhead, service: impl AsRef<str>) -> Self {
        Self {
            bulkhead,
            service: std::sync::Arc::from(service.as_ref()),
        }
    }
}

impl<S> tower::Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            service: self.service.clone(),
        }
    }
}

/// A service behind a bulkhead.
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
    service: std::sync::Arc<str>,
}

impl<S> BulkheadService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> tower::Service<Req> for BulkheadService<S>
where
    S: tower::Service<Req, Error = super::CallError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = super::CallError;
    type Future = super::CallFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Some(permit) = self.bulkhead.try_enter() else {
            let err = super::CallError::BulkheadFull {
                service: self.service.to_string(),
                limit: self.bulkhead.limit(),
            };
            return Box::pin(async move { Err(err) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            drop(permit);
            result
        })
    }
}
