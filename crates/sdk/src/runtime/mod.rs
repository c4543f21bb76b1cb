//! The service runtime: serve a router on a listener the caller bound, register with the
//! control plane, keep the lease with heartbeats, answer health checks, and on shutdown
//! deregister first, drain in-flight requests, then return.

mod callers;
pub mod faults;
pub mod platform;

pub use callers::CallerConfig;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use flotilla_api::registry::meta;
use flotilla_api::{env, Problem, Registration};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::client::{pool, ClientConfig, Pool, Propagated, ServiceClient, Stack, Target};
use crate::discovery::{Discovery, RegistryClient, RegistryError};
use crate::http::{with_problem_fallbacks, Json};
use crate::resilience::Deadline;

use self::faults::{Decision, Faults};

/// What the supervisor (or an operator) tells a service through its environment.
#[derive(Debug, Clone, Default)]
pub struct ServiceEnv {
    /// The control plane's address; without it the service runs unregistered.
    pub control_addr: Option<String>,
    /// The registration token.
    pub token: Option<String>,
    /// Where the service keeps its files (its database among them).
    pub data_dir: PathBuf,
    /// The supervisor's name for this process (`catalog-1`).
    pub instance_name: Option<String>,
    /// The availability zone this process runs in.
    pub zone: Option<String>,
    /// Where events go: a `nats://` URL selects NATS JetStream; none, the control plane's log.
    pub events: Option<String>,
    /// The host (or `host:port`) registered in place of the listener's address.
    pub advertise: Option<String>,
}

impl ServiceEnv {
    /// Reads `FLOTILLA_CONTROL_ADDR`, `FLOTILLA_TOKEN`, `FLOTILLA_DATA_DIR`, `FLOTILLA_INSTANCE`,
    /// `FLOTILLA_ZONE`, `FLOTILLA_EVENTS` and `FLOTILLA_ADVERTISE`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            control_addr: var(env::CONTROL_ADDR),
            token: var(env::TOKEN),
            data_dir: var(env::DATA_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".flotilla")),
            instance_name: var(env::INSTANCE),
            zone: var(env::ZONE),
            events: var(env::EVENTS),
            advertise: var(env::ADVERTISE),
        }
    }

    /// The address others reach a second listener on `addr` at (an admin port): the
    /// advertised host, the listener's own port.
    pub fn advertised_host(&self, addr: SocketAddr) -> String {
        match self.advertise.as_deref() {
            Some(given) => Self {
                advertise: Some(host_of(given).to_owned()),
                ..Self::default()
            }
            .advertised(addr),
            None => addr.to_string(),
        }
    }

    /// The address others reach a listener on `addr` at: `addr` itself, unless
    /// `FLOTILLA_ADVERTISE` names a host (the listener's port kept) or a `host:port`.
    pub fn advertised(&self, addr: SocketAddr) -> String {
        match self.advertise.as_deref().map(str::trim) {
            None | Some("") => addr.to_string(),
            Some(given) => {
                if given.parse::<SocketAddr>().is_ok() {
                    return given.to_owned();
                }
                match given.parse::<std::net::IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, addr.port()).to_string(),
                    // A name: `host:port` when it ends in a port, else the name with ours.
                    Err(_) => match given.rsplit_once(':') {
                        Some((_, port)) if port.parse::<u16>().is_ok() => given.to_owned(),
                        _ => format!("{given}:{}", addr.port()),
                    },
                }
            }
        }
    }
}

/// Timings of the shutdown sequence.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// After deregistering, keep serving this long so every watcher has dropped us before the
    /// listener closes (the registry pushes changes in milliseconds; this is the margin).
    pub grace: Duration,
    /// Give in-flight requests at most this long to finish.
    pub timeout: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_millis(200),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The listener has no local address.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A service: a name, a version and a router, run by [`Service::run`].
pub struct Service {
    name: String,
    version: String,
    router: Router,
    metadata: BTreeMap<String, String>,
    env: ServiceEnv,
    drain: DrainConfig,
    context: Option<Context>,
    /// Told the instance id once it is chosen (live configs, for their reports).
    registered: Vec<OnRegistered>,
    /// The services that may call this one over mTLS, unless its config says otherwise.
    callers: Vec<String>,
    /// Where health checks and `/metrics` are served under mTLS (loopback unless told).
    admin: Option<SocketAddr>,
    /// The platform's routes (`/flotilla/…`), served to the control plane only.
    platform: Option<Router>,
}

