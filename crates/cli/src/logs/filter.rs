//! Which log lines `flotilla logs` shows: by service or process, by trace, by level and by
//! age. Lines that are not JSON (an older process, a panic) carry none of these, so they are
//! kept only when the filter asks nothing they cannot answer.

use flotilla_api::telemetry::LogLine;
use jiff::Timestamp;

use super::level::Level;
use super::LogsError;

/// The fewest hex digits `--trace` takes: the short id log lines show.
pub const MIN_TRACE_PREFIX: usize = super::render::SHORT_TRACE;
/// A whole trace id's length (W3C trace context).
pub const TRACE_ID_LEN: usize = 32;

/// What a line must match to be shown.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A service (`orders`) or a process (`orders-2`).
    service: Option<String>,
    /// A trace id or its first digits, lowercase.
    trace: Option<String>,
    /// This level and more severe.
    level: Option<Level>,
    /// Lines at or after this instant.
    since: Option<Timestamp>,
}

/// The service a supervised process runs, from its name: `catalog-2` → `catalog`,
/// `gateway` → `gateway` (the supervisor numbers instances from 1).
pub fn service_of(process: &str) -> &str {
    match process.rsplit_once('-') {
        Some((service, n)) if !service.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => service,
        _ => process,
    }
}

/// A `--trace` argument checked and lowercased: 8 to 32 hex digits.
pub fn trace_prefix(given: &str) -> Result<String, LogsError> {
    let prefix = given.trim().to_ascii_lowercase();
    let hex = prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || !(MIN_TRACE_PREFIX..=TRACE_ID_LEN).contains(&prefix.len()) {
        return Err(LogsError::BadTrace {
            given: given.to_owned(),
        });
    }
    Ok(prefix)
}

impl Filter {
    /// A filter from the command's options; the trace is checked with [`trace_prefix`].
    pub fn new(
        service: Option<String>,
        trace: Option<&str>,
        level: Option<Level>,
        since: Option<Timestamp>,
    ) -> Result<Self, LogsError> {
        Ok(Self {
            service,
            trace: trace.map(trace_prefix).transpose()?,
            level,
            since,
        })
    }

    /// The same filter without its age limit: lines appended while following are new.
    pub fn without_since(&self) -> Self {
        Self {
            since: None,
            ..self.clone()
        }
    }

    /// Whether the process named `process` (a log file's stem) is the service or process
    /// asked for, so every line of its file is.
    fn process_matches(&self, process: &str) -> bool {
        match &self.service {
            None => true,
            Some(wanted) => process == wanted || service_of(process) == wanted,
        }
    }

