//! `[sources]`: which broker sources run.

use serde::Deserialize;

/// `[sources]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// `[sources.nats]`.
    pub nats: NatsSourceConfig,
    /// `[[sources.amqp]]`: RabbitMQ queues to consume.
    pub amqp: Vec<super::amqp::config::AmqpSourceConfig>,
}

impl SourcesConfig {
    pub fn check(&self) -> Result<(), crate::settings::Invalid> {
        for (i, s) in self.amqp.iter().enumerate() {
            s.check(&format!("sources.amqp[{i}] ({})", s.name))?;
            if self.amqp[..i].iter().any(|o| o.name == s.name) {
                return Err(crate::settings::Invalid::new(format!("sources.amqp[{i}].name"), "listed twice"));
            }
        }
        Ok(())
    }
}

/// `[sources.nats]`: producers publish to `<prefix>.in.<type>` on the NATS of
/// `[store.nats]` (its URLs, credentials and subject prefix).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSourceConfig {
    pub enabled: bool,
}
