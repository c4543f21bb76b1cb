//! Logs: the newest lines of every supervised process's log file (`flotilla up` writes each
//! process's JSON lines to `<data-dir>/logs/<name>.log`), merged by time and filtered by
//! service or process, level and trace — `flotilla logs` in the browser, where a line's trace
//! id opens the trace. Only the tail of each file is read, so a long-running system's logs
//! cost the page no more than a fresh one's. Without a logs dir (on Kubernetes processes log
//! to their standard output) the page says where to look instead.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use flotilla_api::telemetry::LogLine;
use jiff::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;

use super::{page_with, with_status, Viewer};
use crate::ControlState;

/// The view's path, for the navigation bar and its links.
const CURRENT: &str = "/ui/logs";
/// How much of the end of each file is read: a few thousand lines, whatever the file's size.
const TAIL_BYTES: u64 = 256 * 1024;
/// How many lines the page shows.
const SHOWN: usize = 100;
/// The fewest hex digits a trace filter takes (what log lines show of a trace id).
const MIN_TRACE_PREFIX: usize = 8;
/// A whole trace id's length (W3C trace context).
const TRACE_ID_LEN: usize = 32;

/// A log line's level, from least to most severe, so a filter can mean "this and worse".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// Every level, most severe first, as the filter offers them.
    const ALL: [Level; 5] = [Self::Error, Self::Warn, Self::Info, Self::Debug, Self::Trace];

    /// The level a line or a query names (`ERROR`, `warn`, `WARNING`); `None` for anything
    /// else, so an unknown level is never taken for a severity it does not have.
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(Self::Trace),
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    /// Its name in URLs and CSS classes.
    fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// The service a supervised process runs, from its name: `catalog-2` → `catalog`,
/// `gateway` → `gateway` (the supervisor numbers instances from 1).
fn service_of(process: &str) -> &str {
    match process.rsplit_once('-') {
        Some((service, n)) if !service.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => service,
        _ => process,
    }
}

/// The filter form's fields, as a browser sends them (empty fields for "any").
#[derive(Debug, Default, Deserialize)]
pub(super) struct LogQuery {
    /// A service (`orders`: every instance's file) or one process (`orders-2`).
    service: Option<String>,
    /// This level and more severe.
    level: Option<String>,
    /// A trace id, or its first 8 or more hex digits.
    trace: Option<String>,
    /// `off` pauses the page's live refresh.
    follow: Option<String>,
}

/// What a line must match to be shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    /// A service or a process: matched against the file's process name.
    service: Option<String>,
    /// This level and worse.
    level: Option<Level>,
    /// A trace id or its first digits, lowercase.
    trace: Option<String>,
}

