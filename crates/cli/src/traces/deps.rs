//! `flotilla deps`: who calls whom, drawn one edge a row and grouped by caller, with how
//! often, how often it failed and how long it took — the system's shape as its spans show it.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_api::telemetry::{Dependency, DependencyGraph, DependencyKind};

use super::millis_f;
use crate::style::{pad, paint, DIM, RED};

/// The arrow of an edge, naming how the callee was reached; both are as wide.
fn arrow(kind: DependencyKind) -> &'static str {
    match kind {
        DependencyKind::Http => "──http──▶",
        DependencyKind::Event => "──event─▶",
    }
}

/// The graph drawn: a line saying what it covers, then `caller ──http──▶ callee  calls
/// errors (rate)  p50  p99` per edge in aligned columns, then services seen without edges.
pub fn draw(graph: &DependencyGraph, lookback: Duration, color: bool) -> String {
    let window = humantime::format_duration(lookback);
    let mut edges: Vec<&Dependency> = graph.edges.iter().collect();
    edges.sort_by(|a, b| (&a.caller, &a.callee, a.kind).cmp(&(&b.caller, &b.callee, b.kind)));
    let mut out = format!(
        "dependencies seen in the last {window}: {} service{}, {} edge{}\n\n",
        graph.services.len(),
        if graph.services.len() == 1 { "" } else { "s" },
        edges.len(),
        if edges.len() == 1 { "" } else { "s" },
    );
    if edges.is_empty() {
        out.push_str(&format!("(no calls between services in the last {window})\n"));
    }

    if !edges.is_empty() {
        let rows: Vec<[String; 6]> = edges
            .iter()
            .map(|e| {
                [
                    e.caller.clone(),
                    e.callee.clone(),
                    e.calls.to_string(),
                    format!("{} ({:.1}%)", e.errors, e.error_rate * 100.0),
                    millis_f(e.p50_ms),
                    millis_f(e.p99_ms),
                ]
            })
            .collect();
        let headers = ["CALLER", "CALLEE", "CALLS", "ERRORS", "P50 ms", "P99 ms"];
        let mut widths = headers.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let arrow_width = arrow(DependencyKind::Http).chars().count();
        let line = |cells: &[String; 6], arrow: &str, errors: bool| {
            let mut l = format!(
                "{}  {}  {}  {:>w2$}  {}  {:>w4$}  {:>w5$}",
                pad(&cells[0], widths[0]),
                pad(arrow, arrow_width),
                pad(&cells[1], widths[1]),
                cells[2],
                {
                    let text = format!("{:>w$}", cells[3], w = widths[3]);
                    if errors {
                        paint(RED, &text, color)
                    } else {
                        text
                    }
                },
                cells[4],
                cells[5],
                w2 = widths[2],
                w4 = widths[4],
                w5 = widths[5],
            );
            l.truncate(l.trim_end().len());
            l.push('\n');
            l
        };
        out.push_str(&line(&headers.map(String::from), "", false));
        let mut previous: Option<&str> = None;
        for (mut row, edge) in rows.into_iter().zip(&edges) {
            // The caller is named once, on the first of its edges.
            if previous == Some(edge.caller.as_str()) {
                row[0].clear();
            }
            previous = Some(edge.caller.as_str());
            out.push_str(&line(&row, arrow(edge.kind), edge.errors > 0));
        }
    }

    let connected: BTreeSet<&str> = graph
        .edges
        .iter()
        .flat_map(|e| [e.caller.as_str(), e.callee.as_str()])
        .collect();
    let alone: Vec<&str> = graph
        .services
        .iter()
        .map(String::as_str)
        .filter(|s| !connected.contains(s))
        .collect();
    if !alone.is_empty() {
        out.push_str(&paint(
            DIM,
            &format!("\nno calls to or from: {}", alone.join(", ")),
            color,
        ));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(
        caller: &str,
        callee: &str,
        kind: DependencyKind,
        calls: u64,
        errors: u64,
        p50: f64,
        p99: f64,
    ) -> Dependency {
        Dependency {
            caller: caller.into(),
            callee: callee.into(),
            kind,
            calls,
            errors,
            error_rate: errors as f64 / calls as f64,
            p50_ms: p50,
            p99_ms: p99,
        }
    }

    fn graph() -> DependencyGraph {
        DependencyGraph {
            services: ["catalog", "gateway", "identity", "notifications", "orders", "payments"]
                .map(String::from)
                .to_vec(),
            edges: vec![
                edge("orders", "payments", DependencyKind::Http, 30, 2, 12.5, 250.0),
                edge("gateway", "orders", DependencyKind::Http, 30, 0, 20.26, 310.0),
                edge("gateway", "catalog", DependencyKind::Http, 1200, 0, 3.1, 12.0),
                edge("orders", "notifications", DependencyKind::Event, 12, 0, 0.5, 1.25),
            ],
        }
    }

    #[test]
    fn edges_grouped_by_caller_in_aligned_columns() {
        let text = draw(&graph(), Duration::from_secs(3600), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "dependencies seen in the last 1h: 6 services, 4 edges");
        assert_eq!(
            lines[2..7],
            [
                "CALLER              CALLEE         CALLS    ERRORS  P50 ms  P99 ms",
                "gateway  ──http──▶  catalog         1200  0 (0.0%)    3.10    12.0",
                "         ──http──▶  orders            30  0 (0.0%)    20.3     310",
                "orders   ──event─▶  notifications     12  0 (0.0%)   0.500    1.25",
                "         ──http──▶  payments          30  2 (6.7%)    12.5     250",
            ]
        );
        assert_eq!(lines[8], "no calls to or from: identity");
    }

    #[test]
    fn failing_edges_are_red_when_coloured() {
        let text = draw(&graph(), Duration::from_secs(3600), true);
        assert!(text.contains("\x1b[31m2 (6.7%)\x1b[0m"), "{text}");
        assert_eq!(text.matches("\x1b[31m").count(), 1, "{text}");
    }

    #[test]
    fn an_empty_graph_says_so() {
        let text = draw(&DependencyGraph::default(), Duration::from_secs(300), false);
        assert!(text.contains("(no calls between services in the last 5m)"), "{text}");
    }
}
