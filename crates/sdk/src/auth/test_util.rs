//! A token issuer for tests: an Ed25519 key, its JWK, and tokens with any header and claims
//! (also the malformed ones a verifier must refuse).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

/// One signing key.
pub struct TestIssuer {
    pair: Ed25519KeyPair,
    /// The key id tokens name.
    pub kid: String,
}

impl TestIssuer {
    /// A fresh key with this id.
    ///
    /// # Panics
    /// If the system's random source fails.
    pub fn new(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate an Ed25519 key");
        Self {
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("read the generated key"),
            kid: kid.into(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())})
    }

    /// A token with exactly this header and these claims, signed with this key.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// A well-formed EdDSA token with these claims.
    pub fn token(&self, claims: Value) -> String {
        self.sign(json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}), claims)
    }
}

/// Base64url without padding, for hand-made tokens.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
