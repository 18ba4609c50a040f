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
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: Arc<str>,
    pub priority: u8,
    #[serde(flatten)]
    pub state: State,
}

#[derive(Default)]
pub struct StatusBoard {
    inner: Mutex<Board>,
}

#[derive(Default)]
struct Board {
    map: HashMap<String, Status>,
    order: VecDeque<String>,
}

impl StatusBoard {
    pub fn insert(&self, id: &str, type_name: Arc<str>, priority: u8, state: State) {
        let mut b = self.inner.lock().expect("status board");
        let status = Status { id: id.to_string(), type_name, priority, state };
        if b.map.insert(id.to_string(), status).is_none() {
            b.order.push_back(id.to_string());
            if b.order.len() > STATUS_CAPACITY {
                if let Some(old) = b.order.pop_front() {
                    b.map.remove(&old);
                }
            }
        }
    }

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
