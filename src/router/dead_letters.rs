//! Events a plugin failed on for good, with the plugin, route, kind of failure, message and
//! attempts: served at `/v1/dead-letters` (list with filters, show one, replay, purge).
//!
//! Durable: each dead letter is appended to `dead-letters.jsonl` in the data directory and
//! synced before it counts (dead letters are rare, so a sync each is cheap); purging or
//! replaying rewrites the file atomically (temporary file, then rename). Unlike the event
//! log, dead letters are never compacted away: they stay until replayed or purged.

use super::Event;
use crate::wasm::{Failure, FailureKind};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Dead letters kept in memory when there is no file (the log is off).
pub const IN_MEMORY_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    pub plugin: String,
    pub route: String,
    pub kind: FailureKind,
    pub message: String,
    pub retryable: bool,
    #[serde(default = "one")]
    pub attempts: u32,
    pub event: Event,
}

fn one() -> u32 {
    1
}

/// Which dead letters: every field narrows the selection.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub kind: Option<String>,
    pub plugin: Option<String>,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// RFC 3339: only those recorded at or after this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<time::OffsetDateTime>,
    /// RFC 3339: only those recorded before this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<time::OffsetDateTime>,
    pub limit: Option<usize>,
}

impl Query {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.kind.as_deref().is_none_or(|k| d.kind.as_str() == k)
            && self.plugin.as_deref().is_none_or(|p| d.plugin == p)
            && self.type_name.as_deref().is_none_or(|t| &*d.event.type_name == t)
            && self.since.is_none_or(|s| d.time >= s)
            && self.until.is_none_or(|u| d.time < u)
    }
}

#[derive(Default)]
pub struct DeadLetters {
    file: Option<PathBuf>,
    items: Mutex<Vec<DeadLetter>>,
}

impl DeadLetters {
    /// Opens (or creates) `path` and loads what it holds; unreadable lines are skipped
    /// with a warning (a torn last line after a crash).
    pub fn open(path: PathBuf) -> std::io::Result<DeadLetters> {
        let mut items = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    match serde_json::from_str(line) {
                        Ok(d) => items.push(d),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), line = n + 1, error = %e, "skipping a dead letter")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(DeadLetters { file: Some(path), items: Mutex::new(items) })
    }

    pub fn push(&self, event: &Event, plugin: &str, route: &str, failure: Failure, attempts: u32) {
        tracing::warn!(plugin, route, event = %event.id, kind = failure.kind.as_str(), attempts, message = %failure.message, "dead letter");
        let letter = DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            time: time::OffsetDateTime::now_utc(),
            plugin: plugin.to_string(),
            route: route.to_string(),
            kind: failure.kind,
            message: failure.message,
            retryable: failure.retryable,
            attempts,
            event: event.clone(),
        };
        let mut items = self.items.lock().expect("dead letters");
        match &self.file {
            Some(path) => {
                let line = serde_json::to_string(&letter).expect("dead letters serialise");
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()).and_then(|_| f.sync_data()));
                if let Err(e) = written {
                    tracing::error!(path = %path.display(), error = %e, "cannot write a dead letter; kept in memory only");
                }
            }
            None if items.len() >= IN_MEMORY_CAPACITY => {
                items.remove(0);
            }
            None => {}
        }
        items.push(letter);
    }

    /// Newest first.
    pub fn list(&self, q: &Query) -> Vec<DeadLetter> {
        let items = self.items.lock().expect("dead letters");
        items.iter().rev().filter(|d| q.matches(d)).take(q.limit.unwrap_or(100)).cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<DeadLetter> {
        self.items.lock().expect("dead letters").iter().find(|d| d.id == id).cloned()
    }

    /// Removes the matching dead letters (all of `q`'s selection, no limit); returns them.
    pub fn take(&self, select: impl Fn(&DeadLetter) -> bool) -> std::io::Result<Vec<DeadLetter>> {
        let mut items = self.items.lock().expect("dead letters");
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *items).into_iter().partition(|d| select(d));
        *items = kept;
        if let Some(path) = &self.file {
            if !taken.is_empty() {
                let tmp = path.with_extension("jsonl.tmp");
                let mut text = String::new();
                for d in items.iter() {
                    text.push_str(&serde_json::to_string(d).expect("dead letters serialise"));
                    text.push('\n');
                }
                std::fs::write(&tmp, text)
                    .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
                    .and_then(|_| std::fs::rename(&tmp, path))?;
            }
        }
        Ok(taken)
    }

    /// Selection by query, for [`take`](Self::take).
    pub fn selector(q: &Query) -> impl Fn(&DeadLetter) -> bool + '_ {
        move |d| q.matches(d)
    }
}
