//! Where the control plane keeps its state: on its own (SQLite files in its data dir, one
//! process), or on NATS JetStream, so that any number of replicas share it and none keeps
//! state of its own (Linkerd's destination controller: stateless, fed by a watch).
//!
//! On NATS the registry's leases live in a replicated key-value bucket whose entries expire
//! after the TTL (the server writes an expiry marker every watcher sees), config revisions in
//! a stream (revision = sequence), applied reports in a bucket. The health of the store is
//! watched: a replica that cannot reach a JetStream leader keeps answering reads from what it
//! watched, marked stale, and refuses writes with 503 until the store is whole again.

pub mod server;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::jetstream::kv;
use flotilla::utoipa::{self, ToSchema};
use tokio::sync::watch;

/// The oldest NATS server with per-message TTLs and expiry markers (`allow_msg_ttl`,
/// `subject_delete_marker_ttl`), which lease expiry relies on.
pub const MIN_NATS_VERSION: (u32, u32) = (2, 11);

/// The bucket replicas write their health marks in.
const HEALTH_BUCKET: &str = "flotilla-health";

/// How long a JetStream request may take before the store is called unavailable: a write
/// without quorum fails in this time rather than the client's default of five seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Which store the control plane runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// SQLite files in the data dir and the registry in memory: one process.
    Embedded,
    /// A NATS JetStream cluster.
    Nats(NatsSpec),
}

/// A NATS JetStream cluster to keep state in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSpec {
    /// Seed servers (`nats://host:port`); the client learns the rest of the cluster from them.
    pub servers: Vec<String>,
    /// Copies of every bucket and stream (R3 on a three-node cluster).
    pub replicas: usize,
}

/// Why a store description or the store itself failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `--store` text is not one the control plane knows.
    #[error("--store `{text}`: {reason}")]
    Spec {
        /// What was given.
        text: String,
        /// Why it is refused.
        reason: String,
    },
    /// The NATS servers could not be reached.
    #[error("connecting to NATS at {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// Why.
        reason: String,
    },
    /// The server is older than the features the store needs.
    #[error("NATS server {version} at {server} is too old: cluster mode needs nats-server ≥ {}.{} (per-message TTLs and expiry markers)", MIN_NATS_VERSION.0, MIN_NATS_VERSION.1)]
    TooOld {
        /// The server's address.
        server: String,
        /// Its version.
        version: String,
    },
    /// The store cannot take a write now (no JetStream leader: quorum lost, or a timeout).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered something it should not have.
    #[error("the store: {0}")]
    Other(String),
}

impl FromStr for StoreSpec {
    type Err = StoreError;

    /// `embedded`, or `nats://h1:4222,h2:4222,h3:4222` (each part may carry its own scheme),
    /// optionally ending in `?replicas=N` (by default as many as servers, at most 3).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: &str| StoreError::Spec {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "embedded" {
            return Ok(Self::Embedded);
        }
        let rest = trimmed
            .strip_prefix("nats://")
            .ok_or_else(|| refuse("expected `embedded` or `nats://host:port[,host:port…]`"))?;
        let (hosts, query) = match rest.split_once('?') {
            Some((hosts, query)) => (hosts, Some(query)),
            None => (rest, None),
        };
        let mut servers = Vec::new();
        for part in hosts.split(',') {
            let host = part.trim().trim_start_matches("nats://").trim_end_matches('/');
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(refuse(&format!("`{part}` is not a `host:port`")));
            }
            servers.push(format!("nats://{host}"));
        }
        let mut replicas = servers.len().clamp(1, 3);
        if let Some(query) = query {
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("replicas", n)) => {
                        replicas = n
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=5).contains(n))
                            .ok_or_else(|| refuse("`replicas` is a number from 1 to 5"))?;
                    }
                    _ => return Err(refuse(&format!("unknown option `{pair}` (known: `replicas`)"))),
                }
            }
        }
        Ok(Self::Nats(NatsSpec { servers, replicas }))
    }
}

