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
}

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
            let instances = match &service.instances {
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
            services.push(ServiceEntry {
                name: name.into_inner(),
                program,
                instances,
                secrets,
                oauth_client,
                calls,
                mtls: service.mtls.unwrap_or(true),
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

#[cfg(test)]
mod tests;
