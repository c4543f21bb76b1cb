//! The bytes of one HTTP/1.1 exchange with an upstream: the request head written from an
//! `http::request::Parts`, the response head parsed with `httparse` into an `http::Response`
//! whose header values share the bytes they arrived in (no copy), and how each body is framed.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};

use super::H1Error;
use crate::http::fields;

/// A response head longer than this is refused, as the gateway refuses a request's.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may carry.
pub const MAX_HEADERS: usize = fields::MAX_HEADERS;

/// How a request's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// No body and no header saying so (a `GET` as browsers send it).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: a stream of unknown length.
    Chunked,
}

impl Outgoing {
    /// The framing for a body of `exact` length (`None`: unknown) sent with `method`: an empty
    /// body of a method whose requests usually have none goes without a length, as hyper and
    /// curl send it; any other known length is declared.
    pub fn of(method: &Method, exact: Option<u64>) -> Self {
        match exact {
            Some(0) if !carries_body(method) => Outgoing::None,
            Some(length) => Outgoing::Length(length),
            None => Outgoing::Chunked,
        }
    }
}

fn carries_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
    )
}

/// Headers this connection decides for itself: the framing and the connection's own.
fn connection_specific(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Writes the request line and headers of `parts` into `out`, with `Host` from `authority`
/// when the request has none and the framing `body` says.
pub fn request_head(out: &mut Vec<u8>, parts: &http::request::Parts, authority: &Authority, body: Outgoing) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if connection_specific(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Outgoing::None => {}
        Outgoing::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{length}\r\n");
        }
        Outgoing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// No body: an answer to `HEAD`, a 1xx, 204 or 304.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head: the response, how its body is framed, and whether the connection
/// may carry another request after it.
#[derive(Debug)]
pub struct Head {
    /// Status, version and headers; the body comes after.
    pub response: Response<()>,
    /// How the body is delimited.
    pub body: Incoming,
    /// The connection may be used again once the body is read.
    pub reusable: bool,
}

/// Takes the response head at the start of `buf` off it; `Ok(None)` while it is incomplete.
/// `head_request`: the request was `HEAD`, so the answer has no body whatever it says.
pub fn response_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, H1Error> {
    let mut spans = [fields::Span::default(); MAX_HEADERS];
    let (len, code, version, count) = {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(H1Error::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::HeadTooLarge),
            Err(err) => return Err(H1Error::Head(reason(err))),
        };
        if len > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        fields::spans(buf, parsed.headers, &mut spans);
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, parsed.code.unwrap_or_default(), version, parsed.headers.len())
    };
    let bytes: Bytes = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head("status code"))?;
    let headers = fields::header_map(&bytes, &spans[..count], 4).map_err(H1Error::Head)?;
    let (body, framing_reusable) = incoming(head_request, status, &headers)?;
    let reusable =
        framing_reusable && fields::keeps_alive(version, &headers) && status != StatusCode::SWITCHING_PROTOCOLS;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head {
        response,
        body,
        reusable,
    }))
}

/// The body's framing, and whether what follows it can be trusted to be the next answer.
fn incoming(head_request: bool, status: StatusCode, headers: &HeaderMap) -> Result<(Incoming, bool), H1Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Incoming::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = crate::http::header_tokens(headers, &header::TRANSFER_ENCODING).last();
        let chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        // A length beside a transfer coding is ignored (RFC 9112 §6.3), and the connection
        // not trusted after it; a coding other than chunked last ends at the close.
        let alone = !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Incoming::Chunked, alone)
        } else {
            (Incoming::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let parsed = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or(H1Error::Head("content-length"))?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(H1Error::Head("content-length"));
        }
        length = Some(parsed);
    }
    Ok(match length {
        Some(0) => (Incoming::Empty, true),
        Some(length) => (Incoming::Length(length), true),
        None => (Incoming::Close, false),
    })
}

/// What httparse's error is about, for the error's text.
fn reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "status line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(text: &str, head_request: bool) -> Result<Option<Head>, H1Error> {
        let mut buf = BytesMut::from(text.as_bytes());
        response_head(&mut buf, head_request)
    }

    #[test]
    fn writes_a_request_head_with_host_and_its_own_framing() {
        let request = http::Request::builder()
            .method(Method::POST)
            .uri("http://10.0.0.1:9000/api/v1/orders?x=1")
            .header("content-length", "99")
            .header("connection", "close")
            .header("x-request-id", "r1")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let authority = parts.uri.authority().cloned().unwrap();
        let mut out = Vec::new();
        request_head(&mut out, &parts, &authority, Outgoing::Length(5));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api/v1/orders?x=1 HTTP/1.1\r\nhost: 10.0.0.1:9000\r\nx-request-id: r1\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(Outgoing::of(&Method::GET, Some(0)), Outgoing::None);
        assert_eq!(Outgoing::of(&Method::POST, Some(0)), Outgoing::Length(0));
        assert_eq!(Outgoing::of(&Method::PUT, None), Outgoing::Chunked);
    }

    #[test]
    fn reads_a_response_head_and_leaves_its_body() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokHTTP"[..]);
        let head = response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(head.response.status(), StatusCode::CREATED);
        assert_eq!(head.response.headers()["x-a"], "b");
        assert_eq!(head.body, Incoming::Length(2));
        assert!(head.reusable);
        assert_eq!(&buf[..], b"okHTTP");
        assert!(head_of("HTTP/1.1 200 OK\r\nContent-Le", false).unwrap().is_none());
    }

    #[test]
    fn frames_response_bodies_as_rfc_9112_says() {
        let framing = |text: &str, head: bool| {
            let head = head_of(text, head).unwrap().unwrap();
            (head.body, head.reusable)
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
            (Incoming::Chunked, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (Incoming::Chunked, false)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), (Incoming::Close, false));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            (Incoming::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            (Incoming::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
                false
            ),
            (Incoming::Length(4), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", false),
            (Incoming::Length(4), false)
        );
        assert!(matches!(
            head_of(
                "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Err(H1Error::Head("content-length"))
        ));
        assert!(matches!(
            head_of("HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", false),
            Err(H1Error::Head("content-length"))
        ));
        assert!(matches!(
            head_of("HTTX/1.1 200 OK\r\n\r\n", false),
            Err(H1Error::Head(_))
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(head_of(&huge, false), Err(H1Error::HeadTooLarge)));
    }
}
