//! The signing keys: the newest unretired key signs; every key whose tokens may still be
//! alive is published in the JWKS. Rotation makes a new key and retires the old one, which
//! stays published for one access-token lifetime (plus a minute of clock skew), so no token
//! it signed stops verifying. Keys live in identity's database, so every instance signs with
//! the same key and publishes the same set.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flotilla::auth::signing::{SigningError, SigningKey};
use flotilla::store::{now_ms, Store};
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
}

/// What is in force: the key that signs, and the published set.
pub struct Keys {
    /// Signs new tokens.
    pub signing: Arc<SigningKey>,
    /// The JWKS document.
    pub jwks: serde_json::Value,
    /// When the signing key was made, ms since the epoch.
    pub signing_since_ms: i64,
}

/// The key ring. Cheap to share behind an `Arc`.
pub struct KeyRing {
    store: Store,
    keys: ArcSwap<Keys>,
}

/// Clock skew allowed on top of a token's lifetime before its key leaves the JWKS.
const SKEW_MS: i64 = 60_000;

impl KeyRing {
    /// Loads the keys, making the first one if there is none.
    pub async fn load(store: Store, token_lifetime: Duration) -> Result<Self, KeyError> {
        let keys = read(&store, token_lifetime).await?;
        let keys = match keys {
            Some(keys) => keys,
            None => {
                insert_new(&store).await?;
                read(&store, token_lifetime)
                    .await?
                    .ok_or(KeyError::Encoding("(none)".into()))?
            }
        };
        Ok(Self {
            store,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Reads the keys again (another instance may have rotated).
    pub async fn reload(&self, token_lifetime: Duration) -> Result<(), KeyError> {
        if let Some(keys) = read(&self.store, token_lifetime).await? {
            self.keys.store(Arc::new(keys));
        }
        Ok(())
    }

    /// Makes a new signing key and retires the others; returns the new key's id.
    pub async fn rotate(&self, token_lifetime: Duration) -> Result<String, KeyError> {
        let kid = insert_new(&self.store).await?;
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

async fn insert_new(store: &Store) -> Result<String, KeyError> {
    let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let key = SigningKey::generate(kid.clone())?;
    sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_ms, retired_ms) VALUES ($1, $2, $3, NULL)")
        .bind(&kid)
        .bind(STANDARD.encode(key.pkcs8()))
        .bind(now_ms())
        .execute(store.pool())
        .await?;
    Ok(kid)
}

/// The keys to publish and the one to sign with, or `None` if no key can sign.
async fn read(store: &Store, token_lifetime: Duration) -> Result<Option<Keys>, KeyError> {
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
        let encoded: String = row.try_get("pkcs8")?;
        let der = STANDARD.decode(encoded).map_err(|_| KeyError::Encoding(kid.clone()))?;
        let key = SigningKey::from_pkcs8(kid, &der)?;
        published.push(key.jwk());
        let retired: Option<i64> = row.try_get("retired_ms")?;
        if signing.is_none() && retired.is_none() {
            signing = Some((Arc::new(key), row.try_get::<i64, _>("created_ms")?));
        }
    }
    Ok(signing.map(|(signing, since)| Keys {
        signing,
        jwks: serde_json::json!({ "keys": published }),
        signing_since_ms: since,
    }))
}
