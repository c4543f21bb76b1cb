//! The payments service's knobs, from the control plane's config store (scope `payments`),
//! followed live: how the simulated provider behaves, and whose tokens are trusted.

use serde::{Deserialize, Serialize};

/// The simulated provider's behaviour, and the token issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// The share of provider calls that fail as unavailable (0 to 1): chaos on demand.
    pub provider_failure_rate: f64,
    /// How long each provider call takes, in milliseconds.
    pub provider_latency_ms: u64,
    /// Authorizations above this many minor units are declined.
    pub decline_over_minor: i64,
    /// Who issues the tokens payments accepts (read at start).
    pub tokens: flotilla::auth::TrustedIssuer,
    /// How often the reconciliation sweep looks for authorizations no live order stands
    /// behind, in milliseconds (it also looks after each order outcome it reads).
    pub reconcile_every_ms: u64,
    /// How long after an order's outcome its payments are left to the order saga's own
    /// compensation before the sweep voids what still stands, in milliseconds.
    pub reconcile_grace_ms: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            provider_failure_rate: 0.0,
            provider_latency_ms: 20,
            decline_over_minor: 1_000_000,
            tokens: Default::default(),
            reconcile_every_ms: 5_000,
            reconcile_grace_ms: 2_000,
        }
    }
}

impl flotilla::app::Settings for PaymentsConfig {
    /// A configuration payments can run with.
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.provider_failure_rate) {
            return Err(format!(
                "provider_failure_rate must be 0 to 1, not {}",
                self.provider_failure_rate
            ));
        }
        if self.provider_latency_ms > 60_000 {
            return Err("provider_latency_ms must be at most 60000".into());
        }
        if self.decline_over_minor <= 0 {
            return Err("decline_over_minor must be above zero".into());
        }
        if !(100..=3_600_000).contains(&self.reconcile_every_ms) {
            return Err("reconcile_every_ms must be 100 to 3600000".into());
        }
        if self.reconcile_grace_ms > 600_000 {
            return Err("reconcile_grace_ms must be at most 600000".into());
        }
        Ok(())
    }
}
