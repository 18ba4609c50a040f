//! Assembling a running router from a [`Config`]: catalogue, compiled schemas, pipeline,
//! HTTP. Kept apart from `main` so tests start the very same thing on port 0.

use crate::catalog::Catalog;
use crate::config::Config;
use crate::ingest::{self, AppState};
use crate::metrics::Metrics;
use crate::router::Pipeline;
use crate::schema::{Registry, SchemaError, Strictness};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The compiled schemas a config asks for: the built-in catalogue, the user's Markdown
/// tables, or a directory of schema files.
pub fn registry(config: &Config) -> Result<Registry, SchemaError> {
    let strictness = Strictness::allow_unknown_fields(&config.schemas.allow_unknown_fields)
        .map_err(|e| SchemaError::Load { path: "schemas.allow_unknown_fields".into(), message: e.to_string() })?;
    let catalog = match &config.schemas.source {
        Some(dir) => Catalog::from_dir(dir)?,
        None => Catalog::embedded()?,
    };
    match &config.schemas.dir {
        Some(dir) => Registry::from_schema_dir(dir, &catalog, &strictness),
        None => Registry::from_catalog(&catalog, &strictness),
    }
}

pub fn state(config: &Config) -> Result<Arc<AppState>, SchemaError> {
    Ok(Arc::new(AppState {
        registry: Arc::new(registry(config)?),
        pipeline: Arc::new(Pipeline::new(config.subscribers.buffer)),
        metrics: Arc::new(Metrics::default()),
        limits: config.ingest.clone(),
    }))
}

/// Runs the router on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = state(config)?;
    tracing::info!(addr = %listener.local_addr()?, event_types = state.registry.len(), "eventyard listening");
    ingest::serve(listener, state, shutdown).await?;
    Ok(())
}
