//! The shared vocabulary every layer speaks: an accepted [`Event`] and its [`Body`], type
//! [`pattern`]s, what became of an event ([`outcome`]), why a plugin call failed
//! ([`failure`]), the [`text`] rules for plugin-made strings, and the [`json`] strings
//! written per event. Nothing here knows of the log, the plugin host, the router or any
//! door.

pub mod body;
pub mod failure;
pub mod json;
pub mod outcome;
pub mod pattern;
pub mod prefetch;
pub mod text;

pub use body::Body;
pub use failure::{Failure, FailureKind};
pub use outcome::{Emission, FailureNote, Outcome};

use crate::name::Name;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// Longest event id (a CloudEvents `id`, an NDJSON `id`, an `Idempotency-Key`) and RPC
/// correlation id a producer may give: ids are kept in the status board, the idempotency
/// index, the log and every dead letter. Longer ones are refused at admission with 400
/// `id_too_long`, by every door.
pub const MAX_ID_BYTES: usize = 256;

/// An event that passed validation and was given an id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: Name,
    /// The time the producer gave (CloudEvents `time`) or the time it was accepted;
    /// formatted (RFC 3339) only when someone reads it.
    #[serde(with = "time::serde::rfc3339")]
    pub time: time::OffsetDateTime,
    /// 1 (lowest) to 5 (highest).
    pub priority: u8,
    /// The CloudEvents `source`, or `plugin:<name>` for events a plugin emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The data as it arrived (the producer's body, a plugin's output).
    pub data: Body,
    /// How many plugin emissions led to this event (0 for ingested ones).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u8,
    /// The producer gave the id (an idempotency key): only such ids are remembered for
    /// deduplication (a router-made UUIDv7 cannot come again). Not stored or shown.
    #[serde(skip)]
    pub keyed: bool,
    /// What a log holds for the event until it is finished ([`LogPin`]). Not stored or shown.
    #[serde(skip)]
    pub pin: LogPin,
}

/// What a log holds for an accepted event until it is finished: for the local log, the
/// segment whose deletion the event holds back (0: nothing held). The log sets it when it
/// appends or recovers the event and takes it back when the event is finished, so it needs
/// no index of unfinished events by id (an index's look-up missed the cache for every event
/// at both ends, on a lock both the HTTP threads and the workers took).
///
/// Released at most once: taking it leaves 0, and a clone of the event holds nothing (a
/// copy, such as a dead letter's, is not the event the log counted). Code that finishes a
/// copy instead of the event moves the pin over ([`Event::take_over`]). An event dropped
/// unfinished with its pin keeps its segment until the next start, which recovers it.
#[derive(Debug, Default)]
pub struct LogPin(std::sync::atomic::AtomicU64);

impl Clone for LogPin {
    fn clone(&self) -> Self {
        LogPin::default()
    }
}

impl LogPin {
    /// Holds `at` (non-zero) unless something is held already: whether it took it.
    pub fn hold(&self, at: u64) -> bool {
        debug_assert!(at != 0, "0 means nothing held");
        self.0.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// What was held, now let go of (once: later calls find nothing).
    pub fn release(&self) -> Option<u64> {
        Some(self.0.swap(0, Ordering::Relaxed)).filter(|&at| at != 0)
    }

    /// The pin moved out of this event, for a copy that will be finished in its place.
    pub fn take(&self) -> LogPin {
        LogPin(std::sync::atomic::AtomicU64::new(self.0.swap(0, Ordering::Relaxed)))
    }
}

/// A new router-made id: a UUIDv7 (time-ordered), lower-case and hyphenated, written
/// straight into its string (the formatting machinery of `to_string` costs more than the
/// uuid itself).
pub fn new_id() -> String {
    id_of(uuid::Uuid::now_v7())
}

/// The text of a router-made id: see [`new_id`].
pub fn id_of(uuid: uuid::Uuid) -> String {
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut text).to_owned()
}

/// RFC 3339 in UTC with nanoseconds (`2026-11-23T18:04:31.191252000Z`), written digit by
/// digit into a template: several times cheaper than the general formatter, and this runs
/// on every plugin call. A producer's time whose UTC year RFC 3339 cannot write (one at the
/// edge of the range, `9999-12-31T23:30:00-01:00`) is written in its own offset, as given:
/// every time the router takes was read as RFC 3339, so that always can be written.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(RFC3339_UTC_BYTES);
    write_rfc3339(&mut out, t);
    String::from_utf8(out).expect("RFC 3339 is ASCII")
}

/// Length of [`rfc3339`]'s usual form (UTC, nanoseconds).
const RFC3339_UTC_BYTES: usize = "0000-00-00T00:00:00.000000000Z".len();

