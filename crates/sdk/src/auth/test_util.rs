//! A token issuer for tests: an Ed25519 key, its JWK, and tokens with any header and claims
//! (also the malformed ones a verifier must refuse).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::signing::SigningKey;

/// One signing key.
pub struct TestIssuer {
    key: SigningKey,
    /// The key id tokens name.
    pub kid: String,
}

impl TestIssuer {
    /// A fresh key with this id.
    ///
    /// # Panics
    /// If the system's random source fails.
    pub fn new(kid: &str) -> Self {
        Self {
            key: SigningKey::generate(kid).expect("generate an Ed25519 key"),
            kid: kid.into(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        self.key.jwk()
    }

    /// A token with exactly this header and these claims, signed with this key.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        self.key.sign(&header, &claims)
    }

    /// A well-formed EdDSA token with these claims.
    pub fn token(&self, claims: Value) -> String {
        self.key.token(&claims)
    }
}

/// Base64url without padding, for hand-made tokens.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The issuer shop tests sign with; its key is made once per test process.
pub fn shop_issuer() -> &'static TestIssuer {
    static ISSUER: std::sync::OnceLock<TestIssuer> = std::sync::OnceLock::new();
    ISSUER.get_or_init(|| TestIssuer::new("shop-test"))
}

impl TestIssuer {
    /// A token as the shop's identity issues them (the default [`super::TrustedIssuer`]'s
    /// issuer and audience), valid ten minutes.
    ///
    /// # Panics
    /// If the clock is before 1970.
    pub fn shop_token(&self, subject: &str, scope: &str, roles: &[&str]) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs()
            + 600;
        let trusted = super::TrustedIssuer::default();
        self.token(serde_json::json!({
            "iss": trusted.issuer, "aud": trusted.audience, "sub": subject, "exp": exp,
            "scope": scope, "roles": roles
        }))
    }

    /// A key set holding this issuer's key.
    ///
    /// # Panics
    /// Never: the JWK is well formed.
    pub fn key_set(&self) -> super::JwksCache {
        let set = serde_json::from_value(serde_json::json!({ "keys": [self.jwk()] })).expect("a JWK set");
        super::JwksCache::local(set)
    }
}