/// Who may call a service over mTLS when it says nothing: the gateway, which makes it an API
/// and nothing else's dependency. Deny by default.
pub const DEFAULT_CALLERS: &[&str] = &["gateway"];

/// Told the instance id once it is chosen.
type OnRegistered = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct HealthState {
    ready: AtomicBool,
    registrar: std::sync::Mutex<Option<Registrar>>,
    context: Option<Context>,
}

impl HealthState {
    fn registered(&self) -> bool {
        self.registrar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(Registrar::is_registered)
    }
}

impl Service {
    /// A service with the given name and version and an empty router.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            router: Router::new(),
            metadata: BTreeMap::new(),
            env: ServiceEnv::from_env(),
            drain: DrainConfig::default(),
            context: None,
            registered: Vec::new(),
            callers: DEFAULT_CALLERS.iter().map(|s| (*s).to_owned()).collect(),
            admin: None,
            platform: None,
        }
    }

    /// Routes the platform reads this instance through, under [`platform::PATH_PREFIX`] (the
    /// sagas it runs): the handshake then admits the control plane too, which reaches these
    /// and nothing else, and they answer nobody else ([`platform`]). Each router given is
    /// merged with those before.
    pub fn platform(mut self, routes: Router) -> Self {
        let routes = routes.layer(axum::middleware::from_fn(platform::only_platform));
        self.platform = Some(match self.platform.take() {
            Some(before) => before.merge(routes),
            None => routes,
        });
        self
    }

    /// The services that may call this one over mTLS (the config key `callers` in its scope
    /// replaces the list live). [`DEFAULT_CALLERS`] unless told.
    pub fn callers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, callers: I) -> Self {
        self.callers = callers.into_iter().map(Into::into).collect();
        self
    }

    /// Where health checks and `/metrics` are served when the service speaks mTLS (Prometheus
    /// and probes have no workload certificate; Linkerd's admin port is the same idea).
    /// `FLOTILLA_ADMIN_LISTEN`, or `127.0.0.1:0`, unless told; registered as `metrics.address`.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// A live configuration the service runs on: it reports to the control plane under this
    /// instance's registry id, so the control plane shows which revision each instance runs.
    pub fn config<T: Send + Sync + 'static>(mut self, live: &crate::config::LiveConfig<T>) -> Self {
        let live = live.clone();
        self.registered.push(Box::new(move |id| live.attach(id)));
        self
    }

    /// The context the service calls others through; its discovery state shows in
    /// `/health/ready` and `/metrics`.
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// The routes the service answers.
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Overrides what was read from the environment.
    pub fn env(mut self, env: ServiceEnv) -> Self {
        self.env = env;
        self
    }

    /// Adds a metadata entry to the registration.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Overrides the shutdown timings.
    pub fn drain(mut self, drain: DrainConfig) -> Self {
        self.drain = drain;
        self
    }

    /// Binds the address a service listens on: `127.0.0.1:0` unless told otherwise, since
    /// services are found through the registry, never by a fixed port.
    pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await
    }

    /// Serves until `shutdown` resolves, then deregisters, drains and returns.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let addr = listener.local_addr().map_err(RuntimeError::Listener)?;
        let health = Arc::new(HealthState {
            context: self.context.clone(),
            ..HealthState::default()
        });
        // Fault rules follow the store for as long as this instance serves.
        let (_stop_faults, faults_stopped) = tokio::sync::oneshot::channel::<()>();
        let faults = match &self.env.control_addr {
            Some(control) => Faults::follow(
                &self.name,
                crate::config::ConfigClient::new(control, self.env.token.clone()),
                async move {
                    let _ = faults_stopped.await;
                },
            ),
            None => Faults::default(),
        };
        let workload = crate::mtls::installed();
        let (_stop_callers, callers_stopped) = tokio::sync::oneshot::channel::<()>();
        let platform_routes = self.platform.take();
        let mut fenced = None;
        let tls = workload.map(|workload| {
            let mut callers = crate::mtls::Callers::only(self.callers.clone());
            if platform_routes.is_some() {
                callers = callers.admitting_platform(platform::PLATFORM_CALLERS.iter().copied());
                fenced = Some(callers.clone());
            }
            if let Some(control) = &self.env.control_addr {
                callers::follow(
                    &self.name,
                    crate::config::ConfigClient::new(control, self.env.token.clone()),
                    self.callers.clone(),
                    callers.clone(),
                    async move {
                        let _ = callers_stopped.await;
                    },
                );
            }
            workload.server_config(callers)
        });
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let drained = futures_util::FutureExt::shared(async move {
            let _ = drain_rx.await;
        });
        if tls.is_some() {
            // Probes and Prometheus have no certificate: they get their own plain listener.
            let admin = TcpListener::bind(
                self.admin
                    .or_else(admin_from_env)
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            )
            .await
            .map_err(RuntimeError::Listener)?;
            let admin_addr = admin.local_addr().map_err(RuntimeError::Listener)?;
            self.metadata
                .insert(meta::METRICS_ADDRESS.to_owned(), self.env.advertised_host(admin_addr));
            self.metadata.insert(meta::TLS.to_owned(), meta::TLS_MUTUAL.to_owned());
            let admin_app = with_problem_fallbacks(health_routes(health.clone()));
            tokio::spawn(crate::http::serve(admin, admin_app, None, drained.clone()));
            tracing::info!(service = %self.name, admin = %admin_addr, "health checks and metrics on the admin listener");
        }
        let mut app = app(
            std::mem::take(&mut self.router),
            faults,
            health.clone(),
            tls.is_none(),
            platform_routes,
        );
        if let Some(callers) = fenced {
            app = app.layer(axum::middleware::from_fn_with_state(callers, platform::fence));
        }
        let server = tokio::spawn(crate::http::serve(listener, app, tls, drained));
        health.ready.store(true, Ordering::SeqCst);
        tracing::info!(service = %self.name, version = %self.version, %addr, "serving");

        let registrar = self.env.control_addr.as_ref().map(|control| {
            let client = RegistryClient::new(control, self.env.token.clone());
            let registration = registration(&self.name, &self.version, addr, &self.env, self.metadata.clone());
            for tell in &self.registered {
                tell(&registration.instance_id);
            }
            Registrar::spawn(client, registration)
        });
        *health.registrar.lock().unwrap_or_else(|e| e.into_inner()) = registrar;

        shutdown.await;
        tracing::info!(service = %self.name, "shutting down: deregistering, then draining");
        health.ready.store(false, Ordering::SeqCst);
        let registrar = health.registrar.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(registrar) = registrar {
            registrar.deregister().await;
            tokio::time::sleep(self.drain.grace).await;
        }
        let _ = drain_tx.send(());
        match tokio::time::timeout(self.drain.timeout, server).await {
            Ok(Ok(result)) => result.map_err(RuntimeError::Serve)?,
            Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
            Err(_) => tracing::warn!(timeout = ?self.drain.timeout, "drain timed out; closing remaining connections"),
        }
        tracing::info!(service = %self.name, "stopped");
        Ok(())
    }
}

