//! The signing keys: the newest unretired key signs; every key whose tokens may still be
//! alive is published in the JWKS. Rotation makes a new key and retires the old one, which
//! stays published for one access-token lifetime (plus a minute of clock skew), so no token
//! it signed stops verifying. Keys live in identity's database, so every instance signs with
//! the same key and publishes the same set — sealed (AES-256-GCM, the key id as associated
//! data) under a key kept elsewhere, so the database alone yields no key that signs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flotilla::auth::signing::{SigningError, SigningKey};
use flotilla::seal::Sealer;
use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use serde::Serialize;
use sqlx::Row;

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A key could not be made or read.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// A stored key is not base64.
    #[error("stored key `{0}` is not base64")]
    Encoding(String),
    /// A stored key does not open with the sealing key in force.
    #[error("signing key `{0}` does not open with this sealing key (it was sealed with another; restore identity's `seal_key`)")]
    Sealed(String),
    /// No sealing key was given.
    #[error("no sealing key for the signing keys: set the config secret `seal_key` of scope identity (a new `flotilla up` makes one) or `seal_key_file`")]
    NoSealKey,
    /// The sealing key is not usable.
    #[error("the sealing key: {0}")]
    SealKey(String),
}

/// What a sealed key is stored with, ahead of its sealed bytes.
const SEALED: &str = "sealed:";

/// A sealer over a base64 32-byte key.
pub fn sealer_from_base64(key: &str) -> Result<Sealer, KeyError> {
    let bytes = STANDARD
        .decode(key.trim())
        .map_err(|_| KeyError::SealKey("not base64".into()))?;
    Sealer::from_key(&bytes).ok_or_else(|| KeyError::SealKey(format!("{} bytes, not 32", bytes.len())))
}

/// The sealer the configuration names: its file, else its secret.
pub fn sealer_from(config: &crate::IdentityConfig) -> Result<Sealer, KeyError> {
    match (&config.seal_key_file, &config.seal_key) {
        (Some(path), _) => Sealer::read_file(path).map_err(|e| KeyError::SealKey(e.to_string())),
        (None, Some(key)) => sealer_from_base64(key),
        (None, None) => Err(KeyError::NoSealKey),
    }
}

fn context(kid: &str) -> String {
    format!("identity/signing-key/{kid}")
}

/// A JSON Web Key Set (RFC 7517): the public keys that tokens are checked against.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwks {
    /// The keys: Ed25519 (`kty` `OKP`, `alg` `EdDSA`), each named by its `kid`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

/// What is in force: the key that signs, and the published set.
pub struct Keys {
    /// Signs new tokens.
    pub signing: Arc<SigningKey>,
    /// The published set.
    pub jwks: Jwks,
    /// When the signing key was made, ms since the epoch.
    pub signing_since_ms: i64,
}

/// The key ring. Cheap to share behind an `Arc`.
pub struct KeyRing {
    store: Store,
    sealer: Sealer,
    keys: ArcSwap<Keys>,
}

/// Clock skew allowed on top of a token's lifetime before its key leaves the JWKS.
const SKEW_MS: i64 = 60_000;

impl KeyRing {
    /// Loads the keys, making the first one if there is none.
    /// Keys stored in plain text by an earlier version are sealed on the way.
    pub async fn load(store: Store, sealer: Sealer, token_lifetime: Duration) -> Result<Self, KeyError> {
        let keys = read(&store, &sealer, token_lifetime).await?;
        let keys = match keys {
            Some(keys) => keys,
            None => {
                insert_new(&store, &sealer).await?;
                read(&store, &sealer, token_lifetime)
                    .await?
                    .ok_or(KeyError::Encoding("(none)".into()))?
            }
        };
        Ok(Self {
            store,
            sealer,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Reads the keys again (another instance may have rotated).
    pub async fn reload(&self, token_lifetime: Duration) -> Result<(), KeyError> {
        if let Some(keys) = read(&self.store, &self.sealer, token_lifetime).await? {
            self.keys.store(Arc::new(keys));
        }
        Ok(())
    }

    /// Makes a new signing key and retires the others; returns the new key's id.
    pub async fn rotate(&self, token_lifetime: Duration) -> Result<String, KeyError> {
        let kid = insert_new(&self.store, &self.sealer).await?;
        sqlx::query("UPDATE signing_keys SET retired_ms = $1 WHERE retired_ms IS NULL AND kid <> $2")
            .bind(now_ms())
            .bind(&kid)
            .execute(self.store.pool())
            .await?;
        self.reload(token_lifetime).await?;
        tracing::info!(%kid, "signing key rotated");
        Ok(kid)
    }

    /// Rotates when the signing key is older than `every`; otherwise picks up what another
    /// instance did.
    pub async fn rotate_if_due(&self, every: Duration, token_lifetime: Duration) -> Result<(), KeyError> {
        self.reload(token_lifetime).await?;
        let age_ms = now_ms() - self.current().signing_since_ms;
        if age_ms >= every.as_millis() as i64 {
            self.rotate(token_lifetime).await?;
        }
        Ok(())
    }
}

async fn insert_new(store: &Store, sealer: &Sealer) -> Result<String, KeyError> {
    let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let key = SigningKey::generate(kid.clone())?;
    sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_ms, retired_ms) VALUES ($1, $2, $3, NULL)")
        .bind(&kid)
        .bind(format!("{SEALED}{}", sealer.seal(&context(&kid), key.pkcs8())))
        .bind(now_ms())
        .execute(store.pool())
        .await?;
    Ok(kid)
}

/// The keys to publish and the one to sign with, or `None` if no key can sign.
async fn read(store: &Store, sealer: &Sealer, token_lifetime: Duration) -> Result<Option<Keys>, KeyError> {
    let cutoff = now_ms() - token_lifetime.as_millis() as i64 - SKEW_MS;
    let rows = sqlx::query(
        "SELECT kid, pkcs8, created_ms, retired_ms FROM signing_keys WHERE retired_ms IS NULL OR retired_ms > $1 ORDER BY created_ms DESC, kid",
    )
    .bind(cutoff)
    .fetch_all(store.pool())
    .await?;
    let mut signing = None;
    let mut published = Vec::new();
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let stored: String = row.try_get("pkcs8")?;
        let der = match stored.strip_prefix(SEALED) {
            Some(sealed) => sealer
                .open(&context(&kid), sealed)
                .map_err(|_| KeyError::Sealed(kid.clone()))?,
            None => {
                // Kept in plain text by an earlier version: sealed now, in place.
                let der = STANDARD.decode(stored).map_err(|_| KeyError::Encoding(kid.clone()))?;
                sqlx::query("UPDATE signing_keys SET pkcs8 = $1 WHERE kid = $2")
                    .bind(format!("{SEALED}{}", sealer.seal(&context(&kid), &der)))
                    .bind(&kid)
                    .execute(store.pool())
                    .await?;
                tracing::info!(%kid, "sealed a signing key stored in plain text");
                der
            }
        };
        let key = SigningKey::from_pkcs8(kid, &der)?;
        published.push(key.jwk());
        let retired: Option<i64> = row.try_get("retired_ms")?;
        if signing.is_none() && retired.is_none() {
            signing = Some((Arc::new(key), row.try_get::<i64, _>("created_ms")?));
        }
    }
    Ok(signing.map(|(signing, since)| Keys {
        signing,
        jwks: Jwks { keys: published },
        signing_since_ms: since,
    }))
}
