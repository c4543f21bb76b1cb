//! The shipping service's knobs, from the control plane's config store (scope `shipping`),
//! followed live: how long each step of a shipment takes.

use serde::{Deserialize, Serialize};

/// Step durations, and the token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShippingConfig {
    /// From created to packed.
    pub pack_seconds: u64,
    /// From packed to shipped.
    pub ship_seconds: u64,
    /// From shipped to delivered.
    pub deliver_seconds: u64,
    /// Who issues the tokens shipping accepts (read at start).
    pub tokens: flotilla::auth::TrustedIssuer,
}

impl Default for ShippingConfig {
    fn default() -> Self {
        Self {
            pack_seconds: 10,
            ship_seconds: 20,
            deliver_seconds: 60,
            tokens: Default::default(),
        }
    }
}

impl flotilla::app::Settings for ShippingConfig {
    /// A configuration shipping can run with.
    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("pack_seconds", self.pack_seconds),
            ("ship_seconds", self.ship_seconds),
            ("deliver_seconds", self.deliver_seconds),
        ] {
            if value > 30 * 24 * 3600 {
                return Err(format!("{name} must be at most 30 days"));
            }
        }
        Ok(())
    }
}

impl ShippingConfig {
    /// How long a shipment stays in `status` before the next step (none after delivered or
    /// cancelled).
    pub fn step_after(&self, status: super::shipments::Status) -> Option<u64> {
        use super::shipments::Status;
        match status {
            Status::Created => Some(self.pack_seconds),
            Status::Packed => Some(self.ship_seconds),
            Status::Shipped => Some(self.deliver_seconds),
            Status::Delivered | Status::Cancelled => None,
        }
    }
}
