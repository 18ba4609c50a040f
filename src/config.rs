//! `eventyard serve --config FILE`: TOML, every table `deny_unknown_fields` so a typo is
//! refused at start-up with the key's name and line. Defaults are named constants.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the router listens when neither the config nor `--listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Largest single event body: 1 MiB, far above any documented event, small enough that a
/// flood of oversized requests cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest batch body (CloudEvents batch or NDJSON): room for thousands of events.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Events a WebSocket subscriber may fall behind before it skips the oldest.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to listen on.
    pub listen: SocketAddr,
    pub ingest: IngestConfig,
    pub subscribers: SubscriberConfig,
    pub schemas: SchemaConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    /// See [`DEFAULT_SUBSCRIBER_BUFFER`].
    pub buffer: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// A directory of Markdown tables to generate the catalogue from, instead of the built-in one.
    pub source: Option<PathBuf>,
    /// A directory of `<family>/<name>.schema.json` files to load instead.
    pub dir: Option<PathBuf>,
    /// Globs of event types whose objects accept fields the schema does not list.
    pub allow_unknown_fields: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            ingest: IngestConfig::default(),
            subscribers: SubscriberConfig::default(),
            schemas: SchemaConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_body_bytes: DEFAULT_MAX_BODY_BYTES, max_batch_bytes: DEFAULT_MAX_BATCH_BYTES }
    }
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self { buffer: DEFAULT_SUBSCRIBER_BUFFER }
    }
}

impl Config {
    /// Reads and checks a config file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.schemas.source, &mut config.schemas.dir].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
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

    /// Values that parse but cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let positive = |key, v: usize| {
            if v == 0 {
                Err(ConfigError::Invalid { key, message: "must be greater than 0".into() })
            } else {
                Ok(())
            }
        };
        positive("ingest.max_body_bytes", self.ingest.max_body_bytes)?;
        positive("ingest.max_batch_bytes", self.ingest.max_batch_bytes)?;
        positive("subscribers.buffer", self.subscribers.buffer)?;
        if self.schemas.source.is_some() && self.schemas.dir.is_some() {
            return Err(ConfigError::Invalid { key: "schemas", message: "set `source` or `dir`, not both".into() });
        }
        Ok(())
    }
}
