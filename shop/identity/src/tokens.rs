//! The OAuth 2.0 token endpoint (RFC 6749 §3.2, §4.3, §4.4, §6): the `password` grant for the
//! first-party shop client, `refresh_token` with rotation and reuse detection (OAuth 2.0
//! Security BCP §4.14), and `client_credentials` for services. Access tokens are EdDSA JWTs
//! naming their key; refresh tokens are opaque, 256 random bits, stored only as hashes.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::accounts::{self, Account};
use crate::config::IdentityConfig;
use crate::keys::KeyRing;
use crate::throttle::{Limits, Throttle, ThrottleError};

/// The first-party shop client: public (no secret), `password` and `refresh_token` grants.
pub const SHOP_WEB: &str = "shop-web";
/// Scopes the shop client may ask for; `shop` when it asks for none.
pub const SHOP_SCOPES: &[&str] = &["openid", "profile", "shop"];

/// The grants the token endpoint serves.
pub const GRANT_TYPES: &[&str] = &["password", "refresh_token", "client_credentials"];

fn grant_type() -> utoipa::openapi::Object {
    crate::api::one_of(GRANT_TYPES, "The grant.")
}

fn bearer() -> utoipa::openapi::Object {
    crate::api::one_of(&["Bearer"], "Always `Bearer`.")
}

/// A token request's form (every grant's parameters; each grant reads its own).
// A form has no nulls (a parameter is there or not), hence `nullable = false`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// The grant.
    #[schema(schema_with = grant_type, required = true)]
    pub grant_type: Option<String>,
    /// The client (or in HTTP Basic).
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    /// A confidential client's secret (or in HTTP Basic).
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
    /// `password` grant: the email.
    #[schema(nullable = false)]
    pub username: Option<String>,
    /// `password` grant: the password.
    #[schema(nullable = false)]
    pub password: Option<String>,
    /// Space-separated scopes asked for.
    #[schema(nullable = false)]
    pub scope: Option<String>,
    /// `refresh_token` grant: the token.
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
}

/// A successful answer (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(schema_with = bearer)]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The next refresh token (not for `client_credentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// The scopes granted.
    pub scope: String,
}

/// An error answer (RFC 6749 §5.2), carried in a problem document.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A parameter is missing or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client is unknown or its authentication failed.
    #[error("{0}")]
    InvalidClient(String),
    /// The credentials or refresh token are wrong, expired or revoked.
    #[error("{0}")]
    InvalidGrant(String),
    /// The client may not use this grant.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// Not a grant this server knows.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// A scope the client may not have.
    #[error("{0}")]
    InvalidScope(String),
    /// Too many failed logins: try again after this long.
    #[error("too many failed logins; try again in {} s", .0.as_secs())]
    Throttled(Duration),
    /// Something broke on our side.
    #[error("the token endpoint failed")]
    Server,
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) | Self::Throttled(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::Server => "server_error",
        }
    }
}

/// Why any client is refused: the same words whether the id is unknown, the secret wrong or
/// the grant not the client's.
const CLIENT_REFUSED: &str = "client authentication failed";

fn server(err: impl std::fmt::Display) -> OAuthError {
    tracing::error!(error = %err, "token endpoint failed");
    OAuthError::Server
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares secrets in constant time.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scopes granted: those asked for (the default when none), if all are allowed.
fn granted(asked: Option<&str>, allowed: &[&str], default: &str) -> Result<String, OAuthError> {
    let asked: BTreeSet<&str> = match asked.map(str::trim).filter(|s| !s.is_empty()) {
        Some(asked) => asked.split(' ').filter(|s| !s.is_empty()).collect(),
        None => default.split(' ').filter(|s| !s.is_empty()).collect(),
    };
    if let Some(bad) = asked.iter().find(|s| !allowed.contains(s)) {
        return Err(OAuthError::InvalidScope(format!(
            "scope `{bad}` is not available to this client"
        )));
    }
    Ok(asked.into_iter().collect::<Vec<_>>().join(" "))
}

/// Everything the endpoint needs.
pub struct Issuer<'a> {
    /// Identity's database.
    pub store: &'a Store,
    /// The signing keys.
    pub keys: &'a KeyRing,
    /// The knobs in force.
    pub config: &'a IdentityConfig,
    /// Failed-login counts.
    pub throttle: &'a Throttle,
}

