//! The HTTP door and the plumbing every HTTP-speaking door shares: the request state
//! ([`AppState`]), the one error type ([`ApiError`]), bearer-token [`auth`], body reading,
//! and the ingestion endpoints themselves. Fix Inventory, Infrahub RPC and the admin API
//! (in `crate::protocols` and `crate::admin`) build on this plumbing; nothing here imports
//! them. `crate::app` merges every door's routes into one axum `Router`.
//!
//! | endpoint | module |
//! |---|---|
//! | `POST /v1/events/{type}`, `GET /v1/events/{id}` | [`events`] |
//! | `POST /v1/events` (CloudEvents, NDJSON) | [`cloudevents`], [`ndjson`] |
//! | `GET /v1/schemas[/{type}]` | [`schemas`] |
//! | `GET /v1/subscribe?types=` | [`subscribe`] |

pub mod auth;
pub mod body;
pub mod cloudevents;
pub mod config;
mod error;
pub mod events;
pub mod extract;
mod ndjson;
pub mod openapi;
mod schemas;
pub mod subscribe;

pub use auth::{Auth, AuthError, Grant};
pub use cloudevents::{MAX_DETAILED_ERRORS, MAX_ERROR_DETAIL_BYTES, MAX_ERROR_MESSAGE};
pub use error::ApiError;
pub use subscribe::StreamSlots;

use crate::event::Event;
use crate::metrics::Metrics;
use crate::router::Pipeline;
use crate::schema::Registry;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use config::IngestConfig;
use openapi::{shape, Guard, Operation};
use serde_json::json;
use std::sync::Arc;

/// Everything a request handler needs, shared behind one `Arc`.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub limits: IngestConfig,
    /// The admin and ingestion tokens.
    pub auth: Auth,
    /// Open event streams (`/v1/subscribe`, `/events`), capped by `subscribers.max_connections`.
    pub streams: Arc<subscribe::StreamSlots>,
}

impl AppState {
    /// Counts a refused event by its code and passes the outcome on (accepted ones are
    /// counted by the core, which sees every admission finish).
    pub fn count(&self, result: Result<String, ApiError>) -> Result<String, ApiError> {
        if let Err(e) = &result {
            self.metrics.rejected.inc(e.code());
        }
        result
    }

    /// Hands prepared events to the pipeline in one go (one log append, one sync) and
    /// turns each into its id or its error; a failure of the whole append fails them all.
    /// Events of a type `grant` does not allow fail alone with 403.
    pub async fn admit(&self, grant: &Grant, prepared: Vec<Result<Event, ApiError>>) -> Vec<Result<String, ApiError>> {
        let (mut ids, mut events) = (Vec::with_capacity(prepared.len()), Vec::new());
        for p in prepared {
            let p = p.and_then(|e| match grant.allows(&e.type_name) {
                true => Ok(e),
                false => Err(ApiError::ForbiddenType { type_name: e.type_name.to_string() }),
            });
            // The pipeline answers the accepted events' ids (a duplicate's is the first's).
            ids.push(p.map(|e| events.push(e)));
        }
        let accepted = match events.is_empty() {
            true => Ok(Vec::new()),
            false => self.pipeline.admit(events, grant.producer()).await,
        };
        match accepted {
            Ok(accepted) => {
                // Made before the wait for the disk, maybe on the other core: the answer
                // reads them all, and their misses overlap if asked for at once.
                for id in &accepted {
                    crate::event::prefetch::read(id.as_bytes(), crate::event::MAX_ID_BYTES);
                }
                let mut accepted = accepted.into_iter();
                ids.into_iter().map(|r| r.map(|()| accepted.next().expect("one id per event"))).collect()
            }
            Err(e) => {
                let err = ApiError::from(e);
                ids.into_iter().map(|r| r.and_then(|()| Err(err.clone()))).collect()
            }
        }
    }

    /// Accepts an event the router itself makes (config service, workflows): validated,
    /// logged and routed like any other, counted as accepted.
    pub async fn emit_internal(
        &self,
        type_name: &str,
        data: serde_json::Value,
        source: &str,
    ) -> Result<String, ApiError> {
        self.ingest_tree(&Grant::default(), type_name, data, source).await
    }

    /// Accepts an already parsed event that `grant`'s holder sent from `source` (a Fix
    /// Inventory message), counted like any other.
    pub async fn ingest_tree(
        &self,
        grant: &Grant,
        type_name: &str,
        data: serde_json::Value,
        source: &str,
    ) -> Result<String, ApiError> {
        let envelope = events::Envelope { source: Some(source.to_string()), ..events::Envelope::default() };
        self.count(self.admit_one(grant, events::prepare(self, type_name, events::Data::Tree(data), envelope)).await)
    }

    pub async fn admit_one(&self, grant: &Grant, prepared: Result<Event, ApiError>) -> Result<String, ApiError> {
        self.admit(grant, vec![prepared]).await.pop().expect("one result per event")
    }

    /// The response to a single-event request.
    pub fn answer(&self, result: Result<String, ApiError>) -> Response {
        match self.count(result) {
            Ok(id) => events::accepted(&id),
            Err(e) => e.into_response(),
        }
    }
}

