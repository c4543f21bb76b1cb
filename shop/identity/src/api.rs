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
use flotilla::utoipa::{self, OpenApi, ToSchema};
use flotilla::Problem;
use serde::Serialize;

use crate::accounts::{self, Account, AccountError, SignUp, CUSTOMER};
use crate::keys::Jwks;
use crate::tokens::{Issuer, OAuthError, TokenRequest, TokenResponse, GRANT_TYPES};
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
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(identity)
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(sign_up, token, jwks, discovery, me, rotate))]
pub(crate) struct Api;

/// A string that is one of `values`, for the OpenAPI document (`#[schema(schema_with = …)]`).
pub(crate) fn one_of(values: &[&str], description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

fn internal(err: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %err, "identity failed");
    Problem::internal()
}

/// What sign-up answers, alike whether the address was new or taken.
#[derive(Serialize, ToSchema)]
struct SignUpAccepted {
    /// Always `accepted`.
    #[schema(schema_with = accepted)]
    status: &'static str,
    /// The address as it is kept (normalized).
    email: String,
    /// What to do next.
    detail: &'static str,
}

fn accepted() -> utoipa::openapi::Object {
    one_of(&["accepted"], "Always `accepted`.")
}

/// Create a customer account.
///
/// Answered `202 Accepted` alike whether the address was new or already has an account (or
/// looks like one that has), and as slowly: which addresses have accounts is not told. The
/// account's owner finds out by signing in.
#[utoipa::path(post, path = "/api/v1/accounts", operation_id = "signUp", request_body = SignUp,
    responses(
        (status = 202, description = "Accepted", body = SignUpAccepted,
            headers(("Location" = String, description = "Where to sign in: the token endpoint"))),
        (status = 400, description = "A field is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large",
            body = Problem, content_type = "application/problem+json"),
    ))]
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
        Json(SignUpAccepted {
            status: "accepted",
            email,
            detail: "if this address had no account, it has one now: sign in with it",
        }),
    )
        .into_response())
}

/// A refused token request: a problem document that also carries RFC 6749's `error` and
/// `error_description` (§5.2), so OAuth clients and problem-aware clients both read it.
#[derive(Serialize, ToSchema)]
struct OAuthProblem {
    #[serde(flatten)]
    problem: Problem,
    /// The RFC 6749 error code (`invalid_grant`, `invalid_client`, …).
    error: &'static str,
    /// What went wrong.
    error_description: String,
}

/// An OAuth error as an [`OAuthProblem`].
fn oauth_error(err: OAuthError) -> Response {
    let (status, slug, title) = match &err {
        OAuthError::InvalidClient(_) => (401, "invalid-client", "Invalid client"),
        OAuthError::Throttled(_) => (429, "too-many-failed-logins", "Too many failed logins"),
        OAuthError::Server => (500, "internal", "Internal error"),
        _ => (400, "oauth-error", "Token request refused"),
    };
    let problem = OAuthProblem {
        problem: Problem::new(status, slug, title).with_detail(err.to_string()),
        error: err.code(),
        error_description: err.to_string(),
    };
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        serde_json::to_string(&problem).unwrap_or_default(),
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

/// OAuth 2.0 token endpoint (RFC 6749).
///
/// Client credentials come in HTTP Basic or in the form.
#[utoipa::path(post, path = "/oauth2/token", operation_id = "token",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "The request or its grant was refused",
            body = OAuthProblem, content_type = "application/problem+json"),
        (status = 401, description = "The client is unknown or its authentication failed",
            body = OAuthProblem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"identity\"`"))),
        (status = 429, description = "Too many failed logins",
            body = OAuthProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another login is tried"))),
    ))]
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

/// The public signing keys (RFC 7517).
#[utoipa::path(get, path = "/oauth2/jwks", operation_id = "jwks",
    responses((status = 200, description = "A JWK set", body = Jwks)))]
