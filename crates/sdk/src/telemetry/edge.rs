//! The span of a request where it enters the system (the gateway), made with the
//! OpenTelemetry API directly rather than through `tracing`: the gateway's hot path pays for
//! a span only when the trace is sampled (an unsampled one is a pair of ids), and the tail
//! rule (see [`super::sampling`]) exports a failed or slow request's span after the fact,
//! under the ids its `traceparent` already carried upstream and its log lines already show.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, Tracer as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SpanData, SpanEvents, SpanLinks, SpanProcessor};

use super::propagation;
use super::sampling::TailPolicy;

/// What [`super::init`] installs for edge spans.
pub(crate) struct EdgeTracing {
    pub(crate) tracer: SdkTracer,
    /// Where spans kept by the tail rule go (the exporting processor), when there is one.
    pub(crate) sink: Option<Arc<dyn SpanProcessor>>,
    pub(crate) tail: Option<TailPolicy>,
}

pub(crate) static EDGE: OnceLock<EdgeTracing> = OnceLock::new();

/// A request's span at the edge. Inert when telemetry is not installed.
#[derive(Debug)]
pub struct EdgeSpan {
    cx: Option<Context>,
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
        let Some(edge) = EDGE.get() else {
            return Self {
                cx: None,
                parent: SpanContext::empty_context(),
                started,
                clock,
            };
        };
        let parent_cx = propagation::extract(headers);
        let parent = parent_cx.span().span_context().clone();
        let span = edge.tracer.build_with_context(
            opentelemetry::trace::SpanBuilder::from_name("request").with_kind(SpanKind::Server),
            &parent_cx,
        );
        Self {
            cx: Some(parent_cx.with_span(span)),
            parent,
            started,
            clock,
        }
    }

    /// Writes the span's `traceparent` (and `tracestate`) into an outgoing request.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(cx) = &self.cx {
            propagation::inject_context(cx, headers);
        }
    }

    /// The trace id, for log lines (also when the trace is not sampled).
    pub fn trace_id(&self) -> Option<TraceId> {
        let cx = self.cx.as_ref()?;
        let id = cx.span().span_context().trace_id();
        (id != TraceId::INVALID).then_some(id)
    }

    /// Ends the span: names it and records the outcome when the trace is sampled; otherwise
    /// exports it now if the tail rule keeps it.
    pub fn finish(self, outcome: &Outcome<'_>) {
        let (Some(cx), Some(edge)) = (self.cx, EDGE.get()) else {
            return;
        };
        let failed = outcome.status >= 500;
        let route = if outcome.route.is_empty() {
            "unrouted"
        } else {
            outcome.route
        };
        let name = format!("{} {route}", outcome.method);
        let attributes = || {
            let mut attributes = vec![
                KeyValue::new("http.request.method", outcome.method.to_string()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("url.path", outcome.path.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(outcome.status)),
            ];
            if !outcome.upstream.is_empty() {
                attributes.push(KeyValue::new("server.address", outcome.upstream.to_owned()));
            }
            attributes
        };
        let status = match outcome.error.filter(|_| failed) {
            Some(error) => Status::error(error.to_string()),
            None if failed => Status::error(format!("status {}", outcome.status)),
            None => Status::Unset,
        };
        let span = cx.span();
        if span.is_recording() {
            span.update_name(name);
            span.set_attributes(attributes());
            span.set_status(status);
            span.end();
            return;
        }
        let (Some(sink), Some(tail)) = (&edge.sink, edge.tail) else {
            return;
        };
        if !tail.keeps(failed, self.clock.elapsed()) {
            return;
        }
        let ids = span.span_context();
        let mut attributes = attributes();
        attributes.push(KeyValue::new("flotilla.sampling", "tail"));
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
            name: Cow::Owned(name),
            start_time: self.started,
            end_time: self.started + self.clock.elapsed(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("flotilla").build(),
        });
    }
}
