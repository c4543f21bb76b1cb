//! A service's OpenAPI document, generated from its handlers and types with utoipa
//! (`#[utoipa::path]` on handlers, `#[derive(ToSchema)]` on bodies, `#[derive(OpenApi)]`
//! listing them), finished the same way for every service and served at `/openapi.json`,
//! where the gateway merges them all into `/api/openapi.json`.
//!
//! ```ignore
//! use flotilla::utoipa::{self, OpenApi};
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(list_reviews, add_review), components(schemas(Review, flotilla::Problem)))]
//! struct Api;
//!
//! let router = router.merge(flotilla::openapi::route(flotilla::openapi::document::<Api>("reviews", "0.1.0", "Reviews of products.")));
//! ```

use axum::routing::get;
use axum::Router;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, PathItem, ResponseBuilder};

/// Where every service serves its document.
pub const PATH: &str = "/openapi.json";

/// The name of the bearer-token security scheme operations refer to
/// (`security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

/// `D`'s document as served: titled by the service, its version and description, with the
/// bearer (JWT) scheme and the document's own path, in OpenAPI 3.1 JSON.
pub fn document<D: utoipa::OpenApi>(service: &str, version: &str, description: &str) -> Value {
    document_at::<D>(PATH, service, version, description)
}

/// [`document`], served at `path` instead of [`PATH`] (the control plane's API lives under
/// `/v1`, so its document does too).
pub fn document_at<D: utoipa::OpenApi>(path: &str, service: &str, version: &str, description: &str) -> Value {
    let mut doc = D::openapi();
    doc.info.title = service.to_owned();
    doc.info.version = version.to_owned();
    doc.info.description = Some(description.to_owned());
    // The crate's own licence and authors are not the service's to publish.
    doc.info.license = None;
    doc.info.contact = None;
    let components = doc
        .components
        .take()
        .unwrap_or_else(|| ComponentsBuilder::new().build());
    let mut components = components;
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc.components = Some(components);
    let answer = ResponseBuilder::new()
        .description("This document (OpenAPI 3.1)")
        .content("application/json", ContentBuilder::new().build())
        .build();
    let operation = utoipa::openapi::path::OperationBuilder::new()
        .operation_id(Some("openapi"))
        .response("200", answer)
        .build();
    doc.paths.paths.insert(
        path.to_owned(),
        PathItem::new(utoipa::openapi::HttpMethod::Get, operation),
    );
    serde_json::to_value(&doc).unwrap_or(Value::Null)
}

/// `GET /openapi.json` answering `document`.
pub fn route<S: Clone + Send + Sync + 'static>(document: Value) -> Router<S> {
    route_at(PATH, document)
}

/// `GET <path>` answering `document` (made by [`document_at`] with the same path).
pub fn route_at<S: Clone + Send + Sync + 'static>(path: &str, document: Value) -> Router<S> {
    let document = std::sync::Arc::new(document);
    Router::new().route(
        path,
        get(move || {
            let document = document.clone();
            async move { crate::http::Json((*document).clone()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use utoipa::{OpenApi, ToSchema};

    use super::*;

    /// A review.
    #[derive(Serialize, ToSchema)]
    struct Review {
        /// Its id.
        id: String,
        /// One to five.
        #[schema(minimum = 1, maximum = 5)]
        stars: u8,
    }

    /// Every review.
    #[utoipa::path(get, path = "/api/v1/reviews", security(("bearer" = [])),
        responses((status = 200, body = [Review]), (status = 401, body = crate::Problem, content_type = "application/problem+json")))]
    #[allow(dead_code)]
    async fn list() {}

    #[derive(OpenApi)]
    #[openapi(paths(list), components(schemas(Review, crate::Problem)))]
    struct Api;

    #[test]
    fn a_document_is_made_from_the_handlers_and_types() {
        let doc = document::<Api>("reviews", "1.0.0", "Reviews.");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "reviews");
        assert_eq!(doc["info"]["version"], "1.0.0");
        let list = &doc["paths"]["/api/v1/reviews"]["get"];
        assert_eq!(list["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"],
            "#/components/schemas/Review"
        );
        assert_eq!(
            list["responses"]["401"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        let review = &doc["components"]["schemas"]["Review"];
        assert_eq!(review["properties"]["stars"]["maximum"], 5);
        assert_eq!(review["description"], "A review.");
        // The problem's wire name, not the Rust field's.
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["type"].is_object());
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["paths"][PATH]["get"].is_object());
    }

    #[test]
    fn a_document_may_name_its_own_path() {
        let doc = document_at::<Api>("/v1/openapi.json", "control", "1.0.0", "The control plane.");
        assert!(doc["paths"]["/v1/openapi.json"]["get"].is_object());
        assert!(doc["paths"].get(PATH).is_none());
    }
}
