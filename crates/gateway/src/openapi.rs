//! `/api/openapi.json`: one OpenAPI document for everything the gateway routes to, merged from
//! each routed service's own `/openapi.json` (fetched from one of its instances, kept for ten
//! seconds). Each service's schemas are renamed `service.Name` (references rewritten) so two
//! services' `Problem` cannot collide, and each operation is tagged with its service. A
//! service that does not answer is named under `x-flotilla-missing`, never a failure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use flotilla::discovery::Discovery;
use flotilla::http::HttpClient;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::routes::RouteTable;

/// What the merge relies on from every routed service.
pub const DOCUMENT_CONTRACT: flotilla::contract::Expectation = flotilla::contract::Expectation {
    consumer: "gateway",
    provider: "every routed service",
    method: "GET",
    path: "/openapi.json",
    status: 200,
    sends: &[],
    reads: &[],
};

/// How long a merged document is served before it is made again.
const KEEP: Duration = Duration::from_secs(10);

/// Makes and keeps the merged document.
pub struct Merged {
    http: HttpClient,
    kept: Mutex<Option<(Instant, Value)>>,
}

impl Default for Merged {
    fn default() -> Self {
        Self {
            http: HttpClient::new(Duration::from_secs(2)),
            kept: Mutex::new(None),
        }
    }
}

/// Rewrites every `#/components/schemas/X` reference in `value` to `#/components/schemas/service.X`.
fn rename_refs(value: &mut Value, service: &str) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix("#/components/schemas/") {
                            *target = format!("#/components/schemas/{service}.{name}");
                        }
                    }
                    (_, inner) => rename_refs(inner, service),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, service)),
        _ => {}
    }
}

/// Lays one service's document into the merged one.
pub fn merge_into(merged: &mut Value, service: &str, mut document: Value) {
    rename_refs(&mut document, service);
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in std::mem::take(paths) {
            if path == "/openapi.json" {
                continue;
            }
            let mut item = item;
            if let Some(operations) = item.as_object_mut() {
                for operation in operations.values_mut().filter(|o| o.is_object()) {
                    operation["tags"] = json!([service]);
                }
            }
            merged["paths"][path.as_str()] = item;
        }
    }
    if let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) {
        for (name, schema) in schemas {
            merged["components"]["schemas"][format!("{service}.{name}")] = schema.clone();
        }
    }
    if let Some(schemes) = document
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
    {
        for (name, scheme) in schemes {
            merged["components"]["securitySchemes"][name.as_str()] = scheme.clone();
        }
    }
    let description = document.pointer("/info/description").cloned().unwrap_or(Value::Null);
    if let Some(tags) = merged["tags"].as_array_mut() {
        tags.push(json!({"name": service, "description": description}));
    }
}

impl Merged {
    /// The merged document for these routes.
    pub async fn document(&self, routes: &RouteTable, discovery: Option<&Discovery>) -> Value {
        let mut kept = self.kept.lock().await;
        if let Some((at, document)) = kept.as_ref() {
            if at.elapsed() < KEEP {
                return document.clone();
            }
        }
        let services: BTreeSet<String> = routes.routes().iter().filter_map(|r| r.service.clone()).collect();
        let mut merged = json!({
            "openapi": "3.1.0",
            "info": {"title": "Flotilla: every routed service", "version": env!("CARGO_PKG_VERSION")},
            "paths": {},
            "components": {"schemas": {}, "securitySchemes": {}},
            "tags": [],
        });
        let mut missing = Vec::new();
        for service in &services {
            let instance = discovery.and_then(|d| d.instances(service).first().cloned());
            let Some(instance) = instance else {
                missing.push(json!({"service": service, "reason": "no instance is up"}));
                continue;
            };
            let url = format!("{}/openapi.json", flotilla::discovery::instance_url(&instance));
            match self.http.get_json::<Value>(&url, None).await {
                Ok(document) => merge_into(&mut merged, service, document),
                Err(err) => missing.push(json!({"service": service, "reason": err.to_string()})),
            }
        }
        if !missing.is_empty() {
            merged["x-flotilla-missing"] = Value::Array(missing);
        }
        *kept = Some((Instant::now(), merged.clone()));
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_merge_with_their_schemas_renamed_and_their_operations_tagged() {
        let mut merged =
            json!({"openapi": "3.1.0", "paths": {}, "components": {"schemas": {}, "securitySchemes": {}}, "tags": []});
        let catalog = json!({
            "paths": {"/api/v1/products": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}}}}},
                      "/openapi.json": {"get": {}}},
            "components": {"schemas": {"Product": {"type": "object"}, "Problem": {"type": "object"}},
                           "securitySchemes": {"bearer": {"type": "http"}}}
        });
        let identity = json!({"paths": {"/api/v1/me": {"get": {}}}, "components": {"schemas": {"Problem": {"type": "object", "title": "id"}}}});
        merge_into(&mut merged, "catalog", catalog);
        merge_into(&mut merged, "identity", identity);
        assert_eq!(
            merged.pointer("/paths/~1api~1v1~1products/get/responses/200/content/application~1json/schema/$ref"),
            Some(&json!("#/components/schemas/catalog.Product"))
        );
        assert_eq!(
            merged.pointer("/paths/~1api~1v1~1products/get/tags/0"),
            Some(&json!("catalog"))
        );
        assert!(merged.pointer("/paths/~1openapi.json").is_none());
        let schemas = merged["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("catalog.Problem") && schemas.contains_key("identity.Problem"));
        assert_eq!(merged["tags"].as_array().unwrap().len(), 2);
    }
}
