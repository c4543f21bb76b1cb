//! The control plane as a process: logging, its private data dir, the run marker (an unclean
//! stop warms the registry up for one TTL; embedded only), its storage (the data dir, or NATS), then [`crate::serve_with_tls`]. The
//! binary binds and calls [`run`].

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::{ControlConfig, RegistryConfig, RunMarker, Storage, StorageError, TraceStore};

/// How the control-plane process runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where its state lives (created private to its owner; one open to others is refused).
    pub data_dir: PathBuf,
    /// Heartbeat interval and lease TTL.
    pub registry: RegistryConfig,
    /// The operator's token: every credential derives from it.
    pub token: String,
    /// Where state lives: the data dir (embedded) or a NATS JetStream cluster, in which case
    /// the data dir holds only the keys (the CA's, the config sealing key) and traces.
    pub store: crate::store::StoreSpec,
    /// Where spans are kept: a PostgreSQL URL (every replica's), else the data dir.
    pub traces: Option<String>,
    /// On NATS: hold expiring leases when more than this share of the instances expire within
    /// one TTL (Eureka's self-preservation).
    pub preservation: crate::registry::Preservation,
    /// Where the keys are (`ca.key`, `ca.pem`, `config.key`) when not in the data dir.
    pub keys_dir: Option<PathBuf>,
    /// Where the supervised processes' log files are (`flotilla up` passes its
    /// `<data-dir>/logs`), for the dashboard's Logs view; none where processes log to stdout.
    pub logs_dir: Option<PathBuf>,
}

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--heartbeat`/`--ttl` do not fit together.
    #[error("--heartbeat/--ttl: {0}")]
    Registry(String),
    /// The data dir is unusable.
    #[error(transparent)]
    DataDir(#[from] flotilla::data_dir::DataDirError),
    /// The run marker could not be written.
    #[error("writing the run marker in {dir}: {source}")]
    Marker {
        /// The data dir.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The storage could not be opened.
    #[error("opening the control plane's storage in {dir}: {source}")]
    Storage {
        /// The data dir.
        dir: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves the API on `listener` (the operator's, Prometheus') and, when given, over mTLS on
/// `tls_listener` (the fleet's) until `shutdown`.
pub async fn run(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // The control plane logs but exports no spans: it is where spans go, and tracing its own
    // span intake would feed itself.
    let _telemetry = flotilla::telemetry::init(flotilla::telemetry::TelemetryConfig {
        endpoint: None,
        ..flotilla::telemetry::TelemetryConfig::from_env("control", &flotilla::runtime::ServiceEnv::from_env())
    });
    options.registry.validate().map_err(RunError::Registry)?;
    let data_dir = flotilla::data_dir::ensure_private(&options.data_dir)?;
    let dir = data_dir.display().to_string();
    let embedded = options.store == crate::store::StoreSpec::Embedded;
    // On a shared store the leases outlive any replica: there is nothing to warm up.
    let (marker, unclean) = match embedded {
        true => {
            let (marker, unclean) = RunMarker::acquire(&data_dir).map_err(|source| RunError::Marker {
                dir: dir.clone(),
                source,
            })?;
            (Some(marker), unclean)
        }
        false => (None, false),
    };
    let warm_up = if unclean { options.registry.ttl } else { Duration::ZERO };
    if unclean {
        tracing::warn!(
            ?warm_up,
            "the previous control plane did not stop cleanly; warming up while its instances re-register"
        );
    }
    let config = ControlConfig {
        registry: options.registry,
        token: options.token,
        warm_up,
    };
    let storage_config = crate::StorageConfig {
        keys_dir: options.keys_dir.clone(),
        ..Default::default()
    };
    let storage = match &options.store {
        crate::store::StoreSpec::Embedded => match &options.traces {
            None => Storage::open(&data_dir, storage_config).await,
            Some(url) => match TraceStore::on_postgres(url, Default::default()).await {
                Ok(traces) => Storage::open(&data_dir, storage_config)
                    .await
                    .map(|storage| Storage { traces, ..storage }),
                Err(e) => Err(e.into()),
            },
        },
        crate::store::StoreSpec::Nats(spec) => {
            tracing::info!(servers = ?spec.servers, replicas = spec.replicas, "keeping state in NATS JetStream");
            Storage::on_nats(
                spec,
                &data_dir,
                options.traces.as_deref(),
                options.registry,
                options.preservation,
                storage_config,
            )
            .await
        }
    }
    .map_err(|source| RunError::Storage { dir, source })?;
    crate::serve_with_logs(listener, tls_listener, config, storage, options.logs_dir, shutdown)
        .await
        .map_err(RunError::Serve)?;
    drop(marker);
    Ok(())
}
