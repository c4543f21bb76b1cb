//! `flotilla up`: a small local orchestrator. It starts the control plane and waits until it
//! is ready, then the gateway and every service instance; restarts what crashes; merges all
//! logs; and on Ctrl-C stops services first (they deregister and drain), then the gateway,
//! then the control plane. On request it kills or pauses a process (`flotilla chaos`), and it
//! scales the services whose manifest entry asks for it (`autoscale`).

pub mod autoscale;
pub mod chaos;
pub mod cluster;
pub mod control;
mod fleet;
mod follow;
mod output;
mod process;
pub mod seeds;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::config::FileError;
use flotilla::discovery::RegistryClient;
use flotilla::http::HttpClient;
use flotilla_api::registry::meta;
use flotilla_api::{env, Instance};

use self::fleet::Fleet;
pub use self::output::Output;
use self::process::Supervised;
use crate::manifest::Manifest;

/// Options of `flotilla up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The manifest to run.
    pub manifest: PathBuf,
    /// Where state and logs live.
    pub data_dir: PathBuf,
    /// Where the gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the control plane listens.
    pub control_addr: SocketAddr,
    /// Instance counts that override the manifest's.
    pub scale: Vec<(String, u32)>,
    /// What the command `flotilla` means in the manifest (this binary).
    pub self_exe: PathBuf,
    /// How long to wait for every instance before printing the banner anyway.
    pub ready_timeout: Duration,
    /// mTLS between the processes, each with a certificate from the control plane's CA.
    pub mtls: bool,
    /// Cluster mode rehearsed on this machine (`--cluster`): where the services' databases
    /// are made. `None`: one control plane on its data dir.
    pub cluster: Option<cluster::ClusterOptions>,
}

/// Why `up` could not run the system.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The manifest is missing or wrong.
    #[error(transparent)]
    Manifest(#[from] FileError),
    /// Another `up` runs on this data dir.
    #[error("a `flotilla up` (pid {pid}) already runs on {data_dir}: its control plane at {control}, its gateway at {gateway}; stop it first, or give another --data-dir")]
    InUse {
        /// The data dir.
        data_dir: PathBuf,
        /// The supervisor running there.
        pid: u32,
        /// Its control plane.
        control: String,
        /// Its gateway.
        gateway: String,
    },
    /// A `--scale` override is wrong.
    #[error("{0}")]
    Scale(String),
    /// The data dir could not be prepared.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is open to other users, or cannot be made.
    #[error(transparent)]
    Private(#[from] flotilla::data_dir::DataDirError),
    /// A port is taken.
    #[error("port {port} is already in use ({addr}); choose another with {flag}")]
    PortInUse {
        /// The port.
        port: u16,
        /// The address.
        addr: SocketAddr,
        /// The flag that changes it.
        flag: &'static str,
    },
    /// Another bind problem.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that changes it.
        flag: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control plane did not become ready.
    #[error("the control plane did not become ready within {0:?}; see {1}")]
    ControlNotReady(Duration, PathBuf),
    /// The routes could not be put into the config store.
    #[error("seeding the gateway's routes into the config store: {0}")]
    Seed(String),
    /// Cluster mode could not be set up (no nats-server new enough, PostgreSQL away, …).
    #[error("--cluster: {0}")]
    Cluster(String),
}

fn check_port(addr: SocketAddr, flag: &'static str) -> Result<(), UpError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Err(UpError::PortInUse {
            port: addr.port(),
            addr,
            flag,
        }),
        Err(source) => Err(UpError::Bind { addr, flag, source }),
    }
}

/// Puts the routes file's routes into the config store unless it already holds routes (a
/// new data dir); says which routes the gateway will run.
async fn seed(control: &str, token: &str, routes: serde_json::Value, file: &Path) -> Result<String, UpError> {
    use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE, GATEWAY_SCOPE, ROUTES_KEY};
    use flotilla::config::{ConfigClient, ConfigClientError, Write};
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let key = ConfigKey::new(GATEWAY_SCOPE, DEFAULT_PROFILE, ROUTES_KEY);
    let cwd = std::env::current_dir().unwrap_or_default();
    let file = file.strip_prefix(&cwd).unwrap_or(file);
    let write = Write {
        expect: Some(0),
        author: Some("flotilla up".into()),
        comment: Some(format!("seeded from {}", file.display())),
    };
    match client.set(&key, routes, false, write).await {
        Ok(entry) => Ok(format!(
            "gateway routes: seeded the config store from {} (revision {})",
            file.display(),
            entry.revision
        )),
        Err(ConfigClientError::Conflict(_)) => {
            let current = client.get(&key).await.map(|e| e.revision).unwrap_or(0);
            Ok(format!(
                "gateway routes: the config store's (revision {current}); {} seeds only a new data dir — apply an edited file with `flotilla routes apply`",
                file.display()
            ))
        }
        Err(err) => Err(UpError::Seed(err.to_string())),
    }
}

