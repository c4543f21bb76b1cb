//! A route marked deprecated: its answers say so (RFC 9745 `Deprecation`), when it ends
//! (RFC 8594 `Sunset`) and where to read about moving on (`Link`).

use http::{HeaderMap, HeaderName, HeaderValue};

/// The notices a deprecated route's answers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The `Deprecation` value: `@<unix seconds>` of when it was deprecated.
    pub deprecation: HeaderValue,
    /// The `Sunset` value (an HTTP date), if the route has an end date.
    pub sunset: Option<HeaderValue>,
    /// A `Link` to the migration guide, if any.
    pub link: Option<HeaderValue>,
}

impl Deprecation {
    /// Adds the notices to an answer.
    pub fn on_response(&self, headers: &mut HeaderMap) {
        headers.insert(HeaderName::from_static("deprecation"), self.deprecation.clone());
        if let Some(sunset) = &self.sunset {
            headers.insert(HeaderName::from_static("sunset"), sunset.clone());
        }
        if let Some(link) = &self.link {
            headers.append(http::header::LINK, link.clone());
        }
    }
}
