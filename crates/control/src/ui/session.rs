//! Signing in to the dashboard: a credential (the operator's token, or a read-only one made
//! with `flotilla credential`-style keys) is exchanged for a session cookie — `HttpOnly`,
//! `SameSite=Strict`, eight hours, signed by the control plane's keys, never a bearer
//! credential itself — and every write carries the session's CSRF token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, DOCTYPE};
use serde::Deserialize;

use super::Viewer;
use crate::acl::Principal;
use crate::ControlState;

/// The session cookie's name.
const COOKIE: &str = "flotilla_session";
/// How long a session lasts.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Seconds since the epoch.
pub(super) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The session cookie a request carries.
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Where the form sends people back to.
#[derive(Debug, Deserialize)]
pub(super) struct Next {
    next: Option<String>,
    error: Option<String>,
}

/// Only a dashboard path is a place to come back to (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with("/ui") && !path.starts_with("//") && !path.contains('\\') => path.to_owned(),
        _ => super::PATH.to_owned(),
    }
}

/// The sign-in form.
pub(super) async fn form(Query(next): Query<Next>) -> Response {
    let target = safe_next(next.next.as_deref());
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (super::head_common("Sign in")) }
            body class="sign-in" {
                main id="main" {
                    h1 { "Flotilla" }
                    form method="post" action="/ui/sign-in" {
                        @if let Some(error) = &next.error {
                            p class="error" role="alert" { (error) }
                        }
                        // For password managers and screen readers: whose credential.
                        input type="text" name="username" value="operator" autocomplete="username" hidden;
                        label for="credential" { "Credential" }
                        input id="credential" name="credential" type="password" autocomplete="current-password" required autofocus;
                        input type="hidden" name="next" value=(target);
                        p class="hint" {
                            "The operator's token (" code { "<data-dir>/token" } ") or a read-only credential."
                        }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    let mut response = Html(markup.into_string()).into_response();
    super::secure(response.headers_mut());
    response
}

#[derive(Debug, Deserialize)]
struct SignIn {
    credential: String,
    next: Option<String>,
}

/// Exchanges a credential for a session. A service's credential opens nothing here.
pub(super) async fn sign_in(State(state): State<Arc<ControlState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<SignIn>(&body) else {
        return (StatusCode::BAD_REQUEST, "a form with `credential` is expected").into_response();
    };
    let target = safe_next(form.next.as_deref());
    let refused = |why: &str| {
        let location = format!(
            "/ui/sign-in?next={}&error={}",
            form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(why.as_bytes()).collect::<String>()
        );
        Redirect::to(&location).into_response()
    };
    let principal = match state.identify(form.credential.trim()) {
        Some(principal @ (Principal::Operator | Principal::Reader { .. })) => principal,
        Some(Principal::Service { .. }) => return refused("A service's credential does not open the dashboard."),
        None => {
            tracing::warn!("dashboard sign-in refused: not a credential of this control plane");
            return refused("That is not a credential of this control plane.");
        }
    };
    let expires = now() + LIFETIME.as_secs();
    let Some(session) = state.keyring().session(&principal, expires) else {
        return refused("That credential cannot sign in.");
    };
    // `Secure` when the browser came over TLS (a proxy in front says so).
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={session}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&target).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct Csrf {
    csrf: Option<String>,
}

/// Whether a write carries the session's CSRF token (form field `csrf` or header
/// `x-csrf-token`).
pub(super) fn csrf_ok(viewer: &Viewer, headers: &HeaderMap, body: &[u8]) -> bool {
    let presented = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| serde_urlencoded::from_bytes::<Csrf>(body).ok().and_then(|f| f.csrf));
    presented.is_some_and(|token| crate::acl::same_secret(&token, &viewer.csrf))
}

/// Ends the session (a write: it needs the CSRF token).
pub(super) async fn sign_out(viewer: Viewer, headers: HeaderMap, body: Bytes) -> Response {
    if !csrf_ok(&viewer, &headers, &body) {
        return (StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong").into_response();
    }
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("flotilla_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dashboard_path_is_somewhere_to_come_back_to() {
        assert_eq!(safe_next(Some("/ui/map")), "/ui/map");
        assert_eq!(safe_next(Some("https://evil.example")), "/ui");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; flotilla_session=ui:x:1:ab; b=2"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("ui:x:1:ab"));
    }
}
