//! Consumer-driven contracts against OpenAPI documents: a consumer states what it calls on a
//! provider (method, path, the status it handles, the fields it sends and reads), next to the
//! code that makes the call; a test checks each statement against the provider's published
//! document, so a provider change that would break a consumer fails CI, not production.

use serde_json::Value;

/// What a consumer relies on in one call.
#[derive(Debug, Clone, Copy)]
pub struct Expectation {
    /// Who calls (`gateway`, `orders`).
    pub consumer: &'static str,
    /// Who answers (`identity`).
    pub provider: &'static str,
    /// `GET`, `POST`, ….
    pub method: &'static str,
    /// The path as the provider's document writes it (`/api/v1/payments/{id}/capture`).
    pub path: &'static str,
    /// The answer status the consumer handles as success.
    pub status: u16,
    /// Request body fields the consumer sends (top level).
    pub sends: &'static [&'static str],
    /// Response body fields the consumer reads: dotted paths, `[]` for array items
    /// (`keys[].kid`).
    pub reads: &'static [&'static str],
}

fn resolve<'a>(document: &'a Value, mut schema: &'a Value) -> &'a Value {
    // Follows local references (a few hops at most in a sane document).
    for _ in 0..8 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(target) => match target.strip_prefix('#').and_then(|p| document.pointer(p)) {
                Some(next) => schema = next,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

/// The schema of property `name` of `schema` (after references), also when it comes from one
/// of an `allOf`'s parts (how a flattened Rust type is written).
fn property<'a>(document: &'a Value, schema: &'a Value, name: &str, depth: u8) -> Option<&'a Value> {
    let schema = resolve(document, schema);
    if let Some(found) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(found);
    }
    if depth > 4 {
        return None;
    }
    schema
        .get("allOf")?
        .as_array()?
        .iter()
        .find_map(|part| property(document, part, name, depth + 1))
}

/// Whether a schema (after references) has the dotted `field` (`keys[].kid`).
fn has_field(document: &Value, schema: &Value, field: &str) -> bool {
    let mut schema = resolve(document, schema);
    for part in field.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        match property(document, schema, name, 0) {
            Some(next) => schema = resolve(document, next),
            None => return false,
        }
        if items {
            match schema.get("items") {
                Some(next) => schema = resolve(document, next),
                None => return false,
            }
        }
    }
    true
}

/// Checks one expectation against the provider's document; every broken promise, named.
pub fn check(expectation: &Expectation, document: &Value) -> Result<(), Vec<String>> {
    let e = expectation;
    let at = format!("{} {} on {}", e.method, e.path, e.provider);
    let escaped = e.path.replace('~', "~0").replace('/', "~1");
    let Some(operation) = document.pointer(&format!("/paths/{escaped}/{}", e.method.to_lowercase())) else {
        return Err(vec![format!(
            "{at}: {} calls it, the provider does not have it",
            e.consumer
        )]);
    };
    let mut broken = Vec::new();
    let status = e.status.to_string();
    match operation.pointer(&format!("/responses/{status}")) {
        None => broken.push(format!(
            "{at}: {} handles {status}, which the provider does not answer",
            e.consumer
        )),
        Some(response) => {
            let schema = response
                .pointer("/content/application~1json/schema")
                .or_else(|| response.pointer("/content/application~1problem+json/schema"));
            for field in e.reads {
                if !schema.is_some_and(|s| has_field(document, s, field)) {
                    broken.push(format!(
                        "{at}: {} reads `{field}`, which the answer does not have",
                        e.consumer
                    ));
                }
            }
        }
    }
    if !e.sends.is_empty() || operation.get("requestBody").is_some() {
        let body = operation.get("requestBody");
        let schema = body.and_then(|b| {
            b.pointer("/content/application~1json/schema")
                .or_else(|| b.pointer("/content/application~1x-www-form-urlencoded/schema"))
        });
        match schema {
            None if !e.sends.is_empty() => broken.push(format!(
                "{at}: {} sends a body, which the provider does not take",
                e.consumer
            )),
            None => {}
            Some(schema) => {
                let schema = resolve(document, schema);
                for field in e.sends {
                    if property(document, schema, field, 0).is_none() {
                        broken.push(format!(
                            "{at}: {} sends `{field}`, which the provider does not take",
                            e.consumer
                        ));
                    }
                }
                let required = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for field in required.iter().filter_map(Value::as_str) {
                    let required_by_body = body
                        .and_then(|b| b.get("required"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if required_by_body && !e.sends.contains(&field) {
                        broken.push(format!(
                            "{at}: the provider requires `{field}`, which {} does not send",
                            e.consumer
                        ));
                    }
                }
            }
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> Value {
        json!({"paths": {"/api/v1/payments/{id}/capture": {"post": {
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Capture"}}}},
            "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Payment"}}}}}}}},
            "components": {"schemas": {
                "Capture": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}, "note": {"type": "string"}}},
                "Payment": {"type": "object", "properties": {"state": {"type": "string"},
                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
                "Line": {"type": "object", "properties": {"sku": {"type": "string"}}}}}})
    }

    fn expect(status: u16, sends: &'static [&'static str], reads: &'static [&'static str]) -> Expectation {
        Expectation {
            consumer: "orders",
            provider: "payments",
            method: "POST",
            path: "/api/v1/payments/{id}/capture",
            status,
            sends,
            reads,
        }
    }

    #[test]
    fn a_kept_contract_passes_and_each_broken_promise_is_named() {
        assert!(check(&expect(200, &["amount"], &["state", "lines[].sku"]), &document()).is_ok());
        let broken = check(&expect(201, &["note", "tip"], &["state", "lines[].price"]), &document()).unwrap_err();
        assert_eq!(broken.len(), 3, "{broken:#?}");
        assert!(broken.iter().any(|b| b.contains("handles 201")));
        assert!(broken.iter().any(|b| b.contains("sends `tip`")));
        assert!(broken.iter().any(|b| b.contains("requires `amount`")));
        let reads = check(&expect(200, &["amount"], &["state", "lines[].price"]), &document()).unwrap_err();
        assert_eq!(reads.len(), 1);
        assert!(reads[0].contains("reads `lines[].price`"), "{reads:?}");
        let gone = Expectation {
            path: "/api/v1/payments/{id}/settle",
            ..expect(200, &[], &[])
        };
        assert!(check(&gone, &document()).unwrap_err()[0].contains("does not have it"));
    }

    #[test]
    fn fields_of_a_flattened_type_are_found_in_its_all_of_parts() {
        let mut doc = document();
        doc["components"]["schemas"]["Payment"] = json!({"allOf": [
            {"$ref": "#/components/schemas/Recorded"},
            {"type": "object", "properties": {"state": {"type": "string"}}}]});
        doc["components"]["schemas"]["Recorded"] = json!({"type": "object", "properties": {
            "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}});
        assert!(check(&expect(200, &["amount"], &["state", "lines[].sku"]), &doc).is_ok());
        let broken = check(&expect(200, &["amount"], &["price"]), &doc).unwrap_err();
        assert_eq!(broken.len(), 1, "{broken:?}");
    }
}
