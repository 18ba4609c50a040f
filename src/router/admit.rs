//! Admission: the one door every producer's events go through on their way into the core
//! (HTTP, CloudEvents and NDJSON, Fix Inventory's WebSockets, the router's own events;
//! next NATS and AMQP sources). [`prepare`] validates an event and gives it an id;
//! [`Pipeline::admit`] deduplicates a batch, reserves queue room (back-pressure), appends
//! it to the log and returns only once it is durable; then subscribers see the events and
//! routed ones are queued for the workers. Doors keep only what is theirs: reading their
//! wire format and mapping a [`Refusal`] to their own error shape.
//!
//! Events a plugin emits are admitted by the worker running the plugin
//! ([`Core::admit_emitted`](super::pipeline::Core)): validated like any other by the plugin
//! host, announced to subscribers and RPC callers, and processed on the spot. They get no
//! append of their own: their root event's record is the durable unit (a crash before it is
//! finished runs the root again, which emits them again), so an emission costs no disk
//! write.

use super::pipeline::{Core, Job, Pipeline};
use crate::event::body::{too_deep, MAX_DATA_DEPTH};
use crate::event::pattern::TypePattern;
use crate::event::{Body, Event, Outcome, MAX_ID_BYTES};
use crate::event::{Failure, FailureKind};
use crate::schema::{EventType, Rejection, Violation};
use crate::store::status::State;
use crate::store::{Appended, Batch, StoreError};
use crate::wasm::Checked;
use serde_json::Value;
use std::sync::atomic::Ordering;

/// Who offers events to [`Pipeline::admit`]: what idempotency keys are scoped by, and
/// whether its response events may answer RPC callers.
#[derive(Clone, Copy, Default)]
pub struct Producer<'a> {
    /// The ingestion token the request came with (none when ingestion is open).
    pub token: Option<&'a str>,
    /// The `infrahub/response/*` types it may answer RPC callers with; `None`: none.
    pub answers: Option<&'a TypePattern>,
}

impl Producer<'_> {
    fn may_answer(&self, type_name: &str) -> bool {
        self.answers.is_some_and(|p| p.matches(type_name))
    }
}

/// What a producer may say about an event besides its data.
#[derive(Debug, Default)]
pub struct Envelope {
    /// The producer's id (CloudEvents `id`, an `Idempotency-Key`); a UUIDv7 is made when
    /// absent. A producer-given id is an idempotency key.
    pub id: Option<String>,
    pub source: Option<String>,
    /// Now when absent.
    pub time: Option<time::OffsetDateTime>,
    /// The producer's priority for this event (a `Priority` header, the CloudEvents
    /// `priority` extension), over `meta.priority` and the catalogue's `x-priority`.
    pub priority: Option<u8>,
}

/// An event's data as it comes in.
pub enum Data<'a> {
    /// The producer's JSON text (a body, an NDJSON line's `data`): validated in place and
    /// kept as sent, no tree built.
    Text(&'a str),
    /// Already parsed out of an envelope (a structured CloudEvent) or made by the router.
    Tree(Value),
}

/// Why an event is refused before it is admitted; every door maps these to its own error
/// shape (HTTP: `400 validation_failed`, `400 malformed_json`, `400 too_deep`, `400
/// id_too_long`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the data is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("event does not match the schema of {type_name}")]
    Invalid { type_name: String, errors: Vec<Violation> },
    #[error("the data nests deeper than {limit} levels of arrays and objects")]
    TooDeep { limit: usize },
    #[error("`id` is longer than {limit} bytes")]
    IdTooLong { limit: usize },
}

