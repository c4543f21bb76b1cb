//! The route table: which requests go where, with which policies. Routes are read from a
//! routes file ([`file`]), matched on the normalized path and the request's host, method
//! and headers ([`matcher`]), and each is connected to its own resilient stack.

pub mod file;
pub mod matcher;

use std::borrow::Cow;
use std::path::Path;

use flotilla::client::{ClientConfig, Pool, Stack, Target};
use flotilla::config::{FileError, TomlFile};
use flotilla::discovery::Discovery;
use http::{HeaderMap, Method, Uri};

use crate::policy::Policies;
pub use matcher::{Conditions, HostMatch, PathMatch};

/// Where a route sends its requests, before it is connected to discovery and the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A registry service.
    Service(String),
    /// Static upstream URLs.
    Fixed(Vec<Uri>),
}

/// One route as read from the file, checked.
#[derive(Debug)]
pub struct RouteSpec {
    /// The route's name.
    pub name: String,
    /// The paths it matches.
    pub path: PathMatch,
    /// Host, method and header conditions.
    pub conditions: Conditions,
    /// Where its requests go.
    pub destination: Destination,
    /// What replaces a matched prefix before forwarding (`/` strips it).
    pub rewrite: Option<String>,
    /// The resilience settings of its stack.
    pub client: ClientConfig,
    /// The header whose value is the consistent-hash key.
    pub hash_header: Option<http::HeaderName>,
    /// The route's policies.
    pub policies: Policies,
}

/// Why a route table could not be built from checked routes.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route names a service but the gateway has no registry.
    #[error("route `{route}` sends to service `{service}`, which needs a control plane (--control-addr)")]
    NoDiscovery {
        /// The route.
        route: String,
        /// The service.
        service: String,
    },
}

/// What routes are connected to: the registry view and the shared connection pool.
#[derive(Clone)]
pub struct Upstreams {
    /// The registry view, when there is a control plane.
    pub discovery: Option<Discovery>,
    /// The shared connection pool.
    pub pool: Pool,
    /// The gateway's zone: endpoints there are preferred while any is usable.
    pub zone: Option<String>,
}

/// A route ready to match, with its resilient stack and policies.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The paths it matches.
    pub path: PathMatch,
    /// Host, method and header conditions.
    pub conditions: Conditions,
    /// Where its requests go, through retries, breaker and balancer.
    pub stack: Stack,
    /// What replaces a matched prefix before forwarding.
    pub rewrite: Option<String>,
    /// The header whose value is the consistent-hash key.
    pub hash_header: Option<http::HeaderName>,
    /// The route's policies.
    pub policies: Policies,
    /// The route's counters.
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    /// The path to send upstream (from the normalized path).
    pub fn upstream_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let (PathMatch::Prefix(prefix), Some(rewrite)) = (&self.path, &self.rewrite) else {
            return path.into();
        };
        let rest = &path[prefix.trim_end_matches('/').len().min(path.len())..];
        let base = rewrite.trim_end_matches('/');
        match (base.is_empty(), rest.is_empty()) {
            (true, true) => "/".into(),
            (true, false) => rest.into(),
            (false, _) => format!("{base}{rest}").into(),
        }
    }
}

/// Routes ordered so the first match is the most specific.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table from routes in any order: longer literal paths first, then more conditions.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse((r.path.specificity(), r.conditions.count())));
        Self { routes }
    }

    /// Connects checked routes to the registry and the pool.
    pub fn build(specs: Vec<RouteSpec>, upstreams: &Upstreams) -> Result<Self, BuildError> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let target = match spec.destination {
                Destination::Service(service) => match &upstreams.discovery {
                    Some(discovery) => Target::service(service, discovery.clone()),
                    None => {
                        return Err(BuildError::NoDiscovery {
                            route: spec.name,
                            service,
                        })
                    }
                },
                Destination::Fixed(uris) => Target::fixed(spec.name.clone(), &uris),
            };
            let mut client = spec.client;
            if client.balance.local_zone.is_none() {
                client.balance.local_zone = upstreams.zone.clone();
            }
            routes.push(Route {
                stack: Stack::new(target, &client, upstreams.pool.clone()),
                name: spec.name,
                path: spec.path,
                conditions: spec.conditions,
                rewrite: spec.rewrite,
                hash_header: spec.hash_header,
                policies: spec.policies,
                metrics: Default::default(),
            });
        }
        Ok(Self::new(routes))
    }

    /// Reads and checks a routes file.
    pub fn load(path: &Path) -> Result<Vec<RouteSpec>, FileError> {
        file::parse(&TomlFile::read(path)?)
    }

    /// Parses and checks routes from a file's text.
    pub fn parse(file: &TomlFile) -> Result<Vec<RouteSpec>, FileError> {
        file::parse(file)
    }

    /// The route for a request: the most specific whose path and conditions match.
    pub fn find(&self, path: &str, method: &Method, host: Option<&str>, headers: &HeaderMap) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.path.matches(path) && r.conditions.met(method, host, headers))
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests;
