//! The dashboard at `/ui`: what the control plane knows — registry, dependency graph, config,
//! events, traces — as server-rendered pages, built into the binary (no CDN, no Node.js):
//! HTML from `maud`, one stylesheet and one small script. Closed to anyone without a session,
//! which an operator token or a read-only credential opens ([`session`]). Live without
//! reloading: the page's `<main>` is fetched again whenever the server-sent events at
//! `/ui/live` say something changed.

mod assets;
mod changes;
mod config;
mod diff;
mod events;
mod gateway;
mod logs;
mod metrics;
mod pages;
mod sagas;
mod session;
mod traces;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use crate::acl::Principal;
use crate::ControlState;

pub use changes::{watch_breakers, watch_membership, Changes};
pub use metrics::{sample_metrics, Samples};

/// Where the dashboard lives.
pub const PATH: &str = "/ui";

/// The request header the script sends when it wants only a page's `<main>`.
const FRAGMENT_HEADER: &str = "x-flotilla-fragment";

/// The dashboard's routes, to merge into the control plane's router.
pub fn routes() -> Router<Arc<ControlState>> {
    Router::new()
        .route(PATH, get(pages::overview))
        .route("/ui/", get(|| async { Redirect::permanent(PATH) }))
        .route("/ui/map", get(pages::map))
        .route("/ui/services/{name}", get(pages::service))
        .route("/ui/traces", get(traces::list))
        .route("/ui/traces/{id}", get(traces::one))
        .route("/ui/logs", get(logs::list))
        .route("/ui/config", get(config::list).post(config::create))
        .route(
            "/ui/config/{scope}/{profile}/{key}",
            get(config::key).post(config::write),
        )
        .route("/ui/config/{scope}/{profile}/{key}/rollback", post(config::rollback))
        .route("/ui/events", get(events::list))
        .route("/ui/events/{topic}", get(events::topic))
        .route("/ui/events/{topic}/replay", post(events::replay))
        .route("/ui/sagas", get(sagas::list))
        .route("/ui/sagas/{service}/{id}", get(sagas::one))
        .route("/ui/live", get(live))
        .route("/ui/sign-in", get(session::form).post(session::sign_in))
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/assets/{file}", get(assets::serve))
}

/// Who is looking: a signed-in operator or reader. Without a session, a page redirects to
/// the sign-in form (and the live stream is refused).
pub struct Viewer {
    /// Who signed in.
    pub principal: Principal,
    /// The session's CSRF token, for forms and the script's writes.
    pub csrf: String,
    /// Whether only `<main>` is wanted (the script's refresh).
    pub fragment: bool,
}

impl FromRequestParts<Arc<ControlState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ControlState>) -> Result<Self, Response> {
        let Some(cookie) = session::cookie(&parts.headers) else {
            return Err(to_sign_in(parts));
        };
        let Some(principal) = state.keyring().session_of(&cookie, session::now()) else {
            return Err(to_sign_in(parts));
        };
        Ok(Self {
            principal,
            csrf: state.keyring().csrf(&cookie),
            fragment: parts.headers.contains_key(FRAGMENT_HEADER),
        })
    }
}

/// A page without a session goes to the sign-in form, which comes back to it.
fn to_sign_in(parts: &Parts) -> Response {
    let back = parts.uri.path_and_query().map_or(PATH, |p| p.as_str()).to_owned();
    let location = format!(
        "/ui/sign-in?next={}",
        form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
    );
    let mut response = Redirect::to(&location).into_response();
    // The script's refresh follows no redirect into a form: it is told to reload.
    if parts.headers.contains_key(FRAGMENT_HEADER) {
        response = StatusCode::UNAUTHORIZED.into_response();
    }
    response
}

