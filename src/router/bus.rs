//! Live fan-out of routed events to subscribers (WebSocket clients).
//!
//! A `tokio::sync::broadcast` ring of fixed capacity: publishing never waits, and memory is
//! bounded by the ring whatever the subscribers do. A subscriber that falls more than the
//! capacity behind loses the oldest frames and is told how many it missed
//! ([`broadcast::error::RecvError::Lagged`]); it never slows ingestion. Each event is
//! serialised once, and only when someone is listening.

use crate::event::Event;
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use tokio::sync::broadcast;

/// An event as subscribers receive it: the type (for matching), the JSON text frame, and
/// the data alone (shared, not copied) for listeners that forward only the data.
#[derive(Debug)]
pub struct Frame {
    pub type_name: Arc<str>,
    pub json: Utf8Bytes,
    pub data: crate::event::Body,
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Frame>>,
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0 }
    }

    pub fn publish(&self, event: &Event) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let json = serde_json::to_string(event).expect("events always serialise");
        // A send error only means every receiver left in the meantime.
        let frame = Frame { type_name: event.type_name.clone(), json: json.into(), data: event.data.clone() };
        let _ = self.tx.send(Arc::new(frame));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
    }
}
