//! Routing of accepted events: the subscriber [`bus`], route [`pattern`]s, the plugin
//! [`pipeline`] and the [`dead_letters`].

pub mod bus;
pub mod dead_letters;
pub mod pattern;
pub mod pipeline;

pub use pipeline::{Overloaded, Pipeline};

use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// An event that passed validation and was given an id.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: Arc<str>,
    /// The time the producer gave (CloudEvents `time`) or the time it was accepted;
    /// formatted (RFC 3339) only when someone reads it.
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    /// 1 (lowest) to 5 (highest).
    pub priority: u8,
    /// The CloudEvents `source`, or `plugin:<name>` for events a plugin emitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub data: Value,
    /// How many plugin emissions led to this event (0 for ingested ones).
    #[serde(skip_serializing_if = "is_zero")]
    pub hops: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}
