//! The gateway's own HTTP/1 server side, in the manner of Pingora's: one task per
//! connection reads a head with `httparse` ([`head`]), reads a small body whole, hands the
//! request to [`Gateway::handle`] in the same task and writes the answer ([`answer`]) — no
//! per-request task, channel or boxed service on the way. Bodies too large to replay or of
//! unknown length stream to the upstream through [`body`] while the same task waits for the
//! answer. A `101 Switching Protocols` answer turns the connection into a tunnel to the
//! upstream's.
//!
//! What a request may look like is the edge's rule ([`crate::edge`]): a head this reader
//! cannot take (too large, malformed, ambiguously framed) is answered with problem+json and
//! the connection closed, since where the next request would start is unknown. HTTP/2 is
//! hyper's: [`crate::serve`] hands connections that open with its preface, or negotiated it
//! by ALPN, to hyper's HTTP/2 server instead.

pub mod answer;
pub mod body;
pub use flotilla::http::chunked;
pub mod head;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use flotilla::client::RequestBody;
use http::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::edge::Framing;
use crate::proxy::{Switching, REPLAY_LIMIT};
use crate::rescue::GatewayError;
use crate::{Gateway, ProxyBody, Secure};

/// The room a connection's read buffer starts with, and grows by while it reads a head: a
/// request head is usually well under it, and an idle connection should hold little (a
/// thousand open connections are a thousand of these, as nginx's `client_header_buffer_size`).
pub const HEAD_BUFFER: usize = 2 * 1024;
/// The room asked for at a time while a body is read.
const BODY_BUFFER: usize = 16 * 1024;

/// How long a connection may sit between requests, or take to send a head or a small body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing connection reads (and drops) what the client still sends, so that the
/// answer is not destroyed by a reset when unread bytes meet the close (nginx's lingering
/// close).
const LINGER: Duration = Duration::from_secs(1);

/// What a connection knows of where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The connection is TLS.
    pub secure: bool,
}

/// Serves HTTP/1 requests on `io` until the client closes, a request ends the connection, or
/// `shutdown` turns true while no request is in flight. `buf` holds bytes already read.
pub async fn serve_connection<IO>(
    mut io: IO,
    mut buf: BytesMut,
    gateway: Arc<Gateway>,
    peer: Peer,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = Vec::with_capacity(1024);
    let deadline = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let head = loop {
            match head::parse(&mut buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(err) => {
                    let response = refusal(&GatewayError::Head(err).to_problem(), peer.secure);
                    let _ = answer::write_whole(&mut io, response).await;
                    linger(&mut io).await;
                    return;
                }
            }
            if buf.is_empty() && *shutdown.borrow() {
                return;
            }
            reserve(&mut buf);
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = &mut deadline => {
                    if !buf.is_empty() {
                        let timeout = flotilla_api::Problem::new(408, "request-timeout", "Request timeout")
                            .with_detail("the request head did not arrive in time");
                        let _ = answer::write_whole(&mut io, refusal(&timeout, peer.secure)).await;
                    }
                    return;
                }
                _ = shutdown.changed(), if buf.is_empty() => return,
            }
        };
        let head::Head {
            request,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let has_body = framing != Framing::None && framing != Framing::Length(0);
        if expect_continue
            && has_body
            && buf.is_empty()
            && io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return;
        }
        let mut reader = None;
        let body = match framing {
            Framing::None | Framing::Length(0) => RequestBody::empty(),
            Framing::Length(n) if n <= REPLAY_LIMIT as u64 => {
                // n fits in memory by the line above.
                let n = n as usize;
                if buf.len() < n {
                    deadline.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                }
                while buf.len() < n {
                    reserve_body(&mut buf);
                    tokio::select! {
                        read = io.read_buf(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        },
                        () = &mut deadline => return,
                    }
                }
                RequestBody::from(buf.split_to(n).freeze())
            }
            Framing::Length(n) => {
                let (streaming, inbound) = body::Reader::length(n);
                reader = Some(streaming);
                RequestBody::stream(inbound)
            }
            Framing::Chunked => {
                let (streaming, inbound) = body::Reader::chunked();
                reader = Some(streaming);
                RequestBody::stream(inbound)
            }
        };
        let asked = answer::Asked {
            head: request.method() == Method::HEAD,
            version: request.version(),
            keep_alive,
            trailers: answer::takes_trailers(request.headers()),
        };
        let mut request = request.map(|()| body);
        if peer.secure {
            request.extensions_mut().insert(Secure);
        }
        // Boxed: the request's future is most of the connection's, and an idle connection
        // should not carry its room between requests.
        let mut handling = Box::pin(gateway.clone().handle(request, peer.addr));
        let answered: Result<Response<ProxyBody>, Infallible> = match &mut reader {
            None => handling.await,
            Some(reader) => loop {
                tokio::select! {
                    answered = &mut handling => break answered,
                    () = reader.step(&mut io, &mut buf), if !reader.is_idle() => {}
                }
            },
        };
        let Ok(mut response) = answered;
        // A body the upstream did not wait for is still on the wire: this connection cannot
        // find the next request's start without reading it, so it ends after this answer.
        let body_read = reader.as_ref().is_none_or(body::Reader::is_done);
        drop(reader);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(switching) = response.extensions_mut().remove::<Switching>() {
                if answer::write(&mut io, &mut out, response, asked).await.is_ok() {
                    // A tunnel is not a request in flight: the drain does not wait for it.
                    drop(shutdown);
                    tunnel(io, buf, switching).await;
                }
                return;
            }
        }
        let asked = answer::Asked {
            keep_alive: asked.keep_alive && body_read && !*shutdown.borrow(),
            ..asked
        };
        match answer::write(&mut io, &mut out, response, asked).await {
            Ok(true) => {}
            Ok(false) => {
                linger(&mut io).await;
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, peer = %peer.addr, "answer not written whole");
                return;
            }
        }
        deadline.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
    }
}

/// Room for the next read of a head.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < HEAD_BUFFER / 4 {
        buf.reserve(HEAD_BUFFER);
    }
}

/// Room for a body's next read.
pub(crate) fn reserve_body(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < BODY_BUFFER / 4 {
        buf.reserve(BODY_BUFFER);
    }
}
/// The answer to a head this reader refused or never got whole, with the headers every
/// answer carries.
fn refusal(problem: &flotilla_api::Problem, secure: bool) -> Response<ProxyBody> {
    let mut response = crate::rescue::problem_response(problem);
    crate::secure_headers(response.headers_mut(), false, secure);
    response
        .headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// Ends the connection gracefully: our side closed, then what the client still sends read
/// and dropped for a moment, so the answer reaches it before any reset.
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    if io.shutdown().await.is_err() {
        return;
    }
    // On the heap: a buffer in the future would be room every connection's task carries.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Copies bytes both ways between the client's connection (and what it already sent past
/// the head) and the upstream's, once the upstream's side of the upgrade completes.
async fn tunnel<IO: AsyncRead + AsyncWrite + Unpin>(mut client: IO, early: BytesMut, switching: Switching) {
    let upstream = match switching.0.await {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::debug!(error = %err, "upstream upgrade did not complete");
            return;
        }
    };
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %err, "upgraded connection ended");
    }
}
