//! A pooled HTTP/1.1 JSON client, for calls to the control plane and for tests and tools.

use std::time::Duration;

use bytes::Bytes;
use flotilla_api::Problem;
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why an HTTP call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URI could not be built.
    #[error("invalid uri `{uri}`")]
    InvalidUri {
        /// The URI as given.
        uri: String,
    },
    /// The request could not be sent or the response not received.
    #[error("{method} {uri}: {}", chain(cause))]
    Transport {
        /// The method.
        method: Method,
        /// The URI.
        uri: Uri,
        /// What the connection said (kept whole so callers can tell a refused connection
        /// from a reset one; shown with its causes in the message).
        cause: hyper_util::client::legacy::Error,
    },
    /// No response within the time allowed.
    #[error("{method} {uri}: no response within {timeout:?}")]
    Timeout {
        /// The method.
        method: Method,
        /// The URI.
        uri: Uri,
        /// The time allowed.
        timeout: Duration,
    },
    /// The body could not be read.
    #[error("{uri}: reading the body: {}", chain(cause))]
    Body {
        /// The URI.
        uri: Uri,
        /// What went wrong.
        cause: hyper::Error,
    },
    /// The server answered with an error status; its problem document, or one made from it.
    #[error("{uri}: {problem}")]
    Status {
        /// The URI.
        uri: Uri,
        /// The problem the server sent.
        problem: Problem,
    },
    /// The body was not the JSON expected.
    #[error("{uri}: unexpected response body: {cause}")]
    Decode {
        /// The URI.
        uri: Uri,
        /// The JSON error.
        cause: serde_json::Error,
    },
}

/// An error and its causes on one line: "client error (Connect): tcp connect error: Connection refused".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

impl HttpError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { problem, .. } => Some(problem.status_code()),
            _ => None,
        }
    }
}

/// A decoded response: status, headers and typed body.
#[derive(Debug)]
pub struct JsonResponse<T> {
    /// The status (always a success).
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: T,
}

/// A pooled HTTP client that speaks JSON and understands problem+json errors; `https://`
/// URLs are spoken with this process's workload identity ([`crate::mtls`]).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// The control plane's replicas, when this client speaks to one: a request to the first
    /// one's base URL goes to the one in use, and moves on when it does not answer.
    replicas: Option<Replicas>,
}

/// The replicas of a control plane, given as a list (`h1:7070,h2:7070`, or URLs) or as one
/// DNS name that resolves to several addresses. The one in use is shared by every clone, so a
/// client that moved stays moved.
#[derive(Clone, Debug)]
pub struct Replicas {
    bases: std::sync::Arc<[String]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Replicas {
    /// The replicas of `addrs`, each `host:port` or an `http(s)://` URL, comma-separated.
    pub fn parse(addrs: &str) -> Self {
        let bases: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(super::base_url)
            .collect();
        Self {
            bases: bases.into(),
            current: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// The base URL requests are written against (the first replica's).
    pub fn primary(&self) -> &str {
        self.bases.first().map_or("", String::as_str)
    }

    /// The base URL of the replica in use.
    pub fn current(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len().max(1);
        self.bases.get(i).map_or("", String::as_str)
    }

    /// Every replica, the one in use first.
    fn in_order(&self) -> Vec<(usize, String)> {
        let n = self.bases.len();
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        (0..n)
            .map(|k| ((start + k) % n, self.bases[(start + k) % n].clone()))
            .collect()
    }

    /// The addresses one named replica resolves to, as base URLs (a headless Service's name
    /// resolves to every pod): tried when the name itself did not answer.
    async fn resolved(base: &str) -> Vec<String> {
        let Ok(uri) = base.parse::<Uri>() else {
            return Vec::new();
        };
        let (Some(host), Some(scheme)) = (uri.host().map(str::to_owned), uri.scheme_str().map(str::to_owned)) else {
            return Vec::new();
        };
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Vec::new();
        }
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let found = tokio::net::lookup_host(format!("{host}:{port}")).await;
        let addrs: Vec<String> = match found {
            Ok(addrs) => addrs.map(|a| format!("{scheme}://{a}")).collect(),
            Err(_) => Vec::new(),
        };
        addrs
    }
}

/// Whether a failed request may be sent again to another replica: always when it never left
/// (the connection was refused), else only when sending it twice does no harm.
fn may_retry(method: &Method, err: &HttpError) -> bool {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    );
    match err {
        HttpError::Transport { cause, .. } => cause.is_connect() || idempotent,
        HttpError::Timeout { .. } => idempotent,
        _ => false,
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl HttpClient {
    /// A client whose requests give up after `timeout` (long polls pass their own).
    pub fn new(timeout: Duration) -> Self {
        Self::over(
            crate::mtls::connector(crate::mtls::installed(), None, Duration::from_secs(2), false),
            timeout,
        )
    }

    /// A client for the control plane: over `https://` it presents this process's identity and
    /// accepts only a server whose certificate names the control plane
    /// (`spiffe://flotilla/control`), not any workload that might have taken its port.
    pub fn for_control(timeout: Duration) -> Self {
        Self::over(
            crate::mtls::connector(
                crate::mtls::installed(),
                Some(flotilla_api::identity::CONTROL_SERVICE),
                Duration::from_secs(2),
                false,
            ),
            timeout,
        )
    }

    /// A client that speaks `https://` with the given TLS configuration (an instance's first
    /// call for its certificate, before it has one).
    pub fn with_tls(config: tokio_rustls::rustls::ClientConfig, timeout: Duration) -> Self {
        Self::over(
            crate::mtls::connector_with(config, Duration::from_secs(2), false),
            timeout,
        )
    }

    /// A plain-HTTP client over the given connector (tests and simulators pass their own).
    pub fn with_connector(connector: HttpConnector, timeout: Duration) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::mtls::untrusting_client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Self::over(connector, timeout)
    }

    fn over(connector: HttpsConnector<HttpConnector>, timeout: Duration) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner,
            timeout,
            replicas: None,
        }
    }

