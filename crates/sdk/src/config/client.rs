//! A client of the control plane's config API: what the SDK's live config, the gateway and
//! the `flotilla config` commands all speak.

use std::time::Duration;

use flotilla_api::config::{
    ApplyReport, ConfigDiff, ConfigEntry, ConfigKey, ConfigWrite, InstanceConfig, Resolved, Rollback,
};
use http::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::{HttpClient, HttpError};

/// Why a config call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigClientError {
    /// Compare-and-set failed: the key moved on since it was read.
    #[error("{0}")]
    Conflict(String),
    /// No such key or revision.
    #[error("{0}")]
    NotFound(String),
    /// The control plane refused the token.
    #[error("the control plane refused the token (is FLOTILLA_TOKEN or the data dir right?)")]
    Unauthorized,
    /// Anything else: unreachable, timed out, refused as malformed.
    #[error(transparent)]
    Http(HttpError),
}

impl From<HttpError> for ConfigClientError {
    fn from(err: HttpError) -> Self {
        let detail = |err: &HttpError| match err {
            HttpError::Status { problem, .. } => problem.detail.clone().unwrap_or_else(|| problem.title.clone()),
            other => other.to_string(),
        };
        match err.status() {
            Some(StatusCode::PRECONDITION_FAILED) => Self::Conflict(detail(&err)),
            Some(StatusCode::NOT_FOUND) => Self::NotFound(detail(&err)),
            Some(StatusCode::UNAUTHORIZED) => Self::Unauthorized,
            _ => Self::Http(err),
        }
    }
}

/// A write's condition and provenance.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// Compare-and-set on this revision of the key (0: only if the key has no value).
    pub expect: Option<u64>,
    /// Who writes.
    pub author: Option<String>,
    /// Why.
    pub comment: Option<String>,
}

/// A client of `/v1/config`.
#[derive(Clone, Debug)]
pub struct ConfigClient {
    http: HttpClient,
    base: String,
    token: Option<String>,
}

impl ConfigClient {
    /// A client for the control plane at `control_addr` (`host:port` or an `http://` URL).
    pub fn new(control_addr: &str, token: Option<String>) -> Self {
        let base = crate::http::base_url(control_addr);
        Self {
            http: HttpClient::for_control(Duration::from_secs(5)).failing_over(control_addr),
            base,
            token,
        }
    }

    fn key_url(&self, key: &ConfigKey) -> String {
        format!("{}/v1/config/{}/{}/{}", self.base, key.scope, key.profile, key.key)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&B>,
        expect: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<T, ConfigClientError> {
        let headers: Vec<(header::HeaderName, String)> = match expect {
            Some(0) => vec![(header::IF_NONE_MATCH, "*".into())],
            Some(revision) => vec![(header::IF_MATCH, format!("\"{revision}\""))],
            None => Vec::new(),
        };
        let (_, _, uri, bytes) = self
            .http
            .send_with_headers(method, uri, self.token.as_deref(), &headers, body, timeout)
            .await?;
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|cause| ConfigClientError::Http(HttpError::Decode { uri, cause }))
    }

    /// A key's current value (secrets shown when the client has the token).
    pub async fn get(&self, key: &ConfigKey) -> Result<ConfigEntry, ConfigClientError> {
        self.call::<(), _>(Method::GET, &self.key_url(key), None, None, None)
            .await
    }

    /// One revision of a key.
    pub async fn get_at(&self, key: &ConfigKey, revision: u64) -> Result<ConfigEntry, ConfigClientError> {
        let uri = format!("{}?revision={revision}", self.key_url(key));
        self.call::<(), _>(Method::GET, &uri, None, None, None).await
    }

