//! Which traces are kept.
//!
//! **Head decision, parent-based.** A trace is sampled where it starts (the gateway, or a
//! service's own background work) with probability `ratio` (`OTEL_TRACES_SAMPLER_ARG`,
//! default 0.1, like Spring Cloud Sleuth's 10 %); every span below follows the `sampled`
//! flag of the `traceparent` it was given, so a trace is kept whole or not at all.
//!
//! **Tail rule at the gateway.** The gateway records every request's span even when the
//! head decision was "drop" (the `traceparent` it sends on still says "not sampled", so the
//! services behind it record nothing), and at the end keeps the span of any request that
//! failed (status error: 5xx, or no upstream) or took at least `slow`
//! (`FLOTILLA_TRACE_SLOW_MS`, default 500 ms). Those requests therefore always appear in the
//! trace store with their route, status, upstream and error, though only the gateway's own
//! span of them: deciding for the whole trace at its end would mean every service buffering
//! every span until the gateway decides, which is a collector's job (point
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at an OpenTelemetry Collector with tail sampling for that).

use std::time::Duration;

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor,
};
use opentelemetry_sdk::Resource;

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

    /// The SDK sampler for this policy.
    pub fn sampler(&self) -> Box<dyn ShouldSample> {
        match self.tail {
            None => Box::new(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.ratio)))),
            Some(_) => Box::new(RecordAll {
                ratio: Sampler::TraceIdRatioBased(self.ratio),
            }),
        }
    }
}

/// Parent-based with ratio roots, except that "drop" becomes "record only", so the tail
/// rule can still see the span end.
#[derive(Debug, Clone)]
struct RecordAll {
    ratio: Sampler,
}

impl ShouldSample for RecordAll {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().clone());
        let sampled = match &parent {
            Some(parent) => parent.is_sampled(),
            None => matches!(
                self.ratio
                    .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
                    .decision,
                SamplingDecision::RecordAndSample
            ),
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::RecordOnly
            },
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Passes sampled spans on, and unsampled ones that failed or were slow, marked sampled.
#[derive(Debug)]
pub struct TailProcessor<P> {
    next: P,
    policy: TailPolicy,
}

impl<P> TailProcessor<P> {
    /// Applies `policy` in front of `next`.
    pub fn new(next: P, policy: TailPolicy) -> Self {
        Self { next, policy }
    }
}

/// Whether the tail rule keeps a span the head decision dropped.
fn kept_by_tail(span: &SpanData, policy: TailPolicy) -> bool {
    let failed = matches!(span.status, opentelemetry::trace::Status::Error { .. });
    let took = span.end_time.duration_since(span.start_time).unwrap_or_default();
    failed || took >= policy.slow
}

impl<P: SpanProcessor> SpanProcessor for TailProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.next.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if span.span_context.is_sampled() {
            return self.next.on_end(span);
        }
        if kept_by_tail(&span, self.policy) {
            let cx = &span.span_context;
            span.span_context = SpanContext::new(
                cx.trace_id(),
                cx.span_id(),
                cx.trace_flags().with_sampled(true),
                cx.is_remote(),
                cx.trace_state().clone(),
            );
            span.attributes.push(KeyValue::new("flotilla.sampling", "tail"));
            self.next.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use opentelemetry::trace::{SpanId, Status, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    #[derive(Debug, Default, Clone)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn span(sampled: bool, took: Duration, status: Status) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                if sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET catalog".into(),
            start_time: start,
            end_time: start + took,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn the_tail_rule_keeps_failed_and_slow_spans_and_drops_the_rest() {
        let seen = Collect::default();
        let tail = TailProcessor::new(
            seen.clone(),
            TailPolicy {
                slow: Duration::from_millis(500),
            },
        );
        tail.on_end(span(true, Duration::from_millis(3), Status::Unset));
        tail.on_end(span(false, Duration::from_millis(3), Status::Unset));
        tail.on_end(span(false, Duration::from_millis(3), Status::error("502")));
        tail.on_end(span(false, Duration::from_millis(700), Status::Unset));
        let kept = seen.0.lock().unwrap();
        assert_eq!(kept.len(), 3, "the fast, successful, unsampled span is dropped");
        assert!(
            kept.iter().all(|s| s.span_context.is_sampled()),
            "kept spans are exported as sampled"
        );
        assert_eq!(
            kept.iter()
                .filter(|s| s.attributes.iter().any(|a| a.key.as_str() == "flotilla.sampling"))
                .count(),
            2,
            "the two kept by the tail rule say so"
        );
    }

    #[test]
    fn roots_follow_the_ratio_and_children_their_parent() {
        let never = Sampling { ratio: 0.0, tail: None }.sampler();
        let always = Sampling { ratio: 1.0, tail: None }.sampler();
        let root = |s: &dyn ShouldSample| {
            s.should_sample(None, TraceId::from(5u128), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(root(never.as_ref()), SamplingDecision::Drop);
        assert_eq!(root(always.as_ref()), SamplingDecision::RecordAndSample);

        let sampled_parent = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(5u128),
            SpanId::from(1u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let decision = never
            .should_sample(
                Some(&sampled_parent),
                TraceId::from(5u128),
                "x",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision;
        assert_eq!(
            decision,
            SamplingDecision::RecordAndSample,
            "a sampled parent wins over the ratio"
        );

        let gateway = Sampling {
            ratio: 0.0,
            tail: Some(TailPolicy { slow: DEFAULT_SLOW }),
        }
        .sampler();
        assert_eq!(
            root(gateway.as_ref()),
            SamplingDecision::RecordOnly,
            "the gateway records what it does not sample, for the tail rule"
        );
    }
}
