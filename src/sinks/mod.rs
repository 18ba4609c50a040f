//! Sinks: doors through which routed events leave the router for a message broker. Each
//! implements the core's [`crate::router::Sink`]: a route names it (`sinks = ["name"]`),
//! a worker hands it a kept event, and the event is finished only once the broker
//! confirmed it; a broker that is down makes the route retry with its back-off, then a
//! dead letter that can be replayed once the broker is back: never a silent drop.
//!
//! - [`amqp`]: RabbitMQ exchanges, with publisher confirms.
//! - [`config`]: the `[sinks]` section.

pub mod amqp;
pub mod config;
