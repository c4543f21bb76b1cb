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

use flotilla::config::{FileError, TomlFile};
use http::Uri;
use serde::Deserialize;
use toml::Spanned;

use crate::backend::Backend;

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
}

/// A route ready to match.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The prefix it matches.
    pub prefix: String,
    /// Where its requests go.
    pub backend: Backend,
    /// Whether the prefix is removed before forwarding.
    pub strip_prefix: bool,
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

    /// Reads and checks a routes file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        Self::parse(&TomlFile::read(path)?)
    }

    /// Parses and checks routes from a file's text.
    pub fn parse(file: &TomlFile) -> Result<Self, FileError> {
        let parsed: RoutesFile = file.parse()?;
        let mut routes = Vec::with_capacity(parsed.routes.len());
        for config in parsed.routes {
            let prefix = config.prefix.get_ref();
            if !prefix.starts_with('/') {
                return Err(file.error_at(config.prefix.span(), format!("prefix `{prefix}` must start with '/'")));
            }
            if routes
                .iter()
                .any(|r: &Route| r.prefix.trim_end_matches('/') == prefix.trim_end_matches('/'))
            {
                return Err(file.error_at(config.prefix.span(), format!("prefix `{prefix}` is routed twice")));
            }
            let backend = match (&config.service, &config.upstreams) {
                (Some(service), None) => {
                    flotilla_api::registry::validate_service_name(service.get_ref())
                        .map_err(|reason| file.error_at(service.span(), format!("service: {reason}")))?;
                    Backend::service(service.get_ref().clone())
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
                    Backend::fixed(uris)
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
                .or_else(|| config.service.as_ref().map(|s| s.get_ref().clone()))
                .unwrap_or_else(|| prefix.clone());
            routes.push(Route {
                name,
                prefix: prefix.clone(),
                backend,
                strip_prefix: config.strip_prefix,
            });
        }
        Ok(Self::new(routes))
    }

    /// The route for a path: the longest prefix that matches.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The registry services the table sends to.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().filter_map(|r| r.backend.service_name())
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
        RouteTable::parse(&TomlFile::from_text("routes.toml", text))
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
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

    #[test]
    fn strip_prefix_keeps_a_rooted_path() {
        let t = table("[[routes]]\nprefix = \"/legacy/\"\nupstreams = [\"http://127.0.0.1:9\"]\nstrip_prefix = true\n")
            .unwrap();
        let r = t.find("/legacy/a/b").unwrap();
        assert_eq!(r.upstream_path("/legacy/a/b"), "/a/b");
        assert_eq!(r.upstream_path("/legacy"), "/");
        assert!(t.find("/legacyx").is_none());
    }

    #[test]
    fn errors_name_the_line() {
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
    }
}
