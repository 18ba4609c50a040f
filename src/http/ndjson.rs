//! NDJSON batches on `POST /v1/events` (`application/x-ndjson`): one
//! `{"type": ..., "data": ..., "id"?: ...}` object per line, blank lines skipped, answered
//! with a result per line (its 1-based line number), so one bad line never hides the rest.

use super::cloudevents::batch_response;
use super::events::{prepare, Data, Envelope};
use super::{ApiError, AppState};
use crate::event::Event;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    /// Borrowed from the line unless it has escapes (one allocation less per event).
    #[serde(rename = "type", borrow)]
    type_name: std::borrow::Cow<'a, str>,
    /// Kept as text too: it is what plugins get and what the log stores, so the parsed
    /// tree is never serialised back.
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    id: Option<String>,
}

pub async fn batch(state: &AppState, grant: &super::Grant, bytes: &[u8]) -> Response {
    let limit = state.limits.max_batch_items;
    let items: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, l))
        .take(limit + 1)
        .collect();
    // Counted before any line is parsed: one request's work is bounded by the item cap.
    if items.len() > limit {
        return state.answer(Err(ApiError::TooManyItems { limit }));
    }
    let (lines, prepared): (Vec<usize>, Vec<_>) = items.into_iter().map(|(n, l)| (n, one(state, l))).unzip();
    let results = state.admit(grant, prepared).await;
    batch_response(lines.into_iter().zip(results).map(|(line, r)| ("line", line, state.count(r))))
}

fn one(state: &AppState, line: &[u8]) -> Result<Event, ApiError> {
    // serde reads a struct from an array too: `["type", data]` was accepted (found by
    // tests/properties.rs); a line is one object.
    if line.trim_ascii_start().starts_with(b"[") {
        return Err(ApiError::InvalidBatchLine { message: "a line is one JSON object, not an array".into() });
    }
    // One pass straight into the line's shape; syntax errors and shape errors are told apart.
    let line: Line = serde_json::from_slice(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidBatchLine { message: e.to_string() },
        _ => ApiError::MalformedJson { line: e.line(), column: e.column(), message: e.to_string() },
    })?;
    prepare(state, &line.type_name, Data::Text(line.data.get()), Envelope { id: line.id, ..Envelope::default() })
}
