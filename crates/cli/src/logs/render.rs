//! A JSON log line drawn for people: processes write [`LogLine`] JSON so tools can filter by
//! trace id, but on a terminal that is noise. `flotilla up` and `flotilla logs` both show
//! `HH:MM:SS.mmm LEVEL message key=value … trace=<8 hex>` through this one renderer.

use flotilla_api::telemetry::LogLine;

use super::level::Level;
use crate::local_time::LocalTime;
use crate::style::{paint, DIM, GREEN, RED, YELLOW};

/// How many hex digits of a trace id are shown: enough to tell traces apart at a glance and
/// to paste into `flotilla logs --trace`.
pub const SHORT_TRACE: usize = 8;

/// `text` as a [`LogLine`] when it is one; `None` for anything else (plain text from an
/// older process, a panic message), which is then shown as it is.
pub fn parse(text: &str) -> Option<LogLine> {
    // Most non-JSON lines fail here without the cost of a parse.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The human form of `line`, with times in `time`'s zone and the level coloured when
/// `color` is on.
pub fn human(line: &LogLine, time: &LocalTime, color: bool) -> String {
    let when = match line.timestamp.parse::<jiff::Timestamp>() {
        Ok(at) => time.clock(at),
        // Shown as written rather than dropped: the line still says when, just less neatly.
        Err(_) => line.timestamp.clone(),
    };
    let level = match Level::parse(&line.level) {
        Some(level) => {
            let code = match level {
                Level::Error => RED,
                Level::Warn => YELLOW,
                Level::Info => GREEN,
                Level::Debug | Level::Trace => DIM,
            };
            paint(code, &format!("{level:<5}"), color)
        }
        None => format!("{:<5}", line.level),
    };
    let mut out = format!("{when} {level} {}", line.message);
    for (key, value) in &line.fields {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        out.push_str(&field_value(value));
    }
    if let Some(trace) = line.trace_id.as_deref().filter(|t| !t.is_empty()) {
        out.push_str(" trace=");
        out.extend(trace.chars().take(SHORT_TRACE));
    }
    out
}

/// A field's value as `key=value` shows it: bare when that cannot be misread, quoted (JSON
/// escaping) when it is empty or holds spaces, quotes or `=`; non-strings as JSON.
fn field_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => {
            let bare = !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
            if bare {
                s.clone()
            } else {
                value.to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(json: serde_json::Value) -> LogLine {
        serde_json::from_value(json).unwrap()
    }

    fn sample() -> LogLine {
        line(serde_json::json!({
            "timestamp": "2026-11-30T22:01:02.123456Z",
            "level": "WARN",
            "service": "orders",
            "instance": "orders-1",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "message": "payment slow",
            "target": "flotilla_orders::saga",
            "fields": {"order_id": 42, "step": "authorize payment", "ok": true, "who": "ana"}
        }))
    }

    #[test]
    fn renders_time_level_message_fields_and_short_trace() {
        let text = human(&sample(), &LocalTime::utc(), false);
        assert_eq!(
            text,
            "22:01:02.123 WARN  payment slow ok=true order_id=42 step=\"authorize payment\" who=ana trace=4bf92f35"
        );
    }

    #[test]
    fn colours_the_level_by_severity() {
        let warn = human(&sample(), &LocalTime::utc(), true);
        assert!(warn.contains("\x1b[33mWARN \x1b[0m"), "{warn}");
        let mut error = sample();
        error.level = "ERROR".into();
        assert!(human(&error, &LocalTime::utc(), true).contains("\x1b[31mERROR\x1b[0m"));
        let mut info = sample();
        info.level = "INFO".into();
        assert!(human(&info, &LocalTime::utc(), true).contains("\x1b[32mINFO \x1b[0m"));
        let mut debug = sample();
        debug.level = "DEBUG".into();
        assert!(human(&debug, &LocalTime::utc(), true).contains("\x1b[2mDEBUG\x1b[0m"));
    }

    #[test]
    fn a_line_without_trace_or_fields_is_short() {
        let plain = line(serde_json::json!({
            "timestamp": "2026-11-30T22:01:02.000001Z", "level": "INFO",
            "service": "control", "message": "listening"
        }));
        assert_eq!(human(&plain, &LocalTime::utc(), false), "22:01:02.000 INFO  listening");
    }

    #[test]
    fn a_bad_timestamp_is_shown_as_written() {
        let mut odd = sample();
        odd.timestamp = "yesterday".into();
        assert!(human(&odd, &LocalTime::utc(), false).starts_with("yesterday WARN "));
    }

    #[test]
    fn only_log_line_json_parses() {
        assert!(parse(&serde_json::to_string(&sample()).unwrap()).is_some());
        assert!(parse("thread 'main' panicked at src/main.rs:1:1").is_none());
        assert!(parse("{\"not\": \"a log line\"}").is_none());
        assert!(parse("{broken").is_none());
    }
}
