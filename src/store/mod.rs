//! Durable storage of accepted events, behind [`EventStore`] so that a NATS JetStream
//! backend can take the local log's place.
//!
//! The contract: [`EventStore::append`] resolves only once the events are as durable as
//! configured (fsync'd, by default in groups), and only then does the producer get its 202;
//! [`EventStore::complete`] records that an event is finished; at start-up
//! [`EventStore::recover`] hands back every event accepted but not finished, so after a
//! `kill -9` nothing answered with 202 is lost (delivery is at-least-once).
//!
//! - [`segment`]: the local segment log (files, frames, the group-commit writer);
//! - [`local`]: [`LocalStore`], the segment log as an [`EventStore`] with compaction;
//! - [`config_docs`]: the config service's documents (one atomically replaced file each);
//! - [`files`]: owner-only files and directories, atomic replacement.

pub mod config_docs;
pub mod files;
pub mod local;
pub mod segment;

pub use local::LocalStore;

use crate::router::Event;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// How hard an append is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `fdatasync` per append (per request or batch): the slowest, the simplest to reason about.
    Always,
    /// Appends arriving together share one `fdatasync` (group commit). `window` is how long
    /// the writer waits for more before syncing (0: sync as soon as the previous sync ends);
    /// an ack waits at most about one window plus one sync.
    Group { window: Duration },
    /// No sync: the OS writes when it likes. A process crash loses nothing, a power loss may.
    Off,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("the event log is full ({bytes} bytes pending); retry shortly")]
    Full { bytes: u64 },
    #[error("the event log is shut down")]
    Closed,
    /// A record larger than the log's reader takes: refused when made, never written.
    #[error("a record of {bytes} bytes is larger than the log's limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
}

impl StoreError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        StoreError::Io { path: path.display().to_string(), message: e.to_string() }
    }
}

/// One entry of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// An accepted event.
    Event { event: Event },
    /// The event is finished: processed (possibly with dead letters) by every route.
    Done { id: String, outcome: Outcome },
    /// These events' append failed (their producers got 503): whatever of them reached the
    /// disk (a group whose sync failed) is not processed. Applies to records before it only,
    /// so a producer's retry with the same id, accepted later, stands.
    Cancelled { ids: Vec<String> },
}

/// Longest text of an outcome (a failure's message, a drop reason) kept in the log: the
/// rest is cut at a character boundary and marked. Why: a plugin's error text is the
/// plugin's to choose; the log keeps what an operator needs, not what an attacker sends.
pub const MAX_OUTCOME_TEXT_BYTES: usize = 4096;
/// Most entries of each list of an outcome (emissions, failures, drops) kept in the log;
/// the per-root work budget keeps real outcomes far below this.
pub const MAX_OUTCOME_ENTRIES: usize = 10_000;

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MARK: &str = "…[cut]";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

impl Outcome {
    /// The outcome as the log keeps it: texts and lists capped
    /// ([`MAX_OUTCOME_TEXT_BYTES`], [`MAX_OUTCOME_ENTRIES`]), so a `Done` record always fits
    /// in a frame.
    pub fn bounded(&self) -> Outcome {
        let text = |t: &str| cut_text(t, MAX_OUTCOME_TEXT_BYTES);
        Outcome {
            emitted: self.emitted.iter().take(MAX_OUTCOME_ENTRIES).cloned().collect(),
            failed: self
                .failed
                .iter()
                .take(MAX_OUTCOME_ENTRIES)
                .map(|f| FailureNote { message: text(&f.message), ..f.clone() })
                .collect(),
            dropped: self.dropped.iter().take(MAX_OUTCOME_ENTRIES).map(|(p, r)| (p.clone(), text(r))).collect(),
        }
    }
}

/// What became of an event: what each plugin emitted and which calls failed for good.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub emitted: Vec<Emission>,
    pub failed: Vec<FailureNote>,
    /// Filters that dropped it, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Emission {
    pub plugin: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureNote {
    pub plugin: String,
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}

/// What recovery found: events to process again, and finished ones (for status lookups
/// and idempotency), oldest first.
#[derive(Default)]
pub struct Recovered {
    pub pending: Vec<Event>,
    pub finished: Vec<(Event, Outcome)>,
}

/// Resolves once an append is durable.
pub type Ack = oneshot::Receiver<Result<(), StoreError>>;

pub trait EventStore: Send + Sync {
    /// Appends accepted events. Those that need processing (`routed`) are tracked until
    /// [`complete`](Self::complete)d; the others are finished as soon as they are durable.
    fn append(&self, events: &[Event], routed: &[bool]) -> Result<Ack, StoreError>;
    /// Records that a routed event is finished; not awaited (a crash before it is durable
    /// only means the event is processed again).
    fn complete(&self, event: &Event, outcome: &Outcome);
    /// These events' append failed (their ack was an error; their producers got 503): they
    /// are not tracked any more (compaction is not pinned by them) and, if part of them
    /// reached the disk, recovery will not process them.
    fn abandon(&self, events: &[Event]) {
        let _ = events;
    }
    /// Writes and syncs everything queued (graceful shutdown).
    fn flush(&self) -> oneshot::Receiver<()>;
    /// Bytes in the log not yet compacted away.
    fn pending_bytes(&self) -> u64;
}
