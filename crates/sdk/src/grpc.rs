//! gRPC beside JSON: a service serves tonic services (generated `…Server`s) in its router, on
//! its one listener ([`route`]), and calls gRPC services through the same discovery, balancer,
//! breaker, retry budget, deadline and trace propagation as its JSON calls
//! (`ctx.grpc("inventory")`, a [`GrpcChannel`] a generated client takes as its transport).

pub use crate::client::grpc::{status_of, GrpcChannel};

use http::Response;

/// Serves a tonic service (a generated `…Server`) in an axum router, beside its JSON routes and
/// on the same listener: HTTP/2 (h2c, or ALPN `h2` under mTLS) for gRPC, HTTP/1.1 for the rest.
/// The runtime's request scope (span, deadline, metrics) covers it like any route.
pub fn route<S, St>(router: axum::Router<St>, service: S) -> axum::Router<St>
where
    S: tower::Service<axum::extract::Request, Response = Response<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    St: Clone + Send + Sync + 'static,
{
    router.route_service(&format!("/{}/{{*method}}", S::NAME), service)
}
