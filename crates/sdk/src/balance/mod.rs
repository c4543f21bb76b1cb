//! Load balancing over a service's endpoints, shared by the gateway and the service client:
//! power of two choices on peak-EWMA latency (the default, as linkerd2-proxy and Finagle),
//! round robin, or consistent hashing on a key; instance weights and zone preference from
//! registry metadata; and passive outlier ejection on the very request that fails.

mod endpoint;
mod outlier;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

pub use endpoint::Endpoint;
pub use outlier::{EndpointStats, Failure, OutlierConfig};

/// How the next endpoint is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Two random endpoints, the less loaded wins (latency × in-flight ÷ weight).
    #[default]
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
    /// The same key goes to the same endpoint while it is there (rendezvous hashing), so
    /// sessions stick and a leaving endpoint moves only its own keys.
    ConsistentHash,
}

/// Balancer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    /// How endpoints are chosen.
    pub strategy: Strategy,
    /// When to take an endpoint out of rotation.
    pub outlier: OutlierConfig,
    /// Prefer endpoints whose `zone` metadata matches this, while any is usable.
    pub local_zone: Option<String>,
    /// The latency assumed for an endpoint before it has answered (linkerd: 30 ms).
    pub default_rtt: Duration,
    /// How fast old latencies are forgotten.
    pub decay: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::P2c,
            outlier: OutlierConfig::default(),
            local_zone: None,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

/// A key for consistent hashing, put in a request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKey(pub u64);

impl HashKey {
    /// The key of any hashable value (a header's or cookie's value).
    pub fn of(value: impl Hash) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        HashKey(hasher.finish())
    }
}

struct Known {
    /// Identity of the endpoint list the map was last synced with (its address and length).
    list: (usize, usize),
    stats: HashMap<String, Arc<EndpointStats>>,
}

/// Chooses endpoints for one service (or route) and keeps their statistics.
pub struct Balancer {
    config: BalanceConfig,
    known: Mutex<Known>,
    next: AtomicUsize,
    rng: Mutex<SmallRng>,
    ejections: Arc<AtomicU64>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One chosen endpoint. Report the outcome with [`Pick::success`] or [`Pick::failure`];
/// a pick dropped without either (a cancelled call) only gives its in-flight slot back.
#[derive(Debug)]
pub struct Pick {
    /// The endpoint to send to.
    pub endpoint: Endpoint,
    stats: Arc<EndpointStats>,
    started: Instant,
    peers: Vec<Arc<EndpointStats>>,
    config: OutlierConfig,
    decay: Duration,
    reported: bool,
    ejections: Arc<AtomicU64>,
    stall: crate::resilience::stall::StallMark,
}

impl Pick {
    /// The call got an answer (headers) that is not a failure.
    pub fn success(mut self) {
        self.reported = true;
        self.stats.success(self.started, self.decay, &self.config);
    }

    /// The call failed in a way that counts against the endpoint, unless this process
    /// itself stalled while the call was out (then the failure may be its own: not counted).
    pub fn failure(mut self, failure: Failure) {
        self.reported = true;
        if self.stall.excuses() {
            self.stats.cancelled(self.started);
            return;
        }
        let ejected = self.peers.iter().filter(|p| p.is_ejected(Instant::now())).count();
        let may_eject = ((ejected + 1) * 100) <= self.peers.len() * usize::from(self.config.max_ejected_percent);
        if let Some(until) = self.stats.failure(failure, self.started, &self.config, may_eject) {
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                endpoint = %self.endpoint.id,
                ?failure,
                ejected_for = ?until.saturating_duration_since(Instant::now()),
                "endpoint ejected"
            );
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.reported {
            self.stats.cancelled(self.started);
        }
    }
}

impl Balancer {
    /// A balancer with a random seed.
    pub fn new(config: BalanceConfig) -> Self {
        Self::with_seed(config, rand::random())
    }

