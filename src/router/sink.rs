//! Sinks: destinations outside the router that a route hands its events to (an AMQP
//! exchange today). The core defines what a sink must do and treats a sink like a handler
//! step of its route: started by a worker, charged to the event's budget, retried with the
//! route's back-off when the destination is down, dead-lettered after the last attempt. A
//! delivery in flight is pending work of its event (as a retry is): the event is finished
//! when the destination's answer has been settled.
//! The doors implement it (`crate::sinks`), so the core never imports a transport.

use crate::event::{Event, Failure};

/// Called once with how a delivery went: `Ok` once the destination confirmed it.
pub type Done = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// A destination a route delivers events to.
pub trait Sink: Send + Sync {
    /// Names the sink in routes (`sinks = ["name"]`), dead letters and metrics.
    fn name(&self) -> &str;

    /// Starts delivering `event` and returns at once; calls `done` when the destination has
    /// confirmed it (so an event is finished only when its delivery is safe on the other
    /// side) or the attempt failed, within the sink's own deadline. A failure that may pass
    /// (the destination is down or slow) is retryable. The worker that started it goes on
    /// meanwhile: deliveries are pipelined, not one round trip per worker. `done` may run on
    /// any thread and must not block.
    fn deliver(&self, event: Event, done: Done);
}
