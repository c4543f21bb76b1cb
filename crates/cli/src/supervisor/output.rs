//! The merged log: every process's lines on the terminal behind a coloured name, and each
//! process's own file under `<data-dir>/logs/`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "91"];

/// Where supervised output goes.
pub struct Output {
    color: bool,
    width: usize,
    logs_dir: PathBuf,
    files: Mutex<HashMap<String, Arc<Mutex<File>>>>,
}

impl Output {
    /// Writes to standard output (coloured when it is a terminal and `NO_COLOR` is unset) and
    /// to files under `logs_dir`, which is created.
    pub fn new(logs_dir: &Path, width: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(logs_dir)?;
        Ok(Self {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            width: width.max(8),
            logs_dir: logs_dir.to_path_buf(),
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

    /// One line from a process, with the colour given by `slot`.
    pub fn line(&self, name: &str, slot: usize, text: &str) {
        let prefix = if self.color {
            format!(
                "\x1b[{}m{name:<width$} │\x1b[0m ",
                PALETTE[slot % PALETTE.len()],
                width = self.width
            )
        } else {
            format!("{name:<width$} │ ", width = self.width)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}{text}");
    }

    /// A message from the supervisor itself.
    pub fn say(&self, text: &str) {
        let name = "flotilla";
        let prefix = if self.color {
            format!("\x1b[1m{name:<width$} │\x1b[0m ", width = self.width)
        } else {
            format!("{name:<width$} │ ", width = self.width)
        };
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
