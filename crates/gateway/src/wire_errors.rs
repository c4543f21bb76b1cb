//! hyper's own answers made problem+json. hyper refuses some requests before the gateway sees
//! them (a request line it cannot parse, a head over its limits, a bad `Content-Length`) and
//! answers with a bodiless 400 or 431 of its own; like Envoy's local replies, the edge's every
//! error should say what went wrong in one format. This wraps a connection's write side and
//! replaces such an answer as hyper writes it.
//!
//! An answer is hyper's own when it is an HTTP/1 error head with no body and without the
//! `x-content-type-options` every answer of the gateway carries ([`crate::secure_headers`]):
//! the gateway's own answers and those it proxies never match.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use flotilla_api::Problem;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose bare error answers from hyper leave as problem+json.
#[derive(Debug)]
pub struct ProblemAnswers<T> {
    inner: T,
    /// The replacement being written, and how much of it is out; the length of hyper's
    /// own answer to report once it all is.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> ProblemAnswers<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self { inner, pending: None }
    }
}

/// The problem+json answer standing in for hyper's bare `head`, if it is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !(rest.starts_with(b"4") || rest.starts_with(b"5")) || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    // A body in the same write, or any mark of the gateway's own answers: not hyper's.
    let bodiless = text.contains("content-length: 0\r\n") || !text.contains("content-length");
    if text.matches("\r\n\r\n").count() != 1 || text.contains("x-content-type-options") || !bodiless {
        return None;
    }
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let problem = match status {
        431 => Problem::new(431, "headers-too-large", "Request header fields too large")
            .with_detail("the request's head is larger than the gateway reads (512 KiB, 400 headers)"),
        400 => Problem::new(400, "bad-request", "Bad request")
            .with_detail("the request is not HTTP/1.1 the gateway can read (request line, header syntax or framing)"),
        status => {
            let reason = http::StatusCode::from_u16(status)
                .ok()?
                .canonical_reason()
                .unwrap_or("Error");
            Problem::new(status, "bad-request", reason)
        }
    };
    let body = serde_json::to_vec(&problem).ok()?;
    let reason = http::StatusCode::from_u16(status)
        .ok()?
        .canonical_reason()
        .unwrap_or("Error");
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        flotilla_api::problem::CONTENT_TYPE,
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<T: AsyncWrite + Unpin> ProblemAnswers<T> {
    /// Writes out the replacement under way; `Ready(n)` with hyper's length once done.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((answer, written, reported)) = &mut self.pending {
            if *written == answer.len() {
                let reported = *reported;
                self.pending = None;
                return Poll::Ready(Ok(reported));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemAnswers<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match replacement(buf) {
                Some(answer) => this.pending = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.drain(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            // hyper's own answer is one buffer: a head alone.
            let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
                if let Some(answer) = replacement(only) {
                    this.pending = Some((answer, 0, only.len()));
                }
            }
            if this.pending.is_none() {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        this.drain(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemAnswers<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_error_head_is_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 19:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(bare).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("content-type: application/problem+json"), "{answer}");
        assert!(answer.contains("\"status\":431"), "{answer}");
        let bare_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(replacement(bare_400).unwrap())
            .unwrap()
            .contains("\"status\":400"));
        // The gateway's own answers carry nosniff; successes and bodies are never touched.
        let own = b"HTTP/1.1 404 Not Found\r\nx-content-type-options: nosniff\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(own).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nextra\r\n\r\n").is_none());
        assert!(replacement(b"{\"json\": \"HTTP/1.1 400\"}").is_none());
    }
}
