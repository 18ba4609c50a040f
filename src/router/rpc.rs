//! Infrahub's request/response over the router (`POST /v1/rpc/{type}`): a caller waits for
//! the response event whose `meta.correlation_id` is its request's.
//!
//! The pipeline tells [`Waiters`] about every accepted or emitted `infrahub/response/*`
//! event; the caller also watches its request finish (`crate::router::completion`), and
//! whichever comes first, the response winning a tie, is the answer. Nothing is done per
//! event while nobody waits (one atomic load).

use crate::event::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// The type prefix of Infrahub's response events.
pub const RESPONSE_PREFIX: &str = "infrahub/response/";

/// Longest correlation id a caller may give (it is a key of the waiters' map and is copied
/// into the request event): the router's id cap. Longer: 400 `id_too_long`.
pub const MAX_CORRELATION_ID_BYTES: usize = crate::event::MAX_ID_BYTES;

#[derive(Default)]
pub struct Waiters {
    /// Correlation id -> (registration number, the caller's channel).
    waiting: Mutex<HashMap<String, (u64, oneshot::Sender<Event>)>>,
    count: AtomicUsize,
    next: AtomicU64,
}

/// A caller's place among the waiters: dropping it (the caller got its answer, gave up, or
/// disconnected, so that its request future was dropped) removes it, and only it: a later
/// caller with the same correlation id keeps its own place.
pub struct Waiting<'a> {
    waiters: &'a Waiters,
    correlation_id: String,
    number: u64,
    pub reply: oneshot::Receiver<Event>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self.waiters.waiting.lock().expect("rpc waiters");
        if w.get(&self.correlation_id).is_some_and(|(n, _)| *n == self.number) {
            w.remove(&self.correlation_id);
            self.waiters.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Another request with the same correlation id is still waiting.
#[derive(Debug, thiserror::Error)]
#[error("a request with correlation id `{0}` is already waiting")]
pub struct Busy(pub String);

impl Waiters {
    /// Waits for `correlation_id`: the guard's receiver resolves with the response event;
    /// dropping the guard stops waiting.
    pub fn register(&self, correlation_id: &str) -> Result<Waiting<'_>, Busy> {
        let mut w = self.waiting.lock().expect("rpc waiters");
        if w.get(correlation_id).is_some_and(|(_, tx)| !tx.is_closed()) {
            return Err(Busy(correlation_id.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        if w.insert(correlation_id.to_string(), (number, tx)).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Waiting { waiters: self, correlation_id: correlation_id.to_string(), number, reply: rx })
    }

    /// Callers waiting now (`eventyard_rpc_waiters`).
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// An accepted or emitted event: answers its caller if it is a response someone awaits.
    pub fn offer(&self, event: &Event) {
        if self.count.load(Ordering::Relaxed) == 0 || !event.type_name.starts_with(RESPONSE_PREFIX) {
            return;
        }
        if let Some(id) = correlation_id(event) {
            self.answer(id, || event.clone());
        }
    }

    fn answer(&self, id: &str, reply: impl FnOnce() -> Event) {
        let tx = self.waiting.lock().expect("rpc waiters").remove(id);
        if let Some((_, tx)) = tx {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(reply());
        }
    }
}

/// Infrahub's `meta.correlation_id`.
pub fn correlation_id(event: &Event) -> Option<&str> {
    event.data.correlation_id()
}
