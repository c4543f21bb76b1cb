//! `flotilla logs`: every supervised process's log file (`<data-dir>/logs/<process>.log`,
//! JSON lines) as one time-ordered stream, filtered by service, trace, level and age, drawn
//! for people or passed on raw; `--follow` keeps printing what is appended.

pub mod filter;
pub mod level;
pub mod merge;
pub mod render;
pub mod source;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use self::filter::{service_of, Filter};
use self::merge::Merger;
use self::source::Entry;
use crate::local_time::LocalTime;
use crate::style;

/// How often `--follow` looks for appended lines and new files.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Why `flotilla logs` could not show the logs.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// There is no logs directory: `flotilla up` never ran with this data dir.
    #[error("no logs at {path}: the directory does not exist (`flotilla up` keeps each process's log there; is --data-dir right?)")]
    NoLogsDir {
        /// The directory looked for.
        path: PathBuf,
    },
    /// The logs directory could not be listed.
    #[error("listing {path}: {source}")]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--trace` is not a trace id or the start of one.
    #[error("--trace {given}: give a trace id (32 hex digits) or at least its first 8")]
    BadTrace {
        /// What was given.
        given: String,
    },
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Write(#[source] std::io::Error),
}

/// What `flotilla logs` shows and how.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    /// The directory of log files (`<data-dir>/logs`).
    pub dir: PathBuf,
    /// Which lines.
    pub filter: Filter,
    /// Keep printing appended lines until shut down.
    pub follow: bool,
    /// Print the JSON lines as written instead of drawing them (plain lines are left out,
    /// so the output stays JSON lines for tools).
    pub json: bool,
    /// Colour process names and levels.
    pub color: bool,
    /// The zone times are shown in.
    pub time: LocalTime,
    /// How often `follow` looks for more.
    pub poll: Duration,
}

/// Prints lines for people or tools, each process's name in its own colour.
struct Printer<'a> {
    options: &'a LogsOptions,
    width: usize,
    /// Colour slot of each service, as `flotilla up` gives them: control plane, gateway,
    /// then services.
    slots: HashMap<String, usize>,
}

impl<'a> Printer<'a> {
    fn new<'p>(options: &'a LogsOptions, processes: impl Iterator<Item = &'p str>) -> Self {
        let mut processes: Vec<&str> = processes.collect();
        processes.sort_unstable();
        let width = processes
            .iter()
            .map(|p| p.chars().count())
            .chain([8])
            .max()
            .unwrap_or(8);
        let mut printer = Self {
            options,
            width,
            slots: HashMap::from([("control".to_owned(), 0), ("gateway".to_owned(), 1)]),
        };
        for process in processes {
            printer.slot(process);
        }
        printer
    }

    fn slot(&mut self, process: &str) -> usize {
        let next = self.slots.len().max(2);
        *self.slots.entry(service_of(process).to_owned()).or_insert(next)
    }

    /// Writes one line; `false` when the reader went away (`flotilla logs | head`).
    fn print(&mut self, out: &mut dyn Write, process: &str, entry: &Entry) -> Result<bool, LogsError> {
        let text = if self.options.json {
            if entry.line.is_none() {
                return Ok(true);
            }
            entry.raw.clone()
        } else {
            // A process that appeared while following may have a longer name.
            self.width = self.width.max(process.chars().count());
            let slot = self.slot(process);
            let body = match &entry.line {
                Some(line) => render::human(line, &self.options.time, self.options.color),
                None => entry.raw.clone(),
            };
            format!(
                "{}{body}",
                style::process_prefix(process, slot, self.width, self.options.color)
            )
        };
        match writeln!(out, "{text}") {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(err) => Err(LogsError::Write(err)),
        }
    }
}

