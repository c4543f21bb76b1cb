//! A request body too large to hold, or of unknown length, forwarded as it arrives: the
//! connection's task reads it off the socket (while the same task waits for the upstream's
//! answer) and hands it over piece by piece through a small channel to the body the upstream
//! request carries. Bodies small enough to replay never come here: the connection reads them
//! whole before the request is handled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::chunked::{ChunkError, Chunked, Piece};

/// Why a streamed request body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The client closed the connection before the body's end.
    #[error("the client closed the connection before the end of the body")]
    Closed,
    /// Reading the socket failed.
    #[error("reading the request body: {0}")]
    Io(#[from] std::io::Error),
    /// The chunked coding was broken.
    #[error("request body: {0}")]
    Chunk(#[from] ChunkError),
}

/// The receiving end: what the upstream request sends.
#[derive(Debug)]
pub struct Inbound {
    pieces: mpsc::Receiver<Result<Bytes, InboundError>>,
    /// Bytes still to come, when the length was given.
    left: Option<u64>,
    ended: bool,
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(err))) => {
                self.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.left.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// How the body is delimited on the wire.
#[derive(Debug)]
enum Coding {
    Length(u64),
    Chunked(Chunked),
}

/// The sending end, driven by the connection's task.
#[derive(Debug)]
pub struct Reader {
    coding: Coding,
    pieces: mpsc::Sender<Result<Bytes, InboundError>>,
    /// The whole body was read off the wire (the connection may serve another request).
    done: bool,
    /// The receiver went away or reading failed: nothing more is read.
    stopped: bool,
}

impl Reader {
    fn pair(coding: Coding, left: Option<u64>) -> (Reader, Inbound) {
        // Two pieces in flight: the reader may run one read ahead of the upstream's writes.
        let (tx, rx) = mpsc::channel(2);
        let reader = Reader {
            coding,
            pieces: tx,
            done: false,
            stopped: false,
        };
        let inbound = Inbound {
            pieces: rx,
            left,
            ended: false,
        };
        (reader, inbound)
    }

    /// A body of `length` bytes.
    pub fn length(length: u64) -> (Reader, Inbound) {
        Self::pair(Coding::Length(length), Some(length))
    }

    /// A chunked body.
    pub fn chunked() -> (Reader, Inbound) {
        Self::pair(Coding::Chunked(Chunked::default()), None)
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether there is nothing more to do.
    pub fn is_idle(&self) -> bool {
        self.done || self.stopped
    }

    /// Reads and hands over the next piece of the body. Cancel-safe: a piece is taken off
    /// `buf` only once there is room to hand it over, and reading keeps what it read in `buf`.
    pub async fn step<IO: AsyncRead + Unpin>(&mut self, io: &mut IO, buf: &mut BytesMut) {
        let Ok(permit) = self.pieces.reserve().await else {
            // Whoever sent the body stopped wanting it (the upstream answered, or gave up).
            self.stopped = true;
            return;
        };
        loop {
            match decode(&mut self.coding, &mut self.done, buf) {
                Ok(Some(data)) => {
                    permit.send(Ok(data));
                    return self.end_if_done();
                }
                Ok(None) if self.done => {
                    drop(permit);
                    return self.end_if_done();
                }
                Ok(None) => {}
                Err(err) => {
                    permit.send(Err(err));
                    self.stopped = true;
                    return;
                }
            }
            super::reserve_body(buf);
            let failed = match io.read_buf(buf).await {
                Ok(0) => InboundError::Closed,
                Ok(_) => continue,
                Err(err) => InboundError::Io(err),
            };
            permit.send(Err(failed));
            self.stopped = true;
            return;
        }
    }

    /// At the body's end, ends the receiver's too, after what it was handed: the channel's
    /// end is the body's.
    fn end_if_done(&mut self) {
        if self.done {
            self.pieces = mpsc::channel(1).0;
        }
    }
}

/// The next piece in `buf`, if any; sets `done` at the body's end.
fn decode(coding: &mut Coding, done: &mut bool, buf: &mut BytesMut) -> Result<Option<Bytes>, InboundError> {
    match coding {
        Coding::Length(left) => {
            if *left == 0 {
                *done = true;
                return Ok(None);
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
            *left -= take as u64;
            *done = *left == 0;
            Ok(Some(buf.split_to(take).freeze()))
        }
        Coding::Chunked(chunked) => match chunked.decode(buf)? {
            Piece::Data(data) => Ok(Some(data)),
            Piece::More => Ok(None),
            Piece::End => {
                *done = true;
                Ok(None)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_chunked_body_arrives_whole_and_leaves_the_next_request() {
        let (mut reader, inbound) = Reader::chunked();
        let wire = b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let mut io = &wire[..];
        let mut buf = BytesMut::new();
        let collect = tokio::spawn(inbound.collect());
        while !reader.is_idle() {
            reader.step(&mut io, &mut buf).await;
        }
        assert!(reader.is_done());
        drop(reader);
        let body = collect.await.unwrap().unwrap().to_bytes();
        assert_eq!(&body[..], b"abcdefg");
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_an_end() {
        let (mut reader, inbound) = Reader::length(10);
        assert_eq!(inbound.size_hint().exact(), Some(10));
        let mut io = &b"12345"[..];
        let mut buf = BytesMut::new();
        let collect = tokio::spawn(inbound.collect());
        while !reader.is_idle() {
            reader.step(&mut io, &mut buf).await;
        }
        assert!(!reader.is_done());
        drop(reader);
        assert!(collect.await.unwrap().is_err());
    }
}
