//! Deadline propagation: a request's remaining time travels in the `x-flotilla-deadline-ms`
//! header (milliseconds left, relative, so clocks need not agree, as gRPC's `grpc-timeout`).
//! A callee serves the request within that time and no longer, and its own calls inherit what
//! is left through a task-local, so no one works for a caller that has given up.

use std::future::Future;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// The header carrying the remaining milliseconds.
pub static DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-flotilla-deadline-ms");

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The moment by which a piece of work must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `after` from now.
    pub fn after(after: Duration) -> Self {
        Deadline(Instant::now() + after)
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Reads the header; a missing or malformed one means no deadline.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        match headers.get(&DEADLINE_HEADER) {
            Some(value) => {
                let ms: u64 = value.to_str().ok()?.trim().parse().ok()?;
                Some(Deadline::after(Duration::from_millis(ms)))
            }
            // A gRPC client that is not Flotilla's says it its own way.
            None => grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?).map(Deadline::after),
        }
    }

    /// Writes the time left into the header.
    pub fn to_headers(&self, headers: &mut HeaderMap) {
        headers.insert(
            DEADLINE_HEADER.clone(),
            HeaderValue::from(self.remaining().as_millis() as u64),
        );
    }

    /// The deadline of the request being served by this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// Runs `work` with this as the current deadline (nested deadlines only ever shrink).
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        let effective = Deadline::current().map_or(self, |outer| outer.min(self));
        CURRENT.scope(effective, work).await
    }

    /// The earlier of `own` from now and the current task's deadline.
    pub fn for_call(own: Duration) -> Self {
        let mine = Deadline::after(own);
        Deadline::current().map_or(mine, |outer| outer.min(mine))
    }
}

/// gRPC's `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn travels_as_remaining_milliseconds_and_only_shrinks() {
        let mut headers = HeaderMap::new();
        Deadline::after(Duration::from_millis(750)).to_headers(&mut headers);
        assert_eq!(headers[&DEADLINE_HEADER], "750");
        let d = Deadline::from_headers(&headers).unwrap();
        assert_eq!(d.remaining(), Duration::from_millis(750));
        d.scope(async {
            assert_eq!(
                Deadline::for_call(Duration::from_secs(5)).remaining(),
                Duration::from_millis(750)
            );
            assert_eq!(
                Deadline::for_call(Duration::from_millis(100)).remaining(),
                Duration::from_millis(100)
            );
            Deadline::after(Duration::from_secs(60))
                .scope(async {
                    assert_eq!(Deadline::current().unwrap().remaining(), Duration::from_millis(750));
                })
                .await;
        })
        .await;
        assert!(Deadline::current().is_none());
        let mut bad = HeaderMap::new();
        bad.insert(DEADLINE_HEADER.clone(), HeaderValue::from_static("soon"));
        assert!(Deadline::from_headers(&bad).is_none());
    }

    #[test]
    fn a_grpc_timeout_is_a_deadline_too() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_static("1500m"));
        let left = Deadline::from_headers(&headers).unwrap().remaining();
        assert!(
            left > Duration::from_millis(1400) && left <= Duration::from_millis(1500),
            "{left:?}"
        );
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(grpc_timeout("5x"), None);
        assert_eq!(grpc_timeout("m"), None);
        // Flotilla's own header wins.
        headers.insert("x-flotilla-deadline-ms", HeaderValue::from_static("100"));
        assert!(Deadline::from_headers(&headers).unwrap().remaining() <= Duration::from_millis(100));
    }
}

/// Gives each call an overall time limit — its own `timeout`, or what is left of the
/// caller's deadline if that is sooner — sends the time left in the header, and fails the
/// call with `DeadlineExceeded` when it runs out.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    timeout: Duration,
    service: std::sync::Arc<str>,
}

impl DeadlineLayer {
    /// Calls get at most `timeout`; `service` names them in errors.
    pub fn new(timeout: Duration, service: impl AsRef<str>) -> Self {
        Self {
            timeout,
            service: std::sync::Arc::from(service.as_ref()),
        }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            timeout: self.timeout,
            service: self.service.clone(),
        }
    }
}

/// A service whose calls carry a deadline.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    timeout: Duration,
    service: std::sync::Arc<str>,
}

impl<S> DeadlineService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Error = super::CallError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = super::CallError;
    type Future = super::CallFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let deadline = request.extensions().get::<Deadline>().copied().map_or_else(
            || Deadline::for_call(self.timeout),
            |d| d.min(Deadline::for_call(self.timeout)),
        );
        let service = self.service.clone();
        if deadline.passed() {
            return Box::pin(async move {
                Err(super::CallError::DeadlineExceeded {
                    service: service.to_string(),
                })
            });
        }
        deadline.to_headers(request.headers_mut());
        request.extensions_mut().insert(deadline);
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.0, call).await {
                Ok(result) => result,
                Err(_) => Err(super::CallError::DeadlineExceeded {
                    service: service.to_string(),
                }),
            }
        })
    }
}
