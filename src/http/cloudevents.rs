//! `POST /v1/events`: CloudEvents 1.0 over HTTP (structured, binary and batch modes) and
//! NDJSON batches. The CloudEvents `type` is the event type, `data` the native payload.

use super::events::{prepare, Data, Envelope};
use super::{body, body::MediaType, ApiError, AppState};
use crate::event::Event;
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
/// The context attributes that the JSON event format writes as strings (CloudEvents JSON
/// format, section 2.2); extension attributes may also be integers (`priority`) or booleans.
const STRING_ATTRIBUTES: [&str; 8] =
    ["specversion", "id", "source", "type", "time", "subject", "dataschema", "datacontenttype"];
const ACCEPTED_TYPES: &str =
    "application/cloudevents+json, application/cloudevents-batch+json, application/x-ndjson, or application/json with ce-* headers";

pub async fn post(State(state): State<Arc<AppState>>, grant: super::Grant, headers: HeaderMap, body: Body) -> Response {
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
    // CloudEvents' HTTP binding: "an absent content type means JSON" (the Python SDK sends
    // JSON data so).
    if binary && !matches!(media, MediaType::Json | MediaType::Missing) {
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
    // `null` is an absent attribute (SDKs write unset optional ones so).
    if let Some(k) = STRING_ATTRIBUTES.iter().find(|k| attrs.get(**k).is_some_and(|v| !v.is_string() && !v.is_null())) {
        return Err(ApiError::InvalidCloudEvent { missing: vec![], message: format!("`{k}` is a string") });
    }
    if attrs.get("priority").is_some_and(|p| !p.is_string() && whole(p).is_none()) {
        return Err(ApiError::BadRequest("`priority` is an integer from 1 to 5".into()));
    }
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
        attrs.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| whole(v).map(|n| n.to_string())))
    };
    let envelope = checked_envelope(|k| get(&attrs, k))?;
    let type_name = get(&attrs, "type").expect("checked above");
    let data = attrs.remove("data").unwrap_or(Value::Null);
    prepare(state, &type_name, Data::Tree(data), envelope)
}

/// A JSON number that is a whole non-negative number, written `3` or `3.0` (JSON, and JSON
/// Schema's `integer`, do not tell them apart).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f)).map(|f| f as u64))
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
        Ok(Value::Array(a)) if a.len() > state.limits.max_batch_items => {
            return state.answer(Err(ApiError::TooManyItems { limit: state.limits.max_batch_items }))
        }
        Ok(Value::Array(a)) => a,
        Ok(_) => return state.answer(Err(ApiError::BadRequest("a CloudEvents batch is a JSON array".into()))),
        Err(e) => return state.answer(Err(e)),
    };
    let prepared = events.into_iter().map(|ev| structured(state, ev)).collect();
    let results = state.admit(grant, prepared).await.into_iter().enumerate().map(|(i, r)| ("index", i, state.count(r)));
    batch_response(results)
}

/// Rejected items of one batch answered with their whole error (violations, suggestions);
/// the ones after get their status and error code only, and the answer counts them in
/// `errors_without_detail`. A batch of thousands of bad lines is answered in kilobytes per
/// detailed error, not in copies of every violation.
pub const MAX_DETAILED_ERRORS: usize = 100;
/// Largest detailed error of one item, in bytes of JSON; a longer one (violations quoting
/// huge values) is cut to its status, code and the first [`MAX_ERROR_MESSAGE`] bytes of its
/// message, with `"truncated": true`.
pub const MAX_ERROR_DETAIL_BYTES: usize = 4096;
/// The message kept of an error cut to its summary.
pub const MAX_ERROR_MESSAGE: usize = 256;