    /// Every key with a value (of one scope and/or profile); secrets masked.
    pub async fn list(
        &self,
        scope: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Vec<ConfigEntry>, ConfigClientError> {
        let mut query = Vec::new();
        if let Some(scope) = scope {
            query.push(format!("scope={scope}"));
        }
        if let Some(profile) = profile {
            query.push(format!("profile={profile}"));
        }
        let uri = format!("{}/v1/config?{}", self.base, query.join("&"));
        self.call::<(), _>(Method::GET, &uri, None, None, None).await
    }

    /// Sets a key: a new revision.
    pub async fn set(
        &self,
        key: &ConfigKey,
        value: serde_json::Value,
        secret: bool,
        write: Write,
    ) -> Result<ConfigEntry, ConfigClientError> {
        let body = ConfigWrite {
            value,
            secret,
            author: write.author,
            comment: write.comment,
        };
        self.call(Method::PUT, &self.key_url(key), Some(&body), write.expect, None)
            .await
    }

    /// Deletes a key (a new revision with no value).
    pub async fn delete(&self, key: &ConfigKey, write: Write) -> Result<ConfigEntry, ConfigClientError> {
        let mut uri = self.key_url(key);
        if let Some(comment) = &write.comment {
            uri.push_str(&format!("?comment={}", encode(comment)));
        }
        self.call::<(), _>(Method::DELETE, &uri, None, write.expect, None).await
    }

    /// A key's revisions, newest first.
    pub async fn history(&self, key: &ConfigKey, limit: u32) -> Result<Vec<ConfigEntry>, ConfigClientError> {
        let uri = format!("{}/history?limit={limit}", self.key_url(key));
        self.call::<(), _>(Method::GET, &uri, None, None, None).await
    }

    /// What changed between two revisions of a key (`to` defaults to the newest).
    pub async fn diff(&self, key: &ConfigKey, from: u64, to: Option<u64>) -> Result<ConfigDiff, ConfigClientError> {
        let mut uri = format!("{}/diff?from={from}", self.key_url(key));
        if let Some(to) = to {
            uri.push_str(&format!("&to={to}"));
        }
        self.call::<(), _>(Method::GET, &uri, None, None, None).await
    }

    /// A new revision carrying `revision`'s value.
    pub async fn rollback(
        &self,
        key: &ConfigKey,
        revision: u64,
        write: Write,
    ) -> Result<ConfigEntry, ConfigClientError> {
        let body = Rollback {
            revision,
            author: write.author,
            comment: write.comment,
        };
        let uri = format!("{}/rollback", self.key_url(key));
        self.call(Method::POST, &uri, Some(&body), write.expect, None).await
    }

    /// A service's resolved document; with `index`, blocks until one of its layers changes
    /// after it or `wait` passes.
    pub async fn resolve(
        &self,
        service: &str,
        profile: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<Resolved, ConfigClientError> {
        let mut uri = format!("{}/v1/config/resolve/{service}?profile={profile}", self.base);
        if let Some(index) = index {
            uri.push_str(&format!("&index={index}&wait={}ms", wait.as_millis()));
        }
        let timeout = index.map(|_| wait + Duration::from_secs(5));
        self.call::<(), _>(Method::GET, &uri, None, None, timeout).await
    }

    /// Tells the control plane what this instance did with a revision.
    pub async fn report(&self, instance_id: &str, report: &ApplyReport) -> Result<(), ConfigClientError> {
        let uri = format!("{}/v1/config/applied/{instance_id}", self.base);
        self.call::<_, serde_json::Value>(Method::PUT, &uri, Some(report), None, None)
            .await
            .map(|_| ())
    }

    /// Every live instance's latest report (of one service); with `index`, blocks until a
    /// report arrives after it. Returns the reports and the index to wait on next.
    pub async fn applied(
        &self,
        service: Option<&str>,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<(Vec<InstanceConfig>, u64), ConfigClientError> {
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={service}"));
        }
        if let Some(index) = index {
            query.push(format!("index={index}&wait={}ms", wait.as_millis()));
        }
        let uri = format!("{}/v1/config/applied?{}", self.base, query.join("&"));
        let timeout = index.map(|_| wait + Duration::from_secs(5));
        let response = self
            .http
            .send::<(), Vec<InstanceConfig>>(Method::GET, &uri, self.token.as_deref(), None, timeout)
            .await?;
        let next = response
            .headers
            .get(flotilla_api::INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((response.body, next))
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
