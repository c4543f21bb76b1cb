//! What reading an HTTP/1 head with `httparse` is the same for in both directions (the
//! gateway's requests, the client's answers): where each header lies in the head's bytes, the
//! header map whose values share those bytes (no copy), and whether the connection stays open.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// The most header fields a head may carry.
pub const MAX_HEADERS: usize = 100;

/// Where one header's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Records in `into` where each of `headers` (parsed from `buf`) lies in `buf`, so that they
/// can be taken from the bytes once the parser's borrow of them ends.
pub fn spans(buf: &[u8], headers: &[httparse::Header<'_>], into: &mut [Span; MAX_HEADERS]) {
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start, start + part.len())
    };
    for (slot, header) in into.iter_mut().zip(headers) {
        *slot = Span {
            name: span(header.name.as_bytes()),
            value: span(header.value),
        };
    }
}

/// The headers at `spans` of the head `bytes`, their values sharing its bytes; `room` more
/// fit without the map growing. `Err` names the part that is not a valid header.
pub fn header_map(bytes: &Bytes, spans: &[Span], room: usize) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len() + room);
    for at in spans {
        let name = HeaderName::from_bytes(&bytes[at.name.0..at.name.1]).map_err(|_| "header name")?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(at.value.0..at.value.1)).map_err(|_| "header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// HTTP/1.1 keeps a connection unless told `close`; HTTP/1.0 only when told `keep-alive`.
pub fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in super::header_tokens(headers, &header::CONNECTION) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::HTTP_11 || keep)
}
