//! One shape for every service process: an [`App`] says what it is called, who may call it,
//! what configuration it runs on and how it builds its routes; [`run`] does the rest in one
//! order every service shares — workload certificate first (so every client made after speaks
//! mTLS), telemetry, discovery, live configuration, the app's own start, then serving,
//! registering and heartbeating; on shutdown it deregisters, drains, and stops the app's
//! background [`Tasks`] together.
//!
//! A whole service binary is then:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     flotilla::app::main::<reviews::Reviews>()
//! }
//! ```

mod tasks;

pub use tasks::Tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{TrustedIssuer, Verifier};
use crate::client::ClientConfig;
use crate::config::{ConfigClient, ConfigError, ConfigLoader, LiveConfig};
use crate::discovery::{Discovery, RegistryClient};
use crate::events::{EventsClient, EventsError};
use crate::mtls::{MtlsError, Workload};
use crate::runtime::{self, Context, RuntimeError, Service, ServiceEnv};
use crate::saga::{Saga, SagaEndpoint, SagaRunner, SagaStore};
use crate::store::{Store, StoreError};
use tokio::net::TcpListener;

/// How long background tasks get to end once the server has drained.
const TASKS_STOP_WITHIN: Duration = Duration::from_secs(3);

/// What [`App::start`] answers: the service's routes, or why it cannot start.
pub type Started = Result<Router, AppError>;

/// The `migrations` folder beside the calling crate's `Cargo.toml`, for
/// [`Setup::store_from`]: `setup.store_from(flotilla::migrations!())`.
#[macro_export]
macro_rules! migrations {
    () => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")
    };
}

/// A service: its name and callers, its configuration type, and how it starts.
pub trait App: Send + Sized + 'static {
    /// Its name in the registry, in routes (`service = "…"`), in config scopes and in its
    /// workload certificate.
    const NAME: &'static str;
    /// Its version, as registered (`env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// The services that may call it over mTLS (the config key `callers` replaces the list
    /// live). Only the gateway unless told: deny by default.
    const CALLERS: &'static [&'static str] = runtime::DEFAULT_CALLERS;
    /// Its typed configuration, followed live in its config scope ([`NoConfig`] for none).
    type Config: Settings;

    /// Builds the routes: open the store, make clients, spawn background work on
    /// `setup.tasks()`. Runs once, before the instance listens or registers.
    fn start(setup: &Setup<Self::Config>) -> impl Future<Output = Started> + Send;
}

/// A configuration a service runs on: serialisable (its defaults are the key list, so an
/// unknown key in the store is refused) and checked before it is run.
pub trait Settings: Serialize + DeserializeOwned + Default + Send + Sync + 'static {
    /// Whether the store is followed at all ([`NoConfig`] skips the watch).
    const LIVE: bool = true;

    /// Why this configuration may not be run; a refused revision keeps the last good one.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The configuration of a service that has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NoConfig {}

impl Settings for NoConfig {
    const LIVE: bool = false;
}

/// What an [`App`] starts with.
pub struct Setup<C> {
    name: &'static str,
    env: ServiceEnv,
    context: Context,
    config: LiveConfig<C>,
    tasks: Tasks,
    /// The saga kinds the instance serves to the control plane.
    sagas: SagaEndpoint,
}

