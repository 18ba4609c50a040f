//! `[sinks]` and `[[sinks.amqp]]`: exchanges routes deliver events to.

use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;
use std::collections::BTreeMap;

/// How long a delivery waits for the broker's confirm before the attempt fails (and is
/// retried): a healthy broker confirms within milliseconds; a worker is held meanwhile.
pub const DEFAULT_CONFIRM_TIMEOUT_MS: u64 = 5_000;
/// Largest `confirm_timeout_ms`: past a minute the worker is better freed and the event
/// retried with the route's back-off.
pub const MAX_CONFIRM_TIMEOUT_MS: u64 = 60_000;

/// `[sinks]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// `[[sinks.amqp]]`.
    pub amqp: Vec<AmqpSinkConfig>,
}

/// The documented systems' topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkPreset {
    /// Infrahub's bus: the topic exchange `infrahub.events`, routing key = the type without
    /// `infrahub/` (`infrahub/send.echo.request` -> `send.echo.request`).
    Infrahub,
}

/// `[[sinks.amqp]]`: one exchange on one broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// Names the sink in routes, dead letters, logs and metrics.
    pub name: String,
    /// `amqp://user:password@host:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    #[serde(default)]
    pub preset: Option<SinkPreset>,
    /// The exchange to publish to; `""`, the default exchange, delivers to the queue the
    /// routing key names.
    #[serde(default)]
    pub exchange: Option<String>,
    /// Declared with this type (`topic` unless set) when `declare`.
    #[serde(default)]
    pub exchange_type: Option<String>,
    /// Declare the exchange (durable) on connecting; false: it must exist. The default
    /// exchange is never declared.
    #[serde(default)]
    pub declare: Option<bool>,
    /// One routing key for every event; without it, the event's type minus `strip_prefix`.
    #[serde(default)]
    pub routing_key: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Headers added to every message (besides the CloudEvents AMQP binding's).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Refuse (and so retry, then dead-letter) a message no queue is bound to take, instead
    /// of letting the broker drop it. On by default.
    #[serde(default)]
    pub mandatory: Option<bool>,
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_ms: u64,
}

fn default_confirm_timeout() -> u64 {
    DEFAULT_CONFIRM_TIMEOUT_MS
}

/// A sink's settings with its preset applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub url: String,
    pub exchange: String,
    pub exchange_type: String,
    pub declare: bool,
    pub routing_key: Option<String>,
    pub strip_prefix: String,
    pub headers: BTreeMap<String, String>,
    pub mandatory: bool,
    pub confirm_timeout_ms: u64,
}

impl AmqpSinkConfig {
    pub fn resolve(&self) -> Resolved {
        let infrahub = self.preset == Some(SinkPreset::Infrahub);
        Resolved {
            name: self.name.clone(),
            url: self.url.clone(),
            exchange: self.exchange.clone().unwrap_or_else(|| {
                if infrahub {
                    "infrahub.events".into()
                } else {
                    String::new()
                }
            }),
            exchange_type: self.exchange_type.clone().unwrap_or_else(|| "topic".into()),
            declare: self.declare.unwrap_or(true),
            routing_key: self.routing_key.clone(),
            strip_prefix: self.strip_prefix.clone().unwrap_or_else(|| {
                if infrahub {
                    "infrahub/".into()
                } else {
                    String::new()
                }
            }),
            headers: self.headers.clone(),
            mandatory: self.mandatory.unwrap_or(true),
            confirm_timeout_ms: self.confirm_timeout_ms,
        }
    }

    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        crate::amqp::check_link(key, &self.name, &self.url)?;
        positive(format!("{key}.confirm_timeout_ms"), self.confirm_timeout_ms)?;
        at_most(format!("{key}.confirm_timeout_ms"), self.confirm_timeout_ms, MAX_CONFIRM_TIMEOUT_MS)
    }
}

impl SinksConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        for (i, s) in self.amqp.iter().enumerate() {
            s.check(&format!("sinks.amqp[{i}] ({})", s.name))?;
            if self.amqp[..i].iter().any(|o| o.name == s.name) {
                return Err(Invalid::new(format!("sinks.amqp[{i}].name"), "listed twice"));
            }
        }
        Ok(())
    }

    /// Every sink's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.amqp.iter().map(|s| s.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> AmqpSinkConfig {
        toml::from_str(toml).expect("a sink")
    }

    #[test]
    fn the_infrahub_preset_publishes_to_its_bus_by_type() {
        let r = parse("name = \"ih\"\nurl = \"amqp://x\"\npreset = \"infrahub\"").resolve();
        assert_eq!(
            (r.exchange.as_str(), r.exchange_type.as_str(), r.strip_prefix.as_str()),
            ("infrahub.events", "topic", "infrahub/")
        );
        assert!(r.declare && r.mandatory && r.routing_key.is_none());
        let plain = parse("name = \"q\"\nurl = \"amqp://x\"").resolve();
        assert_eq!(
            (plain.exchange.as_str(), plain.strip_prefix.as_str()),
            ("", ""),
            "the default exchange, the full type"
        );
    }

    #[test]
    fn each_refused_setting_is_named_by_its_key() {
        for (toml, key) in [
            ("name = \"a b\"\nurl = \"amqp://x\"", "s.name"),
            ("name = \"a\"\nurl = \"http://x\"", "s.url"),
            ("name = \"a\"\nurl = \"amqp://x\"\nconfirm_timeout_ms = 0", "s.confirm_timeout_ms"),
            ("name = \"a\"\nurl = \"amqp://x\"\nconfirm_timeout_ms = 600000", "s.confirm_timeout_ms"),
        ] {
            let refused = parse(toml).check("s").expect_err(key);
            assert!(refused.to_string().starts_with(key), "{key}: {refused}");
        }
    }
}
