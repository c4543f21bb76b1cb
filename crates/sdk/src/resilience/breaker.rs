//! A circuit breaker (Resilience4j's model): a sliding window of outcomes, counted or timed;
//! it opens when the failure rate or the slow-call rate crosses its threshold, fails fast
//! while open, then lets a few probes through (half-open) and closes if they succeed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Over which calls the rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls.
    Count(u32),
    /// The calls of the last period.
    Time(Duration),
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The window the rates are computed over.
    pub window: SlidingWindow,
    /// No verdict before this many calls are in the window.
    pub minimum_calls: u32,
    /// Open when at least this share of the window failed (0.0 to 1.0).
    pub failure_rate: f64,
    /// A call slower than this counts as slow.
    pub slow_call_duration: Duration,
    /// Open when at least this share of the window was slow.
    pub slow_call_rate: f64,
    /// How long to fail fast before probing.
    pub open_for: Duration,
    /// Probes let through when half-open; all must succeed to close.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count(20),
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call_duration: Duration::from_secs(5),
            slow_call_rate: 1.0,
            open_for: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail fast.
    Open,
    /// A few probes decide whether to close or open again.
    HalfOpen,
}

impl BreakerState {
    /// The state as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: Instant,
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
enum Inner {
    Closed { outcomes: VecDeque<Outcome> },
    Open { until: Instant },
    HalfOpen { issued: u32, succeeded: u32 },
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct BreakerMetrics {
    /// Times the breaker opened.
    pub opened: AtomicU64,
    /// Times it closed again.
    pub closed: AtomicU64,
    /// Calls refused while open.
    pub rejected: AtomicU64,
}

/// A circuit breaker for one service.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    metrics: BreakerMetrics,
}

/// Leave to make one call; report how it went with [`Permit::record`].
#[derive(Debug)]
#[must_use = "a permit reports the call's outcome"]
pub struct Permit {
    started: Instant,
    probe: bool,
}

impl CircuitBreaker {
    /// A closed breaker named after what it protects (for logs and metrics).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            config,
            inner: Mutex::new(Inner::Closed {
                outcomes: VecDeque::new(),
            }),
            metrics: BreakerMetrics::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Counters for metrics.
    pub fn metrics(&self) -> &BreakerMetrics {
        &self.metrics
    }

    fn transition(&self, inner: &mut Inner, to: Inner) {
        let from = match inner {
            Inner::Closed { .. } => "closed",
            Inner::Open { .. } => "open",
            Inner::HalfOpen { .. } => "half-open",
        };
        let label = match &to {
            Inner::Closed { .. } => {
                self.metrics.closed.fetch_add(1, Ordering::Relaxed);
                "closed"
            }
            Inner::Open { .. } => {
                self.metrics.opened.fetch_add(1, Ordering::Relaxed);
                "open"
            }
            Inner::HalfOpen { .. } => "half-open",
        };
        tracing::warn!(breaker = %self.name, from, to = label, "circuit breaker changed state");
        *inner = to;
    }

