//! `[[plugin]]`: a plugin's manifest (component, world, grants, limits, breaker), owned by
//! the plugin host, with the checks that need nothing but the manifest itself.

use crate::settings::{at_most, Invalid};
use serde::Deserialize;

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

/// Consecutive failures that trip a plugin's circuit breaker, and how long it stays open.
pub const DEFAULT_BREAKER_FAILURES: u32 = 20;

pub const DEFAULT_BREAKER_COOL_DOWN_MS: u64 = 30_000;

/// Largest plugin `limits.deadline_ms` (one hour): a call holds a worker thread.
pub const MAX_DEADLINE_MS: u64 = 3600 * 1000;

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

impl PluginConfig {
    /// Checks this manifest alone; `key` is how the user names it (`plugin[0] (echo)`).
    /// `max_wait_ms` bounds the breaker's cool-down like every other wait.
    pub fn check(&self, key: &str, max_wait_ms: u64) -> Result<(), Invalid> {
        let key = |k: &str| format!("{key}.{k}");
        let l = &self.limits;
        at_most(key("limits.deadline_ms"), l.deadline_ms, MAX_DEADLINE_MS)?;
        at_most(key("breaker.cool_down_ms"), self.breaker.cool_down_ms, max_wait_ms)?;
        let max_memory = crate::wasm::engine::MAX_PLUGIN_MEMORY_BYTES;
        if l.memory_bytes < MIN_PLUGIN_MEMORY || l.memory_bytes > max_memory {
            return Err(Invalid::new(
                key("limits.memory_bytes"),
                format!("must be between {MIN_PLUGIN_MEMORY} and {max_memory}"),
            ));
        }
        if l.deadline_ms == 0 || l.recycle_after_calls == 0 || l.fuel == Some(0) {
            return Err(Invalid::new(
                key("limits"),
                "deadline_ms, recycle_after_calls and fuel must be greater than 0",
            ));
        }
        if self.world == World::Filter && self.capabilities.contains(&Capability::Emit) {
            return Err(Invalid::new(key("capabilities"), "a filter cannot emit; it answers with a verdict"));
        }
        if !self.config.is_object() {
            return Err(Invalid::new(key("config"), "must be a table"));
        }
        Ok(())
    }
}
