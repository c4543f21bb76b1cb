//! The system manifest, `flotilla.toml`: which processes `flotilla up` runs, how many of
//! each, and their environment.
//!
//! ```toml
//! events = "nats://127.0.0.1:4222"  # optional: NATS JetStream instead of the control plane's log
//!
//! [control]
//! heartbeat = "1s"
//! ttl = "3s"
//! store = "nats://h1:4222,h2:4222,h3:4222"  # optional: state on NATS JetStream (cluster mode)
//!
//! [gateway]
//! routes = "routes.toml"
//!
//! [services.catalog]
//! command = "flotilla"              # "flotilla" is this very binary
//! args = ["service", "catalog"]
//! instances = 1
//! env = { RUST_LOG = "info", DATABASE_URL = "postgres://db/catalog" }  # default: SQLite in the data dir
//! calls = ["inventory"]             # let it call inventory over mTLS (an operator's grant)
//! mtls = false                      # a program without the SDK: plain HTTP (examples/python)
//! resources = { cpu = "100m", memory = "64Mi" }  # an instance's request (Kubernetes quantities)
//! autoscale = { min = 1, max = 4, target_cpu = 70 }  # HPA-style, applied by `up` itself
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla::config::{FileError, TomlFile};
use serde::Deserialize;
use toml::Spanned;

/// The most instances one service may ask for on one machine.
pub const MAX_INSTANCES: u32 = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    events: Option<Spanned<String>>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    command: Option<Spanned<String>>,
    args: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    heartbeat: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    command: Option<Spanned<String>>,
    args: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    routes: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Option<Spanned<String>>,
    args: Option<Vec<String>>,
    instances: Option<Spanned<i64>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    oauth_client: Option<RawOauthClient>,
    #[serde(default)]
    calls: Vec<Spanned<String>>,
    mtls: Option<bool>,
    resources: Option<RawResources>,
    autoscale: Option<Spanned<RawAutoscale>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu: Option<Spanned<RawQuantity>>,
    memory: Option<Spanned<RawQuantity>>,
    cpu_limit: Option<Spanned<RawQuantity>>,
    memory_limit: Option<Spanned<RawQuantity>>,
}

/// A quantity as written: Kubernetes' syntax in a string (`"250m"`, `"64Mi"`), or a bare
/// number (`cpu = 1`), as YAML allows.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawQuantity {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl RawQuantity {
    fn text(&self) -> String {
        match self {
            RawQuantity::Text(text) => text.clone(),
            RawQuantity::Integer(n) => n.to_string(),
            RawQuantity::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoscale {
    min: Option<Spanned<i64>>,
    max: Spanned<i64>,
    target_cpu: Option<Spanned<i64>>,
    target_inflight: Option<Spanned<f64>>,
    scale_down_window: Option<Spanned<String>>,
    period: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOauthClient {
    provider: Spanned<String>,
    #[serde(default)]
    scope: String,
}

/// How to start one kind of process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The executable, resolved: this binary, a path, or a name found on `PATH`.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

/// The control plane's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlEntry {
    /// How to start it.
    pub program: Program,
    /// Heartbeat interval given to instances.
    pub heartbeat: Duration,
    /// Lease TTL.
    pub ttl: Duration,
    /// Where it keeps its state: `embedded` (its data dir) or a NATS JetStream cluster.
    pub store: flotilla_control::store::StoreSpec,
}

/// The gateway's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEntry {
    /// How to start it.
    pub program: Program,
    /// The routes file, resolved against the manifest's directory.
    pub routes: Option<PathBuf>,
    /// TLS certificate chain and key (PEM), resolved against the manifest's directory.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The URL clients reach the gateway at, when it is not its listen address (a proxy or a
    /// load balancer in front): tokens' issuer and the links handed out.
    pub public_url: Option<String>,
}

/// One service's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The service name.
    pub name: String,
    /// How to start an instance.
    pub program: Program,
    /// How many instances to run.
    pub instances: u32,
    /// Config keys of its own scope that hold a random secret `up` makes once (32 bytes,
    /// base64), such as the key identity seals its signing keys with.
    pub secrets: Vec<String>,
    /// The OAuth client the service calls others with, which `up` registers once.
    pub oauth_client: Option<OauthClient>,
    /// The services it calls beyond what they allow by themselves: each callee lets it in
    /// over mTLS (`up` writes the callee's `granted_callers`), as an operator's grant.
    pub calls: Vec<String>,
    /// Whether it speaks mTLS (the default under `up`); `false` for a program written without
    /// the SDK, which gets the control plane's plain address and is declared plain to it.
    pub mtls: bool,
    /// What one instance asks for: the base of CPU utilization under `up`, and the pod's
    /// `resources` on Kubernetes.
    pub resources: Resources,
    /// How `up` (and a Kubernetes HPA, with the same numbers) scales it; `None`: a fixed
    /// count, `instances`.
    pub autoscale: Option<Autoscale>,
}

