//! Where a call's endpoints come from: a registry service (through discovery, converted once
//! per registry revision) or a fixed list of URLs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Uri;

use crate::balance::Endpoint;
use crate::discovery::Discovery;

/// The endpoints of one destination.
pub enum Target {
    /// The instances of a registry service.
    Service {
        /// The service name.
        name: String,
        /// The registry view.
        discovery: Discovery,
        /// Only instances that registered this version (canary splits).
        version: Option<String>,
        /// The endpoints at the view's last revision.
        cache: ArcSwap<(u64, Arc<[Endpoint]>)>,
    },
    /// Static upstreams.
    Fixed {
        /// A name for errors and logs.
        name: String,
        /// The endpoints.
        endpoints: Arc<[Endpoint]>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service {
                name, version: None, ..
            } => write!(f, "service:{name}"),
            Target::Service {
                name, version: Some(v), ..
            } => write!(f, "service:{name}@{v}"),
            Target::Fixed { endpoints, .. } => {
                let ids: Vec<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
                write!(f, "{}", ids.join(","))
            }
        }
    }
}

impl Target {
    /// A registry service's instances.
    pub fn service(name: impl Into<String>, discovery: Discovery) -> Self {
        Target::Service {
            name: name.into(),
            discovery,
            version: None,
            cache: ArcSwap::from_pointee((u64::MAX, Arc::from(Vec::new()))),
        }
    }

    /// The instances of a registry service that registered `version`.
    pub fn service_version(name: impl Into<String>, discovery: Discovery, version: impl Into<String>) -> Self {
        Target::Service {
            name: name.into(),
            discovery,
            version: Some(version.into()),
            cache: ArcSwap::from_pointee((u64::MAX, Arc::from(Vec::new()))),
        }
    }

    /// Static upstream URLs (those without a host are skipped).
    pub fn fixed(name: impl Into<String>, uris: &[Uri]) -> Self {
        Target::Fixed {
            name: name.into(),
            endpoints: uris.iter().filter_map(Endpoint::from_uri).collect::<Vec<_>>().into(),
        }
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        match self {
            Target::Service { name, .. } | Target::Fixed { name, .. } => name,
        }
    }

    /// The registry service, if this target is one.
    pub fn service_name(&self) -> Option<&str> {
        match self {
            Target::Service { name, .. } => Some(name),
            Target::Fixed { .. } => None,
        }
    }

    /// Tells when the destination's instances may have changed (a registry revision); `None`
    /// for static upstreams, which never change.
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Target::Service { discovery, .. } => Some(discovery.changes()),
            Target::Fixed { .. } => None,
        }
    }

    /// A digest of which instances the destination has now (their registry ids, or their
    /// addresses): it changes when an instance comes or goes, or restarts under a new id.
    pub fn instances_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut ids: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| e.instance_id.clone().unwrap_or_else(|| e.id.clone()))
            .collect();
        ids.sort_unstable();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ids.hash(&mut hasher);
        hasher.finish()
    }

    /// The current endpoints. The same `Arc` is returned until the registry changes, which
    /// lets the balancer keep its statistics without re-syncing on every call.
    pub fn endpoints(&self) -> Arc<[Endpoint]> {
        match self {
            Target::Fixed { endpoints, .. } => endpoints.clone(),
            Target::Service {
                name,
                discovery,
                version,
                cache,
            } => {
                let snapshot = discovery.snapshot();
                let cached = cache.load();
                if cached.0 == snapshot.index {
                    return cached.1.clone();
                }
                let endpoints: Arc<[Endpoint]> = snapshot
                    .services
                    .get(name)
                    .map(|instances| {
                        instances
                            .iter()
                            .filter(|i| version.as_ref().is_none_or(|v| &i.version == v))
                            .filter_map(Endpoint::from_instance)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into();
                cache.store(Arc::new((snapshot.index, endpoints.clone())));
                endpoints
            }
        }
    }
}
