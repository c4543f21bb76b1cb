//! HTTP plumbing shared by every Flotilla server and client: extractors whose rejections are
//! RFC 9457 problems, fallbacks, and a pooled JSON client.

mod client;
mod extract;
pub mod idempotency;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use client::{chain, HttpClient, HttpError, JsonResponse};
pub use extract::{Json, Query};

use axum::http::{Method, Uri};
use flotilla_api::Problem;

/// The base URL of a control plane given as `host:port` or as an `http(s)://` URL.
pub fn base_url(addr: &str) -> String {
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
}