/// The host of an advertised `host[:port]` (a bare IPv6 address is a host).
pub fn host_of(advertise: &str) -> &str {
    if advertise.parse::<std::net::IpAddr>().is_ok() {
        return advertise;
    }
    match advertise.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host.trim_start_matches('[').trim_end_matches(']'),
        _ => advertise,
    }
}

/// `FLOTILLA_ADMIN_LISTEN`, when set to an address (a bad one is said and ignored).
fn admin_from_env() -> Option<SocketAddr> {
    let text = std::env::var(env::ADMIN_LISTEN).ok().filter(|v| !v.is_empty())?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            tracing::error!(value = %text, "{} is not an address (ip:port); the admin listener takes a loopback port", env::ADMIN_LISTEN);
            None
        }
    }
}

/// The application's routes in the request scope, beside the runtime's own. Only the
/// application's routes are in it: health checks, `/metrics` and the platform's routes are
/// never delayed or failed by a fault rule, nor counted as the application's requests.
fn app(
    router: Router,
    faults: Faults,
    health: Arc<HealthState>,
    with_health: bool,
    platform: Option<Router>,
) -> Router {
    let mut router = router.layer(axum::middleware::from_fn_with_state(faults, request_scope));
    if let Some(platform) = platform {
        router = router.merge(platform);
    }
    if with_health {
        with_problem_fallbacks(router.merge(health_routes(health)))
    } else {
        with_problem_fallbacks(router)
    }
}

