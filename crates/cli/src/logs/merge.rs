//! Every process's log as one stream in time order: a k-way merge over the log files. Each
//! file is already in time order, so only the next line of each is held, in a heap keyed
//! by time; the whole of a large log never is.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::filter::Filter;
use super::source::{Entry, Source};
use super::LogsError;

/// A file's next line waiting its turn. Ordered by time, then by file so that lines of
/// equal time come out in the same order every run; lines of unknown time come first.
#[derive(Debug)]
struct Head(Entry);

impl Head {
    fn key(&self) -> (Option<Timestamp>, usize) {
        (self.0.at, self.0.source)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The log files of a logs directory, merged.
#[derive(Debug)]
pub struct Merger {
    dir: PathBuf,
    sources: Vec<Source>,
    /// The next kept line of each file that has one.
    heads: BinaryHeap<Reverse<Head>>,
    /// Files to read a next line from before the next line is chosen: those whose line
    /// was just taken, and (after [`Merger::wake`]) those that had reached their end.
    pending: Vec<usize>,
}

impl Merger {
    /// Opens every `*.log` file in `dir`; an error naming `dir` when it does not exist.
    pub fn open(dir: &Path) -> Result<Self, LogsError> {
        if !dir.is_dir() {
            return Err(LogsError::NoLogsDir {
                path: dir.to_path_buf(),
            });
        }
        let mut merger = Self {
            dir: dir.to_path_buf(),
            sources: Vec::new(),
            heads: BinaryHeap::new(),
            pending: Vec::new(),
        };
        merger.discover()?;
        Ok(merger)
    }

    /// The process writing the file of source `index`.
    pub fn process(&self, index: usize) -> &str {
        self.sources.get(index).map_or("?", Source::process)
    }

    /// Every process with a log file, in the order they were found.
    pub fn processes(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(Source::process)
    }

    /// Opens log files that appeared since the last look (a process started by `flotilla
    /// scale`); returns how many.
    pub fn discover(&mut self) -> Result<usize, LogsError> {
        let list_err = |source| LogsError::ListDir {
            path: self.dir.clone(),
            source,
        };
        let known: BTreeSet<String> = self.sources.iter().map(|s| s.process().to_owned()).collect();
        let mut found = BTreeSet::new();
        for dir_entry in std::fs::read_dir(&self.dir).map_err(list_err)? {
            let path = dir_entry.map_err(list_err)?.path();
            if path.extension().is_none_or(|ext| ext != "log") || !path.is_file() {
                continue;
            }
            let Some(process) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if !known.contains(process) {
                found.insert((process.to_owned(), path.clone()));
            }
        }
        let added = found.len();
        for (process, path) in found {
            self.pending.push(self.sources.len());
            self.sources.push(Source::open(&path, &process)?);
        }
        Ok(added)
    }

    /// Makes every file that had reached its end be read again, for lines appended since;
    /// files truncated or replaced meanwhile are read from their start.
    pub fn wake(&mut self) -> Result<(), LogsError> {
        let waiting: BTreeSet<usize> = self.heads.iter().map(|Reverse(h)| h.0.source).collect();
        for index in 0..self.sources.len() {
            if !waiting.contains(&index) && !self.pending.contains(&index) {
                self.sources[index].reopen_if_replaced()?;
                self.pending.push(index);
            }
        }
        Ok(())
    }

    /// The earliest line that `filter` keeps among what every file holds so far, or `None`
    /// when they are all read. `take_partial`: a last line without its end counts (nobody
    /// is writing, or we will not wait for it).
    pub fn next(&mut self, filter: &Filter, take_partial: bool) -> Result<Option<Entry>, LogsError> {
        while let Some(index) = self.pending.pop() {
            let source = &mut self.sources[index];
            while let Some(entry) = source.next_line(index, take_partial)? {
                if filter.keeps(source.process(), entry.line.as_ref(), entry.at) {
                    self.heads.push(Reverse(Head(entry)));
                    break;
                }
            }
        }
        let Some(Reverse(Head(entry))) = self.heads.pop() else {
            return Ok(None);
        };
        self.pending.push(entry.source);
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::level::Level;

    fn json(ts: &str, service: &str, level: &str, trace: &str, message: &str) -> String {
        format!(
            r#"{{"timestamp":"{ts}","level":"{level}","service":"{service}","trace_id":"{trace}","message":"{message}"}}"#
        )
    }

    const T1: &str = "11111111aaaaaaaaaaaaaaaaaaaaaaaa";
    const T2: &str = "22222222bbbbbbbbbbbbbbbbbbbbbbbb";

    /// Three processes whose lines interleave in time, with plain lines among them.
    fn logs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: &[String]| {
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(dir.path().join(name), text).unwrap();
        };
        write(
            "gateway.log",
            &[
                json("2026-11-30T22:00:00.100Z", "gateway", "INFO", T1, "g1"),
                json("2026-11-30T22:00:00.400Z", "gateway", "INFO", T2, "g2"),
                json("2026-11-30T22:00:00.700Z", "gateway", "WARN", T1, "g3"),
            ],
        );
        write(
            "orders-1.log",
            &[
                json("2026-11-30T22:00:00.200Z", "orders", "INFO", T1, "o1"),
                "thread 'tokio' panicked at orders.rs:1:1".into(),
                json("2026-11-30T22:00:00.500Z", "orders", "ERROR", T2, "o2"),
            ],
        );
        write(
            "catalog-1.log",
            &[
                json("2026-11-30T22:00:00.000Z", "catalog", "DEBUG", T2, "c1"),
                json("2026-11-30T22:00:00.300Z", "catalog", "INFO", T1, "c2"),
                json("2026-11-30T22:00:00.600Z", "catalog", "INFO", T2, "c3"),
            ],
        );
        std::fs::write(dir.path().join("notes.txt"), "not a log\n").unwrap();
        dir
    }

    fn all(merger: &mut Merger, filter: &Filter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(entry) = merger.next(filter, true).unwrap() {
            out.push(match &entry.line {
                Some(line) => line.message.clone(),
                None => format!("{}: {}", merger.process(entry.source), entry.raw),
            });
        }
        out
    }

    #[test]
    fn merges_files_in_time_order() {
        let dir = logs();
        let mut merger = Merger::open(dir.path()).unwrap();
        assert_eq!(
            all(&mut merger, &Filter::default()),
            [
                "c1",
                "g1",
                "o1",
                "orders-1: thread 'tokio' panicked at orders.rs:1:1",
                "c2",
                "g2",
                "o2",
                "c3",
                "g3"
            ]
        );
        let mut processes: Vec<_> = merger.processes().collect();
        processes.sort();
        assert_eq!(processes, ["catalog-1", "gateway", "orders-1"]);
    }

    #[test]
    fn filters_while_merging() {
        let dir = logs();
        let trace = Filter::new(None, Some("11111111"), None, None).unwrap();
        assert_eq!(
            all(&mut Merger::open(dir.path()).unwrap(), &trace),
            ["g1", "o1", "c2", "g3"]
        );
        let warn = Filter::new(None, None, Some(Level::Warn), None).unwrap();
        assert_eq!(all(&mut Merger::open(dir.path()).unwrap(), &warn), ["o2", "g3"]);
        let orders = Filter::new(Some("orders".into()), None, None, None).unwrap();
        assert_eq!(
            all(&mut Merger::open(dir.path()).unwrap(), &orders),
            ["o1", "orders-1: thread 'tokio' panicked at orders.rs:1:1", "o2"]
        );
        let since = "2026-11-30T22:00:00.450Z".parse().ok();
        let recent = Filter::new(None, None, None, since).unwrap();
        assert_eq!(all(&mut Merger::open(dir.path()).unwrap(), &recent), ["o2", "c3", "g3"]);
    }

    #[test]
    fn a_missing_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("logs");
        let err = Merger::open(&missing).unwrap_err();
        assert!(matches!(err, LogsError::NoLogsDir { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn wakes_for_appended_lines_and_new_files() {
        let dir = logs();
        let mut merger = Merger::open(dir.path()).unwrap();
        let filter = Filter::default();
        assert_eq!(all(&mut merger, &filter).len(), 9);
        assert!(merger.next(&filter, false).unwrap().is_none());

        use std::io::Write;
        let mut gateway = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("gateway.log"))
            .unwrap();
        writeln!(
            gateway,
            "{}",
            json("2026-11-30T22:00:01.000Z", "gateway", "INFO", T1, "g4")
        )
        .unwrap();
        std::fs::write(
            dir.path().join("orders-2.log"),
            format!("{}\n", json("2026-11-30T22:00:00.900Z", "orders", "INFO", T1, "n1")),
        )
        .unwrap();
        assert!(merger.next(&filter, false).unwrap().is_none(), "asleep until woken");
        assert_eq!(merger.discover().unwrap(), 1);
        merger.wake().unwrap();
        assert_eq!(all(&mut merger, &filter), ["n1", "g4"]);
    }
}
