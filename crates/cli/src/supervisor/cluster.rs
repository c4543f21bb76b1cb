//! `flotilla up --cluster`: cluster mode rehearsed on one machine. The supervisor runs a
//! three-node NATS JetStream cluster (a `nats-server` ≥ 2.11 on free loopback ports, each
//! node supervised like any process: restarted when it crashes, killable by `flotilla
//! chaos`), three control-plane replicas keeping their state in it, the services on
//! PostgreSQL (a database each, created if missing) and their events on JetStream (R3).
//! Everything else is as in a plain `up`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla::sqlx::{self, Connection};
use flotilla_control::store::server;

use super::UpError;
use crate::manifest::{Manifest, Program};

/// NATS nodes in the rehearsal: the smallest cluster that keeps quorum when one is lost.
pub(super) const NODES: usize = 3;
/// Control-plane replicas in the rehearsal.
pub(super) const REPLICAS: usize = 3;
/// The PostgreSQL server the services' databases are made on, unless told otherwise.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// One control-plane replica's addresses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replica {
    /// The operator's (plain) listener.
    pub(super) listen: SocketAddr,
    /// The fleet's mTLS listener, when processes speak mTLS.
    pub(super) tls: Option<SocketAddr>,
}

/// What the rehearsal runs, decided before anything starts.
#[derive(Debug)]
pub(super) struct Plan {
    /// The `nats-server` that runs the nodes.
    pub(super) binary: PathBuf,
    /// The nodes, their ports and config files.
    pub(super) nodes: Vec<server::Node>,
    /// Where the services' databases are made.
    pub(super) postgres: String,
    /// What their names start with (`flotilla`: `flotilla_catalog`, …).
    pub(super) prefix: String,
}

/// What `--cluster` was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The PostgreSQL server the services' databases are made on.
    pub postgres: String,
    /// What the databases' names start with: two systems on one server keep apart.
    pub database_prefix: String,
}

impl Plan {
    /// Finds a `nats-server` ≥ 2.11 and writes the nodes' configs under `data_dir/nats`.
    pub(super) fn new(data_dir: &Path, options: &ClusterOptions) -> Result<Self, UpError> {
        let binary = server::find().map_err(|e| UpError::Cluster(e.to_string()))?;
        let nodes = server::plan(&data_dir.join("nats"), NODES).map_err(|e| UpError::Cluster(e.to_string()))?;
        Ok(Self {
            binary,
            nodes,
            postgres: options.postgres.trim_end_matches('/').to_owned(),
            prefix: options.database_prefix.clone(),
        })
    }

    /// The control plane's `--store`: every node.
    pub(super) fn store_url(&self) -> String {
        server::store_url(&self.nodes)
    }

    /// The events backend the services are given: the same cluster (their streams R3).
    pub(super) fn events_url(&self) -> String {
        self.store_url()
    }

    /// How node `i` is started.
    pub(super) fn node_program(&self, i: usize) -> Program {
        Program {
            command: self.binary.clone(),
            args: vec!["-c".into(), self.nodes[i].config.display().to_string()],
            env: Default::default(),
        }
    }

    /// Every node's client URL.
    pub(super) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(server::Node::url).collect()
    }
}

/// A loopback address with a port free now, never one handed out before in this run (the
/// NATS nodes' ports included).
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], server::free_port()?)))
}

/// The replicas' addresses: the first on `first` (the address the operator gave), the others
/// on free ports; each with an mTLS listener when `mtls`.
pub(super) fn replicas(first: SocketAddr, count: usize, mtls: bool) -> std::io::Result<Vec<Replica>> {
    (0..count)
        .map(|i| {
            Ok(Replica {
                listen: if i == 0 { first } else { free_loopback_port()? },
                tls: if mtls { Some(free_loopback_port()?) } else { None },
            })
        })
        .collect()
}

