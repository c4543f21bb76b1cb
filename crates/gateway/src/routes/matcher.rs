//! What a route matches: a path prefix or template, and optionally hosts, methods and
//! header values. All of it is checked against the normalized path.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path or anything under it, on segment boundaries.
    Prefix(String),
    /// Segment by segment: literals, `{name}` for one segment, `{*name}` for the rest.
    Template(Vec<Segment>),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this.
    Literal(String),
    /// Any one non-empty segment.
    Param(String),
    /// Every remaining segment (possibly none).
    Rest(String),
}

impl PathMatch {
    /// Parses a template like `/api/v1/orders/{id}` or `/files/{*path}`.
    pub fn template(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with '/'"));
        }
        let parts: Vec<&str> = text[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(rest) if rest.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(format!("`{{{rest}}}` must be the last segment of `{text}`"));
                    }
                    Segment::Rest(rest[1..].to_owned())
                }
                Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Segment::Param(name.to_owned())
                }
                Some(_) => return Err(format!("`{part}` in `{text}` is not a parameter like {{id}}")),
                None if part.contains(['{', '}']) => {
                    return Err(format!("`{part}` in `{text}` mixes text and a parameter"))
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(PathMatch::Template(segments))
    }

    /// Whether `path` (normalized) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                path.starts_with(prefix)
                    && (path.len() == prefix.len() || prefix.is_empty() || path.as_bytes()[prefix.len()] == b'/')
            }
            PathMatch::Template(segments) => {
                let mut parts = path[1..].split('/');
                for segment in segments {
                    match segment {
                        Segment::Rest(_) => return true,
                        Segment::Literal(lit) => {
                            if parts.next() != Some(lit.as_str()) {
                                return false;
                            }
                        }
                        Segment::Param(_) => {
                            if parts.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }

    /// How specific the match is: more literal characters first, so `/api/v1/orders/{id}`
    /// wins over `/api`.
    pub fn specificity(&self) -> usize {
        match self {
            PathMatch::Prefix(prefix) => prefix.trim_end_matches('/').len(),
            // A template pins its whole length; rank it above a prefix of the same literal text.
            PathMatch::Template(segments) => {
                segments
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(l) => l.len() + 1,
                        Segment::Param(_) => 1,
                        Segment::Rest(_) => 0,
                    })
                    .sum::<usize>()
                    + 1
            }
        }
    }

    /// The text, for the admin page.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Prefix(p) => p.clone(),
            PathMatch::Template(segments) => segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("/{l}"),
                    Segment::Param(p) => format!("/{{{p}}}"),
                    Segment::Rest(r) => format!("/{{*{r}}}"),
                })
                .collect(),
        }
    }
}

/// A host pattern: exact, or `*.example.com` for any subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch(pub String);

impl HostMatch {
    /// Whether a request's host (port stripped, case-insensitive) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        match self.0.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => host.eq_ignore_ascii_case(&self.0),
        }
    }
}

/// Everything besides the path a route may require.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Any of these hosts (empty: any host).
    pub hosts: Vec<HostMatch>,
    /// Any of these methods (empty: any method).
    pub methods: Vec<Method>,
    /// All of these headers with exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Conditions {
    /// Whether a request meets them.
    pub fn met(&self, method: &Method, host: Option<&str>, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|m| m.matches(h))))
            && self
                .headers
                .iter()
                .all(|(name, value)| headers.get(name) == Some(value))
    }

    /// How many there are (a route with more wins a tie on the path).
    pub fn count(&self) -> usize {
        usize::from(!self.hosts.is_empty()) + usize::from(!self.methods.is_empty()) + self.headers.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            "[a-z0-9]{1,6}".prop_map(Segment::Literal),
            "[a-z]{1,4}".prop_map(Segment::Param),
        ]
    }

    proptest! {
        /// A template matches the path made by filling its parameters, and not that path
        /// with a segment added.
        #[test]
        fn templates_match_their_own_paths(segments in proptest::collection::vec(segment(), 0..6), fill in "[a-z0-9]{1,5}") {
            let text: String = segments.iter().map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param(p) => format!("/{{{p}}}"),
                Segment::Rest(_) => unreachable!(),
            }).collect();
            let text = if text.is_empty() { "/".to_owned() } else { text };
            let matcher = PathMatch::template(&text).unwrap();
            let path: String = segments.iter().map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                _ => format!("/{fill}"),
            }).collect();
            if !segments.is_empty() {
                prop_assert!(matcher.matches(&path), "{} should match {}", text, path);
                let longer = format!("{path}/extra");
                prop_assert!(!matcher.matches(&longer));
            }
        }

        #[test]
        fn matching_never_panics(template in "\\PC{0,30}", path in "/\\PC{0,30}") {
            if let Ok(m) = PathMatch::template(&template) {
                let _ = m.matches(&path);
            }
            let _ = PathMatch::Prefix(template).matches(&path);
        }
    }

    #[test]
    fn templates_match_segment_by_segment() {
        let t = PathMatch::template("/api/v1/orders/{id}").unwrap();
        assert!(t.matches("/api/v1/orders/42"));
        assert!(!t.matches("/api/v1/orders"));
        assert!(!t.matches("/api/v1/orders/"));
        assert!(!t.matches("/api/v1/orders/42/lines"));
        let rest = PathMatch::template("/files/{*path}").unwrap();
        assert!(rest.matches("/files/a/b/c"));
        assert!(rest.matches("/files"));
        assert!(PathMatch::template("/a/{*x}/b").is_err());
        assert!(PathMatch::template("/a/x{id}").is_err());
        assert!(PathMatch::template("a").is_err());
        assert!(t.specificity() > PathMatch::Prefix("/api/v1/orders".into()).specificity());
    }

    #[test]
    fn hosts_exact_and_wildcard() {
        assert!(HostMatch("shop.example.com".into()).matches("SHOP.example.com:8080"));
        assert!(HostMatch("*.example.com".into()).matches("api.example.com"));
        assert!(!HostMatch("*.example.com".into()).matches("example.com"));
        assert!(!HostMatch("*.example.com".into()).matches("evilexample.com"));
    }
}
