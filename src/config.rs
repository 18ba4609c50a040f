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
/// How long an event id is remembered for idempotency (bounded also by the status board's
/// capacity, the newest 200,000 events).
pub const DEFAULT_IDEMPOTENCY_WINDOW_SECS: u64 = 24 * 3600;
/// Largest batch body (CloudEvents batch or NDJSON): room for thousands of events.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Events a WebSocket subscriber may fall behind before it skips the oldest.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 4096;
/// Items (NDJSON lines, CloudEvents) one batch request may carry: 100 times the batches the
/// benchmarks send, small enough that one request's per-item work and answer stay bounded.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 10_000;
/// WebSocket streams of the bus open at once (`/v1/subscribe` and Fix Inventory's
/// `/events` listeners): each holds a task, a socket and a reader of the broadcast ring.
pub const DEFAULT_MAX_SUBSCRIBER_CONNECTIONS: usize = 256;
/// Where the router keeps its files (precompiled plugins; the event log, later).
pub const DEFAULT_DATA_DIR: &str = "eventyard-data";
/// Events waiting for the pipeline workers; past it ingestion answers 503 instead of
/// growing memory.
pub const DEFAULT_QUEUE: usize = 65_536;
/// How many times an event may be re-emitted through plugins (A emits for B emits for A...).
pub const DEFAULT_HOP_LIMIT: u8 = 8;
/// Plugin memory cap: ample for a JSON handler, small enough for hundreds of instances.
pub const DEFAULT_PLUGIN_MEMORY: usize = 32 * 1024 * 1024;
/// Per-call deadline: a handler that needs longer is doing I/O it cannot do anyway.
pub const DEFAULT_DEADLINE_MS: u64 = 100;
pub const DEFAULT_MAX_EMITS: usize = 64;
pub const DEFAULT_MAX_EMIT_BYTES: usize = 1024 * 1024;
/// A warm instance is replaced after this many calls, bounding what a leaky guest can hoard.
pub const DEFAULT_RECYCLE_AFTER: u64 = 10_000;
/// Captured stdout/stderr per call and stream.
pub const DEFAULT_OUTPUT_BYTES: usize = 16 * 1024;
/// Below this a Rust or Python component cannot even start.
pub const MIN_PLUGIN_MEMORY: usize = 1024 * 1024;
/// `component = "builtin:<name>"` names a bundled example plugin.
pub const BUILTIN_PREFIX: &str = "builtin:";
/// The embedded default config `eventyard serve` uses when given none.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");
/// Log segment size: large enough that rolling is rare, small enough that a finished one
/// is deleted soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Log size past which ingestion answers 503 (unfinished events are piling up).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Handler calls per event and route before a dead letter, and the back-off between them.
/// The embedded schedule of `collect_and_cleanup`: hourly, as Fix Inventory runs it.
pub const DEFAULT_WORKFLOW_SCHEDULE: &str = "0 * * * *";
/// How long a workflow step waits for Wasm handlers and for subscribers that set no timeout.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_RETRY_BASE_MS: u64 = 200;
pub const DEFAULT_RETRY_MAX_MS: u64 = 60_000;
/// Consecutive failures that trip a plugin's circuit breaker, and how long it stays open.
pub const DEFAULT_BREAKER_FAILURES: u32 = 20;
pub const DEFAULT_BREAKER_COOL_DOWN_MS: u64 = 30_000;
/// Plugin calls (filters and handlers, every hop and retry) one accepted event may cause:
/// a handler routed on a type it emits, emitting `max_emits` per call, would otherwise make
/// up to `max_emits^hop_limit` calls from one ingested event.
pub const DEFAULT_ROOT_CALLS: u64 = 1024;
/// Events plugins may emit, all hops together, for one accepted event.
pub const DEFAULT_ROOT_EMITS: u64 = 1024;
/// Bytes of emitted event data, all hops together, for one accepted event (16 per-call
/// emit budgets of the default size).
pub const DEFAULT_ROOT_BYTES: u64 = 16 * 1024 * 1024;
/// Largest `pipeline.hop_limit`: an event's hop count is a `u8` and each hop is a nested call
/// on a worker's stack; real chains are a few hops long.
pub const MAX_HOP_LIMIT: u8 = 64;
/// Largest `retry.max_ms`, `retry.base_ms` and `breaker.cool_down_ms` (one day): a wait
/// longer than that is an outage, and far larger values overflow the time arithmetic.
pub const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;
/// Largest `retry.max_attempts`: each attempt holds the event in memory.
pub const MAX_ATTEMPTS: u32 = 100;
/// Largest plugin `limits.deadline_ms` (one hour): a call holds a worker thread.
pub const MAX_DEADLINE_MS: u64 = 3600 * 1000;
/// Largest workflow `step_timeout_secs` (one day): it is added to the clock.
pub const MAX_STEP_TIMEOUT_SECS: u64 = 24 * 3600;
/// Largest `ingest.idempotency_window_secs` (30 days): it is added to the clock, and
/// memory for it is capped anyway (see `router::status::MAX_IDEMPOTENCY_KEYS`).
pub const MAX_IDEMPOTENCY_WINDOW_SECS: u64 = 30 * 24 * 3600;
/// Largest `store.group_window_us` (one second): every 202 waits up to this long.
pub const MAX_GROUP_WINDOW_US: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key}: {message}")]
    Plugin { key: String, message: String },
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

