//! The catalog's OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn product() -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Product"}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}});
    let input = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProductInput"}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "catalog", "version": env!("CARGO_PKG_VERSION"), "description": "Products, categories and full-text search."},
        "paths": {
            "/api/v1/products": {
                "get": {"operationId": "listProducts", "summary": "A page of products, optionally searched and filtered",
                    "parameters": [
                        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Full-text search (words, prefix-matched)"},
                        {"name": "category", "in": "query", "schema": {"type": "string"}},
                        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                    "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProductPage"}}}}, "400": problem()}},
                "post": {"operationId": "createProduct", "summary": "Create a product (admin)", "security": [{"bearer": []}],
                    "requestBody": input.clone(),
                    "responses": {"201": {"description": "Created", "content": product()["content"].clone()}, "400": problem(), "401": problem(), "403": problem(), "409": problem()}}},
            "/api/v1/products/{id}": {
                "get": {"operationId": "getProduct", "parameters": [id.clone()],
                    "responses": {"200": {"description": "The product", "content": product()["content"].clone()}, "400": problem(), "404": problem()}},
                "put": {"operationId": "replaceProduct", "summary": "Replace a product (admin)", "security": [{"bearer": []}], "parameters": [id.clone()],
                    "requestBody": input,
                    "responses": {"200": {"description": "Replaced", "content": product()["content"].clone()}, "400": problem(), "401": problem(), "403": problem(), "404": problem(), "409": problem()}},
                "delete": {"operationId": "deleteProduct", "summary": "Delete a product (admin)", "security": [{"bearer": []}], "parameters": [id],
                    "responses": {"204": {"description": "Deleted"}, "401": problem(), "403": problem(), "404": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Price": {"type": "object", "required": ["amount_minor", "currency"],
                    "properties": {"amount_minor": {"type": "integer", "minimum": 0}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}},
                "Product": {"type": "object", "required": ["id", "sku", "name", "description", "category", "price", "image_url"],
                    "properties": {"id": {"type": "integer"}, "sku": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                                   "category": {"type": "string"}, "price": {"$ref": "#/components/schemas/Price"}, "image_url": {"type": "string", "format": "uri"}}},
                "ProductInput": {"type": "object", "additionalProperties": false, "required": ["sku", "name", "category", "price", "image_url"],
                    "properties": {"sku": {"type": "string", "pattern": "^[A-Z0-9-]{1,32}$"}, "name": {"type": "string", "minLength": 1, "maxLength": 200},
                                   "description": {"type": "string", "maxLength": 4000}, "category": {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"},
                                   "price": {"$ref": "#/components/schemas/Price"}, "image_url": {"type": "string", "format": "uri"}}},
                "ProductPage": {"type": "object", "required": ["items", "page", "per_page", "total"],
                    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}},
                                   "page": {"type": "integer"}, "per_page": {"type": "integer"}, "total": {"type": "integer"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}}
            }
        }
    })
}
