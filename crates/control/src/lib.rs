//! The Flotilla control plane: the service registry (leases, heartbeats, blocking-query
//! watches), the config store (versioned, watched, secrets sealed), the event log and the
//! trace store (OTLP in, traces and the dependency graph out) behind a token-guarded HTTP API.

pub mod acl;
pub mod api;
pub mod ca;
pub mod config;
pub mod events;
pub mod process;
pub mod registry;
pub mod sagas;
pub mod store;
pub mod telemetry;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::ConfigStore;
pub use events::{EventLog, LogConfig};
pub use registry::{Registry, RegistryConfig};
pub use telemetry::{TraceStore, TraceStoreConfig};

/// Everything the control plane needs to start.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Lease timing for the registry.
    pub registry: RegistryConfig,
    /// The token that authorizes writes (`Authorization: Bearer <token>`).
    pub token: String,
    /// How long the registry warms up after starting: zero on a clean start, the lease TTL
    /// after a crash (see [`RunMarker`]), when instances of the previous run are coming back.
    pub warm_up: Duration,
}

/// A file in the data dir that exists while a control plane runs. Found at start, it means
/// the previous one did not stop cleanly: its instances are alive and will re-register, so
/// the registry warms up instead of answering "empty" with authority.
#[derive(Debug)]
pub struct RunMarker {
    path: std::path::PathBuf,
}

impl RunMarker {
    /// Creates the marker; returns it and whether an earlier one was left behind.
    pub fn acquire(data_dir: &std::path::Path) -> std::io::Result<(Self, bool)> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("control.running");
        let unclean = path.exists();
        std::fs::write(&path, std::process::id().to_string())?;
        Ok((Self { path }, unclean))
    }
}

impl Drop for RunMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Shared state of the running control plane.
pub struct ControlState {
    /// The service registry.
    pub registry: Registry,
    /// The config store.
    pub config: ConfigStore,
    /// The event log.
    pub events: EventLog,
    /// The trace store.
    pub traces: TraceStore,
    /// The certificate authority of workload identity.
    pub authority: ca::Authority,
    /// The NATS store the registry and config live in, when not embedded.
    pub nats: Option<store::Nats>,
    keyring: acl::Keyring,
    /// Where this control plane listens, when it knows: Prometheus service discovery lists it
    /// among the targets to scrape.
    listen: Option<SocketAddr>,
    /// Services speak to this control plane only over its mTLS listener: their credentials
    /// are refused on the plain one, which is left to the operator and readers.
    pub(crate) workloads_over_tls: bool,
    pub(crate) closing: watch::Receiver<bool>,
    /// Until then the registry is warming up: instances of a previous run are still
    /// re-registering, so its lists may be incomplete.
    warm_at: tokio::time::Instant,
    /// Where the supervised processes' log files are (`flotilla up`'s `<data-dir>/logs`), for
    /// the dashboard's Logs view; none on Kubernetes, where processes log to their stdout.
    logs_dir: Option<std::path::PathBuf>,
    /// The fleet's recent moves (joined, left, health), for the dashboard's overview.
    pub(crate) changes: ui::Changes,
    /// The instances' recent metrics, for the dashboard's RED figures.
    pub(crate) samples: ui::Samples,
}

/// The config key (scope `control`) listing the services that speak plain HTTP.
pub const PLAIN_SERVICES_KEY: &str = "plain_services";

