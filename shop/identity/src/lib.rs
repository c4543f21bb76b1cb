//! The shop's identity service: accounts (argon2id), the OAuth 2.0 token endpoint
//! (`password`, `refresh_token` with rotation, `client_credentials`), EdDSA access tokens with
//! rotating keys published as a JWKS, OpenID Connect discovery, and `/api/v1/me`.

pub mod accounts;
mod api;
pub mod config;
pub mod keys;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use flotilla::auth::{JwksCache, TrustedIssuer, Verifier};
use flotilla::config::LiveConfig;
use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::router;
pub use config::IdentityConfig;

/// The service's name in the registry.
pub const SERVICE: &str = "identity";

/// The services that may call this one over mTLS: every workload of the system — the gateway
/// (sign-in), services with a client-credentials token (orders), and every service that checks
/// tokens, which needs the key set (a new one included). The key `callers` in its config scope
/// replaces the list live.
pub const CALLERS: &[&str] = &[flotilla::mtls::ANY_SERVICE];

/// Identity's schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens identity's database where the environment says (`DATABASE_URL`, else SQLite in the
/// data dir), migrated.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    Store::open(&Store::url_for(SERVICE, &env.data_dir)?, &MIGRATOR).await
}

/// A running identity service's state.
pub struct Identity {
    /// Its database.
    pub store: Store,
    /// Its signing keys.
    pub keys: keys::KeyRing,
    /// Its knobs, live.
    pub config: LiveConfig<IdentityConfig>,
    /// Sign-in attempts, in the database every instance shares.
    pub throttle: throttle::Throttle,
    /// Its own keys, for checking the tokens it is shown.
    jwks: JwksCache,
}

fn jwk_set(jwks: &keys::Jwks) -> jsonwebtoken::jwk::JwkSet {
    serde_json::to_value(jwks)
        .and_then(serde_json::from_value)
        .unwrap_or(jsonwebtoken::jwk::JwkSet { keys: Vec::new() })
}

impl Identity {
    /// Loads (or makes) the signing keys and starts rotating them on schedule.
    /// The signing keys are sealed with the key the configuration names (`seal_key_file`,
    /// else the `seal_key` secret).
    pub async fn start(store: Store, config: LiveConfig<IdentityConfig>) -> Result<Arc<Self>, keys::KeyError> {
        let lifetime = Duration::from_secs(config.current().access_token_seconds);
        let sealer = keys::sealer_from(&config.current())?;
        let ring = keys::KeyRing::load(store.clone(), sealer, lifetime).await?;
        match accounts::fill_skeletons(&store).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(accounts = n, "filled the look-alike skeletons of older accounts"),
            Err(err) => tracing::error!(error = %err, "filling the skeletons of older accounts failed"),
        }
        let jwks = JwksCache::local(jwk_set(&ring.current().jwks));
        let identity = Arc::new(Self {
            keys: ring,
            config,
            throttle: throttle::Throttle::new(store.clone()),
            store,
            jwks,
        });
        // Keys quiet for a whole window count as fresh: their rows are dropped now and then.
        let pruning = Arc::downgrade(&identity);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(600)).await;
                let Some(identity) = pruning.upgrade() else { return };
                let window = Duration::from_secs(identity.config.current().failure_window_seconds);
                if let Err(err) = identity.throttle.prune(window).await {
                    tracing::warn!(error = %err, "pruning the login throttle failed");
                }
            }
        });
        // The configured administrator exists whenever the configuration names one.
        let mut changes = identity.config.watch();
        let bootstrap = Arc::downgrade(&identity);
        tokio::spawn(async move {
            loop {
                let Some(identity) = bootstrap.upgrade() else {
                    return;
                };
                if let Some(admin) = identity.config.current().admin.clone() {
                    match accounts::ensure_admin(&identity.store, &admin).await {
                        Ok(true) => tracing::info!("administrator account created from the configuration"),
                        Ok(false) => {}
                        Err(err) => tracing::error!(error = %err, "the configured administrator could not be made"),
                    }
                }
                drop(identity);
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        let weak = Arc::downgrade(&identity);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(identity) = weak.upgrade() else {
                    return;
                };
                let config = identity.config.current();
                let every = Duration::from_secs(config.key_rotation_seconds);
                let lifetime = Duration::from_secs(config.access_token_seconds);
                match identity.keys.rotate_if_due(every, lifetime).await {
                    Ok(()) => identity.publish(),
                    Err(err) => tracing::error!(error = %err, "signing key rotation failed"),
                }
            }
        });
        Ok(identity)
    }

    /// Makes the key set in force the one tokens are checked against here.
    pub fn publish(&self) {
        self.jwks.set(jwk_set(&self.keys.current().jwks));
    }

    /// A verifier of this issuer's tokens under the configuration in force.
    pub fn verifier(&self) -> Verifier {
        let config = self.config.current();
        let trusted = TrustedIssuer {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            jwks: String::new(),
        };
        trusted.verifier_over(self.jwks.clone(), &[], &[])
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "Accounts, the OAuth 2.0 token endpoint, the JWKS and OpenID Connect discovery.",
    )
}

/// How long a starting instance waits for its `seal_key` to be written before it gives up.
const SEAL_KEY_WITHIN: Duration = Duration::from_secs(60);

/// Identity as a Flotilla app: `flotilla service identity`.
pub struct IdentityApp;

impl flotilla::app::App for IdentityApp {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = IdentityConfig;

    async fn start(setup: &flotilla::app::Setup<IdentityConfig>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let config = setup.config();
        let sealed = |c: &IdentityConfig| c.seal_key.is_some() || c.seal_key_file.is_some();
        if !sealed(&config.current()) {
            // Started beside what seeds the store (a Kubernetes Job): its key comes soon.
            tracing::warn!("no seal_key yet (identity/default/seal_key): waiting for it to be set");
            config.wait_for(SEAL_KEY_WITHIN, sealed).await;
        }
        let identity = Identity::start(store, config.clone())
            .await
            .map_err(|e| flotilla::app::AppError::start("loading identity's signing keys", e))?;
        Ok(router(identity))
    }
}

#[cfg(test)]
mod tests;