/// Prints every line `filter` keeps that the files hold now, in time order; `false` when the
/// reader went away.
fn drain(
    merger: &mut Merger,
    printer: &mut Printer<'_>,
    filter: &Filter,
    take_partial: bool,
    out: &mut dyn Write,
) -> Result<bool, LogsError> {
    while let Some(entry) = merger.next(filter, take_partial)? {
        let process = merger.process(entry.source).to_owned();
        if !printer.print(out, &process, &entry)? {
            return Ok(false);
        }
    }
    out.flush().map_err(LogsError::Write)?;
    Ok(true)
}

/// Runs `flotilla logs`: prints what the log files hold, and with `follow` what is appended
/// to them (and to files that appear) until `shutdown` resolves.
pub async fn run(
    options: &LogsOptions,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LogsError> {
    let mut merger = Merger::open(&options.dir)?;
    let mut printer = Printer::new(options, merger.processes());
    // Without --follow, a line still being written is shown as far as it got.
    if !drain(&mut merger, &mut printer, &options.filter, !options.follow, out)? || !options.follow {
        return Ok(());
    }
    // Appended lines are new whatever --since said, and their times may trail a little
    // behind the clock of whoever wrote them.
    let filter = options.filter.without_since();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(options.poll) => {}
        }
        merger.discover()?;
        merger.wake()?;
        if !drain(&mut merger, &mut printer, &filter, false, out)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(ts: &str, service: &str, level: &str, message: &str) -> String {
        format!(
            r#"{{"timestamp":"{ts}","level":"{level}","service":"{service}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","message":"{message}"}}"#
        )
    }

    fn options(dir: &std::path::Path, json: bool, follow: bool) -> LogsOptions {
        LogsOptions {
            dir: dir.to_path_buf(),
            filter: Filter::default(),
            follow,
            json,
            color: false,
            time: LocalTime::utc(),
            poll: Duration::from_millis(20),
        }
    }

    fn logs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders-1.log"),
            format!(
                "{}\npanicked here\n",
                json("2026-11-30T22:00:00.200Z", "orders", "INFO", "placed")
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("gateway.log"),
            format!("{}\n", json("2026-11-30T22:00:00.100Z", "gateway", "WARN", "slow")),
        )
        .unwrap();
        dir
    }

    #[tokio::test]
    async fn text_has_process_prefixes_and_rendered_lines() {
        let dir = logs();
        let mut out = Vec::new();
        run(&options(dir.path(), false, false), &mut out, std::future::pending())
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "gateway  │ 22:00:00.100 WARN  slow trace=4bf92f35\n\
             orders-1 │ 22:00:00.200 INFO  placed trace=4bf92f35\n\
             orders-1 │ panicked here\n"
        );
    }

    #[tokio::test]
    async fn json_prints_the_json_lines_as_written() {
        let dir = logs();
        let mut out = Vec::new();
        run(&options(dir.path(), true, false), &mut out, std::future::pending())
            .await
            .unwrap();
        let expected = format!(
            "{}\n{}\n",
            json("2026-11-30T22:00:00.100Z", "gateway", "WARN", "slow"),
            json("2026-11-30T22:00:00.200Z", "orders", "INFO", "placed")
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[tokio::test]
    async fn follow_prints_appended_lines_until_shut_down() {
        let dir = logs();
        let path = dir.path().join("gateway.log");
        let appended = json("2026-11-30T22:00:05Z", "gateway", "INFO", "later");
        let writer = {
            let appended = appended.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                writeln!(file, "{appended}").unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let mut out = Vec::new();
        run(&options(dir.path(), true, true), &mut out, writer).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with(&format!("{appended}\n")), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn services_keep_up_s_colour_slots() {
        let options = options(std::path::Path::new("."), false, false);
        let mut printer = Printer::new(&options, ["orders-1", "catalog-2", "gateway", "catalog-1"].into_iter());
        assert_eq!(printer.slot("control"), 0);
        assert_eq!(printer.slot("gateway"), 1);
        assert_eq!(printer.slot("catalog-7"), 2);
        assert_eq!(printer.slot("orders-1"), 3);
        assert_eq!(printer.slot("shipping-1"), 4);
        assert_eq!(printer.width, 9);
    }
}
