//! The config service: `GET /v1/config` (ids), `GET/PUT/DELETE /v1/config/{id}`.
//!
//! A PUT stores a JSON object as the document's new revision and emits
//! `fixinventory/config-updated` (`id`, `revision`); a DELETE emits
//! `fixinventory/config-deleted` (`id`), both in Fix Inventory's wire form and routed like
//! any event. A writer names the revision it read with `If-Match: "<revision>"` (or
//! `?revision=`); a stale one gets 409 `stale_revision` with the current revision.
//! The document is stored before its event is accepted: a crash in between keeps the
//! document and loses only the notification.

use crate::http::extract::{Path, Query};
use crate::http::{body, ApiError, AppState};
use crate::store::config_docs::{ConfigDoc, ConfigDocs, ConfigError};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Where the service's events say they come from.
const SOURCE: &str = "eventyard:config";

#[derive(Deserialize)]
pub struct RevisionQuery {
    revision: Option<String>,
}

pub async fn list(axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>) -> Result<Json<Value>, ApiError> {
    let ids = blocking(&fi, |docs| docs.list()).await?;
    Ok(Json(json!({ "count": ids.len(), "ids": ids })))
}

pub async fn get(
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = blocking(&fi, move |docs| docs.get(&id)).await?;
    Ok(document(StatusCode::OK, doc))
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
    Query(q): Query<RevisionQuery>,
    headers: HeaderMap,
    request: axum::body::Body,
) -> Result<Response, ApiError> {
    if body::MediaType::of(&headers) != body::MediaType::Json {
        return Err(ApiError::UnsupportedMediaType { got: body::content_type(&headers), expected: "application/json" });
    }
    let bytes = body::read(&headers, request, state.limits.max_body_bytes).await?;
    let config = body::parse_json(&bytes)?;
    if !config.is_object() {
        return Err(ApiError::BadRequest("a config document is a JSON object".into()));
    }
    let expected = expected_revision(&headers, q);
    // Finished even if the client hangs up: a written document is announced.
    let pipeline = state.pipeline.clone();
    let doc = pipeline
        .finish_anyway(async move {
            let doc = blocking(&fi, move |docs| docs.put(&id, config, expected.as_deref())).await?;
            let data = json!({ "kind": "event", "message_type": "config-updated", "data": { "id": doc.id, "revision": doc.revision } });
            state.emit_internal("fixinventory/config-updated", data, SOURCE).await?;
            Ok::<_, ApiError>(doc)
        })
        .await?;
    Ok(document(StatusCode::OK, doc))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    axum::Extension(fi): axum::Extension<Arc<super::FixInventory>>,
    Path(id): Path<String>,
    Query(q): Query<RevisionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers, q);
    // Finished even if the client hangs up: a deletion is announced.
    let pipeline = state.pipeline.clone();
    pipeline
        .finish_anyway(async move {
            let doc = blocking(&fi, move |docs| docs.delete(&id, expected.as_deref())).await?;
            let data = json!({ "kind": "event", "message_type": "config-deleted", "data": { "id": doc.id } });
            state.emit_internal("fixinventory/config-deleted", data, SOURCE).await
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The document as JSON, with its revision as the `ETag` (what `If-Match` sends back).
fn document(status: StatusCode, doc: ConfigDoc) -> Response {
    let etag = format!("\"{}\"", doc.revision);
    (status, [(header::ETAG, etag)], Json(doc)).into_response()
}

/// `If-Match: "<rev>"` (quotes optional) or `?revision=<rev>`.
fn expected_revision(headers: &HeaderMap, q: RevisionQuery) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_string())
        .or(q.revision)
}

/// Runs a document operation off the async workers (it reads, writes and fsyncs files).
async fn blocking<T: Send + 'static>(
    fi: &super::FixInventory,
    op: impl FnOnce(&ConfigDocs) -> Result<T, ConfigError> + Send + 'static,
) -> Result<T, ApiError> {
    let docs = fi.configs.clone();
    tokio::task::spawn_blocking(move || op(&docs))
        .await
        .map_err(|e| ApiError::Internal(format!("config task: {e}")))?
        .map_err(ApiError::from)
}