fn health_routes(health: Arc<HealthState>) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(serde_json::json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(health): State<Arc<HealthState>>) -> Result<Json<serde_json::Value>, Problem> {
    if health.ready.load(Ordering::SeqCst) {
        let discovery = health.context.as_ref().and_then(Context::discovery).map(|d| {
            let snapshot = d.snapshot();
            serde_json::json!({ "index": snapshot.index, "stale": snapshot.stale })
        });
        Ok(Json(serde_json::json!({
            "status": "ready",
            "registered": health.registered(),
            "discovery": discovery,
        })))
    } else {
        Err(Problem::new(503, "not-ready", "Not ready").with_detail("the instance is draining"))
    }
}

async fn metrics(State(health): State<Arc<HealthState>>) -> impl axum::response::IntoResponse {
    let mut text = health.context.as_ref().map(Context::render_metrics).unwrap_or_default();
    text.push_str(&crate::telemetry::metrics::render());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Serves each request within the deadline its caller sent (504 problem+json when it runs
/// out: no work past the point the caller gave up), with its propagated headers in scope for
/// the calls it makes.
///
/// Each request is served in a server span named by its route template, child of the
/// caller's `traceparent`. The instance's fault rules may delay it or answer it with an
/// error instead of the handler; the span then says so (`flotilla.fault`).
async fn request_scope(
    State(faults): State<Faults>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use crate::telemetry::{metrics, span};
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = request.method().clone();
    let server = span::server(&method, &route, request.uri().path(), request.headers());
    let started = std::time::Instant::now();
    let active = InFlight::enter();
    let fault = faults.decide_now(method.as_str(), request.uri().path());
    if !fault.is_none() {
        span::record_fault(&server, &fault.describe());
        for (kind, picked) in [("delay", fault.delay.is_some()), ("abort", fault.abort.is_some())] {
            if picked {
                metrics::add(metrics::FAULTS_INJECTED, &[kind], 1.0);
            }
        }
    }
    let response = serve_in_scope(request, next, fault).instrument(server.clone()).await;
    drop(active);
    let status = response.status().as_u16();
    span::record_http_status(&server, status);
    metrics::add(
        metrics::HTTP_SERVER_REQUESTS,
        &[&route, method.as_str(), &status.to_string()],
        1.0,
    );
    metrics::observe(
        metrics::HTTP_SERVER_DURATION,
        &[&route, method.as_str()],
        started.elapsed(),
    );
    response
}

/// One request counted in `flotilla_http_server_active_requests` until dropped: also when
/// the request's future is dropped unfinished (the client went away), which would otherwise
/// leave the gauge counting it for good.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        crate::telemetry::metrics::add(crate::telemetry::metrics::HTTP_SERVER_ACTIVE, &[], 1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::telemetry::metrics::add(crate::telemetry::metrics::HTTP_SERVER_ACTIVE, &[], -1.0);
    }
}

async fn serve_in_scope(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    fault: Decision,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let propagated = Propagated::capture(request.headers());
    let deadline = Deadline::from_headers(request.headers());
    let grpc = is_grpc(request.headers());
    // A fault stands in for a slow or failing handler: its delay counts against the
    // caller's deadline like any other work.
    let handler = async move {
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        match fault.abort {
            Some(status) => faults::abort_problem(status).into_response(),
            None => next.run(request).await,
        }
    };
    match deadline {
        None => propagated.scope(handler).await,
        Some(deadline) => {
            let work = deadline.scope(propagated.scope(handler));
            match tokio::time::timeout_at(deadline.0, work).await {
                Ok(response) => response,
                // A gRPC caller reads the status in the headers: DEADLINE_EXCEEDED, which it
                // does not retry (a 504 would read as UNAVAILABLE, which it may).
                Err(_) if grpc => grpc_deadline_exceeded(),
                Err(_) => Problem::new(504, "deadline-exceeded", "Deadline exceeded")
                    .with_detail("the caller's deadline passed before the answer was ready")
                    .into_response(),
            }
        }
    }
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A gRPC Trailers-Only answer: DEADLINE_EXCEEDED (4).
fn grpc_deadline_exceeded() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/grpc"),
            (axum::http::HeaderName::from_static("grpc-status"), "4"),
            (
                axum::http::HeaderName::from_static("grpc-message"),
                "the caller's deadline passed before the answer was ready",
            ),
        ],
        (),
    )
        .into_response()
}

