//! The core: an accepted event's life from admission to "finished". Every door hands
//! events to [`Pipeline::accept`] (admission: dedup, back-pressure, the durable append);
//! [`routes`] say which plugins an event goes through; the [`pipeline`]'s workers take
//! work from the priority [`queue`], run filters and handlers, and settle each event
//! (outcome, [`retry`] scheduling, dead letters); whoever waits for an event to finish
//! (RPC callers in [`rpc`], workflow steps) is told; live subscribers get every accepted
//! event from the [`bus`].
//!
//! The core imports the vocabulary (`crate::event`, `crate::schema`), the durable state
//! (`crate::store`) and the plugin host (`crate::wasm`); it never imports a door.

pub mod admit;
pub mod bus;
pub mod completion;
pub mod config;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod routes;
pub mod rpc;

pub use admit::{AcceptError, Producer};
pub use pipeline::Pipeline;
pub use routes::Route;
