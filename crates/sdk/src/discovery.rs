//! Service discovery: a client for the control plane's registry, and a local view of every
//! instance kept fresh by a blocking-query watch, so callers learn of a change in
//! milliseconds and keep their last view while the control plane is away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flotilla_api::{Instance, InstanceList, Lease, Registration, ServiceSummary};
use http::{Method, StatusCode};
use tokio::sync::watch;

use crate::http::{HttpClient, HttpError};

/// How long one blocking query waits on the server before answering "no change".
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not know this instance (it expired or the control plane restarted):
    /// register again.
    #[error("instance `{0}` is not registered")]
    UnknownInstance(String),
    /// The control plane refused the token.
    #[error("the control plane refused the registration token (is FLOTILLA_TOKEN or the data dir right?)")]
    Unauthorized,
    /// Anything else: unreachable, timed out, or an unexpected answer.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// A client of the control plane's registry API.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: HttpClient,
    base: String,
    token: Option<String>,
}

impl RegistryClient {
    /// A client for the control plane at `control_addr` (`host:port` or an `http://` URL).
    pub fn new(control_addr: &str, token: Option<String>) -> Self {
        Self::with_http(
            HttpClient::for_control(Duration::from_secs(5)).failing_over(control_addr),
            control_addr,
            token,
        )
    }

    /// A client over a given HTTP client.
    pub fn with_http(http: HttpClient, control_addr: &str, token: Option<String>) -> Self {
        let base = crate::http::base_url(control_addr);
        Self { http, base, token }
    }

    /// The control plane's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn map(err: HttpError, instance_id: Option<&str>) -> RegistryError {
        match err.status() {
            Some(StatusCode::UNAUTHORIZED) => RegistryError::Unauthorized,
            Some(StatusCode::NOT_FOUND) if instance_id.is_some() => {
                RegistryError::UnknownInstance(instance_id.unwrap_or_default().to_owned())
            }
            _ => RegistryError::Http(err),
        }
    }

    /// Registers (or renews) an instance; the answer says how often to heartbeat.
    pub async fn register(&self, registration: &Registration) -> Result<Lease, RegistryError> {
        let uri = format!("{}/v1/registry/instances", self.base);
        self.http
            .send(Method::POST, &uri, self.token.as_deref(), Some(registration), None)
            .await
            .map(|r| r.body)
            .map_err(|e| Self::map(e, None))
    }

    /// Renews a lease.
    pub async fn heartbeat(&self, instance_id: &str) -> Result<Lease, RegistryError> {
        let uri = format!("{}/v1/registry/instances/{instance_id}/heartbeat", self.base);
        self.http
            .send::<(), Lease>(Method::PUT, &uri, self.token.as_deref(), None, None)
            .await
            .map(|r| r.body)
            .map_err(|e| Self::map(e, Some(instance_id)))
    }

    /// Removes an instance at once.
    pub async fn deregister(&self, instance_id: &str) -> Result<(), RegistryError> {
        let uri = format!("{}/v1/registry/instances/{instance_id}", self.base);
        self.http
            .send_raw::<()>(Method::DELETE, &uri, self.token.as_deref(), None, None)
            .await
            .map(|_| ())
            .map_err(|e| Self::map(e, Some(instance_id)))
    }

    /// Lists instances (of one service, or all). With `index`, blocks until the registry's
    /// revision passes it or `wait` elapses.
    pub async fn instances(
        &self,
        service: Option<&str>,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<InstanceList, RegistryError> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={service}"));
        }
        if let Some(index) = index {
            query.push(format!("index={index}&wait={}ms", wait.as_millis()));
        }
        let mut uri = format!("{}/v1/registry/instances", self.base);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        // Allow the server its full wait plus a margin before calling it a timeout.
        let timeout = index.map(|_| wait + Duration::from_secs(5));
        self.http
            .send::<(), InstanceList>(Method::GET, &uri, self.token.as_deref(), None, timeout)
            .await
            .map(|r| r.body)
            .map_err(|e| Self::map(e, None))
    }

    /// Lists services with instance counts.
    pub async fn services(&self) -> Result<Vec<ServiceSummary>, RegistryError> {
        let uri = format!("{}/v1/registry/services", self.base);
        self.http
            .get_json(&uri, self.token.as_deref())
            .await
            .map_err(|e| Self::map(e, None))
    }
}

/// Every known instance, grouped by service, at one registry revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The registry revision this view reflects (0 before the first answer).
    pub index: u64,
    /// Instances by service name.
    pub services: HashMap<String, Arc<[Instance]>>,
    /// True while the control plane cannot be reached and this view may be out of date.
    pub stale: bool,
}