/// An instance's CPU and memory request and optional limits, as Kubernetes takes them: the
/// autoscaler's utilization is CPU used over the CPU request, as the HPA's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// The CPU request, in millicores (`"250m"` is 250, `"1"` is 1000).
    pub cpu_millis: u64,
    /// The memory request, in bytes.
    pub memory_bytes: u64,
    /// The CPU limit, in millicores, when one is set.
    pub cpu_limit_millis: Option<u64>,
    /// The memory limit, in bytes, when one is set.
    pub memory_limit_bytes: Option<u64>,
}

impl Default for Resources {
    /// 100m and 64Mi: a small service's request, when the manifest names none.
    fn default() -> Self {
        Self {
            cpu_millis: DEFAULT_CPU_MILLIS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpu_limit_millis: None,
            memory_limit_bytes: None,
        }
    }
}

/// The CPU request of an instance whose entry names none (100m).
pub const DEFAULT_CPU_MILLIS: u64 = 100;
/// The memory request of an instance whose entry names none (64Mi).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// A service's autoscaling: the numbers of a Kubernetes `HorizontalPodAutoscaler`
/// (`autoscaling/v2`), which `up` applies itself with the HPA's algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autoscale {
    /// The fewest instances (`minReplicas`), at least 1.
    pub min: u32,
    /// The most instances (`maxReplicas`), at most [`MAX_INSTANCES`].
    pub max: u32,
    /// Average CPU use as a percentage of the CPU request (`averageUtilization`).
    pub target_cpu: Option<u32>,
    /// Average in-flight requests per instance (a `Pods` metric's `averageValue`, on
    /// `flotilla_http_server_active_requests`).
    pub target_inflight: Option<f64>,
    /// A scale-down goes only as low as the highest recommendation within this window
    /// (`behavior.scaleDown.stabilizationWindowSeconds`), so a dip does not drop instances
    /// that a moment later are needed again.
    pub scale_down_window: Duration,
    /// How often `up` measures and decides (the HPA controller's sync period, which on
    /// Kubernetes is the cluster's, not the object's).
    pub period: Duration,
}

// `target_inflight` is finite and above zero once parsed: never NaN, so equality is total.
impl Eq for Autoscale {}

/// The HPA's default scale-down stabilization window.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
/// The HPA controller's default sync period.
pub const DEFAULT_AUTOSCALE_PERIOD: Duration = Duration::from_secs(15);
/// The HPA's largest stabilization window.
const MAX_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(3600);
/// Below this the CPU clock's 10 ms ticks are too coarse to measure a small request by.
const MIN_AUTOSCALE_PERIOD: Duration = Duration::from_secs(1);

