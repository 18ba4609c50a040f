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
    /// `[sources]`: broker sources (the NATS source).
    pub sources: crate::sources::config::SourcesConfig,
    /// `[sinks]`: broker destinations routes deliver to (`[[sinks.amqp]]`).
    pub sinks: crate::sinks::config::SinksConfig,
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
            sources: Default::default(),
            sinks: Default::default(),
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
        self.sources.check()?;
        self.sinks.check()?;
        if let Some(name) = self.sinks.names().find(|n| self.plugins.iter().any(|p| p.name == *n)) {
            // Dead letters and retries name a route's step by name.
            return Err(Invalid::new("sinks.amqp.name", format!("`{name}` is also a plugin's name")).into());
        }
        if self.sources.nats.enabled {
            // The source connects with `[store.nats]`'s settings, whatever the log's backend.
            self.store.nats.check()?;
        }
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
            if let Some(n) = r.sinks.iter().find(|n| !self.sinks.names().any(|s| s == n.as_str())) {
                return Err(Invalid::new(format!("{key}.sinks"), format!("no sink named `{n}`")).into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler `h` and a filter `f`, for routes to name.
    const PLUGINS: &str = r#"
[[plugin]]
name = "h"
component = "builtin:echo"
world = "handler"

[[plugin]]
name = "f"
component = "builtin:priority-filter"
world = "filter"
"#;

    fn with_plugins(rest: &str) -> String {
        format!("{PLUGINS}\n{rest}")
    }

    /// A route on `a/*` (after the plugins `h` and `f`) with `rest` added.
    fn route(rest: &str) -> String {
        with_plugins(&format!("[[route]]\nmatch = \"a/*\"\n{rest}"))
    }

    /// A plugin alone: `[[plugin]]` named `name` of `world` with `rest` added.
    fn plugin(name: &str, world: &str, rest: &str) -> String {
        format!("[[plugin]]\nname = \"{name}\"\ncomponent = \"builtin:echo\"\nworld = \"{world}\"\n{rest}")
    }

    #[test]
    fn the_embedded_and_the_built_in_defaults_pass_their_checks() {
        let embedded = Config::embedded_default();
        embedded.check().unwrap();
        assert!(!embedded.plugins.is_empty() && !embedded.routes.is_empty());
        Config::default().check().unwrap();
        Config::parse("").unwrap().check().unwrap();
    }

    #[test]
    fn a_small_valid_config_with_plugins_routes_and_workflows_parses() {
        let toml = with_plugins(
            r#"
[[route]]
match = "a/*"
filters = ["f"]
handlers = ["h"]
retry = { max_attempts = 5, base_ms = 10, max_ms = 1000 }

[[route]]
regex = "^b/"
handlers = ["h"]

[[workflow]]
name = "collect"
schedule = "0 * * * *"

[[workflow]]
name = "cleanup"
"#,
        );
        let config = Config::parse(&toml).unwrap();
        assert_eq!((config.plugins.len(), config.routes.len(), config.workflows.len()), (2, 2, 2));
    }

    #[test]
    fn each_refused_setting_is_named_by_its_key() {
        let too_big_body = crate::store::segment::MAX_EVENT_DATA_BYTES + 1;
        let too_long_wait = MAX_WAIT_MS + 1;
        let too_long_window = MAX_IDEMPOTENCY_WINDOW_SECS + 1;
        let cases: Vec<(String, &str)> = vec![
            ("[pipeline]\nqueue = 0".into(), "pipeline.queue"),
            ("[pipeline]\nhop_limit = 65".into(), "pipeline.hop_limit"),
            ("[pipeline]\nqueue_wait_ms = 60001".into(), "pipeline.queue_wait_ms"),
            ("[pipeline]\nroot_budget = { calls = 0 }".into(), "pipeline.root_budget.calls"),
            ("[pipeline]\nroot_budget = { bytes = 0 }".into(), "pipeline.root_budget.bytes"),
            (with_plugins("[[route]]\nmatch = \"a/*\"\nregex = \"^a\"\nhandlers = [\"h\"]"), "route[0].match"),
            (with_plugins("[[route]]\nhandlers = [\"h\"]"), "route[0].match"),
            (route("handlers = [\"nope\"]"), "route[0].handlers"),
            (route("sinks = [\"nope\"]"), "route[0].sinks"),
            (with_plugins("[[sinks.amqp]]\nname = \"h\"\nurl = \"amqp://x\""), "sinks.amqp.name"),
            (route("handlers = [\"f\"]"), "route[0].handlers"),
            (route("filters = [\"h\"]"), "route[0].filters"),
            (route("handlers = [\"h\"]\n[[route]]\nmatch = \"b\"\nhandlers = [\"x\"]"), "route[1].handlers"),
            (route("retry = { base_ms = 500, max_ms = 100 }"), "route[0].retry"),
            (route("retry = { max_attempts = 0 }"), "route[0].retry"),
            (route("retry = { max_attempts = 101 }"), "route[0].retry.max_attempts"),
            (route(&format!("retry = {{ max_ms = {too_long_wait} }}")), "route[0].retry.max_ms"),
            (plugin("x", "filter", "capabilities = [\"emit\"]"), "plugin[0] (x).capabilities"),
            (plugin("x", "handler", "limits = { memory_bytes = 1024 }"), "plugin[0] (x).limits.memory_bytes"),
            (plugin("x", "handler", "limits = { deadline_ms = 0 }"), "plugin[0] (x).limits"),
            (plugin("x", "handler", "limits = { fuel = 0 }"), "plugin[0] (x).limits"),
            (
                plugin("x", "handler", &format!("breaker = {{ cool_down_ms = {too_long_wait} }}")),
                "plugin[0] (x).breaker.cool_down_ms",
            ),
            (plugin("x", "handler", "config = \"text\""), "plugin[0] (x).config"),
            (with_plugins(&plugin("h", "handler", "")), "plugin[2] (h).name"),
            (plugin("", "handler", ""), "plugin[0] ().name"),
            ("[[workflow]]\nname = \"collect\"\n[[workflow]]\nname = \"collect\"".into(), "workflow[1] (collect).name"),
            ("[[workflow]]\nname = \"nope\"".into(), "workflow[0] (nope).name"),
            ("[[workflow]]\nname = \"collect\"\nschedule = \"not cron\"".into(), "workflow[0] (collect).schedule"),
            (
                "[[workflow]]\nname = \"collect\"\nstep_timeout_secs = 0".into(),
                "workflow[0] (collect).step_timeout_secs",
            ),
            ("[store]\nsegment_bytes = 100".into(), "store"),
            ("[store]\nsegment_bytes = 8192\nmax_bytes = 4096".into(), "store"),
            ("[store]\ngroup_window_us = 1000001".into(), "store.group_window_us"),
            ("[store]\nmax_dead_letters = 0".into(), "store.max_dead_letters"),
            ("[auth]\nadmin_token = \"fifteen-chars!!\"".into(), "auth.admin_token"),
            ("[auth]\nsubscribe_token = \"short\"".into(), "auth.subscribe_token"),
            ("[[auth.ingest]]\ntoken = \"short\"\ntypes = [\"a/*\"]".into(), "auth.ingest[0].token"),
            ("[[auth.ingest]]\ntoken = \"a-long-enough-token\"\ntypes = []".into(), "auth.ingest[0].types"),
            (
                "[[auth.ingest]]\ntoken = \"a-long-enough-token\"\ntypes = [\"a/*\"]\nanswers = [\"a/b\"]".into(),
                "auth.ingest[0].answers",
            ),
            ("[schemas]\nsource = \"tables\"\ndir = \"schemas\"".into(), "schemas"),
            (format!("[ingest]\nmax_body_bytes = {too_big_body}"), "ingest.max_body_bytes"),
            ("[ingest]\nmax_body_bytes = 0".into(), "ingest.max_body_bytes"),
            (format!("[ingest]\nidempotency_window_secs = {too_long_window}"), "ingest.idempotency_window_secs"),
            ("[subscribers]\nbuffer = 0".into(), "subscribers.buffer"),
        ];
        for (toml, key) in cases {
            match Config::parse(&toml) {
                Err(ConfigError::Invalid(e)) => {
                    assert_eq!(e.key, key, "for\n{toml}\ngot {e}");
                    assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
                }
                other => panic!("expected `{key}` refused for\n{toml}\ngot {other:?}"),
            }
        }
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let ok = [
            "[pipeline]\nhop_limit = 64".to_string(),
            "[store]\nsegment_bytes = 4096\nmax_bytes = 4096".into(),
            "[auth]\nadmin_token = \"sixteen-chars!!!\"".into(),
            format!("[ingest]\nmax_body_bytes = {}", crate::store::segment::MAX_EVENT_DATA_BYTES),
            route(&format!("retry = {{ max_attempts = 100, max_ms = {MAX_WAIT_MS} }}")),
            plugin("x", "handler", "breaker = { failures = 0 }"),
            plugin("x", "filter", "capabilities = [\"log\", \"metrics\"]"),
        ];
        for toml in ok {
            Config::parse(&toml).unwrap_or_else(|e| panic!("refused\n{toml}\n{e}"));
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        for (toml, name) in [("[pipeline]\nqeue = 1", "qeue"), ("lisen = \"127.0.0.1:1\"", "lisen")] {
            match Config::parse(toml) {
                Err(ConfigError::Parse { message, .. }) => assert!(message.contains(name), "{message}"),
                other => panic!("expected a parse error naming `{name}`, got {other:?}"),
            }
        }
    }
}
