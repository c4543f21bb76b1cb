//! Prometheus metrics of a Flotilla process: requests served and made (RED), events, sagas,
//! the process itself and its Tokio runtime, in the Prometheus text format (0.0.4).
//!
//! Every metric is declared once in [`CATALOG`] with its type, help and labels: rendering
//! takes HELP and TYPE from there, and `docs/observability.md` lists the same names (a test
//! keeps the two equal). Series are created on first use; a process that never calls
//! anyone has no client series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of duration histograms, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Durations in [`BUCKETS`].
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One documented metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its labels, in order.
    pub labels: &'static [&'static str],
    /// What it counts.
    pub help: &'static str,
}

/// A metric's entry: what [`CATALOG`] holds, and what a service [`declare`]s of its own.
pub const fn doc(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> MetricDoc {
    MetricDoc {
        name,
        kind,
        labels,
        help,
    }
}

/// Requests served, by route template, method and status.
pub const HTTP_SERVER_REQUESTS: &str = "flotilla_http_server_requests_total";
/// Time to serve, by route template and method.
pub const HTTP_SERVER_DURATION: &str = "flotilla_http_server_request_duration_seconds";
/// Requests in progress.
pub const HTTP_SERVER_ACTIVE: &str = "flotilla_http_server_active_requests";
/// Calls made to other services, by upstream, method and outcome.
pub const HTTP_CLIENT_REQUESTS: &str = "flotilla_http_client_requests_total";
/// Time of calls made, by upstream and method.
pub const HTTP_CLIENT_DURATION: &str = "flotilla_http_client_request_duration_seconds";
/// Events handed to the log or JetStream by the outbox relay, by topic.
pub const EVENTS_PUBLISHED: &str = "flotilla_events_published_total";
/// Events written to the outbox and not yet relayed.
pub const EVENTS_OUTBOX_PENDING: &str = "flotilla_events_outbox_pending";
/// Deliveries handled by consumers, by topic, group and outcome.
pub const EVENTS_CONSUMED: &str = "flotilla_events_consumed_total";
/// Age of the last event a consumer handled, by topic and group.
pub const EVENTS_CONSUMER_LAG: &str = "flotilla_events_consumer_lag_seconds";
/// Saga steps and compensations run, by saga, step and outcome.
pub const SAGA_STEPS: &str = "flotilla_saga_steps_total";
/// Saga instances that ended, by saga and outcome.
pub const SAGA_OUTCOMES: &str = "flotilla_saga_outcomes_total";
/// Requests delayed or aborted on purpose by fault rules, by kind.
pub const FAULTS_INJECTED: &str = "flotilla_faults_injected_total";

/// Every metric a Flotilla process may export (the gateway's and the control plane's own
/// families are documented beside them in `docs/observability.md`).
pub const CATALOG: &[MetricDoc] = &[
    doc(
        HTTP_SERVER_REQUESTS,
        Kind::Counter,
        &["route", "method", "status"],
        "Requests served, by route template, method and status.",
    ),
    doc(
        HTTP_SERVER_DURATION,
        Kind::Histogram,
        &["route", "method"],
        "Time from request to response headers, by route template and method.",
    ),
    doc(HTTP_SERVER_ACTIVE, Kind::Gauge, &[], "Requests being served now."),
    doc(
        HTTP_CLIENT_REQUESTS,
        Kind::Counter,
        &["upstream", "method", "outcome"],
        "Calls to other services, by upstream, method and outcome (status code or error kind).",
    ),
    doc(
        HTTP_CLIENT_DURATION,
        Kind::Histogram,
        &["upstream", "method"],
        "Time of calls to other services, retries included, by upstream and method.",
    ),
    doc(
        "flotilla_client_breaker_state",
        Kind::Gauge,
        &["upstream", "state"],
        "Each upstream's circuit breaker: 1 for its current state.",
    ),
    doc(
        "flotilla_client_breaker_opened_total",
        Kind::Counter,
        &["upstream"],
        "Times each upstream's breaker opened.",
    ),
    doc(
        "flotilla_discovery_stale",
        Kind::Gauge,
        &[],
        "1 while the registry is unreachable and the last view is served.",
    ),
    doc(
        "flotilla_discovery_index",
        Kind::Gauge,
        &[],
        "The registry revision of the current view.",
    ),
    doc(
        EVENTS_PUBLISHED,
        Kind::Counter,
        &["topic"],
        "Events relayed from the outbox to the log, by topic.",
    ),
    doc(
        EVENTS_OUTBOX_PENDING,
        Kind::Gauge,
        &[],
        "Events committed to the outbox and not yet relayed.",
    ),
    doc(
        EVENTS_CONSUMED,
        Kind::Counter,
        &["topic", "group", "outcome"],
        "Deliveries handled, by topic, consumer group and outcome (handled, duplicate, failed).",
    ),
    doc(
        EVENTS_CONSUMER_LAG,
        Kind::Gauge,
        &["topic", "group"],
        "Age of the last event handled (now minus its time), by topic and consumer group.",
    ),
    doc(
        SAGA_STEPS,
        Kind::Counter,
        &["saga", "step", "outcome"],
        "Saga steps and compensations run, by saga, step and outcome (done, retry, waiting, failed, rejected, compensated).",
    ),
    doc(
        SAGA_OUTCOMES,
        Kind::Counter,
        &["saga", "outcome"],
        "Saga instances that ended, by saga and outcome (completed, compensated, failed).",
    ),
    doc(
        "process_cpu_seconds_total",
        Kind::Counter,
        &[],
        "User and system CPU time spent, in seconds.",
    ),
    doc(
        "process_resident_memory_bytes",
        Kind::Gauge,
        &[],
        "Resident memory size, in bytes.",
    ),
    doc(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        &[],
        "Virtual memory size, in bytes.",
    ),
    doc("process_open_fds", Kind::Gauge, &[], "Open file descriptors."),
    doc("process_max_fds", Kind::Gauge, &[], "The limit of open file descriptors."),
    doc("process_threads", Kind::Gauge, &[], "Operating system threads."),
    doc(
        "process_start_time_seconds",
        Kind::Gauge,
        &[],
        "Start time of the process since the Unix epoch, in seconds.",
    ),
    doc(
        FAULTS_INJECTED,
        Kind::Counter,
        &["kind"],
        "Requests delayed or aborted on purpose by fault rules (flotilla chaos), by kind.",
    ),
    doc("tokio_workers", Kind::Gauge, &[], "Worker threads of the Tokio runtime."),
    doc("tokio_alive_tasks", Kind::Gauge, &[], "Tasks alive in the Tokio runtime."),
    doc(
        "tokio_global_queue_depth",
        Kind::Gauge,
        &[],
        "Tasks waiting in the Tokio runtime's global queue.",
    ),
];

/// The metrics a service declared of its own ([`declare`]), beside the catalog's.
static DECLARED: LazyLock<Mutex<Vec<&'static MetricDoc>>> = LazyLock::new(Mutex::default);

fn declared() -> std::sync::MutexGuard<'static, Vec<&'static MetricDoc>> {
    DECLARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Declares a service's own metrics (its business figures: `shop_payments_reconciled_total`), so
/// [`add`], [`set`] and [`observe`] take them and `/metrics` renders them with their HELP and
/// TYPE like the platform's own. A name already known is left as it is.
pub fn declare(docs: &'static [MetricDoc]) {
    let mut declared = declared();
    for doc in docs {
        if CATALOG.iter().all(|m| m.name != doc.name) && declared.iter().all(|m| m.name != doc.name) {
            declared.push(doc);
        }
    }
}

fn find(name: &str) -> Option<&'static MetricDoc> {
    CATALOG
        .iter()
        .find(|m| m.name == name)
        .or_else(|| declared().iter().copied().find(|m| m.name == name))
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Families {
    /// name → rendered label set → value.
    values: BTreeMap<&'static str, BTreeMap<String, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<String, Histogram>>,
}

static FAMILIES: LazyLock<Mutex<Families>> = LazyLock::new(Mutex::default);

/// Renders a label set as Prometheus writes it inside braces, values escaped.
fn labels(values: &[&str], names: &[&str]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{name}=\"{escaped}\"");
    }
    out
}

