//! The Flotilla gateway: the edge proxy that routes by path prefix to registry services or
//! static upstreams, streams bodies both ways and pools upstream connections.
//!
//! A request's path through the code: [`serve`] accepts the connection and hands it to the
//! gateway's own HTTP/1 reader ([`h1`]) or to hyper's HTTP/2 ([`h2`]), [`Gateway::handle`] assigns a
//! request id and finds the [`routes::Route`], [`proxy::forward`] rewrites it and sends it
//! through the route's resilient stack (the SDK's bulkhead → breaker → deadline → retry →
//! balancer → endpoint, shared with the service client), and [`rescue`] turns any failure
//! into problem+json.

pub mod edge;
pub mod forwarded;
pub mod h1;
pub mod h2;
pub mod metrics;
pub mod normalize;
pub mod openapi;
pub mod policy;
pub mod process;
pub mod proxy;
pub mod reload;
pub mod rescue;
pub mod routes;
pub mod tls;

use flotilla::telemetry::edge::{EdgeSpan, Outcome};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use flotilla::client::RequestBody;
use flotilla::discovery::Discovery;
use flotilla::resilience::Attempts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::REQUEST_ID;
use crate::rescue::{json_response, problem_response, GatewayError};
use crate::routes::RouteTable;

/// The body of every response the gateway sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, flotilla::client::BodyError>;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Time in-flight requests get to finish at shutdown.
    pub drain_timeout: Duration,
    /// Terminate TLS with this certificate (HTTP/2 and HTTP/1.1 by ALPN); plain text without.
    pub tls: Option<tls::Tls>,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed (none by default).
    pub trusted_proxies: forwarded::TrustedProxies,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(3),
            tls: None,
            trusted_proxies: Default::default(),
        }
    }
}

/// Marks a request that came over TLS (for `X-Forwarded-Proto`).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// The gateway's shared state: routes (each with its resilient stack) and discovery.
pub struct Gateway {
    routes: ArcSwap<RouteTable>,
    discovery: Option<Discovery>,
    config: GatewayConfig,
    /// Requests no route took (refused at the edge, unknown paths, admin).
    unrouted: metrics::RouteMetrics,
    /// The merged OpenAPI document of the routed services.
    openapi: openapi::Merged,
}

impl Gateway {
    /// A gateway over a route table built with the same `discovery`.
    pub fn new(routes: RouteTable, discovery: Option<Discovery>, config: GatewayConfig) -> Arc<Self> {
        Arc::new(Self {
            routes: ArcSwap::from_pointee(routes),
            discovery,
            config,
            unrouted: Default::default(),
            openapi: Default::default(),
        })
    }

    /// Swaps the route table atomically; requests in flight finish on the old one.
    pub fn replace_routes(&self, routes: RouteTable) {
        self.routes.store(Arc::new(routes));
    }

    /// Whether the gateway can route: discovery (when used) has answered at least once.
    pub fn is_ready(&self) -> bool {
        self.discovery.as_ref().is_none_or(|d| d.snapshot().index > 0)
    }

