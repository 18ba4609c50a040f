//! The one composition root: a [`Config`] becomes the parts (catalogue and compiled
//! schemas, Wasm plugins, routes, the event log, the pipeline, every door's state), the
//! doors' routes become one axum `Router`, and [`serve`] runs it on a listener until a
//! shutdown future resolves. Kept apart from `main` so tests start the very same thing on
//! port 0. Nothing imports this module but the CLI.

use crate::admin::{self, PluginAdmin};
use crate::config::{Config, DurabilityMode, BUILTIN_PREFIX};
use crate::http::{self, ApiError, AppState, Auth, AuthError};
use crate::metrics::{Metrics, PluginSamples};
use crate::protocols::fixinventory::actors::{ActorError, Actors};
use crate::protocols::fixinventory::workflows::Workflows;
use crate::protocols::fixinventory::{self, FixInventory};
use crate::protocols::infrahub;
use crate::router::pipeline::Durable;
use crate::router::retry::{Clock, SystemClock};
use crate::router::{routes, Pipeline, Route, Sink};
use crate::schema::catalog::Catalog;
use crate::schema::{Registry, SchemaError, Strictness};
use crate::settings::Invalid;
use crate::sinks::amqp::{AmqpSink, SinksMetrics};
use crate::sources::amqp::{AmqpSource, SourcesMetrics};
use crate::sources::nats::NatsSource;
use crate::store::config::Backend;
use crate::store::config_docs::{ConfigDocs, ConfigError};
use crate::store::dead_letters::DeadLetters;
use crate::store::lease::Leases;
use crate::store::local::LocalOptions;
use crate::store::nats::instances::Instances;
use crate::store::nats::leases::NatsLeases;
use crate::store::nats::plugins::SharedPlugins;
use crate::store::{Durability, EventLog, LocalLog, NatsLog, StoreError};
use crate::wasm::{builtin, Plugin, WasmEngine, WasmError};
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
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// A router ready to serve: the HTTP state every door shares, and what the Fix Inventory
/// and admin doors own besides.
#[derive(Clone)]
pub struct App {
    pub http: Arc<AppState>,
    pub fixinventory: Arc<FixInventory>,
    pub plugins: Arc<PluginAdmin>,
    /// `[sources.nats]`, when enabled.
    pub nats_source: Option<Arc<NatsSource>>,
    /// `[[sources.amqp]]`.
    pub amqp_sources: Vec<Arc<AmqpSource>>,
    /// On a shared log: the cluster's instances (the dashboard lists them).
    pub instances: Option<Arc<Instances>>,
}

impl App {
    /// Every door's routes, as one axum `Router`; errors for unknown paths and methods are
    /// JSON like every other.
    pub fn router(&self) -> axum::Router {
        let state = &self.http;
        // The API description, built once; it also answers what a path serves in a 405's
        // `Allow` (axum's would list every method of the route, and `/v1/events/{*rest}` is
        // one route for paths that serve different methods).
        let document = Arc::new(self.openapi());
        let text = bytes::Bytes::from(document.to_string());
        let serve = move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], text) };
        axum::Router::new()
            .merge(http::routes(state))
            .merge(infrahub::routes())
            .merge(fixinventory::routes(state, self.fixinventory.clone()))
            .merge(admin::routes(state, self.plugins.clone()))
            .merge(admin::dashboard::routes(state, self.instances.clone()))
            .route("/openapi.json", axum::routing::get(serve))
            .fallback(|| async { ApiError::NotFound })
            .method_not_allowed_fallback(move |uri: axum::http::Uri| async move {
                http::openapi::method_not_allowed(&document, uri.path())
            })
            .with_state(state.clone())
    }

    /// The API description: every door's list of operations (`http::openapi`).
    pub fn openapi(&self) -> serde_json::Value {
        let registry = &self.http.registry;
        let doors = [
            http::operations(registry),
            infrahub::operations(registry),
            fixinventory::operations(registry),
            admin::operations(),
            admin::dashboard::operations(registry),
        ];
        http::openapi::document(registry, doors.into_iter().flatten())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains open requests.
/// Workflow schedules and event triggers, and the reload of changed plugin files, run
/// while it serves.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut background = app.fixinventory.workflows.spawn_triggers(&app.http);
    background.push(tokio::spawn(admin::plugins::watch(app.http.clone(), app.plugins.clone())));
    background.push(tokio::spawn(admin::plugins::follow(app.http.clone(), app.plugins.clone())));
    for source in &app.amqp_sources {
        background.push(tokio::spawn(source.clone().run(app.http.registry.clone(), app.http.pipeline.clone())));
    }
    if let Some(source) = &app.nats_source {
        background.push(tokio::spawn(source.clone().run(app.http.registry.clone(), app.http.pipeline.clone())));
    }
    let served = axum::serve(listener, app.router()).with_graceful_shutdown(shutdown).await;
    background.iter().for_each(tokio::task::JoinHandle::abort);
    // Until each has stopped: an aborted source hands the admission it was in the middle of
    // to the core (`router::detach`), which a graceful stop then waits for.
    for task in background {
        let _ = task.await;
    }
    served
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
pub async fn build(config: &Config) -> Result<App, StartError> {
    build_with_clock(config, Arc::new(SystemClock::default())).await
}

/// [`build`] with the clock that times retries (tests drive a [`crate::router::retry::ManualClock`]).
pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
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
    let amqp_sinks: Vec<Arc<AmqpSink>> =
        config.sinks.amqp.iter().map(|s| Arc::new(AmqpSink::new(s.resolve()))).collect();
    let sinks: Vec<Arc<dyn Sink>> = amqp_sinks.iter().map(|s| s.clone() as Arc<dyn Sink>).collect();
    let routes: Vec<Route> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| routes::build(i, r, &plugins, &sinks))
        .collect::<Result<_, _>>()?;
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
    let window = Duration::from_secs(config.ingest.idempotency_window_secs);
    let routed = |e: &crate::event::Event| routes.iter().any(|r| r.matcher.matches(&e.type_name));
    let Stores { log, dead_letters, configs, leases, plugins: shared_plugins, instances } =
        open_stores(config, &options, window, routed).await?;
    let durable = Durable { log, dead_letters };
    let actors = Actors::open(Some(options.dir.join("subscribers.json")))?;
    let auth = Auth::open(&config.auth, &options.dir)?;
    let settings =
        crate::router::pipeline::Settings { pipeline: &config.pipeline, subscriber_buffer: config.subscribers.buffer };
    let pipeline = Pipeline::with_routes(settings, registry.clone(), plugins, routes, samples, durable, clock);
    let http = Arc::new(AppState {
        registry,
        pipeline: Arc::new(pipeline),
        metrics: Arc::new(Metrics::default()),
        limits: config.ingest.clone(),
        auth,
        streams: crate::http::StreamSlots::new(config.subscribers.max_connections),
    });
    let fixinventory = Arc::new(FixInventory {
        workflows: Arc::new(match leases {
            Some(leases) => Workflows::new(&config.workflows, actors).with_leases(leases),
            None => Workflows::new(&config.workflows, actors),
        }),
        configs: Arc::new(configs),
    });
    let plugins = Arc::new(PluginAdmin {
        wasm: std::sync::Mutex::new(wasm),
        uploads: uploads_dir(config),
        wasm_cache: config.data_dir.join("cache"),
        shared: shared_plugins,
    });
    let nats_source = match config.sources.nats.enabled {
        true => Some(Arc::new(NatsSource::open(&config.store.nats).await?)),
        false => None,
    };
    let amqp_sources: Vec<Arc<AmqpSource>> =
        config.sources.amqp.iter().map(|s| Arc::new(AmqpSource::new(s.resolve(), &options_dir(config)))).collect();
    http.metrics.register(Arc::new(SourcesMetrics(amqp_sources.clone())));
    http.metrics.register(Arc::new(SinksMetrics(amqp_sinks)));
    Ok(App { http, fixinventory, plugins, nats_source, amqp_sources, instances })
}

