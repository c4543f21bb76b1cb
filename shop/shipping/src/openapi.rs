//! Shipping's OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    let shipment = json!({"description": "The shipment", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Shipment"}}}});
    let secured = json!([{"bearer": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "shipping", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Shipments, one per order, with a timeline: created → packed → shipped → delivered, or cancelled before it leaves. A shipment created on hold starts when its order is confirmed (event `shop.order.confirmed` on topic `orders`); an order's cancellation (`shop.order.cancelled`) cancels its shipment."},
        "paths": {
            "/api/v1/shipments": {
                "post": {"operationId": "createShipment", "summary": "Ship an order (idempotent by order_id)", "security": secured.clone(),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateShipment"}}}},
                    "responses": {"201": shipment.clone(), "200": shipment.clone(), "400": problem(), "401": problem(), "403": problem(), "409": problem()}},
                "get": {"operationId": "shipmentsOfOrder", "security": secured.clone(),
                    "parameters": [{"name": "order_id", "in": "query", "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "The order's shipments", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Shipment"}}}}},
                                  "400": problem(), "401": problem()}}},
            "/api/v1/shipments/{id}": {"get": {"operationId": "getShipment", "security": secured.clone(),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": shipment.clone(), "401": problem(), "404": problem()}}},
            "/api/v1/shipments/{id}/cancel": {"post": {"operationId": "cancelShipment",
                "summary": "Cancel a shipment that has not left (idempotent; 409 once shipped or delivered)", "security": secured,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": shipment, "401": problem(), "403": problem(), "404": problem(), "409": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Address": {"type": "object", "required": ["name", "line1", "city", "postal_code", "country"], "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "line1": {"type": "string"}, "line2": {"type": "string"}, "city": {"type": "string"},
                                   "postal_code": {"type": "string"}, "country": {"type": "string", "pattern": "^[A-Z]{2}$"}}},
                "CreateShipment": {"type": "object", "required": ["order_id", "address", "customer"], "additionalProperties": false,
                    "properties": {"order_id": {"type": "string", "maxLength": 64}, "address": {"$ref": "#/components/schemas/Address"},
                                   "hold": {"type": "boolean", "default": false, "description": "Wait for the order's confirmation before the timeline starts"},
                                   "customer": {"type": "string", "maxLength": 128, "description": "The account the order belongs to: the only customer who may read the shipment"}}},
                "Shipment": {"type": "object", "required": ["id", "order_id", "address", "status", "held", "timeline"],
                    "properties": {"id": {"type": "string"}, "order_id": {"type": "string"}, "address": {"$ref": "#/components/schemas/Address"},
                                   "status": {"type": "string", "enum": ["created", "packed", "shipped", "delivered", "cancelled"]},
                                   "held": {"type": "boolean", "description": "Waiting for its order's confirmation"},
                                   "customer": {"type": "string"},
                                   "timeline": {"type": "array", "items": {"type": "object", "required": ["status", "at_ms"],
                                       "properties": {"status": {"type": "string"}, "at_ms": {"type": "integer"}}}}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}
            }
        }
    })
}
