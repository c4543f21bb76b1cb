//! The merged log: every process's lines on the terminal behind a coloured name, and each
//! process's own file under `<data-dir>/logs/`. Processes write JSON log lines (the files
//! keep them as written, for `flotilla logs`); the terminal shows them drawn for people.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::local_time::LocalTime;
use crate::logs::render;
use crate::style;

/// Where supervised output goes.
pub struct Output {
    color: bool,
    width: usize,
    logs_dir: PathBuf,
    time: LocalTime,
    files: Mutex<HashMap<String, Arc<Mutex<File>>>>,
}

impl Output {
    /// Writes to standard output (coloured when it is a terminal and `NO_COLOR` is unset) and
    /// to files under `logs_dir`, which is created.
    pub fn new(logs_dir: &Path, width: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(logs_dir)?;
        Ok(Self {
            color: style::stdout_wants_color(),
            width: width.max(8),
            logs_dir: logs_dir.to_path_buf(),
            time: LocalTime::system(),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The log file of a process (`<logs>/<name>.log`), opened for appending once.
    pub fn file(&self, name: &str) -> std::io::Result<Arc<Mutex<File>>> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get(name) {
            return Ok(file.clone());
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs_dir.join(format!("{name}.log")))?;
        let file = Arc::new(Mutex::new(file));
        files.insert(name.to_owned(), file.clone());
        Ok(file)
    }

    /// One line from a process, with the colour given by `slot`: a JSON log line drawn for
    /// people, anything else as it is.
    pub fn line(&self, name: &str, slot: usize, text: &str) {
        let shown = self.console_line(name, slot, text);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{shown}");
    }

    fn console_line(&self, name: &str, slot: usize, text: &str) -> String {
        let prefix = style::process_prefix(name, slot, self.width, self.color);
        match render::parse(text) {
            Some(line) => format!("{prefix}{}", render::human(&line, &self.time, self.color)),
            None => format!("{prefix}{text}"),
        }
    }

    /// A message from the supervisor itself.
    pub fn say(&self, text: &str) {
        let name = "flotilla";
        let prefix = format!(
            "{} ",
            style::paint(
                style::BOLD,
                &format!("{name:<width$} │", width = self.width),
                self.color
            )
        );
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}{text}");
    }

    /// A block of text printed as is (the ready banner).
    pub fn block(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Whether colours are on.
    pub fn color(&self) -> bool {
        self.color
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_drawn_and_others_shown_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let mut output = Output::new(&dir.path().join("logs"), 8).unwrap();
        output.color = false;
        output.time = LocalTime::utc();
        let json = r#"{"timestamp":"2026-11-30T22:01:02.123456Z","level":"INFO","service":"catalog","instance":"catalog-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","message":"listening","fields":{"addr":"127.0.0.1:4000"}}"#;
        assert_eq!(
            output.console_line("catalog-1", 2, json),
            "catalog-1 │ 22:01:02.123 INFO  listening addr=127.0.0.1:4000 trace=4bf92f35"
        );
        assert_eq!(
            output.console_line("catalog-1", 2, "thread 'main' panicked"),
            "catalog-1 │ thread 'main' panicked"
        );
    }
}
