//! `up` follows its files while it runs, the dev loop without a restart: an edited
//! `flotilla.toml` is applied (services added, removed, rescaled, their command, arguments or
//! environment changed → instances replaced one at a time, each old one kept until its
//! successor is ready, their `autoscale` or `resources` changed → the autoscaler's from its
//! next evaluation), and an edited routes file becomes the gateway's routes. A file that
//! does not parse or check is refused with its file and line, and the running system is kept;
//! it is tried again until it loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE, GATEWAY_SCOPE, ROUTES_KEY};
use flotilla::config::{ConfigClient, ConfigClientError, TomlFile, Write};

use super::autoscale::Autoscaler;
use super::fleet::Fleet;
use super::output::Output;
use super::{seeds, UpError};
use crate::manifest::{Manifest, Program, ServiceEntry};

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// A file's bytes when last looked at (`None`: unreadable). Compared whole: a small file,
/// read once a second, and no edit is missed for keeping its size within its mtime's tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen(Option<Vec<u8>>);

impl Seen {
    /// The file as it is now.
    pub(super) fn of(path: &Path) -> Self {
        Self(std::fs::read(path).ok())
    }
}

/// The running system as the follower changes it.
pub(super) struct Follower {
    pub(super) manifest: Manifest,
    pub(super) self_exe: PathBuf,
    pub(super) fleet: Arc<Fleet>,
    /// Told the manifest's `autoscale` and `resources` after each change.
    pub(super) autoscaler: Arc<Autoscaler>,
    pub(super) output: Arc<Output>,
    pub(super) control: String,
    pub(super) token: String,
    /// What a plain service is told the control plane is (its plain listener).
    pub(super) plain_control: String,
    /// In cluster mode, the PostgreSQL server every service gets a database on, and the
    /// databases' prefix.
    pub(super) postgres: Option<(String, String)>,
    /// The manifest as `up` read it, so an edit made before the follower starts still counts.
    pub(super) manifest_seen: Seen,
    /// The routes file as `up` read it.
    pub(super) routes_seen: Option<Seen>,
}

/// How `service`'s instances start: its program, and for a plain one (`mtls = false`) the
/// control plane's plain address and no CA file, so it neither enrolls nor is sent to the
/// mTLS listener.
pub(super) fn program_for(service: &ServiceEntry, plain_control: &str) -> Program {
    let mut program = service.program.clone();
    if !service.mtls {
        program
            .env
            .insert(flotilla_api::env::CONTROL_ADDR.into(), plain_control.to_owned());
        program.env.insert(flotilla_api::env::CA_FILE.into(), String::new());
    }
    program
}