fn families() -> std::sync::MutexGuard<'static, Families> {
    FAMILIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `n` to a counter (or a gauge). `values` follow the catalog's label order; a name
/// not in the catalog is a programming error, ignored in release builds.
pub fn add(name: &'static str, values: &[&str], n: f64) {
    let Some(doc) = find(name) else {
        debug_assert!(false, "metric {name} is not in the catalog");
        return;
    };
    *families()
        .values
        .entry(name)
        .or_default()
        .entry(labels(values, doc.labels))
        .or_default() += n;
}

/// Sets a gauge.
pub fn set(name: &'static str, values: &[&str], value: f64) {
    let Some(doc) = find(name) else {
        debug_assert!(false, "metric {name} is not in the catalog");
        return;
    };
    families()
        .values
        .entry(name)
        .or_default()
        .insert(labels(values, doc.labels), value);
}

/// Records one duration in a histogram.
pub fn observe(name: &'static str, values: &[&str], took: Duration) {
    let Some(doc) = find(name) else {
        debug_assert!(false, "metric {name} is not in the catalog");
        return;
    };
    let secs = took.as_secs_f64();
    let mut families = families();
    let histogram = families
        .histograms
        .entry(name)
        .or_default()
        .entry(labels(values, doc.labels))
        .or_default();
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        histogram.buckets[i] += 1;
    }
    histogram.count += 1;
    histogram.sum += secs;
}

