//! The orders service's knobs, from the control plane's config store (scope `orders`),
//! followed live: its own client credentials (a config secret), whose tokens it trusts, and
//! the limits of an order.

use serde::{Deserialize, Serialize};

/// Orders' configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    /// Who issues the tokens orders accepts (read at start).
    pub tokens: flotilla::auth::TrustedIssuer,
    /// Orders' own OAuth client, for its calls to inventory, payments and shipping (read at
    /// start). Store it as a config secret; `flotilla up` makes one for a new data dir.
    pub client: ClientSecret,
    /// The most lines one order may have.
    pub max_lines: usize,
    /// The most units of one product one line may ask for.
    pub max_quantity: i64,
    /// How long a product's price and name are reused before the catalog is asked again.
    pub price_cache_seconds: u64,
    /// How soon an accepted order should be confirmed: a new order is refused at once (`503`
    /// with `Retry-After`) while the orders already being confirmed would take longer.
    pub confirm_within_ms: u64,
}

/// A confidential OAuth client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSecret {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: String,
}

impl Default for ClientSecret {
    fn default() -> Self {
        Self {
            id: "orders".into(),
            secret: String::new(),
        }
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            tokens: Default::default(),
            client: Default::default(),
            max_lines: 50,
            max_quantity: 100,
            price_cache_seconds: 30,
            confirm_within_ms: 750,
        }
    }
}

impl flotilla::app::Settings for OrdersConfig {
    /// A configuration orders can run with.
    fn validate(&self) -> Result<(), String> {
        if self.client.id.is_empty() {
            return Err("client.id must not be empty".into());
        }
        if !(1..=500).contains(&self.max_lines) {
            return Err("max_lines must be 1 to 500".into());
        }
        if !(1..=10_000).contains(&self.max_quantity) {
            return Err("max_quantity must be 1 to 10000".into());
        }
        if !(100..=60_000).contains(&self.confirm_within_ms) {
            return Err("confirm_within_ms must be 100 to 60000".into());
        }
        if self.price_cache_seconds > 3600 {
            return Err("price_cache_seconds must be at most 3600".into());
        }
        Ok(())
    }
}