/// An OAuth 2.0 client a service needs (client credentials): `up` makes a random secret and
/// writes it where the provider checks it (`<provider>/clients`, an array of
/// `{"id", "secret", "scope"}`) and where the service reads it (`<service>/client`,
/// `{"id", "secret"}`), both config secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthClient {
    /// The service that issues its tokens (`identity`).
    pub provider: String,
    /// The scopes it may ask for, space-separated.
    pub scope: String,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// The services' event backend: a `nats://` URL (NATS JetStream), or none (the control
    /// plane's event log). Handed to every process as `FLOTILLA_EVENTS`.
    pub events: Option<String>,
    /// The control plane.
    pub control: ControlEntry,
    /// The gateway.
    pub gateway: GatewayEntry,
    /// The services, by name.
    pub services: Vec<ServiceEntry>,
}

impl Manifest {
    /// Reads and checks a manifest; `self_exe` is what the command `flotilla` means.
    pub fn load(path: &Path, self_exe: &Path) -> Result<Self, FileError> {
        Self::parse(&TomlFile::read(path)?, self_exe)
    }

    /// Parses and checks a manifest already in memory.
    pub fn parse(file: &TomlFile, self_exe: &Path) -> Result<Self, FileError> {
        let raw: RawManifest = file.parse()?;
        let base = file.path().parent().map(Path::to_path_buf).unwrap_or_default();
        let resolver = Resolver {
            file,
            base: &base,
            self_exe,
        };

        let events = match raw.events {
            Some(url) => Some(events_url(file, url)?),
            None => None,
        };

        let control = ControlEntry {
            program: resolver.program(
                raw.control.command.as_ref(),
                raw.control.args,
                &["control"],
                raw.control.env,
                "control.command",
            )?,
            heartbeat: duration(
                file,
                raw.control.heartbeat.as_ref(),
                Duration::from_secs(1),
                "control.heartbeat",
            )?,
            ttl: duration(file, raw.control.ttl.as_ref(), Duration::from_secs(3), "control.ttl")?,
            store: match &raw.control.store {
                Some(text) => text
                    .get_ref()
                    .parse()
                    .map_err(|e: flotilla_control::store::StoreError| {
                        file.error_at(text.span(), format!("control.store: {e}"))
                    })?,
                None => flotilla_control::store::StoreSpec::Embedded,
            },
        };
        if control.ttl < control.heartbeat * 2 {
            let span = raw.control.ttl.as_ref().map(Spanned::span);
            let message =
                "control.ttl must be at least twice control.heartbeat, so one late heartbeat does not drop an instance";
            return Err(match span {
                Some(span) => file.error_at(span, message),
                None => file.error(message),
            });
        }

        let routes = match &raw.gateway.routes {
            Some(routes) => {
                let path = base.join(routes.get_ref());
                if !path.is_file() {
                    return Err(file.error_at(
                        routes.span(),
                        format!("gateway.routes: `{}` does not exist", path.display()),
                    ));
                }
                Some(path)
            }
            None => None,
        };
        let existing = |value: &Spanned<String>, key: &str| {
            let path = base.join(value.get_ref());
            if path.is_file() {
                Ok(path)
            } else {
                Err(file.error_at(
                    value.span(),
                    format!("gateway.{key}: `{}` does not exist", path.display()),
                ))
            }
        };
        let tls = match (&raw.gateway.tls_cert, &raw.gateway.tls_key) {
            (Some(cert), Some(key)) => Some((existing(cert, "tls_cert")?, existing(key, "tls_key")?)),
            (None, None) => None,
            (Some(v), None) | (None, Some(v)) => {
                return Err(file.error_at(v.span(), "gateway: `tls_cert` and `tls_key` go together"))
            }
        };
        let public_url = match &raw.gateway.public_url {
            Some(url) => {
                let text = url.get_ref().trim_end_matches('/');
                let parsed: Option<http::Uri> = text.parse().ok();
                let fine = parsed.as_ref().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.path() == "/"
                });
                if !fine {
                    return Err(file.error_at(
                        url.span(),
                        format!(
                            "gateway.public_url: `{}` is not an http(s) URL with a host and no path",
                            url.get_ref()
                        ),
                    ));
                }
                Some(text.to_owned())
            }
            None => None,
        };
        let gateway = GatewayEntry {
            tls,
            public_url,
            program: resolver.program(
                raw.gateway.command.as_ref(),
                raw.gateway.args,
                &["gateway"],
                raw.gateway.env,
                "gateway.command",
            )?,
            routes,
        };

        let mut services = Vec::new();
        let raw_names: std::collections::BTreeSet<String> = raw.services.keys().map(|n| n.get_ref().clone()).collect();
        for (name, service) in raw.services {
            flotilla_api::registry::validate_service_name(name.get_ref())
                .map_err(|reason| file.error_at(name.span(), format!("services.{}: {reason}", name.get_ref())))?;
            let key = format!("services.{}", name.get_ref());
            let mut instances = match &service.instances {
                None => 1,
                Some(n) if (0..=i64::from(MAX_INSTANCES)).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    return Err(file.error_at(
                        n.span(),
                        format!(
                            "{key}.instances: {} is out of range (0 to {MAX_INSTANCES})",
                            n.get_ref()
                        ),
                    ))
                }
            };
            let default_args = ["service", name.get_ref().as_str()];
            let program = resolver.program(
                service.command.as_ref(),
                service.args,
                &default_args,
                service.env,
                &format!("{key}.command"),
            )?;
            let mut secrets = Vec::new();
            for secret in &service.secrets {
                flotilla_api::config::validate_key(secret.get_ref())
                    .map_err(|reason| file.error_at(secret.span(), format!("{key}.secrets: {reason}")))?;
                secrets.push(secret.get_ref().clone());
            }
            let oauth_client = match service.oauth_client {
                Some(client) => {
                    if !raw_names.contains(client.provider.get_ref()) {
                        return Err(file.error_at(
                            client.provider.span(),
                            format!(
                                "{key}.oauth_client.provider: `{}` is not a service of this manifest",
                                client.provider.get_ref()
                            ),
                        ));
                    }
                    Some(OauthClient {
                        provider: client.provider.into_inner(),
                        scope: client.scope,
                    })
                }
                None => None,
            };
            let mut calls = Vec::new();
            for callee in &service.calls {
                if !raw_names.contains(callee.get_ref()) {
                    return Err(file.error_at(
                        callee.span(),
                        format!("{key}.calls: `{}` is not a service of this manifest", callee.get_ref()),
                    ));
                }
                calls.push(callee.get_ref().clone());
            }
            let resources = match &service.resources {
                Some(raw) => resources(file, raw, &key)?,
                None => Resources::default(),
            };
            let autoscale = match &service.autoscale {
                Some(raw) => Some(autoscale(file, raw, &key)?),
                None => None,
            };
            if let Some(autoscale) = &autoscale {
                // `instances` is where an autoscaled service starts.
                instances = instances.clamp(autoscale.min, autoscale.max);
            }
            services.push(ServiceEntry {
                name: name.into_inner(),
                program,
                instances,
                secrets,
                oauth_client,
                calls,
                mtls: service.mtls.unwrap_or(true),
                resources,
                autoscale,
            });
        }
        Ok(Self {
            path: file.path().to_path_buf(),
            events,
            control,
            gateway,
            services,
        })
    }

    /// Overrides instance counts (`--scale catalog=3`); naming an unknown service is an error.
    pub fn scale(&mut self, name: &str, instances: u32) -> Result<(), String> {
        if instances > MAX_INSTANCES {
            return Err(format!("--scale {name}={instances}: at most {MAX_INSTANCES} instances"));
        }
        match self.services.iter_mut().find(|s| s.name == name) {
            Some(service) => {
                service.instances = instances;
                Ok(())
            }
            None => Err(format!(
                "--scale {name}={instances}: the manifest has no service `{name}`"
            )),
        }
    }
}

