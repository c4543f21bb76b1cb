//! The innermost service of the stack: pick an endpoint, send one attempt through the
//! connection pool within the per-try timeout, and tell the balancer how it went.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{header, Method, Request, Response, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::body::{RequestBody, ResponseBody};
use super::connecting::{Limited, MAX_CONNECTING_PER_ENDPOINT};
use super::h1::{Connections, H1Error};
use super::target::Target;
use crate::balance::{Balancer, Failure, HashKey, Pick};
use crate::resilience::{Attempts, CallError, CallFuture};

/// hyper's pooled client, for what the own HTTP/1.1 pool does not speak.
type HyperPool = Client<Limited<hyper_rustls::HttpsConnector<HttpConnector>>, RequestBody>;

/// The connections every stack sends through: plain `http://` HTTP/1.1 over the SDK's own
/// pool ([`super::h1`]: no connection task, no channel per request); mTLS, HTTP/2 and
/// upgrades over hyper's, with this process's identity ([`crate::mtls`]). Either way at most
/// [`MAX_CONNECTING_PER_ENDPOINT`] connections to one endpoint are in the making at once.
#[derive(Clone, Debug)]
pub struct Pool(Arc<Pools>);

/// A [`Pool`]'s two sides, behind one `Arc`: every call clones its stack's pool.
#[derive(Debug)]
struct Pools {
    hyper: HyperPool,
    /// `None` for an HTTP/2 pool: everything goes through hyper's.
    own: Option<Arc<Connections>>,
}

/// Why a request found no answer, from either pool.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// From the own HTTP/1.1 pool.
    #[error(transparent)]
    Own(#[from] H1Error),
    /// From hyper's pool.
    #[error(transparent)]
    Hyper(#[from] hyper_util::client::legacy::Error),
}

impl SendError {
    /// No connection was made: the request surely did not arrive.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Own(err) => err.is_connect(),
            SendError::Hyper(err) => err.is_connect(),
        }
    }

    /// The caller's own request body failed, not the upstream.
    pub fn is_request_body(&self) -> bool {
        match self {
            SendError::Own(err) => matches!(err, H1Error::RequestBody(_)),
            SendError::Hyper(err) => std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<hyper::Error>())
                .is_some_and(hyper::Error::is_user),
        }
    }
}

impl Pool {
    /// Sends `request` (its URI absolute) over the pool that speaks what it needs.
    pub fn request(
        &self,
        request: Request<RequestBody>,
    ) -> impl std::future::Future<Output = Result<Response<ResponseBody>, SendError>> + Send + 'static {
        let own = self.0.own.clone().filter(|_| {
            request.uri().scheme() == Some(&Scheme::HTTP)
                && request.version() == Version::HTTP_11
                && request.method() != Method::CONNECT
                && !request.headers().contains_key(header::UPGRADE)
        });
        match own {
            Some(own) => {
                let call = own.send(request);
                Either::Left(async move { Ok(call.await?.map(ResponseBody::from)) })
            }
            None => {
                let call = self.0.hyper.request(request);
                Either::Right(async move { Ok(call.await?.map(ResponseBody::from)) })
            }
        }
    }
}

/// A connection pool with the settings the stack relies on: TCP_NODELAY, a short connect
/// timeout (a refused or unroutable endpoint is found out fast and the call moves on), and
/// idle connections kept for a minute. Over mTLS it presents this process's identity and
/// accepts any workload of the trust domain; [`pool_for`] checks the service too. At most
/// [`MAX_CONNECTING_PER_ENDPOINT`] handshakes to one endpoint are in flight: a cold pool under
/// load waits for the first connections instead of opening one per request.
pub fn pool() -> Pool {
    pool_for(None, false)
}

/// A pool that speaks HTTP/2 with prior knowledge (h2c), for gRPC and other HTTP/2-only
/// upstreams; many requests share one connection per endpoint.
pub fn pool_h2() -> Pool {
    pool_for(None, true)
}

/// A pool to the instances of `callee`: over mTLS, a peer whose certificate names another
/// service is refused in the handshake (an address reused by someone else, a registry gone
/// wrong). HTTP/2 only when `http2`.
pub fn pool_for(callee: Option<&str>, http2: bool) -> Pool {
    let connect_timeout = Duration::from_secs(1);
    let connector = crate::mtls::connector(crate::mtls::installed(), callee, connect_timeout, http2);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(super::h1::IDLE_TIMEOUT);
    if http2 {
        builder.http2_only(true);
    }
    Pool(Arc::new(Pools {
        hyper: builder.build(Limited::new(connector, MAX_CONNECTING_PER_ENDPOINT)),
        own: (!http2).then(|| Connections::new(connect_timeout, MAX_CONNECTING_PER_ENDPOINT)),
    }))
}

/// Sends each request to one endpoint the balancer picks.
#[derive(Clone)]
pub struct EndpointService {
    target: Arc<Target>,
    balancer: Arc<Balancer>,
    pool: Pool,
    per_try_timeout: Duration,
    version: Version,
    wait_for_instance: Duration,
}