/// What the configured `[store]` backend keeps.
struct Stores {
    log: Arc<dyn EventLog>,
    dead_letters: Arc<DeadLetters>,
    configs: ConfigDocs,
    /// Cluster-wide turns (a shared log only).
    leases: Option<Arc<dyn Leases>>,
    /// Uploaded plugins shared with the other instances (a shared log only).
    plugins: Option<Arc<SharedPlugins>>,
    /// The instances sharing the log (a shared log only).
    instances: Option<Arc<Instances>>,
}

/// Opens the log and what lives beside it: files in the log's directory (`local`), or
/// buckets next to the stream (`nats`). `routed`: which recovered events need processing.
async fn open_stores(
    config: &Config,
    options: &LocalOptions,
    window: Duration,
    routed: impl Fn(&crate::event::Event) -> bool,
) -> Result<Stores, StartError> {
    let max_letters = config.store.max_dead_letters;
    Ok(match config.store.backend {
        Backend::Local => {
            let log = LocalLog::open(options, window, routed)?;
            let letters = options.dir.join("dead-letters.jsonl");
            let dead_letters = DeadLetters::open(letters.clone(), max_letters, log.side_bytes())
                .map_err(|e| StoreError::io(&letters, e))?;
            let configs = ConfigDocs::open(options.dir.join("config"))?;
            Stores {
                log: Arc::new(log),
                dead_letters: Arc::new(dead_letters),
                configs,
                leases: None,
                plugins: None,
                instances: None,
            }
        }
        Backend::Nats => {
            // This instance's own files (its admin token, Fix Inventory subscribers) still
            // live in the directory.
            crate::files::private_dir(&options.dir).map_err(|e| StoreError::io(&options.dir, e))?;
            let log = NatsLog::connect(&config.store.nats, window).await?;
            let dead_letters = Arc::new(DeadLetters::in_memory(max_letters));
            crate::store::nats::letters::share(&log, dead_letters.clone()).await?;
            let configs = ConfigDocs::shared(log.bucket("CONFIG", Duration::ZERO).await?, log.runtime().clone());
            let leases: Arc<dyn Leases> = Arc::new(NatsLeases::open(&log).await?);
            let plugins = Some(Arc::new(SharedPlugins::open(&log).await?));
            let instances = Some(Arc::new(Instances::open(&log).await?));
            Stores { log: Arc::new(log), dead_letters, configs, leases: Some(leases), plugins, instances }
        }
    })
}

/// The store's directory (`store.dir`, default `<data_dir>/log`).
fn options_dir(config: &Config) -> std::path::PathBuf {
    config.store.dir.clone().unwrap_or_else(|| config.data_dir.join("log"))
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
        let (plugin, routes) = routes::parse_upload(&name, &text, &path.with_extension("wasm"))
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

/// Runs the router on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = build(config).await?;
    tracing::info!(addr = %listener.local_addr()?, event_types = app.http.registry.len(), "eventyard listening");
    let pipeline = app.http.pipeline.clone();
    serve(listener, app, shutdown).await?;
    // HTTP has stopped taking events; let the workers finish what they are on and sync the log.
    pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
