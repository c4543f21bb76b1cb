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
        Self { inner, timeout }
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
