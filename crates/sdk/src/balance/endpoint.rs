//! An endpoint: one address to send to, from the registry or from a static URL.

use flotilla_api::registry::meta;
use flotilla_api::Instance;
use http::uri::{Authority, Scheme, Uri};

/// One place a request can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its identity for statistics and "already tried": the address, `host:port`.
    pub id: String,
    /// How to connect: `https` to an instance that serves mTLS.
    pub scheme: Scheme,
    /// Where to connect.
    pub authority: Authority,
    /// A path to put before the request's path (static upstreams with a base path).
    pub base_path: String,
    /// Relative share of traffic (metadata `weight`, default 1).
    pub weight: u32,
    /// Availability zone (metadata `zone`).
    pub zone: Option<String>,
    /// The registry instance id, for endpoints from the registry.
    pub instance_id: Option<String>,
}

impl Endpoint {
    /// The endpoint of a registry instance; `None` if its address is unusable.
    pub fn from_instance(instance: &Instance) -> Option<Self> {
        let authority: Authority = instance.address.parse().ok()?;
        Some(Self {
            id: instance.address.clone(),
            scheme: if instance.serves_mtls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority,
            base_path: String::new(),
            weight: instance
                .metadata
                .get(meta::WEIGHT)
                .and_then(|w| w.parse().ok())
                .filter(|w| *w > 0)
                .unwrap_or(1),
            zone: instance.metadata.get(meta::ZONE).cloned(),
            instance_id: Some(instance.instance_id.clone()),
        })
    }

    /// The endpoint of a static `http(s)://host:port[/base]` URL; `None` without a host.
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        let authority = uri.authority()?.clone();
        Some(Self {
            id: authority.to_string(),
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            weight: 1,
            zone: None,
            instance_id: None,
        })
    }
}
