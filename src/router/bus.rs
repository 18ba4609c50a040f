//! Live fan-out of routed events to subscribers (WebSocket clients).
//!
//! A `tokio::sync::broadcast` ring of fixed capacity: publishing never waits, and memory is
//! bounded by the ring whatever the subscribers do. A subscriber that falls more than the
//! capacity behind loses the oldest frames and is told how many it missed
//! ([`broadcast::error::RecvError::Lagged`]); it never slows ingestion. Each event is
//! serialised once, and only when someone is listening.

use crate::event::Event;
use crate::name::Name;
use axum::extract::ws::Utf8Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// An event as subscribers receive it: the type (for matching), the JSON text frame, and
/// the data alone (shared, not copied) for listeners that forward only the data.
#[derive(Debug)]
pub struct Frame {
    pub type_name: Name,
    pub json: Utf8Bytes,
    pub data: crate::event::Body,
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Frame>>,
    /// Live [`Subscription`]s. Why not `Sender::receiver_count`: it takes the channel's
    /// lock, and every event of every thread asked it, so that lock's cache line went back
    /// and forth between the cores while nobody subscribed. This one is read, not written.
    subscribers: Arc<AtomicUsize>,
}

/// A subscriber's end of the bus (a `broadcast::Receiver` it derefs to), counted while it
/// lives.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Frame>>,
    subscribers: Arc<AtomicUsize>,
}

impl std::ops::Deref for Subscription {
    type Target = broadcast::Receiver<Arc<Frame>>;
    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl std::ops::DerefMut for Subscription {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0, subscribers: Arc::default() }
    }

    pub fn publish(&self, event: &Event) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let json = serde_json::to_string(event).expect("events always serialise");
        // A send error only means every receiver left in the meantime.
        let frame = Frame { type_name: event.type_name, json: json.into(), data: event.data.clone() };
        let _ = self.tx.send(Arc::new(frame));
    }

    /// A new subscriber: it receives every event published from now on.
    pub fn subscribe(&self) -> Subscription {
        // Counted before the receiver exists, so no event published after this returns is
        // skipped for want of a subscriber.
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription { rx: self.tx.subscribe(), subscribers: self.subscribers.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bus counts its subscribers itself: a subscriber gets the events published while it
    /// lives (were it not counted, `publish` would skip them as unheard), and its end uncounts
    /// it.
    #[test]
    fn subscribers_are_counted_while_they_live() {
        let bus = Bus::new(8);
        let event = crate::router::pipeline::tests::event;
        bus.publish(&event("before"));
        let mut sub = bus.subscribe();
        assert_eq!(bus.subscribers.load(Ordering::Relaxed), 1);
        bus.publish(&event("after"));
        let frame = sub.try_recv().expect("the event published after subscribing");
        assert!(frame.json.as_str().contains(r#""id":"after""#), "{}", frame.json.as_str());
        assert!(sub.try_recv().is_err(), "nothing else: the first event had no subscriber");
        drop(sub);
        assert_eq!(bus.subscribers.load(Ordering::Relaxed), 0);
    }
}