/// `[auth]`: bearer tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The token the admin endpoints (plugins, dead letters, config service, workflow runs)
    /// require. Absent: one is generated at the first start, kept in `<store dir>/admin-token`
    /// and printed to the log.
    pub admin_token: Option<String>,
    /// When set, `GET /v1/subscribe` requires this token (or the admin token). Absent: open.
    pub subscribe_token: Option<String>,
    /// When set, Fix Inventory's endpoints (`/events`, `/subscriber/...`, `/subscribers`)
    /// require this token (or the admin token). Absent: open, as Fix Inventory's own core.
    pub fixinventory_token: Option<String>,
    /// `[[auth.ingest]]`: when any is listed, ingestion requires one of these tokens, and each
    /// may send only the event types its globs match.
    pub ingest: Vec<IngestToken>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestToken {
    pub token: String,
    /// Globs of the event types this token may send (`infrahub/*`, `idem-*`).
    pub types: Vec<String>,
    /// Globs of the `infrahub/response/*` types whose events from this token may answer a
    /// waiting `POST /v1/rpc` caller. Empty (the default): its response events are accepted
    /// and routed, but answer no caller; only plugins and tokens listed here can.
    #[serde(default)]
    pub answers: Vec<String>,
}

/// An uploaded plugin's manifest (`PUT /v1/plugins/{name}`): the fields of a `[[plugin]]`
/// table but `name` and `component`, and `routes = [{ match = "..." }]` (or `regex`, with an
/// optional `name` and `retry`); the plugin is each route's filter or handler, by its world.
/// Checked like a config file.
pub fn parse_upload(name: &str, text: &str, component: &Path) -> Result<(PluginConfig, Vec<RouteConfig>), ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Plugin { key: format!("manifest.{key}"), message };
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad("(toml)", e.message().to_string()))?;
    let routes = table.remove("routes");
    for key in ["name", "component"] {
        if table.contains_key(key) {
            return Err(bad(key, "set by the upload (the URL's name, the uploaded component)".into()));
        }
    }
    table.insert("name".into(), name.into());
    table.insert("component".into(), component.display().to_string().into());
    let plugin: PluginConfig =
        table.try_into().map_err(|e: toml::de::Error| bad("(plugin)", e.message().to_string()))?;
    let role = match plugin.world {
        World::Filter => "filters",
        World::Handler => "handlers",
    };
    let mut out = Vec::new();
    let empty = Vec::new();
    let list = match &routes {
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(bad("routes", "an array of tables".into())),
        None => &empty,
    };
    for (i, r) in list.iter().enumerate() {
        let mut t = r.as_table().cloned().ok_or_else(|| bad(&format!("routes[{i}]"), "a table".into()))?;
        t.insert(role.into(), toml::Value::Array(vec![name.into()]));
        t.entry("name").or_insert_with(|| format!("{name}-{i}").into());
        out.push(t.try_into().map_err(|e: toml::de::Error| bad(&format!("routes[{i}]"), e.message().to_string()))?);
    }
    let check = Config { plugins: vec![plugin.clone()], routes: out.clone(), ..Config::default() };
    check.check()?;
    Ok((plugin, out))
}

