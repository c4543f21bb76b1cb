//! The views: the overview (every service, its instances and RED figures, the control
//! plane's own health), the service map (the dependency graph as SVG) and a service's page
//! (its instances).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use flotilla_api::telemetry::{Dependency, DependencyGraph};
use flotilla_api::{Health, Instance};
use maud::{html, Markup};

use super::{page, Viewer};
use crate::ControlState;

/// How far back the figures from spans look.
const WINDOW: Duration = Duration::from_secs(300);
/// How far back the figures from the instances' metrics look.
const METRICS_WINDOW: Duration = Duration::from_secs(60);

/// One service's figures over [`WINDOW`], from the spans: what its callers saw of it.
#[derive(Debug, Default, Clone)]
struct Red {
    calls: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Red {
    fn rate(&self) -> f64 {
        self.calls as f64 / WINDOW.as_secs_f64()
    }

    fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// Each callee's figures, summed over its incoming request edges (the slowest caller's p99:
/// a bound, as percentiles do not add).
fn red_by_service(graph: &DependencyGraph) -> BTreeMap<String, Red> {
    let mut red: BTreeMap<String, Red> = BTreeMap::new();
    for edge in graph.edges.iter().filter(|e| is_request(e)) {
        let entry = red.entry(edge.callee.clone()).or_default();
        let before = entry.calls;
        entry.calls += edge.calls;
        entry.errors += edge.errors;
        // The median weighted by calls; the worst p99.
        entry.p50_ms = if entry.calls == 0 {
            0.0
        } else {
            (entry.p50_ms * before as f64 + edge.p50_ms * edge.calls as f64) / entry.calls as f64
        };
        entry.p99_ms = entry.p99_ms.max(edge.p99_ms);
    }
    red
}

fn is_request(edge: &Dependency) -> bool {
    matches!(edge.kind, flotilla_api::telemetry::DependencyKind::Http)
}

async fn graph(state: &ControlState) -> DependencyGraph {
    match state.traces.dependencies(WINDOW).await {
        Ok(graph) => graph,
        Err(err) => {
            tracing::warn!(error = %err, "the dashboard could not read the dependency graph");
            DependencyGraph::default()
        }
    }
}

/// How a set of instances is doing: `passing` when every one is, `failing` when none is.
fn health_of(instances: &[&Instance]) -> &'static str {
    let passing = instances.iter().filter(|i| i.health == Health::Passing).count();
    match (passing, instances.len()) {
        (_, 0) => "down",
        (p, n) if p == n => "passing",
        (0, _) => "failing",
        _ => "degraded",
    }
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} ms")
    }
}

fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// `GET /ui`: every service with its instances, versions, health and RED figures; the
/// control plane's own state.
pub(super) async fn overview(viewer: Viewer, State(state): State<Arc<ControlState>>) -> Response {
    let list = state.registry.list(None);
    let graph = graph(&state).await;
    let red = red_by_service(&graph);
    let mut by_service: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for instance in &list.instances {
        by_service.entry(&instance.service).or_default().push(instance);
    }
    // Services seen in the spans but with no instance now are down, not forgotten.
    let names: BTreeSet<&str> = by_service
        .keys()
        .copied()
        .chain(
            graph
                .services
                .iter()
                .map(String::as_str)
                .filter(|s| red.contains_key(*s)),
        )
        .collect();
    // Every request, from the instances' own counters over the last minute; the sampled
    // spans for a service with no readings yet (or none of its own, like a job).
    let measured = state.samples.red(METRICS_WINDOW);
    let figures_of = |name: &str| -> (super::metrics::Red, &'static str) {
        match measured.get(name) {
            Some(red) if red.measured => (red.clone(), "metrics"),
            _ => {
                let spans = red.get(name).cloned().unwrap_or_default();
                let red = super::metrics::Red {
                    rate: spans.rate(),
                    error_ratio: spans.error_rate(),
                    p50_ms: spans.p50_ms,
                    p99_ms: spans.p99_ms,
                    measured: spans.calls > 0,
                };
                (red, "spans")
            }
        }
    };
    let store = state.store_health();
    let content = html! {
        section aria-labelledby="services-h" {
            h2 id="services-h" { "Services" }
            div class="table-wrap" {
                table class="services" {
                    thead { tr {
                        th scope="col" { "Service" }
                        th scope="col" { "Health" }
                        th scope="col" class="num" { "Instances" }
                        th scope="col" { "Versions" }
                        th scope="col" class="num" { "Requests/s" }
                        th scope="col" class="num" { "Errors" }
                        th scope="col" class="num" { "p50" }
                        th scope="col" class="num" { "p99" }
                    } }
                    tbody {
                        @for name in &names {
                            @let instances = by_service.get(name).cloned().unwrap_or_default();
                            @let health = health_of(&instances);
                            @let (figures, source) = figures_of(name);
                            @let versions: BTreeSet<&str> = instances.iter().map(|i| i.version.as_str()).collect();
                            tr data-service=(name) data-figures=(source) {
                                th scope="row" { a href={"/ui/services/" (name)} { (name) } }
                                td { span class={"badge " (health)} { (health) } }
                                td class="num" {
                                    (instances.iter().filter(|i| i.health == Health::Passing).count())
                                    " / " (instances.len())
                                }
                                td { (versions.into_iter().collect::<Vec<_>>().join(", ")) }
                                td class="num" { (format!("{:.2}", figures.rate)) }
                                td class={"num" @if figures.error_ratio > 0.0 { " bad" }} {
                                    (format!("{:.1} %", figures.error_ratio * 100.0))
                                }
                                td class="num" { (ms(figures.p50_ms)) }
                                td class="num" { (ms(figures.p99_ms)) }
                            }
                        }
                    }
                }
            }
            p class="hint" { "Requests, errors (5xx) and latency over the last minute from each instance's own metrics (every request), read every " (super::metrics::EVERY.as_secs()) " s; until a service has two readings, over the last " (WINDOW.as_secs() / 60) " minutes from the stored spans." }
        }
        (recent_changes(&state).await)
        section aria-labelledby="control-h" {
            h2 id="control-h" { "Control plane" }
            dl class="facts" {
                dt { "Store" } dd { (store.kind) @if store.quorum { " · " span class="badge passing" { "quorum" } } @else { " · " span class="badge failing" { "no quorum" } } }
                dt { "Registry index" } dd { (list.index) @if list.stale { " (stale)" } @if list.warming { " (warming up)" } }
                dt { "Instances" } dd { (list.instances.len()) }
                dt { "Config revision" } dd { (state.config.revision()) }
            }
        }
    };
    page(&viewer, "/ui", "Overview", content)
}

