//! The conformance kit: one suite every [`EventLog`] backend must pass, so that the NATS
//! JetStream backend (issue 13) is held to exactly the contract the local log keeps. Run it
//! with a factory that opens the backend on a given directory (a backend that needs no
//! directory may ignore it): `conformance::run(|dir| open_my_log(dir)).await`.
//!
//! The factory must treat events of type [`ROUTED`] as routed when it recovers them (the
//! local log asks a predicate at open; a shared log keeps the flag with the event). Each
//! check panics with what the contract says and what the backend did.

use super::status::State;
use super::{Batch, EventLog};
use crate::event::{Body, Event, FailureNote, Outcome};
use std::path::Path;

/// The type of the kit's routed events.
pub const ROUTED: &str = "kit/routed";
/// The type of the kit's unrouted events (finished as soon as they are durable).
pub const UNROUTED: &str = "kit/unrouted";

/// Runs every check, each on a fresh directory.
pub async fn run<L: EventLog>(open: impl Fn(&Path) -> L) {
    let fresh = || tempfile::tempdir().expect("a temp dir for the log");
    let dir = fresh();
    appends_answer_ids_in_order_and_claim_routed_events(&open(dir.path())).await;
    let dir = fresh();
    producer_ids_are_deduplicated_per_producer(&open(dir.path())).await;
    let dir = fresh();
    statuses_follow_each_event_to_its_outcome(&open(dir.path())).await;
    let dir = fresh();
    recovery_hands_back_unfinished_events_once_and_remembers_the_rest(&open, dir.path()).await;
}

/// An event of type `type_name`; `id` given by the producer (an idempotency key) or made.
pub fn event(type_name: &str, id: Option<&str>) -> Event {
    Event {
        id: id.map_or_else(|| uuid::Uuid::now_v7().to_string(), String::from),
        type_name: type_name.into(),
        time: time::OffsetDateTime::now_utc(),
        priority: 3,
        source: None,
        data: Body::from_value(serde_json::json!({ "n": 1 })),
        hops: 0,
        keyed: id.is_some(),
    }
}

fn batch(events: Vec<Event>, producer: Option<&str>) -> Batch<'_> {
    let routed = events.iter().map(|e| &*e.type_name == ROUTED).collect();
    Batch { events, routed, producer }
}

async fn appends_answer_ids_in_order_and_claim_routed_events(log: &impl EventLog) {
    let events = vec![event(ROUTED, None), event(UNROUTED, None), event(ROUTED, Some("given-1"))];
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let appended = log.append(batch(events, None)).await.expect("an append to a healthy log");
    assert_eq!(appended.ids, ids, "one id per event, in order, the producer's when given");
    assert_eq!(appended.duplicates, 0);
    let claimed: Vec<(&str, bool)> =
        appended.fresh.iter().zip(&appended.routed).map(|(e, r)| (e.id.as_str(), *r)).collect();
    assert_eq!(claimed, vec![(ids[0].as_str(), true), (ids[1].as_str(), false), (ids[2].as_str(), true)]);
    assert!(matches!(log.status(&ids[0]).map(|s| s.state), Some(State::Queued)), "a routed event is queued");
    let unrouted = log.status(&ids[1]).map(|s| s.state);
    assert!(matches!(unrouted, Some(State::Processed { .. })), "an unrouted event is finished once durable");
    assert!(log.status("no-such-event").is_none(), "an unknown id has no status");
    let empty = log.append(batch(Vec::new(), None)).await.expect("an empty batch");
    assert!(empty.ids.is_empty() && empty.fresh.is_empty());
}