impl ControlState {
    /// State for a control plane over an opened config store; `closing` turns true when it
    /// begins to shut down, which ends every blocking query at once.
    pub fn new(config: ControlConfig, storage: Storage, closing: watch::Receiver<bool>) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Self {
            warm_at: tokio::time::Instant::now() + config.warm_up,
            registry: storage
                .registry
                .unwrap_or_else(|| Registry::starting_at(config.registry, start)),
            nats: storage.nats,
            config: storage.config,
            events: storage.events,
            traces: storage.traces,
            authority: storage.authority,
            keyring: acl::Keyring::new(&config.token),
            listen: None,
            workloads_over_tls: false,
            closing,
            logs_dir: None,
            changes: ui::Changes::default(),
            samples: ui::Samples::default(),
        }
    }

    /// Records where the processes' log files are, so the dashboard can show them.
    pub fn with_logs_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.logs_dir = dir;
        self
    }

    /// Where the processes' log files are, when this control plane was told.
    pub fn logs_dir(&self) -> Option<&std::path::Path> {
        self.logs_dir.as_deref()
    }

    /// Records the address the control plane was bound to, so service discovery can offer
    /// its own `/metrics` to Prometheus next to the instances'.
    pub fn listening_on(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Takes services' credentials only over mTLS (the control plane has a TLS listener).
    pub fn workloads_over_tls(mut self) -> Self {
        self.workloads_over_tls = true;
        self
    }

    /// Whether `service` may speak over the plain listener though workloads use mTLS: a
    /// service written without the SDK (no certificate of its own, as a Python one), which
    /// the operator declared plain (`control/default/plain_services`, written by `up` from the
    /// manifest's `mtls = false`). Its credential still speaks only for it.
    pub fn plain_allowed(&self, service: &str) -> bool {
        let key =
            flotilla_api::config::ConfigKey::new("control", flotilla_api::config::DEFAULT_PROFILE, PLAIN_SERVICES_KEY);
        self.config
            .get(&key, config::Reveal::Masked)
            .ok()
            .filter(|entry| !entry.deleted)
            .and_then(|entry| entry.value.as_array().cloned())
            .is_some_and(|list| list.iter().any(|name| name.as_str() == Some(service)))
    }

    /// The address to scrape this control plane at: its listen address, with an unspecified
    /// IP (`0.0.0.0`, `::`) replaced by loopback, since that is no address to connect to.
    pub fn scrape_address(&self) -> Option<SocketAddr> {
        self.listen.map(|mut addr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            addr
        })
    }

    /// Resolves when the control plane begins to shut down (never, if nothing will tell it).
    pub(crate) async fn closing(&self) {
        let mut closing = self.closing.clone();
        if closing.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Time left in the warm-up (zero once warm).
    pub fn warming_for(&self) -> Duration {
        self.warm_at.saturating_duration_since(tokio::time::Instant::now())
    }

    /// The store's health: whether it takes writes, and since when.
    pub fn store_health(&self) -> store::StoreHealth {
        match &self.nats {
            Some(nats) => nats.health().borrow().clone(),
            None => store::StoreHealth::embedded(),
        }
    }

    /// Whether the store takes writes now (always, when embedded).
    pub fn has_quorum(&self) -> bool {
        self.nats.as_ref().is_none_or(store::Nats::has_quorum)
    }

    /// Whether the registry and config have caught up with the store (at once when embedded).
    pub fn synced(&self) -> bool {
        self.registry.synced() && self.config.synced()
    }

    /// Who a presented credential names, if it is one of this control plane's.
    pub fn identify(&self, presented: &str) -> Option<acl::Principal> {
        self.keyring.identify(presented)
    }

    /// The keys credentials, dashboard sessions and their CSRF tokens are signed with.
    pub(crate) fn keyring(&self) -> &acl::Keyring {
        &self.keyring
    }
}

/// One SQLite connection, kept for good, with `schema` applied: the control plane's stores
/// serialize their writes anyway, and an in-memory database (tests) exists per connection.
/// A file opens in WAL mode with `synchronous = FULL`; `None` opens a database in memory.
pub(crate) async fn sqlite(file: Option<&std::path::Path>, schema: &str) -> Result<sqlx::SqlitePool, sqlx::Error> {
    sqlite_with(file, schema, sqlx::sqlite::SqliteSynchronous::Full, 1).await
}

/// [`sqlite`] with a chosen durability and up to `connections` connections (a file only: an
/// in-memory database gets one, since each connection would see a database of its own).
pub(crate) async fn sqlite_with(
    file: Option<&std::path::Path>,
    schema: &str,
    synchronous: sqlx::sqlite::SqliteSynchronous,
    connections: u32,
) -> Result<sqlx::SqlitePool, sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let (options, connections) = match file {
        Some(file) => (
            SqliteConnectOptions::new()
                .filename(file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(Duration::from_secs(5))
                // 16 MiB of page cache per connection (the default is 2 MiB): an index page
                // a write touches is then seldom read back from the file — the trace store's
                // six indexes made those reads most of the cost of taking spans in.
                .pragma("cache_size", "-16384"),
            connections.max(1),
        ),
        None => (
            <SqliteConnectOptions as std::str::FromStr>::from_str("sqlite::memory:")?,
            1,
        ),
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(connections)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    if !schema.is_empty() {
        sqlx::raw_sql(schema).execute(&pool).await?;
    }
    Ok(pool)
}

/// What the control plane keeps: the config store, the event log and the trace store, in its
/// data dir or (the registry and config) on NATS.
pub struct Storage {
    /// The config store.
    pub config: ConfigStore,
    /// The event log.
    pub events: EventLog,
    /// The trace store.
    pub traces: TraceStore,
    /// The certificate authority of workload identity.
    pub authority: ca::Authority,
    /// The registry, when its leases live in a store; else the control plane keeps them in
    /// memory.
    pub registry: Option<Registry>,
    /// The NATS store, when there is one.
    pub nats: Option<store::Nats>,
}

/// How the stores that keep data by policy behave: the event log's groups and retention, the
/// trace store's bounds. `Default` is what `flotilla control` runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageConfig {
    /// Consumer groups and retention of the event log.
    pub events: LogConfig,
    /// Bounds of the trace store.
    pub traces: TraceStoreConfig,
    /// Where the keys are (`ca.key`, `ca.pem`, `config.key`) when not in the data dir: a
    /// mounted Secret, so every replica and every restart signs and seals with the same ones.
    pub keys_dir: Option<std::path::PathBuf>,
}