/// The environment every supervised process gets: how to reach the control plane (every
/// replica's mTLS listener and the CA to check them with, when there is one), the token, the
/// data dir, the events backend, and the log format.
fn child_env(
    replicas: &[cluster::Replica],
    token: &str,
    data_dir: &Path,
    events: Option<&str>,
) -> Vec<(String, String)> {
    let mtls = replicas.iter().any(|r| r.tls.is_some());
    let control = replicas
        .iter()
        .map(|r| match r.tls {
            Some(tls) => format!("https://{tls}"),
            None => r.listen.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut common = vec![
        (env::CONTROL_ADDR.into(), control),
        (env::TOKEN.into(), token.to_owned()),
        (env::DATA_DIR.into(), data_dir.display().to_string()),
        (env::SUPERVISED.into(), "1".into()),
        // JSON lines: the files under logs/ are then what `flotilla logs` filters by trace id,
        // and the terminal still shows them drawn for people (see `Output::line`).
        (flotilla_api::telemetry::LOG_FORMAT_ENV.into(), "json".into()),
    ];
    if mtls {
        // Written by the control plane when it first starts: its CA's certificate.
        common.push((env::CA_FILE.into(), data_dir.join("ca.pem").display().to_string()));
    }
    // Services publish and consume events there instead of the control plane's log.
    if let Some(events) = events {
        common.push((env::EVENTS.into(), events.to_owned()));
    }
    common
}

/// `up.json` in the data dir for as long as this value lives: gone however `up` ends.
struct Recorded(PathBuf);

impl Recorded {
    fn new(data_dir: &Path, running: &crate::running::Running) -> std::io::Result<Self> {
        crate::running::record(data_dir, running)?;
        Ok(Self(data_dir.to_path_buf()))
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        crate::running::forget(&self.0);
    }
}

/// The URL clients reach the gateway at: the manifest's `public_url`, else its listen
/// address, named `localhost` when it listens on loopback or every interface.
fn public_url(configured: Option<&str>, gateway: SocketAddr, tls: bool) -> String {
    if let Some(url) = configured {
        return url.to_owned();
    }
    let scheme = if tls { "https" } else { "http" };
    if gateway.ip().is_loopback() || gateway.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", gateway.port())
    } else {
        format!("{scheme}://{gateway}")
    }
}

/// Runs the system until `shutdown` resolves, then stops it in order.
pub async fn up(options: UpOptions, shutdown: impl Future<Output = ()>) -> Result<(), UpError> {
    // The files as read now: an edit from here on is the follower's to apply.
    let manifest_seen = follow::Seen::of(&options.manifest);
    let mut manifest = Manifest::load(&options.manifest, &options.self_exe)?;
    let routes_seen = manifest.gateway.routes.as_deref().map(follow::Seen::of);
    // What the file says, without `--scale`: the follower applies the file's own changes.
    let as_written = manifest.clone();
    // Checked before anything starts, so a mistake is reported by file and line.
    let seed_routes = match &manifest.gateway.routes {
        Some(path) => Some(flotilla_gateway::routes::RouteTable::file_to_json(
            &flotilla::config::TomlFile::read(path)?,
        )?),
        None => None,
    };
    for (name, n) in &options.scale {
        manifest.scale(name, *n).map_err(UpError::Scale)?;
    }
    let data_err = |source| UpError::DataDir {
        path: options.data_dir.clone(),
        source,
    };
    let data_dir = flotilla::data_dir::ensure_private(&options.data_dir)?;
    if let Some(running) = crate::running::read(&data_dir) {
        return Err(UpError::InUse {
            data_dir,
            pid: running.pid,
            control: running.control,
            gateway: running.gateway,
        });
    }
    // Files an earlier version left readable by others are closed before anything starts.
    let sealed = flotilla::data_dir::seal(&data_dir)?;
    let token = crate::token::ensure(&data_dir).map_err(data_err)?;
    check_port(options.control_addr, "--control-addr")?;
    check_port(options.gateway_addr, "--gateway-addr")?;

    let names: Vec<String> = manifest
        .services
        .iter()
        .flat_map(|s| (1..=s.instances).map(move |i| format!("{}-{i}", s.name)))
        .collect();
    let width = names.iter().map(String::len).chain([8]).max().unwrap_or(8);
    let output = Arc::new(Output::new(&data_dir.join("logs"), width).map_err(data_err)?);
    if sealed > 0 {
        output.say(&format!(
            "closed {sealed} files and directories in {} to other users",
            data_dir.display()
        ));
    }
    let started = Instant::now();
    tokio::pin!(shutdown);

    // Cluster mode: the NATS nodes' ports and configs, and every service's database, before
    // anything starts.
    let plan = match &options.cluster {
        Some(options) => {
            let plan = cluster::Plan::new(&data_dir, options)?;
            let made = cluster::assign_databases(&mut manifest, &plan.postgres, &plan.prefix).await?;
            if !made.is_empty() {
                output.say(&format!(
                    "made PostgreSQL databases {} on {}",
                    made.join(", "),
                    plan.postgres
                ));
            }
            Some(plan)
        }
        None => None,
    };
    // The control plane's replicas (one unless `--cluster`), each with an mTLS listener for
    // the processes it supervises on a free loopback port (the plain one stays the
    // operator's, for the CLI).
    let count = if plan.is_some() { cluster::REPLICAS } else { 1 };
    let replicas = cluster::replicas(options.control_addr, count, options.mtls).map_err(data_err)?;
    let events = match (&manifest.events, &plan) {
        (Some(events), _) => Some(events.clone()),
        (None, Some(plan)) => Some(plan.events_url()),
        (None, None) => None,
    };
    let mut common = child_env(&replicas, &token, &data_dir, events.as_deref());
    common.push((
        env::PUBLIC_URL.into(),
        public_url(
            manifest.gateway.public_url.as_deref(),
            options.gateway_addr,
            manifest.gateway.tls.is_some(),
        ),
    ));
    let credentials = flotilla_control::acl::Keyring::new(&token);
    // A read-only credential for Prometheus' service discovery and scrapes (`credentials_file`).
    flotilla::data_dir::replace_private(
        &data_dir.join("read-token"),
        credentials.reader("prometheus").unwrap_or_default().as_bytes(),
    )
    .map_err(data_err)?;
    let fleet = Arc::new(Fleet::new(output.clone(), common, credentials));

    // 0. In cluster mode, the NATS cluster the control plane keeps its state in.
    let mut nats = Vec::new();
    if let Some(plan) = &plan {
        output.say(&format!(
            "starting a {}-node NATS JetStream cluster ({}) on {}",
            plan.nodes.len(),
            plan.binary.display(),
            plan.urls().join(", ")
        ));
        for i in 0..plan.nodes.len() {
            let name = format!("nats-{}", i + 1);
            let mut spec = fleet.spec(&name, None, 0, &plan.node_program(i), &[], Duration::from_millis(3000));
            spec.quiet = true;
            nats.push(fleet.start("nats", spec));
        }
        let waited = tokio::select! {
            waited = cluster::wait_for_nats(plan, Duration::from_secs(30)) => waited,
            _ = &mut shutdown => {
                stop_all(&output, &fleet, vec![], nats).await;
                return Ok(());
            }
        };
        if let Err(err) = waited {
            stop_all(&output, &fleet, vec![], nats).await;
            return Err(err);
        }
        output.say(&format!(
            "NATS JetStream cluster ready in {} ms",
            started.elapsed().as_millis()
        ));
    }

    // 1. The control plane, alone, until it answers: in cluster mode the first replica (which
    // makes the keys the others read), then the others.
    let store = match &plan {
        Some(plan) => Some(plan.store_url()),
        None => match &manifest.control.store {
            flotilla_control::store::StoreSpec::Embedded => None,
            flotilla_control::store::StoreSpec::Nats(spec) => Some(format!(
                "nats://{}?replicas={}",
                spec.servers
                    .iter()
                    .map(|s| s.trim_start_matches("nats://"))
                    .collect::<Vec<_>>()
                    .join(","),
                spec.replicas
            )),
        },
    };
    // In cluster mode the replicas share one trace store, on PostgreSQL.
    let traces = match &plan {
        Some(plan) => Some(cluster::traces_database(plan).await?),
        None => None,
    };
    let http = HttpClient::new(Duration::from_secs(1));
    let control_timeout = Duration::from_secs(30);
    let mut control = nats;
    for batch in [&replicas[..1], &replicas[1..]] {
        if batch.is_empty() {
            continue;
        }
        let mut names = Vec::new();
        for replica in batch {
            let n = replicas.iter().position(|r| r.listen == replica.listen).unwrap_or(0) + 1;
            let name = if replicas.len() == 1 {
                "control".to_owned()
            } else {
                format!("control-{n}")
            };
            output.say(&format!("starting {name} on http://{}", replica.listen));
            let mut control_env = vec![
                ("FLOTILLA_LISTEN".into(), replica.listen.to_string()),
                (
                    "FLOTILLA_HEARTBEAT".into(),
                    format!("{}ms", manifest.control.heartbeat.as_millis()),
                ),
                ("FLOTILLA_TTL".into(), format!("{}ms", manifest.control.ttl.as_millis())),
                // The dashboard's Logs view reads the files this supervisor writes.
                ("FLOTILLA_LOGS_DIR".into(), data_dir.join("logs").display().to_string()),
            ];
            if let Some(tls) = replica.tls {
                control_env.push(("FLOTILLA_TLS_LISTEN".into(), tls.to_string()));
            }
            if let Some(store) = &store {
                control_env.push(("FLOTILLA_STORE".into(), store.clone()));
            }
            if let Some(traces) = &traces {
                control_env.push(("FLOTILLA_TRACES".into(), traces.clone()));
            }
            control.push(fleet.start(
                "control",
                fleet.spec(
                    &name,
                    None,
                    0,
                    &manifest.control.program,
                    &control_env,
                    Duration::from_millis(1000),
                ),
            ));
            names.push((name, replica.listen));
        }
        for (name, listen) in names {
            let ready_url = format!("http://{listen}/health/ready");
            let waited = tokio::select! {
                ready = wait_for_control(&http, &ready_url, control_timeout) => ready,
                _ = &mut shutdown => {
                    stop_all(&output, &fleet, vec![], control).await;
                    return Ok(());
                }
            };
            if !waited {
                stop_all(&output, &fleet, vec![], control).await;
                return Err(UpError::ControlNotReady(
                    control_timeout,
                    data_dir.join(format!("logs/{name}.log")),
                ));
            }
        }
    }
    output.say(&format!("control plane ready in {} ms", started.elapsed().as_millis()));
    // The operator's address of every replica: what the CLI and `up` itself speak to.
    let control_at = replicas
        .iter()
        .map(|r| r.listen.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // From here on every command finds this system from the data dir alone.
    let _recorded = Recorded::new(
        &data_dir,
        &crate::running::Running {
            pid: std::process::id(),
            control: control_at.clone(),
            gateway: options.gateway_addr.to_string(),
        },
    )
    .map_err(data_err)?;

    // 2. The gateway and every service instance.
    let total: u32 = manifest.services.iter().map(|s| s.instances).sum();
    output.say(&format!(
        "starting the gateway on http://{} and {total} service instance{}",
        options.gateway_addr,
        if total == 1 { "" } else { "s" }
    ));
    // The gateway follows its routes in the config store; the routes file seeds a new store.
    if let (Some(routes), Some(path)) = (seed_routes, &manifest.gateway.routes) {
        let said = seed(&control_at, &token, routes, path).await;
        match said {
            Ok(line) => output.say(&line),
            Err(err) => {
                stop_all(&output, &fleet, vec![], control).await;
                return Err(err);
            }
        }
    }
    // What each service declared it needs, made once for a new data dir.
    for service in &manifest.services {
        for said in seeds::declared(&control_at, &token, service).await {
            match said {
                Ok(Some(line)) => output.say(&line),
                Ok(None) => {}
                Err(err) => {
                    stop_all(&output, &fleet, vec![], control).await;
                    return Err(err);
                }
            }
        }
    }
    // Services let in by others because the manifest's `calls` grant it.
    if let Err(err) = follow::grant_callers(&control_at, &token, &manifest).await {
        stop_all(&output, &fleet, vec![], control).await;
        return Err(err);
    }
    let mut gateway_env = vec![("FLOTILLA_LISTEN".into(), options.gateway_addr.to_string())];
    if let Some((cert, key)) = &manifest.gateway.tls {
        gateway_env.push(("FLOTILLA_TLS_CERT".into(), cert.display().to_string()));
        gateway_env.push(("FLOTILLA_TLS_KEY".into(), key.display().to_string()));
    }
    let gateway = vec![fleet.start(
        "gateway",
        fleet.spec(
            "gateway",
            Some("gateway"),
            1,
            &manifest.gateway.program,
            &gateway_env,
            Duration::from_millis(1500),
        ),
    )];
    for (index, service) in manifest.services.iter().enumerate() {
        let program = follow::program_for(service, &control_at);
        fleet.add(&service.name, program, index + 2).await;
        if let Err(reason) = fleet.scale(&service.name, service.instances).await {
            output.say(&format!("{}: {reason}", service.name));
        }
    }
    let exporter = crate::chaos::span::SpanExporter::new(&control_at, Some(token.clone()));
    let chaos = chaos::Chaos::new(fleet.clone(), output.clone(), Some(exporter));
    let registry = RegistryClient::with_http(http.clone().failing_over(&control_at), &control_at, Some(token.clone()));
    fleet.watch_registry(registry.clone());
    // Its state is on the socket from now; it starts deciding once the system is up.
    let autoscaler = Arc::new(autoscale::Autoscaler::new(
        fleet.clone(),
        output.clone(),
        registry.clone(),
    ));
    let _api = control::spawn(&data_dir, fleet.clone(), chaos, autoscaler.clone()).map_err(data_err)?;

    // 3. Wait for each to register, showing progress, then the banner.
    let mut expected: BTreeSet<String> = fleet.counts().await.into_values().flatten().collect();
    expected.insert("gateway".into());
    let ready = tokio::select! {
        ready = wait_for_instances(&registry, &output, &expected, started, options.ready_timeout) => ready,
        _ = &mut shutdown => {
            stop_all(&output, &fleet, gateway, control).await;
            return Ok(());
        }
    };
    let service_ready = ready.iter().filter(|n| n.as_str() != "gateway").count();
    output.block(&banner(
        &options,
        &data_dir,
        &control_at,
        plan.as_ref(),
        service_ready,
        total as usize,
        ready.contains("gateway"),
        started.elapsed(),
        output.color(),
    ));

    // 4. Autoscale the services that ask for it; follow flotilla.toml and the routes file
    // until stopped.
    for line in autoscaler.configure(&manifest) {
        output.say(&line);
    }
    let (stop_following, following_stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = follow::Follower {
        manifest: as_written,
        self_exe: options.self_exe.clone(),
        fleet: fleet.clone(),
        autoscaler: autoscaler.clone(),
        output: output.clone(),
        control: control_at.clone(),
        token: token.clone(),
        plain_control: control_at.clone(),
        postgres: plan.as_ref().map(|p| (p.postgres.clone(), p.prefix.clone())),
        manifest_seen,
        routes_seen,
    };
    let following = tokio::spawn(follower.run(async move {
        let _ = following_stopped.await;
    }));
    shutdown.await;
    // Nothing starts while the system stops: a change half applied is cut short, as
    // everything is stopped next anyway.
    let _ = stop_following.send(());
    following.abort();
    let _ = following.await;
    autoscaler.stop().await;
    stop_all(&output, &fleet, gateway, control).await;
    let _ = std::fs::remove_file(control::socket_path(&data_dir));
    Ok(())
}

async fn wait_for_control(http: &HttpClient, url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http
            .send_raw::<()>(http::Method::GET, url, None, None, None)
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls the registry until every expected process has registered (or the time runs out),
/// announcing each as it arrives. Returns the names that made it.
async fn wait_for_instances(
    registry: &RegistryClient,
    output: &Output,
    expected: &BTreeSet<String>,
    started: Instant,
    timeout: Duration,
) -> BTreeSet<String> {
    let deadline = Instant::now() + timeout;
    let mut seen: BTreeMap<String, Instance> = BTreeMap::new();
    loop {
        if let Ok(list) = registry.instances(None, None, Duration::ZERO).await {
            for instance in list.instances {
                let Some(name) = instance.metadata.get(meta::SUPERVISOR_NAME).cloned() else {
                    continue;
                };
                if expected.contains(&name) && !seen.contains_key(&name) {
                    output.say(&format!(
                        "✓ {name} ready at {} ({:.1}s)",
                        instance.address,
                        started.elapsed().as_secs_f64()
                    ));
                    seen.insert(name, instance);
                }
            }
        }
        if seen.len() == expected.len() {
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = expected.iter().filter(|n| !seen.contains_key(*n)).cloned().collect();
            output.say(&format!(
                "still waiting for {} after {timeout:?}; see their logs above",
                missing.join(", ")
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.into_keys().collect()
}

#[allow(clippy::too_many_arguments)]
fn banner(
    options: &UpOptions,
    data_dir: &Path,
    control: &str,
    plan: Option<&cluster::Plan>,
    ready: usize,
    total: usize,
    gateway: bool,
    took: Duration,
    color: bool,
) -> String {
    let (bold, dim, reset) = if color {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let rule = format!("{dim}  {}{reset}", "─".repeat(60));
    let gateway_state = if gateway { "" } else { "  (not ready yet)" };
    [
        String::new(),
        rule.clone(),
        format!(
            "  {bold}Flotilla is up{reset}: {ready}/{total} service instances ready in {:.1}s",
            took.as_secs_f64()
        ),
        format!("    gateway         http://{}{gateway_state}", options.gateway_addr),
        match plan {
            None => format!("    control plane   http://{}", options.control_addr),
            Some(plan) => format!(
                "    control plane   {} replicas ({}) on NATS JetStream, {} nodes ({})\n    databases       PostgreSQL {} (one per service, and the traces)\n    events          NATS JetStream (R{})",
                cluster::REPLICAS,
                control.split(',').map(|a| format!("http://{a}")).collect::<Vec<_>>().join(" "),
                plan.nodes.len(),
                plan.urls().join(" "),
                plan.postgres,
                cluster::NODES.min(3),
            ),
        },
        format!(
            "    dashboard       http://{}/ui  (sign in with {})",
            control.split(',').next().unwrap_or(control),
            data_dir.join("token").display()
        ),
        if options.mtls {
            format!(
                "    mTLS            every process, certificates from {}",
                data_dir.join("ca.pem").display()
            )
        } else {
            "    mTLS            off (--no-mtls): the processes speak plain HTTP".to_owned()
        },
        format!("    logs            {}", data_dir.join("logs").display()),
        format!(
            "    try             curl http://{}/api/v1/products",
            options.gateway_addr
        ),
        "                    flotilla status".to_owned(),
        "  Ctrl-C stops everything.".to_owned(),
        rule,
        String::new(),
    ]
    .join("\n")
}

/// Stops services first (they deregister and drain), then the gateway, then the control plane,
/// then (in cluster mode) the NATS nodes it keeps its state in.
async fn stop_all(output: &Output, fleet: &Fleet, gateway: Vec<Supervised>, control: Vec<Supervised>) {
    let started = Instant::now();
    output.say("stopping: services, then the gateway, then the control plane");
    fleet.stop_all().await;
    let (store, control): (Vec<_>, Vec<_>) = control.into_iter().partition(|p| p.name.starts_with("nats-"));
    for tier in [gateway, control, store] {
        fleet.stop(tier).await;
    }
    output.say(&format!("stopped in {} ms", started.elapsed().as_millis()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_asked_for_json_logs() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let replicas = [cluster::Replica {
            listen: addr,
            tls: None,
        }];
        let env = child_env(&replicas, "t", Path::new("/data"), Some("nats://x:4222"));
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get(flotilla_api::telemetry::LOG_FORMAT_ENV), Some("json"));
        assert_eq!(get(env::CONTROL_ADDR), Some("127.0.0.1:7070"));
        assert_eq!(get(env::EVENTS), Some("nats://x:4222"));
        assert_eq!(get(env::TOKEN), Some("t"));
    }

    #[test]
    fn the_public_url_is_the_manifests_or_the_gateways_address() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(public_url(None, at("127.0.0.1:18080"), false), "http://localhost:18080");
        assert_eq!(public_url(None, at("0.0.0.0:8443"), true), "https://localhost:8443");
        assert_eq!(public_url(None, at("10.1.2.3:80"), false), "http://10.1.2.3:80");
        assert_eq!(
            public_url(Some("https://shop.example.com"), at("127.0.0.1:8080"), false),
            "https://shop.example.com"
        );
    }
}
