//! A concurrency limit that finds itself (Netflix's gradient limit): it lets as many requests
//! run at once as keep latency near its long-run level. When the latest latency rises above
//! the long-run one, requests are queueing inside the service, and the limit shrinks by the
//! ratio; while they stay level and the limit is in use, it grows by a little queue's worth.
//! Requests over the limit wait in line (first come, first served) for at most the queue
//! age, then are refused with `503` and `Retry-After`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Overloaded;

/// How a [`ConcurrencyLimit`] starts and where it stays.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Requests at once to begin with.
    pub initial: usize,
    /// The least it shrinks to.
    pub min: usize,
    /// The most it grows to.
    pub max: usize,
    /// How long a request over the limit may wait for a place before it is refused.
    pub max_queue_age: Duration,
    /// How much slower than the long-run latency the latest may be before the limit shrinks.
    pub tolerance: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            initial: 32,
            min: 8,
            max: 1_000,
            max_queue_age: Duration::from_millis(250),
            tolerance: 1.5,
        }
    }
}

/// A self-adjusting limit on requests at once, with a line of bounded age. Clones share it.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LimitConfig,
    places: Arc<Semaphore>,
    gradient: Mutex<Gradient>,
}

/// The limit's arithmetic, apart from the places it hands out.
#[derive(Debug)]
pub(super) struct Gradient {
    pub(super) limit: f64,
    /// Places the semaphore holds for the limit (`round(limit)`, less those still to take
    /// back as requests finish).
    granted: usize,
    /// Places to take back as requests finish: the limit shrank below those handed out.
    owed: usize,
    in_flight: usize,
    /// The long-run latency, seconds: an average over about 600 requests.
    long_rtt: Option<f64>,
    samples: u64,
}

/// Samples the long-run latency is averaged over.
const LONG_WINDOW: f64 = 600.0;
/// How much of a new limit is taken at once.
const SMOOTHING: f64 = 0.2;

impl ConcurrencyLimit {
    /// A limit as `config` says.
    pub fn new(config: LimitConfig) -> Self {
        let initial = config.initial.clamp(config.min.max(1), config.max.max(1));
        Self {
            inner: Arc::new(Inner {
                places: Arc::new(Semaphore::new(initial)),
                gradient: Mutex::new(Gradient {
                    limit: initial as f64,
                    granted: initial,
                    owed: 0,
                    in_flight: 0,
                    long_rtt: None,
                    samples: 0,
                }),
                config,
            }),
        }
    }

    pub(super) fn gradient(&self) -> MutexGuard<'_, Gradient> {
        self.inner
            .gradient
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests that may run at once now.
    pub fn limit(&self) -> usize {
        self.gradient().limit.round() as usize
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.gradient().in_flight
    }

    /// A place for one request: at once, or after waiting in line at most the queue age;
    /// otherwise refused.
    pub async fn acquire(&self) -> Result<Permit, Overloaded> {
        let age = self.inner.config.max_queue_age;
        let place = match self.inner.places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => match tokio::time::timeout(age, self.inner.places.clone().acquire_owned()).await {
                Ok(Ok(place)) => place,
                // Timed out in line (the semaphore is never closed).
                _ => {
                    let (limit, in_flight) = {
                        let g = self.gradient();
                        (g.limit.round() as usize, g.in_flight)
                    };
                    return Err(Overloaded {
                        what: format!(
                            "{in_flight} requests are running (the limit is {limit}) and this one waited {} ms in line",
                            age.as_millis()
                        ),
                        retry_after: Duration::from_secs(1),
                    });
                }
            },
        };
        self.gradient().in_flight += 1;
        Ok(Permit {
            limit: self.clone(),
            place: Some(place),
            started: Instant::now(),
        })
    }

    /// A request that held a place for `rtt` finished: move the limit, and give its place
    /// back (or keep it, when the limit shrank below the places handed out).
    fn finished(&self, place: OwnedSemaphorePermit, rtt: Duration) {
        let config = &self.inner.config;
        let mut g = self.gradient();
        let was_in_flight = g.in_flight;
        g.in_flight = g.in_flight.saturating_sub(1);
        g.sample(rtt.as_secs_f64(), was_in_flight, config);
        let wanted = g.limit.round() as usize;
        // Grow: hand out more places (first from what is still owed).
        while g.granted < wanted {
            if g.owed > 0 {
                g.owed -= 1;
            } else {
                self.inner.places.add_permits(1);
            }
            g.granted += 1;
        }
        // Shrink: owe places, taken back as requests finish.
        if g.granted > wanted {
            g.owed += g.granted - wanted;
            g.granted = wanted;
        }
        if g.owed > 0 {
            g.owed -= 1;
            place.forget();
        } else {
            drop(place);
        }
    }
}

impl Gradient {
    /// Netflix's gradient2: the long-run latency over the latest, within [0.5, 1], scales the
    /// limit; a queue of √limit is allowed on top; a fifth of the new limit is taken. A limit
    /// not half in use is left alone: its latency says nothing about more.
    pub(super) fn sample(&mut self, rtt: f64, in_flight: usize, config: &LimitConfig) {
        if rtt <= 0.0 {
            return;
        }
        self.samples += 1;
        let long = match self.long_rtt {
            None => rtt,
            Some(long) => {
                let n = (self.samples as f64).min(LONG_WINDOW);
                long + (rtt - long) / n
            }
        };
        // After a long quiet stretch the long-run average may sit far above today's: let it
        // come down faster than it would by averaging alone.
        let long = if long / rtt > 2.0 { long * 0.95 } else { long };
        self.long_rtt = Some(long);
        if (in_flight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (config.tolerance * long / rtt).clamp(0.5, 1.0);
        let queue = self.limit.sqrt();
        let wanted = self.limit * gradient + queue;
        let next = self.limit * (1.0 - SMOOTHING) + wanted * SMOOTHING;
        self.limit = next.clamp(config.min.max(1) as f64, config.max.max(1) as f64);
    }
}

/// A request's place under a [`ConcurrencyLimit`]: given back, with the request's latency,
/// when dropped.
#[derive(Debug)]
pub struct Permit {
    limit: ConcurrencyLimit,
    place: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.limit.finished(place, self.started.elapsed());
        }
    }
}

/// `router`'s routes behind the limit: each request holds a place until its answer is
/// ready; one refused is answered `503` with `Retry-After` and never reaches a handler. Routes
/// merged in later (health, metrics) are not limited.
pub fn limited<S>(router: axum::Router<S>, limit: ConcurrencyLimit) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(limit, admit))
}

async fn admit(State(limit): State<ConcurrencyLimit>, request: Request, next: Next) -> Response {
    match limit.acquire().await {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(refused) => refused.into_response(),
    }
}