/// Tokens shorter than this are refused at start-up: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[[workflow]]`: a trigger and the step timeout of one documented workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// `collect_and_cleanup`, `collect`, `cleanup` or `metrics`.
    pub name: String,
    /// A cron expression in UTC, e.g. `"0 * * * *"` (5 fields; 6 with seconds first); absent: no schedule.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Globs of event types whose arrival starts a run.
    #[serde(default)]
    pub on_event: Vec<String>,
    /// How long a step waits for Wasm handlers and for subscribers that set no timeout.
    #[serde(default = "default_step_timeout")]
    pub step_timeout_secs: u64,
}

fn default_step_timeout() -> u64 {
    DEFAULT_STEP_TIMEOUT_SECS
}

impl WorkflowConfig {
    /// The workflow with no trigger but the API.
    pub fn named(name: &str) -> Self {
        Self { name: name.into(), schedule: None, on_event: Vec::new(), step_timeout_secs: DEFAULT_STEP_TIMEOUT_SECS }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Threads running plugins; 0 means one per core.
    pub workers: usize,
    pub queue: usize,
    pub hop_limit: u8,
    /// What one accepted event may cost, all hops and retries together; past it the event is
    /// dead-lettered with kind `root_budget` and its remaining work is skipped.
    pub root_budget: RootBudget,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { workers: 0, queue: DEFAULT_QUEUE, hop_limit: DEFAULT_HOP_LIMIT, root_budget: RootBudget::default() }
    }
}

/// `[pipeline] root_budget = { calls, emits, bytes }`: see [`DEFAULT_ROOT_CALLS`],
/// [`DEFAULT_ROOT_EMITS`], [`DEFAULT_ROOT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RootBudget {
    /// Plugin calls (filters and handlers).
    pub calls: u64,
    /// Events emitted by plugins.
    pub emits: u64,
    /// Bytes of emitted event data.
    pub bytes: u64,
}

impl Default for RootBudget {
    fn default() -> Self {
        Self { calls: DEFAULT_ROOT_CALLS, emits: DEFAULT_ROOT_EMITS, bytes: DEFAULT_ROOT_BYTES }
    }
}

/// `[store]`: the durable event log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `group` (default: appends arriving together share one fdatasync before their 202),
    /// `always` (one fdatasync per request), `off` (no sync; survives a process crash, not
    /// a power loss).
    pub durability: DurabilityMode,
    /// How long the writer gathers appends before a group sync (µs); 0 = sync as soon as
    /// the previous sync is done. A 202 waits at most about this plus one sync.
    pub group_window_us: u64,
    /// A segment file is closed past this size; finished segments are deleted.
    pub segment_bytes: u64,
    /// Past this much log on disk (segments and the dead-letter file), ingestion answers
    /// 503 instead of filling the disk.
    pub max_bytes: u64,
    /// Dead letters kept; past it the oldest is dropped and counted in
    /// `eventyard_dead_letters_dropped_total`.
    pub max_dead_letters: usize,
    /// Where the durable state lives: the event log's segments, the dead letters and the
    /// config service's documents (`config/`); default `<data_dir>/log`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    Always,
    Group,
    Off,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: DurabilityMode::Group,
            group_window_us: 0,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_LOG_BYTES,
            max_dead_letters: crate::router::dead_letters::DEFAULT_MAX_DEAD_LETTERS,
            dir: None,
        }
    }
}

