//! The operators' door, behind the admin token: [`plugins`] (list, upload, swap, delete,
//! hot reload of component files) and [`ops`] (dead letters, health, metrics, OpenAPI).
//! The web [`dashboard`] at `/ui` shows them (its routes are merged in `crate::app`).

pub mod dashboard;
pub mod ops;
pub mod plugins;

use crate::http::{auth, AppState};
use axum::routing::{get, post};
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
        .route("/openapi.json", get(ops::openapi))
        .layer(axum::Extension(plugins))
}
