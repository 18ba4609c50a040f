//! Sources: doors through which producers hand events to the router over a message broker
//! instead of HTTP. Each reads its broker's messages, makes events of them with
//! [`crate::router::admit::prepare`] (validated like HTTP events), admits them through
//! [`crate::router::Pipeline::admit`] and acknowledges a message only once its event is
//! durable; a message that is not a valid event is kept as a rejected record with its
//! errors, never dropped.
//!
//! - [`nats`]: producers publish straight to the JetStream subjects `<prefix>.in.<type>`.
//! - [`amqp`]: RabbitMQ queues (Infrahub's topology and RPC, Idem's evbus-pika runs).
//! - [`config`]: the `[sources]` section.

pub mod amqp;
pub mod config;
pub mod nats;

use crate::router::admit::Refusal;
use serde_json::{json, Value};

/// Why a broker's message was not an event: the `error` of its rejected record (the same
/// stable codes as HTTP's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownType,
    MalformedJson,
    ValidationFailed,
    TooDeep,
    IdTooLong,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownType => "unknown_type",
            Reason::MalformedJson => "malformed_json",
            Reason::ValidationFailed => "validation_failed",
            Reason::TooDeep => "too_deep",
            Reason::IdTooLong => "id_too_long",
        }
    }

    /// A refusal of [`crate::router::admit::prepare`] as a reason and its errors (the HTTP
    /// error body's shape: violations with their JSON pointers, or one message).
    pub fn of(refusal: Refusal) -> (Reason, Value) {
        let message = refusal.to_string();
        match refusal {
            Refusal::NotJson(_) => (Reason::MalformedJson, json!([{ "message": message }])),
            Refusal::Invalid { errors, .. } => {
                (Reason::ValidationFailed, serde_json::to_value(errors).unwrap_or(Value::Null))
            }
            Refusal::TooDeep { .. } => (Reason::TooDeep, json!([{ "message": message }])),
            Refusal::IdTooLong { .. } => (Reason::IdTooLong, json!([{ "message": message }])),
        }
    }
}
