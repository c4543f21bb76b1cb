//! Authentication: JWTs (RFC 7519) verified against a JWKS, following the JWT best current
//! practices (RFC 8725): an allow-list of algorithms, each tied to the key type it needs;
//! `alg: none` never accepted; `jku`, `x5u` and `jwk` headers ignored (no key comes from the
//! token itself); issuer, audience, expiry and not-before checked with a small clock skew.
//! Used by the gateway's auth policy and by services checking their callers.

mod caller;
mod client_credentials;
mod jwks;
pub mod signing;
#[cfg(feature = "test-util")]
pub mod test_util;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

pub use caller::Caller;
pub use client_credentials::ClientCredentials;
pub use jwks::{JwksCache, JwksError, Resolve, JWKS_CONTRACT, SERVICE_SCHEME};

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` token.
    #[error("no bearer token")]
    Missing,
    /// The token is malformed, forged, expired, not yet valid, or for someone else.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but lacks a required scope or role.
    #[error("insufficient scope: needs {0}")]
    Forbidden(String),
    /// The keys could not be fetched: deny (fail closed).
    #[error("keys unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The problem a service answers with: `401` without a usable token, `403` when a scope
    /// or role is missing, `503` when the keys cannot be had (fail closed). Why a token was
    /// refused goes to the log only: the parser's words help a forger more than a client.
    pub fn to_problem(&self) -> crate::Problem {
        use crate::Problem;
        match self {
            AuthError::Forbidden(need) => {
                Problem::new(403, "forbidden", "Forbidden").with_detail(format!("needs {need}"))
            }
            AuthError::Unavailable(e) => {
                tracing::warn!(error = %e, "token keys unavailable");
                Problem::new(503, "auth-unavailable", "Authentication unavailable")
                    .with_detail("the keys tokens are checked against cannot be had; retry later")
            }
            AuthError::Missing => Problem::new(401, "unauthorized", "Unauthorized")
                .with_detail("an `Authorization: Bearer` token is needed"),
            AuthError::Invalid(why) => {
                tracing::info!(why = %why, "token refused");
                Problem::new(401, "unauthorized", "Unauthorized")
                    .with_detail("the bearer token is invalid, expired or not meant for this service")
            }
        }
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject (`sub`).
    pub subject: String,
    /// Granted scopes (`scope`, space-separated, or `scp`).
    pub scopes: Vec<String>,
    /// Roles (`roles`).
    pub roles: Vec<String>,
}

impl Identity {
    /// Whether the token grants this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the token grants this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Passes an admin, or a holder of `scope` when one is given; else `Forbidden`.
    pub fn admin_or(&self, scope: Option<&str>) -> Result<(), AuthError> {
        if self.has_role("admin") || scope.is_some_and(|s| self.has_scope(s)) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(match scope {
                Some(scope) => format!("scope {scope} or role admin"),
                None => "role admin".into(),
            }))
        }
    }
}

/// The claims Flotilla reads. The time claims are typed as numbers so that a token carrying
/// them as strings is refused outright, rather than having the check skipped.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Claims {
    sub: String,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    roles: Vec<String>,
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Requirements {
    /// The issuer (`iss`) tokens must name.
    pub issuer: String,
    /// Tokens must name one of these audiences (`aud`).
    pub audiences: Vec<String>,
    /// Algorithms accepted (RS256, ES256, EdDSA, ...).
    pub algorithms: Vec<Algorithm>,
    /// Allowed clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// Every one of these scopes is required.
    pub scopes: Vec<String>,
    /// At least one of these roles is required (if any are listed).
    pub roles: Vec<String>,
}

/// Where a service's callers get their tokens, as its configuration names it: read by a
/// service to check the tokens it is shown (the gateway checked them already; a service checks
/// again, as nothing stops a local process calling it directly).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` tokens must name.
    pub issuer: String,
    /// An `aud` tokens must name.
    pub audience: String,
    /// The issuer's keys: a URL, or `service://identity/oauth2/jwks` (found through the registry).
    pub jwks: String,
}

/// The URL clients reach the system at — the gateway's public URL (`FLOTILLA_PUBLIC_URL`,
/// which `up` sets from the manifest's `[gateway] public_url` or the gateway's address) — and
/// so the issuer of the tokens identity issues behind it. [`DEFAULT_PUBLIC_URL`] when unset.
pub fn public_url() -> String {
    public_url_from(std::env::var(flotilla_api::env::PUBLIC_URL).ok().as_deref())
}

/// The public URL when none is set: where `flotilla up` puts the gateway on a laptop.
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";

/// [`public_url`] from a given value of the variable.
pub fn public_url_from(value: Option<&str>) -> String {
    match value.map(|v| v.trim().trim_end_matches('/')) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => url.to_owned(),
        _ => DEFAULT_PUBLIC_URL.to_owned(),
    }
}

impl Default for TrustedIssuer {
    /// The identity service behind the gateway at [`public_url`], audience `shop`.
    fn default() -> Self {
        Self {
            issuer: public_url(),
            audience: "shop".into(),
            jwks: "service://identity/oauth2/jwks".into(),
        }
    }
}