/// Validates one event of type `ty`: the single path every producer's event goes through
/// before [`Pipeline::admit`]. An event without a producer id is left without one: the log
/// names it when it is appended ([`EventLog::append`](crate::store::EventLog::append)), so
/// that the name says where its status is kept.
pub fn prepare(ty: &EventType, data: Data<'_>, envelope: Envelope) -> Result<Event, Refusal> {
    let (data, own_priority) = match data {
        Data::Text(text) => Body::check(ty, text.into()).map_err(|r| match r {
            Rejection::NotJson(e) => Refusal::NotJson(e),
            Rejection::Invalid(errors) => Refusal::Invalid { type_name: ty.name.to_string(), errors },
            Rejection::TooDeep { limit } => Refusal::TooDeep { limit },
        })?,
        Data::Tree(value) => {
            if too_deep(&value) {
                return Err(Refusal::TooDeep { limit: MAX_DATA_DEPTH });
            }
            if let Err(errors) = ty.validate(&value) {
                return Err(Refusal::Invalid { type_name: ty.name.to_string(), errors });
            }
            let priority = ty.priority_of(&value);
            (Body::from_value(value), priority)
        }
    };
    let keyed = envelope.id.is_some();
    let id = envelope.id.unwrap_or_default();
    if id.len() > MAX_ID_BYTES {
        return Err(Refusal::IdTooLong { limit: MAX_ID_BYTES });
    }
    Ok(Event {
        keyed,
        pin: Default::default(),
        id,
        type_name: ty.name,
        time: envelope.time.unwrap_or_else(time::OffsetDateTime::now_utc),
        priority: envelope.priority.unwrap_or(own_priority),
        source: envelope.source,
        data,
        hops: 0,
    })
}

/// Why events could not be accepted; nothing of them was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The queue stayed full for `pipeline.queue_wait_ms`, or the log is full: answer 503
    /// with `Retry-After`.
    #[error("the router is at capacity")]
    Overloaded,
    /// The log could not be written.
    #[error(transparent)]
    Store(StoreError),
}

impl Pipeline {
    /// Takes accepted (validated) events from one `producer`: written to the log and
    /// acknowledged by it (as durably as configured) before this returns; then subscribers
    /// see them and routed ones are queued for the workers. When the queue is full it waits
    /// up to `pipeline.queue_wait_ms` for room (back-pressure: the producer is slowed to the
    /// workers' pace). All or nothing: on an error none was accepted. Answers each event's
    /// id, in order.
    ///
    /// An event whose producer-given id was accepted from the same producer (its token and
    /// CloudEvents `source`) within the idempotency window is a duplicate: it is answered
    /// like the first (same id) and not stored or processed again. The same id from another
    /// producer is another event; should its id be in use, it gets a new one (a UUIDv7).
    ///
    /// Response events answer waiting RPC callers only when `producer` may answer them.
    pub async fn admit(&self, events: Vec<Event>, producer: Producer<'_>) -> Result<Vec<String>, AcceptError> {
        // Routes are matched once per event; duplicates give their reservation back. A
        // shared log hands work out itself (to whichever instance has room): nothing to
        // reserve or queue here.
        let routed = self.core.routed(&events);
        let reserve = if self.core.log.shared() { 0 } else { routed.iter().filter(|r| **r).count() };
        // A producer that hangs up while it waits for room leaves nothing behind.
        if self.core.queue.reserve_within(reserve, self.core.queue_wait).await.is_err() {
            return Err(AcceptError::Overloaded);
        }
        // From here on the admission is finished even if the producer stops waiting.
        let core = self.core.clone();
        let (token, answers) = (producer.token.map(str::to_owned), producer.answers.cloned());
        self.finish_anyway(async move {
            let producer = Producer { token: token.as_deref(), answers: answers.as_ref() };
            core.commit(events, routed, reserve, producer).await
        })
        .await
    }
}

impl Core {
    /// The rest of [`Pipeline::admit`] once room is reserved (`reserve`: for how many):
    /// the append, then the announcements and the queue, or the reservation given back.
    async fn commit(
        &self,
        events: Vec<Event>,
        routed: Vec<bool>,
        reserve: usize,
        producer: Producer<'_>,
    ) -> Result<Vec<String>, AcceptError> {
        let batch = Batch { events, routed, producer: producer.token };
        let appended = match self.log.append(batch).await {
            Ok(appended) => appended,
            Err(e) => {
                self.queue.release(reserve);
                return Err(match e {
                    StoreError::Full { .. } => AcceptError::Overloaded,
                    other => AcceptError::Store(other),
                });
            }
        };
        let Appended { ids, fresh, routed, duplicates } = appended;
        self.counters.accepted.fetch_add(ids.len() as u64, Ordering::Relaxed);
        self.counters.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
        let unused = reserve.saturating_sub(routed.iter().filter(|r| **r).count());
        if unused > 0 {
            self.queue.release(unused);
        }
        for event in &fresh {
            self.announce(event, producer.may_answer(&event.type_name));
        }
        if self.log.shared() {
            return Ok(ids);
        }
        // One lock and one wake-up for the batch (a push per event cost a futex call each).
        let jobs = fresh.into_iter().zip(routed).filter(|(_, routed)| *routed);
        self.queue.push_all(jobs.map(|(event, _)| (event.priority, Job::Event { event, reserved: true })));
        Ok(ids)
    }