/// A service's database name: `<prefix>_<service>` (`-` written `_`).
pub(super) fn database_name(prefix: &str, service: &str) -> String {
    format!("{prefix}_{}", service.replace('-', "_"))
}

/// Whether a database-name prefix is one `--database-prefix` takes: lowercase letters, digits
/// and `_`, starting with a letter, short enough for PostgreSQL's 63 bytes with a service name.
pub fn valid_prefix(prefix: &str) -> Result<(), String> {
    let ok = (1..=24).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{prefix}` is not a database-name prefix (lowercase letters, digits and `_`, starting with a letter, at most 24)"
        ))
    }
}

/// Makes the databases `names` on `postgres` where missing; returns those it made.
async fn ensure_databases(postgres: &str, names: &[String]) -> Result<Vec<String>, UpError> {
    let mut made = Vec::new();
    if names.is_empty() {
        return Ok(made);
    }
    let admin = format!("{postgres}/postgres");
    let failed = |e: sqlx::Error| UpError::Cluster(format!("PostgreSQL at {postgres}: {e}"));
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin))
        .await
        .map_err(|_| UpError::Cluster(format!("PostgreSQL at {postgres} did not answer within 5 s")))?
        .map_err(failed)?;
    for name in names {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .map_err(failed)?;
        if exists.is_none() {
            // The name is ours (a checked prefix and service name): safe to quote.
            match sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
            {
                Ok(_) => made.push(name.clone()),
                // Another `up` made it meanwhile.
                Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }
    let _ = conn.close().await;
    Ok(made)
}

/// Gives every service without a `DATABASE_URL` of its own a database of its own on
/// `postgres`, made if missing. A service's instances share it; its migrations run once
/// (sqlx holds an advisory lock while it migrates).
pub(super) async fn assign_databases(
    manifest: &mut Manifest,
    postgres: &str,
    prefix: &str,
) -> Result<Vec<String>, UpError> {
    let wanted: Vec<String> = manifest
        .services
        .iter()
        .filter(|s| !s.program.env.contains_key("DATABASE_URL"))
        .map(|s| database_name(prefix, &s.name))
        .collect();
    let made = ensure_databases(postgres, &wanted).await?;
    for service in &mut manifest.services {
        if !service.program.env.contains_key("DATABASE_URL") {
            service.program.env.insert(
                "DATABASE_URL".into(),
                format!("{postgres}/{}", database_name(prefix, &service.name)),
            );
        }
    }
    Ok(made)
}

/// The database every control-plane replica keeps spans in (`<prefix>_traces`), made if
/// missing; its URL.
pub(super) async fn traces_database(plan: &Plan) -> Result<String, UpError> {
    let name = database_name(&plan.prefix, "traces");
    ensure_databases(&plan.postgres, std::slice::from_ref(&name)).await?;
    Ok(format!("{}/{name}", plan.postgres))
}

/// Waits until JetStream answers through every node.
pub(super) async fn wait_for_nats(plan: &Plan, timeout: Duration) -> Result<(), UpError> {
    server::wait_ready(&plan.urls(), timeout)
        .await
        .map_err(|e| UpError::Cluster(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_a_database_named_after_it() {
        assert_eq!(database_name("flotilla", "catalog"), "flotilla_catalog");
        assert_eq!(database_name("t1", "order-history"), "t1_order_history");
        assert!(valid_prefix("flotilla_test_1").is_ok());
        for bad in ["", "1x", "Caps", "a-b", "a;drop", &"x".repeat(25)] {
            assert!(valid_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_replica_is_where_the_operator_said_and_the_others_on_free_ports() {
        let first: SocketAddr = "127.0.0.1:17070".parse().unwrap();
        let three = replicas(first, 3, true).unwrap();
        assert_eq!(three[0].listen, first);
        assert!(three.iter().all(|r| r.tls.is_some()));
        assert_ne!(three[1].listen, three[2].listen);
        assert!(replicas(first, 2, false).unwrap().iter().all(|r| r.tls.is_none()));
    }
}
