//! Identity's HTTP API: sign-up, the token endpoint, the JWKS, OIDC discovery, `/me`, key
//! rotation for admins, and its OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flotilla::auth::Identity as Caller;
use flotilla::http::Json;
use flotilla::Problem;

use crate::accounts::{self, AccountError, SignUp, CUSTOMER};
use crate::tokens::{Issuer, OAuthError, TokenRequest};
use crate::Identity;

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 16 * 1024;

/// The routes, over a started [`Identity`].
pub fn router(identity: Arc<Identity>) -> Router {
    Router::new()
        .route("/api/v1/accounts", post(sign_up))
        .route("/oauth2/token", post(token))
        .route("/oauth2/jwks", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/api/v1/me", get(me))
        .route("/api/v1/admin/signing-keys", post(rotate))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(identity)
}

fn internal(err: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %err, "identity failed");
    Problem::internal()
}

/// Sign-up answers `202 Accepted` alike whether the address was new or taken (or looks like a
/// taken one), and takes as long: which addresses have accounts is not told. The account's
/// owner finds out by signing in.
async fn sign_up(State(identity): State<Arc<Identity>>, Json(body): Json<SignUp>) -> Result<Response, Problem> {
    let email = accounts::normalize_email(&body.email);
    match accounts::create(&identity.store, body, &[CUSTOMER]).await {
        Ok(account) => tracing::info!(account = %account.id, "account created"),
        Err(AccountError::Taken) => tracing::info!("sign-up for an address that has an account; nothing changed"),
        Err(AccountError::Invalid { field, reason }) => return Err(Problem::invalid_field(field, reason)),
        Err(err) => return Err(internal(err)),
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, HeaderValue::from_static("/oauth2/token"))],
        Json(serde_json::json!({
            "status": "accepted",
            "email": email,
            "detail": "if this address had no account, it has one now: sign in with it",
        })),
    )
        .into_response())
}

/// An OAuth error as problem+json that also carries RFC 6749's `error` and
/// `error_description` members, so OAuth clients and problem-aware clients both read it.
fn oauth_error(err: OAuthError) -> Response {
    let (status, slug, title) = match &err {
        OAuthError::InvalidClient(_) => (401, "invalid-client", "Invalid client"),
        OAuthError::Throttled(_) => (429, "too-many-failed-logins", "Too many failed logins"),
        OAuthError::Server => (500, "internal", "Internal error"),
        _ => (400, "oauth-error", "Token request refused"),
    };
    let mut problem =
        serde_json::to_value(Problem::new(status, slug, title).with_detail(err.to_string())).unwrap_or_default();
    problem["error"] = err.code().into();
    problem["error_description"] = err.to_string().into();
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        problem.to_string(),
    )
        .into_response();
    match err {
        OAuthError::InvalidClient(_) => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"identity\""),
            );
        }
        OAuthError::Throttled(wait) => {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_millis().div_ceil(1000).max(1) as u64),
            );
        }
        _ => {}
    }
    response
}

/// HTTP Basic client credentials (RFC 6749 §2.3.1: each part form-urlencoded).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::InvalidClient("malformed Basic credentials".into());
    let text = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = text.strip_prefix("Basic ").or_else(|| text.strip_prefix("basic ")) else {
        return Err(bad());
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|mut v| v.pop())
            .map(|(_, v)| v)
    };
    Ok(Some((unescape(id).ok_or_else(bad)?, unescape(secret).ok_or_else(bad)?)))
}

/// The address failed logins are counted against: the client's, as the gateway settled it
/// (never a client's own `X-Forwarded-For`, which anyone can write).
fn client_ip(headers: &HeaderMap) -> String {
    headers
        .get(&flotilla::http::CLIENT_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_else(|| "direct".into())
}

async fn token(State(identity): State<Arc<Identity>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return oauth_error(OAuthError::InvalidRequest(
            "the token endpoint takes application/x-www-form-urlencoded".into(),
        ));
    }
    let request: TokenRequest = match serde_urlencoded::from_bytes(&body) {
        Ok(request) => request,
        Err(e) => return oauth_error(OAuthError::InvalidRequest(format!("malformed form: {e}"))),
    };
    let basic = match basic(&headers) {
        Ok(basic) => basic,
        Err(err) => return oauth_error(err),
    };
    let config = identity.config.current();
    let issuer = Issuer {
        store: &identity.store,
        keys: &identity.keys,
        config: &config,
        throttle: &identity.throttle,
    };
    match issuer.token(request, basic, &client_ip(&headers)).await {
        Ok(answer) => (
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::PRAGMA, HeaderValue::from_static("no-cache")),
            ],
            Json(answer),
        )
            .into_response(),
        Err(err) => oauth_error(err),
    }
}

async fn jwks(State(identity): State<Arc<Identity>>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"))],
        Json(identity.keys.current().jwks.clone()),
    )
        .into_response()
}

async fn discovery(State(identity): State<Arc<Identity>>) -> Json<serde_json::Value> {
    let issuer = identity.config.current().issuer.trim_end_matches('/').to_owned();
    Json(serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/oauth2/jwks"),
        "userinfo_endpoint": format!("{issuer}/api/v1/me"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": crate::tokens::SHOP_SCOPES,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "roles", "client_id"],
    }))
}

async fn caller(identity: &Identity, headers: &HeaderMap, admin: bool) -> Result<Caller, Problem> {
    let caller = identity.verifier().caller(headers).await.map_err(|e| e.to_problem())?;
    if admin {
        caller.admin_or(None).map_err(|e| e.to_problem())?;
    }
    Ok(caller)
}

async fn me(State(identity): State<Arc<Identity>>, headers: HeaderMap) -> Result<Response, Problem> {
    let caller = caller(&identity, &headers, false).await?;
    let account = accounts::by_id(&identity.store, &caller.subject)
        .await
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found("the token's account does not exist (any more)"))?;
    Ok(Json(account).into_response())
}

async fn rotate(State(identity): State<Arc<Identity>>, headers: HeaderMap) -> Result<Response, Problem> {
    caller(&identity, &headers, true).await?;
    let lifetime = Duration::from_secs(identity.config.current().access_token_seconds);
    let kid = identity.keys.rotate(lifetime).await.map_err(internal)?;
    identity.publish();
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "kid": kid }))).into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
