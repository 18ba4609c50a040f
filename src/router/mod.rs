//! The core: an accepted event's life from admission to "finished". Every door hands
//! events to [`Pipeline::admit`] (admission: dedup, back-pressure, the durable append);
//! [`routes`] say which plugins an event goes through; the [`pipeline`]'s workers take
//! work from the priority [`queue`] and run filters and handlers (the events they hold are
//! `in_progress`: [`holding`]); [`settle`] adds up each
//! event's work within its budget, schedules [`retry`]s or makes dead letters, and
//! finishes the event; whoever waits for an event to finish is told ([`completion`]: RPC
//! callers of [`rpc`], workflow steps); live subscribers get every accepted event from the
//! [`bus`]; [`metrics`] renders the core's lines of `/metrics`. On a shared log (several
//! instances), the log hands each instance its work and tells it what the others did
//! through the core's `feed`. Work a door starts and must not leave half done when its caller
//! goes away ([`detach`]) is finished by the core, which waits for it at a graceful stop.
//!
//! The core imports the vocabulary (`crate::event`, `crate::schema`), the durable state
//! (`crate::store`) and the plugin host (`crate::wasm`); it never imports a door.

pub mod admit;
pub mod bus;
pub mod completion;
pub mod config;
pub mod detach;
mod feed;
pub mod holding;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod routes;
pub mod rpc;
pub mod settle;
pub mod sink;

pub use admit::{AcceptError, Producer};
pub use pipeline::Pipeline;
pub use routes::{Route, RouteHandler};
pub use sink::Sink;