/// A page answered with another status than 200 (a refused form, a conflict).
pub(crate) fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// Refuses a write the session may not make: a read-only session (403, saying why), or a
/// form without the session's CSRF token (403). `None` lets it through.
pub(crate) fn refuse_write(viewer: &Viewer, headers: &HeaderMap, body: &[u8], what: &str) -> Option<Response> {
    if !viewer.principal.is_operator() {
        let content = html! {
            p class="error" role="alert" {
                "This session is read-only: it may not " (what) ". Sign in with the operator's token to do that."
            }
        };
        return Some(with_status(
            page(viewer, "", "Read-only", content),
            StatusCode::FORBIDDEN,
        ));
    }
    if !session::csrf_ok(viewer, headers, body) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong: load the page again",
            )
                .into_response(),
        );
    }
    None
}

/// The views, for the navigation bar: (path, label).
const VIEWS: &[(&str, &str)] = &[
    ("/ui", "Overview"),
    ("/ui/map", "Service map"),
    ("/ui/traces", "Traces"),
    ("/ui/logs", "Logs"),
    ("/ui/config", "Config"),
    ("/ui/events", "Events"),
    ("/ui/sagas", "Sagas"),
];

/// A whole page (or only its `<main>`, for the script's refresh): the navigation, the title,
/// the content. Every page has a stable URL, is readable without scripts, and follows the
/// system's colour scheme (dark or light).
pub(crate) fn page(viewer: &Viewer, current: &str, title: &str, content: Markup) -> Response {
    page_with(viewer, current, title, content, true)
}

/// [`page`], saying whether the script may refresh it (not while a form on it is filled).
pub(crate) fn page_with(viewer: &Viewer, current: &str, title: &str, content: Markup, live: bool) -> Response {
    let main = html! {
        main id="main" data-title=(title) data-live=(if live { "on" } else { "off" }) {
            h1 { (title) }
            (content)
        }
    };
    if viewer.fragment {
        return no_store(Html(main.into_string()).into_response());
    }
    let who = match &viewer.principal {
        Principal::Operator => "operator".to_owned(),
        Principal::Reader { name } => format!("{name} (read-only)"),
        Principal::Service { service, .. } => service.clone(),
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                meta name="csrf-token" content=(viewer.csrf);
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href="/ui" { "Flotilla" }
                    nav aria-label="Views" {
                        @for (path, label) in VIEWS {
                            @if *path == current {
                                a href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                    }
                    form class="who" method="post" action="/ui/sign-out" {
                        span { (who) }
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                (main)
                footer { span id="live" role="status" aria-live="polite" { "live" } }
            }
        }
    };
    no_store(Html(markup.into_string()).into_response())
}

/// What every page's `<head>` holds: encoding, viewport, colour schemes, title, stylesheet.
pub(crate) fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="color-scheme" content="light dark";
        // No icon to fetch (a 404 in the console otherwise).
        link rel="icon" href="data:,";
        title { (title) " · Flotilla" }
        link rel="stylesheet" href="/ui/assets/ui.css";
    }
}

/// Pages show the system now: never from a cache.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(headers);
    response
}

/// What every dashboard answer carries: only its own scripts and styles, no framing, no
/// sniffing, no referrer leaving the page.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// Server-sent events saying what changed: `registry` at once when an instance joins,
/// leaves or changes health (a blocking query on the registry), `tick` every few seconds
/// for what is measured (rates, latencies). The script fetches the page's `<main>` again.
async fn live(_viewer: Viewer, State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    let stream = futures_util::stream::unfold(
        (state, 0u64, tokio::time::Instant::now()),
        |(state, index, ticked)| async move {
            let tick = Duration::from_secs(5);
            let wait = tick.saturating_sub(ticked.elapsed());
            let list = state.registry.list_after(None, index, wait).await;
            let (event, ticked) = if list.index != index && index != 0 {
                (Event::default().event("registry").data(list.index.to_string()), ticked)
            } else if ticked.elapsed() >= tick {
                // An event without data is never dispatched by a browser: say the index.
                (
                    Event::default().event("tick").data(list.index.to_string()),
                    tokio::time::Instant::now(),
                )
            } else {
                (Event::default().event("hello").data(list.index.to_string()), ticked)
            };
            Some((Ok::<_, Infallible>(event), (state, list.index, ticked)))
        },
    );
    let mut response = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    secure(response.headers_mut());
    response
}