/// One plugin: `[[plugin]]` in the config (its manifest).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// A path to the `.wasm` component, or `builtin:<name>` for a bundled example.
    pub component: String,
    pub world: World,
    /// Host imports granted: `log`, `emit`, `metrics`.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Event types the plugin may emit (or a filter may rewrite into).
    #[serde(default)]
    pub emits: Vec<String>,
    #[serde(default)]
    pub limits: PluginLimits,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Free-form settings the guest reads with `config.get` (as JSON).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    Filter,
    Handler,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Handler => "handler",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Log,
    Emit,
    Metrics,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Emit => "emit",
            Capability::Metrics => "metrics",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    pub memory_bytes: usize,
    pub deadline_ms: u64,
    /// Wasm instructions (roughly) one call may run; off when absent.
    pub fuel: Option<u64>,
    pub max_emits: usize,
    pub max_emit_bytes: usize,
    pub recycle_after_calls: u64,
    /// A fresh instance for every event (no state survives between events).
    pub strict: bool,
    pub output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_PLUGIN_MEMORY,
            deadline_ms: DEFAULT_DEADLINE_MS,
            fuel: None,
            max_emits: DEFAULT_MAX_EMITS,
            max_emit_bytes: DEFAULT_MAX_EMIT_BYTES,
            recycle_after_calls: DEFAULT_RECYCLE_AFTER,
            strict: false,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub failures: u32,
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: DEFAULT_BREAKER_FAILURES, cool_down_ms: DEFAULT_BREAKER_COOL_DOWN_MS }
    }
}

