//! Infrahub's request/response: `POST /v1/rpc/{type}` accepts a request event and answers
//! with the handler's response event of the same correlation id ([`rpc`]).

pub mod rpc;

use crate::http::openapi::{event_schema, Guard, Operation};
use crate::http::AppState;
use crate::router::rpc::RESPONSE_PREFIX;
use crate::schema::Registry;
use serde_json::json;
use std::sync::Arc;

/// The RPC route (its handler takes the token's grant as its first extractor, see
/// [`crate::http::auth`]).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new().route("/v1/rpc/{*type}", axum::routing::post(rpc::call))
}

/// This door's endpoints for `/openapi.json`: one RPC path per request type that has a
/// response type, its body the request's schema.
pub fn operations(registry: &Registry) -> Vec<Operation> {
    let has_response = |name: &str| {
        let short = name.strip_prefix("infrahub/").unwrap_or(name);
        registry.get(&format!("{RESPONSE_PREFIX}{short}")).is_ok()
    };
    registry
        .iter()
        .filter(|t| !t.name.starts_with(RESPONSE_PREFIX) && has_response(&t.name))
        .map(|t| {
            Operation::post(format!("/v1/rpc/{}", t.name), format!("Send `{}` and wait for its response event", t.name))
                .template("/v1/rpc/{type}")
                .guard(Guard::Ingest)
                .query(
                    "timeout",
                    json!({ "type": "number", "exclusiveMinimum": 0, "maximum": rpc::MAX_TIMEOUT_SECS }),
                    "seconds to wait (default 30)",
                )
                .body([("application/json", event_schema(&t.name))])
                .ok(
                    200,
                    "the response message, or `{\"meta\", \"passed\": false, \"errors\"}` when the handlers failed",
                    json!({ "type": "object" }),
                )
                .fails(400, "validation_failed, malformed_json, too_deep, id_too_long, bad_request")
                .fails(403, "forbidden_type")
                .fails(413, "payload_too_large")
                .fails(415, "unsupported_media_type")
                .fails(502, "rpc_unanswered")
                .fails(503, "overloaded, log_unavailable")
                .fails(504, "rpc_timeout")
        })
        .collect()
}
