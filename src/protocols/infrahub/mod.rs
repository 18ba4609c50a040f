//! Infrahub's request/response: `POST /v1/rpc/{type}` accepts a request event and answers
//! with the handler's response event of the same correlation id ([`rpc`]).

pub mod rpc;

use crate::http::{auth, AppState};
use std::sync::Arc;

pub fn routes(state: &Arc<AppState>) -> axum::Router<Arc<AppState>> {
    let ingest = axum::middleware::from_fn_with_state(state.clone(), auth::ingest_grant);
    axum::Router::new().route("/v1/rpc/{*type}", axum::routing::post(rpc::call).route_layer(ingest))
}
