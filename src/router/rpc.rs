//! Infrahub's request/response over the router (`POST /v1/rpc/{type}`): a caller waits for
//! the response event whose `meta.correlation_id` is its request's.
//!
//! The pipeline tells [`Waiters`] about every accepted or emitted `infrahub/response/*`
//! event and about every finished request; the first word for a correlation id is the
//! answer. Nothing is done per event while nobody waits (one atomic load).

use super::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// The type prefix of Infrahub's response events.
pub const RESPONSE_PREFIX: &str = "infrahub/response/";

/// How a request ended for its caller.
#[derive(Debug)]
pub enum Reply {
    /// The response event (already validated against its schema).
    Response(Event),
    /// The request failed in a handler (dead-lettered): the handlers' errors.
    Failed { errors: Vec<String> },
    /// The request was processed but nothing answered it.
    Unanswered,
}

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    count: AtomicUsize,
}

/// Another request with the same correlation id is still waiting.
#[derive(Debug, thiserror::Error)]
#[error("a request with correlation id `{0}` is already waiting")]
pub struct Busy(pub String);

impl Waiters {
    /// Waits for `correlation_id`; the receiver resolves with the first reply.
    pub fn register(&self, correlation_id: &str) -> Result<oneshot::Receiver<Reply>, Busy> {
        let mut w = self.waiting.lock().expect("rpc waiters");
        if w.get(correlation_id).is_some_and(|tx| !tx.is_closed()) {
            return Err(Busy(correlation_id.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        if w.insert(correlation_id.to_string(), tx).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(rx)
    }

    /// Stops waiting (the caller gave up or its request was refused).
    pub fn cancel(&self, correlation_id: &str) {
        if self.waiting.lock().expect("rpc waiters").remove(correlation_id).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An accepted or emitted event: answers its caller if it is a response someone awaits.
    pub fn offer(&self, event: &Event) {
        if self.count.load(Ordering::Relaxed) == 0 || !event.type_name.starts_with(RESPONSE_PREFIX) {
            return;
        }
        if let Some(id) = correlation_id(event) {
            self.answer(id, || Reply::Response(event.clone()));
        }
    }

    /// A request finished: answers a caller still waiting (the handlers failed, or none
    /// responded).
    pub fn finished(&self, request: &Event, errors: Vec<String>) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(id) = correlation_id(request) {
            self.answer(id, || if errors.is_empty() { Reply::Unanswered } else { Reply::Failed { errors } });
        }
    }

    fn answer(&self, id: &str, reply: impl FnOnce() -> Reply) {
        let tx = self.waiting.lock().expect("rpc waiters").remove(id);
        if let Some(tx) = tx {
            self.count.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(reply());
        }
    }
}

/// Infrahub's `meta.correlation_id`.
pub fn correlation_id(event: &Event) -> Option<&str> {
    event.data.correlation_id()
}
