//! Which accepted events the workers hold now: what `GET /v1/events/{id}` answers as
//! `in_progress` for an event its log still has as `queued`.
//!
//! Why not a status write per event: the status board is a ring of
//! [`STATUS_CAPACITY`](crate::store::status::STATUS_CAPACITY) entries, and by the time a
//! worker takes an event its entry is out of every cache. Writing `in_progress` into it cost
//! a look-up and a write per event (about 4% of the workers' time end to end through the
//! echo handler, `docs/benchmarks.md`); a worker's run of events is held here by one lock
//! and a vector of pointers it already has, and a status read, far rarer than a processed
//! event, looks through the few runs held.

use super::settle::RootWork;
use std::sync::{Arc, Mutex, PoisonError};

/// The runs the workers hold, one slot per worker.
pub(super) struct Holding {
    slots: Box<[Mutex<Vec<Arc<RootWork>>>]>,
}

/// A worker's run, held until this guard is dropped (a panic included).
pub(super) struct Held<'a> {
    slot: &'a Mutex<Vec<Arc<RootWork>>>,
}

impl Holding {
    pub(super) fn new(workers: usize) -> Self {
        Self { slots: (0..workers.max(1)).map(|_| Mutex::default()).collect() }
    }

    /// Worker `worker` holds `roots` until the guard is dropped.
    pub(super) fn hold<'a>(&'a self, worker: usize, roots: &[Arc<RootWork>]) -> Held<'a> {
        let slot = &self.slots[worker % self.slots.len()];
        slot.lock().unwrap_or_else(PoisonError::into_inner).extend(roots.iter().cloned());
        Held { slot }
    }

    /// Whether a worker holds the accepted event `id` now.
    pub(super) fn holds(&self, id: &str) -> bool {
        self.slots.iter().any(|s| s.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|r| r.event.id == id))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::config::RootBudget;
    use crate::router::pipeline::tests::event;

    #[test]
    fn a_run_is_held_until_its_guard_is_dropped_and_each_worker_has_its_own() {
        let holding = Holding::new(2);
        let (a, b) =
            (RootWork::new(event("a"), RootBudget::default()), RootWork::new(event("b"), RootBudget::default()));
        let first = holding.hold(0, &[a]);
        {
            let _second = holding.hold(1, &[b]);
            assert!(holding.holds("a") && holding.holds("b"));
        }
        assert!(holding.holds("a") && !holding.holds("b"), "the second worker's run ended");
        drop(first);
        assert!(!holding.holds("a"));
    }
}
