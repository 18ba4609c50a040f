//! NDJSON batches on `POST /v1/events` (`application/x-ndjson`): one
//! `{"type": ..., "data": ..., "id"?: ...}` object per line, blank lines skipped, answered
//! with a result per line (its 1-based line number), so one bad line never hides the rest.

use super::cloudevents::batch_response;
use super::events::{accept, Envelope};
use super::{body, ApiError, AppState};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    type_name: String,
    data: Value,
    #[serde(default)]
    id: Option<String>,
}

pub fn batch(state: &AppState, bytes: &[u8]) -> Response {
    let results = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| ("line", i + 1, state.count(one(state, l))));
    batch_response(results)
}

fn one(state: &AppState, line: &[u8]) -> Result<String, ApiError> {
    let value = body::parse_json(line)?;
    let line: Line =
        serde_json::from_value(value).map_err(|e| ApiError::InvalidBatchLine { message: e.to_string() })?;
    accept(state, &line.type_name, line.data, Envelope { id: line.id, ..Envelope::default() })
}