/// What a service's handlers use to reach other services: discovery and one resilient
/// client per service, created on first use and shared after. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    discovery: Option<Discovery>,
    pool: Pool,
    config: ClientConfig,
    clients: std::sync::Mutex<BTreeMap<String, ServiceClient>>,
    /// gRPC channels, on stacks of their own over HTTP/2.
    grpc: std::sync::Mutex<BTreeMap<String, crate::grpc::GrpcChannel>>,
}

impl Context {
    /// Watches the registry named in `env` (if any) for the life of the process; calls
    /// prefer instances in the zone `env` names.
    pub fn new(env: &ServiceEnv, mut config: ClientConfig) -> Self {
        if config.balance.local_zone.is_none() {
            config.balance.local_zone = env.zone.clone();
        }
        let discovery = env
            .control_addr
            .as_ref()
            .map(|control| Discovery::spawn(RegistryClient::new(control, env.token.clone()), std::future::pending()));
        Self::with_discovery(discovery, config)
    }

    /// A context over a given discovery (tests, or a shared watch).
    pub fn with_discovery(discovery: Option<Discovery>, config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                discovery,
                pool: pool(),
                config,
                clients: std::sync::Mutex::new(BTreeMap::new()),
                grpc: std::sync::Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The registry view, when there is a control plane.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.inner.discovery.as_ref()
    }

    /// The client for `service`.
    pub fn client(&self, service: &str) -> ServiceClient {
        let mut clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(service) {
            return client.clone();
        }
        let discovery = self.discovery_or_none();
        // Under mTLS each service gets a pool that checks the peer is that service.
        let pool = match crate::mtls::installed() {
            Some(_) => crate::client::pool_for(Some(service), self.inner.config.http2),
            None => self.inner.pool.clone(),
        };
        let stack = Stack::new(Target::service(service, discovery), &self.inner.config, pool);
        let client = ServiceClient::new(stack);
        clients.insert(service.to_owned(), client.clone());
        client
    }

    /// The registry view, or, without a control plane, a view of no instances (a call then
    /// fails as "no instance" rather than the context refusing to make a client).
    fn discovery_or_none(&self) -> Discovery {
        self.inner.discovery.clone().unwrap_or_else(|| {
            Discovery::fixed(flotilla_api::InstanceList {
                index: 1,
                ..Default::default()
            })
        })
    }

    /// The gRPC channel to `service`: a generated client's transport
    /// (`InventoryClient::new(ctx.grpc("inventory"))`). Its own stack over HTTP/2 (h2c, or
    /// ALPN `h2` under mTLS), so its breaker and balancer judge its calls alone.
    pub fn grpc(&self, service: &str) -> crate::grpc::GrpcChannel {
        let mut channels = self.inner.grpc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(service) {
            return channel.clone();
        }
        let discovery = self.discovery_or_none();
        let config = ClientConfig {
            http2: true,
            ..self.inner.config.clone()
        };
        let pool = crate::client::pool_for(crate::mtls::installed().map(|_| service), true);
        let channel = crate::grpc::GrpcChannel::new(Stack::new(Target::service(service, discovery), &config, pool));
        channels.insert(service.to_owned(), channel.clone());
        channel
    }

    /// Prometheus text: discovery freshness and each upstream's breaker.
    pub fn render_metrics(&self) -> String {
        use crate::resilience::BreakerState;
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(discovery) = &self.inner.discovery {
            let snapshot = discovery.snapshot();
            out.push_str(
                "# HELP flotilla_discovery_stale 1 while the registry is unreachable and the last view is served.\n",
            );
            out.push_str("# TYPE flotilla_discovery_stale gauge\n");
            let _ = writeln!(out, "flotilla_discovery_stale {}", u8::from(snapshot.stale));
            out.push_str("# HELP flotilla_discovery_index The registry revision of the current view.\n");
            out.push_str("# TYPE flotilla_discovery_index gauge\n");
            let _ = writeln!(out, "flotilla_discovery_index {}", snapshot.index);
        }
        let clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.is_empty() {
            out.push_str(
                "# HELP flotilla_client_breaker_state Each upstream's circuit breaker: 1 for its current state.\n",
            );
            out.push_str("# TYPE flotilla_client_breaker_state gauge\n");
            for (name, client) in clients.iter() {
                let state = client.stack().breaker().state();
                for s in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
                    let _ = writeln!(
                        out,
                        "flotilla_client_breaker_state{{upstream=\"{name}\",state=\"{}\"}} {}",
                        s.as_str(),
                        u8::from(s == state)
                    );
                }
            }
            out.push_str("# HELP flotilla_client_breaker_opened_total Times each upstream's breaker opened.\n");
            out.push_str("# TYPE flotilla_client_breaker_opened_total counter\n");
            for (name, client) in clients.iter() {
                let opened = client.stack().breaker().metrics().opened.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "flotilla_client_breaker_opened_total{{upstream=\"{name}\"}} {opened}"
                );
            }
        }
        out
    }
}