    /// Whether to show a line of `process`'s file: `line` when it is JSON, stamped `at`
    /// (its own time, or for other lines the time of the JSON line before it).
    pub fn keeps(&self, process: &str, line: Option<&LogLine>, at: Option<Timestamp>) -> bool {
        if let Some(since) = self.since {
            // A line of unknown time cannot be shown to be recent.
            if at.is_none_or(|at| at < since) {
                return false;
            }
        }
        let Some(line) = line else {
            return self.trace.is_none() && self.level.is_none() && self.process_matches(process);
        };
        if let Some(wanted) = &self.service {
            let named = line.service == *wanted || line.instance.as_deref() == Some(wanted.as_str());
            if !named && !self.process_matches(process) {
                return false;
            }
        }
        if let Some(prefix) = &self.trace {
            let matches = line
                .trace_id
                .as_deref()
                .is_some_and(|id| id.to_ascii_lowercase().starts_with(prefix.as_str()));
            if !matches {
                return false;
            }
        }
        if let Some(min) = self.level {
            if Level::parse(&line.level).is_none_or(|level| level < min) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn line(service: &str, level: &str, trace: Option<&str>) -> LogLine {
        LogLine {
            timestamp: "2026-11-30T22:01:02.123456Z".into(),
            level: level.into(),
            service: service.into(),
            instance: None,
            trace_id: trace.map(str::to_owned),
            span_id: None,
            message: "m".into(),
            target: None,
            fields: Default::default(),
        }
    }

    fn at(text: &str) -> Option<Timestamp> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn process_names_give_their_service() {
        assert_eq!(service_of("catalog-12"), "catalog");
        assert_eq!(service_of("gateway"), "gateway");
        assert_eq!(service_of("my-api"), "my-api");
        assert_eq!(service_of("-1"), "-1");
    }

    #[test]
    fn trace_prefix_takes_8_to_32_hex_digits() {
        assert_eq!(trace_prefix("4BF92F35").unwrap(), "4bf92f35");
        assert_eq!(trace_prefix(TRACE).unwrap(), TRACE);
        assert!(matches!(trace_prefix("4bf92f3"), Err(LogsError::BadTrace { .. })));
        assert!(trace_prefix("4bf92f35zz").is_err());
        assert!(trace_prefix(&format!("{TRACE}0")).is_err());
    }

    #[test]
    fn service_matches_the_line_the_file_or_its_prefix() {
        let f = Filter::new(Some("orders".into()), None, None, None).unwrap();
        let orders = line("orders", "INFO", None);
        let catalog = line("catalog", "INFO", None);
        assert!(f.keeps("orders-1", Some(&orders), None));
        assert!(f.keeps("api-1", Some(&orders), None), "by the line's service");
        assert!(f.keeps("orders-2", Some(&catalog), None), "by the file's prefix");
        assert!(!f.keeps("catalog-1", Some(&catalog), None));
        let one = Filter::new(Some("orders-2".into()), None, None, None).unwrap();
        assert!(one.keeps("orders-2", Some(&orders), None));
        assert!(!one.keeps("orders-1", Some(&orders), None));
    }

    #[test]
    fn trace_matches_by_prefix() {
        let f = Filter::new(None, Some("4BF92F35"), None, None).unwrap();
        assert!(f.keeps("orders-1", Some(&line("orders", "INFO", Some(TRACE))), None));
        let other = line("orders", "INFO", Some("00000000000000000000000000000001"));
        assert!(!f.keeps("orders-1", Some(&other), None));
        assert!(!f.keeps("orders-1", Some(&line("orders", "INFO", None)), None));
    }

    #[test]
    fn level_keeps_it_and_worse() {
        let f = Filter::new(None, None, Some(Level::Warn), None).unwrap();
        assert!(f.keeps("x", Some(&line("x", "ERROR", None)), None));
        assert!(f.keeps("x", Some(&line("x", "WARN", None)), None));
        assert!(!f.keeps("x", Some(&line("x", "INFO", None)), None));
        assert!(
            !f.keeps("x", Some(&line("x", "NOTICE", None)), None),
            "unknown levels are not guessed"
        );
    }

    #[test]
    fn since_keeps_recent_lines_only() {
        let f = Filter::new(None, None, None, at("2026-11-30T22:00:00Z")).unwrap();
        let l = line("x", "INFO", None);
        assert!(f.keeps("x", Some(&l), at("2026-11-30T22:00:00Z")));
        assert!(!f.keeps("x", Some(&l), at("2026-11-30T21:59:59Z")));
        assert!(!f.keeps("x", None, None), "unknown time");
        assert!(f.keeps("x", None, at("2026-11-30T22:00:01Z")));
        assert!(f.without_since().keeps("x", Some(&l), at("2020-01-01T00:00:00Z")));
    }

    #[test]
    fn plain_lines_only_without_trace_or_level() {
        assert!(Filter::default().keeps("orders-1", None, None));
        let service = Filter::new(Some("orders".into()), None, None, None).unwrap();
        assert!(service.keeps("orders-1", None, None));
        assert!(!service.keeps("catalog-1", None, None));
        let trace = Filter::new(None, Some(TRACE), None, None).unwrap();
        assert!(!trace.keeps("orders-1", None, None));
        let level = Filter::new(None, None, Some(Level::Error), None).unwrap();
        assert!(!level.keeps("orders-1", None, None));
    }
}
