//! Throttling of failed logins, per account and per client address: after N failures within
//! the window, attempts are refused (429, `Retry-After`) until the oldest failure leaves it.
//! A success clears the account's count. In memory, per instance: a restart forgets, which
//! errs towards letting people in.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked keys, entries whose failures have all left the window are
/// dropped, so a flood of made-up names cannot grow the map without bound.
const PRUNE_ABOVE: usize = 10_000;

/// Failures by key (`account:<email>`, `ip:<addr>`).
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` if `key` has `max` failures within `window`: how long until one leaves it.
    pub fn check(&self, key: &str, max: u32, window: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        let Some(times) = map.get_mut(key) else {
            return Ok(());
        };
        while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.len() >= max as usize {
            let oldest = times.front().copied().unwrap_or(now);
            Err(window
                .saturating_sub(now.duration_since(oldest))
                .max(Duration::from_secs(1)))
        } else {
            Ok(())
        }
    }

    /// Counts a failure.
    pub fn fail(&self, key: &str, window: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let times = map.entry(key.to_owned()).or_default();
        times.push_back(now);
        // Only the last few matter; a flood against one key stays small.
        while times.len() > 1_000 {
            times.pop_front();
        }
    }

    /// Forgets a key's failures (a successful login).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_max_failures_until_the_window_passes_and_clears_on_success() {
        let throttle = Throttle::default();
        let window = Duration::from_millis(200);
        for _ in 0..3 {
            assert!(throttle.check("account:a@b.c", 3, window).is_ok());
            throttle.fail("account:a@b.c", window);
        }
        let wait = throttle.check("account:a@b.c", 3, window).unwrap_err();
        assert!(wait >= Duration::from_secs(1), "Retry-After is at least a second");
        assert!(
            throttle.check("account:other@b.c", 3, window).is_ok(),
            "keys are separate"
        );
        std::thread::sleep(window);
        assert!(
            throttle.check("account:a@b.c", 3, window).is_ok(),
            "failures leave the window"
        );
        throttle.fail("account:a@b.c", window);
        throttle.clear("account:a@b.c");
        assert!(throttle.check("account:a@b.c", 1, window).is_ok());
    }
}
