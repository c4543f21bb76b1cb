//! Orders' OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every route
//! the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn body(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The document.
pub(crate) fn document() -> Value {
    let secured = json!([{"bearer": []}]);
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let limit = json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}});
    let status = json!({"type": "string", "enum": ["PENDING", "PAYMENT_PENDING", "CONFIRMED", "CANCELLED"]});
    let money = json!({"$ref": "#/components/schemas/Money"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "orders", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Event-sourced orders placed through a saga across inventory, payments and shipping."},
        "paths": {
            "/api/v1/orders": {
                "post": {"operationId": "placeOrder", "security": secured.clone(),
                    "summary": "Place an order: accepted at once (202); the saga confirms or cancels it",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255},
                                    "description": "A retry with the same key and body gets the same order"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlaceOrder"}}}},
                    "responses": {"202": body("Accepted", json!({"$ref": "#/components/schemas/Accepted"})),
                                  "400": problem(), "401": problem(), "409": problem(), "422": problem(), "503": problem()}},
                "get": {"operationId": "listOrders", "security": secured.clone(), "summary": "The caller's orders, newest first (read model)",
                    "parameters": [{"name": "status", "in": "query", "schema": status.clone()}, limit.clone()],
                    "responses": {"200": body("Orders", json!({"type": "array", "items": {"$ref": "#/components/schemas/OrderSummary"}})),
                                  "400": problem(), "401": problem()}}},
            "/api/v1/orders/{id}": {
                "get": {"operationId": "getOrder", "security": secured.clone(), "summary": "One order, folded from its events, with its history",
                    "parameters": [id.clone()],
                    "responses": {"200": body("The order", json!({"$ref": "#/components/schemas/Order"})), "401": problem(), "404": problem()}}},
            "/api/v1/orders/{id}/saga": {
                "get": {"operationId": "getOrderSaga", "security": secured.clone(), "summary": "The order's saga instance and its transitions",
                    "parameters": [id],
                    "responses": {"200": body("The saga", json!({"type": "object", "required": ["saga", "history"],
                        "properties": {"saga": {"$ref": "#/components/schemas/Saga"}, "history": {"type": "array", "items": {"type": "object"}}}})),
                                  "401": problem(), "404": problem()}}},
            "/api/v1/orders/sagas": {
                "get": {"operationId": "listSagas", "security": secured.clone(), "summary": "Saga instances, newest first (admin)",
                    "parameters": [limit],
                    "responses": {"200": body("Sagas", json!({"type": "array", "items": {"$ref": "#/components/schemas/Saga"}})),
                                  "400": problem(), "401": problem(), "403": problem()}}},
            "/api/v1/orders/read-model/rebuild": {
                "post": {"operationId": "rebuildReadModel", "security": secured, "summary": "Fold the read model again from every event (admin)",
                    "responses": {"200": body("Rebuilt", json!({"type": "object", "required": ["orders", "took_ms"],
                        "properties": {"orders": {"type": "integer"}, "took_ms": {"type": "integer"}}})),
                                  "401": problem(), "403": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                                   "detail": {"type": "string"}, "instance": {"type": "string"}, "invalid-params": {"type": "array"}}},
                "Money": {"type": "object", "required": ["amount_minor", "currency"],
                    "properties": {"amount_minor": {"type": "integer"}, "currency": {"type": "string"}}},
                "Address": {"type": "object", "additionalProperties": false, "required": ["name", "line1", "city", "postal_code", "country"],
                    "properties": {"name": {"type": "string", "maxLength": 100}, "line1": {"type": "string", "maxLength": 200},
                                   "line2": {"type": "string", "maxLength": 200}, "city": {"type": "string", "maxLength": 100},
                                   "postal_code": {"type": "string", "maxLength": 20}, "country": {"type": "string", "pattern": "^[A-Z]{2}$"}}},
                "PlaceOrder": {"type": "object", "additionalProperties": false, "required": ["lines", "shipping_address"],
                    "properties": {"lines": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": false,
                        "required": ["product_id", "quantity"], "properties": {"product_id": {"type": "integer", "minimum": 1}, "quantity": {"type": "integer", "minimum": 1}}}},
                                   "shipping_address": {"$ref": "#/components/schemas/Address"}}},
                "Accepted": {"type": "object", "required": ["id", "status", "total"],
                    "properties": {"id": {"type": "string"}, "status": status.clone(), "total": money.clone(), "links": {"type": "object"}}},
                "OrderLine": {"type": "object", "required": ["product_id", "quantity", "name", "unit_price_minor"],
                    "properties": {"product_id": {"type": "integer"}, "quantity": {"type": "integer"}, "name": {"type": "string"}, "unit_price_minor": {"type": "integer"}}},
                "OrderSummary": {"type": "object", "required": ["id", "status", "items", "total", "created_ms", "updated_ms"],
                    "properties": {"id": {"type": "string"}, "status": status.clone(), "items": {"type": "integer"}, "total": money.clone(),
                                   "created_ms": {"type": "integer"}, "updated_ms": {"type": "integer"}}},
                "Order": {"type": "object", "required": ["id", "user_id", "status", "lines", "total", "shipping_address", "version", "history"],
                    "properties": {"id": {"type": "string"}, "user_id": {"type": "string"}, "status": status, "total": money,
                                   "lines": {"type": "array", "items": {"$ref": "#/components/schemas/OrderLine"}},
                                   "shipping_address": {"$ref": "#/components/schemas/Address"},
                                   "payment_id": {"type": "string"}, "shipment_id": {"type": "string"}, "cancel_reason": {"type": "string"},
                                   "version": {"type": "integer"}, "created_ms": {"type": "integer"}, "updated_ms": {"type": "integer"},
                                   "history": {"type": "array", "items": {"type": "object", "required": ["seq", "at_ms", "type"],
                                       "properties": {"seq": {"type": "integer"}, "at_ms": {"type": "integer"}, "type": {"type": "string"}}}}}},
                "Saga": {"type": "object", "required": ["id", "kind", "status", "step", "attempts", "state", "last_error"],
                    "properties": {"id": {"type": "string"}, "kind": {"type": "string"},
                                   "status": {"type": "string", "enum": ["running", "compensating", "completed", "compensated", "failed"]},
                                   "step": {"type": "integer"}, "attempts": {"type": "integer"}, "state": {"type": "object"}, "last_error": {"type": "string"}}}
            }
        }
    })
}
