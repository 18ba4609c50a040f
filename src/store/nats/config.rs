//! `[store.nats]`: where the shared log lives when `store.backend = "nats"`.

use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;
use std::path::PathBuf;

/// How long an instance may hold an event without a word before JetStream hands it to
/// another (the instance sends progress every third of it while it works).
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Shortest ack wait: progress is sent every third of it, and a shorter one would flood the
/// server with progress acks for every held event.
pub const MIN_ACK_WAIT_MS: u64 = 1_000;
/// Events handed out and not yet finished, per priority level, across the cluster: bounds
/// what a dead instance can hold up until its ack wait ends.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 10_000;
/// How long the stream keeps events (and the status bucket their statuses): finished
/// events stay readable for a week, as the local log's status window.
pub const DEFAULT_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
/// JetStream's own limit on replicas.
pub const MAX_REPLICAS: usize = 5;
/// How long an append normally takes at most (the NATS client gives each request 5 s, and an
/// append makes a few in a row). An idempotency key older than this whose event is not in the
/// stream was most likely left by an append that failed and could not give it back (the
/// server went away meanwhile): it is cleared when met, so that a retry of its id is stored
/// instead of answered as a duplicate. Not a hard bound: a publish the client sent before a
/// disconnect can still reach the server after it reconnects; landing more than JetStream's
/// duplicate window (2 min) after the retry, the event is then stored twice.
pub const DEFAULT_CLAIM_TIMEOUT_MS: u64 = 30_000;

/// `[store.nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Servers of one NATS cluster; the client connects to any and moves on when one dies.
    pub urls: Vec<String>,
    /// The JetStream stream of accepted events; the KV buckets are named after it
    /// (`<stream>_STATUS`, `<stream>_KEYS`, `<stream>_DEAD`, `<stream>_CONFIG`,
    /// `<stream>_LEASES`) and the object store `<stream>_PLUGINS`.
    pub stream: String,
    /// Copies of the stream and buckets in a NATS cluster (1 on a single server).
    pub replicas: usize,
    /// First token of every subject the routers use (`<prefix>.ev.<priority>.<id>`, the
    /// NATS source's `<prefix>.in.<type>`).
    pub subject_prefix: String,
    /// A token the server requires (`authorization { token }`).
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// Require TLS (also implied by `tls://` URLs).
    pub tls: bool,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// See [`DEFAULT_ACK_WAIT_MS`].
    pub ack_wait_ms: u64,
    /// See [`DEFAULT_MAX_ACK_PENDING`].
    pub max_ack_pending: i64,
    /// See [`DEFAULT_MAX_AGE_SECS`].
    pub max_age_secs: u64,
    /// See [`DEFAULT_CLAIM_TIMEOUT_MS`].
    pub claim_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            stream: "EVENTYARD".into(),
            replicas: 1,
            subject_prefix: "eventyard".into(),
            token: None,
            credentials: None,
            tls: false,
            ca: None,
            ack_wait_ms: DEFAULT_ACK_WAIT_MS,
            max_ack_pending: DEFAULT_MAX_ACK_PENDING,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            claim_timeout_ms: DEFAULT_CLAIM_TIMEOUT_MS,
        }
    }
}

/// JetStream names: letters, digits, `-` and `_` (they become subject tokens).
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NatsConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        if self.urls.is_empty() {
            return Err(Invalid::new("store.nats.urls", "give at least one server, e.g. nats://127.0.0.1:4222"));
        }
        if !is_name(&self.stream) {
            return Err(Invalid::new("store.nats.stream", "letters, digits, `-` and `_` only"));
        }
        if !is_name(&self.subject_prefix) {
            return Err(Invalid::new(
                "store.nats.subject_prefix",
                "one subject token: letters, digits, `-` and `_` only",
            ));
        }
        positive("store.nats.replicas", self.replicas as u64)?;
        at_most("store.nats.replicas", self.replicas as u64, MAX_REPLICAS as u64)?;
        if self.ack_wait_ms < MIN_ACK_WAIT_MS {
            return Err(Invalid::new("store.nats.ack_wait_ms", format!("at least {MIN_ACK_WAIT_MS}")));
        }
        positive("store.nats.max_ack_pending", self.max_ack_pending.max(0) as u64)?;
        positive("store.nats.max_age_secs", self.max_age_secs)?;
        positive("store.nats.claim_timeout_ms", self.claim_timeout_ms)?;
        if self.claim_timeout_ms >= self.max_age_secs.saturating_mul(1000) {
            return Err(Invalid::new("store.nats.claim_timeout_ms", "must be shorter than store.nats.max_age_secs"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refused_setting_is_named_by_its_key() {
        let ok = NatsConfig::default();
        assert!(ok.check().is_ok());
        let cases: [(&str, NatsConfig); 8] = [
            ("store.nats.claim_timeout_ms", NatsConfig { claim_timeout_ms: 0, ..ok.clone() }),
            ("store.nats.claim_timeout_ms", NatsConfig { max_age_secs: 30, ..ok.clone() }),
            ("store.nats.urls", NatsConfig { urls: vec![], ..ok.clone() }),
            ("store.nats.stream", NatsConfig { stream: "a.b".into(), ..ok.clone() }),
            ("store.nats.subject_prefix", NatsConfig { subject_prefix: "x>".into(), ..ok.clone() }),
            ("store.nats.replicas", NatsConfig { replicas: 6, ..ok.clone() }),
            ("store.nats.ack_wait_ms", NatsConfig { ack_wait_ms: 10, ..ok.clone() }),
            ("store.nats.max_ack_pending", NatsConfig { max_ack_pending: 0, ..ok.clone() }),
        ];
        for (key, config) in cases {
            let refused = config.check().expect_err(key);
            assert!(refused.to_string().contains(key), "{key}: {refused}");
        }
    }
}
