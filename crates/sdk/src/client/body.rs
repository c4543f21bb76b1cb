//! The request body the resilient stack sends: bytes in memory (replayable, so the request
//! may be retried) or a stream being forwarded (sent once).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::resilience::Replay;

/// A request body: whole (may be replayed) or streaming (may not).
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body in memory.
    Full(Full<Bytes>),
    /// A body streamed from a client, forwarded as it arrives.
    Stream(BoxBody<Bytes, BodyError>),
}

/// Why a streamed body stopped: whatever its source says (a peer gone, bad framing).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl RequestBody {
    /// An empty body.
    pub fn empty() -> Self {
        RequestBody::Full(Full::new(Bytes::new()))
    }

    /// A body forwarded as it arrives from any source (hyper's `Incoming`, the gateway's own
    /// HTTP/1 reader): sent once, never replayed.
    pub fn stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError>,
    {
        RequestBody::Stream(body.map_err(Into::into).boxed())
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        RequestBody::Full(Full::new(bytes))
    }
}

impl Replay for RequestBody {
    fn try_replay(&self) -> Option<Self> {
        match self {
            RequestBody::Full(full) => Some(RequestBody::Full(full.clone())),
            RequestBody::Stream(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            RequestBody::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(full) => full.is_end_stream(),
            RequestBody::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(full) => full.size_hint(),
            RequestBody::Stream(stream) => stream.size_hint(),
        }
    }
}

/// An answer's body, from whichever connection carried it: the SDK's own HTTP/1.1 pool for
/// plain upstreams, hyper's for TLS, HTTP/2 and upgrades. One type, so callers need not care.
#[derive(Debug)]
pub struct ResponseBody(Answer);

#[derive(Debug)]
enum Answer {
    Own(super::h1::Body),
    Hyper(hyper::body::Incoming),
}

impl From<super::h1::Body> for ResponseBody {
    fn from(body: super::h1::Body) -> Self {
        ResponseBody(Answer::Own(body))
    }
}

impl From<hyper::body::Incoming> for ResponseBody {
    fn from(body: hyper::body::Incoming) -> Self {
        ResponseBody(Answer::Hyper(body))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Answer::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Answer::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Answer::Own(body) => body.is_end_stream(),
            Answer::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Answer::Own(body) => body.size_hint(),
            Answer::Hyper(body) => body.size_hint(),
        }
    }
}
