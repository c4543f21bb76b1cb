//! The catalog's knobs, read from the control plane's config store (scope `catalog`) over
//! its defaults, and followed live.

use serde::{Deserialize, Serialize};

/// What an operator may turn while the catalog runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Products per page when a client asks for none.
    pub page_size: u32,
    /// The largest page a client may ask for.
    pub max_page_size: u32,
    /// Who issues the admin tokens the catalog accepts (read at start).
    pub tokens: flotilla::auth::TrustedIssuer,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            page_size: 20,
            max_page_size: 100,
            tokens: Default::default(),
        }
    }
}

impl flotilla::app::Settings for CatalogConfig {
    /// A configuration the catalog can serve with: pages of 1 to 1,000, the default within
    /// the maximum.
    fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.max_page_size) {
            return Err(format!("max_page_size must be 1 to 1000, not {}", self.max_page_size));
        }
        if self.page_size == 0 || self.page_size > self.max_page_size {
            return Err(format!(
                "page_size must be 1 to max_page_size ({}), not {}",
                self.max_page_size, self.page_size
            ));
        }
        Ok(())
    }
}