impl Issuer<'_> {
    /// Answers a token request. `basic` is the client's HTTP Basic credentials, if any;
    /// `client_ip` the address failed logins are counted against.
    pub async fn token(
        &self,
        request: TokenRequest,
        basic: Option<(String, String)>,
        client_ip: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let (client_id, secret) = match (basic, &request.client_id) {
            (Some((id, secret)), _) => (Some(id), Some(secret)),
            (None, id) => (id.clone(), request.client_secret.clone()),
        };
        let client_id = client_id.ok_or_else(|| OAuthError::InvalidClient("client_id is missing".into()))?;
        match request.grant_type.as_deref() {
            None => Err(OAuthError::InvalidRequest("grant_type is missing".into())),
            Some("password") => {
                self.public_client(&client_id)?;
                self.password(&request, client_ip).await
            }
            Some("refresh_token") => {
                self.public_client(&client_id)?;
                self.refresh(&request, &client_id).await
            }
            Some("client_credentials") => self.client_credentials(&request, &client_id, secret.as_deref()),
            Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type `{other}` is not supported"
            ))),
        }
    }

    fn public_client(&self, client_id: &str) -> Result<(), OAuthError> {
        // A service's client and a made-up one read alike (RFC 6749 `invalid_client`): which
        // client ids exist is not told.
        if client_id == SHOP_WEB {
            Ok(())
        } else {
            Err(OAuthError::InvalidClient(CLIENT_REFUSED.into()))
        }
    }

    async fn password(&self, request: &TokenRequest, client_ip: &str) -> Result<TokenResponse, OAuthError> {
        let (Some(username), Some(password)) = (&request.username, &request.password) else {
            return Err(OAuthError::InvalidRequest(
                "the password grant needs username and password".into(),
            ));
        };
        let scope = granted(request.scope.as_deref(), SHOP_SCOPES, "shop")?;
        let limits = Limits {
            per_pair: self.config.max_failures_per_account,
            per_address: self.config.max_failures_per_ip,
            per_account: self.config.max_failures_per_account_all_addresses,
            window: Duration::from_secs(self.config.failure_window_seconds),
        };
        let email = accounts::normalize_email(username);
        // Counted before the password is checked: concurrent guesses cannot all get through.
        self.throttle
            .attempt(&email, client_ip, &limits)
            .await
            .map_err(|e| match e {
                ThrottleError::Wait(wait) => OAuthError::Throttled(wait),
                ThrottleError::Database(e) => server(e),
            })?;
        let found = accounts::by_email(self.store, username).await.map_err(server)?;
        let (account, hash) = match found {
            Some((account, hash)) => (Some(account), Some(hash)),
            None => (None, None),
        };
        let matches = accounts::verify_password(password.clone(), hash).await;
        let account = match (matches, account) {
            (true, Some(account)) => account,
            _ => {
                tracing::info!(client_ip, "failed login");
                return Err(OAuthError::InvalidGrant("wrong email or password".into()));
            }
        };
        self.throttle.succeeded(&email, client_ip).await.map_err(server)?;
        let family = uuid::Uuid::new_v4().to_string();
        let refresh = self.new_refresh(&account, SHOP_WEB, &scope, &family).await?;
        Ok(self.answer(&account.id, &account.roles, SHOP_WEB, scope, Some(refresh)))
    }

    async fn refresh(&self, request: &TokenRequest, client_id: &str) -> Result<TokenResponse, OAuthError> {
        let token = request
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::InvalidRequest("the refresh_token grant needs refresh_token".into()))?;
        let token_hash = hash(token);
        let now = now_ms();
        // What would refuse the request is checked before the token is spent: a refused
        // refresh leaves the token as it was.
        let found = sqlx::query("SELECT client_id, scope FROM refresh_tokens WHERE token_hash = $1")
            .bind(&token_hash)
            .fetch_optional(self.store.pool())
            .await
            .map_err(server)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".into()))?;
        let issued_to: String = found.try_get("client_id").map_err(server)?;
        if issued_to != client_id {
            return Err(OAuthError::InvalidGrant(
                "refresh token was issued to another client".into(),
            ));
        }
        let original: String = found.try_get("scope").map_err(server)?;
        let allowed: Vec<&str> = original.split(' ').collect();
        let scope = granted(request.scope.as_deref(), &allowed, &original)?;
        // Using a token marks it, once: of two racing uses exactly one wins.
        let won = sqlx::query(
            "UPDATE refresh_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL AND revoked_ms IS NULL AND expires_ms > $1",
        )
        .bind(now)
        .bind(&token_hash)
        .execute(self.store.pool())
        .await
        .map_err(server)?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT family, account_id, client_id, scope, used_ms FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(self.store.pool())
        .await
        .map_err(server)?
        .ok_or_else(|| OAuthError::InvalidGrant("unknown refresh token".into()))?;
        let family: String = row.try_get("family").map_err(server)?;
        if !won {
            let used: Option<i64> = row.try_get("used_ms").map_err(server)?;
            if used.is_some() {
                // A used token came back: it was stolen, or the client replays. Either way
                // nobody holding this family may go on.
                sqlx::query("UPDATE refresh_tokens SET revoked_ms = $1 WHERE family = $2 AND revoked_ms IS NULL")
                    .bind(now)
                    .bind(&family)
                    .execute(self.store.pool())
                    .await
                    .map_err(server)?;
                tracing::warn!(%family, "a used refresh token was presented again; its family is revoked");
                return Err(OAuthError::InvalidGrant(
                    "refresh token already used; sign in again".into(),
                ));
            }
            return Err(OAuthError::InvalidGrant("refresh token expired or revoked".into()));
        }
        let account_id: String = row.try_get("account_id").map_err(server)?;
        let account = accounts::by_id(self.store, &account_id)
            .await
            .map_err(server)?
            .ok_or_else(|| OAuthError::InvalidGrant("the account is gone".into()))?;
        let next = self.new_refresh(&account, client_id, &scope, &family).await?;
        Ok(self.answer(&account.id, &account.roles, client_id, scope, Some(next)))
    }

    fn client_credentials(
        &self,
        request: &TokenRequest,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if client_id == SHOP_WEB {
            return Err(OAuthError::UnauthorizedClient(
                "the shop client may not use client_credentials".into(),
            ));
        }
        let client = self
            .config
            .clients
            .iter()
            .find(|c| c.id == client_id)
            .filter(|c| secret.is_some_and(|s| same(s, &c.secret)))
            .ok_or_else(|| OAuthError::InvalidClient(CLIENT_REFUSED.into()))?;
        let allowed: Vec<&str> = client.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let scope = granted(request.scope.as_deref(), &allowed, &client.scope)?;
        Ok(self.answer(&client.id, &client.roles, &client.id, scope, None))
    }

    async fn new_refresh(
        &self,
        account: &Account,
        client_id: &str,
        scope: &str,
        family: &str,
    ) -> Result<String, OAuthError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let expires = now_ms() + (self.config.refresh_token_seconds as i64) * 1000;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, account_id, client_id, scope, expires_ms, used_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)",
        )
        .bind(hash(&token))
        .bind(family)
        .bind(&account.id)
        .bind(client_id)
        .bind(scope)
        .bind(expires)
        .execute(self.store.pool())
        .await
        .map_err(server)?;
        Ok(token)
    }

    fn answer(
        &self,
        subject: &str,
        roles: &[String],
        client_id: &str,
        scope: String,
        refresh_token: Option<String>,
    ) -> TokenResponse {
        let now = now_ms() / 1000;
        let ttl = self.config.access_token_seconds;
        let claims = serde_json::json!({
            "iss": self.config.issuer,
            "sub": subject,
            "aud": self.config.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
            "scope": scope,
            "roles": roles,
            "client_id": client_id,
        });
        TokenResponse {
            access_token: self.keys.current().signing.token(&claims),
            token_type: "Bearer".into(),
            expires_in: ttl,
            refresh_token,
            scope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_asked_ones_if_allowed_or_the_default() {
        assert_eq!(granted(None, SHOP_SCOPES, "shop").unwrap(), "shop");
        assert_eq!(
            granted(Some("shop openid"), SHOP_SCOPES, "shop").unwrap(),
            "openid shop"
        );
        assert!(matches!(
            granted(Some("admin"), SHOP_SCOPES, "shop"),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(same("a-long-secret", "a-long-secret") && !same("a-long-secret", "a-long-secreT"));
    }
}
