//! Traces: the search (service, operation, minimum duration, failed only) over the stored
//! traces, newest first, and one trace as a waterfall — the CLI's, in the browser — with each
//! span's attributes, events and failure.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use flotilla_api::telemetry::{SpanStatus, Trace, TraceQuery};
use maud::{html, Markup};
use serde::Deserialize;

use super::{page_with, Viewer};
use crate::ControlState;

/// The search form's fields, as a browser sends them (empty fields, a checkbox's `on`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Search {
    service: Option<String>,
    operation: Option<String>,
    min_duration_ms: Option<String>,
    errors: Option<String>,
    within: Option<String>,
}

/// The time ranges the search offers: (value, label, seconds back).
const WITHIN: &[(&str, &str, u64)] = &[
    ("5m", "last 5 minutes", 300),
    ("15m", "last 15 minutes", 900),
    ("1h", "last hour", 3600),
    ("6h", "last 6 hours", 6 * 3600),
    ("24h", "last day", 24 * 3600),
];

impl Search {
    fn query(&self) -> TraceQuery {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        TraceQuery {
            service: given(&self.service),
            operation: given(&self.operation),
            min_duration_ms: given(&self.min_duration_ms).and_then(|v| v.parse().ok()),
            errors: self.errors.is_some(),
            limit: Some(50),
            since_ms: self.within_secs().map(|back| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                now.saturating_sub(back * 1000)
            }),
            until_ms: None,
        }
    }

    /// How far back the search looks; `None` for all that is stored.
    fn within_secs(&self) -> Option<u64> {
        let chosen = self.within.as_deref()?;
        WITHIN
            .iter()
            .find(|(value, _, _)| *value == chosen)
            .map(|(_, _, secs)| *secs)
    }
}