struct Resolver<'a> {
    file: &'a TomlFile,
    base: &'a Path,
    self_exe: &'a Path,
}

impl Resolver<'_> {
    fn program(
        &self,
        command: Option<&Spanned<String>>,
        args: Option<Vec<String>>,
        default_args: &[&str],
        env: BTreeMap<String, String>,
        key: &str,
    ) -> Result<Program, FileError> {
        let (command, args) = match command {
            None => (
                self.self_exe.to_path_buf(),
                args.unwrap_or_else(|| default_args.iter().map(|a| a.to_string()).collect()),
            ),
            Some(cmd) => {
                let path = resolve_command(cmd.get_ref(), self.base, self.self_exe)
                    .map_err(|reason| self.file.error_at(cmd.span(), format!("{key}: {reason}")))?;
                (path, args.unwrap_or_default())
            }
        };
        if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
            return Err(self
                .file
                .error(format!("{key}: environment variable name `{bad}` is not valid")));
        }
        Ok(Program { command, args, env })
    }
}

/// `flotilla` is this binary; a name with a `/` is a path relative to the manifest; any other
/// name is looked up on `PATH`.
fn resolve_command(command: &str, base: &Path, self_exe: &Path) -> Result<PathBuf, String> {
    if command.is_empty() {
        return Err("the command is empty".into());
    }
    if command == "flotilla" {
        return Ok(self_exe.to_path_buf());
    }
    if command.contains('/') {
        let path = base.join(command);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("`{}` does not exist", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{command}` was not found on PATH"))
}

/// `events`: only NATS is an alternative to the control plane's log, which needs no key.
fn events_url(file: &TomlFile, url: Spanned<String>) -> Result<String, FileError> {
    let host = url.get_ref().strip_prefix("nats://").unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(file.error_at(
            url.span(),
            format!(
                "events: `{}` is not a NATS URL like `nats://127.0.0.1:4222` (leave `events` out for the control plane's log)",
                url.get_ref()
            ),
        ));
    }
    Ok(url.into_inner())
}

