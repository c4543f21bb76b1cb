//! The service registry's wire types: registrations, leases and instance lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Well-known metadata keys.
pub mod meta {
    /// The OS process id of the instance.
    pub const PID: &str = "pid";
    /// The supervisor's name for the process (`catalog-1`).
    pub const SUPERVISOR_NAME: &str = "supervisor.name";
    /// Availability zone, for zone-aware balancing.
    pub const ZONE: &str = "zone";
    /// Relative weight for balancing (an integer, default 1).
    pub const WEIGHT: &str = "weight";
    /// Where the instance serves Prometheus metrics, when not `/metrics` (the gateway's are
    /// at `/-/metrics`, out of the way of the routes it proxies).
    pub const METRICS_PATH: &str = "metrics.path";
    /// Where the instance serves Prometheus metrics, when not at its address (`host:port`;
    /// the gateway's are on its admin listener, not on the one it proxies on).
    pub const METRICS_ADDRESS: &str = "metrics.address";
    /// `mtls` when the instance serves only mutual TLS with its workload certificate:
    /// callers connect with `https` and present their own.
    pub const TLS: &str = "tls";
    /// The value of [`TLS`] for an instance that serves mutual TLS.
    pub const TLS_MUTUAL: &str = "mtls";
}

/// What an instance tells the registry about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The service this instance belongs to (`catalog`).
    pub service: String,
    /// Unique id of this instance, stable for the life of the process.
    pub instance_id: String,
    /// Where the instance listens, `ip:port`.
    pub address: String,
    /// The version the instance runs, for canaries and status.
    #[serde(default)]
    pub version: String,
    /// Free-form metadata: see [`meta`] for the keys Flotilla reads.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// Checks every field; the error names the first bad one and says why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        validate_service_name(&self.service).map_err(|r| ("service", r))?;
        if self.instance_id.is_empty() || self.instance_id.len() > 128 {
            return Err(("instance_id", "must be 1 to 128 characters".into()));
        }
        if !self.instance_id.chars().all(|c| c.is_ascii_graphic()) || self.instance_id.contains('/') {
            return Err(("instance_id", "must be printable ASCII without spaces or '/'".into()));
        }
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "address",
                format!("`{}` is not an `ip:port` socket address", self.address),
            ));
        }
        if self.version.len() > 64 {
            return Err(("version", "must be at most 64 characters".into()));
        }
        if self.metadata.len() > 64 {
            return Err(("metadata", "at most 64 entries".into()));
        }
        if let Some((key, _)) = self.metadata.iter().find(|(k, v)| k.len() > 128 || v.len() > 1024) {
            return Err(("metadata", format!("entry `{key}` is too long (keys 128, values 1024)")));
        }
        Ok(())
    }
}

/// Checks a service name: lowercase letters, digits and `-`, 1 to 63 characters, starting
/// with a letter (a DNS label, so the same name works as a Kubernetes Service).
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid service name (lowercase letters, digits and '-', 1-63 characters, starting with a letter)"
        ))
    }
}

/// The registry's answer to a registration: how often to heartbeat and when the lease lapses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// Send a heartbeat this often, in milliseconds.
    pub heartbeat_ms: u64,
    /// The instance is dropped when no heartbeat arrives for this long, in milliseconds.
    pub ttl_ms: u64,
}

/// How the registry sees an instance's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heartbeats arrive on time.
    Passing,
    /// A heartbeat is overdue; the instance is dropped if none arrives before the TTL.
    Late,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Passing => "passing",
            Health::Late => "late",
        })
    }
}

/// A registered instance as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instance {
    /// The service it belongs to.
    pub service: String,
    /// Its unique id.
    pub instance_id: String,
    /// Where it listens, `ip:port`.
    pub address: String,
    /// The version it runs.
    pub version: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Lease health.
    pub health: Health,
    /// Milliseconds since it registered.
    pub uptime_ms: u64,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms: u64,
}

impl Instance {
    /// The OS pid from the metadata, if the instance reported one.
    pub fn pid(&self) -> Option<u32> {
        self.metadata.get(meta::PID).and_then(|p| p.parse().ok())
    }

    /// Whether it serves only mutual TLS (metadata `tls = mtls`): callers use `https` and
    /// present their workload certificate.
    pub fn serves_mtls(&self) -> bool {
        self.metadata.get(meta::TLS).map(String::as_str) == Some(meta::TLS_MUTUAL)
    }
}

/// A list of instances at a registry revision: the answer to a (blocking) query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceList {
    /// The registry revision this list reflects; pass it back as `index` to wait for a change.
    pub index: u64,
    /// The instances, ordered by service then instance id.
    pub instances: Vec<Instance>,
    /// True while a freshly started registry waits for instances to register again (one TTL
    /// after it starts). The list may be incomplete: a watcher that already holds a view
    /// keeps it until warming ends, as Eureka's servers wait before serving an empty registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warming: bool,
    /// True while the control plane's store has no quorum: the list is what the replica last
    /// watched (Consul's stale read), and may miss changes no one could write meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// One service and how many of its instances are registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSummary {
    /// The service name.
    pub name: String,
    /// Registered instances.
    pub instances: usize,
    /// Instances whose heartbeats are on time.
    pub passing: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        Registration {
            service: "catalog".into(),
            instance_id: "catalog-1-abc".into(),
            address: "127.0.0.1:4000".into(),
            version: "0.1.0".into(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn valid_registration_passes() {
        assert!(reg().validate().is_ok());
    }

    #[test]
    fn names_the_bad_field() {
        let mut r = reg();
        r.address = "localhost".into();
        assert_eq!(r.validate().unwrap_err().0, "address");
        let mut r = reg();
        r.service = "Catalog".into();
        assert_eq!(r.validate().unwrap_err().0, "service");
        let mut r = reg();
        r.instance_id = "a b".into();
        assert_eq!(r.validate().unwrap_err().0, "instance_id");
    }
}
