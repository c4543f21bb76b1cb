//! The span of a request where it enters the system (the gateway), kept apart from
//! `tracing` and from the SDK's span machinery: the gateway's hot path draws two ids, decides
//! by the head ratio, and writes a `traceparent` — no span object, no allocation beyond the
//! header. When the request ends its span is handed to the exporter as finished span data
//! if the trace was sampled, or if the tail rule (see [`super::sampling`]) keeps it because
//! it failed or was slow: after the fact, under the ids its `traceparent` already carried
//! upstream and its log lines already show.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use super::propagation;
use super::sampling::TailPolicy;

/// What [`super::init`] installs for edge spans.
pub(crate) struct EdgeTracing {
    /// The head decision for traces that start here.
    pub(crate) sampler: Sampler,
    /// Where finished spans go (the exporting processor), when there is one.
    pub(crate) sink: Option<Arc<dyn SpanProcessor>>,
    pub(crate) tail: Option<TailPolicy>,
}

pub(crate) static EDGE: OnceLock<EdgeTracing> = OnceLock::new();

/// A request's span at the edge. Inert when telemetry is not installed.
#[derive(Debug)]
pub struct EdgeSpan {
    /// This span's ids, sampling flag and trace state; invalid when inert.
    context: SpanContext,
    /// The caller's span, when it sent a `traceparent`.
    parent: SpanContext,
    started: SystemTime,
    clock: Instant,
}

/// How a request ended, for its span.
pub struct Outcome<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The route that took it (`""`: none).
    pub route: &'a str,
    /// The request's path.
    pub path: &'a str,
    /// The answer's status.
    pub status: u16,
    /// The upstream that answered, when one did.
    pub upstream: &'a str,
    /// What went wrong, for a failed request.
    pub error: Option<&'a dyn Display>,
}

impl EdgeSpan {
    /// Starts the span of a request, child of its `traceparent` when it sent one.
    pub fn start(headers: &HeaderMap) -> Self {
        let started = SystemTime::now();
        let clock = Instant::now();
        let inert = |parent| Self {
            context: SpanContext::empty_context(),
            parent,
            started,
            clock,
        };
        let Some(edge) = EDGE.get() else {
            return inert(SpanContext::empty_context());
        };
        let parent = if headers.contains_key("traceparent") {
            propagation::extract(headers).span().span_context().clone()
        } else {
            SpanContext::empty_context()
        };
        let span_id = SpanId::from(rand::random::<u64>().max(1));
        let (trace_id, sampled, state) = if parent.is_valid() {
            (parent.trace_id(), parent.is_sampled(), parent.trace_state().clone())
        } else {
            let trace_id = TraceId::from(rand::random::<u128>().max(1));
            let decision = edge
                .sampler
                .should_sample(None, trace_id, "request", &SpanKind::Server, &[], &[])
                .decision;
            (
                trace_id,
                decision == SamplingDecision::RecordAndSample,
                TraceState::default(),
            )
        };
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Self {
            context: SpanContext::new(trace_id, span_id, flags, false, state),
            parent,
            started,
            clock,
        }
    }

    /// Writes the span's `traceparent` (and the caller's `tracestate`) into an outgoing
    /// request.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if !self.context.is_valid() {
            return;
        }
        // `00-<trace id>-<span id>-<flags>`, written without the formatting machinery.
        let mut value = [0u8; 55];
        value[..3].copy_from_slice(b"00-");
        hex(&self.context.trace_id().to_bytes(), &mut value[3..35]);
        value[35] = b'-';
        hex(&self.context.span_id().to_bytes(), &mut value[36..52]);
        value[52] = b'-';
        hex(&[self.context.trace_flags().to_u8()], &mut value[53..55]);
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.insert(propagation::TRACE_HEADERS[0].clone(), value);
        }
        let state = self.context.trace_state().header();
        if !state.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&state) {
                headers.insert(propagation::TRACE_HEADERS[1].clone(), value);
            }
        }
    }

    /// The trace id, for log lines (also when the trace is not sampled).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.context.is_valid().then(|| self.context.trace_id())
    }

    /// Ends the span: exports it with its outcome when the trace is sampled, or when the
    /// tail rule keeps it.
    pub fn finish(self, outcome: &Outcome<'_>) {
        let Some(EdgeTracing {
            sink: Some(sink), tail, ..
        }) = EDGE.get()
        else {
            return;
        };
        if !self.context.is_valid() {
            return;
        }
        let failed = outcome.status >= 500;
        let took = self.clock.elapsed();
        let by_tail = !self.context.is_sampled() && tail.is_some_and(|t| t.keeps(failed, took));
        if !self.context.is_sampled() && !by_tail {
            return;
        }
        let route = if outcome.route.is_empty() {
            "unrouted"
        } else {
            outcome.route
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", outcome.method.to_string()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("url.path", outcome.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(outcome.status)),
        ];
        if !outcome.upstream.is_empty() {
            attributes.push(KeyValue::new("server.address", outcome.upstream.to_owned()));
        }
        if by_tail {
            attributes.push(KeyValue::new("flotilla.sampling", "tail"));
        }
        let status = match outcome.error.filter(|_| failed) {
            Some(error) => Status::error(error.to_string()),
            None if failed => Status::error(format!("status {}", outcome.status)),
            None => Status::Unset,
        };
        let ids = &self.context;
        sink.on_end(SpanData {
            span_context: SpanContext::new(
                ids.trace_id(),
                ids.span_id(),
                TraceFlags::SAMPLED,
                false,
                ids.trace_state().clone(),
            ),
            parent_span_id: if self.parent.is_valid() {
                self.parent.span_id()
            } else {
                SpanId::INVALID
            },
            parent_span_is_remote: self.parent.is_valid(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{} {route}", outcome.method)),
            start_time: self.started,
            end_time: self.started + took,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("flotilla").build(),
        });
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}