    /// Tells who listens that `event` was admitted: live subscribers, and RPC callers when
    /// its producer may answer them.
    pub(super) fn announce(&self, event: &Event, may_answer: bool) {
        self.bus.publish(event);
        if may_answer {
            self.rpc.offer(event);
        }
    }

    /// Admits an event a plugin (`plugin`) emitted while working on `parent`; the plugin
    /// host has already checked it against its schema and the plugin's manifest. It gets an
    /// id and its hop count, is announced (plugins may answer RPC callers: their manifest
    /// lists the response types they emit) and is in progress until the worker has
    /// processed it; one no route takes (a response, most often) is finished as it is made,
    /// with one status write. Its time is `made` (when the plugin answered). Answers the
    /// event and whether it is routed; past the hop limit, the event and the `hop_limit`
    /// failure.
    pub(super) fn admit_emitted(
        &self,
        plugin: &str,
        parent: &Event,
        e: Checked,
        made: time::OffsetDateTime,
    ) -> Result<(Event, bool), (Event, Failure)> {
        let mut source = String::with_capacity("plugin:".len() + plugin.len());
        source.push_str("plugin:");
        source.push_str(plugin);
        let mut event = Event {
            id: String::new(),
            type_name: e.type_name,
            time: made,
            priority: e.priority,
            source: Some(source),
            data: e.data,
            hops: parent.hops.saturating_add(1),
            keyed: false,
            pin: Default::default(),
        };
        if event.hops > self.hop_limit {
            // Not tracked: its dead letter, under the parent, is where it is seen.
            event.id = crate::event::new_id();
            let message = format!("emitted event went past the hop limit of {}", self.hop_limit);
            return Err((event, Failure::new(FailureKind::HopLimit, message)));
        }
        self.counters.emitted.fetch_add(1, Ordering::Relaxed);
        let routed = self.is_routed_name(event.type_name);
        let state = if routed { State::InProgress } else { State::Processed { outcome: Outcome::default() } };
        // Named and tracked before it is announced: a subscriber that asks for its status
        // finds it.
        self.log.track_named(&mut event, state);
        self.announce(&event, true);
        Ok((event, routed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::pipeline::tests::{event, pipeline, state};
    use std::time::{Duration, Instant};

    /// A producer that hangs up while its events are being written (its admission future
    /// dropped after its first poll) leaves nothing half done: every event is queued and
    /// processed, and the queue room they reserved comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admission_dropped_while_it_is_written_is_finished_anyway() {
        let (pipeline, _dir) = pipeline();
        let core = pipeline.core();
        let mut dropped_halfway = 0;
        for i in 0..20 {
            let mut admit = Box::pin(pipeline.admit(vec![event(&format!("hung-up-{i}"))], Producer::default()));
            if futures_util::poll!(admit.as_mut()).is_pending() {
                dropped_halfway += 1;
            }
        }
        assert!(dropped_halfway > 0, "no admission was still writing after its first poll");
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..20 {
            let id = format!("hung-up-{i}");
            while !matches!(state(core, &id), Some(State::Processed { .. })) {
                assert!(Instant::now() < deadline, "{id} was never processed: {:?}", state(core, &id));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let capacity = crate::router::config::PipelineConfig::default().queue;
        assert!(core.queue.reserve(capacity).is_ok(), "every reservation came back");
        core.queue.close();
    }
}