/// Whether the store answers, as a replica last saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded`, or `nats`.
    pub kind: &'static str,
    /// The store takes writes (a JetStream leader answered the last check).
    pub quorum: bool,
    /// When that last changed (milliseconds since the epoch).
    pub since_ms: u64,
    /// When quorum last came back after an outage (milliseconds since the epoch): leases that
    /// ran out just after could not have been renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_ms: Option<u64>,
    /// Why the last check failed, while it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The servers the replica is connected through.
    pub servers: Vec<String>,
    /// The server this replica is connected to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_to: Option<String>,
    /// The copies every bucket and stream keeps.
    pub replicas: usize,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StoreHealth {
    /// The embedded store is whole while the process runs.
    pub fn embedded() -> Self {
        Self {
            kind: "embedded",
            quorum: true,
            since_ms: now_ms(),
            recovered_ms: None,
            error: None,
            servers: Vec::new(),
            connected_to: None,
            replicas: 1,
        }
    }
}

/// A connection to the NATS cluster the control plane keeps its state in.
#[derive(Clone, Debug)]
pub struct Nats {
    client: async_nats::Client,
    /// The JetStream context every bucket and stream is reached through.
    pub jetstream: jetstream::Context,
    /// Copies every bucket and stream keeps.
    pub replicas: usize,
    spec: NatsSpec,
    health: watch::Sender<StoreHealth>,
}

