//! `[sources]`: which broker sources run.

use serde::Deserialize;

/// `[sources]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// `[sources.nats]`.
    pub nats: NatsSourceConfig,
}

/// `[sources.nats]`: producers publish to `<prefix>.in.<type>` on the NATS of
/// `[store.nats]` (its URLs, credentials and subject prefix).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSourceConfig {
    pub enabled: bool,
}
