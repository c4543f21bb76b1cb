//! API keys: a client names itself with a key in a header. The routes file holds only the
//! keys' SHA-256 digests, so it is no secret; digests are compared in constant time.

use flotilla::auth::{AuthError, Identity};
use http::{HeaderMap, HeaderName};

/// The keys a route accepts.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// The header carrying the key.
    pub header: HeaderName,
    /// (SHA-256 of the key, client name).
    pub keys: Vec<([u8; 32], String)>,
}

/// SHA-256 of a key, as the routes file writes it: `sha256:<64 hex digits>`.
pub fn digest_text(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    format!(
        "sha256:{}",
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Parses `sha256:<hex>`.
pub fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    let hex = text
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`{text}`: write keys as sha256:<64 hex digits>"))?;
    if hex.len() != 64 {
        return Err(format!("`{text}`: a SHA-256 digest has 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| format!("`{text}` is not hex"))?;
    }
    Ok(out)
}

impl ApiKeys {
    /// The client a request's key belongs to.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let key = headers.get(&self.header).ok_or(AuthError::Missing)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut found = None;
        for (known, client) in &self.keys {
            // Look at every key whatever matches, so timing says nothing about which did.
            let same = known.iter().zip(digest.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                found = Some(client);
            }
        }
        found
            .map(|client| Identity {
                subject: client.clone(),
                scopes: Vec::new(),
                roles: vec!["api-client".into()],
            })
            .ok_or_else(|| AuthError::Invalid("unknown API key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_digest() {
        let keys = ApiKeys {
            header: HeaderName::from_static("x-api-key"),
            keys: vec![(parse_digest(&digest_text("s3cret")).unwrap(), "partner-a".into())],
        };
        let mut headers = HeaderMap::new();
        assert!(matches!(keys.verify(&headers), Err(AuthError::Missing)));
        headers.insert("x-api-key", "wrong".parse().unwrap());
        assert!(matches!(keys.verify(&headers), Err(AuthError::Invalid(_))));
        headers.insert("x-api-key", "s3cret".parse().unwrap());
        assert_eq!(keys.verify(&headers).unwrap().subject, "partner-a");
        assert!(parse_digest("md5:abc").is_err());
        assert!(parse_digest("sha256:zz").is_err());
    }
}
