//! The service instances `up` runs, grouped by service, which `flotilla scale` grows and
//! shrinks while the system runs: new instances take traffic once they have registered
//! (which they do only when ready); removed ones deregister and drain before they exit.
//! It also names every process it supervises, the control plane and the gateway among them,
//! so `flotilla chaos` can find a process and its pid.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::output::Output;
use super::process::{PidCell, ProcessSpec, Supervised};
use crate::manifest::{Program, MAX_INSTANCES};

/// How long a service instance gets between SIGTERM and SIGKILL.
const SERVICE_STOP_GRACE: Duration = Duration::from_secs(3);

struct Group {
    program: Program,
    slot: usize,
    instances: Vec<Supervised>,
}

/// A supervised process as fault injection sees it.
#[derive(Debug, Clone)]
pub(super) struct ProcessRef {
    /// The service it is an instance of (`orders` for `orders-1`; `gateway`, `control`).
    pub(super) service: String,
    /// Its current pid.
    pub(super) pid: PidCell,
}

/// Every service's instances.
pub(super) struct Fleet {
    output: Arc<Output>,
    env: Vec<(String, String)>,
    /// Mints each instance's own control-plane credential.
    credentials: flotilla_control::acl::Keyring,
    groups: Mutex<BTreeMap<String, Group>>,
    /// Every process being supervised, by name; a process leaves before it is stopped.
    processes: std::sync::Mutex<BTreeMap<String, ProcessRef>>,
    /// Where a restart waits for a replacement to register (set once the control plane runs).
    registry: std::sync::OnceLock<flotilla::discovery::RegistryClient>,
}

/// How long a replacement instance may take to register before a restart gives up on it.
const REPLACEMENT_READY: Duration = Duration::from_secs(30);

/// What a restart did: each old instance and the one that replaced it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Restarted {
    /// `(old, new)` instance names, in the order they were replaced.
    pub(crate) replaced: Vec<(String, String)>,
}

/// What a scaling did.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct Scaled {
    /// Instances before.
    pub(super) from: usize,
    /// Instances after.
    pub(super) to: usize,
    /// Names of the instances started.
    pub(super) started: Vec<String>,
    /// Names of the instances stopped.
    pub(super) stopped: Vec<String>,
}

impl Fleet {
    /// A fleet whose processes get `env` (plus their own name and their program's env), and
    /// each instance of a service its own control-plane credential from `credentials`.
    pub(super) fn new(
        output: Arc<Output>,
        env: Vec<(String, String)>,
        credentials: flotilla_control::acl::Keyring,
    ) -> Self {
        Self {
            output,
            env,
            credentials,
            groups: Mutex::new(BTreeMap::new()),
            processes: std::sync::Mutex::new(BTreeMap::new()),
            registry: std::sync::OnceLock::new(),
        }
    }

    /// The registry restarts wait on for replacements to be ready.
    pub(super) fn watch_registry(&self, registry: flotilla::discovery::RegistryClient) {
        let _ = self.registry.set(registry);
    }