/// Keeps one registration alive in the background: registers, heartbeats, registers again
/// when the registry forgot the instance (lease expired, control plane restarted), and
/// deregisters when asked. Used by services and by the gateway alike.
pub struct Registrar {
    registered: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Registrar {
    /// Starts keeping `registration` in the registry.
    pub fn spawn(client: RegistryClient, registration: Registration) -> Self {
        let registered = Arc::new(AtomicBool::new(false));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep_registered(client, registration, registered.clone(), stop_rx));
        Self { registered, stop, task }
    }

    /// Whether the registry currently holds our lease.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// Deregisters (waiting at most a second for the registry) and stops heartbeating.
    pub async fn deregister(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A registration for an instance of `service` at `addr`, with the pid and the supervisor's
/// name in its metadata and an id that is unique to this process.
pub fn registration(
    service: &str,
    version: &str,
    addr: SocketAddr,
    env: &ServiceEnv,
    mut metadata: BTreeMap<String, String>,
) -> Registration {
    metadata.insert(meta::PID.into(), std::process::id().to_string());
    if let Some(name) = &env.instance_name {
        metadata.insert(meta::SUPERVISOR_NAME.into(), name.clone());
    }
    if let Some(zone) = &env.zone {
        metadata.entry(meta::ZONE.into()).or_insert_with(|| zone.clone());
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let stem = env.instance_name.as_deref().unwrap_or(service);
    Registration {
        service: service.to_owned(),
        instance_id: format!("{stem}-{}", &suffix[..8]),
        address: env.advertised(addr),
        version: version.to_owned(),
        metadata,
    }
}

async fn keep_registered(
    client: RegistryClient,
    registration: Registration,
    registered: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let id = registration.instance_id.clone();
    let mut lease = None;
    let mut failing = false;
    loop {
        let result = match lease {
            None => client.register(&registration).await,
            Some(_) => client.heartbeat(&id).await,
        };
        match result {
            Ok(granted) => {
                if lease.is_none() {
                    tracing::info!(instance = %id, address = %registration.address, "registered");
                } else if failing {
                    tracing::info!(instance = %id, "control plane reachable again");
                }
                lease = Some(granted);
                failing = false;
                registered.store(true, Ordering::SeqCst);
            }
            Err(RegistryError::UnknownInstance(_)) => {
                tracing::warn!(instance = %id, "the registry lost our lease; registering again");
                lease = None;
                registered.store(false, Ordering::SeqCst);
                continue;
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(instance = %id, error = %err, "cannot reach the registry; will keep trying");
                }
                failing = true;
            }
        }
        let every = lease.map_or(Duration::from_millis(250), |l| {
            Duration::from_millis(l.heartbeat_ms.max(10))
        });
        let wait = if failing {
            every.min(Duration::from_millis(250))
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    registered.store(false, Ordering::SeqCst);
    match tokio::time::timeout(Duration::from_secs(1), client.deregister(&id)).await {
        Ok(Ok(())) => tracing::info!(instance = %id, "deregistered"),
        Ok(Err(err)) => tracing::warn!(instance = %id, error = %err, "deregistration failed; the lease will expire"),
        Err(_) => tracing::warn!(instance = %id, "deregistration timed out; the lease will expire"),
    }
}

/// Resolves on SIGTERM or Ctrl-C, and, under a supervisor, when the supervisor goes away
/// (its end of our standard input closes), so no process outlives the system it belongs to.
pub async fn shutdown_signal() {
    let supervised = std::env::var(env::SUPERVISED).is_ok_and(|v| v == "1");
    let orphaned = async move {
        if !supervised {
            return std::future::pending().await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A plain thread, not the runtime's blocking pool: a blocked read must never hold up
        // the runtime's shutdown.
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        let _ = rx.await;
        tracing::warn!("supervisor is gone; shutting down");
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = orphaned => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_advertised_address_replaces_an_unspecified_listener() {
        let at = |advertise: Option<&str>| ServiceEnv {
            advertise: advertise.map(str::to_owned),
            ..ServiceEnv::default()
        };
        let addr: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let admin: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(at(None).advertised(addr), "0.0.0.0:8000");
        assert_eq!(at(Some("10.1.2.3")).advertised(addr), "10.1.2.3:8000");
        assert_eq!(at(Some("10.1.2.3:18000")).advertised(addr), "10.1.2.3:18000");
        assert_eq!(at(Some("catalog-0.catalog")).advertised(addr), "catalog-0.catalog:8000");
        assert_eq!(
            at(Some("catalog-0.catalog:81")).advertised(addr),
            "catalog-0.catalog:81"
        );
        assert_eq!(at(Some("fd00::7")).advertised(addr), "[fd00::7]:8000");
        assert_eq!(at(Some("10.1.2.3:18000")).advertised_host(admin), "10.1.2.3:9000");
        assert_eq!(at(Some("[fd00::7]:81")).advertised_host(admin), "[fd00::7]:9000");
        assert_eq!(at(None).advertised_host(admin), "0.0.0.0:9000");
    }

    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn slow_app() -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "done"
                }),
            )
            .route(
                "/left",
                get(|| async {
                    Deadline::current().map_or("none".to_owned(), |d| d.remaining().as_millis().to_string())
                }),
            )
            .layer(axum::middleware::from_fn_with_state(Faults::default(), request_scope))
    }

    #[tokio::test(start_paused = true)]
    async fn a_callee_stops_when_its_callers_deadline_passes() {
        let started = tokio::time::Instant::now();
        let request = Request::get("/slow")
            .header("x-flotilla-deadline-ms", "250")
            .body(Body::empty())
            .unwrap();
        let response = slow_app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(250),
            "no work past the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_caller_past_its_deadline_gets_deadline_exceeded_not_a_504() {
        let request = Request::post("/slow")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "250m")
            .body(Body::empty())
            .unwrap();
        let app = Router::new()
            .route(
                "/slow",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "done"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(Faults::default(), request_scope));
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "gRPC carries its status in the headers");
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(response.headers()["content-type"], "application/grpc");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_in_scope_for_the_handler_and_absent_without_the_header() {
        let request = Request::get("/left")
            .header("x-flotilla-deadline-ms", "800")
            .body(Body::empty())
            .unwrap();
        let response = slow_app().oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
        assert_eq!(body, "800");
        let response = slow_app()
            .oneshot(Request::get("/left").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
        assert_eq!(body, "none");
    }

    fn faulty_app(rules: Vec<flotilla_api::faults::FaultRule>) -> Router {
        let health = Arc::new(HealthState::default());
        health.ready.store(true, Ordering::SeqCst);
        let router = Router::new().route("/products", get(|| async { "ok" }));
        app(router, Faults::fixed(rules), health, true, None)
    }

    fn rule(kind: flotilla_api::faults::FaultKind) -> flotilla_api::faults::FaultRule {
        flotilla_api::faults::FaultRule {
            id: "r".into(),
            kind,
            delay_ms: 300,
            status: None,
            share: 1.0,
            method: None,
            path: None,
            until_ms: None,
        }
    }

    async fn call(app: &Router, path: &str) -> (u16, String, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_rule_slows_application_routes_and_never_health_checks() {
        let app = faulty_app(vec![rule(flotilla_api::faults::FaultKind::Delay)]);
        let started = tokio::time::Instant::now();
        assert_eq!(call(&app, "/products").await.0, 200);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        for path in ["/health/live", "/health/ready", "/metrics"] {
            assert_eq!(call(&app, path).await.0, 200, "{path}");
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_abort_rule_answers_problem_json_instead_of_the_handler() {
        let mut abort = rule(flotilla_api::faults::FaultKind::Abort);
        abort.status = Some(502);
        let app = faulty_app(vec![abort]);
        let (status, content_type, body) = call(&app, "/products").await;
        assert_eq!((status, content_type.as_str()), (502, "application/problem+json"));
        assert!(body.contains("urn:flotilla:problem:fault-injected"), "{body}");
        assert_eq!(call(&app, "/health/ready").await.0, 200);
        // An expired rule does nothing.
        let mut ended = rule(flotilla_api::faults::FaultKind::Abort);
        ended.until_ms = Some(1);
        assert_eq!(call(&faulty_app(vec![ended]), "/products").await.0, 200);
    }
}
