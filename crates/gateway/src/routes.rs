//! The route table: which path prefix goes to which backend, read from a routes file.
//!
//! ```toml
//! [[routes]]
//! prefix = "/api/v1/products"
//! service = "catalog"              # a registry service ...
//!
//! [[routes]]
//! prefix = "/legacy"
//! upstreams = ["http://127.0.0.1:9000"]   # ... or static upstream URLs
//! strip_prefix = true
//! ```

use std::path::Path;
use std::time::Duration;

use flotilla::balance::Strategy;
use flotilla::client::{ClientConfig, Pool, Stack, Target};
use flotilla::config::{FileError, TomlFile};
use flotilla::discovery::Discovery;
use http::Uri;
use serde::Deserialize;
use toml::Spanned;

/// The routes file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    /// The routes, in any order: the longest matching prefix wins.
    #[serde(default)]
    routes: Vec<RouteConfig>,
}

/// One route as written in the routes file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    /// A name for logs and metrics; defaults to the service name or the prefix.
    name: Option<String>,
    /// The path prefix to match, on segment boundaries (`/api` matches `/api/x`, not `/apix`).
    prefix: Spanned<String>,
    /// Send to the instances of this registry service.
    service: Option<Spanned<String>>,
    /// Send to these static upstreams (`http://host:port[/base]`), in turn.
    upstreams: Option<Spanned<Vec<String>>>,
    /// Remove the prefix from the path before forwarding.
    #[serde(default)]
    strip_prefix: bool,
    /// Overall time for a request, retries included (`15s`).
    timeout: Option<Spanned<String>>,
    /// Time one attempt has to get response headers (`1s`).
    per_try_timeout: Option<Spanned<String>>,
    /// Attempts in all, the first included (1 turns retries off).
    attempts: Option<Spanned<u32>>,
    /// `p2c` (default), `round_robin` or `consistent_hash`.
    balance: Option<Strategy>,
    /// The header whose value is the consistent-hash key (sticky sessions).
    hash_header: Option<String>,
}

/// Where a route sends its requests, before it is connected to discovery and the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A registry service.
    Service(String),
    /// Static upstream URLs.
    Fixed(Vec<Uri>),
}

/// One route as read from the file, checked.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The route's name.
    pub name: String,
    /// The prefix it matches.
    pub prefix: String,
    /// Where its requests go.
    pub destination: Destination,
    /// Whether the prefix is removed before forwarding.
    pub strip_prefix: bool,
    /// The resilience settings of its stack.
    pub client: ClientConfig,
    /// The header whose value is the consistent-hash key.
    pub hash_header: Option<http::HeaderName>,
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

/// A route ready to match, with its resilient stack.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The prefix it matches.
    pub prefix: String,
    /// Where its requests go, through retries, breaker and balancer.
    pub stack: Stack,
    /// Whether the prefix is removed before forwarding.
    pub strip_prefix: bool,
    /// The header whose value is the consistent-hash key.
    pub hash_header: Option<http::HeaderName>,
    /// The route's counters.
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    /// Whether `path` falls under this route's prefix, on a segment boundary.
    pub fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/' || prefix.is_empty())
    }

    /// The path to send upstream.
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix {
            return path.into();
        }
        let rest = &path[self.prefix.trim_end_matches('/').len().min(path.len())..];
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }
}

