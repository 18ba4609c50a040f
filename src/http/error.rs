//! The one error type of the HTTP API. Every error is JSON with a stable `error` code;
//! 4xx bodies say exactly what is wrong, 5xx bodies hide internals (which are logged).

use crate::schema::{SchemaError, Violation};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("no accepted event has id `{id}` (or it is older than the status window)")]
    UnknownEvent { id: String },
    #[error("no dead letter has id `{id}`")]
    UnknownDeadLetter { id: String },
    #[error("event does not match the schema of {type_name}")]
    Validation { type_name: String, errors: Vec<Violation> },
    #[error("unknown event type `{name}`")]
    UnknownType { name: String, suggestions: Vec<String> },
    #[error("body is not valid JSON at line {line}, column {column}: {message}")]
    MalformedJson { line: usize, column: usize, message: String },
    #[error("body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the batch has more than {limit} items (the limit per request); split it")]
    TooManyItems { limit: usize },
    #[error("{limit} subscriber ids exist; remove one (DELETE its subscriptions) before adding another")]
    TooManySubscribers { limit: usize },
    #[error("{limit} event streams are open; retry later")]
    TooManyConnections { limit: usize },
    #[error("content type {got:?} is not accepted here; send {expected}")]
    UnsupportedMediaType { got: Option<String>, expected: &'static str },
    #[error("not a valid CloudEvent: {message}")]
    InvalidCloudEvent { missing: Vec<&'static str>, message: String },
    #[error("batch line is not an object with `type` and `data`: {message}")]
    InvalidBatchLine { message: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("bad query string: {0}")]
    InvalidQuery(String),
    #[error("bad path: {0}")]
    InvalidPath(String),
    #[error("this endpoint is a WebSocket; send a WebSocket handshake ({0})")]
    WebSocketRequired(String),
    #[error("`{field}` is longer than {limit} bytes")]
    IdTooLong { field: &'static str, limit: usize },
    #[error("no response to request `{id}` (correlation id `{correlation_id}`) within {seconds} s")]
    RpcTimeout { id: String, correlation_id: String, seconds: f64 },
    #[error("request `{id}` (correlation id `{correlation_id}`) was processed, but no handler responded")]
    RpcUnanswered { id: String, correlation_id: String },
    #[error("this endpoint needs `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this token may not send events of type `{type_name}`")]
    ForbiddenType { type_name: String },
    #[error("no subscriber has id `{id}` (or not that subscription)")]
    UnknownSubscriber { id: String },
    #[error("subscriber `{id}` is already connected; one connection per subscriber")]
    AlreadyConnected { id: String },
    #[error("unknown workflow `{name}`; known: collect_and_cleanup, collect, cleanup, metrics")]
    UnknownWorkflow { name: String },
    #[error("no task has id `{id}`")]
    UnknownTask { id: String },
    #[error("no config has id `{id}`")]
    UnknownConfig { id: String },
    #[error("config `{id}` is at revision {current:?}, not {given:?}: read it again, then write")]
    StaleRevision { id: String, given: String, current: Option<String> },
    #[error("the router is at capacity; retry shortly")]
    Overloaded,
    #[error("the event log cannot be written now (see the router's log); nothing was accepted, retry shortly")]
    LogUnavailable,
    #[error("the body nests deeper than {limit} levels of arrays and objects")]
    TooDeep { limit: usize },
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::router::admit::Refusal> for ApiError {
    fn from(r: crate::router::admit::Refusal) -> Self {
        use crate::router::admit::Refusal;
        match r {
            Refusal::NotJson(e) => super::body::malformed(&e),
            Refusal::Invalid { type_name, errors } => ApiError::Validation { type_name, errors },
            Refusal::TooDeep { limit } => ApiError::TooDeep { limit },
            Refusal::IdTooLong { limit } => ApiError::IdTooLong { field: "id", limit },
        }
    }
}

impl ApiError {
    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "validation_failed",
            ApiError::UnknownType { .. } => "unknown_event_type",
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyItems { .. } => "too_many_items",
            ApiError::TooManySubscribers { .. } => "too_many_subscribers",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::InvalidCloudEvent { .. } => "invalid_cloudevent",
            ApiError::InvalidBatchLine { .. } => "invalid_batch_line",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::WebSocketRequired(_) => "websocket_required",
            ApiError::IdTooLong { .. } => "id_too_long",
            ApiError::UnknownConfig { .. } => "unknown_config",
            ApiError::UnknownSubscriber { .. } => "unknown_subscriber",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::ForbiddenType { .. } => "forbidden_type",
            ApiError::AlreadyConnected { .. } => "already_connected",
            ApiError::UnknownWorkflow { .. } => "unknown_workflow",
            ApiError::UnknownTask { .. } => "unknown_task",
            ApiError::RpcTimeout { .. } => "rpc_timeout",
            ApiError::RpcUnanswered { .. } => "rpc_unanswered",
            ApiError::StaleRevision { .. } => "stale_revision",
            ApiError::NotFound => "not_found",
            ApiError::Overloaded => "overloaded",
            ApiError::LogUnavailable => "log_unavailable",
            ApiError::TooDeep { .. } => "too_deep",
            ApiError::UnknownEvent { .. } => "unknown_event",
            ApiError::UnknownDeadLetter { .. } => "unknown_dead_letter",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. }
            | ApiError::MalformedJson { .. }
            | ApiError::InvalidCloudEvent { .. }
            | ApiError::InvalidBatchLine { .. }
            | ApiError::BadRequest(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidPath(_)
            | ApiError::TooDeep { .. }
            | ApiError::IdTooLong { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownType { .. } | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } | ApiError::TooManyItems { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManySubscribers { .. } => StatusCode::CONFLICT,
            ApiError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::WebSocketRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::Overloaded | ApiError::LogUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnknownEvent { .. } | ApiError::UnknownDeadLetter { .. } | ApiError::UnknownConfig { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::StaleRevision { .. } | ApiError::AlreadyConnected { .. } | ApiError::Conflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenType { .. } => StatusCode::FORBIDDEN,
            ApiError::UnknownSubscriber { .. } | ApiError::UnknownWorkflow { .. } | ApiError::UnknownTask { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::RpcTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::RpcUnanswered { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body; also used for the per-item results of batches.
    pub fn body(&self) -> Value {
        let mut v = json!({ "error": self.code() });
        let m = v.as_object_mut().expect("object");
        match self {
            ApiError::Validation { type_name, errors } => {
                m.insert("type".into(), json!(type_name));
                m.insert("errors".into(), json!(errors));
            }
            ApiError::UnknownType { name, suggestions } => {
                m.insert("type".into(), json!(name));
                m.insert("did_you_mean".into(), json!(suggestions));
            }
            ApiError::MalformedJson { line, column, .. } => {
                m.insert("line".into(), json!(line));
                m.insert("column".into(), json!(column));
            }
            ApiError::PayloadTooLarge { limit } => {
                m.insert("limit_bytes".into(), json!(limit));
            }
            ApiError::IdTooLong { field, limit } => {
                m.insert("field".into(), json!(field));
                m.insert("limit_bytes".into(), json!(limit));
            }
            ApiError::TooManyItems { limit }
            | ApiError::TooManySubscribers { limit }
            | ApiError::TooManyConnections { limit }
            | ApiError::TooDeep { limit } => {
                m.insert("limit".into(), json!(limit));
            }
            ApiError::UnsupportedMediaType { expected, .. } => {
                m.insert("expected".into(), json!(expected));
            }
            ApiError::RpcTimeout { id, correlation_id, .. } | ApiError::RpcUnanswered { id, correlation_id } => {
                m.insert("id".into(), json!(id));
                m.insert("correlation_id".into(), json!(correlation_id));
            }
            ApiError::StaleRevision { current, .. } => {
                m.insert("current_revision".into(), json!(current));
            }
            ApiError::InvalidCloudEvent { missing, .. } if !missing.is_empty() => {
                m.insert("missing".into(), json!(missing));
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                m.insert("message".into(), json!("internal error; see the router's log"));
                return v;
            }
            _ => {}
        }
        m.insert("message".into(), json!(self.to_string()));
        v
    }
}

impl From<SchemaError> for ApiError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::UnknownType { name, suggestions } => ApiError::UnknownType { name, suggestions },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::store::config_docs::ConfigError> for ApiError {
    fn from(e: crate::store::config_docs::ConfigError) -> Self {
        use crate::store::config_docs::ConfigError;
        match e {
            ConfigError::BadId(_) => ApiError::BadRequest(e.to_string()),
            ConfigError::NotFound(id) => ApiError::UnknownConfig { id },
            ConfigError::Stale { id, given, current } => ApiError::StaleRevision { id, given, current },
            ConfigError::Io(detail) => ApiError::Internal(format!("config store: {detail}")),
        }
    }
}

impl From<crate::router::AcceptError> for ApiError {
    fn from(e: crate::router::AcceptError) -> Self {
        match e {
            crate::router::AcceptError::Overloaded => ApiError::Overloaded,
            // Too large for a log record: the producer's to fix. Anything else (disk full,
            // EIO) is the router's and passes: 503 with Retry-After, nothing was accepted.
            crate::router::AcceptError::Store(crate::store::StoreError::TooLarge { limit, .. }) => {
                ApiError::PayloadTooLarge { limit: limit as usize }
            }
            crate::router::AcceptError::Store(e) => {
                tracing::error!(error = %e, "event log unavailable; answering 503");
                ApiError::LogUnavailable
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded | ApiError::LogUnavailable | ApiError::TooManyConnections { .. } = self {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if let ApiError::WebSocketRequired(_) = self {
            res.headers_mut().insert(axum::http::header::UPGRADE, axum::http::HeaderValue::from_static("websocket"));
        }
        if let ApiError::Unauthorized = self {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}
