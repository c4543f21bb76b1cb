//! A route's policies, the inbound path's counterpart of the SDK's resilient stack: each in
//! a module of its own holding its configuration, what it does to a request (and to the
//! answer) and its error. [`Policies::admit`] applies them in request order —
//!
//! 1. [`cors`]: a preflight is answered here (or refused);
//! 2. [`ratelimit`] by client address or header: before the credential is checked, so a flood
//!    of bad tokens is refused by the limit, not verified one signature at a time (Envoy's
//!    local rate limit before its JWT filter);
//! 3. [`auth`]: a bearer token or an API key, as the route asks — then [`ratelimit`] when it
//!    counts by the identity just found;
//! 4. [`body_limit`]: a body declaring more than the route takes;
//! 5. [`fault`]: an injected error or delay —
//!
//! and on the way upstream [`Policies::on_request`] writes the identity and the route's
//! request [`headers`] rules; on the way back [`Policies::on_response`] applies the response
//! rules, the rate limit's headers, CORS and [`deprecation`] notices. A refusal is a
//! [`PolicyError`], told to the client by the policy that refused.

mod apikeys;
pub mod auth;
pub mod body_limit;
pub mod cors;
pub mod deprecation;
pub mod fault;
pub mod headers;
pub mod ratelimit;

use flotilla::auth::{AuthError, Identity};
use flotilla_api::Problem;
use http::{HeaderMap, HeaderValue, Method};

pub use apikeys::{digest_text, parse_digest, ApiKeys};
pub use body_limit::BodyLimit;
pub use cors::Cors;
pub use deprecation::Deprecation;
pub use fault::Fault;
pub use headers::HeaderRules;
pub use ratelimit::{RateLimit, RateLimitKey, Verdict};

