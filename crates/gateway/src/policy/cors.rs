//! CORS (Fetch standard): answers preflights itself and marks allowed responses.

use std::time::Duration;

use flotilla_api::Problem;
use http::{header, HeaderMap, HeaderValue, Method};

/// A route's CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins (`*` for any).
    pub origins: Vec<String>,
    /// Allowed methods.
    pub methods: Vec<Method>,
    /// Allowed request headers.
    pub headers: Vec<String>,
    /// How long browsers may cache a preflight.
    pub max_age: Duration,
    /// Whether credentials (cookies, Authorization) may be sent.
    pub credentials: bool,
}

/// A preflight from an origin, or for a method, the route does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CORS preflight refused")]
pub struct Refused;

impl Refused {
    /// What the client is told: 403.
    pub fn to_problem(&self) -> Problem {
        Problem::new(403, "cors-refused", "Forbidden")
            .with_detail("this origin or method is not allowed to call this route")
    }
}

impl Cors {
    /// A preflight's answer (the 204's headers) when `method` and `request` are one;
    /// `Ok(None)` for any other request, which goes on.
    pub fn admit(&self, method: &Method, request: &HeaderMap) -> Result<Option<HeaderMap>, Refused> {
        match self.preflight(method, request) {
            Some(headers) if headers.is_empty() => Err(Refused),
            answer => Ok(answer),
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        self.origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    fn allow_origin(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        // With credentials the origin must be named, never `*`.
        let value = if self.origins.iter().any(|o| o == "*") && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`): headers
    /// for a 204 if allowed, `None` if this is not a preflight or the origin is not allowed
    /// (the browser then blocks the request).
    pub fn preflight(&self, method: &Method, request: &HeaderMap) -> Option<HeaderMap> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = request.get(header::ORIGIN)?;
        let wanted = request.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut headers = HeaderMap::new();
        let method_ok = wanted
            .to_str()
            .ok()
            .and_then(|m| m.parse::<Method>().ok())
            .is_some_and(|m| self.methods.contains(&m));
        if !self.allows(origin) || !method_ok {
            return Some(headers);
        }
        self.allow_origin(origin, &mut headers);
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if !self.headers.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.headers.join(", ")) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age.as_secs()),
        );
        Some(headers)
    }

    /// Marks a response to an allowed origin.
    pub fn on_response(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        if self.allows(origin) {
            self.allow_origin(origin, headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            origins: vec!["https://shop.example".into()],
            methods: vec![Method::GET, Method::POST],
            headers: vec!["content-type".into(), "authorization".into()],
            max_age: Duration::from_secs(600),
            credentials: true,
        }
    }

    #[test]
    fn preflight_for_an_allowed_origin_and_method() {
        let mut req = HeaderMap::new();
        req.insert(header::ORIGIN, HeaderValue::from_static("https://shop.example"));
        req.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        let h = cors().preflight(&Method::OPTIONS, &req).unwrap();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        req.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(cors().preflight(&Method::OPTIONS, &req).unwrap().is_empty());
        assert!(cors().preflight(&Method::GET, &req).is_none());
    }
}
