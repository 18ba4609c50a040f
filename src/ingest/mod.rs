//! The HTTP front door: `app(state) -> Router` (testable without a socket) and [`serve`],
//! which takes a bound listener and a shutdown future so tests can bind port 0.
//!
//! | endpoint | module |
//! |---|---|
//! | `POST /v1/events/{type}` | [`events`] |
//! | `POST /v1/events` (CloudEvents, NDJSON) | [`cloudevents`], [`ndjson`] |
//! | `GET /v1/schemas[/{type}]` | [`schemas`] |
//! | `GET /v1/subscribe?types=` | [`subscribe`] |
//! | `GET /v1/dead-letters` | [`ops`] |
//! | `GET/PUT/DELETE /v1/config/{id}` | [`config_service`] |
//! | `POST /v1/rpc/{type}` (Infrahub request/response) | [`rpc`] |
//! | `GET /v1/plugins` (and hot reload of component files) | [`plugins`] |
//! | Fix Inventory: `/events`, `/subscriber/...`, `/v1/workflows`, `/v1/tasks` | [`fixinventory`] |
//! | `GET /healthz`, `GET /metrics`, `GET /openapi.json` | [`ops`] |

mod auth;
mod body;
pub mod cloudevents;
mod config_service;
mod error;
mod events;
mod fixinventory;
mod ndjson;
mod ops;
mod plugins;
mod rpc;
mod schemas;
mod subscribe;

pub use auth::{Auth, AuthError, Grant};
pub use cloudevents::{MAX_DETAILED_ERRORS, MAX_ERROR_DETAIL_BYTES, MAX_ERROR_MESSAGE};
pub use error::ApiError;
pub use subscribe::StreamSlots;

use crate::config::IngestConfig;
use crate::metrics::Metrics;
use crate::router::{Event, Pipeline};
use crate::schema::Registry;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Everything a request handler needs, shared behind one `Arc`.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub limits: IngestConfig,
    /// The config service's documents.
    pub configs: Arc<crate::store::config_docs::ConfigDocs>,
    /// Fix Inventory's workflows, tasks and subscribers.
    pub workflows: Arc<crate::workflow::Workflows>,
    /// The Wasm engine plugins were compiled with (reloads and uploads use it); made at the
    /// first upload when the router started without plugins.
    pub wasm: std::sync::Mutex<Option<Arc<crate::wasm::WasmEngine>>>,
    /// Where uploaded plugins are kept, and the precompiled-artifact cache.
    pub uploads: std::path::PathBuf,
    pub wasm_cache: std::path::PathBuf,
    /// The admin and ingestion tokens.
    pub auth: Auth,
    /// Open event streams (`/v1/subscribe`, `/events`), capped by `subscribers.max_connections`.
    pub streams: Arc<subscribe::StreamSlots>,
}

impl AppState {
    /// Counts one ingestion outcome (accepted or rejected by code) and passes it on.
    fn count(&self, result: Result<String, ApiError>) -> Result<String, ApiError> {
        match &result {
            Ok(_) => self.metrics.accepted.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                self.metrics.rejected.inc(e.code());
                0
            }
        };
        result
    }

    /// Hands prepared events to the pipeline in one go (one log append, one sync) and
    /// turns each into its id or its error; a failure of the whole append fails them all.
    /// Events of a type `grant` does not allow fail alone with 403.
    async fn admit(&self, grant: &Grant, prepared: Vec<Result<Event, ApiError>>) -> Vec<Result<String, ApiError>> {
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
            false => self.pipeline.accept(events, grant.producer()).await,
        };
        match accepted {
            Ok(accepted) => {
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

    async fn admit_one(&self, grant: &Grant, prepared: Result<Event, ApiError>) -> Result<String, ApiError> {
        self.admit(grant, vec![prepared]).await.pop().expect("one result per event")
    }

    /// The response to a single-event request.
    fn answer(&self, result: Result<String, ApiError>) -> Response {
        match self.count(result) {
            Ok(id) => events::accepted(&id),
            Err(e) => e.into_response(),
        }
    }
}

pub fn app(state: Arc<AppState>) -> axum::Router {
    // Ingestion finds the token's grant; admin endpoints need the admin token (see [`auth`]).
    let ingest = || axum::middleware::from_fn_with_state(state.clone(), auth::ingest_grant);
    let admin = || axum::middleware::from_fn_with_state(state.clone(), auth::require_admin);
    let fixinventory = || axum::middleware::from_fn_with_state(state.clone(), auth::require_fixinventory);
    axum::Router::new()
        .route("/v1/events", post(cloudevents::post).route_layer(ingest()))
        .route("/v1/events/{*type}", post(events::post_native).route_layer(ingest()).get(events::status))
        .route("/v1/rpc/{*type}", post(rpc::call).route_layer(ingest()))
        .route("/v1/schemas", get(schemas::list))
        .route("/v1/schemas/{*type}", get(schemas::get))
        .route(
            "/v1/subscribe",
            get(subscribe::subscribe)
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_subscribe)),
        )
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
        .route("/v1/config", get(config_service::list).route_layer(admin()))
        .route(
            "/v1/config/{id}",
            get(config_service::get).put(config_service::put).delete(config_service::delete).route_layer(admin()),
        )
        .route("/v1/workflows/{name}/run", post(fixinventory::run_workflow).route_layer(admin()))
        .route("/v1/workflows", get(fixinventory::workflows))
        .route("/v1/tasks", get(fixinventory::tasks))
        .route("/v1/tasks/{id}", get(fixinventory::task))
        .route("/events", get(fixinventory::listen).route_layer(fixinventory()))
        .route("/subscribers", get(fixinventory::subscribers).route_layer(fixinventory()))
        .route("/subscriber/{id}", get(fixinventory::subscriber).put(fixinventory::replace).route_layer(fixinventory()))
        .route("/subscriber/{id}/handle", get(fixinventory::handle).route_layer(fixinventory()))
        .route(
            "/subscriber/{id}/{message_type}",
            post(fixinventory::subscribe).delete(fixinventory::unsubscribe).route_layer(fixinventory()),
        )
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Workflow schedules and event triggers run while the server does.
    let mut triggers = state.workflows.spawn_triggers(&state);
    // Plugins whose component file changes are reloaded while the server runs.
    triggers.push(tokio::spawn(plugins::watch(state.clone())));
    let served = axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await;
    triggers.iter().for_each(JoinHandle::abort);
    served
}