fn ms(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub(super) fn clock(unix_nano: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nano))
        .map(|t| t.strftime("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// A service's newest traces and newest failed ones, for its page.
pub(super) async fn recent(state: &ControlState, service: &str) -> Markup {
    let query = |errors| TraceQuery {
        service: Some(service.to_owned()),
        operation: None,
        min_duration_ms: None,
        errors,
        limit: Some(5),
        ..TraceQuery::default()
    };
    let (all, errors) = (query(false), query(true));
    let (newest, failed) = tokio::join!(state.traces.list(&all), state.traces.list(&errors));
    let rows = |title: &str,
                id: &str,
                found: Result<flotilla_api::telemetry::TraceList, crate::telemetry::TraceError>| {
        html! {
            h3 id=(id) { (title) }
            @match found {
                Err(err) => p class="error" { "The trace store could not be read: " (err) },
                Ok(list) if list.traces.is_empty() => p class="empty" { "None stored." },
                Ok(list) => ul class="recent-traces" {
                    @for trace in &list.traces {
                        li data-trace=(trace.trace_id) {
                            a href={"/ui/traces/" (trace.trace_id)} { code { (&trace.trace_id[..8.min(trace.trace_id.len())]) } }
                            " " (clock(trace.start_unix_nano)) " · " (trace.root_service) " " (trace.root_name)
                            " · " (ms(trace.duration_nanos))
                            @if trace.error_count > 0 { " · " span class="bad" { (trace.error_count) " failed" } }
                        }
                    }
                },
            }
        }
    };
    html! {
        section aria-labelledby="recent-traces-h" {
            h2 id="recent-traces-h" { "Recent traces" }
            (rows("Newest", "newest-h", newest))
            (rows("Newest failed", "failed-h", failed))
        }
    }
}

/// `GET /ui/traces`: the search and the newest traces that match.
pub(super) async fn list(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Query(search): Query<Search>,
) -> Response {
    let query = search.query();
    let found = state.traces.list(&query).await;
    let content = html! {
        form class="search" method="get" action="/ui/traces" role="search" {
            label { "Service " input name="service" value=(query.service.clone().unwrap_or_default()) list="services"; }
            label { "Operation " input name="operation" value=(query.operation.clone().unwrap_or_default()); }
            label { "At least (ms) " input name="min_duration_ms" type="number" min="0" value=(query.min_duration_ms.map(|m| m.to_string()).unwrap_or_default()); }
            label { input name="errors" type="checkbox" checked[query.errors]; " failed only" }
            label { "Started "
                select name="within" {
                    option value="" { "any time" }
                    @for (value, label, _) in WITHIN {
                        option value=(value) selected[search.within.as_deref() == Some(*value)] { (label) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        @match found {
            Err(err) => p class="error" role="alert" { "The trace store could not be read: " (err) },
            Ok(list) if list.traces.is_empty() => p class="empty" { "No stored trace matches." },
            Ok(list) => {
                (scatter(&list.traces))
                div class="table-wrap" {
                table class="traces" {
                    thead { tr {
                        th scope="col" { "Trace" }
                        th scope="col" { "Start" }
                        th scope="col" class="num" { "Duration" }
                        th scope="col" class="num" { "Spans" }
                        th scope="col" class="num" { "Errors" }
                        th scope="col" { "Root" }
                        th scope="col" { "Services" }
                    } }
                    tbody {
                        @for trace in &list.traces {
                            tr data-trace=(trace.trace_id) {
                                th scope="row" { a href={"/ui/traces/" (trace.trace_id)} { code { (&trace.trace_id[..8.min(trace.trace_id.len())]) } } }
                                td { (clock(trace.start_unix_nano)) }
                                td class="num" { (ms(trace.duration_nanos)) }
                                td class="num" { (trace.span_count) }
                                td class={"num" @if trace.error_count > 0 { " bad" }} { (trace.error_count) }
                                td { (trace.root_service) " " (trace.root_name) }
                                td { (trace.services.join(", ")) }
                            }
                        }
                    }
                }
                }
            },
        }
    };
    // The search form is being filled: no live refresh under the user's typing.
    page_with(&viewer, "/ui/traces", "Traces", content, false)
}

/// The traces found as dots: when each started (across) and how long it took (up, on a
/// logarithmic scale, so a slow outlier does not flatten the rest); failed ones red; each a
/// link to its waterfall.
fn scatter(traces: &[flotilla_api::telemetry::TraceSummary]) -> Markup {
    let (width, height, pad) = (960.0_f64, 180.0_f64, 28.0_f64);
    let first = traces.iter().map(|t| t.start_unix_nano).min().unwrap_or(0);
    let last = traces.iter().map(|t| t.start_unix_nano).max().unwrap_or(first);
    let span = (last - first).max(1) as f64;
    let log = |nanos: u64| (nanos.max(1_000) as f64 / 1e6).log10();
    let low = traces
        .iter()
        .map(|t| log(t.duration_nanos))
        .fold(f64::INFINITY, f64::min);
    let high = traces
        .iter()
        .map(|t| log(t.duration_nanos))
        .fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if high - low < 1.0 {
        (low - 0.5, low + 0.5)
    } else {
        (low, high)
    };
    // One start time (a single trace): in the middle.
    let x = |t: u64| {
        if last == first {
            width / 2.0
        } else {
            pad + (t - first) as f64 / span * (width - 2.0 * pad)
        }
    };
    let y = |d: u64| height - pad - (log(d) - low) / (high - low) * (height - 2.0 * pad);
    html! {
        figure class="scatter" {
            svg viewBox={"0 0 " (width) " " (height)} role="img" aria-labelledby="scatter-title" {
                title id="scatter-title" { "Each trace found: when it started and how long it took" }
                line class="axis" x1=(pad) y1=(height - pad) x2=(width - pad) y2=(height - pad) {}
                @for trace in traces {
                    a href={"/ui/traces/" (trace.trace_id)} class={"dot" @if trace.error_count > 0 { " bad" }} data-dot=(trace.trace_id) {
                        circle cx=(format!("{:.1}", x(trace.start_unix_nano))) cy=(format!("{:.1}", y(trace.duration_nanos))) r="5" {
                            title { (trace.root_service) " " (trace.root_name) " — " (ms(trace.duration_nanos)) }
                        }
                    }
                }
                text class="chart-label" x=(pad) y="14" { (ms((10f64.powf(high) * 1e6) as u64)) }
                text class="chart-label" x=(pad) y=(height - pad - 4.0) { (ms((10f64.powf(low) * 1e6) as u64)) }
                text class="chart-label" x=(pad) y=(height - 8.0) { (clock(first)) }
                text class="chart-label" x=(width - pad) y=(height - 8.0) text-anchor="end" { (clock(last)) }
            }
            figcaption { "Duration (logarithmic) against start time; red ones failed. Each dot opens its trace." }
        }
    }
}

/// `GET /ui/traces/{id}`: one trace as a waterfall.
pub(super) async fn one(viewer: Viewer, State(state): State<Arc<ControlState>>, Path(id): Path<String>) -> Response {
    let content = match crate::telemetry::normalize_trace_id(&id) {
        Err(err) => html! { p class="error" role="alert" { (err) } },
        Ok(id) => match state.traces.trace(&id).await {
            Ok(Some(trace)) => waterfall(&trace),
            Ok(None) => {
                html! { p class="empty" { "No trace " code { (id) } " is stored (it may not have been sampled, or has been pruned)." } }
            }
            Err(err) => html! { p class="error" role="alert" { (err) } },
        },
    };
    let title = format!("Trace {}", &id[..8.min(id.len())]);
    page_with(&viewer, "/ui/traces", &title, content, false)
}

/// Each span under its parent, on the trace's timeline, then each span's details.
fn waterfall(trace: &Trace) -> Markup {
    let start = trace.spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = trace.spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    // Depth-first from the roots, children by start.
    let mut ordered = Vec::new();
    let known: std::collections::BTreeSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut stack: Vec<(&flotilla_api::telemetry::Span, usize)> = trace
        .spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !known.contains(p)))
        .rev()
        .map(|s| (s, 0))
        .collect();
    while let Some((span, depth)) = stack.pop() {
        ordered.push((span, depth));
        let mut children: Vec<_> = trace
            .spans
            .iter()
            .filter(|c| c.parent_span_id.as_deref() == Some(span.span_id.as_str()))
            .collect();
        children.sort_by_key(|c| std::cmp::Reverse(c.start_unix_nano));
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    let (label_width, bar_width, row) = (340.0_f64, 620.0_f64, 24.0_f64);
    let height = row * ordered.len() as f64 + 8.0;
    html! {
        p { "Started " (clock(start)) ", took " (ms(end - start)) ", " (trace.spans.len()) " spans. "
            a href={"/ui/traces?service=" (ordered.first().map(|(s, _)| s.service.as_str()).unwrap_or(""))} { "More like it" }
            " · " a href={"/ui/logs?trace=" (trace.trace_id)} { "Logs of this trace" } }
        figure class="waterfall" {
            svg viewBox={"0 0 " (label_width + bar_width) " " (height)} role="img" aria-label="The trace's spans on its timeline" {
                @for (i, (span, depth)) in ordered.iter().enumerate() {
                    @let y = row * i as f64 + 4.0;
                    @let x = label_width + (span.start_unix_nano - start) as f64 / total * bar_width;
                    @let width = ((span.end_unix_nano.saturating_sub(span.start_unix_nano)) as f64 / total * bar_width).max(1.5);
                    @let failed = span.status == SpanStatus::Error;
                    g data-span=(span.span_id) class={"span" @if failed { " bad" }} {
                        text x=(format!("{:.1}", 4.0 + *depth as f64 * 12.0)) y=(format!("{:.1}", y + 15.0)) class="span-label" {
                            (span.service) " · " (span.name)
                        }
                        rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{width:.1}")) height="16" rx="2" {}
                        text x=(format!("{:.1}", (x + width + 4.0).min(label_width + bar_width - 60.0))) y=(format!("{:.1}", y + 13.0)) class="span-time" {
                            (ms(span.end_unix_nano.saturating_sub(span.start_unix_nano)))
                        }
                    }
                }
            }
        }
        h2 { "Spans" }
        @for (span, _) in &ordered {
            details class="span-detail" id={"span-" (span.span_id)} {
                summary {
                    a href={"/ui/services/" (span.service)} { (span.service) } " · " (span.name) " — " (ms(span.end_unix_nano.saturating_sub(span.start_unix_nano)))
                    @if span.status == SpanStatus::Error { " · " span class="badge failing" { "error" } }
                }
                @if let Some(message) = &span.status_message { p class="error" { (message) } }
                dl class="facts" {
                    dt { "span" } dd { code { (span.span_id) } }
                    @if let Some(instance) = &span.instance { dt { "instance" } dd { (instance) } }
                    @for (key, value) in &span.attributes {
                        dt { (key) } dd { (value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())) }
                    }
                }
                @if !span.events.is_empty() {
                    ul { @for event in &span.events { li { (ms(event.time_unix_nano.saturating_sub(start))) " — " (event.name) } } }
                }
            }
        }
    }
}