fn duration(
    file: &TomlFile,
    value: Option<&Spanned<String>>,
    default: Duration,
    key: &str,
) -> Result<Duration, FileError> {
    match value {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(text.get_ref()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(file.error_at(text.span(), format!("{key}: must be above zero"))),
            Err(e) => Err(file.error_at(
                text.span(),
                format!("{key}: `{}` is not a duration like `1s` ({e})", text.get_ref()),
            )),
        },
    }
}

/// `resources`: requests (defaulted) and limits, each a Kubernetes quantity; a limit below its
/// request is refused, as the API server would.
fn resources(file: &TomlFile, raw: &RawResources, key: &str) -> Result<Resources, FileError> {
    let cpu = |value: &Option<Spanned<RawQuantity>>, name: &str| match value {
        Some(text) => parse_cpu(&text.get_ref().text())
            .map(Some)
            .map_err(|e| file.error_at(text.span(), format!("{key}.resources.{name}: {e}"))),
        None => Ok(None),
    };
    let memory = |value: &Option<Spanned<RawQuantity>>, name: &str| match value {
        Some(text) => parse_memory(&text.get_ref().text())
            .map(Some)
            .map_err(|e| file.error_at(text.span(), format!("{key}.resources.{name}: {e}"))),
        None => Ok(None),
    };
    let resources = Resources {
        cpu_millis: cpu(&raw.cpu, "cpu")?.unwrap_or(DEFAULT_CPU_MILLIS),
        memory_bytes: memory(&raw.memory, "memory")?.unwrap_or(DEFAULT_MEMORY_BYTES),
        cpu_limit_millis: cpu(&raw.cpu_limit, "cpu_limit")?,
        memory_limit_bytes: memory(&raw.memory_limit, "memory_limit")?,
    };
    if let (Some(limit), Some(span)) = (resources.cpu_limit_millis, raw.cpu_limit.as_ref().map(Spanned::span)) {
        if limit < resources.cpu_millis {
            return Err(file.error_at(
                span,
                format!(
                    "{key}.resources.cpu_limit: {} is below the request, {}",
                    cpu_quantity(limit),
                    cpu_quantity(resources.cpu_millis)
                ),
            ));
        }
    }
    if let (Some(limit), Some(span)) = (
        resources.memory_limit_bytes,
        raw.memory_limit.as_ref().map(Spanned::span),
    ) {
        if limit < resources.memory_bytes {
            return Err(file.error_at(
                span,
                format!(
                    "{key}.resources.memory_limit: {} is below the request, {}",
                    memory_quantity(limit),
                    memory_quantity(resources.memory_bytes)
                ),
            ));
        }
    }
    Ok(resources)
}

