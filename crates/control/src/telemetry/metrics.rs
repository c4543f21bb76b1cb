//! The control plane's own metrics in the Prometheus text format (version 0.0.4), served at
//! `GET /metrics`: what it holds (instances per service, spans) and what it did with spans.

use std::fmt::Write as _;

use flotilla_api::ServiceSummary;

use super::TraceStats;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What one rendering shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services with their instance counts.
    pub services: Vec<ServiceSummary>,
    /// The trace store's counters and size.
    pub traces: TraceStats,
    /// The trace store's bound on spans.
    pub max_spans: u64,
    /// The trace store's size in bytes, when it could be read.
    pub store_bytes: Option<u64>,
}

/// Escapes a label value as the text format asks: backslash, double quote and newline.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the snapshot; every metric has its `# HELP` and `# TYPE` lines, even without a
/// sample (no service registered yet).
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(Option<(&str, &str)>, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            match labels {
                Some((key, v)) => {
                    let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {value}", label(v));
                }
                None => {
                    let _ = writeln!(out, "{name} {value}");
                }
            }
        }
    };
    let services: Vec<_> = snapshot
        .services
        .iter()
        .map(|s| (Some(("service", s.name.as_str())), s.instances as u64))
        .collect();
    metric(
        "flotilla_control_registered_instances",
        "gauge",
        "Instances holding a lease in the registry, by service.",
        &services,
    );
    let t = &snapshot.traces;
    metric(
        "flotilla_control_spans_received_total",
        "counter",
        "Spans received over OTLP since the control plane started, well-formed or not.",
        &[(None, t.received)],
    );
    metric(
        "flotilla_control_spans_rejected_total",
        "counter",
        "Spans refused as malformed (ids of the wrong length, times out of order).",
        &[(None, t.rejected)],
    );
    metric(
        "flotilla_control_spans_stored_total",
        "counter",
        "Spans written to the trace store (a re-sent span replaces its copy and counts again).",
        &[(None, t.stored)],
    );
    metric(
        "flotilla_control_spans_pruned_total",
        "counter",
        "Spans dropped from the trace store to keep it within max_spans and max_age.",
        &[(None, t.pruned)],
    );
    metric(
        "flotilla_control_trace_store_spans",
        "gauge",
        "Spans in the trace store now.",
        &[(None, t.spans)],
    );
    metric(
        "flotilla_control_trace_store_max_spans",
        "gauge",
        "The trace store's bound on spans.",
        &[(None, snapshot.max_spans)],
    );
    let bytes: Vec<_> = snapshot.store_bytes.map(|b| (None, b)).into_iter().collect();
    metric(
        "flotilla_control_trace_store_bytes",
        "gauge",
        "Size of the trace store's database, in bytes.",
        &bytes,
    );
    out
}
