//! Which traces are kept.
//!
//! **Head decision, parent-based.** A trace is sampled where it starts (the gateway, or a
//! service's own background work) with probability `ratio` (`OTEL_TRACES_SAMPLER_ARG`,
//! default 0.1, like Spring Cloud Sleuth's 10 %); every span below follows the `sampled`
//! flag of the `traceparent` it was given, so a trace is kept whole or not at all.
//!
//! **Tail rule at the gateway.** For a request the head decision dropped, the gateway
//! records nothing while it runs (the `traceparent` it sends on says "not sampled", so the
//! services behind it record nothing either); when it ends, if it failed (status error: 5xx,
//! or no upstream) or took at least `slow` (`FLOTILLA_TRACE_SLOW_MS`, default 500 ms), the
//! gateway exports its span after the fact, under the ids it already gave the request (see
//! [`super::edge`]). Those requests therefore always appear in the trace store with their
//! route, status, upstream and error, though only the gateway's own span of them: deciding
//! for the whole trace at its end would mean every service buffering every span until the
//! gateway decides, which is a collector's job (point `OTEL_EXPORTER_OTLP_ENDPOINT` at an
//! OpenTelemetry Collector with tail sampling for that).

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

/// The default share of new traces kept.
pub const DEFAULT_RATIO: f64 = 0.1;

/// The default threshold of the gateway's tail rule.
pub const DEFAULT_SLOW: Duration = Duration::from_millis(500);

/// The environment variable naming the tail rule's threshold in milliseconds.
pub const SLOW_MS_ENV: &str = "FLOTILLA_TRACE_SLOW_MS";

/// The sampling policy of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of new traces kept, `0.0..=1.0`.
    pub ratio: f64,
    /// The tail rule, for the process where requests enter (the gateway).
    pub tail: Option<TailPolicy>,
}

/// Keep a span that failed or took at least `slow`, whatever the head decision said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailPolicy {
    /// The duration from which a request counts as slow.
    pub slow: Duration,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            tail: None,
        }
    }
}

impl Sampling {
    /// The ratio from `OTEL_TRACES_SAMPLER_ARG` (clamped to `0..=1`; unparsable values are
    /// ignored), no tail rule.
    pub fn from_env() -> Self {
        let ratio = std::env::var(flotilla_api::telemetry::otel_env::SAMPLER_ARG)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(DEFAULT_RATIO, |r| r.clamp(0.0, 1.0));
        Self { ratio, tail: None }
    }

    /// Adds the tail rule, its threshold from `FLOTILLA_TRACE_SLOW_MS` or [`DEFAULT_SLOW`].
    pub fn with_tail_from_env(mut self) -> Self {
        let slow = std::env::var(SLOW_MS_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(DEFAULT_SLOW, Duration::from_millis);
        self.tail = Some(TailPolicy { slow });
        self
    }

    /// The SDK sampler for this policy: parent-based, new traces by ratio.
    pub fn sampler(&self) -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.ratio)))
    }
}

impl TailPolicy {
    /// Whether a request the head decision dropped is kept anyway.
    pub fn keeps(&self, failed: bool, took: Duration) -> bool {
        failed || took >= self.slow
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState};
    use opentelemetry::Context;
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};

    use super::*;

    #[test]
    fn roots_follow_the_ratio_and_children_their_parent() {
        let never = Sampling { ratio: 0.0, tail: None }.sampler();
        let always = Sampling { ratio: 1.0, tail: None }.sampler();
        let root = |s: &Sampler| {
            s.should_sample(None, TraceId::from(5u128), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(root(&never), SamplingDecision::Drop);
        assert_eq!(root(&always), SamplingDecision::RecordAndSample);

        let parent = |flags| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(5u128),
                SpanId::from(1u64),
                flags,
                true,
                TraceState::default(),
            ))
        };
        let decision = |s: &Sampler, cx: &Context| {
            s.should_sample(Some(cx), TraceId::from(5u128), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(
            decision(&never, &parent(TraceFlags::SAMPLED)),
            SamplingDecision::RecordAndSample,
            "a sampled parent wins over the ratio"
        );
        assert_eq!(
            decision(&always, &parent(TraceFlags::default())),
            SamplingDecision::Drop,
            "so does an unsampled one"
        );
    }

    #[test]
    fn the_tail_rule_keeps_failed_and_slow_requests_only() {
        let tail = TailPolicy {
            slow: Duration::from_millis(500),
        };
        assert!(!tail.keeps(false, Duration::from_millis(3)));
        assert!(tail.keeps(true, Duration::from_millis(3)));
        assert!(tail.keeps(false, Duration::from_millis(500)));
    }
}