/// `autoscale`: the HPA's bounds (1 ≤ min ≤ max ≤ [`MAX_INSTANCES`]), at least one target,
/// the scale-down window (0 to 1 h, as the HPA takes it) and the period.
fn autoscale(file: &TomlFile, raw: &Spanned<RawAutoscale>, key: &str) -> Result<Autoscale, FileError> {
    let key = format!("{key}.autoscale");
    let value = raw.get_ref();
    let min = match &value.min {
        None => 1,
        Some(n) if (1..=i64::from(MAX_INSTANCES)).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            return Err(file.error_at(
                n.span(),
                format!("{key}.min: {} is out of range (1 to {MAX_INSTANCES})", n.get_ref()),
            ))
        }
    };
    let max = match *value.max.get_ref() {
        n if (i64::from(min)..=i64::from(MAX_INSTANCES)).contains(&n) => n as u32,
        n => {
            return Err(file.error_at(
                value.max.span(),
                format!("{key}.max: {n} is out of range ({min}, the min, to {MAX_INSTANCES})"),
            ))
        }
    };
    let target_cpu = match &value.target_cpu {
        None => None,
        Some(n) if (1..=1000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
        Some(n) => {
            return Err(file.error_at(
                n.span(),
                format!(
                    "{key}.target_cpu: {} is out of range (1 to 1000, percent of the CPU request)",
                    n.get_ref()
                ),
            ))
        }
    };
    let target_inflight = match &value.target_inflight {
        None => None,
        Some(n) if n.get_ref().is_finite() && *n.get_ref() > 0.0 => Some(*n.get_ref()),
        Some(n) => {
            return Err(file.error_at(
                n.span(),
                format!(
                    "{key}.target_inflight: {} is not a number of requests above zero",
                    n.get_ref()
                ),
            ))
        }
    };
    if target_cpu.is_none() && target_inflight.is_none() {
        return Err(file.error_at(
            raw.span(),
            format!("{key}: needs a target, `target_cpu` (percent of the CPU request) or `target_inflight` (requests per instance)"),
        ));
    }
    let scale_down_window = match &value.scale_down_window {
        None => DEFAULT_SCALE_DOWN_WINDOW,
        Some(text) => match humantime::parse_duration(text.get_ref()) {
            Ok(d) if d <= MAX_SCALE_DOWN_WINDOW => d,
            Ok(_) => {
                return Err(file.error_at(
                    text.span(),
                    format!("{key}.scale_down_window: at most 1h, as the HPA takes it"),
                ))
            }
            Err(e) => {
                return Err(file.error_at(
                    text.span(),
                    format!(
                        "{key}.scale_down_window: `{}` is not a duration like `300s` ({e})",
                        text.get_ref()
                    ),
                ))
            }
        },
    };
    let period = duration(
        file,
        value.period.as_ref(),
        DEFAULT_AUTOSCALE_PERIOD,
        &format!("{key}.period"),
    )?;
    if period < MIN_AUTOSCALE_PERIOD {
        let span = value.period.as_ref().map(Spanned::span).unwrap_or_else(|| raw.span());
        return Err(file.error_at(
            span,
            format!("{key}.period: at least 1s, or CPU is measured too coarsely"),
        ));
    }
    Ok(Autoscale {
        min,
        max,
        target_cpu,
        target_inflight,
        scale_down_window,
        period,
    })
}

