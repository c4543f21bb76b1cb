//! Fault injection, as Envoy's fault filter: a share of a route's requests delayed, or
//! answered with an error instead of the upstream's, for chaos tests.

use std::time::Duration;

use flotilla_api::Problem;

/// Errors or delays injected into a share of a route's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Delay this share of requests (0.0 to 1.0) ...
    pub delay_share: f64,
    /// ... by this long.
    pub delay: Duration,
    /// Answer this share of requests (0.0 to 1.0) ...
    pub abort_share: f64,
    /// ... with this status, without calling the upstream.
    pub abort_status: u16,
}

/// An answer injected in place of the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fault injected: {0}")]
pub struct Injected(pub u16);

impl Injected {
    /// What the client is told: that the error is on purpose.
    pub fn to_problem(&self) -> Problem {
        Problem::new(self.0, "fault-injected", "Fault injected")
            .with_detail("this route answers a share of requests with an error on purpose (fault injection)")
    }
}

impl Fault {
    /// The delay for one request, given a draw in `[0, 1)`.
    pub fn delay_for(&self, draw: f64) -> Option<Duration> {
        (draw < self.delay_share).then_some(self.delay)
    }

    /// The status to abort one request with, given a draw in `[0, 1)`.
    pub fn abort_for(&self, draw: f64) -> Option<u16> {
        (draw < self.abort_share).then_some(self.abort_status)
    }

    /// Applies the fault to one request: an abort, or its delay (waited here), or nothing.
    pub async fn apply(&self) -> Result<(), Injected> {
        if let Some(status) = self.abort_for(rand::random::<f64>()) {
            return Err(Injected(status));
        }
        if let Some(delay) = self.delay_for(rand::random::<f64>()) {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}
