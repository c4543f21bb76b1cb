//! `flotilla traces`: the traces that matched, newest first, one row each, so the slow or
//! failed one can be picked and opened with `flotilla trace ID`.

use flotilla_api::telemetry::TraceList;

use super::duration;
use crate::local_time::{self, LocalTime};
use crate::style::{pad, paint, RED};

const HEADERS: [&str; 7] = ["TRACE", "START", "DURATION", "SPANS", "ERRORS", "ROOT", "SERVICES"];
/// Columns whose numbers read better right-aligned.
const RIGHT: [bool; 7] = [false, false, true, true, true, false, false];

/// The table: trace id, local start time, duration, span and error counts, the root span's
/// `service operation`, and every service in the trace.
pub fn table(list: &TraceList, time: &LocalTime, color: bool) -> String {
    if list.traces.is_empty() {
        return "(no traces match: none stored yet, or the filters leave none)\n".to_owned();
    }
    let rows: Vec<[String; 7]> = list
        .traces
        .iter()
        .map(|t| {
            [
                t.trace_id.clone(),
                local_time::from_unix_nanos(t.start_unix_nano).map_or_else(|| "?".into(), |at| time.clock(at)),
                duration(t.duration_nanos),
                t.span_count.to_string(),
                t.error_count.to_string(),
                format!("{} {}", t.root_service, t.root_name),
                t.services.join(", "),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [String; 7], errors: bool| {
        let mut out = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let text = if RIGHT[i] {
                    format!("{cell:>w$}", w = widths[i])
                } else {
                    pad(cell, widths[i])
                };
                // Padded first, so the colour codes do not count as width.
                if i == 4 && errors {
                    paint(RED, &text, color)
                } else {
                    text
                }
            })
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(HEADERS.map(String::from), false);
    for (row, trace) in rows.into_iter().zip(&list.traces) {
        out.push_str(&line(row, trace.error_count > 0));
    }
    out
}

#[cfg(test)]
mod tests {
    use flotilla_api::telemetry::TraceSummary;

    use super::*;

    fn list() -> TraceList {
        TraceList {
            traces: vec![
                TraceSummary {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    root_service: "gateway".into(),
                    root_name: "POST /api/v1/orders".into(),
                    // 2026-11-30T22:01:02.123Z
                    start_unix_nano: 1_796_076_062_123_000_000,
                    duration_nanos: 312_400_000,
                    span_count: 9,
                    error_count: 1,
                    services: vec!["gateway".into(), "orders".into(), "payments".into()],
                },
                TraceSummary {
                    trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                    root_service: "gateway".into(),
                    root_name: "GET /api/v1/products".into(),
                    start_unix_nano: 1_796_076_061_000_000_000,
                    duration_nanos: 4_500_000,
                    span_count: 3,
                    error_count: 0,
                    services: vec!["catalog".into(), "gateway".into()],
                },
            ],
        }
    }

    #[test]
    fn one_aligned_row_per_trace() {
        let text = table(&list(), &LocalTime::utc(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "TRACE                             START         DURATION  SPANS  ERRORS  ROOT                          SERVICES"
        );
        assert_eq!(
            lines[1],
            "4bf92f3577b34da6a3ce929d0e0e4736  22:01:02.123    312 ms      9       1  gateway POST /api/v1/orders   gateway, orders, payments"
        );
        assert_eq!(
            lines[2],
            "0af7651916cd43dd8448eb211c80319c  22:01:01.000   4.50 ms      3       0  gateway GET /api/v1/products  catalog, gateway"
        );
    }

    #[test]
    fn errors_are_red_when_coloured() {
        let text = table(&list(), &LocalTime::utc(), true);
        assert!(text.contains("\x1b[31m     1\x1b[0m"), "{text}");
        assert!(!text.contains("\x1b[31m     0"), "{text}");
    }

    #[test]
    fn an_empty_list_says_so() {
        assert!(table(&TraceList::default(), &LocalTime::utc(), false).starts_with("(no traces match"));
    }
}