/// Why a Kubernetes quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// It is not a number with an optional suffix.
    #[error("`{0}` is not a quantity like {1}")]
    Syntax(String, &'static str),
    /// Its suffix is not one Kubernetes knows for this resource.
    #[error("`{0}`: unknown suffix `{1}` (use {2})")]
    Suffix(String, String, &'static str),
    /// It is zero, or finer than the unit (1m of CPU, 1 byte).
    #[error("`{0}` is {1}")]
    Precision(String, &'static str),
    /// It does not fit.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

const CPU_EXAMPLES: &str = "\"250m\", \"0.5\" or \"1\"";
const MEMORY_EXAMPLES: &str = "\"64Mi\", \"1Gi\" or \"500M\"";

/// A CPU quantity (`"250m"`, `"0.5"`, `"2"`) in millicores, above zero.
pub fn parse_cpu(text: &str) -> Result<u64, QuantityError> {
    let (number, suffix) = split_quantity(text, CPU_EXAMPLES)?;
    // CPU takes the decimal suffixes; `m` is the usual one.
    let scale: (u128, u128) = match suffix {
        "m" => (1, 1),
        "" => (1000, 1),
        "k" => (1_000_000, 1),
        other => {
            return Err(QuantityError::Suffix(
                text.to_owned(),
                other.to_owned(),
                "`m` for millicores, or none for cores",
            ))
        }
    };
    scaled(text, number, scale, "finer than 1m, or zero")
}

/// A memory quantity (`"64Mi"`, `"1Gi"`, `"500M"`, `"1048576"`) in bytes, above zero.
pub fn parse_memory(text: &str) -> Result<u64, QuantityError> {
    let (number, suffix) = split_quantity(text, MEMORY_EXAMPLES)?;
    let scale: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        other => {
            return Err(QuantityError::Suffix(
                text.to_owned(),
                other.to_owned(),
                "Ki, Mi, Gi, Ti, Pi, Ei, or k, M, G, T, P, E",
            ))
        }
    };
    scaled(text, number, (scale, 1), "a fraction of a byte, or zero")
}

/// `"1.5Gi"` → (`"1.5"`, `"Gi"`); the number has digits, at most one `.`, and no sign.
fn split_quantity<'a>(text: &'a str, examples: &'static str) -> Result<(&'a str, &'a str), QuantityError> {
    let trimmed = text.trim();
    let at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(at);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 || number.starts_with('.') || number.ends_with('.') {
        return Err(QuantityError::Syntax(text.to_owned(), examples));
    }
    Ok((number, suffix))
}

/// `number × scale.0 / scale.1` as a whole, positive count of units; exact (no floats).
fn scaled(text: &str, number: &str, scale: (u128, u128), fine: &'static str) -> Result<u64, QuantityError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let too_large = || QuantityError::TooLarge(text.to_owned());
    let digits: u128 = format!("{whole}{fraction}").parse().map_err(|_| too_large())?;
    let divisor = 10u128
        .checked_pow(u32::try_from(fraction.len()).map_err(|_| too_large())?)
        .and_then(|d| d.checked_mul(scale.1))
        .ok_or_else(too_large)?;
    let numerator = digits.checked_mul(scale.0).ok_or_else(too_large)?;
    if numerator == 0 || numerator % divisor != 0 {
        return Err(QuantityError::Precision(text.to_owned(), fine));
    }
    u64::try_from(numerator / divisor).map_err(|_| too_large())
}

/// Millicores as Kubernetes writes them: `"250m"`, or whole cores as `"2"`.
pub fn cpu_quantity(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as Kubernetes writes them: the largest binary suffix that divides them (`"64Mi"`),
/// else plain bytes.
pub fn memory_quantity(bytes: u64) -> String {
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests;
