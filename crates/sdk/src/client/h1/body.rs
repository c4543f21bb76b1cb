//! A response body read off its connection by whoever polls it (the request's own task): no
//! connection task, no channel. Once the body is read to its end the connection goes back to
//! the pool; a body dropped half-read takes its connection with it, since the rest of the
//! answer would be read as the next one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::wire::Incoming;
use super::{Connections, H1Error};
use crate::http::chunked::{Chunked, Piece};

/// Bytes asked of the socket per read while a body streams.
const READ_SIZE: usize = 16 * 1024;

/// A connection between requests: the socket and what was read past the last answer.
#[derive(Debug)]
pub(super) struct Connection {
    pub io: TcpStream,
    pub buf: BytesMut,
}

/// Where a reusable connection goes once the body is read.
#[derive(Debug)]
pub(super) struct Home {
    pub pool: Arc<Connections>,
    pub authority: Authority,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// The body of an answer from a plain HTTP/1.1 upstream.
#[derive(Debug)]
pub struct Body {
    state: State,
    connection: Option<Connection>,
    /// `None` when the connection cannot carry another request after this answer.
    home: Option<Home>,
}

impl Body {
    /// The body framed by `incoming`, read from `connection` (whose buffer holds what arrived
    /// with the head); the connection goes `home` after it when that is `Some`.
    pub(super) fn new(incoming: Incoming, connection: Connection, home: Option<Home>) -> Self {
        let state = match incoming {
            Incoming::Empty | Incoming::Length(0) => State::Done,
            Incoming::Length(length) => State::Length(length),
            Incoming::Chunked => State::Chunked(Chunked::default()),
            Incoming::Close => State::Close,
        };
        let mut body = Self {
            state,
            connection: Some(connection),
            home,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body is over: its connection goes back to the pool if it may carry another
    /// request and nothing unasked arrived after the answer.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(connection), Some(home)) = (self.connection.take(), self.home.take()) {
            if connection.buf.is_empty() {
                home.pool.put(home.authority, connection.io);
            }
        }
    }
}

/// Reads what the socket has into `buf`; `Ok(0)` at its end.
fn poll_fill(cx: &mut Context<'_>, connection: &mut Connection) -> Poll<std::io::Result<usize>> {
    if connection.buf.capacity() - connection.buf.len() < READ_SIZE / 4 {
        connection.buf.reserve(READ_SIZE);
    }
    loop {
        ready!(connection.io.poll_read_ready(cx))?;
        match connection.io.try_read_buf(&mut connection.buf) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !connection.buf.is_empty() {
                        let take = connection
                            .buf
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        let data = connection.buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut connection.buf) {
                    Ok(Piece::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Piece::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Piece::More) => {}
                    Err(err) => {
                        this.connection = None;
                        return Poll::Ready(Some(Err(H1Error::Chunk(err))));
                    }
                },
                State::Close => {
                    if !connection.buf.is_empty() {
                        let data = connection.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match poll_fill(cx, connection) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(this.state, State::Close) => {
                    this.state = State::Done;
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(H1Error::CutShort)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(H1Error::Read(err))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) || self.connection.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(remaining) => SizeHint::with_exact(remaining),
            State::Chunked(_) | State::Close => SizeHint::default(),
        }
    }
}
