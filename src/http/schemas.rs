//! `GET /v1/schemas` and `GET /v1/schemas/{type}`.

use super::extract::Path;
use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let types: Vec<Value> = state
        .registry
        .iter()
        .map(|t| {
            json!({
                "type": &*t.name,
                "description": t.schema.get("description"),
                "priority": t.default_priority,
                "href": format!("/v1/schemas/{}", t.name),
            })
        })
        .collect();
    axum::Json(json!({ "count": types.len(), "types": types })).into_response()
}

pub async fn get(State(state): State<Arc<AppState>>, Path(type_name): Path<String>) -> Result<Response, ApiError> {
    let t = state.registry.get(&type_name)?;
    Ok(([(header::CONTENT_TYPE, "application/schema+json")], t.schema_json.clone()).into_response())
}
