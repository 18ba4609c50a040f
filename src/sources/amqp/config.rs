//! `[[sources.amqp]]`: a queue to consume, the topology to declare, and how a message
//! becomes an event type. Presets fill in the documented systems' topologies.

use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Unacknowledged messages the broker sends ahead: enough to keep admission busy while
/// earlier ones wait for their durable append.
pub const DEFAULT_PREFETCH: u16 = 64;
/// How long a request with `reply_to` waits for its response event before it is given up
/// (the request itself was accepted; only the answer is not sent).
pub const DEFAULT_REPLY_TIMEOUT_MS: u64 = 30_000;
/// Infrahub's priority queue has priorities 1..5 (`x-max-priority` 5).
pub const INFRAHUB_MAX_PRIORITY: u8 = 5;
/// AMQP 0-9-1 priorities are 0..255; RabbitMQ advises at most 10 (each costs an internal queue).
pub const MAX_QUEUE_PRIORITY: u8 = 10;

/// The documented systems' topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Exchange `infrahub.events` (topic), queue `infrahub.rpcs` (`x-max-priority` 5) bound
    /// with Infrahub's routing keys ([`INFRAHUB_BINDINGS`]); the routing key is the type; requests
    /// with `reply_to` are answered with their response event.
    Infrahub,
    /// One queue with every event of an Idem run (evbus-pika): `tags.type` tells them apart.
    Idem,
}

/// How a message becomes an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeFrom {
    /// `type_prefix` + the routing key (`send.echo.request` -> `infrahub/send.echo.request`).
    #[default]
    RoutingKey,
    /// Always `type`.
    Fixed,
    /// The body's field at `type_field` (dots between keys), through `type_map`, else
    /// `type_prefix` + its value.
    Body,
    /// The CloudEvents AMQP binding: the `cloudEvents:type` (or `cloudEvents_type`,
    /// `ce-type`) application property.
    Cloudevents,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Names the source in logs, metrics and rejected records.
    pub name: String,
    /// `amqp://user:password@host:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The queue to consume (the preset's when it has one).
    #[serde(default)]
    pub queue: Option<String>,
    /// Declare the queue (durable) and the exchange and bindings; false: they must exist.
    #[serde(default = "yes")]
    pub declare: bool,
    /// `x-max-priority` of a declared queue.
    #[serde(default)]
    pub max_priority: Option<u8>,
    /// An exchange (declared, `exchange_type`) whose `bindings` routing keys feed the queue.
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default = "topic")]
    pub exchange_type: String,
    #[serde(default)]
    pub bindings: Vec<String>,
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    #[serde(default)]
    pub type_from: Option<TypeFrom>,
    /// With `type_from = "fixed"`.
    #[serde(default, rename = "type")]
    pub fixed_type: Option<String>,
    #[serde(default)]
    pub type_prefix: Option<String>,
    /// With `type_from = "body"`: where the type is (`tags.type`).
    #[serde(default)]
    pub type_field: Option<String>,
    /// With `type_from = "body"`: the field's value -> the event type.
    #[serde(default)]
    pub type_map: BTreeMap<String, String>,
    /// Answer a request that has `reply_to` with its response event (Infrahub's RPC).
    #[serde(default)]
    pub reply: Option<bool>,
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout_ms: u64,
    /// Where a message that is not a valid event goes, with its errors in headers; without
    /// one it is kept in `<store dir>/rejected-<name>.jsonl`.
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
}

fn yes() -> bool {
    true
}
fn topic() -> String {
    "topic".into()
}
fn default_prefetch() -> u16 {
    DEFAULT_PREFETCH
}
fn default_reply_timeout() -> u64 {
    DEFAULT_REPLY_TIMEOUT_MS
}

/// A source's settings with its preset applied: what the source runs with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub url: String,
    pub queue: String,
    pub declare: bool,
    pub max_priority: Option<u8>,
    pub exchange: Option<(String, String)>,
    pub bindings: Vec<String>,
    pub prefetch: u16,
    pub type_from: TypeFrom,
    pub fixed_type: Option<String>,
    pub type_prefix: String,
    pub type_field: Vec<String>,
    pub type_map: BTreeMap<String, String>,
    pub reply: bool,
    pub reply_timeout_ms: u64,
    pub dead_letter_exchange: Option<String>,
}

/// Idem's `tags.type` values -> the catalogue's Idem profiles (evbus-pika's bodies carry no
/// profile; measured with one routing key per profile, idem 25.0.1). Types not listed
/// (`esm-metadata`, from the undocumented `idem-esm` profile) are kept as rejected records
/// with the reason.
pub const IDEM_TYPES: &[(&str, &str)] = &[
    ("state-status", "idem/idem-status"),
    ("state-high-data", "idem/idem-high"),
    ("state-low-data", "idem/idem-low"),
    ("state-chunk", "idem/idem-chunk"),
    ("state-pre", "idem/idem-state"),
    ("state-post", "idem/idem-state"),
    ("state-result", "idem/idem-run"),
    ("exec-post", "idem/idem-exec"),
];

/// The routing keys Infrahub binds its `infrahub.rpcs` queue with (infrahub 0.16,
/// `services/adapters/message_bus/rabbitmq.py`).
pub const INFRAHUB_BINDINGS: &[&str] = &[
    "check.*.*",
    "event.*.*",
    "finalize.*.*",
    "git.*.*",
    "refresh.webhook.*",
    "request.*.*",
    "send.*.*",
    "schema.*.*",
    "transform.*.*",
    "trigger.*.*",
];