async fn jwks(State(identity): State<Arc<Identity>>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"))],
        Json(identity.keys.current().jwks.clone()),
    )
        .into_response()
}

/// OpenID Connect provider metadata (OpenID Connect Discovery 1.0, §3).
#[derive(Serialize, ToSchema)]
struct ProviderMetadata {
    /// The issuer its tokens name (`iss`).
    #[schema(format = "uri")]
    issuer: String,
    /// The token endpoint.
    #[schema(format = "uri")]
    token_endpoint: String,
    /// The JWKS.
    #[schema(format = "uri")]
    jwks_uri: String,
    /// The signed-in account (`/api/v1/me`).
    #[schema(format = "uri")]
    userinfo_endpoint: String,
    /// The grants the token endpoint serves.
    grant_types_supported: &'static [&'static str],
    /// How clients authenticate at the token endpoint.
    token_endpoint_auth_methods_supported: &'static [&'static str],
    /// Always `token`.
    response_types_supported: &'static [&'static str],
    /// Always `public`.
    subject_types_supported: &'static [&'static str],
    /// Always `EdDSA`.
    id_token_signing_alg_values_supported: &'static [&'static str],
    /// The scopes the shop client may ask for.
    scopes_supported: &'static [&'static str],
    /// The claims its tokens carry.
    claims_supported: &'static [&'static str],
}

/// OpenID Connect discovery.
#[utoipa::path(get, path = "/.well-known/openid-configuration", operation_id = "discovery",
    responses((status = 200, description = "Provider metadata", body = ProviderMetadata)))]
async fn discovery(State(identity): State<Arc<Identity>>) -> Json<ProviderMetadata> {
    let issuer = identity.config.current().issuer.trim_end_matches('/').to_owned();
    Json(ProviderMetadata {
        token_endpoint: format!("{issuer}/oauth2/token"),
        jwks_uri: format!("{issuer}/oauth2/jwks"),
        userinfo_endpoint: format!("{issuer}/api/v1/me"),
        issuer,
        grant_types_supported: GRANT_TYPES,
        token_endpoint_auth_methods_supported: &["none", "client_secret_basic", "client_secret_post"],
        response_types_supported: &["token"],
        subject_types_supported: &["public"],
        id_token_signing_alg_values_supported: &["EdDSA"],
        scopes_supported: crate::tokens::SHOP_SCOPES,
        claims_supported: &[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "scope",
            "roles",
            "client_id",
        ],
    })
}

async fn caller(identity: &Identity, headers: &HeaderMap, admin: bool) -> Result<Caller, Problem> {
    let caller = identity.verifier().caller(headers).await.map_err(|e| e.to_problem())?;
    if admin {
        caller.admin_or(None).map_err(|e| e.to_problem())?;
    }
    Ok(caller)
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/me", operation_id = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The token's account does not exist (any more)",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(State(identity): State<Arc<Identity>>, headers: HeaderMap) -> Result<Response, Problem> {
    let caller = caller(&identity, &headers, false).await?;
    let account = accounts::by_id(&identity.store, &caller.subject)
        .await
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found("the token's account does not exist (any more)"))?;
    Ok(Json(account).into_response())
}

/// The new signing key's id.
#[derive(Serialize, ToSchema)]
struct NewKey {
    /// The key's id, in the JWKS and in the header of every token it signs.
    kid: String,
}

/// Rotate the signing key now (admin).
///
/// The old key stays published until the tokens it signed have expired.
#[utoipa::path(post, path = "/api/v1/admin/signing-keys", operation_id = "rotateSigningKey",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new key's id", body = NewKey),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rotate(State(identity): State<Arc<Identity>>, headers: HeaderMap) -> Result<Response, Problem> {
    caller(&identity, &headers, true).await?;
    let lifetime = Duration::from_secs(identity.config.current().access_token_seconds);
    let kid = identity.keys.rotate(lifetime).await.map_err(internal)?;
    identity.publish();
    Ok((StatusCode::CREATED, Json(NewKey { kid })).into_response())
}