impl TrustedIssuer {
    /// A verifier of this issuer's tokens that needs every one of `scopes` and, if any are
    /// listed, one of `roles`; `service://` key sets are found through `discovery`.
    pub fn verifier(
        &self,
        discovery: Option<&crate::discovery::Discovery>,
        scopes: &[&str],
        roles: &[&str],
    ) -> Verifier {
        self.verifier_over(
            {
                let jwks = JwksCache::new(self.jwks.clone());
                if let Some(discovery) = discovery {
                    jwks.resolve_services_with(discovery.resolver());
                }
                jwks
            },
            scopes,
            roles,
        )
    }

    /// The same over a given key set (tests hold the keys themselves).
    pub fn verifier_over(&self, jwks: JwksCache, scopes: &[&str], roles: &[&str]) -> Verifier {
        Verifier::new(
            jwks,
            Requirements {
                issuer: self.issuer.clone(),
                audiences: vec![self.audience.clone()],
                algorithms: vec![Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256],
                leeway: Duration::from_secs(30),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
        )
    }
}

/// Verifies bearer tokens against a JWKS.
#[derive(Debug, Clone)]
pub struct Verifier {
    // Shared, so that a clone per request (the `Caller` extractor's) costs no allocation.
    jwks: std::sync::Arc<JwksCache>,
    requirements: std::sync::Arc<Requirements>,
    verified: std::sync::Arc<std::sync::Mutex<HashMap<String, (Identity, std::time::SystemTime)>>>,
}

/// Verified tokens remembered at most; past this the memory is cleared and refilled.
const VERIFIED_CACHE: usize = 10_000;

/// Whether an algorithm may be used with a key of this JWK type (the pairing RFC 8725 §3.1
/// asks for; it also stops an HMAC token "signed" with a public key).
fn key_fits(algorithm: Algorithm, key: &jsonwebtoken::jwk::AlgorithmParameters) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match key {
        P::RSA(_) => matches!(
            algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        P::EllipticCurve(_) => matches!(algorithm, Algorithm::ES256 | Algorithm::ES384),
        P::OctetKeyPair(_) => algorithm == Algorithm::EdDSA,
        // Shared secrets never come from a published key set.
        P::OctetKey(_) => false,
    }
}

impl Verifier {
    /// A verifier over a key set, with requirements.
    pub fn new(jwks: JwksCache, requirements: Requirements) -> Self {
        Self {
            jwks: std::sync::Arc::new(jwks),
            requirements: std::sync::Arc::new(requirements),
            verified: Default::default(),
        }
    }

    /// The key set tokens are checked against.
    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// The bearer token of an `Authorization` header value.
    pub fn bearer(header: Option<&http::HeaderValue>) -> Result<&str, AuthError> {
        let value = header.and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        Ok(token.trim())
    }

    /// Verifies the bearer token of a request's headers.
    pub async fn caller(&self, headers: &http::HeaderMap) -> Result<Identity, AuthError> {
        self.verify(Self::bearer(headers.get(http::header::AUTHORIZATION))?)
            .await
    }

    /// Verifies a token and its scopes and roles. A token verified before is answered from
    /// memory until it expires (keyed by the whole token, so only the very same bytes match):
    /// a signature check per request would cost more than the rest of the proxying.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = SystemTime::now();
        if let Some((identity, expires)) = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
            if now < *expires {
                return Ok(identity.clone());
            }
        }
        let (identity, expires) = self.verify_uncached(token).await?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_owned(), (identity.clone(), expires));
        Ok(identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Identity, SystemTime), AuthError> {
        if token.split('.').count() != 3 {
            return Err(AuthError::Invalid("a JWT has three dot-separated parts".into()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        refuse_critical_extensions(token)?;
        if !self.requirements.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AuthError::Invalid("no `kid` in the header".into()))?;
        let jwk = self.jwks.key(kid).await?;
        if !key_fits(header.alg, &jwk.algorithm) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} does not fit key `{kid}`",
                header.alg
            )));
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.requirements.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.requirements.issuer]);
        validation.set_audience(&self.requirements.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let scopes: Vec<String> = match (claims.scope, claims.scp) {
            (Some(s), _) => s.split_whitespace().map(str::to_owned).collect(),
            (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        if let Some(missing) = self.requirements.scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(AuthError::Forbidden(format!("scope `{missing}`")));
        }
        if !self.requirements.roles.is_empty() && !self.requirements.roles.iter().any(|r| claims.roles.contains(r)) {
            return Err(AuthError::Forbidden(format!(
                "one of the roles {}",
                self.requirements.roles.join(", ")
            )));
        }
        // Remembered until `exp` (plus the leeway the check itself allows).
        let expires = UNIX_EPOCH + Duration::from_secs_f64(claims.exp.max(0.0)) + self.requirements.leeway;
        Ok((
            Identity {
                subject: claims.sub,
                scopes,
                roles: claims.roles,
            },
            expires,
        ))
    }
}

/// Refuses a token whose header lists `crit` extensions: Flotilla understands none, and
/// RFC 7515 §4.1.11 says a token with an extension the recipient does not understand is invalid.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    let encoded = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
    match header.get("crit") {
        None => Ok(()),
        Some(crit) => Err(AuthError::Invalid(format!(
            "critical extensions {crit} are not understood"
        ))),
    }
}

#[cfg(test)]
mod tests;
