//! Plain HTTP/1.1 to upstreams in the manner of Pingora's connector: the request's own task
//! takes an idle connection from the pool (or makes one), writes the head and body, reads the
//! answer's head with `httparse`, and hands back a body that reads the rest off the socket as
//! it is polled and returns the connection to the pool at its end. No connection task, no
//! channel between the caller and the socket: hyper's client spends a task wake-up and two
//! channel hops per request on that, the largest cost the gateway's profile showed.
//!
//! What it does not speak stays hyper's ([`super::Pool`] chooses): TLS (mTLS between
//! services), HTTP/2, and upgrades (WebSocket), whose connection outlives the exchange.

mod body;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::{Authority, Uri};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceExt;

pub use body::Body;
use body::{Connection, Home};
use wire::Outgoing;

use super::body::{BodyError, RequestBody};
use super::connecting::Limited;
use crate::http::chunked::{self, ChunkError};

/// A streamed request body, as `RequestBody::Stream` holds it.
type Streamed = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// How long a connection may wait in the pool for its next request (as hyper's pool was set).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint at most; more are closed as they come back.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How often returning a connection also sweeps every endpoint's expired ones.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A body of known length up to this size goes out in the same write as its head.
const GATHER: usize = 64 * 1024;
/// What a response head's first read asks room for.
const HEAD_BUFFER: usize = 8 * 1024;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection could be made.
    #[error("connecting: {0}")]
    Connect(BodyError),
    /// The request has no authority to send it to.
    #[error("the request has no authority")]
    NoAuthority,
    /// Writing the request failed.
    #[error("writing the request: {0}")]
    Write(std::io::Error),
    /// The caller's streamed body failed while it was being sent.
    #[error("the request body failed: {0}")]
    RequestBody(BodyError),
    /// A streamed body gave more or fewer bytes than its declared length.
    #[error("the request body did not match its declared length")]
    RequestLength,
    /// Reading the answer failed.
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    /// The upstream closed the connection before any byte of an answer.
    #[error("the connection closed before a response")]
    Closed,
    /// The upstream closed the connection in the middle of the answer.
    #[error("the response was cut short")]
    CutShort,
    /// The answer's head does not parse.
    #[error("malformed response head ({0})")]
    Head(&'static str),
    /// The answer's head is over 64 KiB or 100 fields.
    #[error("response head too large")]
    HeadTooLarge,
    /// A chunked answer's framing is broken.
    #[error("response body: {0}")]
    Chunk(ChunkError),
}

impl H1Error {
    /// A connection was never made: the request surely did not arrive.
    pub fn is_connect(&self) -> bool {
        matches!(self, H1Error::Connect(_))
    }
}

/// Idle connections by endpoint, and the connector that makes new ones.
#[derive(Debug)]
pub struct Connections {
    connector: Limited<HttpConnector>,
    idle: Mutex<Idle>,
}

#[derive(Debug)]
struct Idle {
    by_endpoint: HashMap<Authority, Vec<(TcpStream, Instant)>>,
    swept: Instant,
}

