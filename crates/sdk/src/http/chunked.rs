//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly: a size line of hex digits
//! (an extension after `;` is ignored), CRLF after every line and every chunk's data,
//! trailers read and dropped. Anything else ends the body with an error, and with it the
//! connection: after a chunk that does not parse, no one knows where the next request starts.

use bytes::{Bytes, BytesMut};

/// The longest size line taken (digits and extensions).
const MAX_LINE: usize = 4 * 1024;
/// The most bytes of trailers taken.
const MAX_TRAILERS: usize = 32 * 1024;

/// Why a chunked body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A size line that is not hex digits (or whose size overflows).
    #[error("bad chunk size line")]
    Size,
    /// A line or a chunk's data not ended by CRLF.
    #[error("chunk not ended by CRLF")]
    LineEnd,
    /// A size line, or the trailers, over their limits.
    #[error("chunk size line or trailers too long")]
    TooLong,
}

/// The last chunk and the end of a chunked body without trailers.
pub const LAST: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk (size line, data, CRLF), so it goes out in one write.
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// What decoding found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Some of the body.
    Data(Bytes),
    /// Nothing yet: read more.
    More,
    /// The body is over (the last chunk and the trailers were read).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// A decoder over the connection's read buffer; it takes from the buffer exactly the bytes
/// of the body, so what follows stays for the next request.
#[derive(Debug)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl Chunked {
    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf` until it has data to give, needs more, or is done.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Piece, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_LINE)? else {
                        return Ok(Piece::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Piece::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(Piece::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Piece::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::LineEnd);
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(Piece::More);
                    };
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen + line.len() + 2)
                    };
                }
                State::Done => return Ok(Piece::End),
            }
        }
    }
}

/// The next CRLF-ended line off the front of `buf` (without its CRLF), `None` while it is
/// incomplete.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, ChunkError> {
    let Some(newline) = buf.iter().take(limit.saturating_add(2)).position(|&b| b == b'\n') else {
        return if buf.len() > limit.saturating_add(1) {
            Err(ChunkError::TooLong)
        } else {
            Ok(None)
        };
    };
    if newline == 0 || buf[newline - 1] != b'\r' {
        return Err(ChunkError::LineEnd);
    }
    let mut line = buf.split_to(newline + 1);
    line.truncate(newline - 1);
    Ok(Some(line))
}

/// A size line's size: hex digits, then nothing or a `;` extension.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    if digits.is_empty() || digits.len() > 16 {
        return Err(ChunkError::Size);
    }
    digits.iter().try_fold(0u64, |size, &d| {
        let value = (d as char).to_digit(16).ok_or(ChunkError::Size)?;
        Ok(size << 4 | u64::from(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; the body and what was left after it.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut chunked = Chunked::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut rest = wire;
        loop {
            match chunked.decode(&mut buf)? {
                Piece::Data(data) => body.extend_from_slice(&data),
                Piece::End => return Ok((body, buf.to_vec())),
                Piece::More if rest.is_empty() => return Err(ChunkError::LineEnd),
                Piece::More => {
                    let n = step.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers_in_any_split() {
        let wire = b"5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        for step in [1, 2, 3, 7, 64, 1024] {
            let (body, rest) = decode_in_steps(wire, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            // Only what arrived with the last read stays: the decoder takes no byte past the body.
            assert!(b"GET /next".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_chunked() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(decode_in_steps(wire, 3).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let long = format!("5;{}\r\n", "e".repeat(MAX_LINE));
        assert_eq!(decode_in_steps(long.as_bytes(), 4096), Err(ChunkError::TooLong));
        let trailers = format!("0\r\n{}", "X-T: 1\r\n".repeat(MAX_TRAILERS / 8 + 1));
        assert_eq!(decode_in_steps(trailers.as_bytes(), 512), Err(ChunkError::TooLong));
    }
}
