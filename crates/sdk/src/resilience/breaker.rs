//! A circuit breaker (Resilience4j's model): a sliding window of outcomes, counted or timed;
//! it opens when the failure rate or the slow-call rate crosses its threshold, fails fast
//! while open, then lets a few probes through (half-open) and closes if they succeed.
//!
//! It judges the upstream, not the caller: a call during which this process itself stalled
//! (stopped, starved, its runtime lagging: [`super::stall`]) is not counted. And it refuses
//! no longer than a fault lasts: it opens briefly at first (1 s), longer only when it opens
//! again without having closed (doubling, to 5 s: a paused or overloaded service that comes
//! back is found within seconds), and it probes at once when the service's set of instances
//! changes (the restarted instance has registered).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::stall::StallMark;

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
    /// How long to fail fast before probing, the first time it opens.
    pub open_for: Duration,
    /// The longest it stays open: each opening without a close in between doubles the time.
    pub max_open_for: Duration,
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
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(5),
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
    Closed {
        outcomes: VecDeque<Outcome>,
    },
    /// Failing fast until `until`, or until the instances differ from `instances`.
    Open {
        until: Instant,
        instances: Option<u64>,
    },
    HalfOpen {
        issued: u32,
        succeeded: u32,
    },
}

/// The state, and how many times it opened since it last closed.
#[derive(Debug)]
struct Locked {
    inner: Inner,
    openings: u32,
}

/// Tells which instances a service has now (a digest of their ids), so an open breaker can
/// probe as soon as that changes.
pub type InstancesDigest = Box<dyn Fn() -> u64 + Send + Sync>;

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
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Locked>,
    metrics: BreakerMetrics,
    instances: Option<InstancesDigest>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Leave to make one call; report how it went with [`CircuitBreaker::record`].
#[derive(Debug)]
#[must_use = "a permit reports the call's outcome"]
pub struct Permit {
    started: Instant,
    probe: bool,
    stall: StallMark,
}

