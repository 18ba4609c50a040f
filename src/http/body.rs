//! Reading request bodies: media-type classification, the size limit, and JSON parsing
//! with the line and column of a syntax error.

use super::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde_json::Value;

/// What a request body claims to be, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json` or any other `+json` type that is not a CloudEvents one.
    Json,
    /// `application/cloudevents+json`: one structured-mode CloudEvent.
    CloudEvent,
    /// `application/cloudevents-batch+json`: a JSON array of structured CloudEvents.
    CloudEventBatch,
    /// `application/x-ndjson`: one `{"type","data"}` object per line.
    Ndjson,
    Other,
    Missing,
}

impl MediaType {
    pub fn of(headers: &HeaderMap) -> MediaType {
        let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return MediaType::Missing;
        };
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/cloudevents+json" => MediaType::CloudEvent,
            "application/cloudevents-batch+json" => MediaType::CloudEventBatch,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => MediaType::Ndjson,
            "application/json" | "text/json" => MediaType::Json,
            e if e.starts_with("application/") && e.ends_with("+json") => MediaType::Json,
            _ => MediaType::Other,
        }
    }
}

/// The `Content-Type` header as sent, for error messages.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Reads the whole body, refusing more than `limit` bytes (early, from `Content-Length`,
/// when the client announces it).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("could not read the body: {e}"))
        }
    })
}

/// Parses JSON, pointing at the line and column of the first syntax error.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| malformed(&e))
}

/// The body as JSON text, to be validated in place; what is not UTF-8 is refused the way
/// the parser refuses it.
pub fn json_text(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|utf8| match parse_json(bytes) {
        Err(e) => e,
        Ok(_) => ApiError::BadRequest(format!("the body is not UTF-8: {utf8}")),
    })
}

pub fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::MalformedJson { line: e.line(), column: e.column(), message: e.to_string() }
}