/// Why the control plane's storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The config store.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The event log.
    #[error(transparent)]
    Events(#[from] events::LogError),
    /// The trace store.
    #[error(transparent)]
    Traces(#[from] telemetry::TraceError),
    /// The certificate authority.
    #[error(transparent)]
    Authority(#[from] ca::CaError),
    /// The NATS store.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl Storage {
    /// All of it, in the data dir (`control.db`, `config.key`, `events.db`, `telemetry.db`,
    /// `ca.key`, `ca.pem`).
    /// The keys come from `config.keys_dir` when given.
    pub async fn open(data_dir: &std::path::Path, config: StorageConfig) -> Result<Self, StorageError> {
        let keys_dir = config.keys_dir.as_deref().unwrap_or(data_dir);
        Ok(Self {
            config: ConfigStore::open_with_keys(data_dir, keys_dir).await?,
            events: EventLog::open(data_dir, config.events).await?,
            traces: TraceStore::open(data_dir, config.traces).await?,
            authority: ca::Authority::load_or_create(keys_dir)?,
            registry: None,
            nats: None,
        })
    }

    /// The registry and config on the NATS cluster `spec`; the keys (the CA's, the config
    /// sealing key) from `config.keys_dir` (else `data_dir`), where a cluster's Secret is
    /// mounted — they never reach NATS. The event log on NATS JetStream streams; traces in the
    /// PostgreSQL database `traces` names (shared by every replica), else in `data_dir` (this
    /// replica's own).
    pub async fn on_nats(
        spec: &store::NatsSpec,
        data_dir: &std::path::Path,
        traces: Option<&str>,
        registry: RegistryConfig,
        preservation: registry::Preservation,
        config: StorageConfig,
    ) -> Result<Self, StorageError> {
        let keys_dir = config.keys_dir.as_deref().unwrap_or(data_dir);
        let nats = store::Nats::connect(spec).await?;
        let sealer = config::Sealer::from_file(&keys_dir.join("config.key")).map_err(config::ConfigError::from)?;
        Ok(Self {
            registry: Some(Registry::on_nats(registry, &nats, preservation).await?),
            config: ConfigStore::on_nats(&nats, sealer).await?,
            events: EventLog::on_nats(&spec.servers, config.events).await?,
            traces: match traces {
                Some(url) => TraceStore::on_postgres(url, config.traces).await?,
                None => TraceStore::open(data_dir, config.traces).await?,
            },
            authority: ca::Authority::load_or_create(keys_dir)?,
            nats: Some(nats),
        })
    }

    /// All of it in memory, for tests.
    pub async fn in_memory() -> Result<Self, StorageError> {
        Ok(Self {
            config: ConfigStore::in_memory().await?,
            events: EventLog::in_memory(LogConfig::default()).await?,
            traces: TraceStore::in_memory(TraceStoreConfig::default()).await?,
            authority: ca::Authority::ephemeral()?,
            registry: None,
            nats: None,
        })
    }
}

/// Serves the control plane on `listener` over `storage` (opened by the caller), until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: ControlConfig,
    storage: Storage,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, None, config, storage, shutdown).await
}

/// [`serve`], and on `tls_listener` the same API over mTLS with a certificate of its own CA
/// naming `spiffe://flotilla/control` (renewed at two thirds of its day). There a caller's
/// certificate is checked when presented, and must name the service its credential speaks
/// for; services' credentials are then refused on the plain listener.
pub async fn serve_with_tls(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    config: ControlConfig,
    storage: Storage,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_logs(listener, tls_listener, config, storage, None, shutdown).await
}