impl Connections {
    /// A pool whose connections are made with TCP_NODELAY within `connect_timeout`, at most
    /// `connecting` at once per endpoint (see [`Limited`]).
    pub fn new(connect_timeout: Duration, connecting: usize) -> Arc<Self> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        Arc::new(Self {
            connector: Limited::new(http, connecting),
            idle: Mutex::new(Idle {
                by_endpoint: HashMap::new(),
                swept: Instant::now(),
            }),
        })
    }

    /// An idle connection to `authority` the upstream has not closed, the newest first (the
    /// likeliest to be warm and alive).
    fn checkout(&self, authority: &Authority) -> Option<TcpStream> {
        loop {
            let (io, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                idle.by_endpoint.get_mut(authority)?.pop()?
            };
            if since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // Between requests an upstream sends nothing: a readable socket is one it closed
            // (or one speaking out of turn), either way not one to send on.
            let mut probe = [0u8; 1];
            match io.try_read(&mut probe) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Some(io),
                _ => continue,
            }
        }
    }

    /// Takes back a connection whose answer was read whole.
    fn put(&self, authority: Authority, io: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(idle.swept) >= SWEEP_EVERY {
            idle.swept = now;
            idle.by_endpoint.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = idle.by_endpoint.entry(authority).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push((io, now));
        }
    }

    /// Idle connections held, over all endpoints.
    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.by_endpoint.values().map(Vec::len).sum()
    }

    async fn connect(&self, uri: &Uri) -> Result<TcpStream, H1Error> {
        let io: TokioIo<TcpStream> = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(H1Error::Connect)?;
        Ok(io.into_inner())
    }

    /// Sends `request` (its URI absolute: `http://authority/path`) and reads the answer's head;
    /// the body is read as the answer's body is polled.
    ///
    /// A connection from the pool that turns out closed before the request reached it (the
    /// write failed), or before any byte of an answer to an idempotent request, is replaced by a
    /// new one once, as browsers and Go's client do: the upstream closed it while idle, and the
    /// request never ran. A streamed body cannot be sent twice and is not retried.
    pub async fn send(self: Arc<Self>, request: Request<RequestBody>) -> Result<Response<Body>, H1Error> {
        let (parts, body) = request.into_parts();
        let authority = parts.uri.authority().cloned().ok_or(H1Error::NoAuthority)?;
        let framing = Outgoing::of(&parts.method, http_body::Body::size_hint(&body).exact());
        let mut out = Vec::with_capacity(512);
        wire::request_head(&mut out, &parts, &authority, framing);
        let (whole, mut stream) = match body {
            RequestBody::Full(full) => {
                let bytes = match full.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(never) => match never {},
                };
                if bytes.len() <= GATHER {
                    out.extend_from_slice(&bytes);
                    (Bytes::new(), None)
                } else {
                    (bytes, None)
                }
            }
            RequestBody::Stream(stream) => (Bytes::new(), Some(stream)),
        };
        let head_request = parts.method == Method::HEAD;
        let idempotent = parts.method.is_idempotent();
        let mut fresh_only = false;
        loop {
            let (mut io, reused) = match (!fresh_only).then(|| self.checkout(&authority)).flatten() {
                Some(io) => (io, true),
                None => (self.connect(&parts.uri).await?, false),
            };
            let written = match stream.as_mut() {
                None => write_whole(&mut io, &out, &whole).await,
                Some(stream) => write_streamed(&mut io, &out, stream, framing).await,
            };
            let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
            let head = match written {
                Ok(()) => read_head(&mut io, &mut buf, head_request).await,
                Err(H1Error::Write(err)) if reused && stream.is_none() => {
                    tracing::debug!(%authority, error = %err, "pooled connection closed; sending on a new one");
                    fresh_only = true;
                    continue;
                }
                // The upstream may have answered before it read the whole body (a 413): take
                // its answer if there is one, else the failure to send.
                Err(H1Error::Write(err)) => match read_head(&mut io, &mut buf, head_request).await {
                    Ok(mut head) => {
                        head.reusable = false;
                        Ok(head)
                    }
                    Err(_) => Err(H1Error::Write(err)),
                },
                Err(err) => return Err(err),
            };
            let head = match head {
                Err(H1Error::Closed) if reused && idempotent && stream.is_none() => {
                    fresh_only = true;
                    continue;
                }
                other => other?,
            };
            let home = head.reusable.then(|| Home {
                pool: self.clone(),
                authority: authority.clone(),
            });
            let (response, ()) = head.response.into_parts();
            let body = Body::new(head.body, Connection { io, buf }, home);
            return Ok(Response::from_parts(response, body));
        }
    }
}

/// Writes a head and a body held whole (empty when it rode with the head).
async fn write_whole(io: &mut TcpStream, head: &[u8], body: &Bytes) -> Result<(), H1Error> {
    io.write_all(head).await.map_err(H1Error::Write)?;
    if !body.is_empty() {
        io.write_all(body).await.map_err(H1Error::Write)?;
    }
    Ok(())
}

/// Writes a head, then a streamed body frame by frame as it arrives, chunked or checked
/// against its declared length.
async fn write_streamed(
    io: &mut TcpStream,
    head: &[u8],
    body: &mut Streamed,
    framing: Outgoing,
) -> Result<(), H1Error> {
    io.write_all(head).await.map_err(H1Error::Write)?;
    let mut sent: u64 = 0;
    let mut framed = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(H1Error::RequestBody)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match framing {
            Outgoing::Chunked => {
                framed.clear();
                chunked::encode(&mut framed, &data);
                io.write_all(&framed).await.map_err(H1Error::Write)?;
            }
            Outgoing::Length(length) if sent > length => return Err(H1Error::RequestLength),
            Outgoing::Length(_) | Outgoing::None => io.write_all(&data).await.map_err(H1Error::Write)?,
        }
    }
    match framing {
        Outgoing::Chunked => io.write_all(chunked::LAST).await.map_err(H1Error::Write),
        Outgoing::Length(length) if sent != length => Err(H1Error::RequestLength),
        Outgoing::Length(_) | Outgoing::None => Ok(()),
    }
}

/// Reads until a whole final answer head is in (interim 1xx answers are skipped).
async fn read_head(io: &mut TcpStream, buf: &mut BytesMut, head_request: bool) -> Result<wire::Head, H1Error> {
    let mut any = false;
    loop {
        if let Some(head) = wire::response_head(buf, head_request)? {
            let status = head.response.status();
            if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(head);
        }
        let read = io.read_buf(buf).await;
        match read {
            Ok(0) if !any && buf.is_empty() => return Err(H1Error::Closed),
            Ok(0) => return Err(H1Error::CutShort),
            Ok(_) => any = true,
            Err(err) if !any && err.kind() == std::io::ErrorKind::ConnectionReset => return Err(H1Error::Closed),
            Err(err) => return Err(H1Error::Read(err)),
        }
    }
}

#[cfg(test)]
mod tests;