/// Routes ordered so the first match is the longest prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table from routes in any order.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.prefix
                .trim_end_matches('/')
                .len()
                .cmp(&a.prefix.trim_end_matches('/').len())
        });
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
                prefix: spec.prefix,
                strip_prefix: spec.strip_prefix,
                hash_header: spec.hash_header,
                metrics: Default::default(),
            });
        }
        Ok(Self::new(routes))
    }

    /// Reads and checks a routes file.
    pub fn load(path: &Path) -> Result<Vec<RouteSpec>, FileError> {
        Self::parse(&TomlFile::read(path)?)
    }

    /// Parses and checks routes from a file's text.
    pub fn parse(file: &TomlFile) -> Result<Vec<RouteSpec>, FileError> {
        let parsed: RoutesFile = file.parse()?;
        let mut routes = Vec::with_capacity(parsed.routes.len());
        for config in parsed.routes {
            let prefix = config.prefix.get_ref();
            if !prefix.starts_with('/') {
                return Err(file.error_at(config.prefix.span(), format!("prefix `{prefix}` must start with '/'")));
            }
            if routes
                .iter()
                .any(|r: &RouteSpec| r.prefix.trim_end_matches('/') == prefix.trim_end_matches('/'))
            {
                return Err(file.error_at(config.prefix.span(), format!("prefix `{prefix}` is routed twice")));
            }
            let backend = match (&config.service, &config.upstreams) {
                (Some(service), None) => {
                    flotilla_api::registry::validate_service_name(service.get_ref())
                        .map_err(|reason| file.error_at(service.span(), format!("service: {reason}")))?;
                    Destination::Service(service.get_ref().clone())
                }
                (None, Some(upstreams)) => {
                    let uris = upstreams
                        .get_ref()
                        .iter()
                        .map(|u| parse_upstream(u))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|reason| file.error_at(upstreams.span(), format!("upstreams: {reason}")))?;
                    if uris.is_empty() {
                        return Err(file.error_at(upstreams.span(), "upstreams: at least one URL is needed"));
                    }
                    Destination::Fixed(uris)
                }
                _ => {
                    return Err(file.error_at(
                        config.prefix.span(),
                        format!("route `{prefix}` needs exactly one of `service` or `upstreams`"),
                    ))
                }
            };
            let name = config
                .name
                .clone()
                .or_else(|| config.service.as_ref().map(|s| s.get_ref().clone()))
                .unwrap_or_else(|| prefix.clone());
            let mut client = ClientConfig {
                timeout: Duration::from_secs(15),
                ..ClientConfig::default()
            };
            if let Some(t) = &config.timeout {
                client.timeout = duration(file, t, "timeout")?;
            }
            if let Some(t) = &config.per_try_timeout {
                client.per_try_timeout = duration(file, t, "per_try_timeout")?;
            }
            if let Some(n) = &config.attempts {
                if !(1..=10).contains(n.get_ref()) {
                    return Err(file.error_at(n.span(), "attempts: 1 to 10 (1 means no retries)"));
                }
                client.retry.max_attempts = *n.get_ref();
            }
            if let Some(strategy) = config.balance {
                client.balance.strategy = strategy;
            }
            let hash_header = match &config.hash_header {
                Some(h) => Some(http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    file.error_at(config.prefix.span(), format!("hash_header `{h}` is not a header name"))
                })?),
                None => None,
            };
            routes.push(RouteSpec {
                name,
                prefix: prefix.clone(),
                destination: backend,
                strip_prefix: config.strip_prefix,
                client,
                hash_header,
            });
        }
        routes.sort_by(|a, b| {
            b.prefix
                .trim_end_matches('/')
                .len()
                .cmp(&a.prefix.trim_end_matches('/').len())
        });
        Ok(routes)
    }

    /// The route for a path: the longest prefix that matches.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn duration(file: &TomlFile, value: &Spanned<String>, key: &str) -> Result<Duration, FileError> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(file.error_at(
            value.span(),
            format!("{key}: `{}` is not a duration like `500ms` or `2s`", value.get_ref()),
        )),
    }
}

fn parse_upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{text}`: only http:// upstreams are supported"));
    }
    if uri.authority().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}` must not have a query"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<RouteTable, FileError> {
        let specs = RouteTable::parse(&TomlFile::from_text("routes.toml", text))?;
        let discovery = Discovery::fixed(flotilla_api::InstanceList {
            index: 1,
            ..Default::default()
        });
        let upstreams = Upstreams {
            discovery: Some(discovery),
            pool: flotilla::client::pool(),
            zone: None,
        };
        Ok(RouteTable::build(specs, &upstreams).unwrap())
    }

    #[tokio::test]
    async fn longest_prefix_on_segment_boundaries() {
        let t = table(
            r#"
[[routes]]
prefix = "/api/v1/products"
service = "catalog"

[[routes]]
prefix = "/"
upstreams = ["http://127.0.0.1:9000"]
"#,
        )
        .unwrap();
        assert_eq!(t.find("/api/v1/products").unwrap().name, "catalog");
        assert_eq!(t.find("/api/v1/products/7").unwrap().name, "catalog");
        assert_eq!(t.find("/api/v1/productsX").unwrap().name, "/");
        assert_eq!(t.find("/anything").unwrap().name, "/");
    }

    #[tokio::test]
    async fn strip_prefix_keeps_a_rooted_path() {
        let t = table("[[routes]]\nprefix = \"/legacy/\"\nupstreams = [\"http://127.0.0.1:9\"]\nstrip_prefix = true\n")
            .unwrap();
        let r = t.find("/legacy/a/b").unwrap();
        assert_eq!(r.upstream_path("/legacy/a/b"), "/a/b");
        assert_eq!(r.upstream_path("/legacy"), "/");
        assert!(t.find("/legacyx").is_none());
    }

    #[tokio::test]
    async fn errors_name_the_line() {
        let err = table("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nupstreams = [\"http://x:1\"]\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = table("[[routes]]\nprefix = \"/a\"\nservic = \"a\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("servic"));
        let err = table("[[routes]]\nprefix = \"/a\"\nupstreams = [\"ftp://x\"]\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = table("[[routes]]\nprefix = \"a\"\nservice = \"a\"\n").unwrap_err();
        assert!(err.message.contains("must start with '/'"), "{err}");
        let err =
            table("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\n[[routes]]\nprefix = \"/a/\"\nservice = \"b\"\n")
                .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        let err = table("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\ntimeout = \"soon\"\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        let err = table("[[routes]]\nprefix = \"/a\"\nservice = \"a\"\nattempts = 0\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
    }

    #[tokio::test]
    async fn a_service_route_needs_discovery() {
        let specs = RouteTable::parse(&TomlFile::from_text(
            "r.toml",
            "[[routes]]\nprefix = \"/a\"\nservice = \"a\"\n",
        ))
        .unwrap();
        let upstreams = Upstreams {
            discovery: None,
            pool: flotilla::client::pool(),
            zone: None,
        };
        assert!(matches!(
            RouteTable::build(specs, &upstreams),
            Err(BuildError::NoDiscovery { .. })
        ));
    }
}