/// `[[route]]`: which events (glob `match` or `regex`) go through which filters, in
/// order, then which handlers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub glob: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub filters: Vec<String>,
    #[serde(default)]
    pub handlers: Vec<String>,
    /// How a handler call that failed in a way that may pass (a retryable handler error, a
    /// deadline, a failed output) is tried again before it becomes a dead letter.
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Calls in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The first wait; each next one doubles, up to `max_ms`, half of it random (jitter).
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: DEFAULT_MAX_ATTEMPTS, base_ms: DEFAULT_RETRY_BASE_MS, max_ms: DEFAULT_RETRY_MAX_MS }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    /// See [`DEFAULT_MAX_BATCH_ITEMS`]; past it the whole batch is refused with 413
    /// `too_many_items`.
    pub max_batch_items: usize,
    /// An event whose id (CloudEvents `id`, NDJSON `id`, or `Idempotency-Key` header) was
    /// accepted less than this long ago is answered like the first and processed once.
    pub idempotency_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    /// See [`DEFAULT_SUBSCRIBER_BUFFER`].
    pub buffer: usize,
    /// See [`DEFAULT_MAX_SUBSCRIBER_CONNECTIONS`]; past it the handshake is refused with 503
    /// `too_many_connections` before the upgrade.
    pub max_connections: usize,
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

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
            idempotency_window_secs: DEFAULT_IDEMPOTENCY_WINDOW_SECS,
        }
    }
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self { buffer: DEFAULT_SUBSCRIBER_BUFFER, max_connections: DEFAULT_MAX_SUBSCRIBER_CONNECTIONS }
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

    /// Values that would overflow the router's time and count arithmetic (a deadline turned
    /// into epoch ticks, a retry delay added to the clock, a hop count in a `u8`): refused
    /// here with the field's name rather than wrapping or panicking at run time.
    fn check_arithmetic(&self) -> Result<(), ConfigError> {
        fn at_most<T: PartialOrd + std::fmt::Display>(key: String, v: T, max: T) -> Result<(), ConfigError> {
            if v > max {
                return Err(ConfigError::Plugin {
                    key,
                    message: format!("{v} is more than the largest allowed, {max}"),
                });
            }
            Ok(())
        }
        at_most("pipeline.hop_limit".into(), self.pipeline.hop_limit, MAX_HOP_LIMIT)?;
        let b = &self.pipeline.root_budget;
        for (k, v) in [("calls", b.calls), ("emits", b.emits), ("bytes", b.bytes)] {
            if v == 0 {
                return Err(ConfigError::Plugin {
                    key: format!("pipeline.root_budget.{k}"),
                    message: "must be greater than 0".into(),
                });
            }
        }
        at_most(
            "ingest.idempotency_window_secs".into(),
            self.ingest.idempotency_window_secs,
            MAX_IDEMPOTENCY_WINDOW_SECS,
        )?;
        at_most("store.group_window_us".into(), self.store.group_window_us, MAX_GROUP_WINDOW_US)?;
        for (i, w) in self.workflows.iter().enumerate() {
            at_most(
                format!("workflow[{i}] ({}).step_timeout_secs", w.name),
                w.step_timeout_secs,
                MAX_STEP_TIMEOUT_SECS,
            )?;
        }
        for (i, p) in self.plugins.iter().enumerate() {
            let key = |k: &str| format!("plugin[{i}] ({}).{k}", p.name);
            at_most(key("limits.deadline_ms"), p.limits.deadline_ms, MAX_DEADLINE_MS)?;
            at_most(key("breaker.cool_down_ms"), p.breaker.cool_down_ms, MAX_WAIT_MS)?;
        }
        for (i, r) in self.routes.iter().enumerate() {
            at_most(format!("route[{i}].retry.max_attempts"), r.retry.max_attempts, MAX_ATTEMPTS)?;
            at_most(format!("route[{i}].retry.base_ms"), r.retry.base_ms, MAX_WAIT_MS)?;
            at_most(format!("route[{i}].retry.max_ms"), r.retry.max_ms, MAX_WAIT_MS)?;
        }
        Ok(())
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
        if self.ingest.max_body_bytes > crate::store::segment::MAX_EVENT_DATA_BYTES {
            return Err(ConfigError::Invalid {
                key: "ingest.max_body_bytes",
                message: format!(
                    "at most {} (the event log's largest record, less room for the event's fields)",
                    crate::store::segment::MAX_EVENT_DATA_BYTES
                ),
            });
        }
        positive("subscribers.buffer", self.subscribers.buffer)?;
        positive("ingest.max_batch_items", self.ingest.max_batch_items)?;
        positive("subscribers.max_connections", self.subscribers.max_connections)?;
        if self.schemas.source.is_some() && self.schemas.dir.is_some() {
            return Err(ConfigError::Invalid { key: "schemas", message: "set `source` or `dir`, not both".into() });
        }
        positive("pipeline.queue", self.pipeline.queue)?;
        self.check_arithmetic()?;
        positive("store.max_dead_letters", self.store.max_dead_letters)?;
        if self.store.segment_bytes < 4096 || self.store.max_bytes < self.store.segment_bytes {
            return Err(ConfigError::Invalid {
                key: "store",
                message: "segment_bytes must be at least 4096 and max_bytes at least segment_bytes".into(),
            });
        }
        let bad = |key: String, message: String| ConfigError::Plugin { key, message };
        for (key, token) in [
            ("auth.admin_token", &self.auth.admin_token),
            ("auth.subscribe_token", &self.auth.subscribe_token),
            ("auth.fixinventory_token", &self.auth.fixinventory_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < MIN_TOKEN_LEN) {
                return Err(bad(key.into(), format!("at least {MIN_TOKEN_LEN} characters")));
            }
        }
        for (i, t) in self.auth.ingest.iter().enumerate() {
            if t.token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!("auth.ingest[{i}].token"), format!("at least {MIN_TOKEN_LEN} characters")));
            }
            if t.types.is_empty() {
                return Err(bad(format!("auth.ingest[{i}].types"), "list the event types (globs) it may send".into()));
            }
            crate::router::pattern::TypePattern::parse(&t.types.join(","))
                .map_err(|e| bad(format!("auth.ingest[{i}].types"), e.to_string()))?;
            if let Some(a) = t.answers.iter().find(|a| !a.starts_with(crate::router::rpc::RESPONSE_PREFIX)) {
                let prefix = crate::router::rpc::RESPONSE_PREFIX;
                return Err(bad(format!("auth.ingest[{i}].answers"), format!("`{a}` is not a `{prefix}*` type")));
            }
            crate::router::pattern::TypePattern::parse(&t.answers.join(","))
                .map_err(|e| bad(format!("auth.ingest[{i}].answers"), e.to_string()))?;
        }
        for (i, w) in self.workflows.iter().enumerate() {
            let key = |k: &str| format!("workflow[{i}] ({}).{k}", w.name);
            if crate::workflow::steps(&w.name).is_none() {
                let known = crate::workflow::WORKFLOWS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                return Err(bad(key("name"), format!("unknown workflow; known: {known}")));
            }
            if self.workflows[..i].iter().any(|v| v.name == w.name) {
                return Err(bad(key("name"), "listed twice".into()));
            }
            if let Some(cron) = &w.schedule {
                crate::workflow::parse_schedule(cron).map_err(|e| bad(key("schedule"), e))?;
            }
            for g in &w.on_event {
                crate::router::pattern::TypePattern::parse(g).map_err(|e| bad(key("on_event"), e.to_string()))?;
            }
            if w.step_timeout_secs == 0 {
                return Err(bad(key("step_timeout_secs"), "must be greater than 0".into()));
            }
        }
        for (i, p) in self.plugins.iter().enumerate() {
            let key = |k: &str| format!("plugin[{i}] ({}).{k}", p.name);
            if p.name.is_empty() || self.plugins[..i].iter().any(|q| q.name == p.name) {
                return Err(bad(key("name"), "must be non-empty and unique".into()));
            }
            let l = &p.limits;
            if l.memory_bytes < MIN_PLUGIN_MEMORY || l.memory_bytes > crate::wasm::engine::MAX_PLUGIN_MEMORY_BYTES {
                return Err(bad(
                    key("limits.memory_bytes"),
                    format!("must be between {MIN_PLUGIN_MEMORY} and {}", crate::wasm::engine::MAX_PLUGIN_MEMORY_BYTES),
                ));
            }
            if l.deadline_ms == 0 || l.recycle_after_calls == 0 || l.fuel == Some(0) {
                return Err(bad(
                    key("limits"),
                    "deadline_ms, recycle_after_calls and fuel must be greater than 0".into(),
                ));
            }
            if p.world == World::Filter && p.capabilities.contains(&Capability::Emit) {
                return Err(bad(key("capabilities"), "a filter cannot emit; it answers with a verdict".into()));
            }
            if !p.config.is_object() {
                return Err(bad(key("config"), "must be a table".into()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            if r.retry.max_attempts == 0 || r.retry.base_ms == 0 || r.retry.max_ms < r.retry.base_ms {
                return Err(bad(key("retry"), "max_attempts and base_ms must be > 0, max_ms >= base_ms".into()));
            }
            if r.glob.is_some() == r.regex.is_some() {
                return Err(bad(key("match"), "set exactly one of `match` (glob) or `regex`".into()));
            }
            for (field, names, world) in
                [("filters", &r.filters, World::Filter), ("handlers", &r.handlers, World::Handler)]
            {
                for n in names {
                    match self.plugins.iter().find(|p| &p.name == n) {
                        None => return Err(bad(key(field), format!("no plugin named `{n}`"))),
                        Some(p) if p.world != world => {
                            return Err(bad(
                                key(field),
                                format!("plugin `{n}` is a {}, not a {}", p.world.as_str(), world.as_str()),
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }
}