/// `GET /ui/map`: the dependency graph, drawn: services in a circle, an arrow per edge with
/// its rate, errors and p99, coloured by the callee's health; each service links to its page.
pub(super) async fn map(viewer: Viewer, State(state): State<Arc<ControlState>>) -> Response {
    let graph = graph(&state).await;
    let list = state.registry.list(None);
    let mut by_service: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for instance in &list.instances {
        by_service.entry(&instance.service).or_default().push(instance);
    }
    let names: Vec<String> = graph
        .services
        .iter()
        .cloned()
        .chain(by_service.keys().map(|s| (*s).to_owned()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (width, height) = (960.0_f64, 640.0_f64);
    let (cx, cy, radius) = (width / 2.0, height / 2.0, height / 2.0 - 80.0);
    let at: BTreeMap<&str, (f64, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let angle = std::f64::consts::TAU * i as f64 / names.len().max(1) as f64 - std::f64::consts::FRAC_PI_2;
            (name.as_str(), (cx + radius * angle.cos(), cy + radius * angle.sin()))
        })
        .collect();
    let health = |name: &str| health_of(&by_service.get(name).cloned().unwrap_or_default());
    let lanes = lanes(&graph.edges, &at);
    let content = html! {
        figure class="map" {
            svg viewBox={"0 0 " (width) " " (height)} role="img" aria-labelledby="map-title" {
                title id="map-title" { "Which service calls which in the last five minutes" }
                defs {
                    marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                        path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead" {}
                    }
                }
                @for (edge, (nx, ny, shift)) in graph.edges.iter().zip(&lanes) {
                    @if let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(edge.caller.as_str()), at.get(edge.callee.as_str())) {
                        @let (dx, dy) = (x2 - x1, y2 - y1);
                        @let length = (dx * dx + dy * dy).sqrt().max(1.0);
                        @let (ux, uy) = (dx / length, dy / length);
                        // Edges between one pair of services run side by side, each in its lane.
                        @let (ox, oy) = (nx * shift, ny * shift);
                        @let (sx, sy, ex, ey) = (x1 + ux * 34.0 + ox, y1 + uy * 34.0 + oy, x2 - ux * 38.0 + ox, y2 - uy * 38.0 + oy);
                        @let side = if *shift == 0.0 { 0.0 } else { shift.signum() * 9.0 };
                        @let (lx, ly) = ((sx + ex) / 2.0 + nx * side, (sy + ey) / 2.0 + ny * side - if *shift == 0.0 { 4.0 } else { 0.0 });
                        @let class = if edge.errors > 0 { "edge bad" } else if is_request(edge) { "edge" } else { "edge event" };
                        g class=(class) data-edge={(edge.caller) "→" (edge.callee)} {
                            line x1=(format!("{sx:.1}")) y1=(format!("{sy:.1}")) x2=(format!("{ex:.1}")) y2=(format!("{ey:.1}")) marker-end="url(#arrow)" {}
                            text x=(format!("{lx:.1}")) y=(format!("{ly:.1}")) class="edge-label" {
                                (format!("{:.2}/s", edge.calls as f64 / WINDOW.as_secs_f64()))
                                @if edge.errors > 0 { " · " (format!("{:.0}% err", edge.error_rate * 100.0)) }
                                " · p99 " (ms(edge.p99_ms))
                            }
                        }
                    }
                }
                @for name in &names {
                    @let (x, y) = at[name.as_str()];
                    a href={"/ui/services/" (name)} class={"node " (health(name))} data-node=(name) {
                        circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="32" {}
                        text x=(format!("{x:.1}")) y=(format!("{:.1}", y + 52.0)) class="node-label" { (name) }
                    }
                }
            }
            figcaption {
                "Solid arrows are requests, dashed ones events; red ones failed in the window. A node's colour is its instances' health."
            }
        }
    };
    page(&viewer, "/ui/map", "Service map", content)
}

/// Each edge's lane: the unit normal of its pair's line (drawn from the lesser name to the
/// greater, so both directions agree on it) and how far along it the edge runs — 0 for an
/// edge alone between its services, spread 18 apart when a pair has several (both directions,
/// requests and events).
fn lanes(edges: &[Dependency], at: &BTreeMap<&str, (f64, f64)>) -> Vec<(f64, f64, f64)> {
    let pair = |e: &Dependency| {
        if e.caller <= e.callee {
            (e.caller.clone(), e.callee.clone())
        } else {
            (e.callee.clone(), e.caller.clone())
        }
    };
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, edge) in edges.iter().enumerate() {
        groups.entry(pair(edge)).or_default().push(i);
    }
    let mut lanes = vec![(0.0, 0.0, 0.0); edges.len()];
    for ((a, b), members) in &groups {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(a.as_str()), at.get(b.as_str())) else {
            continue;
        };
        let length = ((x2 - x1).powi(2) + (y2 - y1).powi(2)).sqrt().max(1.0);
        let (nx, ny) = (-(y2 - y1) / length, (x2 - x1) / length);
        let middle = (members.len() as f64 - 1.0) / 2.0;
        for (k, &i) in members.iter().enumerate() {
            lanes[i] = (nx, ny, (k as f64 - middle) * 18.0);
        }
    }
    lanes
}

