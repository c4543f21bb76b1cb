//! Notifications' OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

use crate::api::{DEFAULT_LIMIT, MAX_LIMIT};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "notifications", "version": env!("CARGO_PKG_VERSION"),
                 "description": "What customers are told about their orders, from the order events (topic `orders`): one notification per order confirmed or cancelled."},
        "paths": {
            "/api/v1/notifications": {
                "get": {"operationId": "listNotifications", "summary": "The signed-in customer's notifications, newest first", "security": [{"bearer": []}],
                    "parameters": [{"name": "limit", "in": "query", "required": false,
                                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}],
                    "responses": {"200": {"description": "The notifications", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Notification"}}}}},
                                  "400": problem(), "401": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Notification": {"type": "object", "required": ["id", "user_id", "order_id", "kind", "message", "created_ms"],
                    "properties": {"id": {"type": "string"}, "user_id": {"type": "string"}, "order_id": {"type": "string"},
                                   "kind": {"type": "string", "enum": ["order.confirmed", "order.cancelled"]},
                                   "message": {"type": "string"}, "created_ms": {"type": "integer"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}
            }
        }
    })
}
