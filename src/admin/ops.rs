//! Operational endpoints: health, Prometheus metrics, the OpenAPI description.

use crate::http::ApiError;
use crate::http::AppState;
use crate::store::dead_letters::{self, DeadLetters};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::http::StatusCode;
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

/// The dead-letter selection of a query string; a bad one (unknown key, a time that is not
/// RFC 3339) is a 400 that says why.
fn selection(q: Result<Query<dead_letters::Query>, QueryRejection>) -> Result<dead_letters::Query, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `GET /v1/dead-letters?kind=&plugin=&type=&since=&until=&limit=`: newest first.
pub async fn dead_letters(
    State(state): State<Arc<AppState>>,
    q: Result<Query<dead_letters::Query>, QueryRejection>,
) -> Result<Response, ApiError> {
    let items = state.pipeline.core().dead_letters.list(&selection(q)?);
    Ok(axum::Json(json!({ "count": items.len(), "dead_letters": items })).into_response())
}

/// `GET /v1/dead-letters/{id}`.
pub async fn dead_letter(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let letter = state.pipeline.core().dead_letters.get(&id).ok_or(ApiError::UnknownDeadLetter { id })?;
    Ok(axum::Json(letter).into_response())
}

/// `POST /v1/dead-letters/{id}/replay`: tries it again (202); it leaves the list when done.
pub async fn replay_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !state.pipeline.core().replay_one(&id) {
        return Err(ApiError::UnknownDeadLetter { id });
    }
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "replaying": 1 }))).into_response())
}

/// `POST /v1/dead-letters/replay?<selection>`: tries every selected one again.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    q: Result<Query<dead_letters::Query>, QueryRejection>,
) -> Result<Response, ApiError> {
    let n = state.pipeline.core().replay_matching(&selection(q)?);
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "replaying": n }))).into_response())
}

/// `DELETE /v1/dead-letters?<selection>` (all of them without one): purges them.
pub async fn purge(
    State(state): State<Arc<AppState>>,
    q: Result<Query<dead_letters::Query>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = selection(q)?;
    let purged = state.pipeline.core().dead_letters.take(DeadLetters::selector(&q));
    let purged = purged.map_err(|e| ApiError::Internal(format!("dead letters: {e}")))?;
    Ok(axum::Json(json!({ "purged": purged.len() })).into_response())
}

/// `DELETE /v1/dead-letters/{id}`.
pub async fn purge_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let purged = state.pipeline.core().dead_letters.take(|d| d.id == id);
    let purged = purged.map_err(|e| ApiError::Internal(format!("dead letters: {e}")))?;
    if purged.is_empty() {
        return Err(ApiError::UnknownDeadLetter { id });
    }
    Ok(axum::Json(json!({ "purged": 1 })).into_response())
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
                "parameters": [
                    { "name": "types", "in": "query", "schema": { "type": "string", "maxLength": crate::event::pattern::MAX_PATTERN_LEN }, "description": "comma-separated globs" },
                    { "name": "regex", "in": "query", "schema": { "type": "string", "maxLength": crate::event::pattern::MAX_PATTERN_LEN }, "description": "a regex instead of globs" }
                ],
                "responses": { "101": { "description": "switching to WebSocket" }, "400": error, "401": error, "403": error, "503": error }
            }},
            "/v1/rpc/{type}": { "post": {
                "summary": "Infrahub request/response: accept the request, answer with its response event",
                "parameters": [
                    { "name": "type", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "timeout", "in": "query", "schema": { "type": "number" }, "description": "seconds (default 30, max 300)" }
                ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object" } } } },
                "responses": { "200": { "description": "the response message, or passed: false with errors" }, "400": error, "404": error, "502": error, "504": error }
            }},
            "/v1/config": { "get": { "summary": "Ids of the config service's documents", "responses": { "200": { "description": "ids" } } } },
            "/v1/config/{id}": {
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$" } },
                    { "name": "If-Match", "in": "header", "schema": { "type": "string" }, "description": "the revision the writer read" },
                    { "name": "revision", "in": "query", "schema": { "type": "string" }, "description": "same as If-Match" }
                ],
                "get": { "summary": "A config document and its revision (ETag)", "responses": { "200": { "description": "document" }, "404": error } },
                "put": {
                    "summary": "Store a JSON object as the next revision; emits fixinventory/config-updated",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object" } } } },
                    "responses": { "200": { "description": "document" }, "400": error, "409": error, "415": error }
                },
                "delete": { "summary": "Delete; emits fixinventory/config-deleted", "responses": { "204": { "description": "deleted" }, "404": error, "409": error } }
            },
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
