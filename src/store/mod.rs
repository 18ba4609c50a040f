//! Durable and shared state: the event log behind the [`EventLog`] contract (so that a
//! NATS JetStream backend can take the local log's place), the statuses and idempotency
//! keys it owns, the dead letters, and the config service's documents.
//!
//! - [`log`]: [`LocalLog`], the local backend of [`EventLog`]: the segment log plus the
//!   statuses and idempotency keys, rebuilt from the log at start-up;
//! - [`local`]: [`LocalStore`], the segment log's records with compaction;
//! - [`segment`]: segment files, frames, the group-commit writer;
//! - [`status`]: where each event is, and which producer ids were seen;
//! - [`nats`]: [`NatsLog`], the shared backend on NATS JetStream (several routers as one);
//! - [`conformance`]: the suite every [`EventLog`] backend must pass;
//! - [`dead_letters`]: events a plugin failed on, kept for listing and replay;
//! - [`lease`]: "one instance at a time" across a cluster;
//! - [`config_docs`]: the config service's documents (one atomically replaced file each);
//! - [`config`]: the `[store]` section.

pub mod config;
pub mod config_docs;
pub mod conformance;
pub mod dead_letters;
pub mod lease;
pub mod local;
pub mod log;
pub mod nats;
pub mod segment;
pub mod status;

pub use local::LocalStore;
pub use log::LocalLog;
pub use nats::NatsLog;

use crate::event::{Event, Outcome};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use status::{State, Status};
use std::path::Path;
use std::sync::Arc;
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
    /// The shared log's server did not take or answer a request (it may be restarting).
    #[error("the shared log (NATS): {message}")]
    Shared { message: String },
    /// A record larger than the log's reader takes: refused when made, never written.
    #[error("a record of {bytes} bytes is larger than the log's limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    /// Another router holds the log's directory: two writers would each cut the other's
    /// records as torn and delete the other's segments as finished.
    #[error("{path} is in use by another eventyard (pid {holder}); stop it first or give this one another data_dir")]
    InUse { path: String, holder: String },
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

/// What recovery found: events to process again, and finished ones (for status lookups
/// and idempotency), oldest first.
#[derive(Default)]
pub struct Recovered {
    pub pending: Vec<Event>,
    pub finished: Vec<(Event, Outcome)>,
}

/// Resolves once an append is durable.
pub type Ack = oneshot::Receiver<Result<(), StoreError>>;

/// A batch of validated events from one producer, offered to [`EventLog::append`].
pub struct Batch<'a> {
    pub events: Vec<Event>,
    /// Per event: whether a route matches its type (it needs processing). Unrouted events
    /// are finished as soon as they are durable.
    pub routed: Vec<bool>,
    /// The producer's credential (its ingestion token): producer-given ids are
    /// idempotency keys within it and the event's `source`.
    pub producer: Option<&'a str>,
}

/// What an append made of a batch.
#[derive(Debug, Default)]
pub struct Appended {
    /// Per offered event, in order: its id, or for a duplicate the id of the first. An id
    /// the producer gave is kept (unless another producer's event has it); an event offered
    /// without one gets a name from the log (both logs name events so that their statuses
    /// are found without a look-up): these ids, not the offered ones, are what producers
    /// are told.
    pub ids: Vec<String>,
    /// The events that were new, durable now. Routed ones are claimed by this instance: it
    /// processes them and then [`EventLog::complete`]s them. (A shared log also hands work
    /// to whichever instance pulls it; the local log has one instance.)
    pub fresh: Vec<Event>,
    /// Per fresh event: whether it is routed.
    pub routed: Vec<bool>,
    /// How many offered events were duplicates.
    pub duplicates: usize,
}

