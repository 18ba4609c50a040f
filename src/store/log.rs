//! [`LocalLog`]: the local backend of [`EventLog`] (the embedded default). The records are
//! the segment log's ([`LocalStore`]); the statuses and idempotency keys are kept in this
//! process's memory and rebuilt from the records when the log is opened; work is claimed by
//! the one instance that appends it.

use super::local::{LocalOptions, LocalStore};
use super::status::{self, Dedup, Idempotency, State, Status, StatusBoard};
use super::{Appended, Batch, EventLog, StoreError};
use crate::event::{Event, Outcome};
use futures_util::future::BoxFuture;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct LocalLog {
    records: LocalStore,
    statuses: StatusBoard,
    idempotency: Idempotency,
    window: Duration,
    /// Unfinished events found at open, until [`EventLog::take_recovered`] hands them out.
    recovered: Mutex<Vec<Event>>,
}

impl LocalLog {
    /// Opens (or creates) the log in `options.dir`; `window` is how long producer ids are
    /// remembered; `routed` says which recovered events need processing.
    pub fn open(options: &LocalOptions, window: Duration, routed: impl Fn(&Event) -> bool) -> Result<Self, StoreError> {
        let (records, recovered) = LocalStore::open(options, routed)?;
        let log = LocalLog {
            records,
            statuses: StatusBoard::default(),
            idempotency: Idempotency::new(window),
            window,
            recovered: Mutex::new(Vec::new()),
        };
        // The log does not keep when the router accepted an event (its `time` may be the
        // producer's): recovered events count as accepted now, so their idempotency window
        // is never shorter than documented.
        for (event, outcome) in recovered.finished {
            log.idempotency.recovered(event.source.as_deref(), &event.id);
            log.statuses.insert(&event.id, event.type_name, event.priority, status::finished(outcome));
        }
        for event in &recovered.pending {
            log.idempotency.recovered(event.source.as_deref(), &event.id);
            log.statuses.insert(&event.id, event.type_name, event.priority, State::Queued);
        }
        *log.recovered.lock().expect("recovered") = recovered.pending;
        Ok(log)
    }

    /// See [`LocalStore::side_bytes`].
    pub fn side_bytes(&self) -> Arc<AtomicU64> {
        self.records.side_bytes()
    }

    /// Claims statuses and idempotency keys for a batch; what to undo if its append fails.
    fn claim(&self, batch: Batch<'_>) -> (Appended, Vec<u64>) {
        let mut out = Appended { ids: Vec::with_capacity(batch.events.len()), ..Appended::default() };
        let mut keys = Vec::new();
        let now = time::OffsetDateTime::now_utc();
        for (mut e, routed) in batch.events.into_iter().zip(batch.routed) {
            if e.keyed {
                match self.idempotency.claim(batch.producer, e.source.as_deref(), &e.id) {
                    Dedup::Duplicate(first) => {
                        out.duplicates += 1;
                        out.ids.push(first.map_or_else(|| e.id.clone(), String::from));
                        continue;
                    }
                    Dedup::Fresh(key) => keys.push(key),
                }
            }
            let state = if routed { State::Queued } else { State::Processed { outcome: Outcome::default() } };
            // An event without a producer id has none to look for: the board names the
            // event, to find its status without the index (at admission and again when
            // it is finished), as it does when another producer's event has this one's id.
            let claimed =
                e.keyed && self.statuses.claim(&e.id, e.type_name, e.priority, self.window, state.clone(), now);
            if !claimed {
                e.id = self.statuses.insert_named(e.type_name, e.priority, state, now);
                if let Some(&key) = keys.last().filter(|_| e.keyed) {
                    self.idempotency.renamed(key, &e.id);
                }
            }
            out.ids.push(e.id.clone());
            out.routed.push(routed);
            out.fresh.push(e);
        }
        (out, keys)
    }
}

impl EventLog for LocalLog {
    fn append<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Appended, StoreError>> {
        Box::pin(async move {
            let (appended, keys) = self.claim(batch);
            if appended.fresh.is_empty() {
                return Ok(appended);
            }
            let events = &appended.fresh;
            let durable = match self.records.append(events, &appended.routed) {
                Ok(ack) => ack.await.unwrap_or(Err(StoreError::Closed)),
                Err(e) => Err(e),
            };
            if let Err(e) = durable {
                // Not processed, even if part of it reached the disk; not pinning compaction.
                self.records.abandon(events);
                events.iter().for_each(|e| self.statuses.unclaim(&e.id));
                keys.iter().for_each(|k| self.idempotency.unclaim(*k));
                return Err(e);
            }
            Ok(appended)
        })
    }

    fn progress(&self, id: &str, state: State) {
        self.statuses.set(id, state);
    }

    fn track(&self, event: &Event, state: State) {
        self.statuses.insert(&event.id, event.type_name, event.priority, state);
    }

    fn track_named(&self, event: &mut Event, state: State) {
        // An emitted event's time is the router's, taken as it was made.
        event.id = self.statuses.insert_named(event.type_name, event.priority, state, event.time);
    }

    fn complete(&self, event: &Event, outcome: Outcome) {
        self.complete_many(vec![(event, outcome)]);
    }

    fn complete_many(&self, done: Vec<(&Event, Outcome)>) {
        self.records.complete(&done);
        for (event, outcome) in done {
            self.statuses.set(&event.id, status::finished(outcome));
        }
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Status>> {
        Box::pin(std::future::ready(self.statuses.get(id)))
    }

    fn prefetch(&self, event: &Event) {
        self.statuses.prefetch(&event.id);
    }

    fn take_recovered(&self) -> Vec<Event> {
        std::mem::take(&mut *self.recovered.lock().expect("recovered"))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        let flushed = self.records.flush();
        Box::pin(async move {
            let _ = flushed.await;
        })
    }

    fn render_metrics(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "eventyard_idempotency_keys",
                "Producer-given ids remembered for deduplication (at most MAX_IDEMPOTENCY_KEYS).",
                self.idempotency.len() as u64,
            ),
            (
                "eventyard_idempotency_evicted_early_total",
                "Ids forgotten before their idempotency window ended, past MAX_IDEMPOTENCY_KEYS.",
                self.idempotency.evicted_early.load(Ordering::Relaxed),
            ),
            (
                "eventyard_log_bytes",
                "Bytes of event log on disk (refused past store.max_bytes).",
                self.records.pending_bytes(),
            ),
        ] {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{conformance, Durability};

    /// The local log against the contract every backend is held to.
    #[tokio::test]
    async fn the_local_log_passes_the_conformance_kit() {
        conformance::run(|dir| {
            let options = LocalOptions {
                dir: dir.to_path_buf(),
                durability: Durability::Always,
                segment_bytes: 1 << 20,
                max_bytes: 1 << 30,
            };
            let log = LocalLog::open(&options, Duration::from_secs(3600), |e| &*e.type_name == conformance::ROUTED)
                .expect("open the local log");
            std::future::ready(log)
        })
        .await;
    }
}
