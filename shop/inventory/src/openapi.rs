//! Inventory's OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn body(schema: &str) -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    let order =
        json!({"name": "order_id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}});
    let product =
        json!({"name": "product_id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}});
    let secured = json!([{"bearer": []}]);
    let reservation = json!({"description": "The reservation", "content": body("Reservation")["content"].clone()});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "inventory", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Stock per product and reservations by order: idempotent by order id, never oversold."},
        "paths": {
            "/api/v1/inventory/{product_id}": {
                "get": {"operationId": "getStock", "security": secured.clone(), "parameters": [product.clone()],
                    "responses": {"200": {"description": "Stock", "content": body("Stock")["content"].clone()}, "400": problem(), "401": problem(), "404": problem()}},
                "put": {"operationId": "setStock", "summary": "Set units on hand (admin)", "security": secured.clone(), "parameters": [product],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["on_hand"], "additionalProperties": false, "properties": {"on_hand": {"type": "integer", "minimum": 0}}}}}},
                    "responses": {"200": {"description": "Stock", "content": body("Stock")["content"].clone()}, "401": problem(), "403": problem(), "409": problem()}}},
            "/api/v1/inventory/reservations": {"post": {"operationId": "reserve", "summary": "Reserve every line or none (idempotent by order_id)", "security": secured.clone(),
                "requestBody": {"required": true, "content": body("ReserveRequest")["content"].clone()},
                "responses": {"200": reservation.clone(), "400": problem(), "401": problem(), "403": problem(), "409": problem()}}},
            "/api/v1/inventory/reservations/{order_id}": {"get": {"operationId": "getReservation", "security": secured.clone(), "parameters": [order.clone()],
                "responses": {"200": reservation.clone(), "401": problem(), "403": problem(), "404": problem()}}},
            "/api/v1/inventory/reservations/{order_id}/release": {"post": {"operationId": "release", "summary": "Give the units back (idempotent)", "security": secured.clone(), "parameters": [order.clone()],
                "responses": {"200": reservation.clone(), "401": problem(), "403": problem(), "409": problem()}}},
            "/api/v1/inventory/reservations/{order_id}/commit": {"post": {"operationId": "commit", "summary": "The units leave the warehouse (idempotent)", "security": secured, "parameters": [order],
                "responses": {"200": reservation, "401": problem(), "403": problem(), "404": problem(), "409": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Stock": {"type": "object", "required": ["product_id", "on_hand", "reserved", "available"],
                    "properties": {"product_id": {"type": "integer"}, "on_hand": {"type": "integer"}, "reserved": {"type": "integer"}, "available": {"type": "integer"}}},
                "Line": {"type": "object", "required": ["product_id", "quantity"], "additionalProperties": false,
                    "properties": {"product_id": {"type": "integer", "minimum": 1}, "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}}},
                "ReserveRequest": {"type": "object", "required": ["order_id", "lines"], "additionalProperties": false,
                    "properties": {"order_id": {"type": "string", "maxLength": 64}, "lines": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/Line"}}}},
                "Reservation": {"type": "object", "required": ["order_id", "state", "lines"],
                    "properties": {"order_id": {"type": "string"}, "state": {"type": "string", "enum": ["reserved", "released", "committed", "returned"]},
                                   "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}
            }
        }
    })
}
