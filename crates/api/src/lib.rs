//! Wire types of the Flotilla control plane, shared by the control plane, the SDK and the CLI.
//!
//! Everything here is plain serde data: what travels between processes is defined once,
//! so a client and a server cannot drift apart.

pub mod config;
pub mod events;
pub mod faults;
pub mod identity;
pub mod problem;
pub mod registry;
pub mod telemetry;

pub use problem::{InvalidParam, Problem};
pub use registry::{Health, Instance, InstanceList, Lease, Registration, ServiceSummary};

/// The header that carries a blocking query's revision index (as Consul's `X-Consul-Index`).
pub const INDEX_HEADER: &str = "x-flotilla-index";

/// Environment variables the supervisor hands to every process it starts.
pub mod env {
    /// Address of the control plane, `host:port`.
    pub const CONTROL_ADDR: &str = "FLOTILLA_CONTROL_ADDR";
    /// The registration token that authorizes writes to the control plane.
    pub const TOKEN: &str = "FLOTILLA_TOKEN";
    /// The system's data directory; services keep their databases under it.
    pub const DATA_DIR: &str = "FLOTILLA_DATA_DIR";
    /// The supervisor's name for this process (`catalog-1`).
    pub const INSTANCE: &str = "FLOTILLA_INSTANCE";
    /// Set by the supervisor: standard input closing means the supervisor is gone.
    pub const SUPERVISED: &str = "FLOTILLA_SUPERVISED";
    /// The availability zone this process runs in: registered as metadata `zone`, and
    /// preferred by its balancers.
    pub const ZONE: &str = "FLOTILLA_ZONE";
    /// Where services' events go: a `nats://` URL selects NATS JetStream; unset, the control
    /// plane's event log.
    pub const EVENTS: &str = "FLOTILLA_EVENTS";
    /// The workload CA's certificate (PEM file): set, the process takes a certificate from
    /// the control plane before anything else and speaks mTLS to every Flotilla peer.
    pub const CA_FILE: &str = "FLOTILLA_CA_FILE";
    /// How long the process asks its certificates to live (`24h` unless told; shorter for
    /// rotation drills).
    pub const CERT_LIFETIME: &str = "FLOTILLA_CERT_LIFETIME";
    /// Where a service under mTLS serves its health checks and `/metrics` (`127.0.0.1:0`
    /// unless set; a pod's probes need a reachable address).
    pub const ADMIN_LISTEN: &str = "FLOTILLA_ADMIN_LISTEN";
    /// The gateway's public URL, as clients reach it (`https://shop.example.com`): the `iss`
    /// of the tokens issued behind it and the base of the links it hands out.
    pub const PUBLIC_URL: &str = "FLOTILLA_PUBLIC_URL";
    /// Where a process listens when no flag says (`ip:port`); services take a free loopback
    /// port without it, as they are found through the registry.
    pub const LISTEN: &str = "FLOTILLA_LISTEN";
    /// The host (or `host:port`) others reach this process at, registered in place of the
    /// listener's own address: a pod listens on `0.0.0.0` and is reached at its pod IP
    /// (Consul's `advertise_addr`, Eureka's `ip-address`).
    pub const ADVERTISE: &str = "FLOTILLA_ADVERTISE";
}
