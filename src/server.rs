//! Assembling a running router from a [`Config`]: catalogue, compiled schemas, Wasm
//! plugins, routes, pipeline, HTTP. Kept apart from `main` so tests start the very same
//! thing on port 0.

use crate::catalog::Catalog;
use crate::config::{Config, DurabilityMode, RouteConfig, BUILTIN_PREFIX};
use crate::ingest::{self, AppState, Auth, AuthError};
use crate::metrics::{Metrics, PluginSamples};
use crate::router::dead_letters::DeadLetters;
use crate::router::pattern::Matcher;
use crate::router::pattern::TypePattern;
use crate::router::pipeline::Durable;
use crate::router::pipeline::Route;
use crate::router::retry::{Clock, RetryPolicy, SystemClock};
use crate::router::Pipeline;
use crate::schema::{Registry, SchemaError, Strictness};
use crate::store::config_docs::{ConfigDocs, ConfigError};
use crate::store::local::LocalOptions;
use crate::store::{Durability, EventStore, LocalStore, StoreError};
use crate::wasm::{builtin, Plugin, WasmEngine, WasmError};
use crate::workflow::actors::{ActorError, Actors};
use crate::workflow::Workflows;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Why the router could not start; each names the config key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("plugin `{plugin}`: {source}")]
    Plugin { plugin: String, source: WasmError },
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("event log: {0}")]
    Store(#[from] StoreError),
    #[error("config service: {0}")]
    ConfigDocs(#[from] ConfigError),
    #[error("subscribers: {0}")]
    Actors(#[from] ActorError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

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

/// Everything a router serves from: compiled schemas, loaded plugins, the pipeline.
pub fn state(config: &Config) -> Result<Arc<AppState>, StartError> {
    state_with_clock(config, Arc::new(SystemClock::default()))
}

/// [`state`] with the clock that times retries (tests drive a [`crate::router::retry::ManualClock`]).
pub fn state_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<AppState>, StartError> {
    // Plugins uploaded earlier (`PUT /v1/plugins/{name}`) load like configured ones.
    let config = &with_uploads(config)?;
    let registry = Arc::new(registry(config)?);
    let samples = Arc::new(PluginSamples::default());
    let (plugins, wasm) = if config.plugins.is_empty() {
        (Vec::new(), None)
    } else {
        let (plugins, engine) = load_plugins(config, &registry, &samples)?;
        (plugins, Some(engine))
    };
    let routes: Vec<Route> =
        config.routes.iter().enumerate().map(|(i, r)| route(i, r, &plugins)).collect::<Result<_, _>>()?;
    let options = LocalOptions {
        dir: config.store.dir.clone().unwrap_or_else(|| config.data_dir.join("log")),
        durability: match config.store.durability {
            DurabilityMode::Always => Durability::Always,
            DurabilityMode::Group => Durability::Group { window: Duration::from_micros(config.store.group_window_us) },
            DurabilityMode::Off => Durability::Off,
        },
        segment_bytes: config.store.segment_bytes,
        max_bytes: config.store.max_bytes,
    };
    let (store, recovered) = LocalStore::open(&options, |e| routes.iter().any(|r| r.matcher.matches(&e.type_name)))?;
    let letters = options.dir.join("dead-letters.jsonl");
    let dead_letters = DeadLetters::open(letters.clone(), config.store.max_dead_letters, store.side_bytes())
        .map_err(|e| StoreError::io(&letters, e))?;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let durable = Durable { store, recovered, dead_letters };
    let configs = ConfigDocs::open(options.dir.join("config"))?;
    let actors = Actors::open(Some(options.dir.join("subscribers.json")))?;
    let auth = Auth::open(&config.auth, &options.dir)?;
    let pipeline = Pipeline::with_routes(config, registry.clone(), plugins, routes, samples, Some(durable), clock);
    Ok(Arc::new(AppState {
        registry,
        pipeline: Arc::new(pipeline),
        metrics: Arc::new(Metrics::default()),
        limits: config.ingest.clone(),
        configs: Arc::new(configs),
        workflows: Arc::new(Workflows::new(&config.workflows, actors)),
        wasm: std::sync::Mutex::new(wasm),
        uploads: uploads_dir(config),
        wasm_cache: config.data_dir.join("cache"),
        auth,
        streams: crate::ingest::StreamSlots::new(config.subscribers.max_connections),
    }))
}

/// Where uploaded plugins are kept: `<store dir>/plugins/<name>.{wasm,toml}`.
pub fn uploads_dir(config: &Config) -> std::path::PathBuf {
    config.store.dir.clone().unwrap_or_else(|| config.data_dir.join("log")).join("plugins")
}

/// `config` with the uploaded plugins and their routes added.
fn with_uploads(config: &Config) -> Result<Config, StartError> {
    let mut config = config.clone();
    let dir = uploads_dir(&config);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(config) };
    let mut manifests: Vec<std::path::PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    manifests.sort();
    for path in manifests {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| StoreError::io(&path, e))?;
        let (plugin, routes) = crate::config::parse_upload(&name, &text, &path.with_extension("wasm"))
            .map_err(|e| StartError::Config { key: path.display().to_string(), message: e.to_string() })?;
        config.plugins.push(plugin);
        config.routes.extend(routes);
    }
    Ok(config)
}

/// Compiles (or loads from `<data_dir>/cache`) every configured plugin; checks that each
/// type in its `emits` exists.
fn load_plugins(
    config: &Config,
    registry: &Arc<Registry>,
    samples: &Arc<PluginSamples>,
) -> Result<(Vec<Arc<Plugin>>, Arc<WasmEngine>), StartError> {
    let fuel = config.plugins.iter().any(|p| p.limits.fuel.is_some());
    let cache = config.data_dir.join("cache");
    let engine =
        WasmEngine::new(fuel, Some(cache)).map_err(|source| StartError::Plugin { plugin: "*".into(), source })?;
    let mut plugins = Vec::with_capacity(config.plugins.len());
    for (i, manifest) in config.plugins.iter().enumerate() {
        let plugin_err = |source| StartError::Plugin { plugin: manifest.name.clone(), source };
        for t in &manifest.emits {
            if registry.get(t).is_err() {
                return Err(StartError::Config {
                    key: format!("plugin[{i}] ({}).emits", manifest.name),
                    message: format!("unknown event type `{t}`"),
                });
            }
        }
        let bytes: std::borrow::Cow<[u8]> = match manifest.component.strip_prefix(BUILTIN_PREFIX) {
            Some(name) => builtin::get(name)
                .ok_or_else(|| StartError::Config {
                    key: format!("plugin[{i}] ({}).component", manifest.name),
                    message: format!(
                        "no built-in plugin `{name}`; there are: {}",
                        builtin::names().collect::<Vec<_>>().join(", ")
                    ),
                })?
                .into(),
            None => std::fs::read(&manifest.component)
                .map_err(|e| plugin_err(WasmError::Read { path: manifest.component.clone(), message: e.to_string() }))?
                .into(),
        };
        let started = std::time::Instant::now();
        let plugin =
            Plugin::load(&engine, manifest.clone(), &bytes, registry.clone(), samples.clone()).map_err(plugin_err)?;
        tracing::info!(plugin = %manifest.name, world = manifest.world.as_str(), ms = started.elapsed().as_secs_f64() * 1e3, "plugin loaded");
        plugins.push(Arc::new(plugin));
    }
    Ok((plugins, Arc::new(engine)))
}

pub(crate) fn route(i: usize, r: &RouteConfig, plugins: &[Arc<Plugin>]) -> Result<Route, StartError> {
    let bad = |key: &str, message: String| StartError::Config { key: format!("route[{i}].{key}"), message };
    let matcher = match (&r.glob, &r.regex) {
        (Some(g), _) => Matcher::Glob(TypePattern::parse(g).map_err(|e| bad("match", e.to_string()))?),
        (None, Some(re)) => {
            Matcher::Regex(crate::router::pattern::compile_regex(re).map_err(|e| bad("regex", e.to_string()))?)
        }
        (None, None) => return Err(bad("match", "set `match` or `regex`".into())),
    };
    let pick = |names: &[String]| -> Vec<Arc<Plugin>> {
        names.iter().filter_map(|n| plugins.iter().find(|p| p.name() == n).cloned()).collect()
    };
    Ok(Route {
        disabled: false,
        retry: RetryPolicy {
            max_attempts: r.retry.max_attempts,
            base: Duration::from_millis(r.retry.base_ms),
            max: Duration::from_millis(r.retry.max_ms),
        },
        name: r.name.clone().unwrap_or_else(|| format!("route-{i}")),
        matcher,
        filters: pick(&r.filters),
        handlers: pick(&r.handlers),
    })
}

/// Runs the router on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = state(config)?;
    tracing::info!(addr = %listener.local_addr()?, event_types = state.registry.len(), "eventyard listening");
    ingest::serve(listener, state.clone(), shutdown).await?;
    // HTTP has stopped taking events; let the workers finish what they are on and sync the log.
    state.pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