fn header(out: &mut String, doc: &MetricDoc) {
    let _ = writeln!(
        out,
        "# HELP {} {}\n# TYPE {} {}",
        doc.name,
        doc.help,
        doc.name,
        doc.kind.as_str()
    );
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The recorded series, then the process's and the runtime's figures.
pub fn render() -> String {
    let mut out = String::new();
    {
        let families = families();
        let declared = declared().clone();
        for doc in CATALOG.iter().chain(declared) {
            if let Some(series) = families.values.get(doc.name) {
                header(&mut out, doc);
                for (labels, value) in series {
                    sample(&mut out, doc.name, labels, *value);
                }
            }
            if let Some(series) = families.histograms.get(doc.name) {
                header(&mut out, doc);
                for (labels, h) in series {
                    let sep = if labels.is_empty() { "" } else { "," };
                    let mut cumulative = 0;
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        cumulative += h.buckets[i];
                        let _ = writeln!(out, "{}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}", doc.name);
                    }
                    let _ = writeln!(out, "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", doc.name, h.count);
                    sample(&mut out, &format!("{}_sum", doc.name), labels, h.sum);
                    sample(&mut out, &format!("{}_count", doc.name), labels, h.count as f64);
                }
            }
        }
    }
    out.push_str(&render_process());
    out
}

/// The process's CPU, memory, descriptors and threads (from `/proc/self`), and the Tokio
/// runtime's workers, tasks and queue depth, under the names Prometheus client libraries
/// use, so standard dashboards work.
pub fn render_process() -> String {
    let mut out = String::new();
    let mut gauge = |name: &'static str, value: f64| {
        if let Some(doc) = find(name) {
            header(&mut out, doc);
            sample(&mut out, name, "", value);
        }
    };
    if let Some(stat) = proc_stat() {
        gauge("process_cpu_seconds_total", stat.cpu_seconds);
        gauge("process_virtual_memory_bytes", stat.virtual_bytes);
        gauge("process_resident_memory_bytes", stat.resident_bytes);
        gauge("process_threads", stat.threads);
        gauge("process_start_time_seconds", stat.start_seconds);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge("process_open_fds", fds.count() as f64);
    }
    if let Some(max) = max_fds() {
        gauge("process_max_fds", max);
    }
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let metrics = handle.metrics();
        gauge("tokio_workers", metrics.num_workers() as f64);
        gauge("tokio_alive_tasks", metrics.num_alive_tasks() as f64);
        gauge("tokio_global_queue_depth", metrics.global_queue_depth() as f64);
    }
    out
}