    /// Handles one request from a client at `peer`. Never fails: errors become responses.
    ///
    /// The request is served in a server span (child of the client's `traceparent`, if it
    /// sent one) whose context goes upstream; see `flotilla::telemetry::sampling` for which
    /// of these spans are kept.
    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<RequestBody>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let edge = EdgeSpan::start(request.headers());
        let client = self.config.trusted_proxies.settle(peer.ip(), request.headers_mut());
        let authenticated = [http::header::AUTHORIZATION, http::header::COOKIE]
            .iter()
            .any(|h| request.headers().contains_key(h))
            || request.headers().contains_key("x-api-key");
        let tls = request.extensions().get::<Secure>().is_some();
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| {
                v.len() <= 128
                    && v.to_str()
                        .is_ok_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()))
            })
            .cloned()
            .unwrap_or_else(new_request_id);
        let method = request.method().clone();
        let path = request.uri().path().to_owned();

        let attempts = Attempts::default();
        let routes = self.routes.load_full();
        let mut matched: Option<&routes::Route> = None;
        let normal = normalize::normalize(&path).map(|p| p.into_owned());
        let (mut response, route, error) = match normal {
            Err(err) => {
                let err = GatewayError::Path(err);
                (
                    problem_response(&err.to_problem().with_instance(request_id_str(&request_id))),
                    String::new(),
                    Some(err),
                )
            }
            Ok(normal) if normal.starts_with("/-/") => (self.admin(&method, &normal, false), "admin".to_owned(), None),
            Ok(normal) if normal == "/api/openapi.json" && method == Method::GET => {
                let document = self.openapi.document(&routes, self.discovery.as_ref()).await;
                (json_response(StatusCode::OK, &document), "openapi".to_owned(), None)
            }
            Ok(normal) => {
                let host = request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| request.uri().host().map(str::to_owned));
                let found = routes.find(&normal, &method, host.as_deref(), request.headers());
                let result = match (edge::check_request(request.headers()), found) {
                    (Err(err), _) => Err(GatewayError::Edge(err)),
                    (Ok(()), None) => Err(GatewayError::NoRoute(normal.clone())),
                    (Ok(()), Some(route)) => {
                        matched = Some(route);
                        proxy::forward(route, request, &normal, client, &request_id, &attempts, &edge).await
                    }
                };
                let route = matched.map(|r| r.name.clone()).unwrap_or_default();
                match result {
                    Ok(response) => (response, route, None),
                    Err(err) => (err.to_response(request_id_str(&request_id)), route, Some(err)),
                }
            }
        };
        response.headers_mut().insert(REQUEST_ID.clone(), request_id.clone());
        secure_headers(response.headers_mut(), authenticated, tls);
        let status = response.status().as_u16();
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let retries = attempts.count().saturating_sub(1);
        // The endpoints tried are copied out only when a log line will show them.
        let logged = error.is_some() || tracing::enabled!(target: "access", tracing::Level::INFO);
        let tried = if logged { attempts.tried() } else { Vec::new() };
        let upstream = tried.last().cloned().unwrap_or_default();
        let trace_id = edge.trace_id();
        edge.finish(&Outcome {
            method: &method,
            route: &route,
            path: &path,
            status,
            upstream: &upstream,
            error: error.as_ref().map(|e| e as &dyn std::fmt::Display),
        });
        let trace_id = trace_id.map(tracing::field::display);
        let counters = matched.map_or(&self.unrouted, |r| &r.metrics);
        counters.observe(status, started.elapsed(), retries);
        if let Some(GatewayError::Call(err)) = &error {
            counters.upstream_error(metrics::UpstreamError::of(err));
        }
        match &error {
            None if retries == 0 => tracing::info!(
                target: "access",
                request_id = request_id_str(&request_id),
                trace_id,
                %method, %path, status, route, upstream, duration_ms = format_args!("{millis:.2}"),
                %client,
                "{method} {path} {status}"
            ),
            None => tracing::info!(
                target: "access",
                request_id = request_id_str(&request_id),
                trace_id,
                %method, %path, status, route, upstream, duration_ms = format_args!("{millis:.2}"),
                %client, retries, tried = %tried.join(","),
                "{method} {path} {status}"
            ),
            Some(err) => tracing::warn!(
                target: "access",
                request_id = request_id_str(&request_id),
                trace_id,
                %method, %path, status, route, duration_ms = format_args!("{millis:.2}"),
                %client, retries, tried = %tried.join(","), error = %err,
                "{method} {path} {status}"
            ),
        }
        Ok(response)
    }

    /// A request to the admin listener: the admin endpoints only, whole.
    pub async fn handle_admin(self: Arc<Self>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        let path = normalize::normalize(request.uri().path()).map(|p| p.into_owned());
        let mut response = match path {
            Ok(path) => self.admin(request.method(), &path, true),
            Err(err) => problem_response(&GatewayError::Path(err).to_problem()),
        };
        secure_headers(response.headers_mut(), false, false);
        Ok(response)
    }

    /// The admin endpoints. On the API listener (`whole` false) only liveness and readiness
    /// answer, without detail: the route table and the metrics tell an attacker too much, so
    /// they are served on the admin listener only (loopback by default, as Envoy's admin port).
    fn admin(&self, method: &Method, path: &str, whole: bool) -> Response<ProxyBody> {
        if method != Method::GET {
            return problem_response(&flotilla_api::Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
            ));
        }
        match path {
            // `/health/*` as every other Flotilla process names them, for probes.
            "/health/ready" | "/health/live" => {
                let path = path.replacen("/health/", "/-/", 1);
                self.admin(method, &path, whole)
            }
            "/-/ready" if self.is_ready() && !whole => {
                json_response(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            }
            "/-/ready" if self.is_ready() => {
                // Serving from a stale view is still ready: the last view routes traffic while
                // the control plane is away. The details say so.
                let discovery = self.discovery.as_ref().map(|d| {
                    let snapshot = d.snapshot();
                    serde_json::json!({ "index": snapshot.index, "stale": snapshot.stale })
                });
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ready", "discovery": discovery}),
                )
            }
            "/-/ready" => problem_response(
                &flotilla_api::Problem::new(503, "not-ready", "Not ready")
                    .with_detail("waiting for the first answer from the registry"),
            ),
            "/-/live" => json_response(StatusCode::OK, &serde_json::json!({"status": "live"})),
            _ if !whole => problem_response(&flotilla_api::Problem::not_found(format!(
                "no endpoint `{path}` here; the gateway's admin endpoints are on its admin listener"
            ))),
            "/-/metrics" => {
                let routes = self.routes.load();
                let mut text = metrics::render(
                    routes
                        .routes()
                        .iter()
                        .map(|r| (r.name.as_str(), &r.metrics, r.stack.balancer().ejections()))
                        .chain(std::iter::once(("", &self.unrouted, 0))),
                );
                text.push_str(&flotilla::telemetry::metrics::render_process());
                let mut response = Response::new(
                    http_body_util::Full::new(Bytes::from(text))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            "/-/routes" => {
                let routes = self.routes.load();
                let list: Vec<_> = routes
                    .routes()
                    .iter()
                    .map(|r| {
                        let target = r.stack.target();
                        let now = tokio::time::Instant::now();
                        let endpoints: Vec<_> = target
                            .endpoints()
                            .iter()
                            .map(|e| {
                                let stats = r.stack.balancer().stats(&e.id);
                                serde_json::json!({
                                    "address": e.id,
                                    "instance_id": e.instance_id,
                                    "weight": e.weight,
                                    "ejected": stats.as_ref().is_some_and(|s| s.is_ejected(now)),
                                    "in_flight": stats.as_ref().map_or(0, |s| s.in_flight()),
                                    "rtt_ms": stats.as_ref().map(|s| (s.rtt_ms() * 100.0).round() / 100.0),
                                })
                            })
                            .collect();
                        serde_json::json!({
                            "name": r.name,
                            "path": r.path.describe(),
                            "backend": format!("{target:?}"),
                            "rewrite": r.rewrite,
                            "breaker": r.stack.breaker().state().as_str(),
                            "endpoints": endpoints,
                            "versions": r.shares.iter().map(|share| serde_json::json!({
                                "version": share.version,
                                "weight": share.weight,
                                "endpoints": share.stack.target().endpoints().len(),
                                "breaker": share.stack.breaker().state().as_str(),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json_response(StatusCode::OK, &serde_json::json!({ "routes": list }))
            }
            _ => problem_response(&flotilla_api::Problem::not_found(format!("no admin endpoint `{path}`"))),
        }
    }
}

fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A UUID's text is always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn request_id_str(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("-")
}

/// Serves the admin endpoints (`/-/routes`, `/-/metrics`, `/-/ready` with detail, `/-/live`)
/// on their own listener until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let gateway = gateway.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| gateway.clone().handle_admin(req));
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// Headers every answer carries: no MIME sniffing (a JSON answer is never run as a script);
/// an answer to a request that carried credentials is not stored by any cache; HSTS when the
/// connection is TLS.
pub fn secure_headers(headers: &mut http::HeaderMap, authenticated: bool, tls: bool) {
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if authenticated {
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        headers.insert(
            http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Accepts connections on `listener` (HTTP/1.1 and h2c in plain text; HTTP/1.1 and HTTP/2 by
/// ALPN over TLS) until `shutdown` resolves, then lets in-flight requests finish within the
/// drain timeout.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Every connection holds a receiver: the drain is over when none is left.
    let (closing, open) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let open = open.clone();
                let acceptor = gateway.config.tls.as_ref().map(tls::Tls::acceptor);
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_plain(stream, gateway, peer, open).await,
                        Some(acceptor) => {
                            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(err)) => {
                                    tracing::debug!(error = %err, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let peer = h1::Peer { addr: peer, secure: true };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                h2::serve_connection(stream, BytesMut::new(), gateway, peer, open).await;
                            } else {
                                h1::serve_connection(stream, BytesMut::new(), gateway, peer, open).await;
                            }
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(open);
    tracing::info!("gateway draining");
    let _ = closing.send(true);
    if tokio::time::timeout(gateway.config.drain_timeout, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}

/// A plain-text connection: HTTP/2 when it opens with the preface (prior knowledge),
/// HTTP/1 otherwise.
async fn serve_plain(mut stream: TcpStream, gateway: Arc<Gateway>, peer: SocketAddr, mut open: watch::Receiver<bool>) {
    let peer = h1::Peer {
        addr: peer,
        secure: false,
    };
    let mut early = BytesMut::with_capacity(h1::HEAD_BUFFER);
    loop {
        let seen = early.len().min(h2::PREFACE.len());
        if early[..seen] != h2::PREFACE[..seen] {
            return h1::serve_connection(stream, early, gateway, peer, open).await;
        }
        if seen == h2::PREFACE.len() {
            return h2::serve_connection(stream, early, gateway, peer, open).await;
        }
        tokio::select! {
            read = tokio::time::timeout(h1::IDLE_TIMEOUT, stream.read_buf(&mut early)) => match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            },
            _ = open.changed() => return,
        }
    }
}
