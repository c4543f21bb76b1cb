//! Checks at the edge, before a request is routed or a response goes back: what hyper's
//! parser accepts but a careful proxy must not pass on.
//!
//! hyper already refuses, on the wire: invalid or differing `Content-Length`s (`+5`, `1, 2`),
//! a `Transfer-Encoding` whose last coding is not `chunked`, obs-fold, NUL/CR/LF in values
//! (all 400), and more than 400 headers or a head over 512 KiB (431), answered by hyper
//! without a body and made problem+json on the wire ([`crate::wire_errors`]). Tighter limits are checked here — at most [`MAX_HEADERS`] headers of at most
//! [`MAX_HEADERS_TOTAL`] bytes — so that a request over them is told why in problem+json; hyper's
//! looser ones only stop a head too big to hold. When a request
//! carries both `Content-Length` and `Transfer-Encoding`, hyper frames it by the latter, drops
//! the former and closes the connection after it (RFC 9112 §6.3); the body is re-framed on the
//! way upstream, so the two can never disagree there.

use http::header::{self, HeaderMap};

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 100;
/// The most bytes one header value may have.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;
/// The most bytes all header names and values together may have.
pub const MAX_HEADERS_TOTAL: usize = 32 * 1024;

/// Why a message was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// A header name with `_`: some servers read it as `-`, which would let a client smuggle
    /// a header past a check on its dashed twin.
    #[error("header name `{0}` contains '_'; such headers are refused")]
    Underscore(String),
    /// `Transfer-Encoding` other than a single `chunked`.
    #[error("Transfer-Encoding must be exactly `chunked`")]
    TransferEncoding,
    /// More than one `Content-Length`, or one that is not a plain number.
    #[error("Content-Length must appear once, as digits")]
    ContentLength,
    /// Both framings at once.
    #[error("both Content-Length and Transfer-Encoding")]
    BothFramings,
    /// A header value, or the headers together, over the limit.
    #[error("headers too large")]
    TooLarge,
}

impl EdgeError {
    /// The status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::TooLarge => 431,
            _ => 400,
        }
    }
}

fn framing(headers: &HeaderMap) -> Result<(), EdgeError> {
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err(EdgeError::BothFramings);
    }
    if te.len() > 1
        || te
            .first()
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(EdgeError::TransferEncoding);
    }
    if cl.len() > 1
        || cl
            .first()
            .is_some_and(|v| v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit))
    {
        return Err(EdgeError::ContentLength);
    }
    Ok(())
}

/// Checks a client's request headers.
pub fn check_request(headers: &HeaderMap) -> Result<(), EdgeError> {
    if headers.len() > MAX_HEADERS {
        return Err(EdgeError::TooLarge);
    }
    let mut total = 0;
    for (name, value) in headers {
        if name.as_str().contains('_') {
            return Err(EdgeError::Underscore(name.as_str().to_owned()));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(EdgeError::TooLarge);
        }
        total += name.as_str().len() + value.len();
    }
    if total > MAX_HEADERS_TOTAL {
        return Err(EdgeError::TooLarge);
    }
    framing(headers)
}

/// Checks an upstream's response headers: ambiguous framing from upstream is as dangerous
/// as from a client (response splitting), so it ends in a 502, never in the client's socket.
pub fn check_response(headers: &HeaderMap) -> Result<(), EdgeError> {
    framing(headers)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn refuses_ambiguous_framing_and_odd_names() {
        assert_eq!(
            check_request(&headers(&[("x_user", "a")])),
            Err(EdgeError::Underscore("x_user".into()))
        );
        assert_eq!(
            check_request(&headers(&[("transfer-encoding", "gzip")])),
            Err(EdgeError::TransferEncoding)
        );
        assert_eq!(
            check_request(&headers(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ])),
            Err(EdgeError::TransferEncoding)
        );
        assert_eq!(
            check_request(&headers(&[("content-length", "+5")])),
            Err(EdgeError::ContentLength)
        );
        assert_eq!(
            check_request(&headers(&[("content-length", "5"), ("content-length", "5")])),
            Err(EdgeError::ContentLength)
        );
        assert_eq!(
            check_response(&headers(&[("content-length", "5"), ("transfer-encoding", "chunked")])),
            Err(EdgeError::BothFramings)
        );
        assert_eq!(
            check_request(&headers(&[("x-big", &"a".repeat(MAX_HEADER_VALUE + 1))])),
            Err(EdgeError::TooLarge)
        );
        assert!(check_request(&headers(&[("content-length", "12"), ("x-user", "a")])).is_ok());
        assert!(check_request(&headers(&[("transfer-encoding", "Chunked")])).is_ok());
    }
}