/// All policies of one route.
#[derive(Debug, Default)]
pub struct Policies {
    /// Largest request body accepted (413 beyond).
    pub max_body: Option<BodyLimit>,
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

/// Why a policy refused a request.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A CORS preflight the route does not allow.
    #[error(transparent)]
    Cors(#[from] cors::Refused),
    /// No credential, or one not accepted.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Over the rate limit.
    #[error(transparent)]
    RateLimited(#[from] ratelimit::Limited),
    /// A body over the limit.
    #[error(transparent)]
    BodyTooLarge(#[from] body_limit::TooLarge),
    /// An injected fault.
    #[error(transparent)]
    Fault(#[from] fault::Injected),
}

impl PolicyError {
    /// The problem document the client sees.
    pub fn to_problem(&self) -> Problem {
        match self {
            PolicyError::Cors(err) => err.to_problem(),
            PolicyError::Auth(err) => auth::problem(err),
            PolicyError::RateLimited(err) => err.to_problem(),
            PolicyError::BodyTooLarge(err) => err.to_problem(),
            PolicyError::Fault(err) => err.to_problem(),
        }
    }

    /// The headers the refusal carries (a challenge, `Retry-After`).
    pub fn on_response(&self, headers: &mut HeaderMap) {
        match self {
            PolicyError::Auth(err) => {
                headers.insert(http::header::WWW_AUTHENTICATE, auth::challenge(err));
            }
            PolicyError::RateLimited(err) => err.on_response(headers),
            _ => {}
        }
    }
}

/// What the policies decided about a request that may go on.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Who is calling, when the route asked.
    pub identity: Option<Identity>,
    /// What the rate limit leaves, when the route has one.
    pub remaining: Option<u64>,
}

/// The outcome of [`Policies::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Go on upstream.
    Go(Admitted),
    /// Answer a preflight with `204` and these headers.
    Preflight(HeaderMap),
}

impl Policies {
    /// Applies the inbound policies in request order to a request from `client` whose body
    /// declares `length`.
    pub async fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        client: std::net::IpAddr,
        length: Option<u64>,
    ) -> Result<Admission, PolicyError> {
        if let Some(cors) = &self.cors {
            if let Some(answer) = cors.admit(method, headers)? {
                return Ok(Admission::Preflight(answer));
            }
        }
        let before_auth = self.rate_limit.as_ref().filter(|limit| !limit.keys_on_identity());
        let mut remaining = match before_auth {
            Some(limit) => Some(limit.admit(client, headers, None)?),
            None => None,
        };
        let identity = auth::identify(self.auth.as_ref(), self.api_keys.as_ref(), headers).await?;
        if let Some(limit) = self.rate_limit.as_ref().filter(|limit| limit.keys_on_identity()) {
            remaining = Some(limit.admit(client, headers, identity.as_ref().map(|i| i.subject.as_str()))?);
        }
        if let Some(limit) = &self.max_body {
            limit.check(length)?;
        }
        if let Some(fault) = &self.fault {
            fault.apply().await?;
        }
        Ok(Admission::Go(Admitted { identity, remaining }))
    }

    /// Writes what the policies add to a request going upstream: the identity, then the
    /// route's request header rules.
    pub fn on_request(&self, admitted: &Admitted, headers: &mut HeaderMap) {
        auth::on_request(admitted.identity.as_ref(), headers);
        self.request_headers.apply(headers);
    }

    /// Adds what the policies add to an answer going back.
    pub fn on_response(&self, admitted: &Admitted, request_origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        self.response_headers.apply(headers);
        if let (Some(limit), Some(remaining)) = (&self.rate_limit, admitted.remaining) {
            limit.on_response(remaining, headers);
        }
        if let (Some(cors), Some(origin)) = (&self.cors, request_origin) {
            cors.on_response(origin, headers);
        }
        if let Some(deprecation) = &self.deprecation {
            deprecation.on_response(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header;

    use super::*;

    fn policies() -> Policies {
        Policies {
            cors: Some(Cors {
                origins: vec!["https://shop.example".into()],
                methods: vec![Method::POST],
                headers: Vec::new(),
                max_age: Duration::from_secs(60),
                credentials: false,
            }),
            api_keys: Some(ApiKeys {
                header: http::HeaderName::from_static("x-api-key"),
                keys: vec![(parse_digest(&digest_text("k")).unwrap(), "partner".into())],
            }),
            rate_limit: Some(RateLimit::new(RateLimitKey::Subject, 1, Duration::from_secs(60), 2)),
            max_body: Some(BodyLimit(10)),
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[tokio::test]
    async fn policies_apply_in_request_order() {
        let policies = policies();
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        // A preflight is answered before any credential is asked for.
        let preflight = headers(&[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
        ]);
        let answer = policies.admit(&Method::OPTIONS, &preflight, client, None).await;
        assert!(matches!(answer, Ok(Admission::Preflight(_))), "{answer:?}");
        // No key: refused before the rate limit counts anything.
        let none = policies.admit(&Method::POST, &HeaderMap::new(), client, Some(1)).await;
        assert!(matches!(none, Err(PolicyError::Auth(_))), "{none:?}");
        // The key's holder: admitted, counted; a body over the limit is refused after the
        // rate limit counted it.
        let keyed = headers(&[("x-api-key", "k")]);
        let Ok(Admission::Go(admitted)) = policies.admit(&Method::POST, &keyed, client, Some(10)).await else {
            panic!("the key's holder goes on");
        };
        assert_eq!(admitted.identity.as_ref().map(|i| i.subject.as_str()), Some("partner"));
        assert_eq!(admitted.remaining, Some(1));
        let big = policies.admit(&Method::POST, &keyed, client, Some(11)).await;
        assert!(matches!(big, Err(PolicyError::BodyTooLarge(_))), "{big:?}");
        let limited = policies.admit(&Method::POST, &keyed, client, None).await;
        let Err(PolicyError::RateLimited(refusal)) = limited else {
            panic!("the burst is spent: {limited:?}");
        };
        let mut refused = HeaderMap::new();
        PolicyError::RateLimited(refusal).on_response(&mut refused);
        assert!(refused.contains_key(header::RETRY_AFTER));
        // On the way up the identity replaces what the client wrote; on the way back the
        // answer says what is left.
        let mut upstream = headers(&[("x-auth-subject", "admin")]);
        policies.on_request(&admitted, &mut upstream);
        assert_eq!(upstream["x-auth-subject"], "partner");
        let mut answer = HeaderMap::new();
        let origin = HeaderValue::from_static("https://shop.example");
        policies.on_response(&admitted, Some(&origin), &mut answer);
        assert_eq!(answer["ratelimit"], "limit=2, remaining=1");
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
    }

    /// A limit by address counts a request before its credential is looked at: past the
    /// burst, bad keys are refused by the limit (429), not checked one by one (401).
    #[tokio::test]
    async fn a_limit_by_address_refuses_a_flood_of_bad_credentials_before_auth() {
        let policies = Policies {
            rate_limit: Some(RateLimit::new(RateLimitKey::ClientIp, 1, Duration::from_secs(60), 3)),
            ..policies()
        };
        let client = std::net::IpAddr::from([192, 0, 2, 7]);
        let bad = headers(&[("x-api-key", "guess")]);
        for _ in 0..3 {
            let refused = policies.admit(&Method::POST, &bad, client, None).await;
            assert!(matches!(refused, Err(PolicyError::Auth(_))), "{refused:?}");
        }
        let limited = policies.admit(&Method::POST, &bad, client, None).await;
        assert!(matches!(limited, Err(PolicyError::RateLimited(_))), "{limited:?}");
        // The good key from the same address waits its turn too; another address does not.
        let good = headers(&[("x-api-key", "k")]);
        let same = policies.admit(&Method::POST, &good, client, None).await;
        assert!(matches!(same, Err(PolicyError::RateLimited(_))), "{same:?}");
        let other = policies
            .admit(&Method::POST, &good, std::net::IpAddr::from([192, 0, 2, 8]), None)
            .await;
        assert!(matches!(other, Ok(Admission::Go(_))), "{other:?}");
    }

    #[tokio::test]
    async fn an_injected_fault_is_the_last_word() {
        let policies = Policies {
            fault: Some(Fault {
                delay_share: 0.0,
                delay: Duration::ZERO,
                abort_share: 1.0,
                abort_status: 503,
            }),
            ..Default::default()
        };
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        let err = policies
            .admit(&Method::GET, &HeaderMap::new(), client, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_problem().status, 503);
    }
}
