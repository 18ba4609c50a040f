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

use crate::http::{auth, AppState};
use crate::store::config_docs::ConfigDocs;
use axum::routing::{get, post};
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
        .route("/subscriber/{id}/{message_type}", post(bus::subscribe).delete(bus::unsubscribe).route_layer(fixinventory()))
        .layer(axum::Extension(fi))
}
