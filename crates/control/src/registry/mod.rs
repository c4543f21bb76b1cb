//! The service registry: instances with heartbeat leases, a revision counter, and blocking
//! queries on that revision (Consul's model) so watchers hear of a change in milliseconds.
//!
//! Time is `tokio::time::Instant`, so tests drive expiry with a paused clock. Leases live in
//! this process, or in a NATS key-value bucket that every replica watches ([`nats`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::registry::validate_service_name;
use flotilla_api::{Health, Instance, InstanceList, Lease, Registration, ServiceSummary};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::store::StoreError;

pub(crate) mod nats;

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    /// How often instances are told to heartbeat.
    pub heartbeat: Duration,
    /// How long an instance lives without a heartbeat.
    pub ttl: Duration,
}

impl Default for RegistryConfig {
    /// 1 s heartbeats and a 3 s TTL: a dead instance leaves within 3 s, where Eureka's
    /// defaults (30 s heartbeats, 90 s lease) take minutes.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            ttl: Duration::from_secs(3),
        }
    }
}

impl RegistryConfig {
    /// The TTL must leave room for at least one missed heartbeat.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("heartbeat interval must be above zero".into());
        }
        if self.ttl < self.heartbeat * 2 {
            return Err(format!(
                "ttl ({:?}) must be at least twice the heartbeat interval ({:?})",
                self.ttl, self.heartbeat
            ));
        }
        Ok(())
    }
}

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// No instance with that id holds a lease (never registered, deregistered or expired).
    #[error("no instance `{0}` is registered")]
    UnknownInstance(String),
    /// The registration is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The store cannot take the write now (no quorum): try again shortly.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// Eureka's self-preservation: when many leases run out at once, the fault is more likely the
/// store's or the network's than every instance's, so they are held a further TTL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preservation {
    /// Hold expiring leases when more than this share of the instances expired within one TTL.
    pub share: f64,
}

impl Default for Preservation {
    /// Half the fleet: a rolling restart never comes near it, a partition does.
    fn default() -> Self {
        Self { share: 0.5 }
    }
}

struct Entry {
    registration: Registration,
    registered: Instant,
    last_heartbeat: Instant,
    /// The lease's revision in the store (0 in memory): what a heartbeat updates.
    stored: u64,
    /// Kept past its expiry by self-preservation, until then.
    held_until: Option<Instant>,
}

struct State {
    instances: BTreeMap<String, Entry>,
    revision: u64,
    /// When leases ran out by the store's clock within the last TTL (self-preservation).
    recent_expiries: VecDeque<Instant>,
    /// Leases were held since this instant: said once per episode.
    preserving_since: Option<Instant>,
}

/// Where leases are kept.
enum Backend {
    /// In this process: leases expire by its own timer.
    Memory,
    /// In a replicated NATS key-value bucket, fed back by a watch.
    Nats(Box<nats::Leases>),
}

/// The registry. Cheap to share behind an `Arc`; all methods take `&self`.
///
/// In memory, a write changes the view at once. On NATS, a write goes to the bucket and the
/// view follows the bucket's watch, so every replica holds the same view at the same index
/// (the bucket's sequence); a write answers once the watch has brought it back.
pub struct Registry {
    config: RegistryConfig,
    state: Mutex<State>,
    revision: watch::Sender<u64>,
    leases_changed: Notify,
    backend: Backend,
    preservation: Preservation,
    synced: watch::Sender<bool>,
    /// The last store sequence the view has taken in (heartbeats included).
    seen: watch::Sender<u64>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new instance.
    Created(Lease),
    /// The instance was already registered; its lease (and any changed field) was renewed.
    Renewed(Lease),
}

/// How an instance's record changed the view.
enum Applied {
    Created,
    Changed,
    Same,
}

impl Registry {
    /// An empty registry at revision 1.
    pub fn new(config: RegistryConfig) -> Self {
        Self::starting_at(config, 1)
    }