/// The contract of the durable event log: everything that must be shared for several
/// routers to act as one (the NATS JetStream backend of issue 13 implements it too, and
/// [`conformance`] checks every backend against it).
///
/// - append with dedup: all or nothing; resolves only once the new events are as durable
///   as configured (and only then does a producer get its 202); a producer-given id seen
///   from the same producer within the idempotency window is a duplicate, answered with
///   the first event's id and not stored again; the same id from another producer is
///   another event and gets a new id; an event without a producer id (`keyed` false,
///   offered with an empty id) is named by the log;
/// - claim: routed events are claimed for processing (at append, or at recovery for what a
///   crash left unfinished);
/// - progress and complete: where an event is, and its outcome once finished (durable
///   for events of the log; emitted events' statuses are tracked, not logged);
/// - status: of any id accepted within the status window;
/// - recover: opening a log finds what was accepted and not finished ([`take_recovered`]),
///   and remembers finished events for status lookups and dedup. Delivery is
///   at-least-once: an event whose `done` record was lost is processed again.
///
/// [`take_recovered`]: EventLog::take_recovered
pub trait EventLog: Send + Sync {
    /// Appends `batch` (see the trait doc). On an error nothing of it was accepted.
    fn append<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Appended, StoreError>>;
    /// An event of this log (or one a plugin emitted, see [`track`](Self::track)) moved on:
    /// in progress, retrying, or finished (emitted events).
    fn progress(&self, id: &str, state: State);
    /// Starts tracking the status of an event that is not in the log (a plugin emitted it
    /// while its root event was processed; the root's record is the durable unit).
    fn track(&self, event: &Event, state: State);
    /// Names an emitted event (gives it its `id`) and starts tracking it, as
    /// [`track`](Self::track) does. The name is the log's to choose so that it can say where
    /// the status is kept: both logs' names are found without a look-up. The event's `time`
    /// (the router's, for an emitted event) is when it was accepted.
    fn track_named(&self, event: &mut Event, state: State);
    /// A claimed event is finished with `outcome`: its final status, and a `done` record
    /// (not awaited: a crash before it is durable only means the event is processed again).
    /// `event` is the one the log handed out (appended or recovered), or a copy that took
    /// it over ([`Event::take_over`]): what the log holds for it goes with it
    /// ([`LogPin`](crate::event::LogPin)).
    fn complete(&self, event: &Event, outcome: Outcome);
    /// Several claimed events finished together (a worker's run of events): the same as
    /// [`complete`](Self::complete) for each, in one go where the backend can (the local log
    /// hands their `done` records to its writer in one message).
    fn complete_many(&self, done: Vec<(&Event, Outcome)>) {
        for (event, outcome) in done {
            self.complete(event, outcome);
        }
    }
    /// A hint that `event` (claimed) is about to be [`complete`](Self::complete)d: the log
    /// may start loading what that will write. Nothing by default.
    fn prefetch(&self, _event: &Event) {}
    /// Where an accepted event is, if it was accepted within the status window (a shared
    /// log asks its server: any instance answers for every event).
    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Status>>;
    /// The unfinished events found when the log was opened, claimed by this instance (each
    /// handed out once).
    fn take_recovered(&self) -> Vec<Event>;
    /// Writes and syncs everything queued (graceful shutdown).
    fn flush(&self) -> BoxFuture<'_, ()>;
    /// The log's lines of `/metrics`.
    fn render_metrics(&self, out: &mut String);
    /// Whether several instances share this log: work is then handed out by the log (to
    /// the [`Feed`] given to [`attach`](Self::attach)) instead of being claimed by the
    /// instance that appended it, and a finished event is announced to every instance.
    fn shared(&self) -> bool {
        false
    }
    /// Starts handing this instance its share of the work, and telling it what other
    /// instances admitted and finished (a shared log). The local log has nothing to give.
    fn attach(&self, _feed: Arc<dyn Feed>) {}
    /// Hands a claimed event back, to be delivered again (to whichever instance has room)
    /// after `delay`, with `note`: what is left of its work, in the router's words (the
    /// log keeps it and gives it to [`Feed::work`] with the event). False when the log
    /// keeps no such notes: the local log, where the router's own scheduler waits.
    fn defer(&self, _event: &Event, _delay: Duration, _note: Vec<u8>) -> bool {
        false
    }
}

/// Where a shared log delivers to this instance: its share of the work, and what the
/// other instances did (for live subscribers, RPC callers and whoever waits).
pub trait Feed: Send + Sync + 'static {
    /// An event this instance now holds: wait for room in the work queue, then queue it;
    /// it is [`complete`](EventLog::complete)d once processed. `note`: what
    /// [`EventLog::defer`] kept with it (the rest of its work), if it was deferred.
    fn work(&self, event: Event, note: Option<Vec<u8>>) -> BoxFuture<'_, ()>;
    /// Another instance admitted `event` (or a plugin there emitted it: `emitted`).
    fn admitted(&self, event: Event, emitted: bool);
    /// Another instance finished event `id` with `outcome`.
    fn finished(&self, id: &str, outcome: &Outcome);
}
