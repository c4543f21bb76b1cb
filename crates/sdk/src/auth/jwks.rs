//! A JWKS fetched from a URL and cached: refreshed on a schedule and when a token names a key
//! it does not know (key rotation), but not more often than a floor, so a flood of tokens with
//! made-up `kid`s cannot turn into a flood of fetches. The URL may name a registry service
//! (`service://identity/oauth2/jwks`, Spring Cloud's `lb://`): each fetch goes to one of its
//! instances, found through the resolver the owner installs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::AuthError;
use crate::http::HttpClient;

/// Why the key set could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The fetch failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// Why.
        reason: String,
    },
}

struct State {
    keys: ArcSwap<JwkSet>,
    fetched: Mutex<Option<Instant>>,
    resolve: std::sync::OnceLock<Resolve>,
}

/// Finds an instance of a service: its base URL (`http://127.0.0.1:41234`), if any is up.
pub type Resolve = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What every key set fetch relies on from the issuer (checked against identity's document).
pub const JWKS_CONTRACT: crate::contract::Expectation = crate::contract::Expectation {
    consumer: "every token verifier (gateway and services)",
    provider: "identity",
    method: "GET",
    path: "/oauth2/jwks",
    status: 200,
    sends: &[],
    reads: &["keys"],
};

/// The scheme of URLs that name a registry service rather than a host.
pub const SERVICE_SCHEME: &str = "service://";

/// A cached JWKS. Cheap to clone.
#[derive(Clone)]
pub struct JwksCache {
    /// Where the set is fetched; `None` for a set its owner keeps current ([`JwksCache::local`]).
    url: Option<String>,
    http: HttpClient,
    state: Arc<State>,
    /// Keys older than this are fetched again.
    max_age: Duration,
    /// Never fetch more often than this, whatever the tokens say.
    min_interval: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache for the key set at `url` (fetched on first use).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_url(Some(url.into()))
    }

    /// A set that is never fetched: its owner (the issuer itself) keeps it current with
    /// [`JwksCache::set`].
    pub fn local(keys: JwkSet) -> Self {
        let cache = Self::with_url(None);
        cache.state.keys.store(Arc::new(keys));
        cache
    }

    /// Whether the URL names a registry service (and so needs a resolver).
    pub fn names_a_service(&self) -> bool {
        self.url.as_deref().is_some_and(|u| u.starts_with(SERVICE_SCHEME))
    }

    /// How `service://` URLs find an instance (set once; later calls are ignored).
    pub fn resolve_services_with(&self, resolve: Resolve) {
        let _ = self.state.resolve.set(resolve);
    }

    /// The URL to fetch now: the configured one, or a `service://` one resolved to an instance.
    fn target(&self, url: &str) -> Result<String, String> {
        let Some(rest) = url.strip_prefix(SERVICE_SCHEME) else {
            return Ok(url.to_owned());
        };
        let (service, path) = rest.split_once('/').map_or((rest, ""), |(s, p)| (s, p));
        let resolve = self
            .state
            .resolve
            .get()
            .ok_or_else(|| format!("{url} names a service, but there is no registry to find it in"))?;
        let base = resolve(service).ok_or_else(|| format!("no instance of `{service}` is up"))?;
        Ok(format!("{}/{path}", base.trim_end_matches('/')))
    }

    /// Replaces the keys of a [`JwksCache::local`] set.
    pub fn set(&self, keys: JwkSet) {
        self.state.keys.store(Arc::new(keys));
    }

    fn with_url(url: Option<String>) -> Self {
        Self {
            url,
            http: HttpClient::new(Duration::from_secs(2)),
            state: Arc::new(State {
                keys: ArcSwap::from_pointee(JwkSet { keys: Vec::new() }),
                fetched: Mutex::new(None),
                resolve: std::sync::OnceLock::new(),
            }),
            max_age: Duration::from_secs(300),
            min_interval: Duration::from_secs(5),
        }
    }

    /// Overrides how old keys may get, and how often a fetch may happen at most.
    pub fn with_intervals(mut self, max_age: Duration, min_interval: Duration) -> Self {
        self.max_age = max_age;
        self.min_interval = min_interval;
        self
    }

    /// The key with this `kid`, fetching the set again if it is unknown or stale.
    pub async fn key(&self, kid: &str) -> Result<Jwk, AuthError> {
        if self.url.is_none() {
            return self
                .state
                .keys
                .load()
                .find(kid)
                .cloned()
                .ok_or_else(|| AuthError::Invalid(format!("unknown key `{kid}`")));
        }
        let stale = self
            .state
            .fetched
            .lock()
            .await
            .is_none_or(|at| at.elapsed() >= self.max_age);
        if !stale {
            if let Some(key) = self.state.keys.load().find(kid) {
                return Ok(key.clone());
            }
        }
        self.refresh().await?;
        self.state
            .keys
            .load()
            .find(kid)
            .cloned()
            .ok_or_else(|| AuthError::Invalid(format!("unknown key `{kid}`")))
    }

    /// Fetches the set, unless it was fetched less than the floor ago.
    async fn refresh(&self) -> Result<(), AuthError> {
        let mut fetched = self.state.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < self.min_interval) {
            return Ok(());
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        let fetched_from = self.target(url);
        let answer = match &fetched_from {
            Ok(target) => self
                .http
                .get_json::<JwkSet>(target, None)
                .await
                .map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        };
        match answer {
            Ok(set) => {
                self.state.keys.store(Arc::new(set));
                *fetched = Some(Instant::now());
                Ok(())
            }
            Err(err) => {
                // Fail closed, but keep the keys we had: a token signed with one of them
                // still verifies while the issuer is briefly away.
                tracing::warn!(%url, error = %err, "JWKS fetch failed");
                if self.state.keys.load().keys.is_empty() {
                    Err(AuthError::Unavailable(err.to_string()))
                } else {
                    Ok(())
                }
            }
        }
    }
}
