//! Helpers for system tests: start the real `flotilla` binary on free ports in a temp dir,
//! read its output, and make sure every process it started is gone afterwards.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod load;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `flotilla` binary under test.
pub fn flotilla() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla")
}

/// A port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// The repository's root, where the shipped manifest and routes live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every process descended from `pid` (children, grandchildren, ...), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The command name may hold spaces; the fields after its closing paren are fixed.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if let Some(ppid) = fields.get(1).and_then(|f| f.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, ppid) in &parents {
            if *ppid == parent && !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A running `flotilla up`, killed with everything it started when dropped.
pub struct System {
    pub child: Child,
    pub gateway: SocketAddr,
    pub control: SocketAddr,
    pub dir: tempfile::TempDir,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: mpsc::Receiver<()>,
}

impl System {
    /// Copies the shipped manifest and routes into a temp dir and runs `flotilla up` there.
    pub fn start(extra: &[&str]) -> System {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["flotilla.toml", "routes.toml"] {
            std::fs::copy(repo_root().join(file), dir.path().join(file)).expect("copy manifest");
        }
        Self::start_in(dir, extra)
    }

    /// Runs `flotilla up` in `dir`, which holds a `flotilla.toml`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> System {
        let (gateway, control) = (free_addr(), free_addr());
        let mut child = Command::new(flotilla())
            .current_dir(dir.path())
            .args([
                "up",
                "--gateway-addr",
                &gateway.to_string(),
                "--control-addr",
                &control.to_string(),
            ])
            .args(extra)
            .env_remove("FLOTILLA_CONTROL_ADDR")
            .env_remove("FLOTILLA_DATA_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flotilla up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, new_line) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                    let _ = tx.send(());
                }
            });
        }
        System {
            child,
            gateway,
            control,
            dir,
            lines,
            new_line,
        }
    }

    /// Everything `up` printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a printed line contains `needle`; panics with the output after `timeout`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            let _ = self.new_line.recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// The data dir `up` uses.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(".flotilla")
    }

    /// Runs `flotilla <args>` against this system and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(flotilla())
            .args(args)
            .args(["--control-addr", &self.control.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run flotilla")
    }

    /// `flotilla status --output json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--output", "json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// Sends SIGINT (a Ctrl-C) and waits for `up` to exit; returns how long it took.
    pub fn interrupt(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("signal up");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "up exited with {status}; output:\n{}", self.output());
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                panic!("up did not stop within {timeout:?}; output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for pid in descendants(self.child.id()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP GET over a fresh connection: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], "")
}

/// A minimal HTTP/1.1 request (Connection: close), enough for system tests.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