    /// An empty registry whose revisions count from `revision`. A control plane starts from
    /// the wall clock, so a restarted one never reuses an index a watcher already holds.
    pub fn starting_at(config: RegistryConfig, revision: u64) -> Self {
        Self::with_backend(config, revision, Backend::Memory, Preservation::default())
    }

    /// A registry whose leases live in the NATS bucket `flotilla-registry` (made if missing,
    /// with as many replicas as the store keeps). Its view is filled by
    /// [`Registry::run_expiry`]; [`Registry::synced`] says when it has caught up.
    pub async fn on_nats(
        config: RegistryConfig,
        store: &crate::store::Nats,
        preservation: Preservation,
    ) -> Result<Self, StoreError> {
        let leases = nats::Leases::open(store, config.ttl).await?;
        Ok(Self::with_backend(
            config,
            0,
            Backend::Nats(Box::new(leases)),
            preservation,
        ))
    }

    fn with_backend(config: RegistryConfig, revision: u64, backend: Backend, preservation: Preservation) -> Self {
        let synced = matches!(backend, Backend::Memory);
        Self {
            config,
            state: Mutex::new(State {
                instances: BTreeMap::new(),
                revision,
                recent_expiries: VecDeque::new(),
                preserving_since: None,
            }),
            revision: watch::Sender::new(revision),
            leases_changed: Notify::new(),
            backend,
            preservation,
            synced: watch::Sender::new(synced),
            seen: watch::Sender::new(0),
        }
    }

    /// The lease every instance is given.
    pub fn lease(&self) -> Lease {
        Lease {
            heartbeat_ms: self.config.heartbeat.as_millis() as u64,
            ttl_ms: self.config.ttl.as_millis() as u64,
        }
    }

    /// Whether the view has caught up with the store (always, in memory).
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the view has caught up with the store, at most `wait`.
    pub async fn wait_synced(&self, wait: Duration) -> bool {
        let mut synced = self.synced.subscribe();
        let synced = tokio::time::timeout(wait, synced.wait_for(|s| *s)).await.is_ok();
        synced
    }

    /// The store's health, when leases live in one.
    pub fn store_health(&self) -> Option<crate::store::StoreHealth> {
        match &self.backend {
            Backend::Memory => None,
            Backend::Nats(leases) => Some(leases.store.health().borrow().clone()),
        }
    }

    /// Whether reads are served from a view the store cannot currently confirm.
    pub fn stale(&self) -> bool {
        match &self.backend {
            Backend::Memory => false,
            Backend::Nats(leases) => !leases.store.has_quorum(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the view's revision: by one in memory, to the store's sequence on NATS.
    fn bump(&self, state: &mut State, to: Option<u64>) {
        state.revision = match to {
            Some(seq) => seq.max(state.revision),
            None => state.revision + 1,
        };
        self.revision.send_replace(state.revision);
    }

    /// Puts a registration into the view as of `heartbeat`.
    fn apply_put(
        &self,
        state: &mut State,
        registration: Registration,
        registered: Instant,
        heartbeat: Instant,
        stored: u64,
        seq: Option<u64>,
    ) -> Applied {
        match state.instances.get_mut(&registration.instance_id) {
            Some(entry) => {
                entry.last_heartbeat = entry.last_heartbeat.max(heartbeat);
                entry.stored = entry.stored.max(stored);
                entry.held_until = None;
                if entry.registration != registration {
                    entry.registration = registration;
                    self.bump(state, seq);
                    Applied::Changed
                } else {
                    Applied::Same
                }
            }
            None => {
                state.instances.insert(
                    registration.instance_id.clone(),
                    Entry {
                        registration,
                        registered,
                        last_heartbeat: heartbeat,
                        stored,
                        held_until: None,
                    },
                );
                self.bump(state, seq);
                Applied::Created
            }
        }
    }

    /// Registers an instance, or renews it if its id is already known.
    pub async fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        registration
            .validate()
            .map_err(|(field, reason)| RegistryError::Invalid { field, reason })?;
        let created = match &self.backend {
            Backend::Memory => {
                let now = Instant::now();
                let mut state = self.lock();
                let applied = self.apply_put(&mut state, registration, now, now, 0, None);
                drop(state);
                self.leases_changed.notify_one();
                matches!(applied, Applied::Created)
            }
            Backend::Nats(leases) => {
                let id = registration.instance_id.clone();
                let known = self.lock().instances.get(&id).map(|e| e.registered);
                let registered_ms = known.map_or_else(crate::store::now_ms, |at| {
                    crate::store::now_ms().saturating_sub(at.elapsed().as_millis() as u64)
                });
                let seq = leases.put(&registration, registered_ms).await?;
                self.caught_up(seq).await;
                known.is_none()
            }
        };
        let lease = self.lease();
        Ok(if created {
            Registered::Created(lease)
        } else {
            Registered::Renewed(lease)
        })
    }

    /// Waits (briefly) until the watch has brought the view to the store's sequence `seq`, so
    /// whoever wrote reads their write from this replica.
    async fn caught_up(&self, seq: u64) {
        let mut seen = self.seen.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), seen.wait_for(|s| *s >= seq)).await;
    }

