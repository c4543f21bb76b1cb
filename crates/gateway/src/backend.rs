//! Backends: where a route's requests go, and which endpoint takes the next one.

use flotilla::balance::RoundRobin;
use flotilla::discovery::Discovery;
use http::uri::{Authority, Uri};

/// A route's destination.
#[derive(Debug)]
pub enum Backend {
    /// The instances of a registry service, as the discovery view has them.
    Service {
        /// The service name.
        name: String,
        /// Whose turn it is.
        balancer: RoundRobin,
    },
    /// Static upstream URLs.
    Fixed {
        /// The upstreams.
        upstreams: Vec<Uri>,
        /// Whose turn it is.
        balancer: RoundRobin,
    },
}

/// The endpoint chosen for one request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: Authority,
    /// A path prefix to put before the request's path (static upstreams with a base path).
    pub base_path: String,
    /// The registry instance id, when the endpoint came from the registry.
    pub instance_id: Option<String>,
}

/// Why no endpoint could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The service has no instance in the registry.
    #[error("no instance of service `{0}` is available")]
    NoInstance(String),
    /// The route names a service but the gateway runs without a registry.
    #[error("route sends to service `{0}` but the gateway runs without a control plane")]
    NoDiscovery(String),
}

impl Backend {
    /// A registry-service backend.
    pub fn service(name: String) -> Self {
        Backend::Service {
            name,
            balancer: RoundRobin::new(),
        }
    }

    /// A static backend.
    pub fn fixed(upstreams: Vec<Uri>) -> Self {
        Backend::Fixed {
            upstreams,
            balancer: RoundRobin::new(),
        }
    }

    /// The registry service, if this backend is one.
    pub fn service_name(&self) -> Option<&str> {
        match self {
            Backend::Service { name, .. } => Some(name),
            Backend::Fixed { .. } => None,
        }
    }

    /// Chooses the endpoint for the next request.
    pub fn pick(&self, discovery: Option<&Discovery>) -> Result<Endpoint, PickError> {
        match self {
            Backend::Service { name, balancer } => {
                let discovery = discovery.ok_or_else(|| PickError::NoDiscovery(name.clone()))?;
                let instances = discovery.instances(name);
                let instance = balancer
                    .pick(&instances)
                    .ok_or_else(|| PickError::NoInstance(name.clone()))?;
                let authority = instance
                    .address
                    .parse()
                    .map_err(|_| PickError::NoInstance(name.clone()))?;
                Ok(Endpoint {
                    authority,
                    base_path: String::new(),
                    instance_id: Some(instance.instance_id.clone()),
                })
            }
            Backend::Fixed { upstreams, balancer } => {
                // Parsing guaranteed at least one upstream, each with an authority.
                let uri = balancer
                    .pick(upstreams)
                    .ok_or_else(|| PickError::NoInstance("static".into()))?;
                let authority = uri
                    .authority()
                    .cloned()
                    .ok_or_else(|| PickError::NoInstance(uri.to_string()))?;
                Ok(Endpoint {
                    authority,
                    base_path: uri.path().trim_end_matches('/').to_owned(),
                    instance_id: None,
                })
            }
        }
    }

    /// A short description for `/-/routes` and logs.
    pub fn describe(&self) -> String {
        match self {
            Backend::Service { name, .. } => format!("service:{name}"),
            Backend::Fixed { upstreams, .. } => upstreams.iter().map(Uri::to_string).collect::<Vec<_>>().join(","),
        }
    }
}
