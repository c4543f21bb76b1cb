//! Per-endpoint statistics: in-flight calls, peak-EWMA latency, and passive outlier
//! ejection. A refused connection ejects at once (the instance is gone or not listening);
//! other failures (5xx, resets, timeouts) eject after a run of them, as Envoy's
//! consecutive-5xx detection does. Ejection grows with repeats and never takes out more than
//! a set share of the endpoints.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When to eject an endpoint, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Refused or failed connections in a row that eject (1: at once).
    pub consecutive_connect_failures: u32,
    /// Other failures in a row that eject (Envoy: 5).
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times this (Envoy: 30 s).
    pub base_ejection: Duration,
    /// The longest ejection (Envoy: 300 s).
    pub max_ejection: Duration,
    /// Never eject more than this share of the endpoints, in percent (Envoy: 10; here 50,
    /// since a service has few instances and one dead among two must still go).
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_connect_failures: 1,
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// What kind of failure an endpoint had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made.
    Connect,
    /// A 5xx answer, a reset, or no answer in time.
    Other,
}

#[derive(Debug)]
struct Health {
    /// Peak-EWMA latency in nanoseconds, and when it was last updated.
    rtt_ns: f64,
    stamp: Instant,
    consecutive_connect: u32,
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// The statistics of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    /// Sum of the start times of the calls in flight (nanoseconds after `base`): with the
    /// count, it gives their mean age.
    pending_starts: AtomicU64,
    base: Instant,
    /// The end of the current ejection (nanoseconds after `base`; 0: none), readable on
    /// every pick without the lock.
    ejected_until: AtomicU64,
    health: Mutex<Health>,
}

impl EndpointStats {
    /// Fresh statistics, assuming `default_rtt` until the first answer.
    pub fn new(default_rtt: Duration) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            pending_starts: AtomicU64::new(0),
            base: Instant::now(),
            ejected_until: AtomicU64::new(0),
            health: Mutex::new(Health {
                rtt_ns: default_rtt.as_nanos() as f64,
                stamp: Instant::now(),
                consecutive_connect: 0,
                consecutive: 0,
                ejections: 0,
                ejected_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the endpoint is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && self.offset(now) < until
    }

    /// Whether its last connection attempts were refused (or not made): the instance is gone
    /// or not listening, until it answers again.
    pub fn refusing(&self) -> bool {
        self.lock().consecutive_connect > 0
    }

    /// How many times it has been ejected (in its current run of trouble).
    pub fn ejections(&self) -> u32 {
        self.lock().ejections
    }

    /// The load score P2C compares: latency × (in-flight + 1). A hung endpoint piles up
    /// in-flight calls, so it loses every comparison long before its timeouts fire. The
    /// latency decays while nothing is observed (Finagle's peak EWMA), so an endpoint that
    /// was slow once is tried again later instead of being starved forever.
    ///
    /// Calls still waiting count as evidence too: if they have been out longer than the
    /// estimate on average, the endpoint is at least that slow now (a hung instance answers
    /// nothing, so its estimate would otherwise never rise).
    pub fn load(&self, decay: Duration) -> f64 {
        let now = Instant::now();
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let mut h = self.lock();
        let elapsed = now.saturating_duration_since(h.stamp).as_secs_f64();
        h.rtt_ns *= (-elapsed / decay.as_secs_f64().max(1e-3)).exp();
        h.stamp = now;
        let mut rtt = h.rtt_ns;
        if in_flight > 0 {
            let mean_start = self.pending_starts.load(Ordering::Relaxed) as f64 / f64::from(in_flight);
            let age = now.saturating_duration_since(self.base).as_nanos() as f64 - mean_start;
            rtt = rtt.max(age);
        }
        rtt * f64::from(in_flight + 1)
    }

    fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The latency estimate, in milliseconds.
    pub fn rtt_ms(&self) -> f64 {
        self.lock().rtt_ns / 1e6
    }

    pub(crate) fn started(&self, at: Instant) {
        self.pending_starts.fetch_add(self.offset(at), Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, started: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pending_starts.fetch_sub(self.offset(started), Ordering::Relaxed);
    }

    pub(crate) fn cancelled(&self, started: Instant) {
        self.finished(started);
    }

    pub(crate) fn success(&self, started: Instant, decay: Duration, config: &OutlierConfig) {
        self.finished(started);
        let rtt = started.elapsed();
        let now = Instant::now();
        let mut h = self.lock();
        let rtt = rtt.as_nanos() as f64;
        // Peak EWMA: jump up to a worse latency at once, drift down to a better one.
        if rtt > h.rtt_ns {
            h.rtt_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(h.stamp).as_secs_f64();
            let w = (-elapsed / decay.as_secs_f64().max(1e-3)).exp();
            h.rtt_ns = h.rtt_ns * w + rtt * (1.0 - w);
        }
        h.stamp = now;
        h.consecutive = 0;
        h.consecutive_connect = 0;
        if h.ejections > 0 && h.ejected_until.is_none_or(|until| now >= until + config.base_ejection) {
            // Healthy for a while after its last ejection: the next trouble starts from the
            // base time again. Until then, a relapse is ejected for longer.
            h.ejections = 0;
            h.ejected_until = None;
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns the end of a new ejection if this one caused it.
    pub(crate) fn failure(
        &self,
        failure: Failure,
        started: Instant,
        config: &OutlierConfig,
        may_eject: bool,
    ) -> Option<Instant> {
        self.finished(started);
        let now = Instant::now();
        let mut h = self.lock();
        // Time spent on a failed call (a timeout, above all) counts as latency too.
        let waited = now.saturating_duration_since(started).as_nanos() as f64;
        if waited > h.rtt_ns {
            h.rtt_ns = waited;
            h.stamp = now;
        }
        let tripped = match failure {
            Failure::Connect => {
                h.consecutive_connect += 1;
                h.consecutive_connect >= config.consecutive_connect_failures
            }
            Failure::Other => {
                h.consecutive += 1;
                h.consecutive >= config.consecutive_failures
            }
        };
        let already = h.ejected_until.is_some_and(|until| now < until);
        if !tripped || already || !may_eject {
            return None;
        }
        h.ejections += 1;
        let time = config
            .base_ejection
            .saturating_mul(h.ejections)
            .min(config.max_ejection);
        let until = now + time;
        h.ejected_until = Some(until);
        self.ejected_until.store(self.offset(until).max(1), Ordering::Relaxed);
        h.consecutive = 0;
        h.consecutive_connect = 0;
        Some(until)
    }
}