/// `GET /ui/services/{name}`: its instances — address, version, pid, uptime, last heartbeat,
/// health — and its callers and callees.
pub(super) async fn service(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path(name): Path<String>,
) -> Response {
    let list = state.registry.list(Some(&name));
    let graph = graph(&state).await;
    let instances: Vec<&Instance> = list.instances.iter().collect();
    let health = health_of(&instances);
    // What each instance applied of its config, as it reported.
    let (_, reports) = state.config.reports(|id| instances.iter().any(|i| i.instance_id == id));
    let applied: BTreeMap<&str, &flotilla_api::config::ApplyReport> =
        reports.iter().map(|r| (r.instance_id.as_str(), &r.report)).collect();
    let callers: Vec<&Dependency> = graph.edges.iter().filter(|e| e.callee == name).collect();
    let callees: Vec<&Dependency> = graph.edges.iter().filter(|e| e.caller == name).collect();
    let content = html! {
        p {
            "Health: " span class={"badge " (health)} data-health=(health) { (health) }
            " · " a href={"/ui/traces?service=" (name)} { "Recent traces" }
            " · " a href={"/ui/traces?service=" (name) "&errors=on"} { "Recent errors" }
            " · " a href={"/ui/logs?service=" (name)} { "Logs" }
        }
        section aria-labelledby="instances-h" {
            h2 id="instances-h" { "Instances" }
            @if instances.is_empty() {
                p class="empty" { "No instance of " (name) " is registered." }
            } @else {
                div class="table-wrap" {
                    table class="instances" {
                        thead { tr {
                            th scope="col" { "Instance" }
                            th scope="col" { "Address" }
                            th scope="col" { "Version" }
                            th scope="col" class="num" { "pid" }
                            th scope="col" class="num" { "Uptime" }
                            th scope="col" class="num" { "Last heartbeat" }
                            th scope="col" { "Health" }
                            th scope="col" { "Config" }
                        } }
                        tbody {
                            @for instance in &instances {
                                @let report = applied.get(instance.instance_id.as_str());
                                @let health = if instance.health == Health::Passing { "passing" } else { "failing" };
                                tr data-instance=(instance.instance_id) {
                                    th scope="row" { (instance.instance_id) }
                                    td { code { (instance.address) } }
                                    td { (instance.version) }
                                    td class="num" { (instance.pid().map(|p| p.to_string()).unwrap_or_default()) }
                                    td class="num" { (ago(instance.uptime_ms)) }
                                    td class="num" { (ago(instance.last_heartbeat_ms)) " ago" }
                                    td { span class={"badge " (health)} { (health) } }
                                    td {
                                        @match report {
                                            None => span class="hint" { "not reported" },
                                            Some(r) if r.status == flotilla_api::config::ApplyStatus::Refused => {
                                                a href="/ui/config" class="bad" title=(r.error.as_deref().unwrap_or("")) { "runs " (r.running) ", refused " (r.revision) }
                                            },
                                            Some(r) => a href="/ui/config" { "revision " (r.running) },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (red_over_time(&state, &name))
        (super::traces::recent(&state, &name).await)
        (super::gateway::routes_to(&state, &name).await)
        section aria-labelledby="deps-h" {
            h2 id="deps-h" { "Calls" }
            (edges("Called by", &callers, true))
            (edges("Calls", &callees, false))
        }
    };
    page(&viewer, "", &name, content)
}

fn edges(label: &str, edges: &[&Dependency], incoming: bool) -> Markup {
    html! {
        h3 { (label) }
        @if edges.is_empty() {
            p class="empty" { "Nothing in the last five minutes." }
        } @else {
            ul class="edges" {
                @for edge in edges {
                    @let other = if incoming { &edge.caller } else { &edge.callee };
                    li {
                        a href={"/ui/services/" (other)} { (other) }
                        " — " (edge.calls) " calls, " (edge.errors) " failed, p99 " (ms(edge.p99_ms))
                        @if !is_request(edge) { " (events)" }
                    }
                }
            }
        }
    }
}

/// One line of the overview's recent changes.
struct Recent {
    at_ms: u64,
    kind: &'static str,
    text: Markup,
}

/// Dead letters looked at per dead-letter topic.
const DEAD_LETTERS_SHOWN: u64 = 3;

/// The fleet's moves, the newest config revisions and the newest dead letters, newest first.
async fn recent_changes(state: &ControlState) -> Markup {
    use super::changes::Move;
    let mut recent: Vec<Recent> = state
        .changes
        .newest(20)
        .into_iter()
        .map(|m| {
            let (kind, text) = match &m.what {
                Move::Joined => ("joined", "joined"),
                Move::Left => ("left", "left"),
                Move::Failing => ("failing", "began failing its health check"),
                Move::Passing => ("passing", "passes its health check again"),
                Move::BreakerOpened(route) | Move::BreakerClosed(route) => {
                    let (kind, verb) = if matches!(m.what, Move::BreakerOpened(_)) {
                        ("breaker", "opened")
                    } else {
                        ("closed", "closed again")
                    };
                    return Recent {
                        at_ms: m.at_ms,
                        kind,
                        text: html! {
                            "breaker of route " code { (route) } " to "
                            a href={"/ui/services/" (m.service) "#routes-h"} { (m.service) }
                            " " (verb) " at gateway " code { (m.instance) }
                        },
                    };
                }
            };
            Recent {
                at_ms: m.at_ms,
                kind,
                text: html! { a href={"/ui/services/" (m.service)} { (m.service) } " instance " code { (m.instance) } " " (text) },
            }
        })
        .collect();
    let mut config = state.config.list(None, None);
    config.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
    recent.extend(config.into_iter().take(10).map(|e| Recent {
        at_ms: e.time_ms,
        kind: "config",
        text: html! {
            "config " a href={"/ui/config/" (e.scope) "/" (e.profile) "/" (e.key)} { (e.scope) "/" (e.profile) "/" (e.key) }
            " → revision " (e.revision) " by " (e.author)
            @if !e.comment.is_empty() { " (" (e.comment) ")" }
        },
    }));
    if let Ok(topics) = state.events.topics().await {
        for topic in topics
            .iter()
            .filter(|t| t.topic.ends_with(".dead-letter") && t.events > 0)
        {
            let from = topic.next_offset.saturating_sub(DEAD_LETTERS_SHOWN);
            let Ok(letters) = state.events.read(&topic.topic, from, DEAD_LETTERS_SHOWN as u32).await else {
                continue;
            };
            recent.extend(letters.into_iter().map(|d| {
                Recent {
                    at_ms: d
                        .event
                        .time
                        .as_deref()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map_or(0, |t| t.as_millisecond().max(0) as u64),
                    kind: "dead-letter",
                    text: html! {
                        "dead letter " a href={"/ui/events/" (topic.topic)} { (topic.topic) } " "
                        code { (d.event.kind) }
                        @if let Some(reason) = &d.event.deadletterreason { ": " span class="bad" { (reason) } }
                    },
                }
            }));
        }
    }
    recent.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    recent.truncate(15);
    html! {
        section aria-labelledby="recent-h" {
            h2 id="recent-h" { "Recent changes" }
            @if recent.is_empty() {
                p class="empty" { "Nothing changed since this control plane started." }
            } @else {
                ol class="recent" {
                    @for item in &recent {
                        li data-kind=(item.kind) {
                            time { (super::traces::clock(item.at_ms.saturating_mul(1_000_000))) }
                            " " span class={"badge " (item.kind)} { (item.kind) } " " (item.text)
                        }
                    }
                }
            }
        }
    }
}

/// Steps of the service page's charts.
const CHART_STEP: Duration = Duration::from_secs(15);

/// Requests per second (bars, the failed share red) and p99 (a line) over the last five
/// minutes, from the instances' metrics.
fn red_over_time(state: &ControlState, service: &str) -> Markup {
    let history = state.samples.history(service, CHART_STEP);
    let (width, height, pad) = (720.0_f64, 140.0_f64, 24.0_f64);
    let steps = (super::metrics::KEPT.as_secs() / CHART_STEP.as_secs()).max(1) as f64;
    let bar = (width - 2.0 * pad) / steps;
    let top_rate = history.iter().map(|(_, r)| r.rate).fold(0.0, f64::max).max(0.1);
    let top_p99 = history.iter().map(|(_, r)| r.p99_ms).fold(0.0, f64::max).max(1.0);
    let x_of = |ago: f64| width - pad - (ago / CHART_STEP.as_secs_f64() + 1.0) * bar;
    let y_of = |value: f64, top: f64| height - pad - value / top * (height - 2.0 * pad);
    // No requests in a step: no latency to draw there.
    let line: Vec<String> = history
        .iter()
        .filter(|(_, r)| r.rate > 0.0)
        .map(|(ago, r)| format!("{:.1},{:.1}", x_of(*ago) + bar / 2.0, y_of(r.p99_ms, top_p99)))
        .collect();
    html! {
        section aria-labelledby="red-h" {
            h2 id="red-h" { "Requests, errors and latency" }
            @if history.is_empty() {
                p class="empty" { "No metrics read from its instances yet (they are read every " (super::metrics::EVERY.as_secs()) " s)." }
            } @else {
                figure class="chart" {
                    svg viewBox={"0 0 " (width) " " (height)} role="img" aria-labelledby="red-title" {
                        title id="red-title" { "Requests per second and p99 latency over the last five minutes" }
                        line class="axis" x1=(pad) y1=(height - pad) x2=(width - pad) y2=(height - pad) {}
                        @for (ago, red) in &history {
                            @let x = x_of(*ago);
                            @let total = height - pad - y_of(red.rate, top_rate);
                            @let failed = total * red.error_ratio;
                            rect class="rate" x=(format!("{:.1}", x + 1.0)) y=(format!("{:.1}", height - pad - total)) width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{total:.1}")) {}
                            @if failed > 0.0 {
                                rect class="failed" x=(format!("{:.1}", x + 1.0)) y=(format!("{:.1}", height - pad - failed)) width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{failed:.1}")) {}
                            }
                        }
                        polyline class="p99" points=(line.join(" ")) {}
                        text class="chart-label" x=(pad) y="14" { (format!("{top_rate:.1}")) " req/s" }
                        text class="chart-label p99-label" x=(width - pad) y="14" text-anchor="end" { "p99 up to " (ms(top_p99)) }
                        text class="chart-label" x=(pad) y=(height - 6.0) { "5 min ago" }
                        text class="chart-label" x=(width - pad) y=(height - 6.0) text-anchor="end" { "now" }
                    }
                    figcaption { "Bars: requests per second in each " (CHART_STEP.as_secs()) " s, the failed (5xx) share red. Line: p99 latency. From every instance's own counters." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::telemetry::DependencyKind;

    fn edge(caller: &str, callee: &str, kind: DependencyKind) -> Dependency {
        Dependency {
            caller: caller.into(),
            callee: callee.into(),
            kind,
            calls: 1,
            errors: 0,
            error_rate: 0.0,
            p50_ms: 1.0,
            p99_ms: 1.0,
        }
    }

    #[test]
    fn edges_between_one_pair_run_in_separate_lanes_and_a_lone_edge_in_the_middle() {
        let at = BTreeMap::from([("a", (0.0, 0.0)), ("b", (100.0, 0.0)), ("c", (0.0, 100.0))]);
        let edges = vec![
            edge("a", "b", DependencyKind::Http),
            edge("b", "a", DependencyKind::Http),
            edge("a", "b", DependencyKind::Event),
            edge("a", "c", DependencyKind::Http),
        ];
        let lanes = lanes(&edges, &at);
        let shifts: Vec<f64> = lanes.iter().map(|l| l.2).collect();
        assert_eq!(shifts, vec![-18.0, 0.0, 18.0, 0.0]);
        // Both directions of a pair share one normal, so their lanes never coincide.
        assert_eq!((lanes[0].0, lanes[0].1), (lanes[1].0, lanes[1].1));
        assert_eq!((lanes[0].0, lanes[0].1), (-0.0, 1.0));
    }
}
