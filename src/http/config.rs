//! `[ingest]`, `[subscribers]` and `[auth]`: the HTTP doors' limits and tokens.

use crate::event::pattern::TypePattern;
use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;

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

/// Largest `ingest.idempotency_window_secs` (30 days): it is added to the clock, and
/// memory for it is capped anyway (see `store::status::MAX_IDEMPOTENCY_KEYS`).
pub const MAX_IDEMPOTENCY_WINDOW_SECS: u64 = 30 * 24 * 3600;

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

/// Tokens shorter than this are refused at start-up: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

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

impl IngestConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        positive("ingest.max_body_bytes", self.max_body_bytes as u64)?;
        positive("ingest.max_batch_bytes", self.max_batch_bytes as u64)?;
        positive("ingest.max_batch_items", self.max_batch_items as u64)?;
        let max_data = crate::store::segment::MAX_EVENT_DATA_BYTES;
        if self.max_body_bytes > max_data {
            return Err(Invalid::new(
                "ingest.max_body_bytes",
                format!("at most {max_data} (the event log's largest record, less room for the event's fields)"),
            ));
        }
        at_most("ingest.idempotency_window_secs", self.idempotency_window_secs, MAX_IDEMPOTENCY_WINDOW_SECS)
    }
}

impl SubscriberConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        positive("subscribers.buffer", self.buffer as u64)?;
        positive("subscribers.max_connections", self.max_connections as u64)
    }
}

impl AuthConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        for (key, token) in [
            ("auth.admin_token", &self.admin_token),
            ("auth.subscribe_token", &self.subscribe_token),
            ("auth.fixinventory_token", &self.fixinventory_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < MIN_TOKEN_LEN) {
                return Err(Invalid::new(key, format!("at least {MIN_TOKEN_LEN} characters")));
            }
        }
        for (i, t) in self.ingest.iter().enumerate() {
            let key = |k: &str| format!("auth.ingest[{i}].{k}");
            if t.token.len() < MIN_TOKEN_LEN {
                return Err(Invalid::new(key("token"), format!("at least {MIN_TOKEN_LEN} characters")));
            }
            if t.types.is_empty() {
                return Err(Invalid::new(key("types"), "list the event types (globs) it may send"));
            }
            TypePattern::parse(&t.types.join(",")).map_err(|e| Invalid::new(key("types"), e.to_string()))?;
            let prefix = crate::router::rpc::RESPONSE_PREFIX;
            if let Some(a) = t.answers.iter().find(|a| !a.starts_with(prefix)) {
                return Err(Invalid::new(key("answers"), format!("`{a}` is not a `{prefix}*` type")));
            }
            TypePattern::parse(&t.answers.join(",")).map_err(|e| Invalid::new(key("answers"), e.to_string()))?;
        }
        Ok(())
    }
}