/// The ingestion and read endpoints; `crate::app` adds the other doors' routes and the
/// state.
pub fn routes(state: &Arc<AppState>) -> axum::Router<Arc<AppState>> {
    // Ingestion takes the token's grant as an extractor (see [`auth`]).
    axum::Router::new()
        .route("/v1/events", post(cloudevents::post))
        .route("/v1/events/{*type}", post(events::post_native).get(events::status))
        .route("/v1/schemas", get(schemas::list))
        .route("/v1/schemas/{*type}", get(schemas::get))
        .route(
            "/v1/subscribe",
            get(subscribe::subscribe)
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_subscribe)),
        )
}

/// This door's endpoints for `/openapi.json` (see [`openapi`]): one ingestion path per event
/// type, with the type's schema as its body.
pub fn operations(registry: &Registry) -> Vec<Operation> {
    let types: Vec<&str> = registry.iter().map(|t| &*t.name).collect();
    let ingest_errors = |op: Operation| {
        op.guard(Guard::Ingest)
            .fails(403, "forbidden_type")
            .fails(413, "payload_too_large")
            .fails(415, "unsupported_media_type")
            .fails(503, "overloaded, log_unavailable")
    };
    let mut ops: Vec<Operation> = types
        .iter()
        .map(|t| {
            let op = Operation::post(format!("/v1/events/{t}"), format!("Ingest one `{t}` event in its native form"))
                .template("/v1/events/{type}")
                .header(
                    "Idempotency-Key",
                    false,
                    shape::id(events::MAX_IDEMPOTENCY_KEY),
                    "the event's id; a retry with the same key is answered like the first",
                )
                .header(
                    "Priority",
                    false,
                    json!({ "type": "integer", "minimum": 1, "maximum": 5 }),
                    "1 (lowest) to 5, before the event's own `meta.priority`",
                )
                .body([("application/json", openapi::event_schema(t))])
                .ok(202, "accepted: written to the log before this answer", shape::accepted())
                .link(202, Method::GET, "/v1/events/{id}", &[("id", "$response.body#/id")])
                .fails(400, "validation_failed, malformed_json, too_deep, id_too_long, bad_request");
            ingest_errors(op)
        })
        .collect();
    let cloud_event = json!({ "oneOf": types.iter().map(|t| cloud_event(t)).collect::<Vec<_>>() });
    ops.push(ingest_errors(
        Operation::post("/v1/events", "Ingest CloudEvents 1.0 (structured, batch; binary mode is `application/json` with `ce-*` headers) or an NDJSON batch")
            .body([
                ("application/cloudevents+json", cloud_event),
                ("application/cloudevents-batch+json", json!({ "type": "array", "description": "structured CloudEvents; each is checked alone and answered in `results`" })),
                ("application/x-ndjson", json!({ "type": "string", "description": "one {\"type\", \"data\", \"id\"?} object per line" })),
            ])
            .ok(200, "a batch: one result per item, in order", shape::object(&["accepted", "rejected", "results"]))
            .ok(202, "one CloudEvent accepted", shape::accepted())
            .fails(400, "invalid_cloudevent, validation_failed, malformed_json, too_deep, id_too_long, bad_request")
            .fails(404, "unknown_event_type")
            .fails(413, "too_many_items"),
    ));
    ops.push(
        Operation::get(
            "/v1/events/{id}",
            "Where an accepted event is: queued, in_progress, retrying, processed or dead_lettered",
        )
        .path_param("id", json!({ "type": "string" }))
        .ok(200, "the event's status", shape::object(&["id", "state"]))
        .fails(404, "unknown_event")
        .fails(405, "method_not_allowed (the id is an event type's name: that path takes POST)"),
    );
    ops.push(Operation::get("/v1/schemas", "Every event type with its description and priority").ok(
        200,
        "event types",
        shape::object(&["count", "types"]),
    ));
    ops.push(
        Operation::get("/v1/schemas/{type}", "The JSON Schema (draft 2020-12) of one event type")
            .path_param("type", shape::one_of(types.iter().copied()))
            .answers(200, "the schema", Some(("application/schema+json", json!({ "type": "object" }))))
            .fails(404, "unknown_event_type"),
    );
    let pattern = json!({ "type": "string", "maxLength": crate::event::pattern::MAX_PATTERN_LEN });
    ops.push(shape::websocket(
        Operation::get("/v1/subscribe", "WebSocket: every accepted event whose type matches, as JSON text frames")
            .guard(Guard::Subscribe)
            .query("types", pattern.clone(), "comma-separated globs (`*` also crosses `/`); all when absent")
            .query("regex", pattern, "a regex over type names instead of globs")
            .fails(400, "bad_request")
            .fails(503, "too_many_connections"),
    ));
    ops
}

/// A structured CloudEvent of type `t`: its attributes as [`cloudevents`] checks them, its
/// `data` the type's schema.
fn cloud_event(t: &str) -> serde_json::Value {
    let text = json!({ "type": "string", "minLength": 1 });
    json!({
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": shape::id(crate::event::MAX_ID_BYTES),
            "source": text,
            "type": { "const": t },
            "time": { "anyOf": [{ "type": "string", "format": "date-time" }, { "type": "null" }] },
            "subject": { "type": ["string", "null"] },
            "dataschema": { "type": ["string", "null"] },
            "priority": { "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 5 },
                { "type": "string", "pattern": "^\\s*\\+?0*[1-5]\\s*$" },
            ] },
            // JSON data only: `application/json` or any `+json` type, parameters allowed.
            "datacontenttype": { "anyOf": [
                { "type": "string", "pattern": "^\\s*(application/json|[^;]*\\+json)\\s*(;.*)?$" },
                { "type": "null" },
            ] },
            "data": openapi::event_schema(t),
            "data_base64": false,
        },
    })
}
