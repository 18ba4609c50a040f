//! `POST /v1/rpc/{type}`: Infrahub's request/response. The body is the request message
//! (`infrahub/send.echo.request`, say); the router gives it a `meta.correlation_id` (unless
//! the caller did) and a `meta.reply_to`, accepts it like any event, and answers with the
//! `infrahub/response/<name>` event a handler emits for that correlation id.
//!
//! | outcome | answer |
//! |---|---|
//! | a response event | 200, the response message (validated against its schema when it was emitted) |
//! | the handlers failed (dead letter) | 200, `{"meta", "passed": false, "errors": [...]}` |
//! | processed, nothing responded | 502 `rpc_unanswered` |
//! | no answer within `?timeout=` seconds (default 30) | 504 `rpc_timeout`, with the request's id |
//! | a `meta.correlation_id` over [`MAX_CORRELATION_ID_BYTES`] | 400 `id_too_long` |
//!
//! Only plugins (their manifests list the response types they emit) and ingestion tokens
//! granted the response type (`[[auth.ingest]] answers`) can answer a caller; a caller that
//! disconnects leaves no waiter behind.

use crate::http::events::{prepare, Data, Envelope};
use crate::http::extract::{Path, Query};
use crate::http::{body, ApiError, AppState};
use crate::router::rpc::{MAX_CORRELATION_ID_BYTES, RESPONSE_PREFIX};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a caller waits when it does not say.
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
/// The longest wait a caller may ask for: a waiting request holds a connection.
pub const MAX_TIMEOUT_SECS: f64 = 300.0;
/// `meta.reply_to` of requests made through this endpoint.
const REPLY_TO: &str = "eventyard.rpc";

#[derive(Deserialize)]
pub struct Params {
    timeout: Option<f64>,
}

pub async fn call(
    State(state): State<Arc<AppState>>,
    grant: crate::http::Grant,
    Path(type_name): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    request: axum::body::Body,
) -> Result<Response, ApiError> {
    let ty = state.registry.get(&type_name)?.clone();
    let response_type = format!("{RESPONSE_PREFIX}{}", ty.name.strip_prefix("infrahub/").unwrap_or(&ty.name));
    if state.registry.get(&response_type).is_err() {
        return Err(ApiError::BadRequest(format!("`{}` has no response type (`{response_type}`)", ty.name)));
    }
    let timeout = params.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS) {
        return Err(ApiError::BadRequest(format!("`timeout` is seconds, more than 0 and at most {MAX_TIMEOUT_SECS}")));
    }
    if body::MediaType::of(&headers) != body::MediaType::Json {
        return Err(ApiError::UnsupportedMediaType { got: body::content_type(&headers), expected: "application/json" });
    }
    let bytes = body::read(&headers, request, state.limits.max_body_bytes).await?;
    let mut data = body::parse_json(&bytes)?;
    let Some(message) = data.as_object_mut() else {
        return Err(ApiError::BadRequest("a request message is a JSON object".into()));
    };
    let meta = message.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::BadRequest("`meta` is an object".into()));
    };
    let correlation_id = match meta.get("correlation_id").and_then(Value::as_str) {
        Some(id) if id.len() > MAX_CORRELATION_ID_BYTES => {
            return Err(ApiError::IdTooLong { field: "meta.correlation_id", limit: MAX_CORRELATION_ID_BYTES })
        }
        Some(id) => id.to_string(),
        None if meta.get("correlation_id").is_none_or(Value::is_null) => uuid::Uuid::now_v7().to_string(),
        None => return Err(ApiError::BadRequest("`meta.correlation_id` is a string".into())),
    };
    meta.insert("correlation_id".into(), json!(correlation_id));
    if meta.get("reply_to").is_none_or(Value::is_null) {
        meta.insert("reply_to".into(), json!(REPLY_TO));
    }

    // Dropped on every way out, a disconnected caller's included (its request future is
    // dropped): no waiter outlives its caller.
    let mut waiting =
        state.pipeline.core().rpc.register(&correlation_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let id =
        state.count(state.admit_one(&grant, prepare(&state, &ty.name, Data::Tree(data), Envelope::default())).await)?;
    // The response, or the request finishing without one. A handler's response is offered
    // when it is emitted, before its request is finished: `biased` takes it first. A request
    // no route takes is finished at once: it waits for a producer's response (or the
    // timeout) instead.
    let core = state.pipeline.core();
    let routed = core.is_routed(&ty.name);
    let answer = tokio::time::timeout(Duration::from_secs_f64(timeout), async {
        tokio::select! {
            biased;
            response = &mut waiting.reply => response.ok().map(Ok),
            Some(finished) = core.finished(&id), if routed => Some(Err(finished)),
        }
    });
    let finished = match answer.await {
        Ok(Some(Ok(response))) => return Ok(Json(response.data).into_response()),
        Ok(Some(Err(finished))) => finished,
        Ok(None) | Err(_) => return Err(ApiError::RpcTimeout { id, correlation_id, seconds: timeout }),
    };
    if !finished.failed() {
        return Err(ApiError::RpcUnanswered { id, correlation_id });
    }
    let errors: Vec<String> =
        finished.outcome.failed.iter().map(|f| format!("{}: {}: {}", f.plugin, f.kind, f.message)).collect();
    Ok(Json(json!({
        "meta": { "correlation_id": correlation_id, "request_id": id },
        "passed": false,
        "errors": errors,
    }))
    .into_response())
}
