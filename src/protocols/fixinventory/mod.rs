//! Fix Inventory: its WebSocket message bus and subscribers ([`bus`], [`actors`]), the
//! documented [`workflows`] and their tasks, and the [`config_service`].
//!
//! | endpoint | module |
//! |---|---|
//! | `GET /events` (WebSocket), `/subscribers`, `/subscriber/{id}[/...]` | [`bus`] |
//! | `POST /v1/workflows/{name}/run`, `GET /v1/workflows`, `GET /v1/tasks[/{id}]` | [`bus`] |
//! | `GET/PUT/DELETE /v1/config[/{id}]` | [`config_service`] |

pub mod actors;
pub mod bus;
pub mod config;
pub mod config_service;
pub mod workflows;

use crate::http::openapi::{shape, Guard, Operation};
use crate::http::{auth, AppState};
use crate::schema::Registry;
use crate::store::config_docs::ConfigDocs;
use axum::http::Method;
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use workflows::Workflows;

/// What Fix Inventory's endpoints share besides the HTTP state (handed to them as an axum
/// `Extension`, so the HTTP plumbing knows nothing of Fix Inventory).
pub struct FixInventory {
    /// Workflows, tasks and subscribers.
    pub workflows: Arc<Workflows>,
    /// The config service's documents.
    pub configs: Arc<ConfigDocs>,
}

pub fn routes(state: &Arc<AppState>, fi: Arc<FixInventory>) -> axum::Router<Arc<AppState>> {
    let admin = || axum::middleware::from_fn_with_state(state.clone(), auth::require_admin);
    let fixinventory = || axum::middleware::from_fn_with_state(state.clone(), auth::require_fixinventory);
    axum::Router::new()
        .route("/v1/config", get(config_service::list).route_layer(admin()))
        .route(
            "/v1/config/{id}",
            get(config_service::get).put(config_service::put).delete(config_service::delete).route_layer(admin()),
        )
        .route("/v1/workflows/{name}/run", post(bus::run_workflow).route_layer(admin()))
        .route("/v1/workflows", get(bus::workflows))
        .route("/v1/tasks", get(bus::tasks))
        .route("/v1/tasks/{id}", get(bus::task))
        .route("/events", get(bus::listen).route_layer(fixinventory()))
        .route("/subscribers", get(bus::subscribers).route_layer(fixinventory()))
        .route("/subscriber/{id}", get(bus::subscriber).put(bus::replace).route_layer(fixinventory()))
        .route("/subscriber/{id}/handle", get(bus::handle).route_layer(fixinventory()))
        .route(
            "/subscriber/{id}/{message_type}",
            post(bus::subscribe).delete(bus::unsubscribe).route_layer(fixinventory()),
        )
        .layer(axum::Extension(fi))
}

