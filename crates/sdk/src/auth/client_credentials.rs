//! OAuth 2.0 client credentials (RFC 6749 §4.4) for a service calling others on its own
//! behalf: one token is fetched from the issuer's token endpoint, shared by every call, and
//! renewed a minute before it expires (or at once when a callee refuses it), with one fetch
//! at a time however many calls are waiting.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use serde::Deserialize;

use crate::client::{Propagated, ServiceClient};
use crate::resilience::CallError;

/// The part of a token response we use.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// A service's own access token, kept fresh.
pub struct ClientCredentials {
    issuer: ServiceClient,
    path: String,
    form: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The form holds the secret: never print it.
        f.debug_struct("ClientCredentials")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Tokens for client `id` with `secret` and `scope` (space-separated), from the token
    /// endpoint at `path` of the service `issuer` reaches.
    pub fn new(issuer: ServiceClient, path: impl Into<String>, id: &str, secret: &str, scope: &str) -> Self {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", id)
            .append_pair("client_secret", secret)
            .append_pair("scope", scope)
            .finish();
        Self {
            issuer,
            path: path.into(),
            form,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A token valid for at least another minute (or as long as it was issued for, if less).
    pub async fn token(&self) -> Result<String, CallError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let request = Request::post(&self.path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Bytes::from(self.form.clone()))
            .map_err(|e| CallError::InvalidRequest(e.to_string()))?;
        // The service's own call: nothing of a request being served (a user's token) goes along.
        let response = Propagated::default().scope(self.issuer.send(request)).await?;
        let service = self.issuer.stack().target().name().to_owned();
        if !response.status().is_success() {
            return Err(CallError::Status {
                service,
                status: response.status(),
                problem: serde_json::from_slice(response.body()).ok(),
            });
        }
        let answer: TokenResponse = serde_json::from_slice(response.body()).map_err(|err| CallError::Body {
            service,
            cause: Box::new(err),
        })?;
        let lifetime = Duration::from_secs(answer.expires_in);
        let margin = Duration::from_secs(60).min(lifetime / 2);
        *cached = Some((answer.access_token.clone(), Instant::now() + lifetime - margin));
        Ok(answer.access_token)
    }

    /// Drops the kept token (a callee answered 401): the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
