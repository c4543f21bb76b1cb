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
    /// The issuer admin tokens must name (read at start).
    pub token_issuer: String,
    /// The audience admin tokens must name (read at start).
    pub token_audience: String,
    /// Where the issuer's keys are: a URL, or `service://identity/oauth2/jwks` (read at start).
    pub token_jwks: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            page_size: 20,
            max_page_size: 100,
            token_issuer: "http://localhost:8080".into(),
            token_audience: "shop".into(),
            token_jwks: "service://identity/oauth2/jwks".into(),
        }
    }
}

impl CatalogConfig {
    /// The check of admin tokens this configuration asks for; `service://` key sets are found
    /// through `discovery`.
    pub fn admin_verifier(&self, discovery: Option<&flotilla::discovery::Discovery>) -> flotilla::auth::Verifier {
        let jwks = flotilla::auth::JwksCache::new(self.token_jwks.clone());
        if let Some(discovery) = discovery {
            jwks.resolve_services_with(discovery.resolver());
        }
        flotilla::auth::Verifier::new(
            jwks,
            flotilla::auth::Requirements {
                issuer: self.token_issuer.clone(),
                audiences: vec![self.token_audience.clone()],
                algorithms: vec![
                    jsonwebtoken::Algorithm::EdDSA,
                    jsonwebtoken::Algorithm::RS256,
                    jsonwebtoken::Algorithm::ES256,
                ],
                leeway: std::time::Duration::from_secs(30),
                scopes: Vec::new(),
                roles: vec!["admin".into()],
            },
        )
    }

    /// A configuration the catalog can serve with: pages of 1 to 1,000, the default within
    /// the maximum.
    pub fn validate(&self) -> Result<(), String> {
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
