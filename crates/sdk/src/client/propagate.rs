//! Headers that follow a request through the system: the request id, the W3C trace context
//! and the caller's credentials. The runtime captures them from the request being served;
//! the client copies them onto the calls made while serving it.

use std::future::Future;

use http::{HeaderMap, HeaderName};

/// The headers that travel on.
pub static PROPAGATED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    http::header::AUTHORIZATION,
    HeaderName::from_static("x-flotilla-caller"),
];

tokio::task_local! {
    static CURRENT: Propagated;
}

/// The propagated headers of the request being served.
#[derive(Debug, Clone, Default)]
pub struct Propagated(HeaderMap);

impl Propagated {
    /// Picks the propagated headers out of a request's headers.
    pub fn capture(headers: &HeaderMap) -> Self {
        let mut kept = HeaderMap::new();
        for name in &PROPAGATED_HEADERS {
            if let Some(value) = headers.get(name) {
                kept.insert(name.clone(), value.clone());
            }
        }
        Propagated(kept)
    }

    /// Runs `work` with these as the current request's headers.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// Adds the current request's headers to an outgoing one, where it has none of its own.
    pub fn apply(headers: &mut HeaderMap) {
        let _ = CURRENT.try_with(|current| {
            for (name, value) in &current.0 {
                if !headers.contains_key(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
        });
    }
}
