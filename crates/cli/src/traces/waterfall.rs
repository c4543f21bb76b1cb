//! `flotilla trace ID`: one trace drawn as a waterfall — each span a row, children under
//! their parent, a bar placed and sized on the trace's timeline — so where the time went and
//! where it failed is seen at once, without a browser.

use std::collections::{BTreeSet, HashMap, HashSet};

use flotilla_api::telemetry::{Span, SpanKind, SpanStatus, Trace};

use super::{duration, millis};
use crate::style::{pad, paint, slot_color, truncate, DIM, RED};

/// Width of the offset and duration columns.
const NUMBER: usize = 9;
/// The narrowest bar still worth drawing.
const MIN_BAR: usize = 10;
/// Marks a span whose parent is not stored: it is drawn at the top level.
const ORPHAN: &str = "…";

/// The terminal width to draw for: `COLUMNS` when the shell exports it, else 100.
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .unwrap_or(100)
}

/// A compact sign for what a span stands for: `⇠` handling a request, `⇢` making one, `✉`
/// an event, `·` work inside a process.
pub fn kind_sign(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "⇠",
        SpanKind::Client => "⇢",
        SpanKind::Producer | SpanKind::Consumer => "✉",
        SpanKind::Internal => "·",
    }
}

/// One row of the drawing: a span, how deep it sits, and whether its parent is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    span: usize,
    depth: usize,
    orphan: bool,
}

/// The spans in tree order: each parent followed by its children (earliest first), roots
/// and spans whose parent is not stored at the top level, by start.
fn tree_order(spans: &[Span]) -> Vec<Row> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let by_start = |a: &usize, b: &usize| {
        let (a, b) = (&spans[*a], &spans[*b]);
        (a.start_unix_nano, &a.span_id).cmp(&(b.start_unix_nano, &b.span_id))
    };
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut tops: Vec<usize> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id.as_deref().filter(|p| !p.is_empty()) {
            Some(parent) if ids.contains(parent) && parent != span.span_id => {
                children.entry(parent).or_default().push(i)
            }
            _ => tops.push(i),
        }
    }
    for list in children.values_mut() {
        list.sort_by(by_start);
    }
    tops.sort_by(by_start);

    let mut rows = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    for &top in &tops {
        let orphan = spans[top].parent_span_id.as_deref().is_some_and(|p| !p.is_empty());
        walk(spans, &children, top, orphan, &mut rows, &mut seen);
    }
    // Spans only reachable through a cycle of parents: shown, as orphans, not lost.
    let mut rest: Vec<usize> = (0..spans.len()).filter(|&i| !seen[i]).collect();
    rest.sort_by(by_start);
    for i in rest {
        walk(spans, &children, i, true, &mut rows, &mut seen);
    }
    rows
}

