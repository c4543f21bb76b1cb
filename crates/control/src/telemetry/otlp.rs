//! OTLP to Flotilla: an `ExportTraceServiceRequest` (decoded from protobuf or OTLP JSON by the
//! receiver) becomes [`Span`]s as the store keeps them. A span whose ids or times are not
//! well-formed is rejected on its own, so one bad span never costs the rest of its batch; the
//! receiver reports the count and why in OTLP's `partial_success`.

use std::collections::BTreeMap;

use base64::Engine as _;
use flotilla_api::telemetry::{Span, SpanEvent, SpanKind, SpanLink, SpanStatus};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span as OtlpSpan};
use serde_json::Value;

/// The `service.name` of a resource that does not name itself (OpenTelemetry's default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// At most this many distinct reasons are quoted in a partial-success message: enough to fix
/// the sender, short enough for a log line.
const MAX_REASONS: usize = 3;

/// The spans of one export request, and what was wrong with the ones left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    /// Every well-formed span.
    pub spans: Vec<Span>,
    /// How many spans were left out.
    pub rejected: u64,
    /// Why, for the first few distinct reasons.
    pub reasons: Vec<String>,
}

impl Converted {
    /// A message for OTLP's `partial_success.error_message`, when spans were left out.
    pub fn message(&self) -> Option<String> {
        (self.rejected > 0).then(|| format!("{} span(s) rejected: {}", self.rejected, self.reasons.join("; ")))
    }
}

/// Converts every span of an export request.
pub fn convert(request: ExportTraceServiceRequest) -> Converted {
    let mut out = Converted::default();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let service = string_attribute(&resource, "service.name")
            .filter(|s| !s.is_empty())
            .unwrap_or(UNKNOWN_SERVICE)
            .to_owned();
        let instance = string_attribute(&resource, "service.instance.id")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        for scope_spans in resource_spans.scope_spans {
            for otlp in scope_spans.spans {
                match convert_span(otlp, &service, instance.as_deref()) {
                    Ok(span) => out.spans.push(span),
                    Err(reason) => {
                        out.rejected += 1;
                        if out.reasons.len() < MAX_REASONS && !out.reasons.contains(&reason) {
                            out.reasons.push(reason);
                        }
                    }
                }
            }
        }
    }
    out
}

/// One span, or why it cannot be kept.
fn convert_span(otlp: OtlpSpan, service: &str, instance: Option<&str>) -> Result<Span, String> {
    let trace_id = id(&otlp.trace_id, 16, "trace_id")?;
    let span_id = id(&otlp.span_id, 8, "span_id")?;
    let what = format!("span {span_id} of trace {trace_id}");
    // An empty parent marks a root; some exporters send eight zero bytes for the same.
    let parent_span_id = if otlp.parent_span_id.is_empty() || otlp.parent_span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(id(&otlp.parent_span_id, 8, "parent_span_id").map_err(|e| format!("{what}: {e}"))?)
    };
    if otlp.start_time_unix_nano == 0 {
        return Err(format!("{what}: start_time_unix_nano is 0"));
    }
    // The store keeps times as SQLite integers (i64): good until the year 2262.
    if otlp.end_time_unix_nano > i64::MAX as u64 {
        return Err(format!("{what}: end_time_unix_nano is beyond the year 2262"));
    }
    if otlp.end_time_unix_nano < otlp.start_time_unix_nano {
        return Err(format!("{what}: ends before it starts"));
    }
    let links = otlp
        .links
        .iter()
        .map(|link| {
            Ok(SpanLink {
                trace_id: id(&link.trace_id, 16, "links.trace_id")?,
                span_id: id(&link.span_id, 8, "links.span_id")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| format!("{what}: {e}"))?;
    let (status, status_message) = match otlp.status {
        None => (SpanStatus::Unset, None),
        Some(s) => (
            match status::StatusCode::try_from(s.code) {
                Ok(status::StatusCode::Ok) => SpanStatus::Ok,
                Ok(status::StatusCode::Error) => SpanStatus::Error,
                Ok(status::StatusCode::Unset) | Err(_) => SpanStatus::Unset,
            },
            Some(s.message).filter(|m| !m.is_empty()),
        ),
    };
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        service: service.to_owned(),
        instance: instance.map(str::to_owned),
        name: otlp.name,
        kind: kind(otlp.kind),
        start_unix_nano: otlp.start_time_unix_nano,
        end_unix_nano: otlp.end_time_unix_nano,
        status,
        status_message,
        attributes: attributes(&otlp.attributes),
        events: otlp
            .events
            .iter()
            .map(|e| SpanEvent {
                name: e.name.clone(),
                time_unix_nano: e.time_unix_nano,
                attributes: attributes(&e.attributes),
            })
            .collect(),
        links,
    })
}

/// OTLP's kind; unspecified (and any value from a newer protocol) counts as internal, as the
/// OpenTelemetry specification says to treat it.
fn kind(value: i32) -> SpanKind {
    match span::SpanKind::try_from(value) {
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        Ok(span::SpanKind::Internal | span::SpanKind::Unspecified) | Err(_) => SpanKind::Internal,
    }
}

/// An id as lowercase hex, if it has the right length and is not all zeros (W3C: invalid).
fn id(bytes: &[u8], len: usize, field: &str) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!("{field} is {} bytes, not {len}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{field} is all zeros"));
    }
    Ok(hex(bytes))
}

/// Lowercase hex, the form ids take everywhere in Flotilla (W3C `traceparent`, logs, URLs).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The string value of an attribute, when it has one.
fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// Attributes as a JSON map (a repeated key: the last one wins).
pub fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), any_value(kv.value.as_ref())))
        .collect()
}

/// An attribute value as JSON: strings, bools, integers and doubles as themselves (a double
/// JSON cannot hold, NaN or infinite, as its text), arrays as arrays, key-value lists as
/// objects, bytes as base64, and an empty value as null.
pub fn any_value(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any_value(Some(v))).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values).into_iter().collect()),
        Some(any_value::Value::BytesValue(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // An index into a profiling dictionary: meaningless outside the profiles signal.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}
