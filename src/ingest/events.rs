//! `POST /v1/events/{type}`: one event in its native documented form.

use super::{body, ApiError, AppState};
use crate::router::Event;
use crate::schema::{EventType, Rejection};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;

/// Longest `Idempotency-Key` accepted (it becomes the event id): the one id cap of every door.
pub const MAX_IDEMPOTENCY_KEY: usize = crate::router::MAX_ID_BYTES;

/// What a producer may say about an event besides its data.
#[derive(Debug, Default)]
pub struct Envelope {
    /// The producer's id (CloudEvents `id`); a UUIDv7 is made when absent.
    pub id: Option<String>,
    pub source: Option<String>,
    /// Now when absent.
    pub time: Option<time::OffsetDateTime>,
    /// The producer's priority for this event (the `Priority` header, the CloudEvents
    /// `priority` extension), over `meta.priority` and the catalogue's `x-priority`.
    pub priority: Option<u8>,
}

/// A priority given outside the body: 1 (lowest) to 5 (highest).
pub fn parse_priority(value: &str) -> Result<u8, ApiError> {
    match value.trim().parse::<u8>() {
        Ok(p @ 1..=5) => Ok(p),
        _ => Err(ApiError::BadRequest(format!("priority {value:?} is not an integer from 1 to 5"))),
    }
}

/// An event's data as it comes in.
pub enum Data<'a> {
    /// The producer's JSON text (a body, an NDJSON line's `data`): validated in place and
    /// kept as sent, no tree built.
    Text(&'a str),
    /// Already parsed out of an envelope (a structured CloudEvent) or made by the router.
    Tree(Value),
}

/// Looks the type up, then [`prepare_typed`].
pub fn prepare(state: &AppState, type_name: &str, data: Data<'_>, envelope: Envelope) -> Result<Event, ApiError> {
    prepare_typed(state.registry.get(type_name)?, data, envelope)
}

/// Validates one event and gives it an id: the single path every ingestion mode goes
/// through before [`AppState::admit`].
pub fn prepare_typed(ty: &EventType, data: Data<'_>, envelope: Envelope) -> Result<Event, ApiError> {
    let (data, own_priority) = match data {
        Data::Text(text) => crate::router::Body::check(ty, text.into()).map_err(|r| match r {
            Rejection::NotJson(e) => body::malformed(&e),
            Rejection::Invalid(errors) => ApiError::Validation { type_name: ty.name.to_string(), errors },
            Rejection::TooDeep { limit } => ApiError::TooDeep { limit },
        })?,
        Data::Tree(value) => {
            if crate::router::body::too_deep(&value) {
                return Err(ApiError::TooDeep { limit: crate::router::body::MAX_DATA_DEPTH });
            }
            if let Err(errors) = ty.validate(&value) {
                return Err(ApiError::Validation { type_name: ty.name.to_string(), errors });
            }
            let priority = ty.priority_of(&value);
            (crate::router::Body::from_value(value), priority)
        }
    };
    let keyed = envelope.id.is_some();
    let id = envelope.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if id.len() > crate::router::MAX_ID_BYTES {
        return Err(ApiError::IdTooLong { field: "id", limit: crate::router::MAX_ID_BYTES });
    }
    Ok(Event {
        keyed,
        id,
        type_name: ty.name.clone(),
        time: envelope.time.unwrap_or_else(time::OffsetDateTime::now_utc),
        priority: envelope.priority.unwrap_or(own_priority),
        source: envelope.source,
        data,
        hops: 0,
    })
}

pub async fn post_native(
    State(state): State<Arc<AppState>>,
    axum::Extension(grant): axum::Extension<super::Grant>,
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
pub async fn status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.pipeline.core().statuses.get(&id) {
        Some(s) => Ok(axum::Json(s).into_response()),
        None => Err(ApiError::UnknownEvent { id }),
    }
}

/// `202 {"id": ...}`, written directly: this is the hot path.
pub fn accepted(id: &str) -> Response {
    let body = format!(r#"{{"id":{}}}"#, serde_json::Value::from(id));
    (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