/// This door's endpoints for `/openapi.json`: the config service, workflows and tasks (the
/// router's API), and Fix Inventory's own message-bus endpoints.
pub fn operations(registry: &Registry) -> Vec<Operation> {
    let config_id = json!({ "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$" });
    let revision = |op: Operation| {
        op.header("If-Match", false, json!({ "type": "string" }), "the revision the writer read (`ETag`)")
            .query("revision", json!({ "type": "string" }), "the same as If-Match")
            .fails(409, "stale_revision")
    };
    let document = shape::object(&["id", "revision", "config"]);
    let steps: Vec<&str> = registry.iter().filter_map(|t| t.name.strip_prefix("fixinventory/")).collect();
    let subscriber =
        json!({ "type": "string", "minLength": 1, "maxLength": crate::event::MAX_ID_BYTES, "pattern": "^[^/]+$" });
    let timeout = json!({ "type": "integer", "minimum": 0, "maximum": actors::MAX_SUBSCRIPTION_TIMEOUT_SECS });
    let subscription = json!({
        "type": "object",
        "required": ["message_type"],
        "properties": {
            "message_type": shape::one_of(steps.iter().copied()),
            "wait_for_completion": { "type": "boolean" },
            "timeout": timeout,
        },
    });
    let fi = |op: Operation| op.guard(Guard::FixInventory);
    // One path per workflow: which step names the body may carry depends on the workflow.
    let runs = workflows::WORKFLOWS.iter().map(|(name, steps)| {
        let extra =
            steps.iter().map(|s| (s.to_string(), json!({ "type": "object" }))).collect::<serde_json::Map<_, _>>();
        Operation::post(format!("/v1/workflows/{name}/run"), format!("Start a run of `{name}` (a task)"))
            .template("/v1/workflows/{name}/run")
            .guard(Guard::Admin)
            .optional_body([(
                "application/json",
                json!({ "type": "object", "additionalProperties": false, "properties": { "steps": {
                    "type": "object", "description": "extra fields of a step's action data, by step",
                    "properties": extra, "additionalProperties": false } } }),
            )])
            .ok(202, "started", shape::object(&["task_id", "workflow"]))
            .link(202, Method::GET, "/v1/tasks/{id}", &[("id", "$response.body#/task_id")])
            .fails(400, "bad_request, malformed_json")
    });
    let mut ops: Vec<Operation> = runs.collect();
    ops.extend([
        Operation::get("/v1/config", "Ids of the config service's documents").guard(Guard::Admin).ok(
            200,
            "ids",
            shape::object(&["count", "ids"]),
        ),
        Operation::get("/v1/config/{id}", "A config document; its revision is the ETag")
            .guard(Guard::Admin)
            .path_param("id", config_id.clone())
            .ok(200, "the document", document.clone())
            .fails(404, "unknown_config"),
        revision(
            Operation::put(
                "/v1/config/{id}",
                "Store a JSON object as the document's next revision; emits fixinventory/config-updated",
            )
            .guard(Guard::Admin)
            .path_param("id", config_id.clone())
            .body([("application/json", json!({ "type": "object" }))])
            .ok(200, "the document", document)
            .link(200, Method::GET, "/v1/config/{id}", &[("id", "$request.path.id")])
            .link(200, Method::DELETE, "/v1/config/{id}", &[("id", "$request.path.id")])
            .fails(400, "malformed_json, bad_request")
            .fails(413, "payload_too_large")
            .fails(415, "unsupported_media_type"),
        ),
        revision(
            Operation::delete("/v1/config/{id}", "Delete a document; emits fixinventory/config-deleted")
                .guard(Guard::Admin)
                .path_param("id", config_id)
                .answers(204, "deleted", None)
                .fails(404, "unknown_config"),
        ),
        Operation::get("/v1/workflows", "The workflows, their steps and triggers").ok(
            200,
            "workflows",
            json!({ "type": "object" }),
        ),
        Operation::get("/v1/tasks", "Workflow runs, newest first")
            .ok(200, "tasks", shape::object(&["count", "tasks"]))
            .link(200, Method::GET, "/v1/tasks/{id}", &[("id", "$response.body#/tasks/0/id")]),
        Operation::get("/v1/tasks/{id}", "One run and each step's state")
            .path_param("id", json!({ "type": "string" }))
            .ok(200, "the task", json!({ "type": "object" }))
            .fails(404, "unknown_task"),
        shape::websocket(fi(Operation::get(
            "/events",
            "WebSocket listener: every fixinventory/* event as a wire message; messages sent in are ingested",
        )
        .query("show", json!({ "type": "string" }), "comma-separated message types; all when absent or `*`")
        .query("id", subscriber.clone(), "the listener's name in message-listener-* events")
        .fails(400, "id_too_long")
        .fails(503, "too_many_connections"))),
        fi(Operation::get("/subscribers", "Every subscriber: subscriptions, whether connected, pending actions").ok(
            200,
            "subscribers",
            shape::object(&["subscribers"]),
        )),
        fi(Operation::get("/subscriber/{id}", "One subscriber")
            .path_param("id", subscriber.clone())
            .ok(200, "the subscriber", json!({ "type": "object" }))
            .fails(404, "unknown_subscriber")),
        fi(Operation::put("/subscriber/{id}", "Replace all of a subscriber's subscriptions")
            .path_param("id", subscriber.clone())
            .body([("application/json", json!({ "type": "array", "items": subscription }))])
            .ok(200, "the subscriber", json!({ "type": "object" }))
            .fails(400, "bad_request, id_too_long")
            .fails(404, "unknown_event_type")
            .fails(409, "too_many_subscribers")),
        shape::websocket(fi(Operation::get(
            "/subscriber/{id}/handle",
            "WebSocket actor channel: `action` messages of the subscribed steps; answers come back",
        )
        .path_param("id", subscriber.clone())
        .fails(400, "id_too_long")
        .fails(404, "unknown_subscriber")
        .fails(409, "already_connected, too_many_subscribers"))),
        fi(Operation::post("/subscriber/{id}/{message_type}", "Subscribe to one step")
            .path_param("id", subscriber.clone())
            .path_param("message_type", shape::one_of(steps.iter().copied()))
            .query("timeout", timeout, "seconds a step waits for this subscriber")
            .query(
                "wait_for_completion",
                json!({ "type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])$" }),
                "true or false in any case, or 1 / 0",
            )
            .ok(200, "the subscriber", json!({ "type": "object" }))
            .link(
                200,
                Method::DELETE,
                "/subscriber/{id}/{message_type}",
                &[("id", "$request.path.id"), ("message_type", "$request.path.message_type")],
            )
            .fails(400, "bad_request, id_too_long")
            .fails(404, "unknown_event_type")
            .fails(409, "too_many_subscribers")),
        fi(Operation::delete("/subscriber/{id}/{message_type}", "Remove one subscription")
            .path_param("id", subscriber)
            .path_param("message_type", json!({ "type": "string" }))
            .ok(200, "the subscriber", json!({ "type": "object" }))
            .fails(404, "unknown_subscriber")),
    ]);
    ops
}