struct ProcStat {
    cpu_seconds: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    threads: f64,
    start_seconds: f64,
}

/// Reads `/proc/self/stat`; `None` off Linux. Clock ticks are taken as 100 per second and
/// pages as 4 KiB, as on every Linux this runs on (reading them needs `sysconf`).
fn proc_stat() -> Option<ProcStat> {
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) / TICKS,
        threads: field(20)?,
        start_seconds: boot + field(22)? / TICKS,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * PAGE,
    })
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_a_service_declares_is_counted_and_rendered_with_its_help_and_type() {
        static OWN: &[MetricDoc] = &[doc(
            "test_declared_total",
            Kind::Counter,
            &["outcome"],
            "A service's own figure.",
        )];
        declare(OWN);
        declare(OWN);
        add("test_declared_total", &["voided"], 2.0);
        let text = render();
        assert!(
            text.contains("# HELP test_declared_total A service's own figure."),
            "{text}"
        );
        assert!(text.contains("# TYPE test_declared_total counter"), "{text}");
        assert!(text.contains("test_declared_total{outcome=\"voided\"} 2\n"), "{text}");
        assert_eq!(text.matches("# TYPE test_declared_total").count(), 1, "declared once");
    }

    #[test]
    fn series_render_as_prometheus_text_with_escaped_labels() {
        add(HTTP_SERVER_REQUESTS, &["/t/{id}", "GET", "200"], 1.0);
        add(HTTP_SERVER_REQUESTS, &["/t/{id}", "GET", "200"], 1.0);
        add(EVENTS_CONSUMED, &["a\"b", "g", "handled"], 1.0);
        observe(HTTP_SERVER_DURATION, &["/t/{id}", "GET"], Duration::from_millis(3));
        observe(HTTP_SERVER_DURATION, &["/t/{id}", "GET"], Duration::from_millis(30));
        let text = render();
        assert!(
            text.contains("# TYPE flotilla_http_server_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_http_server_requests_total{route=\"/t/{id}\",method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_events_consumed_total{topic=\"a\\\"b\",group=\"g\",outcome=\"handled\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "flotilla_http_server_request_duration_seconds_bucket{route=\"/t/{id}\",method=\"GET\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "flotilla_http_server_request_duration_seconds_bucket{route=\"/t/{id}\",method=\"GET\",le=\"+Inf\"} 2"
        ));
        assert!(
            text.contains("flotilla_http_server_request_duration_seconds_count{route=\"/t/{id}\",method=\"GET\"} 2")
        );
    }

    #[test]
    fn the_process_reports_its_cpu_memory_and_descriptors() {
        let text = render_process();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(rss > 1_000_000.0, "a test process uses more than a megabyte: {rss}");
    }

    #[test]
    fn every_catalogued_metric_is_documented_with_its_type_and_labels() {
        let docs = include_str!("../../../../docs/observability.md");
        for doc in CATALOG {
            let labels = if doc.labels.is_empty() {
                "–".to_owned()
            } else {
                doc.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let row = format!("| `{}` | {} | {labels} |", doc.name, doc.kind.as_str());
            assert!(docs.contains(&row), "docs/observability.md lacks `{row}`");
        }
    }

    #[test]
    fn every_catalogued_name_is_unique_and_well_formed() {
        let mut names: Vec<_> = CATALOG.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        for doc in CATALOG {
            assert!(
                doc.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                doc.name
            );
            if doc.kind == Kind::Counter {
                assert!(doc.name.ends_with("_total"), "{}", doc.name);
            }
        }
    }
}