impl Filter {
    /// The filter a query asks for, or what is wrong with it (to say so, showing no lines
    /// rather than lines the user did not ask for).
    fn from_query(query: &LogQuery) -> Result<Self, String> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let level = match given(&query.level) {
            None => None,
            Some(level) => Some(
                Level::parse(&level)
                    .ok_or_else(|| format!("`{level}` is not a level (error, warn, info, debug or trace)."))?,
            ),
        };
        let trace = match given(&query.trace) {
            None => None,
            Some(trace) => {
                let prefix = trace.to_ascii_lowercase();
                let hex = prefix.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex || !(MIN_TRACE_PREFIX..=TRACE_ID_LEN).contains(&prefix.len()) {
                    return Err(format!(
                        "`{trace}` is not a trace id: {MIN_TRACE_PREFIX} to {TRACE_ID_LEN} hex digits."
                    ));
                }
                Some(prefix)
            }
        };
        Ok(Self {
            service: given(&query.service),
            level,
            trace,
        })
    }

    /// Whether `process`'s file can hold lines to show: it is the process asked for, or an
    /// instance of the service.
    fn keeps_file(&self, process: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|wanted| process == wanted || service_of(process) == wanted)
    }

    /// Whether to show a line (of a file [`Filter::keeps_file`] kept). A line that is not
    /// JSON (a panic, an older process) says no level or trace: it is shown only when neither
    /// is asked for.
    fn keeps(&self, line: Option<&LogLine>) -> bool {
        let Some(line) = line else {
            return self.trace.is_none() && self.level.is_none();
        };
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

/// One line of a log file.
#[derive(Debug, Clone)]
struct Entry {
    /// The process whose file it is in (`orders-1`).
    process: String,
    /// Its own time if it is a JSON line with one, else the time of the JSON line before it
    /// (a panic belongs where it happened); `None` when nothing before it was read.
    at: Option<Timestamp>,
    /// The line as written.
    raw: String,
    /// The line parsed, when it is [`LogLine`] JSON.
    line: Option<LogLine>,
}

/// The last `bytes` of `path` as whole lines: a line cut by where reading began is dropped,
/// and so is a last line still being written (no line end yet).
fn read_tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut buffer = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    // The file may grow meanwhile: read no more than asked.
    file.take(bytes).read_to_end(&mut buffer)?;
    let mut text = &buffer[..];
    if start > 0 {
        text = match text.iter().position(|&b| b == b'\n') {
            Some(end) => &text[end + 1..],
            None => &[],
        };
    }
    match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => text = &text[..=end],
        None => text = &[],
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// `text`'s lines as entries of `process`'s file, each JSON line parsed.
fn entries(process: &str, text: &str) -> Vec<Entry> {
    let mut last_time = None;
    text.lines()
        .map(|raw| raw.trim_end_matches('\r'))
        .filter(|raw| !raw.trim().is_empty())
        .map(|raw| {
            let line = raw
                .trim_start()
                .starts_with('{')
                .then(|| serde_json::from_str::<LogLine>(raw).ok())
                .flatten();
            if let Some(at) = line.as_ref().and_then(|l| l.timestamp.parse::<Timestamp>().ok()) {
                last_time = Some(at);
            }
            Entry {
                process: process.to_owned(),
                at: last_time,
                raw: raw.to_owned(),
                line,
            }
        })
        .collect()
}

/// The newest `n` of several files' entries (each in its file's order), newest first. Lines
/// of equal time keep their files' order.
fn merge(files: Vec<Vec<Entry>>, n: usize) -> Vec<Entry> {
    let mut all: Vec<(usize, usize, Entry)> = files
        .into_iter()
        .enumerate()
        .flat_map(|(file, entries)| entries.into_iter().enumerate().map(move |(i, e)| (file, i, e)))
        .collect();
    all.sort_by_key(|(file, i, e)| (e.at, *file, *i));
    all.into_iter().rev().take(n).map(|(_, _, e)| e).collect()
}

/// What the logs dir holds: the processes with a log file, and the newest lines that match.
#[derive(Debug, Default)]
struct Collected {
    /// Every process with a file, whether or not the filter kept it.
    processes: BTreeSet<String>,
    /// The lines to show, newest first.
    entries: Vec<Entry>,
    /// Files that could not be read, with why.
    unreadable: Vec<String>,
}

/// The `<name>.log` files in `dir`, by name: (process, path).
fn log_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let process = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| !n.is_empty());
        if let Some(process) = process {
            if path.is_file() {
                files.push((process.to_owned(), path.clone()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads the tail of each file the filter can use and merges the lines it keeps. Blocking.
fn collect(dir: &Path, filter: &Filter, shown: usize) -> std::io::Result<Collected> {
    let mut collected = Collected::default();
    let mut kept = Vec::new();
    for (process, path) in log_files(dir)? {
        collected.processes.insert(process.clone());
        if !filter.keeps_file(&process) {
            continue;
        }
        match read_tail(&path, TAIL_BYTES) {
            Ok(text) => {
                let mut lines: Vec<Entry> = entries(&process, &text)
                    .into_iter()
                    .filter(|e| filter.keeps(e.line.as_ref()))
                    .collect();
                // No more of one file can be shown than the page holds.
                lines.drain(..lines.len().saturating_sub(shown));
                kept.push(lines);
            }
            Err(err) => collected.unreadable.push(format!("{}: {err}", path.display())),
        }
    }
    collected.entries = merge(kept, shown);
    Ok(collected)
}

/// A field's value as `key=value` shows it: strings bare, anything else as JSON.
fn field_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A trace id fit to link to: 32 hex digits, not all zero.
fn linkable_trace(id: &str) -> bool {
    id.len() == TRACE_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
}

/// `/ui/logs` with these filters (empty ones left out): the page's stable URLs.
fn logs_url(service: Option<&str>, level: Option<Level>, trace: Option<&str>, paused: bool) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(service) = service {
        query.append_pair("service", service);
    }
    if let Some(level) = level {
        query.append_pair("level", level.as_str());
    }
    if let Some(trace) = trace {
        query.append_pair("trace", trace);
    }
    if paused {
        query.append_pair("follow", "off");
    }
    let query = query.finish();
    if query.is_empty() {
        CURRENT.to_owned()
    } else {
        format!("{CURRENT}?{query}")
    }
}

/// The filter form: a plain GET form, so every view has a URL; its fields keep their ids
/// across the live refresh (the script keeps focus by id).
fn filter_form(query: &LogQuery, filter: &Filter, processes: &BTreeSet<String>, paused: bool) -> Markup {
    let services: BTreeSet<&str> = processes.iter().map(|p| service_of(p)).collect();
    let wanted_service = query.service.as_deref().map(str::trim).unwrap_or("");
    let wanted_level = filter.level.map_or("", Level::as_str);
    html! {
        form class="search" method="get" action=(CURRENT) role="search" {
            label for="log-service" { "Service " }
            select id="log-service" name="service" {
                option value="" selected[wanted_service.is_empty()] { "every process" }
                @for service in &services {
                    option value=(service) selected[wanted_service == *service] { (service) }
                    @for process in processes.iter().filter(|p| service_of(p) == *service && p.as_str() != *service) {
                        option value=(process) selected[wanted_service == process.as_str()] { "  " (process) }
                    }
                }
                @if !wanted_service.is_empty() && !services.contains(wanted_service) && !processes.contains(wanted_service) {
                    option value=(wanted_service) selected { (wanted_service) }
                }
            }
            label for="log-level" { "Level at least " }
            select id="log-level" name="level" {
                option value="" selected[wanted_level.is_empty()] { "any" }
                @for level in Level::ALL {
                    option value=(level.as_str()) selected[wanted_level == level.as_str()] { (level.as_str()) }
                }
            }
            label for="log-trace" { "Trace " }
            input id="log-trace" name="trace" value=(query.trace.as_deref().unwrap_or("")) size="34"
                placeholder="trace id or its first 8 digits" autocomplete="off" spellcheck="false";
            @if paused { input type="hidden" name="follow" value="off"; }
            button type="submit" id="log-filter" { "Filter" }
            a href=(logs_url(None, None, None, paused)) { "Clear" }
        }
    }
}

/// One line as a table row: time, process, level, message and fields, and its trace.
fn row(entry: &Entry) -> Markup {
    let time = entry
        .at
        .map(|t| t.strftime("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let level = entry.line.as_ref().map(|l| (Level::parse(&l.level), l.level.as_str()));
    let trace = entry
        .line
        .as_ref()
        .and_then(|l| l.trace_id.as_deref())
        .filter(|t| !t.is_empty());
    html! {
        tr data-process=(entry.process) data-trace=[trace] {
            td class="time" {
                @if let Some(at) = entry.at { time datetime=(at.to_string()) { (time) } }
            }
            td { a href=(logs_url(Some(&entry.process), None, None, false)) { (entry.process) } }
            td {
                @match level {
                    Some((Some(level), _)) => span class={"level " (level.as_str())} { (level.as_str()) },
                    Some((None, written)) => span class="level" { (written) },
                    None => "",
                }
            }
            td class="message" {
                @match &entry.line {
                    Some(line) => {
                        (line.message)
                        @for (key, value) in &line.fields {
                            " " span class="field" { span class="key" { (key) "=" } (field_value(value)) }
                        }
                    }
                    None => code { (entry.raw) },
                }
            }
            td {
                @if let Some(trace) = trace {
                    @if linkable_trace(trace) {
                        a href={"/ui/traces/" (trace)} title=(trace) { code { (&trace[..MIN_TRACE_PREFIX]) } }
                    } @else {
                        code { (trace) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/logs`: the newest lines of every process's log merged by time, filtered by
/// `service`, `level` (and worse) and `trace`; live unless `follow=off`.
pub(super) async fn list(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Query(query): Query<LogQuery>,
) -> Response {
    let paused = query.follow.as_deref() == Some("off");
    let title = "Logs";
    let Some(dir) = state.logs_dir().map(Path::to_path_buf) else {
        let content = html! {
            p class="empty" {
                "This control plane was not told where the processes' logs are. Under "
                code { "flotilla up" } " they are in " code { "<data-dir>/logs/" } " (and "
                code { "flotilla logs" } " shows them); on Kubernetes each process logs to its standard output: "
                code { "kubectl logs" } " or the cluster's log collector has them."
            }
        };
        return page_with(&viewer, CURRENT, title, content, false);
    };
    let filter = match Filter::from_query(&query) {
        Ok(filter) => filter,
        Err(problem) => {
            let content = html! {
                (filter_form(&query, &Filter::default(), &BTreeSet::new(), paused))
                p class="error" role="alert" { (problem) }
            };
            return with_status(
                page_with(&viewer, CURRENT, title, content, false),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let read = {
        let (dir, filter) = (dir.clone(), filter.clone());
        tokio::task::spawn_blocking(move || collect(&dir, &filter, SHOWN)).await
    };
    let collected = match read {
        Ok(Ok(collected)) => Ok(collected),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => Ok(Collected::default()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    let follow_link = logs_url(
        filter.service.as_deref(),
        filter.level,
        filter.trace.as_deref(),
        !paused,
    );
    let content = html! {
        (filter_form(&query, &filter, collected.as_ref().map(|c| &c.processes).unwrap_or(&BTreeSet::new()), paused))
        p {
            @if paused {
                "Paused. " a href=(follow_link) { "Follow live" }
            } @else {
                "Following live. " a href=(follow_link) { "Pause" }
            }
            @if let Some(trace) = filter.trace.as_deref().filter(|t| linkable_trace(t)) {
                " · " a href={"/ui/traces/" (trace)} { "The trace's waterfall" }
            }
        }
        @match &collected {
            Err(err) => p class="error" role="alert" { "The logs in " code { (dir.display()) } " could not be read: " (err) },
            Ok(collected) => {
                @for problem in &collected.unreadable {
                    p class="error" role="alert" { "Not readable: " (problem) }
                }
                @if collected.processes.is_empty() {
                    p class="empty" { "No log file in " code { (dir.display()) } " yet." }
                } @else if collected.entries.is_empty() {
                    p class="empty" { "No recent line matches." }
                } @else {
                    div class="table-wrap" {
                        table class="logs" {
                            thead { tr {
                                th scope="col" { "Time" }
                                th scope="col" { "Process" }
                                th scope="col" { "Level" }
                                th scope="col" { "Message" }
                                th scope="col" { "Trace" }
                            } }
                            tbody { @for entry in &collected.entries { (row(entry)) } }
                        }
                    }
                }
                p class="hint" {
                    "The newest " (SHOWN) " matching lines among the last " (TAIL_BYTES / 1024)
                    " KiB of each process's log in " code { (dir.display()) } ", newest first; times in UTC."
                }
            }
        }
    };
    page_with(&viewer, CURRENT, title, content, !paused)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;
    use crate::acl::Principal;
    use crate::{ControlConfig, RegistryConfig, Storage};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn json(ts: &str, level: &str, message: &str, trace: Option<&str>) -> String {
        let mut line = serde_json::json!({
            "timestamp": ts, "level": level, "service": "orders", "message": message,
            "fields": {"order_id": 42}
        });
        if let Some(trace) = trace {
            line["trace_id"] = trace.into();
        }
        line.to_string()
    }

    fn query(service: &str, level: &str, trace: &str) -> LogQuery {
        LogQuery {
            service: Some(service.into()),
            level: Some(level.into()),
            trace: Some(trace.into()),
            follow: None,
        }
    }

    #[test]
    fn only_the_tail_is_read_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders-1.log");
        std::fs::write(&path, "first line\nsecond line\nthird line\nhalf-writ").unwrap();
        // From the middle of "second line": that line is cut, the last one unfinished.
        assert_eq!(read_tail(&path, 30).unwrap(), "third line\n");
        assert_eq!(read_tail(&path, 1000).unwrap(), "first line\nsecond line\nthird line\n");
        assert_eq!(read_tail(&path, 5).unwrap(), "", "no whole line in the tail");
    }

    #[test]
    fn plain_lines_take_the_time_of_the_json_line_before_them() {
        let text = format!(
            "early plain\n{}\nthread 'main' panicked\n\n{}\n",
            json("2026-11-30T22:00:01Z", "INFO", "a", None),
            json("2026-11-30T22:00:02Z", "INFO", "b", None)
        );
        let lines = entries("orders-1", &text);
        assert_eq!(lines.len(), 4, "the blank line is skipped");
        assert_eq!((lines[0].at, lines[0].line.is_none()), (None, true));
        assert_eq!(lines[1].line.as_ref().unwrap().message, "a");
        assert_eq!(lines[2].at, lines[1].at);
        assert!(lines[2].line.is_none());
        assert_eq!(lines[3].process, "orders-1");
    }

    #[test]
    fn files_merge_by_time_newest_first() {
        let a = entries(
            "orders-1",
            &[
                json("2026-11-30T22:00:01Z", "INFO", "a1", None),
                json("2026-11-30T22:00:03Z", "INFO", "a3", None),
            ]
            .join("\n"),
        );
        let b = entries(
            "catalog-1",
            &[
                json("2026-11-30T22:00:02Z", "INFO", "b2", None),
                json("2026-11-30T22:00:04Z", "INFO", "b4", None),
            ]
            .join("\n"),
        );
        let merged = merge(vec![a.clone(), b.clone()], 10);
        let order: Vec<_> = merged
            .iter()
            .map(|e| e.line.as_ref().unwrap().message.as_str())
            .collect();
        assert_eq!(order, ["b4", "a3", "b2", "a1"]);
        let newest: Vec<_> = merge(vec![a, b], 2)
            .iter()
            .map(|e| e.line.as_ref().unwrap().message.clone())
            .collect();
        assert_eq!(newest, ["b4", "a3"]);
    }

    #[test]
    fn the_filter_takes_a_service_or_process_a_level_and_worse_and_a_trace_prefix() {
        let filter = Filter::from_query(&query("orders", "warn", "4BF92F35")).unwrap();
        assert!(filter.keeps_file("orders-1") && filter.keeps_file("orders-2") && filter.keeps_file("orders"));
        assert!(!filter.keeps_file("catalog-1"));
        let one = Filter::from_query(&query("orders-2", "", "")).unwrap();
        assert!(one.keeps_file("orders-2") && !one.keeps_file("orders-1"));

        let line = |level: &str, trace: Option<&str>| {
            serde_json::from_str::<LogLine>(&json("2026-11-30T22:00:01Z", level, "m", trace)).unwrap()
        };
        assert!(filter.keeps(Some(&line("ERROR", Some(TRACE)))));
        assert!(filter.keeps(Some(&line("WARN", Some(TRACE)))));
        assert!(!filter.keeps(Some(&line("INFO", Some(TRACE)))), "less severe");
        assert!(
            !filter.keeps(Some(&line("NOTICE", Some(TRACE)))),
            "unknown levels are not guessed"
        );
        assert!(!filter.keeps(Some(&line("ERROR", None))), "no trace");
        assert!(!filter.keeps(Some(&line("ERROR", Some("00000000000000000000000000000001")))));
        assert!(!filter.keeps(None), "a plain line has no level or trace");
        assert!(Filter::default().keeps(None));
        assert_eq!(Filter::from_query(&query(" ", " ", "")).unwrap(), Filter::default());
    }

    #[test]
    fn a_bad_level_or_trace_is_said() {
        let bad = Filter::from_query(&query("", "loud", "")).unwrap_err();
        assert!(bad.contains("`loud` is not a level"), "{bad}");
        assert!(Filter::from_query(&query("", "", "4bf92f3")).is_err(), "too short");
        assert!(Filter::from_query(&query("", "", "4bf92f35zz")).is_err(), "not hex");
        assert!(
            Filter::from_query(&query("", "", &format!("{TRACE}0"))).is_err(),
            "too long"
        );
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(service_of("catalog-12"), "catalog");
        assert_eq!(service_of("my-api"), "my-api");
    }

    #[test]
    fn urls_carry_only_the_filters_given() {
        assert_eq!(logs_url(None, None, None, false), "/ui/logs");
        assert_eq!(
            logs_url(Some("orders"), Some(Level::Warn), Some(TRACE), true),
            format!("/ui/logs?service=orders&level=warn&trace={TRACE}&follow=off")
        );
    }

    #[test]
    fn collecting_reads_each_kept_file_and_merges_what_matches() {
        let dir = tempfile::tempdir().unwrap();
        let mut orders = File::create(dir.path().join("orders-1.log")).unwrap();
        for i in 0..5 {
            let trace = (i % 2 == 0).then_some(TRACE);
            writeln!(
                orders,
                "{}",
                json(&format!("2026-11-30T22:00:0{i}Z"), "INFO", &format!("o{i}"), trace)
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("catalog-1.log"),
            format!("{}\n", json("2026-11-30T22:00:09Z", "INFO", "c", Some(TRACE))),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a log\n").unwrap();
        let by_trace = Filter::from_query(&query("", "", &TRACE[..8])).unwrap();
        let found = collect(dir.path(), &by_trace, 300).unwrap();
        assert_eq!(found.processes.iter().collect::<Vec<_>>(), ["catalog-1", "orders-1"]);
        let messages: Vec<_> = found
            .entries
            .iter()
            .map(|e| e.line.as_ref().unwrap().message.as_str())
            .collect();
        assert_eq!(messages, ["c", "o4", "o2", "o0"]);
        let orders_only = Filter::from_query(&query("orders", "", "")).unwrap();
        let found = collect(dir.path(), &orders_only, 2).unwrap();
        let messages: Vec<_> = found
            .entries
            .iter()
            .map(|e| e.line.as_ref().unwrap().message.as_str())
            .collect();
        assert_eq!(messages, ["o4", "o3"], "the newest two, of orders' file only");
    }

    async fn page(logs_dir: Option<PathBuf>, path: &str) -> (StatusCode, String) {
        let (_tx, rx) = watch::channel(false);
        let config = ControlConfig {
            registry: RegistryConfig::default(),
            token: "s3cret-token".into(),
            warm_up: std::time::Duration::ZERO,
        };
        let state = ControlState::new(config, Storage::in_memory().await.unwrap(), rx).with_logs_dir(logs_dir);
        let session = state
            .keyring()
            .session(&Principal::Operator, super::super::session::now() + 3600)
            .unwrap();
        let app = super::super::routes().with_state(Arc::new(state));
        let request = Request::get(path)
            .header(header::COOKIE, format!("flotilla_session={session}"))
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_page_links_lines_to_their_traces_and_says_when_it_has_no_logs() {
        let (status, body) = page(None, "/ui/logs").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("was not told where the processes' logs are"), "{body}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders-1.log"),
            format!(
                "{}\n{}\n",
                json("2026-11-30T22:00:01Z", "WARN", "payment <slow>", Some(TRACE)),
                json("2026-11-30T22:00:02Z", "INFO", "other", None)
            ),
        )
        .unwrap();
        let (status, body) = page(Some(dir.path().to_path_buf()), &format!("/ui/logs?trace={TRACE}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(&format!(r#"href="/ui/traces/{TRACE}""#)), "{body}");
        assert!(body.contains("payment &lt;slow&gt;"));
        assert!(body.contains(r#"<span class="level warn">warn</span>"#), "{body}");
        assert!(!body.contains(">other<"), "the line of no trace is filtered out");
        assert!(body.contains(r#"data-live="on""#));

        let (status, body) = page(Some(dir.path().to_path_buf()), "/ui/logs?level=loud&follow=off").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("`loud` is not a level"));
    }
}
