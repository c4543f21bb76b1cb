//! Jittered exponential backoff ("full jitter"): retry n waits a random time up to
//! `base × 2^(n-1)`, capped, so retries of many clients spread out instead of arriving in step.

use std::time::Duration;

/// Backoff between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first backoff.
    pub base: Duration,
    /// The largest backoff.
    pub max: Duration,
}

impl Default for Backoff {
    /// Envoy's defaults: 25 ms base, 250 ms cap.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry), given `unit` drawn
    /// uniformly from `[0, 1)`. The first retry goes out at once, on another instance: the
    /// failure that caused it most likely belongs to the instance, not the service.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        if retry <= 1 {
            return Duration::ZERO;
        }
        let exp = 2u32.saturating_pow(retry - 2);
        let cap = self.base.saturating_mul(exp).min(self.max);
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.99), Duration::ZERO);
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(25));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(50));
        assert_eq!(b.delay(4, 0.5), Duration::from_millis(50));
        assert_eq!(b.delay(30, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }
}
