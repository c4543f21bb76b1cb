//! The control plane's OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]`
//! and the wire types of `flotilla-api`, and served without a credential at [`PATH`], so a
//! service in any language has a machine-readable contract of registration, heartbeats,
//! config, events, identity and telemetry.

use flotilla::utoipa::openapi::header::HeaderBuilder;
use flotilla::utoipa::openapi::path::Operation;
use flotilla::utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
use flotilla::utoipa::{self, Modify, OpenApi};
use serde_json::Value;

/// Where the control plane serves its document.
pub const PATH: &str = "/v1/openapi.json";

/// Every operation of the control plane's API.
#[derive(OpenApi)]
#[openapi(
    paths(
        super::live,
        super::ready,
        super::replica_status,
        super::register,
        super::heartbeat,
        super::deregister,
        super::list_instances,
        super::list_service,
        super::list_services,
        super::authority,
        super::certificate,
        crate::config::http::list,
        crate::config::http::resolve,
        crate::config::http::applied,
        crate::config::http::report,
        crate::config::http::read,
        crate::config::http::write,
        crate::config::http::remove,
        crate::config::http::history,
        crate::config::http::diff_revisions,
        crate::config::http::rollback,
        crate::events::http::topics,
        crate::events::http::append,
        crate::events::http::fetch,
        crate::events::http::ack,
        crate::events::http::nack,
        crate::events::http::read,
        crate::events::http::replay,
        crate::telemetry::http::export,
        crate::telemetry::http::list,
        crate::telemetry::http::trace,
        crate::telemetry::http::dependencies,
        crate::telemetry::http::service_discovery,
        crate::telemetry::http::render_metrics,
    ),
    modifiers(&Credentialed),
    tags(
        (name = "health", description = "Liveness and readiness, without a credential; a replica's view of its store."),
        (name = "registry", description = "Registration, leases and heartbeats, and (blocking) instance lists."),
        (name = "config", description = "Versioned config: reads, compare-and-set writes, a service's \
            resolved document, and what instances applied."),
        (name = "events", description = "The event log: publish, fetch as a consumer group, ack and nack."),
        (name = "identity", description = "Workload identity: the CA's certificate and instances' certificates."),
        (name = "telemetry", description = "OTLP/HTTP trace intake, trace and dependency queries, \
            Prometheus discovery and metrics."),
    )
)]
pub struct ControlApi;

/// What every operation that takes a credential may answer before its handler runs: the
/// `Principal` extractor's `401` (no credential, or not one of this control plane's, or a
/// certificate naming another service) and `403` (a service's credential off mTLS). Added
/// here once rather than to each handler, as the extractor is one.
struct Credentialed;

impl Modify for Credentialed {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    guard(operation);
                }
            }
        }
    }
}

fn guard(operation: &mut Operation) {
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    let challenge = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("`Bearer realm=\"flotilla\"`"))
        .build();
    let unauthorized = ResponseBuilder::new()
        .description(
            "No `Authorization: Bearer <credential>`, a credential this control plane did not make, \
             or a client certificate naming another service than the credential",
        )
        .header("WWW-Authenticate", challenge)
        .content(flotilla_api::problem::CONTENT_TYPE, problem())
        .build();
    let forbidden = ResponseBuilder::new()
        .description("The credential's principal may not do this")
        .content(flotilla_api::problem::CONTENT_TYPE, problem())
        .build();
    let responses = &mut operation.responses.responses;
    responses.insert("401".to_owned(), unauthorized.into());
    // A handler's own 403 says more; the extractor's (a service's credential off mTLS) is
    // then one more reason for it.
    responses.entry("403".to_owned()).or_insert(forbidden.into());
}

/// How the control plane's credentials are presented (not JWTs: opaque strings it made).
const CREDENTIALS: &str = "`Authorization: Bearer <credential>`: the operator's token (`<data-dir>/token`), \
    a service instance's credential (`svc:<service>:<instance>:<mac>`, handed to it as `FLOTILLA_TOKEN`), \
    or a reader's (`read:<name>:<mac>`). A service's credential is taken only over mTLS with its certificate, \
    unless the operator declared the service plain.";

/// The document as served at [`PATH`].
pub fn document() -> Value {
    let mut doc = flotilla::openapi::document_at::<ControlApi>(
        PATH,
        "Flotilla control plane",
        env!("CARGO_PKG_VERSION"),
        "The control plane's HTTP API: service registry (leases, heartbeats, blocking queries on \
         `x-flotilla-index`), versioned config, the event log, workload identity and telemetry. \
         Every error is RFC 9457 `application/problem+json`.",
    );
    doc["components"]["securitySchemes"][flotilla::openapi::BEARER] = serde_json::json!({
        "type": "http",
        "scheme": "bearer",
        "description": CREDENTIALS,
    });
    doc
}
