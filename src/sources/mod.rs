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
