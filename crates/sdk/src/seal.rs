//! Secrets at rest: AES-256-GCM under a 32-byte key kept apart from what it seals (the
//! control plane's `config.key` for config secrets; the key identity seals its signing keys
//! with), a fresh 96-bit nonce per value, and a context (`scope/profile/key`, a key id) as
//! associated data, so a sealed value copied to another place does not open.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use rand::RngCore;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("the sealing key {path}: {source}")]
    KeyFile {
        /// The key file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("the sealing key {0} is not 32 bytes; restore it from a backup (what was sealed with another key cannot be opened)")]
    BadKey(String),
    /// A sealed value did not open: another key, or tampered with.
    #[error("a sealed value did not open (wrong key or tampered)")]
    Open,
}

/// Seals and opens secret values.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

const NONCE: usize = 12;

impl Sealer {
    /// The key in the file at `path`, created (random, 0600) if missing.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read(path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                crate::data_dir::create_private(path, &key).map_err(io)?;
                key
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_key(&key).ok_or_else(|| SealError::BadKey(path.display().to_string()))
    }

    /// The key in the file at `path`, which must exist (a mounted secret: making a new key
    /// in its place would leave everything sealed before unopenable).
    pub fn read_file(path: &Path) -> Result<Self, SealError> {
        let key = std::fs::read(path).map_err(|source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_key(&key).ok_or_else(|| SealError::BadKey(path.display().to_string()))
    }

    /// A sealer with a random key, for stores that live in memory.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// A sealer over a 32-byte key; `None` for any other length.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        (key.len() == 32).then(|| Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        })
    }

    /// `base64(nonce ‖ ciphertext)` of `plain`, bound to `context`.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain,
            aad: context.as_bytes(),
        };
        // Encryption fails only for messages beyond AES-GCM's 64 GiB limit.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`Sealer::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE {
            return Err(SealError::Open);
        }
        let (nonce, cipher) = bytes.split_at(NONCE);
        let payload = Payload {
            msg: cipher,
            aad: context.as_bytes(),
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::from_file(&dir.path().join("config.key")).unwrap();
        let sealed = sealer.seal("payments/default/api_key", b"\"sk_live_123\"");
        assert!(!sealed.contains("sk_live"));
        assert_eq!(
            sealer.open("payments/default/api_key", &sealed).unwrap(),
            b"\"sk_live_123\""
        );
        assert!(sealer.open("catalog/default/api_key", &sealed).is_err());
        // The same key file opens it after a restart; another key does not.
        let again = Sealer::from_file(&dir.path().join("config.key")).unwrap();
        assert!(again.open("payments/default/api_key", &sealed).is_ok());
        assert!(Sealer::ephemeral().open("payments/default/api_key", &sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("config.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_short_key_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.key"), b"short").unwrap();
        let err = Sealer::from_file(&dir.path().join("config.key")).unwrap_err();
        assert!(err.to_string().contains("config.key"), "{err}");
    }
}
