//! Checks at the edge, before a request is routed or a response goes back: what a parser
//! could accept but a careful proxy must not pass on.
//!
//! [`framing`] is the one rule for how a message's body is delimited — at most one
//! `Content-Length` of plain digits, at most one `Transfer-Encoding` that is exactly
//! `chunked`, never both — used by the gateway's HTTP/1 reader before it reads a body
//! ([`crate::h1::head`]), for HTTP/2 requests, and for upstreams' answers (response
//! splitting). The reader refuses a head over 64 KiB or with more than [`MAX_HEADERS`]
//! headers (431), and what does not parse (400: a request line, obs-fold, NUL/CR/LF in a
//! value), in problem+json. [`check_request`] adds what a parsed head may not carry: `_` in
//! a name, a value over [`MAX_HEADER_VALUE`], headers over [`MAX_HEADERS_TOTAL`] together.

use http::header::{self, HeaderMap};

/// The most headers a request may have.
pub const MAX_HEADERS: usize = flotilla::http::fields::MAX_HEADERS;
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

pub use flotilla::http::header_tokens as tokens;

/// How a message's body is delimited (RFC 9112 §6), once its headers passed [`framing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Neither header: a request has no body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How `headers` delimit their body, or why they do so ambiguously: at most one
/// `Content-Length` of plain digits, at most one `Transfer-Encoding` that is exactly
/// `chunked`, never both.
pub fn framing(headers: &HeaderMap) -> Result<Framing, EdgeError> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    match (te.next(), cl.next()) {
        (Some(_), Some(_)) => Err(EdgeError::BothFramings),
        (Some(coding), None) => {
            if te.next().is_some() || !coding.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err(EdgeError::TransferEncoding);
            }
            Ok(Framing::Chunked)
        }
        (None, Some(length)) => {
            if cl.next().is_some() {
                return Err(EdgeError::ContentLength);
            }
            parse_length(length.as_bytes())
                .map(Framing::Length)
                .ok_or(EdgeError::ContentLength)
        }
        (None, None) => Ok(Framing::None),
    }
}

/// A `Content-Length` value: digits only, no sign, no overflow.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
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
    framing(headers).map(|_| ())
}

/// Checks an upstream's response headers: ambiguous framing from upstream is as dangerous
/// as from a client (response splitting), so it ends in a 502, never in the client's socket.
pub fn check_response(headers: &HeaderMap) -> Result<(), EdgeError> {
    framing(headers).map(|_| ())
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
        assert_eq!(
            framing(&headers(&[("content-length", "99999999999999999999999")])),
            Err(EdgeError::ContentLength)
        );
        assert_eq!(
            framing(&headers(&[("content-length", "")])),
            Err(EdgeError::ContentLength)
        );
        assert_eq!(
            framing(&headers(&[("content-length", "0042")])),
            Ok(Framing::Length(42))
        );
        assert_eq!(framing(&headers(&[])), Ok(Framing::None));
    }
}