    /// This client, sending what is written against the first of the replicas `control_addr`
    /// names to the one in use, and on a refused connection or a timeout to the next (a
    /// blocking query keeps its index: it is the store's, the same on every replica). Nothing
    /// above notices.
    pub fn failing_over(mut self, control_addr: &str) -> Self {
        self.replicas = Some(Replicas::parse(control_addr));
        self
    }

    /// The control plane's replicas this client moves between, if any.
    pub fn replicas(&self) -> Option<&Replicas> {
        self.replicas.as_ref()
    }

    /// Sends a request with an optional JSON body and bearer token; decodes a JSON answer.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<JsonResponse<T>, HttpError> {
        let (status, headers, uri, bytes) = self.send_raw(method, uri, token, body, timeout).await?;
        let body = if bytes.is_empty() {
            serde_json::from_slice(b"null")
        } else {
            serde_json::from_slice(&bytes)
        }
        .map_err(|cause| HttpError::Decode { uri, cause })?;
        Ok(JsonResponse { status, headers, body })
    }

    /// Like [`HttpClient::send`], but returns the body as bytes.
    pub async fn send_raw<B: Serialize>(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, HeaderMap, Uri, Bytes), HttpError> {
        self.send_with_headers(method, uri, token, &[], body, timeout).await
    }

    /// Like [`HttpClient::send_raw`], with extra request headers (`If-Match`, …).
    pub async fn send_with_headers<B: Serialize>(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        headers: &[(header::HeaderName, String)],
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, HeaderMap, Uri, Bytes), HttpError> {
        let Some((replicas, path)) = self
            .replicas
            .as_ref()
            .and_then(|r| uri.strip_prefix(r.primary()).map(|path| (r, path)))
        else {
            return self.send_once(method, uri, token, headers, body, timeout).await;
        };
        let mut candidates = replicas.in_order();
        let mut expanded = false;
        let mut failed = None;
        let mut k = 0;
        while let Some((i, base)) = candidates.get(k).cloned() {
            k += 1;
            match self
                .send_once(method.clone(), &format!("{base}{path}"), token, headers, body, timeout)
                .await
            {
                Err(err) if may_retry(&method, &err) => {
                    tracing::debug!(replica = %base, error = %err, "control plane replica did not answer; trying another");
                    // One name that resolves to several addresses: each of them is a replica.
                    if !expanded && replicas.bases.len() == 1 {
                        expanded = true;
                        candidates.extend(Replicas::resolved(&base).await.into_iter().map(|b| (i, b)));
                    }
                    failed = Some(err);
                }
                Err(err) => {
                    if matches!(err, HttpError::Transport { .. } | HttpError::Timeout { .. }) {
                        // Not sent again (it may have been taken), but the next one goes elsewhere.
                        let _ = replicas.current.compare_exchange(
                            i,
                            i + 1,
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    return Err(err);
                }
                Ok(answer) => {
                    if replicas.current.swap(i, std::sync::atomic::Ordering::Relaxed) != i {
                        tracing::info!(replica = %base, "control plane: moved to another replica");
                    }
                    return Ok(answer);
                }
            }
        }
        Err(failed.unwrap_or(HttpError::InvalidUri { uri: uri.to_owned() }))
    }

    async fn send_once<B: Serialize>(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        headers: &[(header::HeaderName, String)],
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, HeaderMap, Uri, Bytes), HttpError> {
        let parsed: Uri = uri.parse().map_err(|_| HttpError::InvalidUri { uri: uri.to_owned() })?;
        let mut builder = Request::builder().method(method.clone()).uri(parsed.clone());
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(name, value.as_str());
        }
        let payload = match body {
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                // Serializing our own wire types cannot fail.
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|_| HttpError::InvalidUri { uri: uri.to_owned() })?;
        let timeout = timeout.unwrap_or(self.timeout);
        let call = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|cause| HttpError::Transport {
                    method: method.clone(),
                    uri: parsed.clone(),
                    cause,
                })?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|cause| HttpError::Body {
                    uri: parsed.clone(),
                    cause,
                })?
                .to_bytes();
            Ok::<_, HttpError>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| HttpError::Timeout {
                method: method.clone(),
                uri: parsed.clone(),
                timeout,
            })??;
        if !parts.status.is_success() {
            let problem = serde_json::from_slice::<Problem>(&bytes).unwrap_or_else(|_| {
                Problem::new(
                    parts.status.as_u16(),
                    "upstream-status",
                    parts.status.canonical_reason().unwrap_or("error"),
                )
                .with_detail(String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned())
            });
            return Err(HttpError::Status { uri: parsed, problem });
        }
        Ok((parts.status, parts.headers, parsed, bytes))
    }

    /// GET and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, uri: &str, token: Option<&str>) -> Result<T, HttpError> {
        Ok(self.send::<(), T>(Method::GET, uri, token, None, None).await?.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering `GET /who` with its name, and `POST /who` likewise.
    async fn replica(name: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/who",
            axum::routing::get(move || async move { axum::Json(name) }).post(move || async move { axum::Json(name) }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, task)
    }

    async fn refused() -> std::net::SocketAddr {
        // Bound and dropped: nothing listens there now.
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_replica_gives_way_to_the_next_and_the_client_stays_moved() {
        let dead = refused().await;
        let (b, _b) = replica("b").await;
        let http = HttpClient::new(Duration::from_secs(2)).failing_over(&format!("{dead},{b}"));
        let primary = http.replicas().unwrap().primary().to_owned();
        assert_eq!(primary, format!("http://{dead}"));
        let who: String = http.get_json(&format!("{primary}/who"), None).await.unwrap();
        assert_eq!(who, "b");
        assert_eq!(http.replicas().unwrap().current(), format!("http://{b}"));
        // A write whose connection was refused never left: it goes to the next one too.
        let posted: String = http
            .send::<(), String>(Method::POST, &format!("{primary}/who"), None, None, None)
            .await
            .unwrap()
            .body;
        assert_eq!(posted, "b");
        // A URL that is not the control plane's is sent as it is.
        let (c, _c) = replica("c").await;
        let direct: String = http.get_json(&format!("http://{c}/who"), None).await.unwrap();
        assert_eq!(direct, "c");
    }

    #[tokio::test]
    async fn when_the_replica_in_use_dies_the_next_request_goes_to_another() {
        let (a, a_task) = replica("a").await;
        let (b, _b) = replica("b").await;
        let http = HttpClient::new(Duration::from_secs(2)).failing_over(&format!("{a},{b}"));
        let url = format!("http://{a}/who");
        assert_eq!(http.get_json::<String>(&url, None).await.unwrap(), "a");
        a_task.abort();
        let _ = a_task.await;
        // The pooled connection may linger a moment; every answer still comes from a replica.
        for _ in 0..5 {
            let who: String = http.get_json(&url, None).await.unwrap();
            assert_eq!(who, "b");
        }
    }

    #[tokio::test]
    async fn one_name_is_every_address_it_resolves_to() {
        let (b, _b) = replica("b").await;
        let addresses = Replicas::resolved(&format!("http://localhost:{}", b.port())).await;
        assert!(
            addresses.contains(&format!("http://127.0.0.1:{}", b.port())),
            "{addresses:?}"
        );
        // An address is itself: nothing to resolve.
        assert!(Replicas::resolved(&format!("http://{b}")).await.is_empty());
        // Given as a name, a replica that answers on one of its addresses is reached.
        let http = HttpClient::new(Duration::from_secs(2)).failing_over(&format!("localhost:{}", b.port()));
        let who: String = http
            .get_json(&format!("http://localhost:{}/who", b.port()), None)
            .await
            .unwrap();
        assert_eq!(who, "b");
    }

    #[tokio::test]
    async fn every_replica_refusing_is_the_last_error() {
        let (x, y) = (refused().await, refused().await);
        let http = HttpClient::new(Duration::from_secs(2)).failing_over(&format!("{x},{y}"));
        let err = http
            .get_json::<String>(&format!("http://{x}/who"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Transport { .. }), "{err}");
    }
}