impl AmqpSourceConfig {
    /// Applies the preset.
    pub fn resolve(&self) -> Resolved {
        let infrahub = self.preset == Some(Preset::Infrahub);
        let idem = self.preset == Some(Preset::Idem);
        let default_queue = match self.preset {
            Some(Preset::Infrahub) => "infrahub.rpcs",
            Some(Preset::Idem) => "idem",
            None => "",
        };
        let exchange = self.exchange.clone().or_else(|| infrahub.then(|| "infrahub.events".to_string()));
        Resolved {
            name: self.name.clone(),
            url: self.url.clone(),
            queue: self.queue.clone().unwrap_or_else(|| default_queue.to_string()),
            declare: self.declare,
            max_priority: self.max_priority.or(infrahub.then_some(INFRAHUB_MAX_PRIORITY)),
            exchange: exchange.map(|e| (e, self.exchange_type.clone())),
            bindings: if self.bindings.is_empty() && infrahub {
                INFRAHUB_BINDINGS.iter().map(|k| k.to_string()).collect()
            } else {
                self.bindings.clone()
            },
            prefetch: self.prefetch,
            type_from: self.type_from.unwrap_or(if idem { TypeFrom::Body } else { TypeFrom::RoutingKey }),
            fixed_type: self.fixed_type.clone(),
            type_prefix: self.type_prefix.clone().unwrap_or_else(|| match self.preset {
                Some(Preset::Infrahub) => "infrahub/".into(),
                Some(Preset::Idem) => "idem/".into(),
                None => String::new(),
            }),
            type_field: self
                .type_field
                .as_deref()
                .unwrap_or(if idem { "tags.type" } else { "type" })
                .split('.')
                .map(String::from)
                .collect(),
            type_map: if self.type_map.is_empty() && idem {
                IDEM_TYPES.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
            } else {
                self.type_map.clone()
            },
            reply: self.reply.unwrap_or(infrahub),
            reply_timeout_ms: self.reply_timeout_ms,
            dead_letter_exchange: self.dead_letter_exchange.clone(),
        }
    }

    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        let bad = |field: &str, message: &str| Invalid::new(format!("{key}.{field}"), message);
        crate::amqp::check_link(key, &self.name, &self.url)?;
        if self.preset.is_none() && self.queue.as_deref().unwrap_or("").is_empty() {
            return Err(bad("queue", "name the queue to consume (or use a preset)"));
        }
        positive(format!("{key}.prefetch"), u64::from(self.prefetch))?;
        positive(format!("{key}.reply_timeout_ms"), self.reply_timeout_ms)?;
        if let Some(p) = self.max_priority {
            at_most(format!("{key}.max_priority"), p, MAX_QUEUE_PRIORITY)?;
        }
        match self.type_from {
            Some(TypeFrom::Fixed) if self.fixed_type.is_none() => {
                Err(bad("type", "type_from = \"fixed\" needs `type`"))
            }
            Some(TypeFrom::Body) if self.type_field.is_none() && self.preset != Some(Preset::Idem) => {
                Err(bad("type_field", "type_from = \"body\" needs `type_field` (e.g. \"tags.type\")"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> AmqpSourceConfig {
        toml::from_str(toml).expect("a source")
    }

    #[test]
    fn presets_fill_in_the_documented_topologies() {
        let infrahub = parse("name = \"ih\"\nurl = \"amqp://localhost\"\npreset = \"infrahub\"\n").resolve();
        let keys: Vec<String> = INFRAHUB_BINDINGS.iter().map(|k| k.to_string()).collect();
        assert_eq!(infrahub.queue, "infrahub.rpcs");
        assert_eq!(infrahub.max_priority, Some(5));
        assert_eq!(infrahub.exchange, Some(("infrahub.events".into(), "topic".into())));
        assert_eq!(
            (infrahub.bindings, infrahub.type_from, infrahub.type_prefix.as_str(), infrahub.reply),
            (keys, TypeFrom::RoutingKey, "infrahub/", true)
        );
        let idem =
            parse("name = \"idem\"\nurl = \"amqp://localhost\"\npreset = \"idem\"\nqueue = \"runs\"\n").resolve();
        assert_eq!(
            (idem.queue.as_str(), idem.type_from, idem.type_field.clone()),
            ("runs", TypeFrom::Body, vec!["tags".to_string(), "type".to_string()])
        );
        assert_eq!(idem.type_map["state-status"], "idem/idem-status");
        assert!(!idem.reply);
    }

    #[test]
    fn each_refused_setting_is_named_by_its_key() {
        for (toml, key) in [
            ("name = \"a b\"\nurl = \"amqp://x\"\nqueue = \"q\"", "s.name"),
            ("name = \"a\"\nurl = \"http://x\"\nqueue = \"q\"", "s.url"),
            ("name = \"a\"\nurl = \"amqp://x\"", "s.queue"),
            ("name = \"a\"\nurl = \"amqp://x\"\nqueue = \"q\"\nprefetch = 0", "s.prefetch"),
            ("name = \"a\"\nurl = \"amqp://x\"\nqueue = \"q\"\nmax_priority = 200", "s.max_priority"),
            ("name = \"a\"\nurl = \"amqp://x\"\nqueue = \"q\"\ntype_from = \"fixed\"", "s.type"),
            ("name = \"a\"\nurl = \"amqp://x\"\nqueue = \"q\"\ntype_from = \"body\"", "s.type_field"),
        ] {
            let refused = parse(toml).check("s").expect_err(key);
            assert!(refused.to_string().starts_with(key), "{key}: {refused}");
        }
    }
}
