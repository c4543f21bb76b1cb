//! JSON log lines: one `flotilla_api::telemetry::LogLine` per event, with the trace and
//! span id of the span it was written in, so `flotilla logs --trace` can follow a request.

use std::fmt;

use flotilla_api::telemetry::LogLine;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as [`LogLine`] JSON.
#[derive(Debug, Clone)]
pub(crate) struct JsonLines {
    service: String,
    instance: Option<String>,
}

impl JsonLines {
    pub(crate) fn new(service: &str, instance: Option<&str>) -> Self {
        Self {
            service: service.to_owned(),
            instance: instance.map(str::to_owned),
        }
    }
}

/// Collects an event's message and fields.
/// An event may name its trace itself (`trace_id = …`), where it is written outside the
/// span of the request it is about (the gateway's access log).
#[derive(Default)]
struct Fields {
    message: String,
    trace_id: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let text = |value: serde_json::Value| match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        match field.name() {
            "message" => self.message = text(value),
            "trace_id" => self.trace_id = Some(text(value)),
            name => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, serde_json::Value::String(crate::http::chain(value)));
    }
}

/// RFC 3339 UTC with microseconds.
pub(crate) fn timestamp(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_micros(now).to_string()
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ids = match fields.trace_id.take() {
            Some(trace_id) => Some((trace_id, None)),
            None => super::propagation::ids(&tracing::Span::current()).map(|(t, s)| (t, Some(s))),
        };
        let meta = event.metadata();
        let (trace_id, span_id) = ids.map_or((None, None), |(t, s)| (Some(t), s));
        let line = LogLine {
            timestamp: timestamp(std::time::SystemTime::now()),
            level: meta.level().to_string(),
            service: self.service.clone(),
            instance: self.instance.clone(),
            trace_id,
            span_id,
            message: fields.message,
            target: Some(meta.target().to_owned()),
            fields: fields.fields,
        };
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_076_062_123_456);
        assert_eq!(timestamp(t), "2026-11-30T22:01:02.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }
}