    /// Asks to make a call: a permit, or how long until the breaker probes again.
    pub fn try_acquire(&self) -> Result<Permit, Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => Ok(Permit {
                started: now,
                probe: false,
            }),
            Inner::Open { until } => {
                if now >= *until {
                    self.transition(
                        &mut inner,
                        Inner::HalfOpen {
                            issued: 1,
                            succeeded: 0,
                        },
                    );
                    Ok(Permit {
                        started: now,
                        probe: true,
                    })
                } else {
                    self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(*until - now)
                }
            }
            Inner::HalfOpen { issued, .. } => {
                if *issued < self.config.half_open_calls {
                    *issued += 1;
                    Ok(Permit {
                        started: now,
                        probe: true,
                    })
                } else {
                    self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(Duration::ZERO)
                }
            }
        }
    }

    /// Reports a call's outcome.
    pub fn record(&self, permit: Permit, failed: bool) {
        let now = Instant::now();
        let slow = now.duration_since(permit.started) >= self.config.slow_call_duration;
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { outcomes } => {
                if permit.probe {
                    // A probe from before the breaker closed: already decided.
                    return;
                }
                outcomes.push_back(Outcome { at: now, failed, slow });
                match self.config.window {
                    SlidingWindow::Count(n) => {
                        while outcomes.len() > n as usize {
                            outcomes.pop_front();
                        }
                    }
                    SlidingWindow::Time(period) => {
                        while outcomes.front().is_some_and(|o| now.duration_since(o.at) > period) {
                            outcomes.pop_front();
                        }
                    }
                }
                let calls = outcomes.len() as f64;
                if outcomes.len() >= self.config.minimum_calls.max(1) as usize {
                    let failures = outcomes.iter().filter(|o| o.failed).count() as f64;
                    let slows = outcomes.iter().filter(|o| o.slow).count() as f64;
                    if failures / calls >= self.config.failure_rate || slows / calls >= self.config.slow_call_rate {
                        tracing::warn!(
                            breaker = %self.name,
                            failure_rate = failures / calls,
                            slow_rate = slows / calls,
                            calls = outcomes.len(),
                            "opening"
                        );
                        self.transition(
                            &mut inner,
                            Inner::Open {
                                until: now + self.config.open_for,
                            },
                        );
                    }
                }
            }
            Inner::Open { .. } => {}
            Inner::HalfOpen { succeeded, .. } => {
                if !permit.probe {
                    return;
                }
                if failed || slow {
                    self.transition(
                        &mut inner,
                        Inner::Open {
                            until: now + self.config.open_for,
                        },
                    );
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_calls {
                        self.transition(
                            &mut inner,
                            Inner::Closed {
                                outcomes: VecDeque::new(),
                            },
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(window: SlidingWindow) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerConfig {
                window,
                minimum_calls: 4,
                failure_rate: 0.5,
                slow_call_duration: Duration::from_secs(1),
                slow_call_rate: 0.75,
                open_for: Duration::from_secs(5),
                half_open_calls: 2,
            },
        )
    }

    fn call(b: &CircuitBreaker, failed: bool) -> bool {
        match b.try_acquire() {
            Ok(p) => {
                b.record(p, failed);
                true
            }
            Err(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_then_probes_and_closes() {
        let b = breaker(SlidingWindow::Count(10));
        assert!(call(&b, false));
        assert!(call(&b, true));
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Closed, "3 calls are below the minimum");
        assert!(call(&b, true));
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed");
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(5));
        assert_eq!(b.metrics().rejected.load(Ordering::Relaxed), 1);

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only two probes");
        b.record(p1, false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(p2, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.metrics().opened.load(Ordering::Relaxed), 1);
        assert_eq!(b.metrics().closed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let b = breaker(SlidingWindow::Count(4));
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(call(&b, true));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let b = breaker(SlidingWindow::Count(4));
        for _ in 0..4 {
            let p = b.try_acquire().unwrap();
            tokio::time::advance(Duration::from_millis(1_500)).await;
            b.record(p, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_old_failures() {
        let b = breaker(SlidingWindow::Time(Duration::from_secs(10)));
        call(&b, true);
        call(&b, true);
        call(&b, true);
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, true);
        call(&b, false);
        call(&b, false);
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Closed, "only 1 of the last 4 calls failed");
    }
}

/// Puts a [`CircuitBreaker`] in front of a service. A call fails when it errs for a reason
/// of the upstream's (not a bulkhead or breaker of ours) or answers 5xx.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: std::sync::Arc<CircuitBreaker>,
    service: std::sync::Arc<str>,
}

impl BreakerLayer {
    /// A layer sharing `breaker`; `service` names it in errors.
    pub fn new(breaker: std::sync::Arc<CircuitBreaker>, service: impl AsRef<str>) -> Self {
        Self {
            breaker,
            service: std::sync::Arc::from(service.as_ref()),
        }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            service: self.service.clone(),
        }
    }
}

/// A service behind a circuit breaker.
#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: std::sync::Arc<CircuitBreaker>,
    service: std::sync::Arc<str>,
}

impl<S> BreakerService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, R> tower::Service<Req> for BreakerService<S>
where
    S: tower::Service<Req, Response = http::Response<R>, Error = super::CallError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = super::CallError;
    type Future = super::CallFuture<http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(retry_after) => {
                let err = super::CallError::CircuitOpen {
                    service: self.service.to_string(),
                    retry_after,
                };
                return Box::pin(async move { Err(err) });
            }
        };
        let breaker = self.breaker.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let failed = match &result {
                Ok(response) => response.status().is_server_error(),
                Err(err) => !matches!(err.origin(), super::Origin::Internal),
            };
            breaker.record(permit, failed);
            result
        })
    }
}