impl Follower {
    /// Follows the manifest and its routes file until `shutdown`.
    pub(super) async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let path = self.manifest.path.clone();
        let mut manifest_seen = std::mem::replace(&mut self.manifest_seen, Seen(None));
        let mut routes_seen = self.routes_seen.take();
        // The last refusal said, so a file left broken is not reported every second.
        let mut refused: Option<String> = None;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            let now = Seen::of(&path);
            if now != manifest_seen || refused.is_some() {
                manifest_seen = now;
                let loaded = match Manifest::load(&path, &self.self_exe) {
                    Ok(mut next) => match &self.postgres {
                        // A service added in cluster mode gets its database like the others.
                        Some((postgres, prefix)) => super::cluster::assign_databases(&mut next, postgres, prefix)
                            .await
                            .map(|_| next)
                            .map_err(|e| e.to_string()),
                        None => Ok(next),
                    },
                    Err(err) => Err(err.to_string()),
                };
                match loaded {
                    Ok(next) => {
                        if refused.take().is_some() || next != self.manifest {
                            // Another routes file is read afresh; the same one keeps its stamp,
                            // so an edit made with the manifest's is applied below.
                            if next.gateway.routes != self.manifest.gateway.routes {
                                routes_seen = None;
                            }
                            self.apply(next).await;
                        }
                    }
                    Err(err) => {
                        let said = format!("{err}; the running system is kept");
                        if refused.as_deref() != Some(said.as_str()) {
                            self.output.say(&said);
                            refused = Some(said);
                        }
                    }
                }
            }
            if let Some(routes) = self.manifest.gateway.routes.clone() {
                let now = Some(Seen::of(&routes));
                if now != routes_seen {
                    routes_seen = now;
                    let said = apply_routes(&self.control, &self.token, &routes).await;
                    self.output.say(&said);
                }
            }
        }
    }

    /// Makes the running system what `next` says, service by service.
    async fn apply(&mut self, next: Manifest) {
        let name = file_name(&next.path);
        let before = std::mem::replace(&mut self.manifest, next);
        let after = &self.manifest;
        if before.control != after.control || before.gateway != after.gateway || before.events != after.events {
            self.output.say(&format!(
                "{name}: changes to [control], [gateway] and `events` take effect at the next `flotilla up`"
            ));
        }
        // First, so a service no longer autoscaled is not scaled while it gets its `instances`.
        for line in self.autoscaler.configure(after) {
            self.output.say(&format!("{name}: {line}"));
        }
        for gone in before.services.iter().filter(|s| find(after, &s.name).is_none()) {
            match self.fleet.remove(&gone.name).await {
                Ok(scaled) => self.output.say(&format!(
                    "{name}: removed {} (drained and stopped {})",
                    gone.name,
                    list(&scaled.stopped)
                )),
                Err(reason) => self.output.say(&format!("{name}: removing {}: {reason}", gone.name)),
            }
        }
        let mut slot = before.services.len() + 2;
        for service in &after.services {
            match find(&before, &service.name) {
                None => {
                    slot += 1;
                    self.add(service, slot, &name).await;
                }
                Some(old) => self.change(old, service, &name).await,
            }
        }
        if let Err(err) = grant_callers(&self.control, &self.token, after).await {
            self.output.say(&format!("{name}: granting `calls`: {err}"));
        }
    }

    async fn add(&self, service: &ServiceEntry, slot: usize, name: &str) {
        for said in seeds_for(&self.control, &self.token, service).await {
            self.output.say(&said);
        }
        // Granted before the service's first instance calls anyone.
        if let Err(err) = grant_callers(&self.control, &self.token, &self.manifest).await {
            self.output.say(&format!("{name}: granting `calls`: {err}"));
        }
        self.fleet
            .add(&service.name, program_for(service, &self.plain_control), slot)
            .await;
        match self.fleet.scale(&service.name, service.instances).await {
            Ok(scaled) => self.output.say(&format!(
                "{name}: added {} — started {} (they take traffic once registered)",
                service.name,
                list(&scaled.started)
            )),
            Err(reason) => self.output.say(&format!("{name}: adding {}: {reason}", service.name)),
        }
    }

    async fn change(&self, old: &ServiceEntry, new: &ServiceEntry, name: &str) {
        if old.secrets != new.secrets || old.oauth_client != new.oauth_client {
            for said in seeds_for(&self.control, &self.token, new).await {
                self.output.say(&said);
            }
        }
        if old.program != new.program || old.mtls != new.mtls {
            let program = program_for(new, &self.plain_control);
            if let Err(reason) = self.fleet.set_program(&new.name, program).await {
                self.output.say(&format!("{name}: {}: {reason}", new.name));
                return;
            }
            match self.fleet.restart(&new.name).await {
                Ok(restarted) if restarted.replaced.is_empty() => {}
                Ok(restarted) => self.output.say(&format!(
                    "{name}: {}'s command or environment changed — replaced {} instance{}, each once its successor was ready",
                    new.name,
                    restarted.replaced.len(),
                    if restarted.replaced.len() == 1 { "" } else { "s" }
                )),
                Err(reason) => self.output.say(&format!("{name}: restarting {}: {reason}", new.name)),
            }
        }
        // An autoscaled service's count is the autoscaler's (`instances` is where `up` starts
        // it, and new bounds apply at its next evaluation); one no longer autoscaled runs
        // `instances` again.
        let fixed = new.autoscale.is_none();
        if fixed && (old.instances != new.instances || old.autoscale.is_some()) {
            match self.fleet.scale(&new.name, new.instances).await {
                Ok(scaled) => self.output.say(&format!(
                    "{name}: {} {} → {} instances",
                    new.name, scaled.from, scaled.to
                )),
                Err(reason) => self.output.say(&format!("{name}: scaling {}: {reason}", new.name)),
            }
        }
    }
}

