//! `[pipeline]` and `[[route]]`: the workers, queue, hop limit and per-event budget, and
//! which events go through which plugins with what retries. Owned by the router core.

use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;

/// Events waiting for the pipeline workers; past it ingestion answers 503 instead of
/// growing memory.
pub const DEFAULT_QUEUE: usize = 65_536;

/// How long a producer waits for room in a full queue before it is answered 503: long
/// enough to ride out a burst (the workers make room at their own pace, so producers are
/// slowed to it instead of refused), short next to the usual 5-30 s client timeouts.
pub const DEFAULT_QUEUE_WAIT_MS: u64 = 1_000;

/// Largest `pipeline.queue_wait_ms`: a producer held longer than this is better told to
/// come back (503 + `Retry-After`) than kept on a connection.
pub const MAX_QUEUE_WAIT_MS: u64 = 60_000;

/// How many times an event may be re-emitted through plugins (A emits for B emits for A...).
pub const DEFAULT_HOP_LIMIT: u8 = 8;

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

pub const DEFAULT_RETRY_BASE_MS: u64 = 200;

pub const DEFAULT_RETRY_MAX_MS: u64 = 60_000;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Threads running plugins; 0 means one per core.
    pub workers: usize,
    pub queue: usize,
    /// How long (ms) a producer waits for room in a full queue before 503; 0 refuses at
    /// once.
    pub queue_wait_ms: u64,
    pub hop_limit: u8,
    /// What one accepted event may cost, all hops and retries together; past it the event is
    /// dead-lettered with kind `root_budget` and its remaining work is skipped.
    pub root_budget: RootBudget,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            queue: DEFAULT_QUEUE,
            queue_wait_ms: DEFAULT_QUEUE_WAIT_MS,
            hop_limit: DEFAULT_HOP_LIMIT,
            root_budget: RootBudget::default(),
        }
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
    /// Sinks the event is delivered to after the handlers (`[[sinks.amqp]]` names); a sink
    /// that cannot deliver is retried like a handler, then dead-lettered.
    #[serde(default)]
    pub sinks: Vec<String>,
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

impl PipelineConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        positive("pipeline.queue", self.queue as u64)?;
        at_most("pipeline.queue_wait_ms", self.queue_wait_ms, MAX_QUEUE_WAIT_MS)?;
        at_most("pipeline.hop_limit", self.hop_limit, MAX_HOP_LIMIT)?;
        let b = &self.root_budget;
        for (k, v) in [("calls", b.calls), ("emits", b.emits), ("bytes", b.bytes)] {
            positive(format!("pipeline.root_budget.{k}"), v)?;
        }
        Ok(())
    }
}

impl RouteConfig {
    /// Checks this route alone (that its plugins exist is the composition's check);
    /// `key` is how the user names it (`route[2]`).
    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        let key = |k: &str| format!("{key}.{k}");
        let r = &self.retry;
        at_most(key("retry.max_attempts"), r.max_attempts, MAX_ATTEMPTS)?;
        at_most(key("retry.base_ms"), r.base_ms, MAX_WAIT_MS)?;
        at_most(key("retry.max_ms"), r.max_ms, MAX_WAIT_MS)?;
        if r.max_attempts == 0 || r.base_ms == 0 || r.max_ms < r.base_ms {
            return Err(Invalid::new(key("retry"), "max_attempts and base_ms must be > 0, max_ms >= base_ms"));
        }
        if self.glob.is_some() == self.regex.is_some() {
            return Err(Invalid::new(key("match"), "set exactly one of `match` (glob) or `regex`"));
        }
        Ok(())
    }
}
