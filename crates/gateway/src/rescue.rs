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
    /// One of the route's policies refused the request.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

impl GatewayError {
    /// The problem document a client sees. Internals stay in the log.
    pub fn to_problem(&self) -> Problem {
        match self {
            GatewayError::NoRoute(path) => Problem::not_found(format!("no route matches `{path}`")),
            GatewayError::Call(err) => err.to_problem(),
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
            GatewayError::Policy(err) => err.to_problem(),
        }
    }

    /// The response a client sees: the problem document, plus the headers some problems
    /// carry (`Retry-After` and `RateLimit-*` on 429).
    pub fn to_response(&self, instance: &str) -> Response<ProxyBody> {
        let mut response = problem_response(&self.to_problem().with_instance(instance.to_owned()));
        if let GatewayError::Policy(err) = self {
            err.on_response(response.headers_mut());
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
