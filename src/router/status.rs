//! Where each accepted event is, for `GET /v1/events/{id}`: queued, in progress, retrying
//! (attempt and next time), processed (what each handler emitted) or dead-lettered (why).
//! Bounded: the oldest entries are forgotten past [`STATUS_CAPACITY`]; after a restart the
//! entries are rebuilt from the log.

use crate::store::Outcome;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Events whose status is remembered (~200 bytes each).
pub const STATUS_CAPACITY: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Queued,
    InProgress,
    Retrying {
        plugin: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        next_at: time::OffsetDateTime,
        last_error: String,
    },
    Processed {
        #[serde(flatten)]
        outcome: Outcome,
    },
    DeadLettered {
        #[serde(flatten)]
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When the router accepted it (or, for events recovered from the log, their time):
    /// the idempotency window counts from here.
    #[serde(skip)]
    pub accepted_at: time::OffsetDateTime,
    pub id: Arc<str>,
    #[serde(rename = "type")]
    pub type_name: Arc<str>,
    pub priority: u8,
    #[serde(flatten)]
    pub state: State,
}

pub struct StatusBoard {
    inner: Mutex<Board>,
}

impl Default for StatusBoard {
    /// Sized for its capacity up front: growing a map of 100,000s of entries under the
    /// lock would stall ingestion for milliseconds at each doubling.
    fn default() -> Self {
        let board = Board {
            map: HashMap::with_capacity_and_hasher(STATUS_CAPACITY + 1, foldhash::fast::RandomState::default()),
            order: VecDeque::with_capacity(STATUS_CAPACITY + 1),
        };
        Self { inner: Mutex::new(board) }
    }
}

/// `order` holds each key with the time it was inserted, so that a stale entry (an
/// unclaimed id claimed again later) never evicts the newer one.
struct Board {
    /// foldhash: several times cheaper than SipHash on 36-byte ids; the ids are the
    /// producers', but a flood of colliding ids only slows the board, it cannot grow it.
    map: HashMap<Arc<str>, Status, foldhash::fast::RandomState>,
    order: VecDeque<(Arc<str>, time::OffsetDateTime)>,
}

impl StatusBoard {
    pub fn insert(&self, id: &str, type_name: Arc<str>, priority: u8, state: State) {
        self.insert_at(id, type_name, priority, state, time::OffsetDateTime::now_utc());
    }

    /// [`insert`](Self::insert) with the time it was accepted (recovery uses the event's).
    pub fn insert_at(&self, id: &str, type_name: Arc<str>, priority: u8, state: State, at: time::OffsetDateTime) {
        self.inner.lock().expect("status board").put(id, type_name, priority, state, at);
    }

    /// Inserts `id` in `state` unless it was accepted less than `window` ago: false for a
    /// duplicate. Atomic, so two concurrent copies of one event cannot both be accepted.
    pub fn claim(
        &self,
        id: &str,
        type_name: Arc<str>,
        priority: u8,
        window: std::time::Duration,
        state: State,
    ) -> bool {
        let now = time::OffsetDateTime::now_utc();
        let mut b = self.inner.lock().expect("status board");
        if b.map.get(id).is_some_and(|s| now - s.accepted_at < window) {
            return false;
        }
        // Seen before the window: a new event under an old id, with a fresh time and place.
        b.map.remove(id);
        b.put(id, type_name, priority, state, now);
        true
    }

    /// Forgets a claim whose event was not accepted after all.
    pub fn unclaim(&self, id: &str) {
        self.inner.lock().expect("status board").map.remove(id);
    }
}

impl Board {
    fn put(&mut self, id: &str, type_name: Arc<str>, priority: u8, state: State, accepted_at: time::OffsetDateTime) {
        let b = self;
        if let Some(s) = b.map.get_mut(id) {
            // Keeps its place in `order` (and its time there, which eviction checks).
            *s = Status { accepted_at: s.accepted_at, id: s.id.clone(), type_name, priority, state };
            return;
        }
        let key: Arc<str> = id.into();
        b.map.insert(key.clone(), Status { accepted_at, id: key.clone(), type_name, priority, state });
        b.order.push_back((key, accepted_at));
        if b.order.len() > STATUS_CAPACITY {
            if let Some((old, at)) = b.order.pop_front() {
                if b.map.get(&old).is_some_and(|s| s.accepted_at == at) {
                    b.map.remove(&old);
                }
            }
        }
    }
}

impl StatusBoard {
    pub fn set(&self, id: &str, state: State) {
        if let Some(s) = self.inner.lock().expect("status board").map.get_mut(id) {
            s.state = state;
        }
    }

    pub fn get(&self, id: &str) -> Option<Status> {
        self.inner.lock().expect("status board").map.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.inner.lock().expect("status board").map.contains_key(id)
    }
}

/// The final state for an outcome.
pub fn finished(outcome: Outcome) -> State {
    if outcome.failed.is_empty() {
        State::Processed { outcome }
    } else {
        State::DeadLettered { outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_claim_is_refused_inside_the_window_and_renewed_after_it() {
        let board = StatusBoard::default();
        let t: Arc<str> = "infrahub/send.echo.request".into();
        assert!(board.claim("a", t.clone(), 3, Duration::from_secs(60), State::Queued));
        assert!(!board.claim("a", t.clone(), 3, Duration::from_secs(60), State::Queued), "duplicate");
        // With a zero window the old acceptance has expired: a new event under the old id...
        assert!(board.claim("a", t.clone(), 3, Duration::ZERO, State::Queued));
        // ...whose own time starts a new window.
        assert!(!board.claim("a", t.clone(), 3, Duration::from_secs(60), State::Queued));
        board.unclaim("a");
        assert!(board.get("a").is_none());
        assert!(board.claim("a", t, 3, Duration::from_secs(60), State::Queued), "unclaimed ids can come again");
        assert_eq!(board.inner.lock().unwrap().order.len(), 3, "stale places stay until evicted, harmlessly");
    }
}
