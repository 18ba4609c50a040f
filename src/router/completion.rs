//! "Tell me when this event is finished": the one mechanism everyone who waits for an
//! accepted event uses (RPC callers, workflow steps; later the dashboard and AMQP acks).
//!
//! Settling an event sets its final status first and then calls [`Completions::finish`];
//! [`Completions::watch`] registers first and then looks at the status. So a watcher that
//! comes before the finish is woken by it, one that comes after finds the final status:
//! none waits forever. Nothing is done per event while nobody watches (one atomic load).
//!
//! The settler counts the watchers after it wrote the status (that count is the one that
//! cannot miss a watcher); it may have counted before as well, to copy the outcome it then
//! moves into the status. A watcher that came between the two counts is woken without an
//! outcome ([`Completions::wake`]) and reads the final status, there by then.

use crate::event::Outcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How an event ended, as its watchers learn it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What plugins emitted, which calls failed for good, which filters dropped it.
    pub outcome: Arc<Outcome>,
}

impl Finished {
    /// Whether some plugin failed on it for good (it was dead-lettered).
    pub fn failed(&self) -> bool {
        !self.outcome.failed.is_empty()
    }
}

/// The watchers of unfinished events, by event id.
#[derive(Default)]
pub struct Completions {
    /// Event id -> (registration number, channel) of each watcher.
    waiting: Mutex<HashMap<String, Vec<(u64, oneshot::Sender<Option<Finished>>)>>>,
    count: AtomicUsize,
    next: AtomicU64,
}

/// One watcher's place: its receiver resolves when the event finishes, with how it ended, or
/// with `None` when the watcher is to read that from the event's final status (see the
/// module doc); dropping it (the watcher gave up or timed out) removes it and only it.
pub struct Watch<'a> {
    completions: &'a Completions,
    id: String,
    number: u64,
    pub finished: oneshot::Receiver<Option<Finished>>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut w = self.completions.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = w.get_mut(&self.id) {
            let before = list.len();
            list.retain(|(n, _)| *n != self.number);
            self.completions.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                w.remove(&self.id);
            }
        }
    }
}

impl Completions {
    /// Starts watching event `id`. The caller must then look at the event's status (see
    /// the module doc): [`crate::router::pipeline::Core::finished`] does both.
    pub fn watch(&self, id: &str) -> Watch<'_> {
        let (tx, rx) = oneshot::channel();
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut w = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.entry(id.to_string()).or_default().push((number, tx));
        // SeqCst, paired with the fence in `watching`: the watcher's count and the
        // finisher's status are each written before the other side reads them, so at
        // least one of the two sees the other's (no finish falls in between).
        self.count.fetch_add(1, Ordering::SeqCst);
        Watch { completions: self, id: id.to_string(), number, finished: rx }
    }

    /// Event `id` is finished (its final status is already set): wakes its watchers.
    pub fn finish(&self, id: &str, outcome: &Outcome) {
        self.wake_with(id, || Some(Finished { outcome: Arc::new(outcome.clone()) }));
    }

    /// Event `id` is finished (its final status is already set), its outcome moved into that
    /// status: wakes its watchers, who read it there.
    pub fn wake(&self, id: &str) {
        self.wake_with(id, || None);
    }

    fn wake_with(&self, id: &str, finished: impl FnOnce() -> Option<Finished>) {
        if self.watching() == 0 {
            return;
        }
        let watchers = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        if let Some(watchers) = watchers {
            self.count.fetch_sub(watchers.len(), Ordering::Relaxed);
            let finished = finished();
            for (_, tx) in watchers {
                let _ = tx.send(finished.clone());
            }
        }
    }

    /// Watchers waiting now. Read after the event's final status was set, it cannot miss a
    /// watcher that did not see that status (see [`Completions::watch`]).
    pub fn watching(&self) -> usize {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.count.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finish_wakes_every_watcher_of_that_event_only() {
        let c = Completions::default();
        let (mut a, mut b, mut other) = (c.watch("e1"), c.watch("e1"), c.watch("e2"));
        assert_eq!(c.watching(), 3);
        let outcome = Outcome { dropped: vec![("f".into(), "because".into())], ..Outcome::default() };
        c.finish("e1", &outcome);
        assert_eq!(a.finished.try_recv().unwrap().unwrap().outcome.dropped, outcome.dropped);
        assert!(!b.finished.try_recv().unwrap().unwrap().failed());
        assert!(other.finished.try_recv().is_err(), "another event's watcher is not woken");
        assert_eq!(c.watching(), 1);
    }

    #[test]
    fn a_dropped_watch_leaves_no_trace_and_others_keep_their_place() {
        let c = Completions::default();
        let first = c.watch("e");
        let mut second = c.watch("e");
        drop(first);
        assert_eq!(c.watching(), 1);
        c.finish("e", &Outcome::default());
        assert!(second.finished.try_recv().is_ok());
        drop(second);
        assert_eq!(c.watching(), 0);
        assert!(c.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn a_wake_tells_the_watchers_to_read_the_status() {
        let c = Completions::default();
        let mut a = c.watch("e");
        c.wake("e");
        assert!(a.finished.try_recv().unwrap().is_none());
        assert_eq!(c.watching(), 0);
    }
}