    /// Renews an instance's lease.
    pub async fn heartbeat(&self, instance_id: &str) -> Result<Lease, RegistryError> {
        match &self.backend {
            Backend::Memory => {
                let mut state = self.lock();
                let entry = state
                    .instances
                    .get_mut(instance_id)
                    .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
                entry.last_heartbeat = Instant::now();
            }
            Backend::Nats(leases) => {
                let (registration, registered, stored) = {
                    let state = self.lock();
                    let entry = state
                        .instances
                        .get(instance_id)
                        .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
                    (entry.registration.clone(), entry.registered, entry.stored)
                };
                let registered_ms = crate::store::now_ms().saturating_sub(registered.elapsed().as_millis() as u64);
                match leases.renew(&registration, registered_ms, stored).await? {
                    Some(seq) => {
                        let mut state = self.lock();
                        if let Some(entry) = state.instances.get_mut(instance_id) {
                            entry.last_heartbeat = Instant::now();
                            entry.stored = entry.stored.max(seq);
                            entry.held_until = None;
                        }
                    }
                    None => return Err(RegistryError::UnknownInstance(instance_id.to_owned())),
                }
            }
        }
        Ok(self.lease())
    }

    /// The service a registered instance belongs to.
    pub fn service_of(&self, instance_id: &str) -> Option<String> {
        self.lock()
            .instances
            .get(instance_id)
            .map(|entry| entry.registration.service.clone())
    }

    /// Removes an instance at once and tells every watcher.
    pub async fn deregister(&self, instance_id: &str) -> Result<Registration, RegistryError> {
        match &self.backend {
            Backend::Memory => {
                let mut state = self.lock();
                let entry = state
                    .instances
                    .remove(instance_id)
                    .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
                self.bump(&mut state, None);
                Ok(entry.registration)
            }
            Backend::Nats(leases) => {
                let registration = self
                    .lock()
                    .instances
                    .get(instance_id)
                    .map(|e| e.registration.clone())
                    .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
                let seq = leases.delete(instance_id).await?;
                self.caught_up(seq).await;
                Ok(registration)
            }
        }
    }

