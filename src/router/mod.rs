//! Routing of accepted events. For now an accepted event goes to the live subscribers
//! ([`bus`]); the Wasm filter/handler pipeline plugs in here.

pub mod bus;
pub mod pattern;

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
    /// The CloudEvents `source`, when the event came as a CloudEvent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub data: Value,
}

/// Where accepted events go. Today: straight to the live subscribers.
pub struct Pipeline {
    pub bus: bus::Bus,
}

impl Pipeline {
    pub fn new(subscriber_buffer: usize) -> Self {
        Self { bus: bus::Bus::new(subscriber_buffer) }
    }

    pub fn accept(&self, event: Event) {
        self.bus.publish(&event);
    }
}
