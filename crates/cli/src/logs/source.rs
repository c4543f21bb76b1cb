//! One process's log file, read a line at a time through a buffer so that a long log is never
//! held in memory, and read on from where it stopped when the process appends more (or
//! from the start again when the file was truncated or replaced).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flotilla_api::telemetry::LogLine;
use jiff::Timestamp;

use super::render;
use super::LogsError;

/// One line of a log file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The index of its file among the merge's sources.
    pub source: usize,
    /// Its own time if it is a JSON line with one, else the time of the JSON line before it
    /// in its file (a panic belongs where it happened); `None` when nothing came before.
    pub at: Option<Timestamp>,
    /// The line as written, without its line end.
    pub raw: String,
    /// The line parsed, when it is [`LogLine`] JSON.
    pub line: Option<LogLine>,
}

/// A log file being read.
#[derive(Debug)]
pub struct Source {
    /// The process that writes it: the file's name without `.log` (`catalog-1`).
    process: String,
    path: PathBuf,
    reader: BufReader<File>,
    /// Bytes of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// Bytes consumed from the file, to notice when it shrinks.
    consumed: u64,
    /// The time of the last JSON line read, for the plain lines after it.
    last_time: Option<Timestamp>,
}

impl Source {
    /// Opens `path`, written by the process `process`.
    pub fn open(path: &Path, process: &str) -> Result<Self, LogsError> {
        let file = File::open(path).map_err(|source| LogsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            process: process.to_owned(),
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            partial: Vec::new(),
            consumed: 0,
            last_time: None,
        })
    }

    /// The process that writes this file.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The next line, or `None` at the end of what is written so far. A last line without
    /// its line end is held back until its end arrives, unless `take_partial` says no more
    /// will (reading once, not following).
    pub fn next_line(&mut self, index: usize, take_partial: bool) -> Result<Option<Entry>, LogsError> {
        loop {
            let read = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .map_err(|source| LogsError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            self.consumed += read as u64;
            let complete = self.partial.last() == Some(&b'\n');
            if !complete && (read > 0 || !take_partial || self.partial.is_empty()) {
                if read > 0 {
                    // More may follow in the buffer or the file: read on.
                    continue;
                }
                return Ok(None);
            }
            let bytes = std::mem::take(&mut self.partial);
            let text = String::from_utf8_lossy(&bytes);
            let raw = text.trim_end_matches(['\n', '\r']);
            if raw.trim().is_empty() {
                continue;
            }
            return Ok(Some(self.entry(index, raw)));
        }
    }

    fn entry(&mut self, index: usize, raw: &str) -> Entry {
        let line = render::parse(raw);
        let own = line.as_ref().and_then(|l| l.timestamp.parse::<Timestamp>().ok());
        if own.is_some() {
            self.last_time = own;
        }
        Entry {
            source: index,
            at: self.last_time,
            raw: raw.to_owned(),
            line,
        }
    }

    /// Starts over from the beginning if the file was truncated or replaced by a new one
    /// since it was opened (someone cleared the logs while we follow them).
    pub fn reopen_if_replaced(&mut self) -> Result<(), LogsError> {
        let Ok(on_disk) = std::fs::metadata(&self.path) else {
            // Gone for now; what was read stands, and a new file is found by name later.
            return Ok(());
        };
        let open = self.reader.get_ref().metadata().map_err(|source| LogsError::Read {
            path: self.path.clone(),
            source,
        })?;
        let replaced = on_disk.ino() != open.ino() || on_disk.dev() != open.dev();
        if replaced || on_disk.len() < self.consumed {
            let last_time = self.last_time;
            *self = Self::open(&self.path.clone(), &self.process.clone())?;
            self.last_time = last_time;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn json(ts: &str, message: &str) -> String {
        format!(r#"{{"timestamp":"{ts}","level":"INFO","service":"orders","message":"{message}"}}"#)
    }

    #[test]
    fn plain_lines_take_the_time_of_the_json_line_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders-1.log");
        let text = format!(
            "early plain\n{}\nthread 'main' panicked\n\n{}\n",
            json("2026-11-30T22:00:01Z", "a"),
            json("2026-11-30T22:00:02Z", "b")
        );
        std::fs::write(&path, text).unwrap();
        let mut source = Source::open(&path, "orders-1").unwrap();
        let first = source.next_line(3, true).unwrap().unwrap();
        assert_eq!((first.source, first.at, first.raw.as_str()), (3, None, "early plain"));
        let a = source.next_line(3, true).unwrap().unwrap();
        assert_eq!(a.line.unwrap().message, "a");
        let panic = source.next_line(3, true).unwrap().unwrap();
        assert!(panic.line.is_none());
        assert_eq!(panic.at, a.at);
        let b = source.next_line(3, true).unwrap().unwrap();
        assert_eq!(b.line.unwrap().message, "b", "the blank line is skipped");
        assert!(source.next_line(3, true).unwrap().is_none());
    }

    #[test]
    fn a_line_is_held_until_its_end_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"one\ntw").unwrap();
        let mut source = Source::open(&path, "x").unwrap();
        assert_eq!(source.next_line(0, false).unwrap().unwrap().raw, "one");
        assert!(source.next_line(0, false).unwrap().is_none());
        file.write_all(b"o\n").unwrap();
        assert_eq!(source.next_line(0, false).unwrap().unwrap().raw, "two");
        file.write_all(b"three").unwrap();
        assert_eq!(source.next_line(0, true).unwrap().unwrap().raw, "three");
    }

    #[test]
    fn starts_over_when_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let mut source = Source::open(&path, "x").unwrap();
        while source.next_line(0, false).unwrap().is_some() {}
        std::fs::write(&path, "new\n").unwrap();
        source.reopen_if_replaced().unwrap();
        assert_eq!(source.next_line(0, false).unwrap().unwrap().raw, "new");
    }
}