    /// Drops every instance whose lease ran out by `now`; returns them. (In memory: on NATS the
    /// store expires leases and the watch removes them.)
    pub fn expire(&self, now: Instant) -> Vec<Registration> {
        let ttl = self.config.ttl;
        let mut state = self.lock();
        let dead: Vec<String> = state
            .instances
            .iter()
            .filter(|(_, e)| e.last_heartbeat + ttl <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let removed: Vec<Registration> = dead
            .iter()
            .filter_map(|id| state.instances.remove(id))
            .map(|e| e.registration)
            .collect();
        if !removed.is_empty() {
            self.bump(&mut state, None);
        }
        removed
    }

    /// When the next lease runs out, if any instance is registered.
    pub fn next_expiry(&self) -> Option<Instant> {
        let ttl = self.config.ttl;
        self.lock().instances.values().map(|e| e.last_heartbeat + ttl).min()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Instances held past their expiry by self-preservation.
    pub fn held(&self) -> usize {
        self.lock()
            .instances
            .values()
            .filter(|e| e.held_until.is_some())
            .count()
    }

    /// Instances, of one service or all, at the current revision.
    pub fn list(&self, service: Option<&str>) -> InstanceList {
        let now = Instant::now();
        let late_after = self.config.heartbeat + self.config.heartbeat / 2;
        let stale = self.stale();
        let state = self.lock();
        let mut instances: Vec<Instance> = state
            .instances
            .values()
            .filter(|e| service.is_none_or(|s| e.registration.service == s))
            .map(|e| {
                let since_heartbeat = now.saturating_duration_since(e.last_heartbeat);
                let r = &e.registration;
                Instance {
                    service: r.service.clone(),
                    instance_id: r.instance_id.clone(),
                    address: r.address.clone(),
                    version: r.version.clone(),
                    metadata: r.metadata.clone(),
                    health: if since_heartbeat > late_after || e.held_until.is_some() {
                        Health::Late
                    } else {
                        Health::Passing
                    },
                    uptime_ms: now.saturating_duration_since(e.registered).as_millis() as u64,
                    last_heartbeat_ms: since_heartbeat.as_millis() as u64,
                }
            })
            .collect();
        instances.sort_by(|a, b| (&a.service, &a.instance_id).cmp(&(&b.service, &b.instance_id)));
        InstanceList {
            index: state.revision,
            instances,
            warming: false,
            stale,
        }
    }

    /// A blocking query: waits until the revision passes `index` or `wait` elapses, then lists.
    ///
    /// In memory, an `index` from the future (the registry restarted and began counting again)
    /// answers at once, so a client never hangs on a revision that will not come. On NATS the
    /// index is the store's, the same on every replica: one from a replica further along is
    /// waited for like any other, so a watcher that moves keeps its place.
    pub async fn list_after(&self, service: Option<&str>, index: u64, wait: Duration) -> InstanceList {
        let mut rx = self.revision.subscribe();
        let current = *rx.borrow_and_update();
        let future_answers_at_once = matches!(self.backend, Backend::Memory);
        if index < current || (index > current && future_answers_at_once) {
            return self.list(service);
        }
        let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > index)).await;
        self.list(service)
    }

    /// Services with their instance counts.
    pub fn services(&self) -> Vec<ServiceSummary> {
        let mut out: BTreeMap<String, ServiceSummary> = BTreeMap::new();
        for instance in self.list(None).instances {
            let s = out.entry(instance.service.clone()).or_insert_with(|| ServiceSummary {
                name: instance.service.clone(),
                instances: 0,
                passing: 0,
            });
            s.instances += 1;
            if instance.health == Health::Passing {
                s.passing += 1;
            }
        }
        out.into_values().collect()
    }

    /// Checks a service name given in a query.
    pub fn check_service_name(name: &str) -> Result<(), RegistryError> {
        validate_service_name(name).map_err(|reason| RegistryError::Invalid {
            field: "service",
            reason,
        })
    }

    /// Keeps the view true until `shutdown` resolves: in memory, expires leases as they run
    /// out; on NATS, follows the bucket's watch and releases held leases.
    pub async fn run_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
        match &self.backend {
            Backend::Memory => self.run_local_expiry(shutdown).await,
            Backend::Nats(leases) => nats::follow(self, leases, shutdown).await,
        }
    }

    async fn run_local_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = self.next_expiry();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.leases_changed.notified() => continue,
                _ = sleep => {}
            }
            for gone in self.expire(Instant::now()) {
                tracing::warn!(
                    service = %gone.service,
                    instance = %gone.instance_id,
                    address = %gone.address,
                    "lease expired; instance removed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
