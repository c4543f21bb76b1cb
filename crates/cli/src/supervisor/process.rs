//! One supervised process: start it, pump its output, restart it with exponential backoff
//! when it dies, and stop it gracefully (SIGTERM, then SIGKILL after a grace period). Its
//! current pid is kept where the supervisor's fault injection (`flotilla chaos`) finds it.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::output::Output;

/// First delay before a restart; doubled on each quick failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A process that stayed up this long is healthy again: its next crash restarts quickly.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What to run and how to show it.
#[derive(Debug, Clone)]
pub(super) struct ProcessSpec {
    /// The supervisor's name for it (`catalog-1`), used in logs and handed to the process.
    pub(super) name: String,
    /// The executable.
    pub(super) command: PathBuf,
    /// Its arguments.
    pub(super) args: Vec<String>,
    /// Its environment, on top of the supervisor's own.
    pub(super) env: Vec<(String, String)>,
    /// Colour slot for its log prefix.
    pub(super) slot: usize,
    /// How long it gets between SIGTERM and SIGKILL.
    pub(super) stop_grace: Duration,
    /// Only its warnings and errors reach the terminal (a NATS node's chatter does not); its
    /// file gets every line.
    pub(super) quiet: bool,
}

/// Whether a quiet process's line is worth the terminal: a NATS server's warning, error or
/// fatal line, but not its routine retries of a route to a peer that is starting.
fn worth_showing(line: &str) -> bool {
    ["[WRN]", "[ERR]", "[FTL]"].iter().any(|level| line.contains(level))
        && !line.contains("Error trying to connect to route")
}

/// The pid of a supervised process's current run: set on each (re)spawn, 0 while none runs
/// (between a crash and its restart, and after it stopped).
#[derive(Debug, Clone, Default)]
pub(super) struct PidCell(Arc<AtomicU32>);

impl PidCell {
    /// The running process's pid, if one runs.
    pub(super) fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    fn set(&self, pid: Option<u32>) {
        self.0.store(pid.unwrap_or(0), Ordering::SeqCst);
    }
}

/// A running supervised process: the task that owns it, and the switch that stops it.
pub(super) struct Supervised {
    /// The spec it runs.
    pub(super) name: String,
    /// Its current pid.
    pub(super) pid: PidCell,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    /// Starts supervising `spec`.
    pub(super) fn start(spec: ProcessSpec, output: Arc<Output>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let pid = PidCell::default();
        let task = tokio::spawn(supervise(spec, output, stop_rx, pid.clone()));
        Self { name, pid, stop, task }
    }

    /// Stops the process (SIGTERM, then SIGKILL after its grace) and waits until it is gone.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        None => "exited".into(),
    }
}

/// glibc's allocator as every process `up` runs uses it, unless the environment says
/// otherwise: two arenas, not eight per core (each thread's arena keeps what it freed), and
/// allocations from 256 KiB up mapped on their own and given back when freed (glibc otherwise
/// raises that threshold after the first large free and keeps every later large block, as
/// identity's 19 MiB password hashes). Measured by `bench/footprint`. The Kubernetes
/// manifests set the same.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144:glibc.malloc.trim_threshold=262144";

fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.command);
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        command.env("GLIBC_TUNABLES", MALLOC_TUNABLES);
    }
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // Our end of stdin stays open while we live; the process sees EOF when we are gone.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C on the terminal reaches only the supervisor, which
        // then stops everything in order (services first, control plane last).
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

fn pump(
    reader: impl AsyncRead + Unpin + Send + 'static,
    name: String,
    slot: usize,
    quiet: bool,
    output: Arc<Output>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let file = output.file(&name).ok();
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if !quiet || worth_showing(line) {
                        output.line(&name, slot, line);
                    }
                    if let Some(file) = &file {
                        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = std::io::Write::write_all(&mut *f, line.as_bytes());
                        let _ = std::io::Write::write_all(&mut *f, b"\n");
                    }
                }
            }
        }
    })
}

async fn supervise(spec: ProcessSpec, output: Arc<Output>, mut stop: watch::Receiver<bool>, pid: PidCell) {
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(err) => {
                output.say(&format!(
                    "{}: cannot start {}: {err}",
                    spec.name,
                    spec.command.display()
                ));
                if wait_or_stop(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        pid.set(child.id());
        let _stdin = child.stdin.take();
        let pumps: Vec<_> = [
            child
                .stdout
                .take()
                .map(|r| pump(r, spec.name.clone(), spec.slot, spec.quiet, output.clone())),
            child
                .stderr
                .take()
                .map(|r| pump(r, spec.name.clone(), spec.slot, spec.quiet, output.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();

        let status = tokio::select! {
            status = child.wait() => status,
            _ = stopped(&mut stop) => {
                terminate(&mut child, &spec, &output).await;
                pid.set(None);
                for p in pumps {
                    let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
                }
                return;
            }
        };
        pid.set(None);
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
        }
        let stopping = *stop.borrow();
        if stopping {
            return;
        }
        let ran = started.elapsed();
        if ran >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        restarts += 1;
        let how = match status {
            Ok(status) => describe(status),
            Err(err) => format!("could not be waited for ({err})"),
        };
        output.say(&format!(
            "{} {how} after {:.1}s; restarting in {} ms (restart #{restarts})",
            spec.name,
            ran.as_secs_f64(),
            backoff.as_millis()
        ));
        if wait_or_stop(&mut stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for `delay`; true if told to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped(stop) => true,
    };
    stopped || *stop.borrow()
}

async fn terminate(child: &mut Child, spec: &ProcessSpec, output: &Output) {
    let Some(id) = child.id() else { return };
    let pid = Pid::from_raw(id as i32);
    let _ = kill(pid, Signal::SIGTERM);
    // A process paused by `flotilla chaos` would hold the SIGTERM until continued, and
    // never drain: continue it (a running process ignores SIGCONT).
    let _ = kill(pid, Signal::SIGCONT);
    match tokio::time::timeout(spec.stop_grace, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            output.say(&format!(
                "{} did not stop within {:?}; killing it",
                spec.name, spec.stop_grace
            ));
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// One allocator setting for both ways of running: `up` and the Kubernetes manifests.
    #[test]
    fn kubernetes_sets_the_allocator_as_up_does() {
        let kustomization = include_str!("../../../../deploy/kubernetes/base/kustomization.yaml");
        let line = format!("GLIBC_TUNABLES={}", super::MALLOC_TUNABLES);
        assert!(
            kustomization.contains(&line),
            "the base kustomization should set {line}"
        );
    }
}
