//! The one place where a failed request becomes a response: RFC 9457 problem+json.

use bytes::Bytes;
use flotilla_api::problem::CONTENT_TYPE;
use flotilla_api::Problem;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, Full};

use crate::ProxyBody;

/// Why the gateway answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The call upstream failed after retries (or could not be made).
    #[error(transparent)]
    Call(#[from] flotilla::resilience::CallError),
    /// The request body is larger than the gateway reads.
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request's path cannot be normalized safely.
    #[error("path refused: {0}")]
    Path(#[from] crate::normalize::PathError),
    /// The request's headers were refused at the edge.
    #[error("request refused: {0}")]
    Edge(crate::edge::EdgeError),
    /// The request's head could not be read (the connection ends after the answer).
    #[error("request head refused: {0}")]
    Head(crate::h1::head::HeadError),
    /// The upstream's response had ambiguous framing.
    #[error("upstream response refused: {0}")]
    UpstreamFraming(crate::edge::EdgeError),
    /// The route's rate limit refused the request.
    #[error("rate limited; retry in {retry_after:?}")]
    RateLimited {
        /// When a request would be let through.
        retry_after: std::time::Duration,
        /// The burst size.
        limit: u64,
        /// The `RateLimit-Policy` value.
        policy: String,
    },
    /// Fault injection answered instead of the upstream.
    #[error("fault injected: {0}")]
    Fault(u16),
    /// A CORS preflight from an origin, or for a method, the route does not allow.
    #[error("CORS preflight refused")]
    CorsRefused,
    /// The route's auth policy refused the request.
    #[error(transparent)]
    Auth(#[from] flotilla::auth::AuthError),
}

impl GatewayError {
    /// The problem document a client sees. Internals stay in the log.
    pub fn to_problem(&self) -> Problem {
        match self {
            GatewayError::NoRoute(path) => Problem::not_found(format!("no route matches `{path}`")),
            GatewayError::Call(err) => err.to_problem(),
            GatewayError::BodyTooLarge(limit) => Problem::new(413, "body-too-large", "Content too large")
                .with_detail(format!("the request body is over {limit} bytes")),
            GatewayError::BadRequest(reason) => {
                Problem::new(400, "bad-request", "Bad request").with_detail(reason.clone())
            }
            GatewayError::Path(err) => Problem::new(400, "bad-path", "Bad request").with_detail(err.to_string()),
            GatewayError::Edge(err) if err.status() == 431 => {
                Problem::new(431, "headers-too-large", "Request header fields too large").with_detail(err.to_string())
            }
            GatewayError::Edge(err) => Problem::new(400, "bad-headers", "Bad request").with_detail(err.to_string()),
            GatewayError::Head(crate::h1::head::HeadError::Framing(err)) => {
                GatewayError::Edge(err.clone()).to_problem()
            }
            GatewayError::Head(err) if err.status() == 431 => {
                Problem::new(431, "headers-too-large", "Request header fields too large").with_detail(err.to_string())
            }
            GatewayError::Head(err) => Problem::new(400, "bad-request", "Bad request").with_detail(err.to_string()),
            GatewayError::UpstreamFraming(_) => Problem::new(502, "upstream-unavailable", "Bad gateway")
                .with_detail("the upstream's response was malformed"),
            GatewayError::RateLimited { retry_after, .. } => Problem::new(429, "rate-limited", "Too many requests")
                .with_detail(format!("retry in {} ms", retry_after.as_millis().max(1))),
            GatewayError::Fault(status) => Problem::new(*status, "fault-injected", "Fault injected")
                .with_detail("this route answers a share of requests with an error on purpose (fault injection)"),
            GatewayError::CorsRefused => Problem::new(403, "cors-refused", "Forbidden")
                .with_detail("this origin or method is not allowed to call this route"),
            GatewayError::Auth(err) => {
                use flotilla::auth::AuthError as A;
                match err {
                    A::Missing => {
                        Problem::new(401, "unauthorized", "Unauthorized").with_detail("this route needs a bearer token")
                    }
                    A::Invalid(_) | A::Unavailable(_) => Problem::new(401, "unauthorized", "Unauthorized")
                        .with_detail("the bearer token was not accepted"),
                    A::Forbidden(needs) => {
                        Problem::new(403, "forbidden", "Forbidden").with_detail(format!("the token lacks {needs}"))
                    }
                }
            }
        }
    }

    /// The response a client sees: the problem document, plus the headers some problems
    /// carry (`Retry-After` and `RateLimit-*` on 429).
    pub fn to_response(&self, instance: &str) -> Response<ProxyBody> {
        let mut response = problem_response(&self.to_problem().with_instance(instance.to_owned()));
        if let GatewayError::Auth(err) = self {
            let challenge = match err {
                flotilla::auth::AuthError::Missing => "Bearer realm=\"flotilla\"",
                flotilla::auth::AuthError::Forbidden(_) => "Bearer realm=\"flotilla\", error=\"insufficient_scope\"",
                _ => "Bearer realm=\"flotilla\", error=\"invalid_token\"",
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let GatewayError::RateLimited {
            retry_after,
            limit,
            policy,
        } = self
        {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            if let Ok(v) = HeaderValue::from_str(policy) {
                headers.insert(http::HeaderName::from_static("ratelimit-policy"), v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("limit={limit}, remaining=0, reset={}", secs.max(1))) {
                headers.insert(http::HeaderName::from_static("ratelimit"), v);
            }
        }
        response
    }
}

/// An empty response body.
pub fn empty_body() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

/// A problem+json response.
pub fn problem_response(problem: &Problem) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(problem.to_json()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = problem.status_code();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// A JSON response for the admin endpoints.
pub fn json_response(status: http::StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
