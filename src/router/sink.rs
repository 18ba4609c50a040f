//! Sinks: destinations outside the router that a route hands its events to (an AMQP
//! exchange today). The core defines what a sink must do and treats a sink like a handler
//! step of its route: called by a worker, charged to the event's budget, retried with the
//! route's back-off when the destination is down, dead-lettered after the last attempt.
//! The doors implement it (`crate::sinks`), so the core never imports a transport.

use crate::event::{Event, Failure};

/// A destination a route delivers events to.
pub trait Sink: Send + Sync {
    /// Names the sink in routes (`sinks = ["name"]`), dead letters and metrics.
    fn name(&self) -> &str;

    /// Delivers one event and returns once the destination has confirmed it (so an event
    /// is finished only when its delivery is safe on the other side). Called on a pipeline
    /// worker thread, never inside the async runtime; blocks at most the sink's own
    /// deadline. A failure that may pass (the destination is down or slow) is retryable.
    fn deliver(&self, event: &Event) -> Result<(), Failure>;
}
