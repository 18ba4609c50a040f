//! The operators' door, behind the admin token: [`plugins`] (list, upload, swap, delete,
//! hot reload of component files) and [`ops`] (dead letters, health, metrics, OpenAPI).
//! The web [`dashboard`] at `/ui` shows them (its routes are merged in `crate::app`).

pub mod dashboard;
pub mod ops;
pub mod plugins;

use crate::http::openapi::{shape, Guard, Operation};
use crate::http::{auth, AppState};
use axum::http::Method;
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

pub use plugins::PluginAdmin;

pub fn routes(state: &Arc<AppState>, plugins: Arc<PluginAdmin>) -> axum::Router<Arc<AppState>> {
    let admin = || axum::middleware::from_fn_with_state(state.clone(), auth::require_admin);
    axum::Router::new()
        .route("/v1/dead-letters", get(ops::dead_letters).delete(ops::purge).route_layer(admin()))
        .route("/v1/dead-letters/replay", post(ops::replay).route_layer(admin()))
        .route("/v1/dead-letters/{id}", get(ops::dead_letter).delete(ops::purge_one).route_layer(admin()))
        .route("/v1/dead-letters/{id}/replay", post(ops::replay_one).route_layer(admin()))
        .route("/v1/plugins", get(plugins::list).route_layer(admin()))
        .route(
            "/v1/plugins/{name}",
            axum::routing::put(plugins::upload)
                .layer(axum::extract::DefaultBodyLimit::max(plugins::MAX_UPLOAD_BYTES))
                .delete(plugins::delete)
                .route_layer(admin()),
        )
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::Extension(plugins))
}

/// This door's endpoints for `/openapi.json`. `/openapi.json` itself is served by
/// `crate::app`, which builds the document from every door's list.
pub fn operations() -> Vec<Operation> {
    let selection = |op: Operation| {
        let text = json!({ "type": "string" });
        let time = json!({ "type": "string", "format": "date-time" });
        op.query("kind", text.clone(), "failure kind, e.g. deadline")
            .query("plugin", text.clone(), "")
            .query("type", text, "event type")
            .query("since", time.clone(), "RFC 3339: recorded at or after")
            .query("until", time, "RFC 3339: recorded before")
            .query("limit", json!({ "type": "integer", "minimum": 0, "maximum": usize::MAX }), "")
    };
    let letter_id = json!({ "type": "string" });
    let admin = |op: Operation| op.guard(Guard::Admin);
    let plugin_name = json!({ "type": "string", "pattern": "^[a-z0-9-]{1,64}$" });
    vec![
        admin(selection(Operation::get("/v1/dead-letters", "Failed plugin calls, newest first")))
            .ok(200, "dead letters", shape::object(&["count", "dead_letters"]))
            .link(200, Method::GET, "/v1/dead-letters/{id}", &[("id", "$response.body#/dead_letters/0/id")])
            .link(200, Method::POST, "/v1/dead-letters/{id}/replay", &[("id", "$response.body#/dead_letters/0/id")]),
        admin(selection(Operation::delete("/v1/dead-letters", "Purge the selected dead letters (all without a selection)")))
            .ok(200, "how many", shape::object(&["purged"])),
        admin(selection(Operation::post("/v1/dead-letters/replay", "Try the selected dead letters again")))
            .ok(202, "how many are being replayed", shape::object(&["replaying"])),
        admin(Operation::get("/v1/dead-letters/{id}", "One dead letter"))
            .path_param("id", letter_id.clone())
            .ok(200, "the dead letter", json!({ "type": "object" }))
            .fails(404, "unknown_dead_letter"),
        admin(Operation::delete("/v1/dead-letters/{id}", "Purge one dead letter"))
            .path_param("id", letter_id.clone())
            .ok(200, "purged", shape::object(&["purged"]))
            .fails(404, "unknown_dead_letter"),
        admin(Operation::post("/v1/dead-letters/{id}/replay", "Try one dead letter again; it leaves the list when the attempt is done"))
            .path_param("id", letter_id)
            .ok(202, "replaying", shape::object(&["replaying"]))
            .fails(404, "unknown_dead_letter"),
        admin(Operation::get("/v1/plugins", "The plugins: revision, statistics"))
            .ok(200, "plugins", shape::object(&["count", "plugins"])),
        admin(Operation::put("/v1/plugins/{name}", "Upload a plugin (new: 201) or hot-swap an uploaded one's component (200)"))
            .path_param("name", plugin_name.clone())
            .body([(
                "multipart/form-data",
                json!({ "type": "object", "required": ["manifest", "component"], "properties": {
                    "manifest": { "type": "string", "description": "TOML: a [[plugin]] table's fields but name and component, plus routes" },
                    "component": { "type": "string", "contentMediaType": "application/wasm", "description": "the Wasm component" } } }),
            )])
            .ok(200, "swapped", shape::object(&["name", "revision", "replaced"]))
            .ok(201, "added", shape::object(&["name", "revision", "replaced"]))
            .fails(400, "bad_request (not a component of its world, a bad manifest)")
            .fails(409, "conflict")
            .fails(413, "payload_too_large"),
        admin(Operation::delete("/v1/plugins/{name}", "Delete an uploaded plugin"))
            .path_param("name", plugin_name)
            .answers(204, "deleted", None)
            .fails(400, "bad_request")
            .fails(404, "not_found")
            .fails(409, "conflict"),
        Operation::get("/healthz", "Health").ok(200, "up", shape::object(&["status"])),
        Operation::get("/metrics", "Prometheus text format")
            .answers(200, "metrics", Some(("text/plain", json!({ "type": "string" })))),
        Operation::get("/openapi.json", "This document").ok(200, "OpenAPI 3.1", shape::object(&["openapi", "paths"])),
    ]
}