    /// A balancer whose random choices repeat for a given seed (tests, simulations).
    pub fn with_seed(config: BalanceConfig, seed: u64) -> Self {
        Self {
            config,
            known: Mutex::new(Known {
                list: (0, 0),
                stats: HashMap::new(),
            }),
            next: AtomicUsize::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            ejections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Ejections so far, over all endpoints (for metrics).
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The statistics of the endpoints seen last (for admin pages and tests).
    pub fn stats(&self, id: &str) -> Option<Arc<EndpointStats>> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .get(id)
            .cloned()
    }

    /// Chooses an endpoint, avoiding those in `avoid` (already tried by this call) and those
    /// ejected, unless that would leave none. `None` only when `endpoints` is empty.
    pub fn pick(&self, endpoints: &[Endpoint], key: Option<HashKey>, avoid: &[String]) -> Option<Pick> {
        if endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        let stats: Vec<Arc<EndpointStats>> = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            let identity = (endpoints.as_ptr() as usize, endpoints.len());
            if known.list != identity {
                let mut fresh = HashMap::with_capacity(endpoints.len());
                for e in endpoints {
                    let s = known
                        .stats
                        .get(&e.id)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(EndpointStats::new(self.config.default_rtt)));
                    fresh.insert(e.id.clone(), s);
                }
                known.stats = fresh;
                known.list = identity;
            }
            endpoints
                .iter()
                .map(|e| {
                    known
                        .stats
                        .get(&e.id)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(EndpointStats::new(self.config.default_rtt)))
                })
                .collect()
        };

        // Usable: not tried yet by this call, not ejected, in our zone if any is.
        let all: Vec<usize> = (0..endpoints.len()).collect();
        let fresh: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !avoid.contains(&endpoints[*i].id))
            .collect();
        let healthy: Vec<usize> = fresh.iter().copied().filter(|i| !stats[*i].is_ejected(now)).collect();
        let mut candidates = if !healthy.is_empty() {
            healthy
        } else if !fresh.is_empty() {
            fresh
        } else {
            all
        };
        if let Some(zone) = &self.config.local_zone {
            let local: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|i| endpoints[*i].zone.as_deref() == Some(zone))
                .collect();
            if !local.is_empty() {
                candidates = local;
            }
        }

        let chosen = match (self.config.strategy, key) {
            (Strategy::ConsistentHash, Some(key)) => rendezvous(endpoints, &candidates, key),
            (Strategy::RoundRobin, _) => candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()],
            _ => self.p2c(endpoints, &stats, &candidates),
        };
        stats[chosen].started(now);
        Some(Pick {
            endpoint: endpoints[chosen].clone(),
            stats: stats[chosen].clone(),
            started: now,
            peers: stats,
            config: self.config.outlier,
            decay: self.config.decay,
            reported: false,
            stall: crate::resilience::stall::StallMark::now(),
            ejections: self.ejections.clone(),
        })
    }

    fn p2c(&self, endpoints: &[Endpoint], stats: &[Arc<EndpointStats>], candidates: &[usize]) -> usize {
        if candidates.len() == 1 {
            return candidates[0];
        }
        let (a, b) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let a = rng.random_range(0..candidates.len());
            let mut b = rng.random_range(0..candidates.len() - 1);
            if b >= a {
                b += 1;
            }
            (candidates[a], candidates[b])
        };
        let cost = |i: usize| stats[i].load(self.config.decay) / f64::from(endpoints[i].weight.max(1));
        if cost(a) <= cost(b) {
            a
        } else {
            b
        }
    }
}

/// Weighted rendezvous hashing: each endpoint scores `-weight / ln(h)` for a hash `h` of
/// (key, endpoint) in (0, 1); the highest score wins.
fn rendezvous(endpoints: &[Endpoint], candidates: &[usize], key: HashKey) -> usize {
    let score = |i: usize| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.0.hash(&mut hasher);
        endpoints[i].id.hash(&mut hasher);
        let unit = ((hasher.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -f64::from(endpoints[i].weight.max(1)) / unit.ln()
    };
    candidates
        .iter()
        .copied()
        .max_by(|a, b| score(*a).total_cmp(&score(*b)))
        .unwrap_or(candidates[0])
}

#[cfg(test)]
mod tests;
