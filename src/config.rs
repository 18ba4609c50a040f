//! `eventyard serve --config FILE`: TOML, every table `deny_unknown_fields` so a typo is
//! refused at start-up with the key's name and line. Defaults are named constants.

pub use crate::http::config::*;
pub use crate::protocols::fixinventory::config::*;
pub use crate::router::config::*;
pub use crate::schema::config::*;
pub use crate::settings::Invalid;
pub use crate::store::config::*;
pub use crate::wasm::config::*;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the router listens when neither the config nor `--listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Where the router keeps its files (precompiled plugins; the event log, later).
pub const DEFAULT_DATA_DIR: &str = "eventyard-data";
/// The embedded default config `eventyard serve` uses when given none.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value that parses but cannot work: the one shape every section answers with.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to listen on.
    pub listen: SocketAddr,
    pub ingest: IngestConfig,
    pub subscribers: SubscriberConfig,
    pub schemas: SchemaConfig,
    /// Where precompiled plugins (and later the event log) are kept.
    pub data_dir: PathBuf,
    pub pipeline: PipelineConfig,
    pub store: StoreConfig,
    #[serde(rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// When the documented workflows run besides `POST /v1/workflows/{name}/run`; by default
    /// `collect_and_cleanup` hourly.
    #[serde(rename = "workflow")]
    pub workflows: Vec<WorkflowConfig>,
    pub auth: AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            ingest: IngestConfig::default(),
            subscribers: SubscriberConfig::default(),
            schemas: SchemaConfig::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            pipeline: PipelineConfig::default(),
            store: StoreConfig::default(),
            plugins: Vec::new(),
            routes: Vec::new(),
            workflows: vec![WorkflowConfig {
                schedule: Some(DEFAULT_WORKFLOW_SCHEDULE.into()),
                ..WorkflowConfig::named("collect_and_cleanup")
            }],
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    /// The config `eventyard serve` runs with when given none: the built-in catalogue and
    /// the bundled example plugins on their routes.
    pub fn embedded_default() -> Config {
        Self::parse(EMBEDDED_DEFAULT).expect("the embedded default config is valid (tested)")
    }

    /// Reads and checks a config file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        for p in [&mut config.schemas.source, &mut config.schemas.dir, &mut config.store.dir].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for plugin in &mut config.plugins {
            if !plugin.component.starts_with(BUILTIN_PREFIX) && Path::new(&plugin.component).is_relative() {
                plugin.component = base.join(&plugin.component).to_string_lossy().into_owned();
            }
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        config.check()?;
        Ok(config)
    }

    /// Values that parse but cannot work: each section checks itself, then what spans
    /// sections (names unique, routes naming plugins of the right world).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.ingest.check()?;
        self.subscribers.check()?;
        self.schemas.check()?;
        self.pipeline.check()?;
        self.store.check()?;
        self.auth.check()?;
        for (i, w) in self.workflows.iter().enumerate() {
            let key = format!("workflow[{i}] ({})", w.name);
            w.check(&key)?;
            if self.workflows[..i].iter().any(|v| v.name == w.name) {
                return Err(Invalid::new(format!("{key}.name"), "listed twice").into());
            }
        }
        for (i, p) in self.plugins.iter().enumerate() {
            let key = format!("plugin[{i}] ({})", p.name);
            if p.name.is_empty() || self.plugins[..i].iter().any(|q| q.name == p.name) {
                return Err(Invalid::new(format!("{key}.name"), "must be non-empty and unique").into());
            }
            p.check(&key, MAX_WAIT_MS)?;
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("route[{i}]");
            r.check(&key)?;
            for (field, names, world) in
                [("filters", &r.filters, World::Filter), ("handlers", &r.handlers, World::Handler)]
            {
                let bad = |message: String| Invalid::new(format!("{key}.{field}"), message);
                for n in names {
                    match self.plugins.iter().find(|p| &p.name == n) {
                        None => return Err(bad(format!("no plugin named `{n}`")).into()),
                        Some(p) if p.world != world => {
                            let (is, not) = (p.world.as_str(), world.as_str());
                            return Err(bad(format!("plugin `{n}` is a {is}, not a {not}")).into());
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }
}
