//! The gateway's Prometheus metrics: requests by route and status, latency histograms,
//! retries, upstream errors by kind, ejections, and rate-limited requests. Counters are
//! atomics kept on each route, so counting costs no lookup on the request path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What went wrong upstream, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpstreamError {
    /// No connection could be made.
    Connect,
    /// No answer in time.
    Timeout,
    /// The connection failed mid-request.
    Transport,
    /// No instance to send to.
    NoInstance,
    /// The breaker was open.
    CircuitOpen,
    /// Too many calls in flight.
    Bulkhead,
    /// The deadline passed.
    Deadline,
    /// Anything else.
    Other,
}

impl UpstreamError {
    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Transport => "transport",
            UpstreamError::NoInstance => "no_instance",
            UpstreamError::CircuitOpen => "circuit_open",
            UpstreamError::Bulkhead => "bulkhead",
            UpstreamError::Deadline => "deadline",
            UpstreamError::Other => "other",
        }
    }

    /// The kind of a failed call.
    pub fn of(err: &flotilla::resilience::CallError) -> Self {
        use flotilla::resilience::CallError as E;
        match err {
            E::Connect { .. } => UpstreamError::Connect,
            E::Timeout { .. } => UpstreamError::Timeout,
            E::Transport { .. } | E::Body { .. } => UpstreamError::Transport,
            E::NoInstance { .. } => UpstreamError::NoInstance,
            E::CircuitOpen { .. } => UpstreamError::CircuitOpen,
            E::BulkheadFull { .. } => UpstreamError::Bulkhead,
            E::DeadlineExceeded { .. } => UpstreamError::Deadline,
            _ => UpstreamError::Other,
        }
    }
}

/// The counters of one route (or of requests no route took).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    statuses: Mutex<BTreeMap<u16, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    errors: Mutex<BTreeMap<UpstreamError, u64>>,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn observe(&self, status: u16, took: Duration, retries: usize) {
        *self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.retries.fetch_add(retries as u64, Ordering::Relaxed);
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: UpstreamError) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Counts a request refused by a rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders every route's counters (name, metrics, ejections so far) as Prometheus text.
pub fn render<'a>(routes: impl Iterator<Item = (&'a str, &'a RouteMetrics, u64)>) -> String {
    let routes: Vec<_> = routes.collect();
    let mut out = String::new();
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    header(
        &mut out,
        "flotilla_gateway_requests_total",
        "counter",
        "Requests answered, by route and status.",
    );
    for (route, m, _) in &routes {
        for (status, n) in m.statuses.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "flotilla_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    header(
        &mut out,
        "flotilla_gateway_request_duration_seconds",
        "histogram",
        "Time from request to response headers, by route.",
    );
    for (route, m, _) in &routes {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += m.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "flotilla_gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = m.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "flotilla_gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "flotilla_gateway_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "flotilla_gateway_request_duration_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
    header(
        &mut out,
        "flotilla_gateway_retries_total",
        "counter",
        "Extra attempts made on other endpoints, by route.",
    );
    for (route, m, _) in &routes {
        let _ = writeln!(
            out,
            "flotilla_gateway_retries_total{{route=\"{route}\"}} {}",
            m.retries.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "flotilla_gateway_upstream_errors_total",
        "counter",
        "Failed upstream calls (after retries), by route and kind.",
    );
    for (route, m, _) in &routes {
        for (kind, n) in m.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "flotilla_gateway_upstream_errors_total{{route=\"{route}\",kind=\"{}\"}} {n}",
                kind.label()
            );
        }
    }
    header(
        &mut out,
        "flotilla_gateway_ejections_total",
        "counter",
        "Endpoints taken out of rotation by outlier detection, by route.",
    );
    for (route, _, ejections) in &routes {
        let _ = writeln!(out, "flotilla_gateway_ejections_total{{route=\"{route}\"}} {ejections}");
    }
    header(
        &mut out,
        "flotilla_gateway_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by route.",
    );
    for (route, m, _) in &routes {
        let _ = writeln!(
            out,
            "flotilla_gateway_rate_limited_total{{route=\"{route}\"}} {}",
            m.rate_limited.load(Ordering::Relaxed)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = RouteMetrics::default();
        m.observe(200, Duration::from_millis(3), 0);
        m.observe(200, Duration::from_millis(30), 1);
        m.observe(503, Duration::from_secs(20), 0);
        m.upstream_error(UpstreamError::NoInstance);
        let text = render([("catalog", &m, 2)].into_iter());
        assert!(
            text.contains("flotilla_gateway_requests_total{route=\"catalog\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_gateway_request_duration_seconds_bucket{route=\"catalog\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_gateway_request_duration_seconds_bucket{route=\"catalog\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("flotilla_gateway_retries_total{route=\"catalog\"} 1"));
        assert!(text.contains("flotilla_gateway_upstream_errors_total{route=\"catalog\",kind=\"no_instance\"} 1"));
        assert!(text.contains("flotilla_gateway_ejections_total{route=\"catalog\"} 2"));
    }
}