    /// The spec of one process; an instance of `service` gets that service's credential in
    /// place of the operator's token (`None`: the control plane, which holds the token).
    pub(super) fn spec(
        &self,
        name: &str,
        service: Option<&str>,
        slot: usize,
        program: &Program,
        extra: &[(String, String)],
        grace: Duration,
    ) -> ProcessSpec {
        let mut env = self.env.clone();
        if let Some(service) = service {
            let credential = self.credentials.service(service, name).unwrap_or_default();
            for (key, value) in &mut env {
                if key == flotilla_api::env::TOKEN {
                    value.clone_from(&credential);
                }
            }
        }
        env.push((flotilla_api::env::INSTANCE.into(), name.to_owned()));
        env.extend(extra.iter().cloned());
        env.extend(program.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        ProcessSpec {
            name: name.to_owned(),
            command: program.command.clone(),
            args: program.args.clone(),
            env,
            slot,
            stop_grace: grace,
            quiet: false,
        }
    }

    /// Starts supervising one process, an instance of `service`.
    pub(super) fn start(&self, service: &str, spec: ProcessSpec) -> Supervised {
        let supervised = Supervised::start(spec, self.output.clone());
        let process = ProcessRef {
            service: service.to_owned(),
            pid: supervised.pid.clone(),
        };
        self.lock_processes().insert(supervised.name.clone(), process);
        supervised
    }

    /// Stops processes (concurrently), which first leave the list of processes.
    pub(super) async fn stop(&self, processes: Vec<Supervised>) {
        {
            let mut list = self.lock_processes();
            for process in &processes {
                list.remove(&process.name);
            }
        }
        futures_util::future::join_all(processes.into_iter().map(Supervised::stop)).await;
    }

    /// Every process being supervised, by name.
    pub(super) fn processes(&self) -> BTreeMap<String, ProcessRef> {
        self.lock_processes().clone()
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProcessRef>> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a service with no instances yet.
    pub(super) async fn add(&self, service: &str, program: Program, slot: usize) {
        self.groups.lock().await.insert(
            service.to_owned(),
            Group {
                program,
                slot,
                instances: Vec::new(),
            },
        );
    }

    /// Stops a service's instances (each drains first) and forgets the service.
    pub(super) async fn remove(&self, service: &str) -> Result<Scaled, String> {
        let scaled = self.scale(service, 0).await?;
        self.groups.lock().await.remove(service);
        Ok(scaled)
    }

    /// How a service's instances start from now on; running ones keep their program until
    /// replaced ([`Fleet::restart`]).
    pub(super) async fn set_program(&self, service: &str, program: Program) -> Result<(), String> {
        let mut groups = self.groups.lock().await;
        group_of(&mut groups, service)?.program = program;
        Ok(())
    }

    /// Sets a service's instance count.
    pub(super) async fn scale(&self, service: &str, instances: u32) -> Result<Scaled, String> {
        if instances > MAX_INSTANCES {
            return Err(format!("at most {MAX_INSTANCES} instances per service"));
        }
        let mut groups = self.groups.lock().await;
        let group = group_of(&mut groups, service)?;
        let mut scaled = Scaled {
            from: group.instances.len(),
            to: instances as usize,
            ..Scaled::default()
        };
        while group.instances.len() < instances as usize {
            let name = self.start_instance(service, group);
            scaled.started.push(name);
        }
        let mut leaving = Vec::new();
        while group.instances.len() > instances as usize {
            if let Some(instance) = group.instances.pop() {
                scaled.stopped.push(instance.name.clone());
                leaving.push(instance);
            }
        }
        drop(groups);
        // Each leaving instance deregisters, drains its in-flight requests, then exits.
        self.stop(leaving).await;
        Ok(scaled)
    }

    /// Replaces a service's instances one at a time without a moment with fewer ready than
    /// before: a replacement starts beside each instance, and only once it has registered
    /// (which it does when ready) does the old one deregister, drain and exit. A replacement
    /// that does not register in time is stopped and the old one kept.
    pub(super) async fn restart(&self, service: &str) -> Result<Restarted, String> {
        let registry = self
            .registry
            .get()
            .ok_or_else(|| "the control plane is not running yet".to_owned())?;
        let mut groups = self.groups.lock().await;
        let group = group_of(&mut groups, service)?;
        let old: Vec<String> = group.instances.iter().map(|i| i.name.clone()).collect();
        let mut restarted = Restarted::default();
        for leaving in old {
            let name = self.start_instance(service, group);
            if !registered(registry, &name, REPLACEMENT_READY).await {
                if let Some(at) = group.instances.iter().position(|i| i.name == name) {
                    let failed = group.instances.remove(at);
                    self.stop(vec![failed]).await;
                }
                return Err(format!(
                    "{name} did not register within {REPLACEMENT_READY:?} (see logs/{name}.log); {leaving} kept, {} replaced before it",
                    restarted.replaced.len()
                ));
            }
            if let Some(at) = group.instances.iter().position(|i| i.name == leaving) {
                let old = group.instances.remove(at);
                // Deregisters, drains what it is serving, then exits.
                self.stop(vec![old]).await;
            }
            self.output.say(&format!("restart: {leaving} replaced by {name}"));
            restarted.replaced.push((leaving, name));
        }
        Ok(restarted)
    }

    /// Starts one more instance of `service` under the lowest free name; its name.
    fn start_instance(&self, service: &str, group: &mut Group) -> String {
        let name = free_name(service, &group.instances);
        let spec = self.spec(
            &name,
            Some(service),
            group.slot,
            &group.program,
            &[],
            SERVICE_STOP_GRACE,
        );
        group.instances.push(self.start(service, spec));
        name
    }

    /// Instance counts by service.
    pub(super) async fn counts(&self) -> BTreeMap<String, Vec<String>> {
        self.groups
            .lock()
            .await
            .iter()
            .map(|(name, g)| (name.clone(), g.instances.iter().map(|i| i.name.clone()).collect()))
            .collect()
    }

    /// Stops every instance (concurrently) and forgets them.
    pub(super) async fn stop_all(&self) {
        let all: Vec<Supervised> = self
            .groups
            .lock()
            .await
            .values_mut()
            .flat_map(|g| std::mem::take(&mut g.instances))
            .collect();
        self.stop(all).await;
    }
}

/// The group of `service`, or an error naming the services there are.
fn group_of<'a>(groups: &'a mut BTreeMap<String, Group>, service: &str) -> Result<&'a mut Group, String> {
    let known: Vec<String> = groups.keys().cloned().collect();
    groups
        .get_mut(service)
        .ok_or_else(|| format!("no service `{service}` (the manifest has: {})", known.join(", ")))
}

/// The lowest `service-N` no instance is named now: names stay short however often instances
/// come and go.
fn free_name(service: &str, instances: &[Supervised]) -> String {
    (1..)
        .map(|n| format!("{service}-{n}"))
        .find(|name| instances.iter().all(|i| &i.name != name))
        .unwrap_or_else(|| format!("{service}-x"))
}

/// Whether the instance the supervisor named `name` registers within `timeout`.
async fn registered(registry: &flotilla::discovery::RegistryClient, name: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok(list) = registry.instances(None, None, Duration::ZERO).await {
            let found = list.instances.iter().any(|i| {
                i.metadata
                    .get(flotilla_api::registry::meta::SUPERVISOR_NAME)
                    .map(String::as_str)
                    == Some(name)
            });
            if found {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
