//! The route table: which requests go where, with which policies. Routes are read from a
//! routes file ([`file`]), matched on the normalized path and the request's host, method
//! and headers ([`matcher`]), and each is connected to its own resilient stack.

pub mod file;
pub mod matcher;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

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
    /// Shares of traffic by instance version (canary), and the header that pins one.
    pub split: Option<SplitSpec>,
}

/// A canary split: weights by registered version, and a header that pins a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec {
    /// (version, weight) pairs.
    pub weights: Vec<(String, u32)>,
    /// A request carrying this header with a version's name goes to that version only.
    pub pin_header: Option<http::HeaderName>,
}

/// One version's share of a split route, with its own stack (its own balancer and breaker:
/// a failing canary trips its own breaker, not the stable version's).
#[derive(Debug)]
pub struct VersionShare {
    /// The version.
    pub version: String,
    /// Its weight.
    pub weight: u32,
    /// Where its requests go.
    pub stack: Stack,
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

/// What routes are connected to: the registry view and the shared connection pools.
#[derive(Clone)]
pub struct Upstreams {
    /// The registry view, when there is a control plane.
    pub discovery: Option<Discovery>,
    /// The shared HTTP/1.1 connection pool.
    pub pool: Pool,
    /// The shared HTTP/2 (h2c) pool, for routes with `upstream_protocol = "h2c"`.
    pub pool_h2: Pool,
    /// The gateway's zone: endpoints there are preferred while any is usable.
    pub zone: Option<String>,
    /// Under mTLS, a pool per service and protocol, each checking that the peer is that
    /// service: a route to `payments` never talks to anything else.
    per_service: Arc<std::sync::Mutex<std::collections::HashMap<(String, bool), Pool>>>,
}

impl Upstreams {
    /// Fresh pools over `discovery`, preferring endpoints in `zone`.
    pub fn new(discovery: Option<Discovery>, zone: Option<String>) -> Self {
        Self {
            discovery,
            pool: flotilla::client::pool(),
            pool_h2: flotilla::client::pool_h2(),
            zone,
            per_service: Arc::default(),
        }
    }

    fn pool_for(&self, config: &ClientConfig, service: Option<&str>) -> Pool {
        match service {
            Some(service) if flotilla::mtls::installed().is_some() => self
                .per_service
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((service.to_owned(), config.http2))
                .or_insert_with(|| flotilla::client::pool_for(Some(service), config.http2))
                .clone(),
            _ if config.http2 => self.pool_h2.clone(),
            _ => self.pool.clone(),
        }
    }
}

/// A route ready to match, with its resilient stack and policies.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The registry service it sends to, if it does.
    pub service: Option<String>,
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
    /// Version shares, when the route is split (empty otherwise).
    pub shares: Vec<VersionShare>,
    /// The header that pins a version.
    pub pin_header: Option<http::HeaderName>,
    /// The route's counters.
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    /// The stack for one request: a pinned version, else a weighted draw (`draw` in
    /// `[0, 1)`) among the shares, else the route's own.
    pub fn stack_for(&self, headers: &HeaderMap, draw: f64) -> &Stack {
        if self.shares.is_empty() {
            return &self.stack;
        }
        if let Some(pinned) = self
            .pin_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
        {
            if let Some(share) = self.shares.iter().find(|s| s.version == pinned) {
                return &share.stack;
            }
        }
        let total: u32 = self.shares.iter().map(|s| s.weight).sum();
        let mut point = draw * f64::from(total.max(1));
        for share in &self.shares {
            if point < f64::from(share.weight) {
                return &share.stack;
            }
            point -= f64::from(share.weight);
        }
        &self.shares[self.shares.len() - 1].stack
    }

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
            // Key sets named by service (`service://identity/oauth2/jwks`) are fetched from
            // one of its instances, as the registry shows them at each fetch.
            if let Some(verifier) = &spec.policies.auth {
                match &upstreams.discovery {
                    Some(discovery) => verifier.jwks().resolve_services_with(discovery.resolver()),
                    None if verifier.jwks().names_a_service() => {
                        return Err(BuildError::NoDiscovery {
                            route: spec.name,
                            service: "(the JWKS)".into(),
                        })
                    }
                    None => {}
                }
            }
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
            let (shares, pin_header) = match (&spec.split, target.service_name(), &upstreams.discovery) {
                (Some(split), Some(service), Some(discovery)) => (
                    split
                        .weights
                        .iter()
                        .map(|(version, weight)| VersionShare {
                            version: version.clone(),
                            weight: *weight,
                            stack: Stack::new(
                                Target::service_version(service, discovery.clone(), version.clone()),
                                &client,
                                upstreams.pool_for(&client, Some(service)),
                            ),
                        })
                        .collect(),
                    split.pin_header.clone(),
                ),
                _ => (Vec::new(), None),
            };
            let service = target.service_name().map(str::to_owned);
            let pool = upstreams.pool_for(&client, service.as_deref());
            routes.push(Route {
                service,
                shares,
                pin_header,
                stack: Stack::new(target, &client, pool),
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

    /// Parses and checks routes held as JSON (the config store's `gateway/routes` key: the
    /// array a routes file's `[[routes]]` make). They go through the file's parser, as TOML
    /// named `name`, so both kinds of source are checked by the same code and their mistakes
    /// read alike (the line is of the TOML rendering).
    pub fn parse_json(routes: &serde_json::Value, name: &str) -> Result<Vec<RouteSpec>, FileError> {
        let document = serde_json::json!({ "routes": routes });
        let text = toml::to_string(&document).map_err(|e| FileError {
            path: name.into(),
            line: None,
            column: None,
            message: format!("routes must be an array of route tables: {e}"),
        })?;
        file::parse(&TomlFile::from_text(name, text))
    }

    /// The routes of a routes file as the JSON the config store holds.
    pub fn file_to_json(file: &TomlFile) -> Result<serde_json::Value, FileError> {
        file::parse(file)?;
        let table: toml::Table = file.parse()?;
        let routes = table.get("routes").cloned().unwrap_or(toml::Value::Array(Vec::new()));
        serde_json::to_value(routes).map_err(|e| file.error(e.to_string()))
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
