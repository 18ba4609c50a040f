//! Operational endpoints: health, Prometheus metrics, the OpenAPI description.

use super::AppState;
use crate::router::dead_letters;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let plugins = state.pipeline.core().plugin_names();
    axum::Json(json!({ "status": "ok", "event_types": state.registry.len(), "plugins": plugins, "version": env!("CARGO_PKG_VERSION") }))
        .into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    state.pipeline.core().render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /v1/dead-letters?kind=&plugin=&type=&limit=`: newest first.
pub async fn dead_letters(State(state): State<Arc<AppState>>, Query(q): Query<dead_letters::Query>) -> Response {
    let items = state.pipeline.core().dead_letters.list(&q);
    axum::Json(json!({ "count": items.len(), "dead_letters": items })).into_response()
}

/// A compact OpenAPI 3.1 description; the event type parameter lists every known type.
pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let types: Vec<&str> = state.registry.iter().map(|t| &*t.name).collect();
    let error = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let accepted = json!({ "description": "accepted", "content": { "application/json": { "schema": { "type": "object", "properties": { "id": { "type": "string" } } } } } });
    let batch = json!({ "description": "one result per item", "content": { "application/json": { "schema": { "type": "object" } } } });
    axum::Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "Eventyard", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/events/{type}": { "post": {
                "summary": "Ingest one event in its native documented form",
                "parameters": [{ "name": "type", "in": "path", "required": true, "schema": { "type": "string", "enum": types } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {} } } },
                "responses": { "202": accepted, "400": error, "404": error, "413": error, "415": error }
            }},
            "/v1/events": { "post": {
                "summary": "Ingest CloudEvents (structured, binary, batch) or an NDJSON batch",
                "requestBody": { "required": true, "content": {
                    "application/cloudevents+json": { "schema": {} },
                    "application/cloudevents-batch+json": { "schema": { "type": "array" } },
                    "application/x-ndjson": { "schema": { "type": "string" } }
                }},
                "responses": { "200": batch, "202": accepted, "400": error, "404": error, "413": error, "415": error }
            }},
            "/v1/schemas": { "get": { "summary": "List event types", "responses": { "200": { "description": "event types" } } } },
            "/v1/schemas/{type}": { "get": {
                "summary": "The JSON Schema of one event type",
                "parameters": [{ "name": "type", "in": "path", "required": true, "schema": { "type": "string", "enum": types } }],
                "responses": { "200": { "description": "JSON Schema (draft 2020-12)" }, "404": error }
            }},
            "/v1/subscribe": { "get": {
                "summary": "WebSocket stream of routed events",
                "parameters": [{ "name": "types", "in": "query", "schema": { "type": "string" }, "description": "comma-separated globs" }],
                "responses": { "101": { "description": "switching to WebSocket" }, "400": error }
            }},
            "/healthz": { "get": { "responses": { "200": { "description": "up" } } } },
            "/metrics": { "get": { "responses": { "200": { "description": "Prometheus text format" } } } }
        },
        "components": { "schemas": { "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
        }}}
    }))
    .into_response()
}
