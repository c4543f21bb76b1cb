//! Identity's OpenAPI 3.1 document, served at `/openapi.json`; the tests check that every
//! route the router answers is in it.

use serde_json::{json, Value};

fn problem() -> Value {
    json!({"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// The document.
pub(crate) fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "identity", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Accounts, the OAuth 2.0 token endpoint, the JWKS and OpenID Connect discovery."},
        "paths": {
            "/api/v1/accounts": {"post": {
                "operationId": "signUp", "summary": "Create a customer account",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignUp"}}}},
                "description": "Answered alike whether the address was new or already has an account (or looks like one that has), so which addresses have accounts is not told; the owner finds out by signing in.",
                "responses": {"202": {"description": "Accepted", "content": {"application/json": {"schema": {"type": "object", "required": ["status", "email"],
                                  "properties": {"status": {"type": "string", "enum": ["accepted"]}, "email": {"type": "string"}, "detail": {"type": "string"}}}}}},
                              "400": problem(), "413": problem()}}},
            "/oauth2/token": {"post": {
                "operationId": "token", "summary": "OAuth 2.0 token endpoint (RFC 6749)",
                "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/TokenRequest"}}}},
                "responses": {"200": {"description": "Tokens", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenResponse"}}}},
                              "400": problem(), "401": problem(), "429": problem()}}},
            "/oauth2/jwks": {"get": {
                "operationId": "jwks", "summary": "The public signing keys (RFC 7517)",
                "responses": {"200": {"description": "A JWK set", "content": {"application/json": {"schema": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}}}}}}}},
            "/.well-known/openid-configuration": {"get": {
                "operationId": "discovery", "summary": "OpenID Connect discovery",
                "responses": {"200": {"description": "Provider metadata", "content": {"application/json": {"schema": {"type": "object", "required": ["issuer", "token_endpoint", "jwks_uri"]}}}}}}},
            "/api/v1/me": {"get": {
                "operationId": "me", "summary": "The caller's account", "security": [{"bearer": []}],
                "responses": {"200": {"description": "The account", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Account"}}}},
                              "401": problem(), "404": problem()}}},
            "/api/v1/admin/signing-keys": {"post": {
                "operationId": "rotateSigningKey", "summary": "Rotate the signing key now (admin)", "security": [{"bearer": []}],
                "responses": {"201": {"description": "The new key's id", "content": {"application/json": {"schema": {"type": "object", "required": ["kid"], "properties": {"kid": {"type": "string"}}}}}},
                              "401": problem(), "403": problem()}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "SignUp": {"type": "object", "additionalProperties": false, "required": ["email", "password", "name"],
                    "properties": {"email": {"type": "string", "format": "email", "maxLength": 254},
                                   "password": {"type": "string", "minLength": 10, "maxLength": 128},
                                   "name": {"type": "string", "minLength": 1, "maxLength": 100}}},
                "Account": {"type": "object", "required": ["id", "email", "name", "roles", "created_ms"],
                    "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"},
                                   "roles": {"type": "array", "items": {"type": "string", "enum": ["customer", "admin"]}},
                                   "created_ms": {"type": "integer"}}},
                "TokenRequest": {"type": "object", "required": ["grant_type"],
                    "properties": {"grant_type": {"type": "string", "enum": ["password", "refresh_token", "client_credentials"]},
                                   "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                                   "username": {"type": "string"}, "password": {"type": "string"},
                                   "refresh_token": {"type": "string"}, "scope": {"type": "string"}}},
                "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string", "const": "Bearer"},
                                   "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"}, "scope": {"type": "string"}}},
                "Problem": {"type": "object", "required": ["type", "title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                                   "detail": {"type": "string"}, "error": {"type": "string"}, "error_description": {"type": "string"}}}
            }
        }
    })
}