impl CircuitBreaker {
    /// A closed breaker named after what it protects (for logs and metrics).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            config,
            inner: Mutex::new(Locked {
                inner: Inner::Closed {
                    outcomes: VecDeque::new(),
                },
                openings: 0,
            }),
            metrics: BreakerMetrics::default(),
            instances: None,
        }
    }

    /// Probes as soon as `digest` changes while open: a new instance (the restarted one)
    /// gets a try at once rather than after the open time.
    pub fn probe_when_instances_change(mut self, digest: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.instances = Some(Box::new(digest));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Locked> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an open breaker may probe now: its time is up, or its instances changed.
    fn may_probe(&self, until: Instant, instances: Option<u64>, now: Instant) -> bool {
        now >= until
            || instances
                .zip(self.instances.as_ref())
                .is_some_and(|(then, digest)| digest() != then)
    }

    /// How long it opens this time: doubled for each opening since it last closed.
    fn open_time(&self, openings: u32) -> Duration {
        self.config
            .open_for
            .saturating_mul(1u32 << openings.min(16))
            .min(self.config.max_open_for.max(self.config.open_for))
    }

    /// Opens (again).
    fn open(&self, locked: &mut Locked, now: Instant) {
        let until = now + self.open_time(locked.openings);
        locked.openings = locked.openings.saturating_add(1);
        let instances = self.instances.as_ref().map(|digest| digest());
        self.transition(&mut locked.inner, Inner::Open { until, instances });
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let locked = self.lock();
        match &locked.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until, instances } if !self.may_probe(*until, *instances, Instant::now()) => {
                BreakerState::Open
            }
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
        let permit = |probe| Permit {
            started: now,
            probe,
            stall: StallMark::now(),
        };
        let mut locked = self.lock();
        match &mut locked.inner {
            Inner::Closed { .. } => Ok(permit(false)),
            Inner::Open { until, instances } => {
                if self.may_probe(*until, *instances, now) {
                    self.transition(
                        &mut locked.inner,
                        Inner::HalfOpen {
                            issued: 1,
                            succeeded: 0,
                        },
                    );
                    Ok(permit(true))
                } else {
                    self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(*until - now)
                }
            }
            Inner::HalfOpen { issued, .. } => {
                if *issued < self.config.half_open_calls {
                    *issued += 1;
                    Ok(permit(true))
                } else {
                    self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    Err(Duration::ZERO)
                }
            }
        }
    }

    /// A call given leave ended without an outcome (its caller gave up and dropped it): it is
    /// not counted, and a probe's slot is given back, so a half-open breaker whose probes
    /// were abandoned lets new ones through instead of refusing for good.
    pub fn abandon(&self, permit: Permit) {
        if !permit.probe {
            return;
        }
        if let Inner::HalfOpen { issued, .. } = &mut self.lock().inner {
            *issued = issued.saturating_sub(1);
        }
    }

    /// Reports a call's outcome. A failure or a slow call during which this process itself
    /// stalled is not the upstream's doing: it is not counted (a probe's slot is given back).
    pub fn record(&self, permit: Permit, failed: bool) {
        let now = Instant::now();
        let slow = now.duration_since(permit.started) >= self.config.slow_call_duration;
        let excused = (failed || slow) && permit.stall.excuses();
        let mut locked = self.lock();
        if excused {
            tracing::debug!(breaker = %self.name, stalled = ?permit.stall.stalled(), "a call through a stall of this process is not counted");
            if let (Inner::HalfOpen { issued, .. }, true) = (&mut locked.inner, permit.probe) {
                *issued = issued.saturating_sub(1);
            }
            return;
        }
        match &mut locked.inner {
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
                        self.open(&mut locked, now);
                    }
                }
            }
            Inner::Open { .. } => {}
            Inner::HalfOpen { succeeded, .. } => {
                if !permit.probe {
                    return;
                }
                if failed || slow {
                    self.open(&mut locked, now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_calls {
                        locked.openings = 0;
                        self.transition(
                            &mut locked.inner,
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
                max_open_for: Duration::from_secs(30),
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
    async fn each_opening_without_a_close_doubles_the_open_time_and_a_close_starts_over() {
        let b = breaker(SlidingWindow::Count(4));
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(call(&b, true), "the probe fails");
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        call(&b, true);
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(20)).await;
        call(&b, true);
        assert_eq!(b.try_acquire().unwrap_err(), Duration::from_secs(30), "capped");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(call(&b, false) && call(&b, false));
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(
            b.try_acquire().unwrap_err(),
            Duration::from_secs(5),
            "from the start again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_probes_at_once_when_the_services_instances_change() {
        let instances = std::sync::Arc::new(AtomicU64::new(1));
        let seen = instances.clone();
        let b = CircuitBreaker::new(
            "test",
            BreakerConfig {
                minimum_calls: 4,
                ..BreakerConfig::default()
            },
        )
        .probe_when_instances_change(move || seen.load(Ordering::Relaxed));
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
        // The only instance restarted and registered again under a new id.
        instances.store(2, Ordering::Relaxed);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(call(&b, false), "a probe goes through before the open time is up");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_whose_callers_gave_up_leave_their_slots_to_new_probes() {
        let b = breaker(SlidingWindow::Count(4));
        for _ in 0..4 {
            call(&b, true);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let abandoned: Vec<Permit> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
        assert!(b.try_acquire().is_err(), "every probe slot is out");
        for permit in abandoned {
            b.abandon(permit);
        }
        assert!(call(&b, false) && call(&b, false), "new probes go through");
        assert_eq!(b.state(), BreakerState::Closed);
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

/// A permit whose call is under way; dropped unfinished, it is abandoned (not left holding a
/// probe's slot).
struct Pending {
    breaker: std::sync::Arc<CircuitBreaker>,
    permit: Option<Permit>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.abandon(permit);
        }
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
        let mut pending = Pending {
            breaker: self.breaker.clone(),
            permit: Some(permit),
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let failed = match &result {
                Ok(response) => super::server_failure(response.status(), response.headers()),
                // The upstream's failures, and its slowness; a caller's bad request says
                // nothing of the upstream's health.
                Err(err) => {
                    err.origin() == super::Origin::Upstream || matches!(err, super::CallError::DeadlineExceeded { .. })
                }
            };
            if let Some(permit) = pending.permit.take() {
                pending.breaker.record(permit, failed);
            }
            result
        })
    }
}
