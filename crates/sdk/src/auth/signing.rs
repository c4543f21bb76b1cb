//! Signing JWTs: an Ed25519 key (EdDSA, RFC 8037) with its key id, its public half as a JWK,
//! and compact tokens signed with it. The identity service issues with it; tests make tokens
//! with it (good ones and the malformed ones a verifier must refuse).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The system's random source failed.
    #[error("no randomness for a new key")]
    Random,
    /// The stored key is not an Ed25519 PKCS#8 document.
    #[error("key `{0}` is not a valid Ed25519 PKCS#8 key")]
    BadKey(String),
}

/// An Ed25519 signing key and the id tokens name it by.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key with this id.
    pub fn generate(kid: impl Into<String>) -> Result<Self, SigningError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningError::Random)?;
        Self::from_pkcs8(kid, pkcs8.as_ref())
    }

    /// A stored key (its PKCS#8 document, as [`SigningKey::pkcs8`] gave it).
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, SigningError> {
        let kid = kid.into();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| SigningError::BadKey(kid.clone()))?;
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
            kid,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8, to store.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK (RFC 8037 `OKP`/`Ed25519`).
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())})
    }

    /// A token with exactly this header and these claims, signed with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// A well-formed EdDSA JWT with these claims, naming this key.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}), claims)
    }
}