/// [`serve_with_tls`], told where the processes' log files are (`flotilla up`'s
/// `<data-dir>/logs`), which the dashboard's Logs view reads; without it the view says where
/// logs go instead.
pub async fn serve_with_logs(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    config: ControlConfig,
    storage: Storage,
    logs_dir: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut state = ControlState::new(config, storage, closing_rx.clone())
        .listening_on(addr)
        .with_logs_dir(logs_dir);
    let workload = match &tls_listener {
        Some(_) => {
            state = state.workloads_over_tls();
            Some(own_workload(&state.authority).map_err(std::io::Error::other)?)
        }
        None => None,
    };
    let state = Arc::new(state);
    // Background work stops together when the control plane begins to close; the servers end
    // by `closing` (which also ends blocking queries) so they can drain.
    let tasks = flotilla::app::Tasks::new();
    let until_closing = |mut closing: watch::Receiver<bool>| async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    tasks.spawn("event retention", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        async move { state.events.run_retention(stopped).await }
    });
    tasks.spawn("lease expiry", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        async move { state.registry.run_expiry(stopped).await }
    });
    tasks.spawn("membership changes", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        ui::watch_membership(state, stopped)
    });
    tasks.spawn("breaker turns", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        ui::watch_breakers(state, stopped)
    });
    tasks.spawn("instance metrics", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        ui::sample_metrics(state, stopped)
    });
    tasks.spawn("config follow", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        async move { state.config.run_follow(stopped).await }
    });
    if let Some(nats) = state.nats.clone() {
        tasks.spawn("store health", {
            let stopped = tasks.stopped();
            let replica = format!("{addr}-{}", std::process::id());
            async move { nats.run_health_checks(&replica, stopped).await }
        });
    }
    tasks.spawn("trace pruning", {
        let (state, stopped) = (state.clone(), tasks.stopped());
        async move { state.traces.run_pruning(stopped).await }
    });
    tracing::info!(%addr, "control plane listening");
    let tls_server = match (tls_listener, workload) {
        (Some(tls_listener), Some(workload)) => {
            tracing::info!(addr = %tls_listener.local_addr()?, "control plane listening for workloads (mTLS)");
            tasks.spawn("own certificate renewal", {
                let (state, workload) = (state.clone(), workload.clone());
                async move { renew_own(&state.authority, workload).await }
            });
            let config = workload.server_config(flotilla::mtls::Callers::anyone());
            Some(tokio::spawn(flotilla::http::serve(
                tls_listener,
                api::router(state.clone()),
                Some(config),
                until_closing(closing_rx.clone()),
            )))
        }
        _ => None,
    };
    let server = tokio::spawn(flotilla::http::serve(
        listener,
        api::router(state),
        None,
        until_closing(closing_rx.clone()),
    ));
    shutdown.await;
    tracing::info!("control plane shutting down");
    let _ = closing_tx.send(true);
    tasks.stop(Duration::from_secs(2)).await;
    if let Some(tls_server) = tls_server {
        let _ = tokio::time::timeout(Duration::from_secs(2), tls_server).await;
    }
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => Ok(()),
    }
}

/// The control plane's own certificate, from its own CA without a round trip.
fn issue_own(authority: &ca::Authority) -> Result<(ca::Issued, Vec<u8>), ca::CaError> {
    let (key, csr) = flotilla::mtls::key_and_csr().map_err(|e| ca::CaError::Signing(e.to_string()))?;
    let issued = authority.issue(flotilla_api::identity::CONTROL_SERVICE, &csr, ca::LEAF_LIFETIME)?;
    Ok((issued, key))
}

fn own_workload(authority: &ca::Authority) -> Result<flotilla::mtls::Workload, String> {
    let (issued, key) = issue_own(authority).map_err(|e| e.to_string())?;
    flotilla::mtls::Workload::new(&issued.certificate, key, &issued.ca, issued.not_after()).map_err(|e| e.to_string())
}

/// Renews the control plane's own certificate at two thirds of its life.
async fn renew_own(authority: &ca::Authority, workload: flotilla::mtls::Workload) {
    loop {
        let wait = workload
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        let renewed = issue_own(authority)
            .map_err(|e| e.to_string())
            .and_then(|(issued, key)| {
                workload
                    .renew(&issued.certificate, key, &issued.ca, issued.not_after())
                    .map_err(|e| e.to_string())
            });
        if let Err(err) = renewed {
            tracing::error!(error = %err, "renewing the control plane's certificate failed; trying again");
        }
    }
}