impl<C: Send + Sync + 'static> Setup<C> {
    /// What the environment told the process (control plane, data dir, instance name, zone).
    pub fn env(&self) -> &ServiceEnv {
        &self.env
    }

    /// Calls to other services: `setup.context().client("catalog")`, with discovery,
    /// balancing, breaker, retry budget, deadlines and trace propagation.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The service's configuration, as it is now and as it changes.
    pub fn config(&self) -> &LiveConfig<C> {
        &self.config
    }

    /// Where background work goes: stopped and awaited with the process.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The service's own database, migrated: `DATABASE_URL`, else an SQLite file in its data
    /// dir (private to its owner).
    pub async fn store(&self, migrator: &sqlx::migrate::Migrator) -> Result<Store, AppError> {
        let url = Store::url_for(self.name, &self.env.data_dir)?;
        Ok(Store::open(&url, migrator).await?)
    }

    /// [`Setup::store`] with the migrations read from a folder at start (`0001_init.sql`, …),
    /// for a service that does not embed them with `sqlx::migrate!`.
    pub async fn store_from(&self, migrations: impl AsRef<Path>) -> Result<Store, AppError> {
        let url = Store::url_for(self.name, &self.env.data_dir)?;
        Ok(Store::open_dir(&url, migrations.as_ref()).await?)
    }

    /// The events backend the environment names (NATS JetStream, or the control plane's log).
    pub async fn events(&self) -> Result<EventsClient, AppError> {
        EventsClient::for_service(&self.env)
            .await
            .map_err(|source| AppError::Events {
                backend: self
                    .env
                    .events
                    .clone()
                    .unwrap_or_else(|| "the control plane's log".to_owned()),
                source,
            })
    }

    /// A runner of `saga`'s instances in `store`, served to the control plane for the
    /// dashboard (see [`Setup::serve_sagas`]). Spawn its `run` on [`Setup::tasks`].
    pub fn saga_runner<S>(&self, saga: Saga<S>, store: SagaStore) -> SagaRunner<S>
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let runner = SagaRunner::new(saga, store);
        self.serve_sagas(&runner);
        runner
    }

    /// Serves `runner`'s instances — where each is, its steps' history and errors, not its
    /// state — at `/flotilla/sagas` to the control plane only, over mTLS
    /// ([`crate::saga::endpoint`]); the registration names its kind, so the dashboard asks.
    pub fn serve_sagas<S>(&self, runner: &SagaRunner<S>)
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.sagas.register(runner);
    }

    /// A verifier of `issuer`'s tokens that needs every one of `scopes` (and one of `roles`,
    /// if any): the state a [`crate::auth::Caller`] extractor checks against. Key sets named
    /// `service://…` are found through discovery.
    pub fn verifier(&self, issuer: &TrustedIssuer, scopes: &[&str], roles: &[&str]) -> Verifier {
        issuer.verifier(self.context.discovery(), scopes, roles)
    }
}

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The workload certificate could not be taken from the control plane.
    #[error("taking this instance's workload certificate from the control plane at {control}: {source}")]
    Identity {
        /// The control plane's address.
        control: String,
        /// Why.
        #[source]
        source: MtlsError,
    },
    /// The local configuration layers (defaults, environment) are bad.
    #[error("{service}'s configuration: {source}")]
    Config {
        /// The service.
        service: &'static str,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// The service's database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query failed while starting.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The events backend could not be reached.
    #[error("connecting to the events backend ({backend}): {source}")]
    Events {
        /// The backend's URL or name.
        backend: String,
        /// Why.
        #[source]
        source: EventsError,
    },
    /// The listener could not be bound.
    #[error("{}", bind_message(addr, flag, source))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The flag or variable that chose it.
        flag: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] RuntimeError),
    /// The app's own start failed.
    #[error("{what}: {source}")]
    Start {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
}

fn bind_message(addr: &SocketAddr, flag: &str, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "port {} is already in use ({addr}); choose another with {flag}",
            addr.port()
        )
    } else {
        format!("cannot listen on {addr} ({flag}): {source}")
    }
}

