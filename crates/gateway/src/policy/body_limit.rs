//! The largest request body a route takes: a body declaring more is refused before a byte
//! of it is read, and one of unknown length is refused once it has grown past the limit.

use flotilla_api::Problem;

/// The limit, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

/// A body over a limit (the route's, or what the gateway reads into memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body over {0} bytes")]
pub struct TooLarge(pub u64);

impl TooLarge {
    /// What the client is told: 413 and the limit.
    pub fn to_problem(&self) -> Problem {
        Problem::new(413, "body-too-large", "Content too large")
            .with_detail(format!("the request body is over {} bytes", self.0))
    }
}

impl BodyLimit {
    /// Checks a body's declared length, if it has one.
    pub fn check(&self, length: Option<u64>) -> Result<(), TooLarge> {
        match length {
            Some(n) if n > self.0 => Err(TooLarge(self.0)),
            _ => Ok(()),
        }
    }
}
