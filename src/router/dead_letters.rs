//! Events a plugin failed on, with the plugin, the kind of failure and its message,
//! served at `GET /v1/dead-letters`. Kept in memory, bounded (the oldest go first) until
//! the durable store takes over.

use super::Event;
use crate::wasm::{Failure, FailureKind};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many dead letters are kept.
pub const DEAD_LETTER_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    pub plugin: String,
    pub route: String,
    pub kind: FailureKind,
    pub message: String,
    pub retryable: bool,
    pub event: Event,
}

#[derive(Default)]
pub struct DeadLetters {
    items: Mutex<VecDeque<DeadLetter>>,
}

/// Which dead letters to list.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Query {
    pub kind: Option<String>,
    pub plugin: Option<String>,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub limit: Option<usize>,
}

impl DeadLetters {
    pub fn push(&self, event: &Event, plugin: &str, route: &str, failure: Failure) {
        tracing::warn!(plugin, route, event = %event.id, kind = failure.kind.as_str(), message = %failure.message, "dead letter");
        let mut items = self.items.lock().expect("dead letters");
        if items.len() == DEAD_LETTER_CAPACITY {
            items.pop_front();
        }
        items.push_back(DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            time: time::OffsetDateTime::now_utc(),
            plugin: plugin.to_string(),
            route: route.to_string(),
            kind: failure.kind,
            message: failure.message,
            retryable: failure.retryable,
            event: event.clone(),
        });
    }

    /// Newest first.
    pub fn list(&self, q: &Query) -> Vec<DeadLetter> {
        let items = self.items.lock().expect("dead letters");
        items
            .iter()
            .rev()
            .filter(|d| q.kind.as_deref().is_none_or(|k| d.kind.as_str() == k))
            .filter(|d| q.plugin.as_deref().is_none_or(|p| d.plugin == p))
            .filter(|d| q.type_name.as_deref().is_none_or(|t| &*d.event.type_name == t))
            .take(q.limit.unwrap_or(100))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.items.lock().expect("dead letters").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
