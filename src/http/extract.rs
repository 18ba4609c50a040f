//! The extractors every handler uses instead of axum's own, so that a request axum refuses
//! before the handler runs (a query string that does not deserialise, a path segment that is
//! not UTF-8, a plain GET on a WebSocket endpoint, a multipart body without a boundary) is
//! answered like every other error: JSON with a stable `error` code, not axum's `text/plain`.
//!
//! They are axum's extractors re-wrapped with `axum-macros`' derive (`via` + `rejection`),
//! and the rejections become [`ApiError`] here, in one place; handlers only import these.

use super::ApiError;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, FromRequestParts};

/// `axum::extract::Query`, refusing a bad query string with 400 `invalid_query`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, refusing a bad path segment with 400 `invalid_path`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// A WebSocket handshake; anything else is 426 `websocket_required` (with `Upgrade: websocket`).
#[derive(FromRequestParts)]
#[from_request(rejection(ApiError))]
pub struct WebSocketUpgrade {
    pub upgrade: axum::extract::ws::WebSocketUpgrade,
}

/// A `multipart/form-data` body; anything else is 400 `bad_request`.
#[derive(FromRequest)]
#[from_request(rejection(ApiError))]
pub struct Multipart {
    pub form: axum::extract::Multipart,
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::InvalidQuery(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        match e {
            // A route and its handler disagree: the router's fault, not the client's.
            PathRejection::MissingPathParams(e) => ApiError::Internal(e.body_text()),
            other => ApiError::InvalidPath(other.body_text()),
        }
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(e: WebSocketUpgradeRejection) -> Self {
        ApiError::WebSocketRequired(e.body_text())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(e: MultipartRejection) -> Self {
        ApiError::BadRequest(format!("multipart: {}", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    async fn query(uri: &str) -> Result<std::collections::HashMap<String, u32>, ApiError> {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        Query::<std::collections::HashMap<String, u32>>::from_request_parts(&mut parts, &()).await.map(|q| q.0)
    }

    #[tokio::test]
    async fn a_bad_query_string_is_invalid_query() {
        assert_eq!(query("/x?n=1").await.unwrap()["n"], 1);
        let e = query("/x?n=one").await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "invalid_query"));
        assert!(e.body()["message"].as_str().unwrap().contains("n"), "{}", e.body());
    }

    #[tokio::test]
    async fn a_plain_get_is_websocket_required() {
        let (mut parts, ()) = Request::get("/v1/subscribe").body(()).unwrap().into_parts();
        let e = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(_) => panic!("a plain GET is no handshake"),
            Err(e) => e,
        };
        assert_eq!((e.status().as_u16(), e.code()), (426, "websocket_required"));
    }
}
