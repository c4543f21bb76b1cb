//! A running `flotilla up` in a temp dir, on free ports.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs::{cpu_seconds, descendants, free_addr};

/// A running `flotilla up`, killed with everything it started when dropped.
pub struct System {
    /// The `up` process.
    pub child: Child,
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The control plane's address.
    pub control: SocketAddr,
    /// The working directory (manifest, data dir).
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Mutex<mpsc::Receiver<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl System {
    /// Copies the manifest and routes of `repo` into a temp dir and runs `binary up` there.
    ///
    /// # Panics
    /// When the temp dir or the process cannot be made: the caller cannot go on.
    pub fn start(binary: &Path, repo: &Path, extra: &[&str]) -> System {
        Self::start_with_env(binary, repo, extra, &[])
    }

    /// [`System::start`] with environment for `up` and, through it, every process it runs.
    ///
    /// # Panics
    /// When the temp dir or the process cannot be made: the caller cannot go on.
    pub fn start_with_env(binary: &Path, repo: &Path, extra: &[&str], env: &[(&str, &str)]) -> System {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in ["flotilla.toml", "routes.toml"] {
            std::fs::copy(repo.join(file), dir.path().join(file)).expect("copy manifest");
        }
        Self::launch(binary, dir, extra, env)
    }

    /// Runs `binary up` in `dir`, which holds a `flotilla.toml`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start_in(binary: &Path, dir: tempfile::TempDir, extra: &[&str]) -> System {
        Self::launch(binary, dir, extra, &[])
    }

    fn launch(binary: &Path, dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> System {
        let (gateway, control) = (free_addr(), free_addr());
        let mut child = Command::new(binary)
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
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flotilla up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, new_line) = mpsc::channel();
        let streams: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for stream in streams {
            let lines = lines.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lock(&lines).push(line);
                    let _ = tx.send(());
                }
            });
        }
        System {
            child,
            gateway,
            control,
            dir,
            binary: binary.to_path_buf(),
            lines,
            new_line: Mutex::new(new_line),
        }
    }

    /// Everything `up` printed so far.
    pub fn output(&self) -> String {
        lock(&self.lines).join("\n")
    }

    /// Waits until a printed line contains `needle`.
    ///
    /// # Panics
    /// After `timeout`, with everything printed so far.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.lines).iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            let _ = lock(&self.new_line).recv_timeout(left.min(Duration::from_millis(200)));
        }
    }

    /// The data dir `up` uses.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(".flotilla")
    }

    /// The last `n` lines at WARN or worse that `process` (`gateway`, `catalog-1`) logged: what
    /// a failing test prints to say why.
    pub fn warnings(&self, process: &str, n: usize) -> Vec<String> {
        let log =
            std::fs::read_to_string(self.data_dir().join("logs").join(format!("{process}.log"))).unwrap_or_default();
        let warned: Vec<String> = log
            .lines()
            .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect();
        warned[warned.len().saturating_sub(n)..].to_vec()
    }

    /// The operator token `up` wrote in its data dir, if it has.
    pub fn operator_token(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("token"))
            .map(|t| t.trim().to_owned())
            .ok()
    }

    /// Runs `flotilla <args> --control-addr .. --data-dir ..` against this system.
    ///
    /// # Panics
    /// When the binary cannot be run.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.binary)
            .args(args)
            .args(["--control-addr", &self.control.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run flotilla")
    }

    /// `flotilla status --output json`.
    ///
    /// # Panics
    /// When the command fails or prints no JSON.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--output", "json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// (instance id, address, pid) of each instance of `service`.
    pub fn instances(&self, service: &str) -> Vec<(String, String, u32)> {
        self.status()["instances"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|i| i["service"] == service)
                    .filter_map(|i| {
                        Some((
                            i["instance_id"].as_str()?.to_owned(),
                            i["address"].as_str()?.to_owned(),
                            i["metadata"]["pid"].as_str()?.parse().ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pid of the process `up` started with `arg` among its arguments (`control`).
    pub fn process_with_arg(&self, arg: &str) -> Option<u32> {
        descendants(self.child.id()).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split('\0').any(|a| a == arg))
        })
    }

    /// CPU seconds used so far by each process `up` runs, named by what it runs
    /// (`service orders`, `gateway`, `control`), and by `up` itself: where a load's CPU went.
    pub fn cpu_by_process(&self) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        out.insert("up (supervisor)".to_owned(), cpu_seconds(self.child.id()));
        for pid in descendants(self.child.id()) {
            let Ok(cmdline) = std::fs::read_to_string(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            // `flotilla service orders --…` → `service orders`; `flotilla gateway …` → `gateway`.
            let words: Vec<&str> = cmdline
                .split('\0')
                .skip(1)
                .take_while(|a| !a.is_empty() && !a.starts_with('-'))
                .collect();
            let name = if words.is_empty() {
                format!("pid {pid}")
            } else {
                words.join(" ")
            };
            *out.entry(name).or_insert(0.0) += cpu_seconds(pid);
        }
        out
    }

    /// Sends SIGINT (a Ctrl-C) and waits for `up` to exit; returns how long it took.
    ///
    /// # Panics
    /// When `up` fails or does not stop within `timeout`.
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

/// Drops the PostgreSQL databases `flotilla up --cluster --database-prefix <prefix>` made on
/// the machine's server for the shipped manifest: one per service, and the traces.
pub fn drop_cluster_databases(prefix: &str) {
    for name in [
        "catalog",
        "identity",
        "inventory",
        "notifications",
        "orders",
        "payments",
        "shipping",
        "traces",
    ] {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {prefix}_{name} WITH (FORCE)"))
            .output();
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