/// Parses `2.15.1` (or `2.11.0-RC.1`) into `(2, 15)`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl Nats {
    /// Connects to the cluster (any reachable seed will do; the client reconnects to the others
    /// on its own) and checks the server is new enough for lease expiry.
    pub async fn connect(spec: &NatsSpec) -> Result<Self, StoreError> {
        let servers = spec.servers.join(",");
        let client = async_nats::ConnectOptions::new()
            .name("flotilla-control")
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Never give up: a replica outlives a cluster restart and picks up where it was.
            .max_reconnects(None)
            .connect(spec.servers.as_slice())
            .await
            .map_err(|e| StoreError::Connect {
                servers: servers.clone(),
                reason: e.to_string(),
            })?;
        let info = client.server_info();
        if major_minor(&info.version).is_none_or(|v| v < MIN_NATS_VERSION) {
            return Err(StoreError::TooOld {
                server: format!("{}:{}", info.host, info.port),
                version: info.version,
            });
        }
        if !info.jetstream {
            return Err(StoreError::Connect {
                servers,
                reason: "the server runs without JetStream (start it with `-js`)".into(),
            });
        }
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        let health = watch::Sender::new(StoreHealth {
            kind: "nats",
            quorum: true,
            since_ms: now_ms(),
            recovered_ms: None,
            error: None,
            servers: spec.servers.clone(),
            connected_to: Some(format!("{}:{}", info.host, info.port)),
            replicas: spec.replicas,
        });
        Ok(Self {
            client,
            jetstream,
            replicas: spec.replicas,
            spec: spec.clone(),
            health,
        })
    }

    /// A fresh inbox subject, for a push consumer's deliveries.
    pub fn jetstream_inbox(&self) -> String {
        self.client.new_inbox()
    }

    /// The store's health as last checked.
    pub fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.subscribe()
    }

    /// Records the outcome of a write or a check: a failure for want of a leader turns the
    /// store degraded at once (not only at the next check), a success whole again.
    pub(crate) fn observe(&self, outcome: Result<(), &str>) {
        let info = self.client.server_info();
        let connected_to = (self.client.connection_state() == async_nats::connection::State::Connected)
            .then(|| format!("{}:{}", info.host, info.port));
        self.health.send_if_modified(|health| {
            let quorum = outcome.is_ok();
            let error = outcome.err().map(str::to_owned);
            let changed = health.quorum != quorum || health.connected_to != connected_to;
            if health.quorum != quorum {
                health.since_ms = now_ms();
                if quorum {
                    health.recovered_ms = Some(health.since_ms);
                    tracing::info!(servers = ?self.spec.servers, "the store has quorum again: writes are taken");
                } else {
                    tracing::warn!(
                        error = error.as_deref().unwrap_or(""),
                        "the store lost quorum: reads are served from the watched cache, writes refused"
                    );
                }
            }
            health.quorum = quorum;
            health.error = error;
            health.connected_to = connected_to;
            changed
        });
    }

    /// Opens a bucket, making it if missing; tries for a while, since a cluster that has
    /// just started may not have elected its JetStream leader yet.
    pub async fn bucket(&self, config: kv::Config) -> Result<kv::Store, StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let opened = match self.jetstream.get_key_value(config.bucket.clone()).await {
                Ok(kv) => Ok(kv),
                Err(_) => self
                    .jetstream
                    .create_key_value(config.clone())
                    .await
                    .map_err(|e| e.to_string()),
            };
            match opened {
                Ok(kv) => return Ok(kv),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Unavailable(format!(
                        "opening bucket {}: {e}",
                        config.bucket
                    )))
                }
                Err(e) => {
                    tracing::debug!(bucket = %config.bucket, error = %e, "bucket not open yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Writes this replica's mark into the replicated bucket `flotilla-health` every half
    /// second, until `stop`, and keeps [`Nats::health`] true to the outcome: a write needs a
    /// JetStream leader and a quorum of copies, which is exactly what "takes writes" means
    /// (a lone node may still answer questions about a stream it cannot write to).
    pub async fn run_health_checks(&self, replica: &str, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let opened = tokio::select! {
            _ = &mut stop => return,
            opened = self.bucket(kv::Config {
                bucket: HEALTH_BUCKET.into(),
                description: "Flotilla control-plane replicas' health marks".into(),
                history: 1,
                max_age: Duration::from_secs(60),
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            }) => opened,
        };
        let bucket = match opened {
            Ok(bucket) => bucket,
            Err(e) => {
                self.observe(Err(&e.to_string()));
                return;
            }
        };
        let key: String = replica
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let mark = bytes::Bytes::from(now_ms().to_string());
            match tokio::time::timeout(REQUEST_TIMEOUT, bucket.put(key.as_str(), mark)).await {
                Ok(Ok(_)) => self.observe(Ok(())),
                Ok(Err(e)) => self.observe(Err(&format!("a health write: {e}"))),
                Err(_) => self.observe(Err("a health write: no acknowledgement from a JetStream leader")),
            }
        }
    }

    /// Whether writes are taken now.
    pub fn has_quorum(&self) -> bool {
        self.health.borrow().quorum
    }

    /// An error of a write, sorted: a timeout or a missing leader is [`StoreError::Unavailable`]
    /// (and marks the store degraded); anything else is the store's answer.
    pub(crate) fn failed(&self, what: &str, err: impl std::fmt::Display) -> StoreError {
        let text = format!("{what}: {err}");
        let lowered = text.to_ascii_lowercase();
        let unavailable = [
            "timed out",
            "timeout",
            "no responders",
            "not available",
            "no leader",
            "unavailable",
            "disconnected",
            "connection",
            "broken pipe",
        ]
        .iter()
        .any(|needle| lowered.contains(needle));
        if unavailable {
            self.observe(Err(&text));
            StoreError::Unavailable(text)
        } else {
            StoreError::Other(text)
        }
    }
}

