//! Operational endpoints: dead letters, health, Prometheus metrics (the OpenAPI description
//! is built from every door's list by `crate::app`; see `crate::http::openapi`).

use crate::http::extract::{Path, Query};
use crate::http::ApiError;
use crate::http::AppState;
use crate::store::dead_letters::{self, DeadLetters};
use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::fmt::Write;
use std::sync::Arc;

pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let plugins = state.pipeline.core().plugin_names();
    axum::Json(json!({ "status": "ok", "event_types": state.registry.len(), "plugins": plugins, "version": env!("CARGO_PKG_VERSION") }))
        .into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    state.pipeline.core().render_metrics(&mut text);
    // Which `serve --threads` the router runs with (tokio's own count, so also when taken
    // from its default or TOKIO_WORKER_THREADS).
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let _ = write!(
        text,
        "# HELP eventyard_runtime_threads Threads of the runtime serving HTTP and the other doors (serve --threads).\n\
         # TYPE eventyard_runtime_threads gauge\neventyard_runtime_threads {threads}\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /v1/dead-letters?kind=&plugin=&type=&since=&until=&limit=`: newest first.
pub async fn dead_letters(
    State(state): State<Arc<AppState>>,
    Query(q): Query<dead_letters::Query>,
) -> Result<Response, ApiError> {
    let items = state.pipeline.core().dead_letters.list(&q);
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
    Query(q): Query<dead_letters::Query>,
) -> Result<Response, ApiError> {
    let n = state.pipeline.core().replay_matching(&q);
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "replaying": n }))).into_response())
}

/// `DELETE /v1/dead-letters?<selection>` (all of them without one): purges them.
pub async fn purge(
    State(state): State<Arc<AppState>>,
    Query(q): Query<dead_letters::Query>,
) -> Result<Response, ApiError> {
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
