//! `POST /v1/events`: CloudEvents 1.0 over HTTP (structured, binary and batch modes) and
//! NDJSON batches. The CloudEvents `type` is the event type, `data` the native payload.

use super::events::{prepare, Data, Envelope};
use super::{body, body::MediaType, ApiError, AppState};
use crate::router::Event;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::Arc;

/// The attributes CloudEvents 1.0 requires, in the order errors list them.
const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];
const SPEC_VERSION: &str = "1.0";
const ACCEPTED_TYPES: &str =
    "application/cloudevents+json, application/cloudevents-batch+json, application/x-ndjson, or application/json with ce-* headers";

pub async fn post(
    State(state): State<Arc<AppState>>,
    axum::Extension(grant): axum::Extension<super::Grant>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = MediaType::of(&headers);
    let binary = headers.contains_key("ce-specversion");
    let limit = match media {
        MediaType::CloudEventBatch | MediaType::Ndjson => state.limits.max_batch_bytes,
        _ => state.limits.max_body_bytes,
    };
    let unsupported = || ApiError::UnsupportedMediaType { got: body::content_type(&headers), expected: ACCEPTED_TYPES };
    if !matches!(media, MediaType::CloudEvent | MediaType::CloudEventBatch | MediaType::Ndjson) && !binary {
        return state.answer(Err(unsupported()));
    }
    if binary && media != MediaType::Json {
        return state.answer(Err(ApiError::UnsupportedMediaType {
            got: body::content_type(&headers),
            expected: "application/json data in binary mode",
        }));
    }
    let bytes = match body::read(&headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return state.answer(Err(e)),
    };
    match media {
        MediaType::CloudEventBatch => batch(&state, &grant, &bytes).await,
        MediaType::Ndjson => super::ndjson::batch(&state, &grant, &bytes).await,
        MediaType::CloudEvent => {
            let prepared = body::parse_json(&bytes).and_then(|v| structured(&state, v));
            state.answer(state.admit_one(&grant, prepared).await)
        }
        _ => {
            let prepared = body::json_text(&bytes).and_then(|text| binary_mode(&state, &headers, Data::Text(text)));
            state.answer(state.admit_one(&grant, prepared).await)
        }
    }
}

/// Structured mode: the whole CloudEvent is the JSON body.
fn structured(state: &AppState, event: Value) -> Result<Event, ApiError> {
    let Value::Object(mut attrs) = event else {
        return Err(ApiError::InvalidCloudEvent {
            missing: vec![],
            message: "a structured CloudEvent is a JSON object".into(),
        });
    };
    if attrs.contains_key("data_base64") {
        return Err(ApiError::UnsupportedMediaType { got: Some("data_base64".into()), expected: "JSON `data`" });
    }
    if let Some(ct) = attrs.get("datacontenttype").and_then(Value::as_str) {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::UnsupportedMediaType {
                got: Some(ct.to_string()),
                expected: "datacontenttype application/json",
            });
        }
    }
    // Extension attributes (e.g. `priority`) may be JSON integers as well as strings.
    let get = |attrs: &Map<String, Value>, k: &str| {
        attrs.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())))
    };
    let envelope = checked_envelope(|k| get(&attrs, k))?;
    let type_name = get(&attrs, "type").expect("checked above");
    let data = attrs.remove("data").unwrap_or(Value::Null);
    prepare(state, &type_name, Data::Tree(data), envelope)
}

/// Binary mode: attributes in `ce-*` headers, the body is the data.
fn binary_mode(state: &AppState, headers: &HeaderMap, data: Data<'_>) -> Result<Event, ApiError> {
    let get = |k: &str| headers.get(format!("ce-{k}")).and_then(|v| v.to_str().ok()).map(str::to_string);
    let envelope = checked_envelope(get)?;
    let type_name = get("type").expect("checked above");
    prepare(state, &type_name, data, envelope)
}

/// Checks the required attributes (naming every missing one) and the optional `time`.
fn checked_envelope(get: impl Fn(&str) -> Option<String>) -> Result<Envelope, ApiError> {
    let missing: Vec<&'static str> = REQUIRED.iter().copied().filter(|k| get(k).is_none_or(|v| v.is_empty())).collect();
    if !missing.is_empty() {
        return Err(ApiError::InvalidCloudEvent {
            message: format!("missing required attribute(s): {}", missing.join(", ")),
            missing,
        });
    }
    let version = get("specversion").expect("checked above");
    if version != SPEC_VERSION {
        return Err(ApiError::InvalidCloudEvent {
            missing: vec![],
            message: format!("specversion {version:?} is not supported; use \"1.0\""),
        });
    }
    let time = match get("time") {
        Some(t) => {
            Some(time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|e| {
                ApiError::InvalidCloudEvent { missing: vec![], message: format!("time {t:?} is not RFC 3339: {e}") }
            })?)
        }
        None => None,
    };
    let priority = get("priority").map(|p| super::events::parse_priority(&p)).transpose()?;
    Ok(Envelope { id: get("id"), source: get("source"), time, priority })
}

/// Batch mode: a JSON array of structured CloudEvents, answered with a result per event.
async fn batch(state: &AppState, grant: &super::Grant, bytes: &[u8]) -> Response {
    let events = match body::parse_json(bytes) {
        Ok(Value::Array(a)) => a,
        Ok(_) => return state.answer(Err(ApiError::BadRequest("a CloudEvents batch is a JSON array".into()))),
        Err(e) => return state.answer(Err(e)),
    };
    let prepared = events.into_iter().map(|ev| structured(state, ev)).collect();
    let results = state.admit(grant, prepared).await.into_iter().enumerate().map(|(i, r)| ("index", i, state.count(r)));
    batch_response(results)
}

/// The answer to any batch: 200 with counts and one result per item, in order.
pub fn batch_response(results: impl Iterator<Item = (&'static str, usize, Result<String, ApiError>)>) -> Response {
    // Written straight into the body: a `json!` object per accepted item was a tree of small
    // allocations for every event of every batch.
    let (mut accepted, mut rejected) = (0usize, 0usize);
    let mut items = Vec::with_capacity(results.size_hint().0 * 72);
    for (key, position, r) in results {
        if accepted + rejected > 0 {
            items.push(b',');
        }
        match r {
            Ok(id) => {
                accepted += 1;
                let _ = write!(items, r#"{{"{key}":{position},"status":202,"id":"#);
                serde_json::to_writer(&mut items, &id).expect("a string serialises");
                items.push(b'}');
            }
            Err(e) => {
                rejected += 1;
                let mut v = e.body();
                v[key] = json!(position);
                v["status"] = json!(e.status().as_u16());
                serde_json::to_writer(&mut items, &v).expect("a JSON value serialises");
            }
        }
    }
    let mut body = format!(r#"{{"accepted":{accepted},"rejected":{rejected},"results":["#).into_bytes();
    body.extend_from_slice(&items);
    body.extend_from_slice(b"]}");
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
