//! The settings of a resilient stack. Every default is in `docs/resilience.md`, with its
//! reason and the Resilience4j / Envoy / Eureka default it replaces.

use std::time::Duration;

use crate::balance::BalanceConfig;
use crate::resilience::{BreakerConfig, BudgetConfig, RetryPolicy};

/// Settings for calls to one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// A whole call, retries included, must finish within this (or the caller's deadline).
    pub timeout: Duration,
    /// One attempt must get response headers within this, or it is abandoned and retried.
    pub per_try_timeout: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// How much retries may add to the load.
    pub budget: BudgetConfig,
    /// When to stop calling a failing destination.
    pub breaker: BreakerConfig,
    /// Calls in flight at most (the bulkhead).
    pub max_in_flight: usize,
    /// Balancing and outlier ejection.
    pub balance: BalanceConfig,
    /// Speak HTTP/2 (prior knowledge, h2c) to the endpoints, as gRPC needs; the pool must be
    /// one from [`crate::client::pool_h2`].
    pub http2: bool,
    /// With no usable instance (the only one restarting), wait this long for one to register
    /// before failing; zero fails at once.
    pub wait_for_instance: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            per_try_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            max_in_flight: 1024,
            balance: BalanceConfig::default(),
            http2: false,
            wait_for_instance: Duration::from_secs(2),
        }
    }
}
