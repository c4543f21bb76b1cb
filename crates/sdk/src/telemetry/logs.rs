//! JSON log lines: one `flotilla_api::telemetry::LogLine` per event, with the trace and
//! span id of the span it was written in, so `flotilla logs --trace` can follow a request.
//!
//! The line is written straight into the output, field by field, with no intermediate JSON
//! values: the gateway writes one per request when its access log is on.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as `LogLine` JSON.
#[derive(Debug, Clone)]
pub(crate) struct JsonLines {
    /// `"service":"…"` and, when known, `,"instance":"…"`, escaped once.
    process: String,
}

impl JsonLines {
    pub(crate) fn new(service: &str, instance: Option<&str>) -> Self {
        let mut process = String::from("\"service\":");
        escape(&mut process, service);
        if let Some(instance) = instance {
            process.push_str(",\"instance\":");
            escape(&mut process, instance);
        }
        Self { process }
    }
}

/// Appends `text` as a JSON string.
fn escape(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Collects an event's message, its own trace id if it names one (`trace_id = …`: an event
/// written outside the span of the request it is about, like the gateway's access log), and
/// its other fields as the members of a JSON object.
#[derive(Default)]
struct Fields {
    message: String,
    trace_id: Option<String>,
    fields: String,
    scratch: String,
}

impl Fields {
    /// Starts the member `name`; the caller appends its value.
    fn key(&mut self, name: &str) {
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        escape(&mut self.fields, name);
        self.fields.push(':');
    }

    fn text(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.message),
            "trace_id" => self.trace_id = Some(value.to_owned()),
            name => {
                self.key(name);
                escape(&mut self.fields, value);
            }
        }
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        self.key(field.name());
        let _ = self.fields.write_fmt(value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{value:?}");
        self.text(field, &scratch);
        self.scratch = scratch;
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.text(field, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, &crate::http::chain(value));
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
        let (trace_id, span_id) = match fields.trace_id.take() {
            Some(trace_id) => (Some(trace_id), None),
            None => match super::propagation::ids(&tracing::Span::current()) {
                Some((t, s)) => (Some(t), Some(s)),
                None => (None, None),
            },
        };
        let meta = event.metadata();
        let mut line = String::with_capacity(160 + fields.message.len() + fields.fields.len());
        line.push_str("{\"timestamp\":\"");
        line.push_str(&timestamp(std::time::SystemTime::now()));
        let _ = write!(line, "\",\"level\":\"{}\",", meta.level());
        line.push_str(&self.process);
        for (name, value) in [("trace_id", &trace_id), ("span_id", &span_id)] {
            if let Some(value) = value {
                let _ = write!(line, ",\"{name}\":");
                escape(&mut line, value);
            }
        }
        line.push_str(",\"message\":");
        escape(&mut line, &fields.message);
        line.push_str(",\"target\":");
        escape(&mut line, meta.target());
        if !fields.fields.is_empty() {
            let _ = write!(line, ",\"fields\":{{{}}}", fields.fields);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use flotilla_api::telemetry::LogLine;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_a_log_line_with_its_fields_escaped() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines::new("orders", Some("orders-\"1\"")))
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                order_id = "o-1",
                lines = 2u64,
                paid = true,
                ratio = 0.5,
                note = "a \"quoted\"\nline",
                "order placed"
            );
            tracing::warn!(
                trace_id = "0af7651916cd43dd8448eb211c80319c",
                status = 502i64,
                "GET / 502"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<LogLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0].service, "orders");
        assert_eq!(lines[0].instance.as_deref(), Some("orders-\"1\""));
        assert_eq!(lines[0].level, "INFO");
        assert_eq!(lines[0].message, "order placed");
        assert_eq!(lines[0].fields["order_id"], "o-1");
        assert_eq!(lines[0].fields["lines"], 2);
        assert_eq!(lines[0].fields["paid"], true);
        assert_eq!(lines[0].fields["ratio"], 0.5);
        assert_eq!(lines[0].fields["note"], "a \"quoted\"\nline");
        assert_eq!(lines[0].trace_id, None, "no span, no trace");
        assert!(
            lines[0].timestamp.ends_with('Z') && lines[0].timestamp.len() == 27,
            "{}",
            lines[0].timestamp
        );
        assert_eq!(
            lines[1].trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c"),
            "an event's own trace id"
        );
        assert_eq!(lines[1].fields["status"], 502);
        assert!(!lines[1].fields.contains_key("trace_id"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_076_062_123_456);
        assert_eq!(timestamp(t), "2026-11-30T22:01:02.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }
}
