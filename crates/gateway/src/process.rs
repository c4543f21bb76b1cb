//! The gateway as a process: workload certificate, telemetry, discovery, routes (from a file
//! or the config store), the public and admin listeners, registration, and one set of
//! background tasks stopped with it. The binary binds and calls [`run`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla::api::registry::meta;
use flotilla::app::{AppError, Tasks};
use flotilla::discovery::{Discovery, RegistryClient};
use flotilla::runtime::{self, Registrar, ServiceEnv};
use tokio::net::TcpListener;

use crate::forwarded::TrustedProxies;
use crate::routes::{BuildError, RouteTable, Upstreams};
use crate::tls::{Tls, TlsError, TlsFiles};
use crate::{Gateway, GatewayConfig};

/// How the gateway process runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A routes file, watched for changes; without it the routes come from the control
    /// plane's config store (`gateway/routes`).
    pub routes: Option<PathBuf>,
    /// The control plane (registry, config store); `None` runs standalone from the file.
    pub control_addr: Option<String>,
    /// Terminate TLS with these files (reloaded when they change).
    pub tls: Option<TlsFiles>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Identity, listeners, serving: what every process shares.
    #[error(transparent)]
    Process(#[from] AppError),
    /// The routes file is unreadable or wrong (its file and line).
    #[error(transparent)]
    RoutesFile(#[from] flotilla::config::FileError),
    /// A route cannot be built.
    #[error("{file}: {source}")]
    Routes {
        /// The routes file.
        file: String,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// The routes in the config store cannot be followed.
    #[error("the gateway's routes from the config store: {0}")]
    Store(#[from] flotilla::config::ConfigError),
    /// The TLS certificate or key is unusable.
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] TlsError),
    /// Neither a routes file nor a control plane was given.
    #[error("give the gateway --routes FILE or --control-addr ADDR")]
    NoRoutes,
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves on `listener` (and the admin endpoints on `admin`) until `shutdown`, then
/// deregisters, drains and stops its background tasks.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let env = ServiceEnv::from_env();
    let identity = flotilla::app::identity(&env).await?;
    let mut telemetry = flotilla::telemetry::TelemetryConfig::from_env("gateway", &env);
    // Requests enter here: the tail rule keeps the failed and slow ones.
    telemetry.sampling = telemetry.sampling.with_tail_from_env();
    let _telemetry = flotilla::telemetry::init(telemetry);
    flotilla::app::announce(identity.as_ref());
    let tasks = Tasks::new();
    let served = serve(listener, admin, options, env, &tasks, shutdown).await;
    tasks.stop(Duration::from_secs(3)).await;
    served
}

async fn serve(
    listener: TcpListener,
    admin: TcpListener,
    options: Options,
    env: ServiceEnv,
    tasks: &Tasks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let tls = options.tls.as_ref().map(Tls::load).transpose()?;
    let discovery = options
        .control_addr
        .as_deref()
        .map(|addr| Discovery::spawn(RegistryClient::new(addr, env.token.clone()), tasks.stopped()));
    let upstreams = Upstreams::new(discovery.clone(), env.zone.clone());
    // From a file: it must be right at start. From the store: the table it holds.
    let table = match &options.routes {
        Some(routes) => {
            RouteTable::build(RouteTable::load(routes)?, &upstreams).map_err(|source| RunError::Routes {
                file: routes.display().to_string(),
                source,
            })?
        }
        None => RouteTable::new(Vec::new()),
    };
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let admin_addr = admin.local_addr().map_err(RunError::Serve)?;
    if let (Some(tls), Some(files)) = (&tls, options.tls.clone()) {
        tasks.spawn(
            "certificate reload",
            tls.clone().watch(files, Duration::from_secs(1), tasks.stopped()),
        );
    }
    let config = GatewayConfig {
        tls,
        trusted_proxies: options.trusted_proxies,
        ..Default::default()
    };
    let gateway = Gateway::new(table, discovery, config);
    let admin_gateway = gateway.clone();
    let admin_stopped = tasks.stopped();
    tasks.spawn("admin listener", async move {
        if let Err(err) = crate::serve_admin(admin, admin_gateway, admin_stopped).await {
            tracing::error!(error = %err, "the admin listener failed");
        }
    });
    let (source, live) = match (&options.routes, options.control_addr.as_deref()) {
        (Some(routes), _) => {
            tasks.spawn(
                "routes file",
                crate::reload::watch(
                    gateway.clone(),
                    routes.clone(),
                    upstreams,
                    Duration::from_secs(1),
                    tasks.stopped(),
                ),
            );
            (routes.display().to_string(), None)
        }
        (None, Some(control)) => {
            let client = flotilla::config::ConfigClient::new(control, env.token.clone());
            let live = crate::reload::follow_store(gateway.clone(), client, upstreams, Duration::from_secs(5)).await?;
            ("the config store (gateway/routes)".to_owned(), Some(live))
        }
        (None, None) => return Err(RunError::NoRoutes),
    };
    let registrar = options.control_addr.as_deref().map(|control| {
        let client = RegistryClient::new(control, env.token.clone());
        let metadata = [
            (meta::METRICS_PATH.to_owned(), "/-/metrics".to_owned()),
            (meta::METRICS_ADDRESS.to_owned(), env.advertised_host(admin_addr)),
        ]
        .into();
        let registration = runtime::registration("gateway", env!("CARGO_PKG_VERSION"), addr, &env, metadata);
        if let Some(live) = &live {
            live.attach(&registration.instance_id);
        }
        Registrar::spawn(client, registration)
    });
    tracing::info!(%addr, admin = %admin_addr, routes = %source, standalone = registrar.is_none(), "gateway listening");
    let shutdown = async move {
        shutdown.await;
        if let Some(registrar) = registrar {
            registrar.deregister().await;
        }
    };
    crate::serve(listener, Arc::clone(&gateway), shutdown)
        .await
        .map_err(RunError::Serve)
}