/// How long a client refused for want of quorum should wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The answer to a write the store cannot take now: 503, to which the API adds `Retry-After`
/// ([`RETRY_AFTER_SECONDS`]), so clients back off and try again (every replica answers the
/// same until quorum returns).
pub fn unavailable(reason: impl Into<String>) -> flotilla_api::Problem {
    flotilla_api::Problem::new(503, "store-unavailable", "The store cannot take writes now").with_detail(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_embedded_or_a_list_of_nats_servers() {
        assert_eq!("embedded".parse::<StoreSpec>().unwrap(), StoreSpec::Embedded);
        assert_eq!(
            "nats://h1:4222,h2:4222,nats://h3:4223".parse::<StoreSpec>().unwrap(),
            StoreSpec::Nats(NatsSpec {
                servers: vec![
                    "nats://h1:4222".into(),
                    "nats://h2:4222".into(),
                    "nats://h3:4223".into()
                ],
                replicas: 3,
            })
        );
        let StoreSpec::Nats(one) = "nats://127.0.0.1:4222".parse::<StoreSpec>().unwrap() else {
            panic!("not nats");
        };
        assert_eq!(one.replicas, 1);
        let StoreSpec::Nats(r) = "nats://a:1,b:2?replicas=1".parse::<StoreSpec>().unwrap() else {
            panic!("not nats");
        };
        assert_eq!(r.replicas, 1);
        for bad in [
            "redis://h:1",
            "nats://h",
            "nats://h:port",
            "nats://a:1?replicas=9",
            "nats://a:1?x=1",
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn versions_are_compared_by_major_and_minor() {
        assert_eq!(major_minor("2.15.1"), Some((2, 15)));
        assert_eq!(major_minor("v2.11.0-RC.1"), Some((2, 11)));
        assert!(major_minor("2.9.10").is_some_and(|v| v < MIN_NATS_VERSION));
        assert_eq!(major_minor("x"), None);
    }
}

/// A one-node JetStream server of the test's own (on free ports, in a temporary directory)
/// and a store connected to it: the NATS half of every suite that runs on both stores.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use super::server::{self, LocalCluster};
    use super::{Nats, NatsSpec};

    /// The server (killed when dropped), its directory, and the connected store.
    pub(crate) struct TestStore {
        pub(crate) nats: Nats,
        pub(crate) cluster: LocalCluster,
        _dir: tempfile::TempDir,
    }

    /// Starts a cluster of `size` nodes and connects to it. Fails the test, naming what is
    /// missing, when no nats-server ≥ 2.11 is found or can be installed.
    pub(crate) async fn nats(size: usize) -> TestStore {
        let binary = server::find_or_install().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = LocalCluster::start(&binary, dir.path(), size).unwrap_or_else(|e| panic!("{e}"));
        cluster
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let spec = NatsSpec {
            servers: cluster.urls(),
            replicas: size.min(3),
        };
        let nats = Nats::connect(&spec).await.unwrap_or_else(|e| panic!("{e}"));
        TestStore {
            nats,
            cluster,
            _dir: dir,
        }
    }

    impl TestStore {
        /// Another replica's connection to the same store.
        pub(crate) async fn replica(&self) -> Nats {
            let spec = NatsSpec {
                servers: self.cluster.urls(),
                replicas: self.nats.replicas,
            };
            Nats::connect(&spec).await.unwrap_or_else(|e| panic!("{e}"))
        }
    }
}

/// A PostgreSQL database of the test's own, on the machine's server (or the one
/// `FLOTILLA_TEST_POSTGRES` names), dropped with it.
#[cfg(test)]
pub(crate) mod test_postgres {
    use sqlx::Connection;

    /// The database; dropped (its connections closed first) when this is.
    pub(crate) struct TestPostgres {
        pub(crate) url: String,
        admin: String,
        name: String,
    }

    impl TestPostgres {
        /// Makes an empty database whose name says `what` it is for.
        pub(crate) async fn create(what: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let server = std::env::var("FLOTILLA_TEST_POSTGRES")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
            let server = server.trim_end_matches('/').to_owned();
            let name = format!(
                "flotilla_test_{what}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            );
            let admin = format!("{server}/postgres");
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (the tests need it): {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
            Self {
                url: format!("{server}/{name}"),
                admin,
                name,
            }
        }
    }

    impl Drop for TestPostgres {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // Its own runtime on its own thread: drop may run inside a test's runtime.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}
