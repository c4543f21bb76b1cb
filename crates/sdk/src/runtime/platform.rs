//! The platform's own routes on an instance — under `/flotilla/`, such as the sagas it runs —
//! and who may reach them: the control plane only, known by its workload certificate.
//!
//! What they serve holds users' data (a saga's last error names an order), so they are
//! closed by default. A service speaks mTLS and checks its callers in the handshake
//! ([`crate::mtls::Callers`]); an instance with platform routes also admits the
//! [`PLATFORM_CALLERS`] there, and then fences them in at HTTP: a platform caller reaches the
//! `/flotilla/` routes and nothing else of the service (unless the service lists it among its
//! own callers), and the `/flotilla/` routes answer nobody else ([`only_platform`]). The
//! certificate is the only proof taken: on a plain connection (a system run without mTLS)
//! nobody can be told apart, and the routes refuse everyone. An operator reads them through
//! the dashboard, or with a certificate the CA issues to the operator's token naming
//! `control`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flotilla_api::Problem;

use crate::mtls::{Callers, Peer};

/// Where the platform's routes live on every instance; an application must not route there.
pub const PATH_PREFIX: &str = "/flotilla/";

/// The services the platform's routes answer: the control plane, which reads them for the
/// dashboard.
pub const PLATFORM_CALLERS: &[&str] = &[flotilla_api::identity::CONTROL_SERVICE];

/// Whether `peer` may read the platform's routes: over mTLS, with a certificate naming one of
/// [`PLATFORM_CALLERS`].
pub fn is_platform_caller(peer: Option<&Peer>) -> bool {
    matches!(peer, Some(Peer { tls: true, service: Some(service) }) if PLATFORM_CALLERS.contains(&&**service))
}

/// The guard of every platform route: a platform caller over mTLS is served (and the answer
/// is never cached: it may hold users' data); anyone else gets 403 problem+json. A router of
/// platform routes carries it itself, so it stays closed wherever it is merged.
pub async fn only_platform(request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>();
    if is_platform_caller(peer) {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let detail = match peer {
        Some(Peer {
            tls: true,
            service: Some(service),
        }) => format!("`{service}` may not read this instance's platform routes: only the control plane may"),
        _ => "the platform's routes answer only the control plane, known by its workload certificate over mTLS; \
              this connection presented none"
            .to_owned(),
    };
    Problem::new(403, "forbidden", "Forbidden")
        .with_detail(detail)
        .into_response()
}

/// Keeps a caller the handshake admitted only for the platform's routes off the service's
/// own: a certificate naming a service `callers` does not allow gets 403 anywhere but under
/// [`PATH_PREFIX`].
pub(super) async fn fence(State(callers): State<Callers>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(PATH_PREFIX) {
        let outsider = request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.service.as_deref())
            .filter(|service| !callers.allows(service))
            .map(str::to_owned);
        if let Some(service) = outsider {
            return Problem::new(403, "forbidden", "Forbidden")
                .with_detail(format!(
                    "`{service}` may call only the platform's routes ({PATH_PREFIX}…) of this service"
                ))
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app(callers: Callers) -> Router {
        let platform = Router::new()
            .route("/flotilla/sagas", get(|| async { "sagas" }))
            .layer(axum::middleware::from_fn(only_platform));
        Router::new()
            .route("/orders", get(|| async { "orders" }))
            .merge(platform)
            .layer(axum::middleware::from_fn_with_state(callers, fence))
    }

    async fn status(app: &Router, path: &str, peer: Option<Peer>) -> u16 {
        let mut request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        app.clone().oneshot(request).await.unwrap().status().as_u16()
    }

    fn over_mtls(service: &str) -> Option<Peer> {
        Some(Peer {
            tls: true,
            service: Some(Arc::from(service)),
        })
    }

    #[tokio::test]
    async fn the_control_plane_reaches_the_platform_routes_and_only_them() {
        let app = app(Callers::only(["gateway"]).admitting_platform(PLATFORM_CALLERS.iter().copied()));
        assert_eq!(status(&app, "/flotilla/sagas", over_mtls("control")).await, 200);
        assert_eq!(status(&app, "/orders", over_mtls("control")).await, 403, "fenced in");
        assert_eq!(status(&app, "/orders", over_mtls("gateway")).await, 200);
        assert_eq!(
            status(&app, "/flotilla/sagas", over_mtls("gateway")).await,
            403,
            "a caller of the service is not the platform"
        );
        // Plain connections (no mTLS), and a request that came through no listener, are nobody.
        let plain = Some(Peer::default());
        assert_eq!(status(&app, "/flotilla/sagas", plain).await, 403);
        assert_eq!(status(&app, "/flotilla/sagas", None).await, 403);
    }

    #[tokio::test]
    async fn a_service_that_lists_the_control_plane_among_its_callers_serves_it_everything() {
        let app = app(Callers::only(["gateway", "control"]).admitting_platform(PLATFORM_CALLERS.iter().copied()));
        assert_eq!(status(&app, "/orders", over_mtls("control")).await, 200);
    }
}
