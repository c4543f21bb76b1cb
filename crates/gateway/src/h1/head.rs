//! A request head read off the wire with `httparse`: the request line and headers become an
//! `http::Request<()>` whose header values share the bytes they arrived in, and the framing
//! rules of [`crate::edge`] decide how its body is delimited before a byte of it is read.

use bytes::{Bytes, BytesMut};
use flotilla::http::fields;
use http::header;
use http::{Method, Request, Uri, Version};

use crate::edge::{self, EdgeError, Framing};

/// The most bytes a request head (request line and headers) may have. The edge's own limits
/// on headers ([`edge::MAX_HEADERS_TOTAL`]) sit below it, so that a head between the two is
/// still parsed and told exactly which limit it broke.
pub const MAX_HEAD: usize = 64 * 1024;

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version and headers.
    pub request: Request<()>,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the client keeps the connection for another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending its body.
    pub expect_continue: bool,
}

/// Why a head was refused. Every one ends the connection: after a head that cannot be read,
/// where the next request starts is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Over [`MAX_HEAD`] bytes without its end.
    #[error("the request head is over {MAX_HEAD} bytes")]
    TooLarge,
    /// More than [`edge::MAX_HEADERS`] headers.
    #[error("more than {} headers", edge::MAX_HEADERS)]
    TooManyHeaders,
    /// Not HTTP/1: a request line or header that does not parse.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// A body delimited ambiguously (a smuggling attempt or a broken client).
    #[error(transparent)]
    Framing(#[from] EdgeError),
}

impl HeadError {
    /// The status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) => 400,
            HeadError::Framing(err) => err.status(),
        }
    }
}

/// Takes the head at the start of `buf` off it. `Ok(None)` while the head is incomplete
/// (read more and call again); the body's bytes, if any, stay in `buf`.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    let mut spans = [fields::Span::default(); edge::MAX_HEADERS];
    let (len, method, target, version, count) = {
        let mut slots = [httparse::EMPTY_HEADER; edge::MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut slots);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
            Err(err) => return Err(HeadError::Malformed(reason(err))),
        };
        if len > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        fields::spans(buf, parsed.headers, &mut spans);
        let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
            .map_err(|_| HeadError::Malformed("method"))?;
        let path = parsed.path.unwrap_or_default().as_bytes();
        let start = path.as_ptr() as usize - buf.as_ptr() as usize;
        let target = (start, start + path.len());
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, method, target, version, parsed.headers.len())
    };
    let bytes: Bytes = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(bytes.slice(target.0..target.1)).map_err(|_| HeadError::Malformed("request target"))?;
    // Room for what the gateway adds on the way upstream (forwarding, request id, trace
    // context, identity), so the map is not grown and rehashed on the way.
    let headers = fields::header_map(&bytes, &spans[..count], 12).map_err(HeadError::Malformed)?;
    let framing = edge::framing(&headers)?;
    if version == Version::HTTP_10 && framing == Framing::Chunked {
        // HTTP/1.0 has no chunked coding: a message claiming one is not framed as it says.
        return Err(HeadError::Framing(EdgeError::TransferEncoding));
    }
    let keep_alive = fields::keeps_alive(version, &headers);
    let expect_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue,
    }))
}

fn reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes: no panic, and a head reads the same at once as byte by byte.
        #[test]
        fn any_bytes_read_alike_at_once_and_trickled(
            line in "(GET|POST|PUT|X) (/[a-z%0-9?=&]{0,12}|\\*|http://h/x) HTTP/1\\.[01]",
            headers in proptest::collection::vec("[A-Za-z_ -]{1,8}: [ -~]{0,8}", 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut data = format!("{line}\r\n{}\r\n", headers.join("\r\n")).into_bytes();
            if headers.is_empty() {
                data.truncate(data.len() - 2);
            }
            data.extend_from_slice(b"\r\n");
            data.extend_from_slice(&tail);
            let at_once = parse(&mut BytesMut::from(&data[..]));
            let mut trickle = BytesMut::new();
            let mut one_by_one = Ok(None);
            for &byte in &data {
                trickle.extend_from_slice(&[byte]);
                one_by_one = parse(&mut trickle);
                if !matches!(one_by_one, Ok(None)) {
                    break;
                }
            }
            match (at_once, one_by_one) {
                (Ok(Some(a)), Ok(Some(b))) => {
                    prop_assert_eq!(a.request.uri(), b.request.uri());
                    prop_assert_eq!(a.request.headers(), b.request.headers());
                    prop_assert_eq!(a.framing, b.framing);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (Ok(None), Ok(None)) => {}
                (a, b) => prop_assert!(false, "{:?} / {:?}", a, b),
            }
        }
    }

    fn parse_all(text: &str) -> Result<Option<Head>, HeadError> {
        parse(&mut BytesMut::from(text.as_bytes()))
    }

    #[test]
    fn a_head_becomes_a_request_and_leaves_its_body_behind() {
        let mut buf = BytesMut::from(
            &b"POST /orders?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"[..],
        );
        let head = parse(&mut buf).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path(), "/orders");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.request.version(), Version::HTTP_11);
        assert_eq!(head.request.headers()["host"], "shop");
        assert_eq!(head.request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_it_is_too_large() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert!(parse(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 25, "nothing taken while incomplete");
        buf.extend_from_slice(b"\r\n");
        assert!(parse(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
        let mut big = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Big: "[..]);
        big.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(parse(&mut big).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn connection_rules_by_version() {
        let keep = |text: &str| parse_all(text).unwrap().unwrap().keep_alive;
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let head = parse_all("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.expect_continue);
    }

    #[test]
    fn refuses_what_cannot_be_framed_or_read() {
        let err = |text: &str| parse_all(text).unwrap_err();
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Framing(EdgeError::BothFramings)
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            HeadError::Framing(EdgeError::ContentLength)
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HeadError::Framing(EdgeError::TransferEncoding)
        );
        assert_eq!(
            err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Framing(EdgeError::TransferEncoding)
        );
        assert_eq!(err("NOT HTTP AT ALL\r\n\r\n").status(), 400);
        assert_eq!(err("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").status(), 400);
        assert_eq!(err("GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n").status(), 400);
        assert_eq!(err("GET / HTTP/2.0\r\n\r\n").status(), 400);
        let many: String = (0..=edge::MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(err(&format!("GET / HTTP/1.1\r\n{many}\r\n")), HeadError::TooManyHeaders);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
    }
}
