//! Per-route policies, applied in order on the way in — CORS preflight, rate limit, body
//! limit, fault injection, request headers — and on the way out — response headers, CORS,
//! deprecation notices.

mod apikeys;
mod cors;
mod ratelimit;

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

pub use apikeys::{digest_text, parse_digest, ApiKeys};
pub use cors::Cors;
pub use ratelimit::{RateLimit, RateLimitKey, Verdict};

/// Headers to add (replacing) and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Set these, replacing any value already there.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// Applies the rules: removals first, then additions.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Errors or delays injected into a share of a route's requests, for chaos tests (as
/// Envoy's fault filter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Delay this share of requests (0.0 to 1.0) ...
    pub delay_share: f64,
    /// ... by this long.
    pub delay: Duration,
    /// Answer this share of requests (0.0 to 1.0) ...
    pub abort_share: f64,
    /// ... with this status, without calling the upstream.
    pub abort_status: u16,
}

impl Fault {
    /// The delay for one request, given a draw in `[0, 1)`.
    pub fn delay_for(&self, draw: f64) -> Option<Duration> {
        (draw < self.delay_share).then_some(self.delay)
    }

    /// The status to abort one request with, given a draw in `[0, 1)`.
    pub fn abort_for(&self, draw: f64) -> Option<u16> {
        (draw < self.abort_share).then_some(self.abort_status)
    }
}

/// A route marked deprecated (RFC 9745 `Deprecation`, RFC 8594 `Sunset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The `Deprecation` value: `@<unix seconds>` of when it was deprecated.
    pub deprecation: HeaderValue,
    /// The `Sunset` value (an HTTP date), if the route has an end date.
    pub sunset: Option<HeaderValue>,
    /// A `Link` to the migration guide, if any.
    pub link: Option<HeaderValue>,
}

/// All policies of one route.
#[derive(Debug, Default)]
pub struct Policies {
    /// Largest request body accepted (413 beyond).
    pub max_body: Option<u64>,
    /// Headers changed on the request, before it goes upstream.
    pub request_headers: HeaderRules,
    /// Headers changed on the response, before it goes back.
    pub response_headers: HeaderRules,
    /// The rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// CORS.
    pub cors: Option<Cors>,
    /// Deprecation notices.
    pub deprecation: Option<Deprecation>,
    /// Bearer tokens required and verified (the SDK's verifier).
    pub auth: Option<flotilla::auth::Verifier>,
    /// API keys accepted (instead of, or besides, bearer tokens).
    pub api_keys: Option<ApiKeys>,
}

impl Policies {
    /// Adds the headers a response of this route carries.
    pub fn on_response(&self, request_origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        self.response_headers.apply(headers);
        if let (Some(cors), Some(origin)) = (&self.cors, request_origin) {
            cors.on_response(origin, headers);
        }
        if let Some(d) = &self.deprecation {
            headers.insert(HeaderName::from_static("deprecation"), d.deprecation.clone());
            if let Some(sunset) = &d.sunset {
                headers.insert(HeaderName::from_static("sunset"), sunset.clone());
            }
            if let Some(link) = &d.link {
                headers.append(http::header::LINK, link.clone());
            }
        }
    }
}