async fn producer_ids_are_deduplicated_per_producer(log: &impl EventLog) {
    let first = log.append(batch(vec![event(ROUTED, Some("order-7"))], Some("token-a"))).await.unwrap();
    assert_eq!(first.ids, ["order-7"]);
    let again = log.append(batch(vec![event(ROUTED, Some("order-7"))], Some("token-a"))).await.unwrap();
    assert_eq!(again.ids, ["order-7"], "a duplicate is answered with the first's id");
    assert_eq!(again.duplicates, 1);
    assert!(again.fresh.is_empty(), "a duplicate is not stored or claimed again");
    let other = log.append(batch(vec![event(ROUTED, Some("order-7"))], Some("token-b"))).await.unwrap();
    assert_eq!(other.duplicates, 0, "another producer's id is another event");
    assert_eq!(other.fresh.len(), 1);
    assert_ne!(other.ids[0], "order-7", "it gets its own id: the first keeps `order-7`");
    assert_eq!(other.fresh[0].id, other.ids[0]);
    let within = vec![event(ROUTED, Some("twice")), event(ROUTED, Some("twice"))];
    let within = log.append(batch(within, Some("token-a"))).await.unwrap();
    assert_eq!(within.ids, ["twice", "twice"], "a duplicate within one batch is answered like the first");
    assert_eq!((within.fresh.len(), within.duplicates), (1, 1));
}

async fn statuses_follow_each_event_to_its_outcome(log: &impl EventLog) {
    let appended = log.append(batch(vec![event(ROUTED, None), event(ROUTED, None)], None)).await.unwrap();
    let (ok, bad) = (&appended.fresh[0], &appended.fresh[1]);
    log.progress(&ok.id, State::InProgress);
    assert!(matches!(log.status(&ok.id).map(|s| s.state), Some(State::InProgress)));
    let emitted = event("kit/emitted", None);
    log.track(&emitted, State::InProgress);
    assert!(matches!(log.status(&emitted.id).map(|s| s.state), Some(State::InProgress)), "emitted events are tracked");
    let outcome = Outcome { dropped: vec![("filter".into(), "not today".into())], ..Outcome::default() };
    log.complete(ok, outcome.clone());
    match log.status(&ok.id) {
        Some(s) => match s.state {
            State::Processed { outcome: kept } => assert_eq!(kept, outcome, "the outcome is kept"),
            other => panic!("a completed event without failures is processed, not {other:?}"),
        },
        None => panic!("a completed event keeps its status"),
    }
    let failed = FailureNote { plugin: "h".into(), kind: "trap".into(), message: "boom".into(), attempts: 1 };
    log.complete(bad, Outcome { failed: vec![failed], ..Outcome::default() });
    assert!(matches!(log.status(&bad.id).map(|s| s.state), Some(State::DeadLettered { .. })));
    let s = log.status(&bad.id).unwrap();
    assert_eq!((&*s.type_name, s.priority), (ROUTED, 3), "the status names the type and priority");
}

async fn recovery_hands_back_unfinished_events_once_and_remembers_the_rest<L: EventLog>(
    open: &impl Fn(&Path) -> L,
    dir: &Path,
) {
    let (finished, unfinished) = {
        let log = open(dir);
        let events = vec![event(ROUTED, Some("keyed")), event(ROUTED, None), event(ROUTED, None), event(UNROUTED, None)];
        let appended = log.append(batch(events, Some("token-a"))).await.unwrap();
        let ids: Vec<String> = appended.ids.clone();
        log.complete(&appended.fresh[1], Outcome::default());
        log.flush().await;
        (ids[1].clone(), vec![ids[0].clone(), ids[2].clone()])
    };
    let log = open(dir);
    let mut recovered: Vec<String> = log.take_recovered().into_iter().map(|e| e.id).collect();
    recovered.sort();
    let mut expected = unfinished.clone();
    expected.sort();
    assert_eq!(recovered, expected, "exactly the unfinished routed events come back");
    assert!(log.take_recovered().is_empty(), "each recovered event is handed out once");
    assert!(matches!(log.status(&finished).map(|s| s.state), Some(State::Processed { .. })), "finished stays finished");
    assert!(matches!(log.status(&unfinished[1]).map(|s| s.state), Some(State::Queued)), "unfinished is queued again");
    let again = log.append(batch(vec![event(ROUTED, Some("keyed"))], Some("token-a"))).await.unwrap();
    assert_eq!(again.duplicates, 1, "idempotency survives a restart");
}
