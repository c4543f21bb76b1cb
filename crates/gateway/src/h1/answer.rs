//! Writing a response on an HTTP/1 connection: the head, framed by what the body says of its
//! length (`Content-Length` when known, chunked when not, the connection's end for an
//! HTTP/1.0 client), and the body. A small body of known length goes out with its head in
//! one write; anything else streams as it comes.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flotilla::http::chunked;
use http::header;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::ProxyBody;

/// A body of known length up to this size is gathered and written with its head at once.
const GATHER: u64 = 64 * 1024;

/// What the request said about the answer it can take.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// `HEAD`: the answer has a head only.
    pub head: bool,
    /// The client's version (an HTTP/1.0 client cannot take chunked).
    pub version: Version,
    /// The connection stays open after this answer.
    pub keep_alive: bool,
    /// `TE: trailers`: the client takes trailer fields after a chunked body.
    pub trailers: bool,
}

/// Why an answer could not be written whole; the connection is over either way.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client's socket.
    #[error("writing to the client: {0}")]
    Io(#[from] std::io::Error),
    /// The body's source (the upstream) failed part-way.
    #[error("the response body failed part-way: {0}")]
    Body(flotilla::client::BodyError),
}

/// Writes `response`; `Ok(true)` when the connection may serve another request.
pub async fn write<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    response: Response<ProxyBody>,
    asked: Asked,
) -> Result<bool, WriteError> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let bodiless = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    let chunked = !bodiless && length.is_none() && asked.version == Version::HTTP_11;
    // Without a length or chunks, only the connection's end can say where the body ends.
    let keep_alive = asked.keep_alive && (bodiless || length.is_some() || chunked);
    out.clear();
    let framed_length = if bodiless { None } else { length };
    head(out, status, &parts.headers, framed_length, chunked, keep_alive);
    if bodiless {
        io.write_all(out).await?;
        return Ok(keep_alive);
    }
    if length.is_some_and(|n| n <= GATHER) {
        // The whole body with the head: one write, as a small answer should be.
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(WriteError::Body)?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        io.write_all(out).await?;
        return Ok(keep_alive);
    }
    io.write_all(out).await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(WriteError::Body)?;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) if chunked => {
                out.clear();
                chunked::encode(out, &data);
                io.write_all(out).await?;
            }
            Ok(data) => io.write_all(&data).await?,
            Err(frame) => {
                if let (Ok(trailers), true) = (frame.into_trailers(), chunked && asked.trailers) {
                    out.clear();
                    out.extend_from_slice(b"0\r\n");
                    fields(out, &trailers);
                    out.extend_from_slice(b"\r\n");
                    io.write_all(out).await?;
                    return Ok(keep_alive);
                }
            }
        }
    }
    if chunked {
        io.write_all(chunked::LAST).await?;
    }
    Ok(keep_alive)
}

/// An answer the connection makes itself (to a head it could not read): whole, then closed.
pub async fn write_whole<IO: AsyncWrite + Unpin>(io: &mut IO, response: Response<ProxyBody>) -> Result<(), WriteError> {
    let asked = Asked {
        head: false,
        version: Version::HTTP_11,
        keep_alive: false,
        trailers: false,
    };
    let mut out = Vec::with_capacity(1024);
    write(io, &mut out, response, asked).await.map(|_| ())
}

/// The status line and headers, with the framing and connection headers this connection
/// decides (any the response carried for them are left out).
fn head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        // A switch of protocols says `Connection: upgrade` itself; otherwise this connection's
        // fate is decided here.
        if (name == header::CONNECTION && status != StatusCode::SWITCHING_PROTOCOLS)
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && (length.is_some() || chunked))
        {
            continue;
        }
        dated |= name == header::DATE;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        DATE.with_borrow_mut(|date| field(out, b"date", date.now()));
    }
    if let Some(length) = length {
        let mut digits = itoa::Buffer::new();
        field(out, b"content-length", digits.format(length).as_bytes());
    } else if chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    if !keep_alive && status != StatusCode::SWITCHING_PROTOCOLS {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Whether a request asked for trailers (`TE: trailers`).
pub fn takes_trailers(headers: &HeaderMap) -> bool {
    crate::edge::tokens(headers, &header::TE).any(|t| t.eq_ignore_ascii_case(b"trailers"))
}

thread_local! {
    /// The `Date` value, made again once a second (as hyper and nginx keep theirs).
    static DATE: RefCell<Date> = RefCell::new(Date::default());
}

/// A cached IMF-fixdate.
#[derive(Default)]
struct Date {
    second: u64,
    text: Bytes,
}

impl Date {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = Bytes::from(httpdate::fmt_http_date(now));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn value(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    fn full(text: &'static str) -> ProxyBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn asked(version: Version) -> Asked {
        Asked {
            head: false,
            version,
            keep_alive: true,
            trailers: false,
        }
    }

    async fn written(response: Response<ProxyBody>, asked: Asked) -> (String, bool) {
        let mut wire = Vec::new();
        let mut out = Vec::new();
        let kept = write(&mut wire, &mut out, response, asked).await.unwrap();
        (String::from_utf8(wire).unwrap(), kept)
    }

    #[tokio::test]
    async fn a_known_length_is_the_framing_whatever_the_headers_said() {
        let mut response = Response::new(full("hello"));
        response.headers_mut().insert(header::CONTENT_LENGTH, value("99"));
        response
            .headers_mut()
            .insert(header::TRANSFER_ENCODING, value("chunked"));
        response.headers_mut().insert(header::CONNECTION, value("keep-alive"));
        let (wire, kept) = written(response, asked(Version::HTTP_11)).await;
        assert!(kept);
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(wire.contains("content-length: 5\r\n"), "{wire}");
        assert!(
            !wire.contains("99") && !wire.contains("chunked") && !wire.contains("keep-alive"),
            "{wire}"
        );
        assert!(wire.contains("date: "), "{wire}");
        assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
    }

    #[tokio::test]
    async fn an_unknown_length_is_chunked_for_http_11_and_closes_for_http_10() {
        let stream = || {
            let frames: Vec<Result<http_body::Frame<Bytes>, flotilla::client::BodyError>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"defgh"))),
            ];
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        };
        let (wire, kept) = written(stream(), asked(Version::HTTP_11)).await;
        assert!(kept);
        assert!(wire.contains("transfer-encoding: chunked\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"), "{wire}");
        let (wire, kept) = written(stream(), asked(Version::HTTP_10)).await;
        assert!(!kept);
        assert!(
            wire.contains("connection: close\r\n") && !wire.contains("chunked"),
            "{wire}"
        );
        assert!(wire.ends_with("\r\n\r\nabcdefgh"), "{wire}");
    }

    #[tokio::test]
    async fn head_and_no_content_answers_have_no_body_but_keep_their_length() {
        let mut response = Response::new(full(""));
        response.headers_mut().insert(header::CONTENT_LENGTH, value("1234"));
        let (wire, _) = written(
            response,
            Asked {
                head: true,
                ..asked(Version::HTTP_11)
            },
        )
        .await;
        assert!(wire.contains("content-length: 1234\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"), "{wire}");
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let (wire, kept) = written(response, asked(Version::HTTP_11)).await;
        assert!(
            kept && wire.starts_with("HTTP/1.1 204 No Content\r\n") && !wire.contains("content-length"),
            "{wire}"
        );
    }
}
