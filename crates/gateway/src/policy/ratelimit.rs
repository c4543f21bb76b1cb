//! Rate limits by GCRA (the generic cell rate algorithm): one timestamp per key, no timer,
//! exact at any rate; bursts up to a set size. Refusals are `429` with `Retry-After` and the
//! `RateLimit-*` headers of the IETF draft.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::Problem;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// What requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The client's address.
    ClientIp,
    /// A header's value (an API key); requests without it share one bucket.
    Header(http::HeaderName),
    /// The verified token's subject (with the route's `auth` policy); anonymous requests
    /// share one bucket.
    Subject,
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; this many more would be right now.
    Allowed {
        /// Requests left in the burst.
        remaining: u64,
    },
    /// Refused; try again after this long.
    Limited {
        /// Wait this long.
        retry_after: Duration,
    },
}

/// A request over the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry in {retry_after:?}")]
pub struct Limited {
    /// When a request would be let through.
    pub retry_after: Duration,
    /// The burst size.
    pub limit: u64,
    /// The `RateLimit-Policy` value.
    pub policy: String,
}

impl Limited {
    /// What the client is told: 429, and when to come back.
    pub fn to_problem(&self) -> Problem {
        Problem::new(429, "rate-limited", "Too many requests")
            .with_detail(format!("retry in {} ms", self.retry_after.as_millis().max(1)))
    }

    /// `Retry-After` (whole seconds, rounded up) and the `RateLimit-*` headers of the refusal.
    pub fn on_response(&self, headers: &mut HeaderMap) {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        if let Ok(v) = HeaderValue::from_str(&self.policy) {
            headers.insert(HeaderName::from_static("ratelimit-policy"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("limit={}, remaining=0, reset={}", self.limit, secs.max(1))) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
    }
}

/// A limit of `requests` per `period`, with bursts of up to `burst`, per key.
#[derive(Debug)]
pub struct RateLimit {
    /// What requests are counted by.
    pub key: RateLimitKey,
    /// Requests allowed per period.
    pub requests: u64,
    /// The period.
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: u64,
    emission: Duration,
    tolerance: Duration,
    /// Theoretical arrival time per key.
    state: Mutex<HashMap<String, Instant>>,
}

/// Past this many keys, idle ones are dropped.
const MAX_KEYS: usize = 100_000;

impl RateLimit {
    /// A limit; `burst` of at least 1.
    pub fn new(key: RateLimitKey, requests: u64, period: Duration, burst: u64) -> Self {
        let requests = requests.max(1);
        let burst = burst.max(1);
        let emission = period / u32::try_from(requests).unwrap_or(u32::MAX);
        Self {
            key,
            requests,
            period,
            burst,
            emission,
            tolerance: emission * u32::try_from(burst - 1).unwrap_or(u32::MAX),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the key is the verified identity, so the limit can only count a request after
    /// `auth`; a limit by address or header counts it before, so a flood of bad credentials is
    /// refused at the limit instead of costing a signature check each.
    pub fn keys_on_identity(&self) -> bool {
        self.key == RateLimitKey::Subject
    }

    /// The key of a request.
    pub fn key_of(&self, client: IpAddr, headers: &HeaderMap, subject: Option<&str>) -> String {
        match &self.key {
            RateLimitKey::ClientIp => client.to_string(),
            RateLimitKey::Subject => subject.unwrap_or_default().to_owned(),
            RateLimitKey::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map_or_else(String::new, str::to_owned),
        }
    }

    /// Counts one request for `key` now.
    pub fn check(&self, key: &str) -> Verdict {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= MAX_KEYS {
            state.retain(|_, tat| *tat > now);
        }
        let tat = state.get(key).copied().unwrap_or(now).max(now);
        // Allowed when the theoretical arrival time is within the burst tolerance.
        if tat.saturating_duration_since(now) > self.tolerance {
            return Verdict::Limited {
                retry_after: tat.saturating_duration_since(now) - self.tolerance,
            };
        }
        let next = tat + self.emission;
        state.insert(key.to_owned(), next);
        // Cells in use: the time ahead of now, in emission intervals, rounded up.
        let used = next
            .saturating_duration_since(now)
            .as_nanos()
            .div_ceil(self.emission.as_nanos().max(1));
        Verdict::Allowed {
            remaining: self.burst.saturating_sub(u64::try_from(used).unwrap_or(u64::MAX)),
        }
    }

    /// The `RateLimit-Policy` value: `<requests>;w=<seconds>`.
    pub fn policy_header(&self) -> String {
        format!("{};w={}", self.requests, self.period.as_secs().max(1))
    }

    /// Counts one request (from `client`, by `subject` when known): how many more the burst
    /// allows now, or the refusal.
    pub fn admit(&self, client: IpAddr, headers: &HeaderMap, subject: Option<&str>) -> Result<u64, Limited> {
        match self.check(&self.key_of(client, headers, subject)) {
            Verdict::Allowed { remaining } => Ok(remaining),
            Verdict::Limited { retry_after } => Err(Limited {
                retry_after,
                limit: self.burst,
                policy: self.policy_header(),
            }),
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` headers of an allowed request's answer.
    pub fn on_response(&self, remaining: u64, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.policy_header()) {
            headers.insert(HeaderName::from_static("ratelimit-policy"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("limit={}, remaining={remaining}", self.burst)) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let limit = RateLimit::new(RateLimitKey::ClientIp, 10, Duration::from_secs(1), 5);
        for expected in (0..5).rev() {
            assert_eq!(limit.check("a"), Verdict::Allowed { remaining: expected });
        }
        match limit.check("a") {
            Verdict::Limited { retry_after } => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(limit.check("b"), Verdict::Allowed { .. }), "keys are separate");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            matches!(limit.check("a"), Verdict::Allowed { .. }),
            "one more every 100 ms"
        );
        assert!(matches!(limit.check("a"), Verdict::Limited { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.check("a"), Verdict::Allowed { remaining: 4 }, "the burst refills");
    }
}
