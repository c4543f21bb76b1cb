//! The routes file. Every key is in `docs/routes.md`; errors name the file, line and key.
//!
//! ```toml
//! [[routes]]
//! path = "/api/v1/orders/{id}"     # or prefix = "/api/v1/orders"
//! methods = ["GET"]
//! service = "orders"               # or upstreams = ["http://127.0.0.1:9000"]
//! rate_limit = { requests = 100, per = "1s", burst = 20 }
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla::balance::Strategy;
use flotilla::client::ClientConfig;
use flotilla::config::{FileError, TomlFile};
use http::{HeaderName, HeaderValue, Method, Uri};
use serde::Deserialize;
use toml::Spanned;

use super::{Conditions, Destination, HostMatch, PathMatch, RouteSpec, SplitSpec};
use crate::policy::{
    parse_digest, ApiKeys, BodyLimit, Cors, Deprecation, Fault, HeaderRules, Policies, RateLimit, RateLimitKey,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: Vec<RouteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    name: Option<String>,
    prefix: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    service: Option<Spanned<String>>,
    upstreams: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    strip_prefix: bool,
    rewrite_prefix: Option<String>,
    timeout: Option<Spanned<String>>,
    per_try_timeout: Option<Spanned<String>>,
    attempts: Option<Spanned<u32>>,
    balance: Option<Strategy>,
    hash_header: Option<String>,
    max_body: Option<Spanned<String>>,
    request_headers: Option<HeaderRulesConfig>,
    response_headers: Option<HeaderRulesConfig>,
    rate_limit: Option<Spanned<RateLimitConfig>>,
    fault: Option<Spanned<FaultConfig>>,
    cors: Option<Spanned<CorsConfig>>,
    deprecated: Option<Spanned<DeprecatedConfig>>,
    auth: Option<Spanned<AuthConfig>>,
    versions: Option<Spanned<BTreeMap<String, u32>>>,
    version_header: Option<String>,
    upstream_protocol: Option<Spanned<String>>,
    api_keys: Option<Spanned<ApiKeysConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeysConfig {
    #[serde(default = "default_api_key_header")]
    header: String,
    /// Client name → `sha256:<hex>` of its key.
    keys: BTreeMap<String, String>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    jwks: String,
    /// Unset: the system's public URL (`FLOTILLA_PUBLIC_URL`), which identity names as `iss`.
    #[serde(default = "flotilla::auth::public_url")]
    issuer: String,
    audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    algorithms: Vec<String>,
    leeway: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["EdDSA".into(), "RS256".into(), "ES256".into()]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRulesConfig {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitConfig {
    requests: u64,
    per: String,
    burst: Option<u64>,
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "ip".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultConfig {
    delay: Option<String>,
    #[serde(default)]
    delay_percent: f64,
    abort_status: Option<u16>,
    #[serde(default)]
    abort_percent: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsConfig {
    origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    methods: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
    max_age: Option<String>,
    #[serde(default)]
    credentials: bool,
}

fn default_cors_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeprecatedConfig {
    since: String,
    sunset: Option<String>,
    link: Option<String>,
}

/// Parses and checks a routes file's routes.
pub(super) fn parse(file: &TomlFile) -> Result<Vec<RouteSpec>, FileError> {
    let parsed: RoutesFile = file.parse()?;
    let mut routes: Vec<RouteSpec> = Vec::with_capacity(parsed.routes.len());
    for config in parsed.routes {
        let route = parse_route(file, config)?;
        if routes
            .iter()
            .any(|r| r.path == route.path && r.conditions == route.conditions)
        {
            return Err(file.error(format!(
                "route `{}` matches the same requests as an earlier one",
                route.name
            )));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn parse_route(file: &TomlFile, config: RouteConfig) -> Result<RouteSpec, FileError> {
    // Where to point errors about this route as a whole.
    let (path, anchor) = match (&config.prefix, &config.path) {
        (Some(prefix), None) => {
            if !prefix.get_ref().starts_with('/') {
                return Err(file.error_at(
                    prefix.span(),
                    format!("prefix `{}` must start with '/'", prefix.get_ref()),
                ));
            }
            (PathMatch::Prefix(prefix.get_ref().clone()), prefix.span())
        }
        (None, Some(template)) => {
            let path = PathMatch::template(template.get_ref())
                .map_err(|e| file.error_at(template.span(), format!("path: {e}")))?;
            (path, template.span())
        }
        (Some(prefix), Some(_)) => return Err(file.error_at(prefix.span(), "a route has `prefix` or `path`, not both")),
        (None, None) => return Err(file.error("every route needs a `prefix` or a `path`")),
    };
    let at = |message: String| file.error_at(anchor.clone(), message);

    let destination = match (&config.service, &config.upstreams) {
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
            return Err(at(format!(
                "route `{}` needs exactly one of `service` or `upstreams`",
                path.describe()
            )))
        }
    };

    let methods = config
        .methods
        .iter()
        .map(|m| {
            m.to_ascii_uppercase()
                .parse::<Method>()
                .map_err(|_| at(format!("methods: `{m}` is not a method")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers = config
        .headers
        .iter()
        .map(|(k, v)| header(k, v).map_err(|e| at(format!("headers: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = Conditions {
        hosts: config.hosts.iter().map(|h| HostMatch(h.to_ascii_lowercase())).collect(),
        methods,
        headers,
    };

    let rewrite = match (config.strip_prefix, &config.rewrite_prefix) {
        (true, Some(_)) => {
            return Err(at(
                "`strip_prefix` and `rewrite_prefix` together say the same thing twice".into(),
            ))
        }
        (true, None) => Some("/".to_owned()),
        (false, Some(r)) if !r.starts_with('/') => return Err(at(format!("rewrite_prefix `{r}` must start with '/'"))),
        (false, r) => r.clone(),
    };
    if rewrite.is_some() && matches!(path, PathMatch::Template(_)) {
        return Err(at(
            "a `path` template route forwards its path as is; rewriting needs a `prefix`".into(),
        ));
    }

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
    if let Some(protocol) = &config.upstream_protocol {
        client.http2 = match protocol.get_ref().as_str() {
            "http1" => false,
            "h2c" => true,
            other => {
                return Err(file.error_at(
                    protocol.span(),
                    format!("upstream_protocol `{other}`: `http1` or `h2c`"),
                ));
            }
        };
    }
    let hash_header = match &config.hash_header {
        Some(h) => Some(
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| at(format!("hash_header `{h}` is not a header name")))?,
        ),
        None => None,
    };

    let policies = Policies {
        max_body: match &config.max_body {
            Some(size) => {
                let limit = bytes(size.get_ref()).map_err(|e| file.error_at(size.span(), format!("max_body: {e}")))?;
                Some(BodyLimit(limit))
            }
            None => None,
        },
        request_headers: header_rules(config.request_headers.as_ref())
            .map_err(|e| at(format!("request_headers: {e}")))?,
        response_headers: header_rules(config.response_headers.as_ref())
            .map_err(|e| at(format!("response_headers: {e}")))?,
        rate_limit: match &config.rate_limit {
            Some(r) => Some(rate_limit(r.get_ref()).map_err(|e| file.error_at(r.span(), format!("rate_limit: {e}")))?),
            None => None,
        },
        fault: match &config.fault {
            Some(f) => Some(fault(f.get_ref()).map_err(|e| file.error_at(f.span(), format!("fault: {e}")))?),
            None => None,
        },
        cors: match &config.cors {
            Some(c) => Some(cors(c.get_ref()).map_err(|e| file.error_at(c.span(), format!("cors: {e}")))?),
            None => None,
        },
        deprecation: match &config.deprecated {
            Some(d) => Some(deprecation(d.get_ref()).map_err(|e| file.error_at(d.span(), format!("deprecated: {e}")))?),
            None => None,
        },
        auth: match &config.auth {
            Some(a) => Some(auth(a.get_ref()).map_err(|e| file.error_at(a.span(), format!("auth: {e}")))?),
            None => None,
        },
        api_keys: match &config.api_keys {
            Some(k) => Some(api_keys(k.get_ref()).map_err(|e| file.error_at(k.span(), format!("api_keys: {e}")))?),
            None => None,
        },
    };
    if let (Some(limit), None, None) = (&policies.rate_limit, &policies.auth, &policies.api_keys) {
        if limit.key == RateLimitKey::Subject {
            return Err(at(
                "rate_limit: key `subject` needs the route's `auth` or `api_keys` policy".into(),
            ));
        }
    }

    let split = match &config.versions {
        None => {
            if config.version_header.is_some() {
                return Err(at("`version_header` pins one of `versions`; add them".into()));
            }
            None
        }
        Some(versions) => {
            let at_versions = |m: &str| file.error_at(versions.span(), format!("versions: {m}"));
            if !matches!(destination, Destination::Service(_)) {
                return Err(at_versions("splits by version need a registry `service`"));
            }
            if versions.get_ref().is_empty() || versions.get_ref().values().all(|w| *w == 0) {
                return Err(at_versions("give at least one version a weight above 0"));
            }
            let pin_header = match &config.version_header {
                Some(h) => Some(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| at(format!("version_header `{h}` is not a header name")))?,
                ),
                None => None,
            };
            Some(SplitSpec {
                weights: versions.get_ref().iter().map(|(v, w)| (v.clone(), *w)).collect(),
                pin_header,
            })
        }
    };
    let name = config
        .name
        .clone()
        .or_else(|| config.service.as_ref().map(|s| s.get_ref().clone()))
        .unwrap_or_else(|| path.describe());
    Ok(RouteSpec {
        split,
        name,
        path,
        conditions,
        destination,
        rewrite,
        client,
        hash_header,
        policies,
    })
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
    let value = HeaderValue::from_str(value).map_err(|_| format!("`{value}` is not a header value"))?;
    Ok((name, value))
}

fn header_rules(config: Option<&HeaderRulesConfig>) -> Result<HeaderRules, String> {
    let Some(config) = config else {
        return Ok(HeaderRules::default());
    };
    Ok(HeaderRules {
        set: config.set.iter().map(|(k, v)| header(k, v)).collect::<Result<_, _>>()?,
        remove: config
            .remove
            .iter()
            .map(|k| HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a header name")))
            .collect::<Result<_, _>>()?,
    })
}

fn plain_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{text}` is not a duration like `500ms` or `2s`")),
    }
}

fn duration(file: &TomlFile, value: &Spanned<String>, key: &str) -> Result<Duration, FileError> {
    plain_duration(value.get_ref()).map_err(|e| file.error_at(value.span(), format!("{key}: {e}")))
}

/// `1024`, `64KiB`, `1MiB`, `2MB`.
fn bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like `64KiB` or `1MiB`"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` (B, KiB, MiB, KB, MB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

fn rate_limit(config: &RateLimitConfig) -> Result<RateLimit, String> {
    if config.requests == 0 {
        return Err("requests must be at least 1".into());
    }
    let period = plain_duration(&config.per)?;
    let key = match config.key.as_str() {
        "ip" => RateLimitKey::ClientIp,
        "subject" => RateLimitKey::Subject,
        other => match other.strip_prefix("header:") {
            Some(h) => RateLimitKey::Header(
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` is not a header name"))?,
            ),
            None => return Err(format!("key `{other}`: `ip`, `subject` or `header:<name>`")),
        },
    };
    Ok(RateLimit::new(
        key,
        config.requests,
        period,
        config.burst.unwrap_or(config.requests),
    ))
}

fn auth(config: &AuthConfig) -> Result<flotilla::auth::Verifier, String> {
    use jsonwebtoken::Algorithm;
    match config.jwks.strip_prefix(flotilla::auth::SERVICE_SCHEME) {
        Some(rest) => {
            let service = rest.split('/').next().unwrap_or_default();
            flotilla_api::registry::validate_service_name(service).map_err(|e| format!("jwks: {e}"))?;
        }
        None => {
            let jwks: Uri = config
                .jwks
                .parse()
                .map_err(|_| format!("jwks `{}` is not a URL", config.jwks))?;
            if !matches!(jwks.scheme_str(), Some("http" | "https")) {
                return Err(format!(
                    "jwks `{}` must be an http(s) URL or service://NAME/path",
                    config.jwks
                ));
            }
        }
    }
    if config.audiences.is_empty() {
        return Err("audiences: name at least one".into());
    }
    let algorithms = config
        .algorithms
        .iter()
        .map(|a| match a.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(format!(
                "`{a}`: shared-secret algorithms cannot be verified against a published key set"
            )),
            Ok(alg) => Ok(alg),
            Err(_) => Err(format!("`{a}` is not a JWS algorithm")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(flotilla::auth::Verifier::new(
        flotilla::auth::JwksCache::new(config.jwks.clone()),
        flotilla::auth::Requirements {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms,
            leeway: match &config.leeway {
                Some(l) => humantime::parse_duration(l).map_err(|_| format!("leeway `{l}` is not a duration"))?,
                None => Duration::from_secs(30),
            },
            scopes: config.scopes.clone(),
            roles: config.roles.clone(),
        },
    ))
}

fn api_keys(config: &ApiKeysConfig) -> Result<ApiKeys, String> {
    if config.keys.is_empty() {
        return Err("keys: name at least one client".into());
    }
    Ok(ApiKeys {
        header: HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| format!("`{}` is not a header name", config.header))?,
        keys: config
            .keys
            .iter()
            .map(|(client, digest)| parse_digest(digest).map(|d| (d, client.clone())))
            .collect::<Result<_, _>>()?,
    })
}

fn fault(config: &FaultConfig) -> Result<Fault, String> {
    let share = |p: f64, key: &str| {
        if (0.0..=100.0).contains(&p) {
            Ok(p / 100.0)
        } else {
            Err(format!("{key} must be 0 to 100"))
        }
    };
    let delay = match &config.delay {
        Some(d) => plain_duration(d)?,
        None => Duration::ZERO,
    };
    let abort_status = config.abort_status.unwrap_or(503);
    if !(400..=599).contains(&abort_status) {
        return Err("abort_status must be a 4xx or 5xx status".into());
    }
    Ok(Fault {
        delay_share: share(config.delay_percent, "delay_percent")?,
        delay,
        abort_share: share(config.abort_percent, "abort_percent")?,
        abort_status,
    })
}

fn cors(config: &CorsConfig) -> Result<Cors, String> {
    if config.origins.is_empty() {
        return Err("origins: name at least one origin, or `*`".into());
    }
    if config.credentials && config.origins.iter().any(|o| o == "*") {
        return Err("credentials cannot be allowed for any origin (`*`)".into());
    }
    Ok(Cors {
        origins: config.origins.clone(),
        methods: config
            .methods
            .iter()
            .map(|m| {
                m.to_ascii_uppercase()
                    .parse::<Method>()
                    .map_err(|_| format!("`{m}` is not a method"))
            })
            .collect::<Result<_, _>>()?,
        headers: config.headers.clone(),
        max_age: match &config.max_age {
            Some(a) => plain_duration(a)?,
            None => Duration::from_secs(600),
        },
        credentials: config.credentials,
    })
}

fn deprecation(config: &DeprecatedConfig) -> Result<Deprecation, String> {
    let since = humantime::parse_rfc3339_weak(&config.since)
        .map_err(|_| format!("since: `{}` is not a date like 2026-01-31", config.since))?;
    let seconds = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let sunset = match &config.sunset {
        Some(s) => {
            let at: SystemTime =
                humantime::parse_rfc3339_weak(s).map_err(|_| format!("sunset: `{s}` is not a date"))?;
            Some(HeaderValue::from_str(&httpdate(at)).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let link = match &config.link {
        Some(l) => Some(
            HeaderValue::from_str(&format!("<{l}>; rel=\"deprecation\""))
                .map_err(|_| format!("link `{l}` is not a URL"))?,
        ),
        None => None,
    };
    Ok(Deprecation {
        deprecation: HeaderValue::from_str(&format!("@{seconds}")).map_err(|e| e.to_string())?,
        sunset,
        link,
    })
}

/// An IMF-fixdate (RFC 9110 §5.6.7), as `Sunset` wants.
fn httpdate(at: SystemTime) -> String {
    // humantime prints RFC 3339; rebuild the parts for the HTTP form.
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    let (year, month, day) = (&rfc3339[0..4], &rfc3339[5..7], &rfc3339[8..10]);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][month.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format!("{weekday}, {day} {month} {year} {h:02}:{m:02}:{s:02} GMT")
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
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: routes or an error naming the file, never a panic.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,200}") {
            if let Err(err) = parse(&TomlFile::from_text("routes.toml", text)) {
                prop_assert_eq!(err.path.to_str(), Some("routes.toml"));
            }
        }

        /// Well-formed routes with arbitrary prefixes and names parse or are refused with a line.
        #[test]
        fn generated_routes_parse_or_point_at_a_line(prefix in "[/a-z{}*]{0,12}", name in "[a-z]{1,8}") {
            let text = format!("[[routes]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nupstreams = [\"http://127.0.0.1:9\"]\n");
            match parse(&TomlFile::from_text("routes.toml", text)) {
                Ok(routes) => prop_assert_eq!(&routes[0].name, &name),
                Err(err) => prop_assert!(err.line.is_some(), "{}", err),
            }
        }
    }

    #[test]
    fn sizes_and_dates() {
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("64KiB"), Ok(65_536));
        assert_eq!(bytes("1MB"), Ok(1_000_000));
        assert!(bytes("lots").is_err());
        assert!(bytes("1 parsec").is_err());
        let at = humantime::parse_rfc3339_weak("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(httpdate(at), "Fri, 01 Jan 2027 00:00:00 GMT");
    }
}
