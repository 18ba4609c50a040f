//! `POST /v1/events/{type}`: one event in its native documented form.

use super::extract::Path;
use super::{body, ApiError, AppState};
use crate::event::Event;
pub use crate::router::admit::{Data, Envelope};
use crate::schema::EventType;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Longest `Idempotency-Key` accepted (it becomes the event id): the one id cap of every door.
pub const MAX_IDEMPOTENCY_KEY: usize = crate::event::MAX_ID_BYTES;

/// A priority given outside the body: 1 (lowest) to 5 (highest).
pub fn parse_priority(value: &str) -> Result<u8, ApiError> {
    match value.trim().parse::<u8>() {
        Ok(p @ 1..=5) => Ok(p),
        _ => Err(ApiError::BadRequest(format!("priority {value:?} is not an integer from 1 to 5"))),
    }
}

/// Looks the type up, then [`prepare_typed`].
pub fn prepare(state: &AppState, type_name: &str, data: Data<'_>, envelope: Envelope) -> Result<Event, ApiError> {
    prepare_typed(state.registry.get(type_name)?, data, envelope)
}

/// Validates one event and gives it an id ([`crate::router::admit::prepare`]), in the
/// HTTP API's error shape.
pub fn prepare_typed(ty: &EventType, data: Data<'_>, envelope: Envelope) -> Result<Event, ApiError> {
    crate::router::admit::prepare(ty, data, envelope).map_err(ApiError::from)
}

pub async fn post_native(
    State(state): State<Arc<AppState>>,
    grant: super::Grant,
    Path(type_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = async {
        // Unknown types are refused before the body is read.
        let ty = state.registry.get(&type_name)?;
        if body::MediaType::of(&headers) != body::MediaType::Json {
            return Err(ApiError::UnsupportedMediaType {
                got: body::content_type(&headers),
                expected: "application/json",
            });
        }
        let bytes = body::read(&headers, body, state.limits.max_body_bytes).await?;
        // Plugins, the log and subscribers get the body as sent.
        let text = body::json_text(&bytes)?;
        // The producer's idempotency key is the event's id: a retry is answered like the first.
        let id = match headers.get("idempotency-key").map(|v| v.to_str()) {
            // Too long: refused below with the other doors' `id_too_long`.
            Some(Ok(key)) if !key.is_empty() => Some(key.to_string()),
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                )))
            }
            None => None,
        };
        let priority = match headers.get("priority") {
            Some(v) => Some(parse_priority(v.to_str().unwrap_or(""))?),
            None => None,
        };
        prepare_typed(ty, Data::Text(text), Envelope { id, priority, ..Envelope::default() })
    }
    .await;
    Ok(state.answer(state.admit_one(&grant, result).await))
}

/// `GET /v1/events/{id}`: where an accepted event is (queued, in progress, processed with
/// what was emitted, dead-lettered with why).
///
/// The same path with an event type's name is that type's ingestion endpoint: a GET there
/// is 405 (`Allow: POST`), not a look-up of an event with that id.
pub async fn status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.registry.iter().any(|t| *t.name == *id) {
        let mut res = ApiError::MethodNotAllowed.into_response();
        res.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static("POST"));
        return Ok(res);
    }
    match state.pipeline.core().status(&id).await {
        Some(s) => Ok(axum::Json(s).into_response()),
        None => Err(ApiError::UnknownEvent { id }),
    }
}

/// `202 {"id": ...}`, written directly: this is the hot path.
pub fn accepted(id: &str) -> Response {
    let mut body = Vec::with_capacity(r#"{"id":""}"#.len() + id.len());
    body.extend_from_slice(br#"{"id":"#);
    crate::event::json::write_str(&mut body, id);
    body.push(b'}');
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