impl AppError {
    /// The app's own start failed while doing `what`.
    pub fn start(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Start {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Runs `A` on `listener` until `shutdown` resolves. The caller binds (a free loopback port
/// unless told otherwise: services are found through the registry, see [`bind`]); the
/// listener's backlog holds early connections until the app has started, and nobody is told
/// of the address before it serves.
pub async fn run<A: App>(listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
    let env = ServiceEnv::from_env();
    // First: the telemetry exporter and every client made after speak mTLS with it.
    let identity = identity(&env).await?;
    let _telemetry = crate::telemetry::init(crate::telemetry::TelemetryConfig::from_env(A::NAME, &env));
    announce(identity.as_ref());
    let tasks = Tasks::new();
    let result = serve::<A>(env, listener, &tasks, shutdown).await;
    tasks.stop(TASKS_STOP_WITHIN).await;
    result
}

async fn serve<A: App>(
    env: ServiceEnv,
    listener: TcpListener,
    tasks: &Tasks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    let mut client = ClientConfig::default();
    client.balance.local_zone = env.zone.clone();
    let discovery = env
        .control_addr
        .as_ref()
        .map(|control| Discovery::spawn(RegistryClient::new(control, env.token.clone()), tasks.stopped()));
    let context = Context::with_discovery(discovery, client);
    let config = live_config::<A::Config>(A::NAME, &env, tasks).await?;
    let setup = Setup {
        name: A::NAME,
        env,
        context,
        config,
        tasks: tasks.clone(),
        sagas: SagaEndpoint::default(),
    };
    let router = A::start(&setup).await?;
    let Setup {
        env,
        context,
        config,
        sagas,
        ..
    } = setup;
    let mut service = Service::new(A::NAME, A::VERSION)
        .callers(A::CALLERS.iter().copied())
        .env(env)
        .context(context)
        .router(router);
    if !sagas.is_empty() {
        service = service
            .metadata(crate::saga::endpoint::METADATA_KEY, sagas.kinds().join(","))
            .platform(sagas.router());
    }
    if <A::Config as Settings>::LIVE {
        service = service.config(&config);
    }
    service.run(listener, shutdown).await?;
    Ok(())
}

/// Binds where a process listens: `addr`, or a free loopback port when `None`. `flag` names
/// the setting that chose the address, so a taken port says what to change.
pub async fn bind(addr: Option<SocketAddr>, flag: &str) -> Result<TcpListener, AppError> {
    let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind {
        addr,
        flag: flag.to_owned(),
        source,
    })
}

/// The process's workload certificate, when the supervisor set mTLS up (`FLOTILLA_CA_FILE`).
pub async fn identity(env: &ServiceEnv) -> Result<Option<Workload>, AppError> {
    crate::mtls::enroll_from_env(env.control_addr.as_deref(), env.token.as_deref())
        .await
        .map_err(|source| AppError::Identity {
            control: env.control_addr.clone().unwrap_or_else(|| "(none)".to_owned()),
            source,
        })
}

/// Says, once logging is up, which identity the process speaks mTLS with.
pub fn announce(identity: Option<&Workload>) {
    if let Some(workload) = identity {
        let not_after = humantime::format_rfc3339_seconds(workload.not_after());
        tracing::info!(service = %workload.service(), %not_after, "workload certificate issued: mTLS with every Flotilla peer");
    }
}

/// The service's live configuration: defaults, `<SERVICE>_*` environment variables, then the
/// control plane's store when there is one (waiting up to a second for its first answer, so
/// an instance starts on the fleet's configuration rather than switching to it).
async fn live_config<C: Settings>(
    service: &'static str,
    env: &ServiceEnv,
    tasks: &Tasks,
) -> Result<LiveConfig<C>, AppError> {
    if !C::LIVE {
        return Ok(LiveConfig::fixed(C::default()));
    }
    let client = env
        .control_addr
        .as_deref()
        .map(|addr| ConfigClient::new(addr, env.token.clone()));
    let live = ConfigLoader::<C>::new(service)
        .validate(C::validate)
        .start(client, tasks.stopped())
        .map_err(|source| AppError::Config { service, source })?;
    live.ready(Duration::from_secs(1)).await;
    Ok(live)
}

/// A service run to its end, boxed so that a table can hold services of different types.
type Running = Pin<Box<dyn Future<Output = Result<(), AppError>> + Send>>;

/// One service a binary can run, by name: what a table of built-in services holds.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The service's name.
    pub name: &'static str,
    run: fn(TcpListener) -> Running,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The table entry of `A`.
pub const fn entry<A: App>() -> Entry {
    Entry {
        name: A::NAME,
        run: run_until_signal::<A>,
    }
}

fn run_until_signal<A: App>(listener: TcpListener) -> Running {
    Box::pin(run::<A>(listener, runtime::shutdown_signal()))
}

impl Entry {
    /// Runs the service on `listener` until SIGTERM, Ctrl-C or its supervisor's end.
    pub async fn run(&self, listener: TcpListener) -> Result<(), AppError> {
        (self.run)(listener).await
    }
}

/// A service binary's whole `main`: `--listen ADDR` (or `FLOTILLA_LISTEN`), the rest from the
/// environment the supervisor (or a Kubernetes Deployment) sets; runs until SIGTERM or Ctrl-C.
/// Errors are one line on stderr and exit status 1.
pub fn main<A: App>() -> std::process::ExitCode {
    crate::data_dir::restrict_new_files();
    let listen = match listen_from(std::env::args().skip(1), std::env::var(flotilla_api::env::LISTEN).ok()) {
        Ok(listen) => listen,
        Err(err) => {
            eprintln!("error: {err}\nusage: {} [--listen ADDR]", A::NAME);
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let listener = bind(listen, "--listen").await?;
        run::<A>(listener, runtime::shutdown_signal()).await
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--listen ADDR` / `--listen=ADDR` from the arguments, else the variable.
fn listen_from(args: impl Iterator<Item = String>, var: Option<String>) -> Result<Option<SocketAddr>, AppError> {
    let parse = |text: &str| {
        text.parse::<SocketAddr>()
            .map(Some)
            .map_err(|_| AppError::Usage(format!("`{text}` is not an address to listen on (ip:port)")))
    };
    let mut args = args.peekable();
    let mut listen = None;
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--listen=") {
            listen = parse(value)?;
        } else if arg == "--listen" {
            let value = args
                .next()
                .ok_or_else(|| AppError::Usage("--listen needs an address".into()))?;
            listen = parse(&value)?;
        } else {
            return Err(AppError::Usage(format!("unexpected argument `{arg}`")));
        }
    }
    match (listen, var.filter(|v| !v.is_empty())) {
        (Some(addr), _) => Ok(Some(addr)),
        (None, Some(var)) => parse(&var),
        (None, None) => Ok(None),
    }
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests;