/// The answer to any batch: 200 with counts and one result per item, in order. Its size is
/// bounded: per item its position, status and id or error code (under 100 bytes plus the
/// id), plus at most [`MAX_DETAILED_ERRORS`] details of at most [`MAX_ERROR_DETAIL_BYTES`].
pub fn batch_response(results: impl Iterator<Item = (&'static str, usize, Result<String, ApiError>)>) -> Response {
    // Written straight into the body: a `json!` object per accepted item was a tree of small
    // allocations for every event of every batch.
    let (mut accepted, mut rejected, mut without_detail) = (0usize, 0usize, 0usize);
    let mut items = Vec::with_capacity(results.size_hint().0 * 72);
    for (key, position, r) in results {
        if accepted + rejected > 0 {
            items.push(b',');
        }
        match r {
            Ok(id) => {
                accepted += 1;
                let _ = write!(items, r#"{{"{key}":{position},"status":202,"id":"#);
                crate::event::json::write_str(&mut items, &id);
                items.push(b'}');
            }
            Err(e) => {
                rejected += 1;
                let status = e.status().as_u16();
                if rejected > MAX_DETAILED_ERRORS {
                    without_detail += 1;
                    let _ = write!(items, r#"{{"{key}":{position},"status":{status},"error":"{}"}}"#, e.code());
                    continue;
                }
                let start = items.len();
                let mut v = e.body();
                v[key] = json!(position);
                v["status"] = json!(status);
                serde_json::to_writer(&mut items, &v).expect("a JSON value serialises");
                if items.len() - start > MAX_ERROR_DETAIL_BYTES {
                    items.truncate(start);
                    let message = crate::schema::clip(&e.to_string(), MAX_ERROR_MESSAGE);
                    let v = json!({ key: position, "status": status, "error": e.code(), "message": message, "truncated": true });
                    serde_json::to_writer(&mut items, &v).expect("a JSON value serialises");
                }
            }
        }
    }
    let mut body = format!(
        r#"{{"accepted":{accepted},"rejected":{rejected},"errors_without_detail":{without_detail},"results":["#
    )
    .into_bytes();
    body.extend_from_slice(&items);
    body.extend_from_slice(b"]}");
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(results: Vec<Result<String, ApiError>>) -> (Value, usize) {
        let res = batch_response(results.into_iter().enumerate().map(|(i, r)| ("line", i + 1, r)));
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (serde_json::from_slice(&bytes).unwrap(), bytes.len())
    }

    #[tokio::test]
    async fn errors_past_the_first_ones_are_summarised_and_huge_ones_cut() {
        let huge = ApiError::BadRequest("x".repeat(1 << 20));
        let n = MAX_DETAILED_ERRORS + 50;
        let mut results: Vec<_> = (0..n).map(|_| Err(huge.clone())).collect();
        results.push(Ok("an-id".into()));
        let (v, size) = answer(results).await;
        assert_eq!((v["accepted"].as_u64(), v["rejected"].as_u64()), (Some(1), Some(n as u64)));
        assert_eq!(v["errors_without_detail"], 50);
        let r = v["results"].as_array().unwrap();
        assert_eq!(r[0]["truncated"], true);
        assert!(r[0]["message"].as_str().unwrap().len() <= MAX_ERROR_MESSAGE + "…".len());
        assert_eq!(
            r[MAX_DETAILED_ERRORS],
            json!({ "line": MAX_DETAILED_ERRORS + 1, "status": 400, "error": "bad_request" })
        );
        assert_eq!(r[n], json!({ "line": n + 1, "status": 202, "id": "an-id" }));
        assert!(size < MAX_DETAILED_ERRORS * MAX_ERROR_DETAIL_BYTES + n * 100, "{size}");
    }

    #[tokio::test]
    async fn small_errors_keep_their_detail() {
        let e = ApiError::UnknownType { name: "a/b".into(), suggestions: vec!["a/c".into()] };
        let (v, _) = answer(vec![Err(e)]).await;
        assert_eq!(v["results"][0]["did_you_mean"], json!(["a/c"]));
        assert_eq!(v["errors_without_detail"], 0);
    }
}
