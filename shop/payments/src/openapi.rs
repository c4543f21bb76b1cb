//! Payments' OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    let key = json!({"name": "Idempotency-Key", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 255},
                     "description": "The same key with the same request gets the first answer again"});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let payment = json!({"description": "The payment", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Payment"}}}});
    let secured = json!([{"bearer": []}]);
    let write_errors = |ok: &str, p: &Value| -> Value {
        json!({ok: p, "400": problem(), "401": problem(), "402": problem(), "403": problem(), "404": problem(),
               "409": problem(), "422": problem(), "503": problem()})
    };
    let change = |op: &str, summary: &str| -> Value {
        json!({"post": {"operationId": op, "summary": summary, "security": secured.clone(), "parameters": [id.clone(), key.clone()],
                        "responses": write_errors("200", &payment)}})
    };
    let mut refund = change("refund", "Refund part or the rest of a captured payment");
    refund["post"]["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
        "properties": {"amount_minor": {"type": "integer", "minimum": 1}}}}}});
    let mut authorized = write_errors("201", &payment);
    authorized["200"] = payment.clone();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "payments", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Authorize, capture, void and refund, each idempotent by Idempotency-Key."},
        "paths": {
            "/api/v1/payments": {
                "post": {"operationId": "authorize", "security": secured.clone(), "parameters": [key.clone()],
                    "description": "One payment per order: 201 with a new authorization, or 200 with the order's payment when it has one (409 if that one is for another amount).",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuthorizeRequest"}}}},
                    "responses": authorized},
                "get": {"operationId": "listPayments", "security": secured.clone(),
                    "parameters": [{"name": "order_id", "in": "query", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "The order's payments", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Payment"}}}}},
                                  "400": problem(), "401": problem()}}},
            "/api/v1/payments/reconciliation": {"get": {"operationId": "reconciliation", "security": secured.clone(),
                "summary": "Authorizations no live order stands behind (the sweep voids them), for administrators",
                "responses": {"200": {"description": "What stands, and how many the sweep voided", "content": {"application/json": {"schema": {"type": "object",
                    "required": ["standing", "voided_since_start"],
                    "properties": {"voided_since_start": {"type": "integer"}, "standing": {"type": "array", "items": {"type": "object",
                        "required": ["payment_id", "order_id", "order_outcome", "amount_minor", "currency", "outcome_ms"],
                        "properties": {"payment_id": {"type": "string"}, "order_id": {"type": "string"}, "order_outcome": {"type": "string", "enum": ["confirmed", "cancelled"]},
                                       "amount_minor": {"type": "integer"}, "currency": {"type": "string"}, "outcome_ms": {"type": "integer"}}}}}}}}},
                              "401": problem(), "403": problem()}}},
            "/api/v1/payments/{id}": {"get": {"operationId": "getPayment", "security": secured.clone(), "parameters": [id.clone()],
                "responses": {"200": payment.clone(), "401": problem(), "404": problem()}}},
            "/api/v1/payments/{id}/capture": change("capture", "Capture an authorized payment"),
            "/api/v1/payments/{id}/void": change("void", "Void an authorized payment"),
            "/api/v1/payments/{id}/refund": refund,
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Money": {"type": "object", "required": ["amount_minor", "currency"], "additionalProperties": false,
                    "properties": {"amount_minor": {"type": "integer", "minimum": 1}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}},
                "AuthorizeRequest": {"type": "object", "required": ["order_id", "amount", "customer"], "additionalProperties": false,
                    "properties": {"order_id": {"type": "string", "maxLength": 64}, "amount": {"$ref": "#/components/schemas/Money"},
                                   "customer": {"type": "string", "maxLength": 128, "description": "The account the order belongs to: the only customer who may read the payment."}}},
                "Payment": {"type": "object", "required": ["id", "order_id", "amount", "state", "refunded_minor", "provider_ref", "created_ms"],
                    "properties": {"id": {"type": "string"}, "order_id": {"type": "string"}, "amount": {"$ref": "#/components/schemas/Money"},
                                   "state": {"type": "string", "enum": ["authorized", "captured", "voided", "refunded", "declined"]},
                                   "refunded_minor": {"type": "integer"}, "provider_ref": {"type": "string"}, "created_ms": {"type": "integer"},
                                   "customer": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}
            }
        }
    })
}
