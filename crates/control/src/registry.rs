//! The service registry: instances with heartbeat leases, a revision counter, and blocking
//! queries on that revision (Consul's model) so watchers hear of a change in milliseconds.
//!
//! Time is `tokio::time::Instant`, so tests drive expiry with a paused clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_api::registry::validate_service_name;
use flotilla_api::{Health, Instance, InstanceList, Lease, Registration, ServiceSummary};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

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
}

struct Entry {
    registration: Registration,
    registered: Instant,
    last_heartbeat: Instant,
}

struct State {
    instances: BTreeMap<String, Entry>,
    revision: u64,
}

/// The registry. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Registry {
    config: RegistryConfig,
    state: Mutex<State>,
    revision: watch::Sender<u64>,
    leases_changed: Notify,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new instance.
    Created(Lease),
    /// The instance was already registered; its lease (and any changed field) was renewed.
    Renewed(Lease),
}

impl Registry {
    /// An empty registry at revision 1.
    pub fn new(config: RegistryConfig) -> Self {
        Self::starting_at(config, 1)
    }

    /// An empty registry whose revisions count from `revision`. A control plane starts from
    /// the wall clock, so a restarted one never reuses an index a watcher already holds.
    pub fn starting_at(config: RegistryConfig, revision: u64) -> Self {
        Self {
            config,
            state: Mutex::new(State {
                instances: BTreeMap::new(),
                revision,
            }),
            revision: watch::Sender::new(revision),
            leases_changed: Notify::new(),
        }
    }

    /// The lease every instance is given.
    pub fn lease(&self) -> Lease {
        Lease {
            heartbeat_ms: self.config.heartbeat.as_millis() as u64,
            ttl_ms: self.config.ttl.as_millis() as u64,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self, state: &mut State) {
        state.revision += 1;
        self.revision.send_replace(state.revision);
    }

    /// Registers an instance, or renews it if its id is already known.
    pub fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        registration
            .validate()
            .map_err(|(field, reason)| RegistryError::Invalid { field, reason })?;
        let now = Instant::now();
        let mut state = self.lock();
        let created = match state.instances.get_mut(&registration.instance_id) {
            Some(entry) => {
                entry.last_heartbeat = now;
                if entry.registration != registration {
                    entry.registration = registration;
                    self.bump(&mut state);
                }
                false
            }
            None => {
                state.instances.insert(
                    registration.instance_id.clone(),
                    Entry {
                        registration,
                        registered: now,
                        last_heartbeat: now,
                    },
                );
                self.bump(&mut state);
                true
            }
        };
        drop(state);
        self.leases_changed.notify_one();
        let lease = self.lease();
        Ok(if created {
            Registered::Created(lease)
        } else {
            Registered::Renewed(lease)
        })
    }

    /// Renews an instance's lease.
    pub fn heartbeat(&self, instance_id: &str) -> Result<Lease, RegistryError> {
        let mut state = self.lock();
        let entry = state
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
        entry.last_heartbeat = Instant::now();
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
    pub fn deregister(&self, instance_id: &str) -> Result<Registration, RegistryError> {
        let mut state = self.lock();
        let entry = state
            .instances
            .remove(instance_id)
            .ok_or_else(|| RegistryError::UnknownInstance(instance_id.to_owned()))?;
        self.bump(&mut state);
        Ok(entry.registration)
    }

    /// Drops every instance whose lease ran out by `now`; returns them.
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
            self.bump(&mut state);
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

    /// Instances, of one service or all, at the current revision.
    pub fn list(&self, service: Option<&str>) -> InstanceList {
        let now = Instant::now();
        let late_after = self.config.heartbeat + self.config.heartbeat / 2;
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
                    health: if since_heartbeat > late_after {
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
        }
    }

    /// A blocking query: waits until the revision passes `index` or `wait` elapses, then lists.
    ///
    /// An `index` from the future (the registry restarted and began counting again) answers at
    /// once, so a client never hangs on a revision that will not come.
    pub async fn list_after(&self, service: Option<&str>, index: u64, wait: Duration) -> InstanceList {
        let mut rx = self.revision.subscribe();
        let current = *rx.borrow_and_update();
        if index < current {
            return self.list(service);
        }
        if index == current {
            let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > index)).await;
        }
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

    /// Expires leases as they run out, until `shutdown` resolves.
    pub async fn run_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
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