fn find<'a>(manifest: &'a Manifest, service: &str) -> Option<&'a ServiceEntry> {
    manifest.services.iter().find(|s| s.name == service)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// What a service declared it needs, made unless it exists; each line says what was made, or
/// why it could not be (the running system is kept either way).
pub(super) async fn seeds_for(control: &str, token: &str, service: &ServiceEntry) -> Vec<String> {
    seeds::declared(control, token, service)
        .await
        .into_iter()
        .filter_map(|result| match result {
            Ok(line) => line,
            Err(err) => Some(format!("{}: {err}", service.name)),
        })
        .collect()
}

/// Writes what the manifest grants where it differs from the store: each service's
/// `granted_callers` (the services whose `calls` name it: the callee lets them in over mTLS from
/// its next handshake), and the control plane's `plain_services` (those with `mtls = false`).
pub(super) async fn grant_callers(control: &str, token: &str, manifest: &Manifest) -> Result<(), UpError> {
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let plain: Vec<String> = manifest
        .services
        .iter()
        .filter(|s| !s.mtls)
        .map(|s| s.name.clone())
        .collect();
    let key = ConfigKey::new("control", DEFAULT_PROFILE, flotilla_control::PLAIN_SERVICES_KEY);
    write_list(&client, &key, plain, "the manifest's `mtls = false`").await?;
    for callee in &manifest.services {
        let granted: Vec<String> = manifest
            .services
            .iter()
            .filter(|caller| caller.calls.contains(&callee.name))
            .map(|caller| caller.name.clone())
            .collect();
        let key = ConfigKey::new(&callee.name, DEFAULT_PROFILE, "granted_callers");
        write_list(&client, &key, granted, "the manifest's `calls`").await?;
    }
    Ok(())
}

/// Makes `key` the sorted `list` (deleted when empty) unless it is already.
async fn write_list(client: &ConfigClient, key: &ConfigKey, mut list: Vec<String>, why: &str) -> Result<(), UpError> {
    list.sort();
    let current = match client.get(key).await {
        Ok(entry) if !entry.deleted => Some(entry.value),
        Ok(_) | Err(ConfigClientError::NotFound(_)) => None,
        Err(err) => return Err(UpError::Seed(err.to_string())),
    };
    let wanted = serde_json::json!(list);
    let write = Write {
        expect: None,
        author: Some("flotilla up".into()),
        comment: Some(why.to_owned()),
    };
    let written = match (current, list.is_empty()) {
        (None, true) => return Ok(()),
        (Some(_), true) => client.delete(key, write).await,
        (Some(value), false) if value == wanted => return Ok(()),
        (_, false) => client.set(key, wanted, false, write).await,
    };
    written
        .map(|_| ())
        .map_err(|e| UpError::Seed(format!("{}/{}/{}: {e}", key.scope, key.profile, key.key)))
}

/// Checks the routes file and makes it the gateway's routes (a new revision of
/// `gateway/routes`); says what happened.
pub(super) async fn apply_routes(control: &str, token: &str, path: &Path) -> String {
    let name = file_name(path);
    let routes = match TomlFile::read(path).and_then(|file| flotilla_gateway::routes::RouteTable::file_to_json(&file)) {
        Ok(routes) => routes,
        Err(err) => return format!("{err}; the gateway keeps its routes"),
    };
    let count = routes.as_array().map_or(0, Vec::len);
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let key = ConfigKey::new(GATEWAY_SCOPE, DEFAULT_PROFILE, ROUTES_KEY);
    if client
        .get(&key)
        .await
        .is_ok_and(|entry| !entry.deleted && entry.value == routes)
    {
        return format!("{name}: unchanged for the gateway");
    }
    let write = Write {
        expect: None,
        author: Some("flotilla up".into()),
        comment: Some(format!("{name} changed")),
    };
    match client.set(&key, routes, false, write).await {
        Ok(entry) => format!(
            "{name}: {count} routes are the gateway's now (revision {})",
            entry.revision
        ),
        Err(err) => format!("{name}: writing the gateway's routes: {err}; it keeps its routes"),
    }
}
