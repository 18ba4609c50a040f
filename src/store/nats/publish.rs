//! Group publishing: single-event appends that come while the scheduler runs one round of
//! ready tasks leave for the server together.
//!
//! Each `send_publish` wakes the client's connection task, and tokio runs a task woken by
//! the running one next, on the same worker (its LIFO slot): so concurrent single-event
//! appends (one HTTP request each) left one write each (~0.55 writes to the server per
//! event) and the server took them a few per read. Here the first one to find the stage
//! empty spawns a flusher that yields once (tokio defers a yielded task until its worker
//! has run out of queued tasks or does its periodic maintenance): the requests already
//! queued on that worker, and those the other worker runs meanwhile, stage their messages,
//! and the flusher sends them together, which the connection task writes in one `writev`
//! (~0.09 writes per event; the server reads ~11 messages per read instead of ~4). Both
//! sides spend less CPU per event (`docs/benchmarks.md`, "Group publishing"), for one
//! scheduler round of latency and a task per group.
//!
//! A batch (an NDJSON request) already sends all its messages in one poll: it is published
//! on the spot, since staging each of its events cost more than it saved.
//!
//! The flusher is a task of its own, so a producer that hangs up (its request future
//! dropped) does not strand the appends grouped with it.

use super::nats;
use crate::store::StoreError;
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::future::join_all;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Answers one staged message: its stream sequence once the stream acknowledged it.
type Answer = oneshot::Sender<Result<u64, StoreError>>;

/// Messages waiting for the next flush, each with whom to answer.
pub(super) struct Publisher {
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    stage: Mutex<Vec<(String, PublishMessage, Answer)>>,
}

impl Publisher {
    pub(super) fn new(js: jetstream::Context, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Publisher { js, runtime, stage: Mutex::default() })
    }

    /// Publishes one append's messages (subject and message each); answers each one's
    /// stream sequence once the stream acknowledged it (the PubAck), in order.
    pub(super) async fn publish_all(
        self: &Arc<Self>,
        mut messages: Vec<(String, PublishMessage)>,
    ) -> Vec<Result<u64, StoreError>> {
        if messages.len() == 1 {
            let (subject, message) = messages.pop().expect("one message");
            return vec![self.grouped(subject, message).await];
        }
        join_all(messages.into_iter().map(|(subject, message)| self.send(subject, message))).await
    }

    /// Publishes `message` on `subject` with whatever else is staged this round.
    async fn grouped(self: &Arc<Self>, subject: String, message: PublishMessage) -> Result<u64, StoreError> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut stage = self.stage.lock().expect("publish stage");
            stage.push((subject, message, answer));
            stage.len() == 1
        };
        if first {
            let mut flusher = Flusher { publisher: self.clone(), took: false };
            self.runtime.spawn(async move {
                tokio::task::yield_now().await;
                flusher.took = true;
                flusher.publisher.flush().await;
            });
        }
        answered.await.unwrap_or_else(|_| Err(nats("append", "the publishing task stopped")))
    }

    /// Sends everything staged, in order, and answers each as its PubAck comes. Each message
    /// is one future (send, then await the ack) and all are polled together: a poll sends as
    /// many as tokio's task budget allows (~64), and a send that must wait (the client
    /// allows 5,000 unacknowledged publishes) goes on as the acks of the others come in.
    /// Sending all before awaiting any ack would wait forever for a permit only those
    /// unpolled acks give back (a batch's messages are sent the same way).
    async fn flush(&self) {
        let staged = std::mem::take(&mut *self.stage.lock().expect("publish stage"));
        join_all(staged.into_iter().map(|(subject, message, answer)| async move {
            let _ = answer.send(self.send(subject, message).await);
        }))
        .await;
    }

    /// Sends one message and awaits its PubAck.
    async fn send(&self, subject: String, message: PublishMessage) -> Result<u64, StoreError> {
        match self.js.send_publish(subject, message).await {
            Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| nats("append", e)),
            Err(e) => Err(nats("append", e)),
        }
    }
}

/// The flusher's hold on the stage: a flusher dropped before it took the stage (its runtime
/// shutting down before it ran) empties the stage, so those appends fail instead of waiting
/// forever, and so does every later one (which would find the stage non-empty and start no
/// flusher of its own).
struct Flusher {
    publisher: Arc<Publisher>,
    took: bool,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if !self.took {
            // Dropping the answers tells their appenders "the publishing task stopped".
            drop(std::mem::take(&mut *self.publisher.stage.lock().unwrap_or_else(|e| e.into_inner())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A flusher that cannot run (its runtime shut down) leaves no append waiting: the one
    /// that started it and every later one fail.
    #[test]
    fn appends_fail_instead_of_waiting_when_the_flusher_cannot_run() {
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let (gone, live) = (runtime(), runtime());
        let handle = gone.handle().clone();
        drop(gone);
        live.block_on(async {
            // No server: the client keeps trying in the background, nothing is sent.
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect("nats://127.0.0.1:1")
                .await
                .expect("a client that connects later");
            let publisher = Publisher::new(jetstream::new(client), handle);
            for _ in 0..2 {
                let message = PublishMessage::build().payload(bytes::Bytes::from_static(b"{}"));
                let answers = tokio::time::timeout(
                    Duration::from_secs(5),
                    publisher.publish_all(vec![("kit.ev.0.x".into(), message)]),
                )
                .await
                .expect("answered, not left waiting");
                assert!(matches!(&answers[..], [Err(_)]), "the append fails: {answers:?}");
            }
        });
    }
}