impl std::fmt::Debug for EndpointService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointService")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl EndpointService {
    /// Sends to `target`'s endpoints, chosen by `balancer`, through `pool`.
    pub fn new(target: Arc<Target>, balancer: Arc<Balancer>, pool: Pool, per_try_timeout: Duration) -> Self {
        Self {
            target,
            balancer,
            pool,
            per_try_timeout,
            version: Version::HTTP_11,
            wait_for_instance: Duration::ZERO,
        }
    }

    /// With no usable instance (the only one restarting: its successor not registered yet,
    /// or the one it had just tried), wait up to this long for the service's instances to
    /// change before failing with `NoInstance`, as Linkerd queues a request while a service
    /// has no endpoint ready. Zero fails at once.
    pub fn wait_for_instance(mut self, wait: Duration) -> Self {
        self.wait_for_instance = wait;
        self
    }

    /// Whether the endpoint refused its last connection.
    fn refusing(&self, id: &str) -> bool {
        self.balancer.stats(id).is_some_and(|s| s.refusing())
    }

    /// Waits (at most `wait_for_instance`) for the service's instances to change until one
    /// this call has not tried and that does not refuse connections is there, and picks it;
    /// `None` when none came.
    async fn wait_for_pick(&self, key: Option<HashKey>, avoid: &[String]) -> Option<Pick> {
        let mut changes = self.target.changes()?;
        changes.borrow_and_update();
        let until = tokio::time::Instant::now() + self.wait_for_instance;
        loop {
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
            let endpoints = self.target.endpoints();
            // A new instance: one neither tried by this call nor refusing connections.
            let mut shunned: Vec<String> = avoid.to_vec();
            shunned.extend(endpoints.iter().filter(|e| self.refusing(&e.id)).map(|e| e.id.clone()));
            if endpoints.iter().any(|e| !shunned.contains(&e.id)) {
                return self.balancer.pick(&endpoints, key, &shunned);
            }
        }
    }

    /// Sends HTTP/2 requests (with a pool from [`pool_h2`]).
    pub fn http2(mut self, yes: bool) -> Self {
        self.version = if yes { Version::HTTP_2 } else { Version::HTTP_11 };
        self
    }

    /// The balancer (for its statistics).
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }
}

impl tower::Service<Request<RequestBody>> for EndpointService {
    type Response = Response<ResponseBody>;
    type Error = CallError;
    type Future = CallFuture<Response<ResponseBody>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), CallError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let endpoints = self.target.endpoints();
        let attempts = request.extensions().get::<Attempts>().cloned();
        // Only a retry has endpoints to avoid; the first attempt copies nothing.
        let avoid = match &attempts {
            Some(a) if a.count() > 0 => a.tried(),
            _ => Vec::new(),
        };
        let key = request.extensions().get::<HashKey>().copied();
        // No instance at all, or every one refused its last connection (the only one is
        // dead, its successor not registered yet): wait a moment for the instances to change
        // rather than fail, or knock on a dead one again.
        let exhausted = endpoints.is_empty() || endpoints.iter().all(|e| self.refusing(&e.id));
        if exhausted && !self.wait_for_instance.is_zero() && self.target.changes().is_some() {
            let this = self.clone();
            return Box::pin(async move {
                let pick = match this.wait_for_pick(key, &avoid).await {
                    Some(pick) => pick,
                    None => match this.balancer.pick(&this.target.endpoints(), key, &avoid) {
                        Some(pick) => pick,
                        None => {
                            return Err(CallError::NoInstance {
                                service: this.target.name().to_owned(),
                            })
                        }
                    },
                };
                this.send(pick, request, attempts.as_ref()).await
            });
        }
        match self.balancer.pick(&endpoints, key, &avoid) {
            Some(pick) => self.send(pick, request, attempts.as_ref()),
            None => {
                let service = self.target.name().to_owned();
                Box::pin(async move { Err(CallError::NoInstance { service }) })
            }
        }
    }
}

impl EndpointService {
    /// Sends one attempt to the picked endpoint and reports its outcome to the balancer.
    fn send(
        &self,
        pick: Pick,
        mut request: Request<RequestBody>,
        attempts: Option<&Attempts>,
    ) -> CallFuture<Response<ResponseBody>> {
        if let Some(attempts) = attempts {
            attempts.push(pick.endpoint.id.clone());
        }
        let endpoint = pick.endpoint.id.clone();
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(pick.endpoint.scheme.clone());
        parts.authority = Some(pick.endpoint.authority.clone());
        if !pick.endpoint.base_path.is_empty() || parts.path_and_query.is_none() {
            let path = parts.path_and_query.as_ref().map_or("/", PathAndQuery::as_str);
            parts.path_and_query = format!("{}{path}", pick.endpoint.base_path).parse().ok();
        }
        let uri = Uri::from_parts(parts);
        match uri {
            Ok(uri) => *request.uri_mut() = uri,
            Err(err) => {
                let reason = format!("cannot address {endpoint}: {err}");
                return Box::pin(async move { Err(CallError::InvalidRequest(reason)) });
            }
        }
        *request.version_mut() = self.version;
        let send = self.pool.request(request);
        let per_try = self.per_try_timeout;
        Box::pin(async move {
            match tokio::time::timeout(per_try, send).await {
                Ok(Ok(response)) => {
                    if crate::resilience::server_failure(response.status(), response.headers()) {
                        pick.failure(Failure::Other);
                    } else {
                        pick.success();
                    }
                    Ok(response)
                }
                Ok(Err(err)) if err.is_request_body() => {
                    // The caller's body failed: the endpoint is not to blame (the pick is
                    // reported as cancelled when dropped).
                    drop(pick);
                    Err(CallError::RequestBody { cause: Box::new(err) })
                }
                Ok(Err(err)) if err.is_connect() => {
                    pick.failure(Failure::Connect);
                    Err(CallError::Connect {
                        endpoint,
                        cause: Box::new(err),
                    })
                }
                Ok(Err(err)) => {
                    pick.failure(Failure::Other);
                    Err(CallError::Transport {
                        endpoint,
                        cause: Box::new(err),
                    })
                }
                Err(_) => {
                    pick.failure(Failure::Other);
                    Err(CallError::Timeout {
                        endpoint,
                        after: per_try,
                    })
                }
            }
        })
    }
}