/// Appends `top` and everything under it, depth first, to `rows`.
fn walk(
    spans: &[Span],
    children: &HashMap<&str, Vec<usize>>,
    top: usize,
    orphan: bool,
    rows: &mut Vec<Row>,
    seen: &mut [bool],
) {
    let mut stack = vec![(top, 0usize)];
    while let Some((i, depth)) = stack.pop() {
        // Two spans sharing an id, or a cycle of parents, must not loop.
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        rows.push(Row {
            span: i,
            depth,
            orphan: orphan && depth == 0,
        });
        if let Some(kids) = children.get(spans[i].span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
}

/// The bar of a span `offset` nanoseconds into a trace of `total`, lasting `length`, in
/// `width` cells: `█` for each cell it fills, `▏` for one too short to fill a cell.
fn bar(offset: u64, length: u64, total: u64, width: usize) -> String {
    let total = u128::from(total.max(1));
    let cells = width as u128;
    let start = ((u128::from(offset) * cells) / total).min(cells.saturating_sub(1)) as usize;
    let filled = ((u128::from(length) * cells + total / 2) / total) as usize;
    let drawn = if filled == 0 {
        "▏".to_owned()
    } else {
        "█".repeat(filled.min(width - start))
    };
    pad(&format!("{}{drawn}", " ".repeat(start)), width)
}

/// The waterfall of `trace`, `width` columns wide, coloured when `color` is on.
pub fn draw(trace: &Trace, width: usize, color: bool) -> String {
    let spans = &trace.spans;
    let Some(start) = spans.iter().map(|s| s.start_unix_nano).min() else {
        return format!("trace {}: no spans stored\n", trace.trace_id);
    };
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start).max(start);
    let total = end - start;
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    let errors = spans.iter().filter(|s| s.status == SpanStatus::Error).count();

    let mut out = format!(
        "trace {}  {}  {} span{}",
        trace.trace_id,
        duration(total),
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    if errors > 0 {
        let said = format!("{errors} error{}", if errors == 1 { "" } else { "s" });
        out.push_str(&format!("  {}", paint(RED, &said, color)));
    }
    out.push_str(&format!(
        "  services: {}\n\n",
        services.iter().copied().collect::<Vec<_>>().join(", ")
    ));

    let name_width = (width * 2 / 5).clamp(24, 60);
    // name, offset, duration, bar, then a space and the status mark.
    let bar_width = width
        .saturating_sub(name_width + 1 + NUMBER + 1 + NUMBER + 2 + 2)
        .max(MIN_BAR);
    let axis = format!("0{:>w$}", duration(total), w = bar_width - 1);
    out.push_str(&format!(
        "{} {:>NUMBER$} {:>NUMBER$}  {}\n",
        pad("SPAN", name_width),
        "OFFSET ms",
        "DUR ms",
        paint(DIM, &axis, color)
    ));

    let mut orphans = false;
    for row in tree_order(spans) {
        let span = &spans[row.span];
        orphans |= row.orphan;
        let label = format!(
            "{}{}{} {} {}",
            "  ".repeat(row.depth),
            if row.orphan { ORPHAN } else { "" },
            kind_sign(span.kind),
            span.service,
            span.name
        );
        let offset = span.start_unix_nano.saturating_sub(start);
        let failed = span.status == SpanStatus::Error;
        let slot = services.iter().position(|s| *s == span.service).unwrap_or(0) + 2;
        let drawn = bar(offset, span.duration_nanos(), total, bar_width);
        let mut line = format!(
            "{} {:>NUMBER$} {:>NUMBER$}  {}",
            pad(&truncate(&label, name_width), name_width),
            millis(offset),
            millis(span.duration_nanos()),
            paint(if failed { RED } else { slot_color(slot) }, &drawn, color)
        );
        if failed {
            let why = span
                .status_message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or("error");
            line.push_str(&format!(" {}", paint(RED, &format!("✗ {why}"), color)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&paint(DIM, "\n⇠ server  ⇢ client  ✉ event  · internal", color));
    if orphans {
        out.push_str(&paint(DIM, &format!("  {ORPHAN} parent span not stored"), color));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_796_076_062_000_000_000;

    fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        name: &str,
        kind: SpanKind,
        from_ms: u64,
        to_ms: u64,
    ) -> Span {
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            service: service.into(),
            instance: None,
            name: name.into(),
            kind,
            start_unix_nano: T0 + from_ms * MS,
            end_unix_nano: T0 + to_ms * MS,
            status: SpanStatus::Unset,
            status_message: None,
            attributes: Default::default(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// A 100 ms order: the gateway calls orders, which calls payments (failing) after
    /// inventory; the spans arrive out of order, and one's parent was never stored.
    fn trace() -> Trace {
        let mut payment = span("p1", Some("o2"), "payments", "POST /payments", SpanKind::Server, 50, 80);
        payment.status = SpanStatus::Error;
        payment.status_message = Some("card declined".into());
        Trace {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            spans: vec![
                span("o3", Some("o1"), "orders", "POST payments", SpanKind::Client, 45, 85),
                span("g1", None, "gateway", "POST /api/v1/orders", SpanKind::Server, 0, 100),
                span("o1", Some("g2"), "orders", "POST /orders", SpanKind::Server, 10, 90),
                span("g2", Some("g1"), "gateway", "POST orders", SpanKind::Client, 5, 95),
                span("o2", Some("o1"), "orders", "GET inventory", SpanKind::Client, 20, 40),
                payment,
                span(
                    "x1",
                    Some("gone"),
                    "shipping",
                    "order.placed",
                    SpanKind::Consumer,
                    60,
                    70,
                ),
            ],
        }
    }

    #[test]
    fn spans_come_in_tree_order() {
        let t = trace();
        let rows: Vec<(&str, usize, bool)> = tree_order(&t.spans)
            .iter()
            .map(|r| (t.spans[r.span].span_id.as_str(), r.depth, r.orphan))
            .collect();
        assert_eq!(
            rows,
            [
                ("g1", 0, false),
                ("g2", 1, false),
                ("o1", 2, false),
                ("o2", 3, false),
                ("p1", 4, false),
                ("o3", 3, false),
                ("x1", 0, true),
            ]
        );
    }

    #[test]
    fn a_cycle_of_parents_is_still_shown_once() {
        let spans = vec![
            span("a", Some("b"), "s", "a", SpanKind::Internal, 0, 1),
            span("b", Some("a"), "s", "b", SpanKind::Internal, 1, 2),
        ];
        let rows = tree_order(&spans);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].orphan && rows[0].depth == 0 && rows[1].depth == 1);
    }

    #[test]
    fn bars_scale_to_the_trace() {
        assert_eq!(bar(0, 100, 100, 10), "██████████");
        assert_eq!(bar(50, 30, 100, 10), "     ███  ");
        assert_eq!(bar(99, 1, 100, 10), "         ▏");
        assert_eq!(bar(0, 0, 0, 4), "▏   ");
        assert_eq!(bar(90, 50, 100, 10), "         █", "never past the end");
    }

    #[test]
    fn draws_header_rows_offsets_bars_and_errors() {
        let text = draw(&trace(), 100, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "trace 4bf92f3577b34da6a3ce929d0e0e4736  100 ms  7 spans  1 error  services: gateway, orders, payments, shipping"
        );
        // 100 columns: name 40, numbers 9 + 9, bar 100 - 40 - 1 - 9 - 1 - 9 - 4 = 36.
        let bar_width = 36;
        assert_eq!(
            lines[2],
            format!(
                "{} {:>9} {:>9}  0{:>35}",
                pad("SPAN", 40),
                "OFFSET ms",
                "DUR ms",
                "100 ms"
            )
        );
        let root = lines[3];
        assert!(root.starts_with(&pad("⇠ gateway POST /api/v1/orders", 40)), "{root}");
        assert!(
            root.contains(&format!("{:>9} {:>9}  {}", "0", "100", "█".repeat(bar_width))),
            "{root}"
        );
        let payment = lines[7];
        assert!(payment.starts_with("        ⇠ payments POST /payments"), "{payment}");
        // 50 ms in: cell 18 of 36; 30 ms long: 10.8 cells, so 11.
        let expected = format!(
            "{:>9} {:>9}  {}{}{} ✗ card declined",
            "50.0",
            "30.0",
            " ".repeat(18),
            "█".repeat(11),
            " ".repeat(7)
        );
        assert!(payment.ends_with(&expected), "{payment}\n{expected}");
        let orphan = lines[9];
        assert!(orphan.starts_with("…✉ shipping order.placed"), "{orphan}");
        assert!(text.contains("… parent span not stored"), "{text}");
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let mut t = trace();
        t.spans[1].name = "GET /api/v1/a/very/long/route/that/does/not/fit/anywhere/at/all".into();
        let text = draw(&t, 60, false);
        let root = text.lines().nth(3).unwrap();
        assert!(root.starts_with("⇠ gateway GET /api/v1/a… "), "{root}");
        let rows = text.lines().skip(2).take_while(|l| !l.is_empty());
        assert!(
            rows.filter(|l| !l.contains('✗')).all(|l| l.chars().count() <= 60),
            "{text}"
        );
    }

    #[test]
    fn errors_are_red_when_coloured() {
        let text = draw(&trace(), 100, true);
        assert!(text.contains("\x1b[31m✗ card declined\x1b[0m"), "{text}");
    }

    #[test]
    fn an_empty_trace_says_so() {
        let empty = Trace {
            trace_id: "t".into(),
            spans: Vec::new(),
        };
        assert_eq!(draw(&empty, 100, false), "trace t: no spans stored\n");
    }
}
