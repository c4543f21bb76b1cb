//! Retries: another attempt, on another instance, when the failure allows it (see
//! [`CallError::retryable`]), while the budget allows it, after a jittered backoff.

use std::sync::{Arc, Mutex};

use tower::ServiceExt;

use super::{idempotent, replay_request, retryable_answer, Backoff, CallError, CallFuture, Replay, RetryBudget};

/// The endpoints a call has tried, in order. The endpoint service reads it to avoid them and
/// appends each pick; the gateway logs it.
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<Mutex<Vec<String>>>);

impl Attempts {
    /// Records an attempt on `endpoint`.
    pub fn push(&self, endpoint: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(endpoint);
    }

    /// The endpoints tried so far.
    pub fn tried(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many attempts were made.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Put in a request's extensions to allow retrying it although its method is not idempotent
/// (the route or caller knows the operation is safe to repeat, e.g. keyed by Idempotency-Key).
#[derive(Debug, Clone, Copy)]
pub struct RetryNonIdempotent;

/// How many attempts, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (Resilience4j: 3).
    pub max_attempts: u32,
    /// Waits between retries after the first.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
        }
    }
}

/// Retries failed calls within a shared budget.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
}

impl RetryLayer {
    /// A layer drawing on `budget`.
    pub fn new(policy: RetryPolicy, budget: Arc<RetryBudget>) -> Self {
        Self { policy, budget }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            policy: self.policy,
            budget: self.budget.clone(),
        }
    }
}

/// A service whose failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
}

impl<S> RetryService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RetryService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>, Error = CallError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Replay + Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = CallError;
    type Future = CallFuture<http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service polled ready goes with this call; a clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (policy, budget) = (self.policy, self.budget.clone());
        let idempotent = idempotent(request.method()) || request.extensions().get::<RetryNonIdempotent>().is_some();
        if request.extensions().get::<Attempts>().is_none() {
            request.extensions_mut().insert(Attempts::default());
        }
        budget.deposit();
        Box::pin(async move {
            let mut attempt = 1;
            let mut request = request;
            let mut first = true;
            loop {
                let replay = if attempt < policy.max_attempts {
                    replay_request(&request)
                } else {
                    None
                };
                let result = if first {
                    first = false;
                    inner.call(request).await
                } else {
                    inner.ready().await?.call(request).await
                };
                let retry = match &result {
                    Ok(response) => idempotent && retryable_answer(response.status(), response.headers()),
                    Err(err) => err.retryable(idempotent),
                };
                if !retry {
                    return result;
                }
                let Some(again) = replay else { return result };
                if !budget.try_withdraw() {
                    tracing::debug!("retry budget spent; not retrying");
                    return result;
                }
                attempt += 1;
                let delay = policy.backoff.delay(attempt - 1, rand::random::<f64>());
                if let Err(err) = &result {
                    tracing::debug!(error = %err, attempt, ?delay, "retrying on another instance");
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                request = again;
            }
        })
    }
}
