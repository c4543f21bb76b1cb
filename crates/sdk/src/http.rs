//! HTTP plumbing shared by every Flotilla server and client: extractors whose rejections are
//! RFC 9457 problems, fallbacks, and a pooled JSON client.

pub mod chunked;
mod client;
mod extract;
pub mod fields;
pub mod idempotency;
mod serve;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use client::{chain, HttpClient, HttpError, JsonResponse, Replicas};
pub use extract::{Json, Query};
pub use serve::serve;

use axum::http::{Method, Uri};
use flotilla_api::Problem;

/// The client's address as the gateway settled it (from the connection, or from a trusted
/// proxy's `X-Forwarded-For`): the one header a service reads a caller's address from. The
/// gateway drops a client's own value.
pub static CLIENT_ADDRESS: axum::http::HeaderName = axum::http::HeaderName::from_static("x-flotilla-client-address");

/// The base URL of a control plane given as `host:port` or as an `http(s)://` URL; of a list
/// of replicas (`h1:7070,h2:7070`), the first one's (an [`HttpClient::failing_over`]
/// sends what is written against it to the replica in use).
pub fn base_url(addr: &str) -> String {
    let addr = addr.split(',').map(str::trim).find(|a| !a.is_empty()).unwrap_or(addr);
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Fallback for paths no route matches: 404 problem+json naming the path.
pub async fn not_found(method: Method, uri: Uri) -> Problem {
    Problem::not_found(format!("no route for {method} {}", uri.path())).with_instance(uri.path().to_owned())
}

/// Fallback for a known path with a method it does not take: 405 problem+json.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(405, "method-not-allowed", "Method not allowed")
        .with_detail(format!("{} does not accept {method}", uri.path()))
        .with_instance(uri.path().to_owned())
}

/// Adds the problem+json fallbacks to a router, so no error leaves as an empty body.
pub fn with_problem_fallbacks<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(safe_answers))
}

/// The most of a non-problem error body kept as the problem's detail.
const DETAIL_KEPT: usize = 240;

/// What every answer of a service gets on its way out. An error that is not problem+json yet
/// (an extractor's plain-text rejection, a 413 from a body limit) becomes problem+json with
/// the same status, its text kept as the detail; every answer says `nosniff`; and an answer
/// to a request that carried credentials says `Cache-Control: no-store`, as it may hold
/// personal data no cache should keep.
pub async fn safe_answers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let authenticated = request.headers().contains_key(header::AUTHORIZATION);
    let mut response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let (parts, body) = response.into_parts();
        let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let title = status.canonical_reason().unwrap_or("Error");
        let slug = title.to_ascii_lowercase().replace([' ', '\''], "-");
        let mut problem = Problem::new(status.as_u16(), &slug, title);
        let detail: String = text.trim().chars().take(DETAIL_KEPT).collect();
        if !detail.is_empty() {
            problem = problem.with_detail(detail);
        }
        let mut rebuilt = axum::response::IntoResponse::into_response(problem);
        for (name, value) in &parts.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                rebuilt.headers_mut().append(name, value.clone());
            }
        }
        response = rebuilt;
    }
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if authenticated {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The tokens of a comma-separated header (`Connection`, `TE`, `Transfer-Encoding`) in all
/// its lines, trimmed, empty ones left out.
pub fn header_tokens<'a>(
    headers: &'a http::HeaderMap,
    name: &http::header::HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_plain_error_becomes_problem_json_and_every_answer_is_safe_to_show() {
        let app = with_problem_fallbacks(
            axum::Router::new()
                .route(
                    "/plain",
                    post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded") }),
                )
                .route("/mine", get(|| async { "personal" })),
        );
        let response = app
            .clone()
            .oneshot(Request::post("/plain").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (problem.status, problem.slug(), problem.detail.as_deref()),
            (413, "payload-too-large", Some("length limit exceeded"))
        );
        let response = app
            .oneshot(
                Request::get("/mine")
                    .header("authorization", "Bearer x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}