/// [`rfc3339`], appended to `out` (no string of its own: a log writes one per event).
pub fn write_rfc3339(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    let utc = t.checked_to_offset(time::UtcOffset::UTC);
    let Some((t, year)) = utc.and_then(|u| u32::try_from(u.year()).ok().filter(|y| *y <= 9999).map(|y| (u, y))) else {
        let given = t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        out.extend_from_slice(given.as_bytes());
        return;
    };
    fn put(field: &mut [u8], mut v: u32) {
        for d in field.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put(&mut b[0..4], year);
    put(&mut b[5..7], u8::from(t.month()).into());
    put(&mut b[8..10], t.day().into());
    put(&mut b[11..13], t.hour().into());
    put(&mut b[14..16], t.minute().into());
    put(&mut b[17..19], t.second().into());
    put(&mut b[20..29], t.nanosecond());
    out.extend_from_slice(&b);
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Event {
    /// A copy to be finished in this event's place: it takes the [`LogPin`] over.
    pub fn take_over(&self) -> Event {
        let mut copy = self.clone();
        copy.pin = self.pin.take();
        copy
    }

    /// Starts loading into this core's cache what handling the event will touch: its id and
    /// its data ([`prefetch`]). For a run of events taken from another core's threads.
    pub fn prefetch(&self) {
        prefetch::read(self.id.as_bytes(), MAX_ID_BYTES);
        self.data.prefetch();
    }

    /// Appends the event as JSON that its `Deserialize` reads back, written by hand: the
    /// data goes in as the producer's text (serde would check it again as a `RawValue` and
    /// escape every other string byte by byte), and this is written for every event a log
    /// keeps. The members are those serde writes, `hops` before `data`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"id":"#);
        json::write_str(out, &self.id);
        out.extend_from_slice(br#","type":"#);
        json::write_str(out, &self.type_name);
        out.extend_from_slice(br#","time":""#);
        write_rfc3339(out, self.time);
        out.extend_from_slice(br#"","priority":"#);
        json::write_u8(out, self.priority);
        if let Some(source) = &self.source {
            out.extend_from_slice(br#","source":"#);
            json::write_str(out, source);
        }
        if self.hops > 0 {
            out.extend_from_slice(br#","hops":"#);
            json::write_u8(out, self.hops);
        }
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(self.data.text().as_bytes());
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_written_by_hand_reads_back_as_serde_writes_it() {
        let rfc = &time::format_description::well_known::Rfc3339;
        let base = Event {
            id: "0192d3f4-aaaa-7bbb-8ccc-0123456789ab".into(),
            type_name: Name::intern("infrahub/send.echo.request"),
            time: time::OffsetDateTime::parse("2026-11-23T18:04:31.191252065Z", rfc).unwrap(),
            priority: 3,
            source: None,
            data: Body::from_value(serde_json::json!({"message": "hi\n\"there\"", "n": [1, 2]})),
            hops: 0,
            keyed: false,
            pin: Default::default(),
        };
        let cases = [
            base.clone(),
            Event {
                id: "id \"quoted\"\\".into(),
                source: Some("plugin:echo\u{1}".into()),
                hops: 12,
                priority: 5,
                ..base
            },
        ];
        for event in &cases {
            let mut ours = Vec::new();
            event.write_json(&mut ours);
            let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            assert_eq!(ours, serde_json::to_value(event).unwrap());
            let back: Event = serde_json::from_value(ours).unwrap();
            assert_eq!((back.id, back.type_name, back.time), (event.id.clone(), event.type_name, event.time));
            assert_eq!((back.priority, back.source, back.hops), (event.priority, event.source.clone(), event.hops));
            assert_eq!(back.data.value(), event.data.value());
        }
    }

    #[test]
    fn a_pin_is_released_once_and_a_clone_holds_nothing() {
        let pin = LogPin::default();
        assert_eq!(pin.release(), None);
        assert!(pin.hold(7));
        assert!(!pin.hold(9), "the first hold stays");
        assert_eq!(pin.clone().release(), None, "a clone holds nothing");
        let moved = pin.take();
        assert_eq!(pin.release(), None, "taken");
        assert_eq!(moved.release(), Some(7));
        assert_eq!(moved.release(), None, "released once");
    }

    #[test]
    fn rfc3339_writes_times_at_the_edge_of_the_range_in_their_own_offset() {
        let rfc = &time::format_description::well_known::Rfc3339;
        for given in ["9999-12-31T23:30:00-01:00", "0000-01-01T00:30:00+01:00"] {
            let t = time::OffsetDateTime::parse(given, rfc).unwrap();
            let written = super::rfc3339(t);
            assert_eq!(written, given);
            assert_eq!(time::OffsetDateTime::parse(&written, rfc).unwrap(), t);
        }
    }

    #[test]
    fn rfc3339_matches_the_general_formatter() {
        let rfc = &time::format_description::well_known::Rfc3339;
        let t = time::OffsetDateTime::parse("2026-11-23T18:04:31.191252065+01:00", rfc).unwrap();
        assert_eq!(super::rfc3339(t), "2026-11-23T17:04:31.191252065Z");
        let parsed = time::OffsetDateTime::parse(&super::rfc3339(t), rfc);
        assert_eq!(parsed.unwrap(), t);
    }
}
