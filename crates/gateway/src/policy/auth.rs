//! Who is calling: a bearer token checked by the SDK's verifier (signature by JWKS, issuer,
//! audience, scopes), or an API key ([`super::ApiKeys`]), as the route asks — a route with
//! either needs one of them. The identity found travels upstream in the identity headers;
//! whatever a client wrote in those is removed first, on every route, so no one can claim an
//! identity by writing a header.

use flotilla::auth::{AuthError, Identity, Verifier};
use flotilla_api::Problem;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::ApiKeys;

/// Headers that carry the verified identity upstream.
pub static IDENTITY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-auth-subject"),
    HeaderName::from_static("x-auth-scopes"),
    HeaderName::from_static("x-auth-roles"),
];

/// The caller's identity under the route's rule: `None` when the route asks for none. A
/// bearer token when the route takes them and one is offered, else an API key when the route
/// takes those.
pub async fn identify(
    bearer: Option<&Verifier>,
    keys: Option<&ApiKeys>,
    headers: &HeaderMap,
) -> Result<Option<Identity>, AuthError> {
    let token = headers.get(header::AUTHORIZATION);
    match (bearer, keys) {
        (None, None) => Ok(None),
        (Some(verifier), None) => Ok(Some(verifier.verify(Verifier::bearer(token)?).await?)),
        (Some(verifier), Some(_)) if token.is_some() => Ok(Some(verifier.verify(Verifier::bearer(token)?).await?)),
        (_, Some(keys)) => keys.verify(headers).map(Some),
    }
}

/// Replaces whatever identity headers a request carries with `identity`'s, if any.
pub fn on_request(identity: Option<&Identity>, headers: &mut HeaderMap) {
    for name in &IDENTITY_HEADERS {
        headers.remove(name);
    }
    if let Some(identity) = identity {
        let [subject, scopes, roles] = &IDENTITY_HEADERS;
        for (name, value) in [
            (subject, identity.subject.clone()),
            (scopes, identity.scopes.join(" ")),
            (roles, identity.roles.join(",")),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

/// What a refused client is told (internals stay in the log).
pub fn problem(err: &AuthError) -> Problem {
    match err {
        AuthError::Missing => {
            Problem::new(401, "unauthorized", "Unauthorized").with_detail("this route needs a bearer token")
        }
        AuthError::Invalid(_) | AuthError::Unavailable(_) => {
            Problem::new(401, "unauthorized", "Unauthorized").with_detail("the bearer token was not accepted")
        }
        AuthError::Forbidden(needs) => {
            Problem::new(403, "forbidden", "Forbidden").with_detail(format!("the token lacks {needs}"))
        }
    }
}

/// The `WWW-Authenticate` challenge of a refusal (RFC 6750).
pub fn challenge(err: &AuthError) -> HeaderValue {
    HeaderValue::from_static(match err {
        AuthError::Missing => "Bearer realm=\"flotilla\"",
        AuthError::Forbidden(_) => "Bearer realm=\"flotilla\", error=\"insufficient_scope\"",
        _ => "Bearer realm=\"flotilla\", error=\"invalid_token\"",
    })
}
