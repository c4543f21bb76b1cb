//! Where a running `flotilla up` can be reached, kept in its data dir (`up.json`, 0600) while
//! it runs, so every command finds the system from the data dir alone: no address flags for a
//! system on other ports, and an error that names what was tried.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default control-plane address, when nothing says otherwise.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7070";

/// What a running `up` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// The supervisor's process id.
    pub pid: u32,
    /// The control plane's (plain, operator's) address.
    pub control: String,
    /// The gateway's public address.
    pub gateway: String,
}

/// The file in a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("up.json")
}

/// Records where the system `up` runs can be reached.
pub fn record(data_dir: &Path, running: &Running) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(running).map_err(std::io::Error::other)?;
    flotilla::data_dir::replace_private(&path(data_dir), &text)
}

/// Forgets it (when `up` stops).
pub fn forget(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

/// What a data dir says, when a system recorded itself there and its supervisor still runs.
pub fn read(data_dir: &Path) -> Option<Running> {
    let running: Running = serde_json::from_slice(&std::fs::read(path(data_dir)).ok()?).ok()?;
    std::path::Path::new(&format!("/proc/{}", running.pid))
        .exists()
        .then_some(running)
}

/// A control-plane address for a command, and where it came from (for the one line that
/// says what was tried when nothing answers there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address.
    pub addr: String,
    /// Where it came from.
    pub from: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.addr, self.from)
    }
}

/// The control plane to talk to: the flag (or `FLOTILLA_CONTROL_ADDR`) when given, else the
/// one the `up` running in `data_dir` recorded, else the default.
pub fn control(flag: Option<String>, data_dir: &Path) -> Found {
    if let Some(addr) = flag.filter(|a| !a.is_empty()) {
        return Found {
            addr,
            from: "--control-addr / FLOTILLA_CONTROL_ADDR".into(),
        };
    }
    match read(data_dir) {
        Some(running) => Found {
            addr: running.control,
            from: format!("recorded by the `flotilla up` running in {}", data_dir.display()),
        },
        None => Found {
            addr: DEFAULT_CONTROL.into(),
            from: format!(
                "the default: no `flotilla up` runs in {} (give --data-dir or --control-addr)",
                data_dir.display()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_then_the_running_system_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let found = control(None, dir.path());
        assert_eq!(found.addr, DEFAULT_CONTROL);
        assert!(found.from.contains("no `flotilla up` runs"), "{found}");
        record(
            dir.path(),
            &Running {
                pid: std::process::id(),
                control: "127.0.0.1:17070".into(),
                gateway: "127.0.0.1:18080".into(),
            },
        )
        .unwrap();
        assert_eq!(control(None, dir.path()).addr, "127.0.0.1:17070");
        assert_eq!(control(Some("10.0.0.1:7070".into()), dir.path()).addr, "10.0.0.1:7070");
        // A supervisor that is gone left its file: not believed.
        record(
            dir.path(),
            &Running {
                pid: u32::MAX - 1,
                control: "127.0.0.1:17070".into(),
                gateway: "127.0.0.1:18080".into(),
            },
        )
        .unwrap();
        assert_eq!(control(None, dir.path()).addr, DEFAULT_CONTROL);
        forget(dir.path());
        assert!(!path(dir.path()).exists());
    }
}