impl Snapshot {
    /// This view plus every instance of `newer` (newer entries win); nothing is removed.
    fn merged_with(&self, newer: Snapshot) -> Snapshot {
        let mut services = self.services.clone();
        for (name, fresh) in newer.services {
            let mut merged: Vec<Instance> = fresh.to_vec();
            if let Some(old) = self.services.get(&name) {
                merged.extend(
                    old.iter()
                        .filter(|o| !fresh.iter().any(|f| f.instance_id == o.instance_id))
                        .cloned(),
                );
            }
            merged.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            services.insert(name, Arc::from(merged));
        }
        Snapshot {
            index: newer.index,
            services,
            stale: true,
        }
    }

    fn from_list(list: InstanceList) -> Self {
        let stale = list.warming;
        let mut grouped: HashMap<String, Vec<Instance>> = HashMap::new();
        for instance in list.instances {
            grouped.entry(instance.service.clone()).or_default().push(instance);
        }
        Self {
            index: list.index,
            services: grouped.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            stale,
        }
    }
}

/// A local, always-readable view of the registry, kept fresh by a watch.
///
/// Reads are a lock-free pointer load, so a proxy can consult it on every request.
#[derive(Clone)]
pub struct Discovery {
    view: Arc<ArcSwap<Snapshot>>,
    changes: watch::Receiver<u64>,
}

impl Discovery {
    /// Starts watching the registry; the watch ends when `shutdown` resolves.
    pub fn spawn(client: RegistryClient, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let view = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let (tx, changes) = watch::channel(0);
        let task_view = view.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = watch_loop(client, task_view, tx) => {}
            }
        });
        Self { view, changes }
    }

    /// A view that never changes (static configurations and tests).
    pub fn fixed(list: InstanceList) -> Self {
        let (_tx, changes) = watch::channel(list.index);
        Self {
            view: Arc::new(ArcSwap::from_pointee(Snapshot::from_list(list))),
            changes,
        }
    }

    /// The instances of one service (empty if none is known).
    pub fn instances(&self, service: &str) -> Arc<[Instance]> {
        self.view
            .load()
            .services
            .get(service)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Finds a random instance of a service as a base URL, for `service://` URLs (a key set
    /// fetched from one of identity's instances).
    pub fn resolver(&self) -> crate::auth::Resolve {
        let discovery = self.clone();
        Arc::new(move |service: &str| {
            let instances = discovery.instances(service);
            let pick = instances.get(rand::random_range(0..instances.len().max(1)))?;
            Some(instance_url(pick))
        })
    }

    /// The whole current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.load_full()
    }

    /// Waits until the view has been filled from the registry at least once.
    pub async fn ready(&self) {
        let mut rx = self.changes.clone();
        let _ = rx.wait_for(|index| *index > 0).await;
    }

    /// A receiver that changes whenever the view does (its value is the revision).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

async fn watch_loop(client: RegistryClient, view: Arc<ArcSwap<Snapshot>>, tx: watch::Sender<u64>) {
    let mut index: Option<u64> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        match client.instances(None, index, WATCH_WAIT).await {
            Ok(list) => {
                let current = view.load_full();
                backoff = Duration::from_millis(50);
                if list.warming && !current.services.is_empty() {
                    // A restarted registry still filling up: add what it knows to the view we
                    // have, but drop nothing until it is complete; instances that are alive
                    // are re-registering right now.
                    if !current.stale {
                        tracing::warn!("registry warming up; keeping the last view until it is complete");
                    }
                    let revision = list.index;
                    view.store(Arc::new(current.merged_with(Snapshot::from_list(list))));
                    tx.send_replace(revision);
                    index = Some(revision);
                    continue;
                }
                if current.stale && !list.warming {
                    tracing::info!(index = list.index, "registry view reconciled");
                }
                if index != Some(list.index) || current.stale != list.warming {
                    let revision = list.index;
                    view.store(Arc::new(Snapshot::from_list(list)));
                    tx.send_replace(revision);
                }
                index = Some(view.load().index);
            }
            Err(err) => {
                let current = view.load();
                if !current.stale {
                    tracing::warn!(error = %err, "registry unreachable; serving the last known view");
                    view.store(Arc::new(Snapshot {
                        index: current.index,
                        services: current.services.clone(),
                        stale: true,
                    }));
                }
                // Ask again from scratch: a restarted control plane counts revisions anew.
                index = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// An instance's base URL: `https://` when it serves mTLS (metadata `tls = mtls`).
pub fn instance_url(instance: &Instance) -> String {
    let scheme = if instance.serves_mtls() { "https" } else { "http" };
    format!("{scheme}://{}", instance.address)
}
