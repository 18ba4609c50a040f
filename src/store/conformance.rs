//! The conformance kit: one suite every [`EventLog`] backend must pass, so that the NATS
//! JetStream backend (issue 13) is held to exactly the contract the local log keeps. Run it
//! with a factory that opens the backend on a given directory (a backend that needs no
//! directory may ignore it, a shared one uses it to name its streams):
//! `conformance::run(|dir| open_my_log(dir)).await`.
//!
//! The factory must treat events of type [`ROUTED`] as routed when it recovers them (the
//! local log asks a predicate at open; a shared log keeps the flag with the event). Each
//! check panics with what the contract says and what the backend did.
//!
//! "Claimed" work is what an instance is handed to process: the local log hands back what
//! a crash left unfinished ([`EventLog::take_recovered`]); a shared log hands work to
//! whichever instance is attached ([`EventLog::attach`]), and what an instance held when
//! it stopped goes to the next one. The kit reads both through [`claimed`].

use super::status::State;
use super::{Appended, Batch, EventLog, Feed};
use crate::event::{Body, Event, FailureNote, Outcome};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long [`claimed`] waits for a shared log's work after the expected events came, to
/// see whether more (which the contract forbids) follow.
const QUIET: Duration = Duration::from_millis(500);
/// Longest [`claimed`] waits for a shared log's expected work: more than a backend's ack
/// wait in the kit (what a stopped instance held goes to the next after it).
const CLAIM_WAIT: Duration = Duration::from_secs(20);

/// Appends made at once by [`concurrent_appends_each_get_their_own_answer`], most of them
/// of one event: more in flight than the NATS client lets wait for their acks (5,000), so
/// its back-pressure is part of the check. (One group of the NATS log's publisher stays
/// far smaller: tokio runs the deferred flusher after at most ~61 other tasks.)
const CONCURRENT_APPENDS: usize = 6_000;
/// One append in [`ROUTED_EVERY`] is a routed event, one more a batch of [`BATCH`] (one of
/// them routed): few routed events, since a shared log's consumers hand each out.
const ROUTED_EVERY: usize = 100;
const BATCH: usize = 50;

/// The type of the kit's routed events.
pub const ROUTED: &str = "kit/routed";
/// The type of the kit's unrouted events (finished as soon as they are durable).
pub const UNROUTED: &str = "kit/unrouted";

/// Runs every check, each on a fresh directory.
pub async fn run<L: EventLog + 'static, F: Future<Output = L>>(open: impl Fn(&Path) -> F) {
    let fresh = || tempfile::tempdir().expect("a temp dir for the log");
    let dir = fresh();
    appends_answer_ids_in_order_and_claim_routed_events(&open(dir.path()).await).await;
    let dir = fresh();
    producer_ids_are_deduplicated_per_producer(&open(dir.path()).await).await;
    let dir = fresh();
    statuses_follow_each_event_to_its_outcome(&open(dir.path()).await).await;
    let dir = fresh();
    concurrent_appends_each_get_their_own_answer(&open(dir.path()).await).await;
    let dir = fresh();
    recovery_hands_back_unfinished_events_once_and_remembers_the_rest(&open, dir.path()).await;
}

/// The work `log` hands this instance now (see the module doc). The local log: the routed
/// events of `appended` (claimed by appending them), or what it recovered at open. A shared
/// log: what its feed delivers, waiting up to [`CLAIM_WAIT`] for `expect` events, then
/// [`QUIET`] more so that extra deliveries show.
pub async fn claimed(log: &dyn EventLog, appended: Option<&Appended>, expect: usize) -> Vec<Event> {
    if !log.shared() {
        return match appended {
            Some(a) => {
                a.fresh.iter().zip(&a.routed).filter(|(_, routed)| **routed).map(|(e, _)| e.take_over()).collect()
            }
            None => log.take_recovered(),
        };
    }
    let sink = Arc::new(Collect::default());
    log.attach(sink.clone());
    let count = || sink.0.lock().expect("claims").len();
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    while count() < expect && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(QUIET).await;
    let taken = std::mem::take(&mut *sink.0.lock().expect("claims"));
    taken
}

/// A feed that keeps the work it is handed.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl Feed for Collect {
    fn work(&self, event: Event, _: Option<Vec<u8>>) -> BoxFuture<'_, ()> {
        self.0.lock().expect("claims").push(event);
        Box::pin(std::future::ready(()))
    }
    fn admitted(&self, _: Event, _: bool) {}
    fn finished(&self, _: &str, _: &Outcome) {}
}

/// An event of type `type_name`; `id` given by the producer (an idempotency key), or none
/// (empty, as the router offers such events: the log names them).
pub fn event(type_name: &str, id: Option<&str>) -> Event {
    Event {
        id: id.map_or_else(String::new, String::from),
        type_name: crate::name::Name::intern(type_name),
        time: time::OffsetDateTime::now_utc(),
        priority: 3,
        source: None,
        data: Body::from_value(serde_json::json!({ "n": 1 })),
        hops: 0,
        keyed: id.is_some(),
        pin: Default::default(),
    }
}

fn batch(events: Vec<Event>, producer: Option<&str>) -> Batch<'_> {
    let routed = events.iter().map(|e| &*e.type_name == ROUTED).collect();
    Batch { events, routed, producer }
}

async fn appends_answer_ids_in_order_and_claim_routed_events(log: &impl EventLog) {
    let events = vec![event(ROUTED, None), event(UNROUTED, None), event(ROUTED, Some("given-1"))];
    let appended = log.append(batch(events, None)).await.expect("an append to a healthy log");
    // The producer's id when it gave one; else a name the log gives.
    let ids = appended.ids.clone();
    assert_eq!(ids.len(), 3, "one id per event");
    assert_eq!(ids[2], "given-1", "in order, the producer's when given");
    assert!(ids[0] != ids[1] && !ids[0].is_empty() && !ids[1].is_empty() && ids[0] != ids[2], "ids of their own");
    assert_eq!(appended.duplicates, 0);
    let claimed: Vec<(&str, bool)> =
        appended.fresh.iter().zip(&appended.routed).map(|(e, r)| (e.id.as_str(), *r)).collect();
    assert_eq!(claimed, vec![(ids[0].as_str(), true), (ids[1].as_str(), false), (ids[2].as_str(), true)]);
    assert!(matches!(log.status(&ids[0]).await.map(|s| s.state), Some(State::Queued)), "a routed event is queued");
    let unrouted = log.status(&ids[1]).await.map(|s| s.state);
    assert!(matches!(unrouted, Some(State::Processed { .. })), "an unrouted event is finished once durable");
    assert!(log.status("no-such-event").await.is_none(), "an unknown id has no status");
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

/// Producers append at once (a backend may group their writes, as the local log's group
/// commit and the NATS log's group publishing do): each gets its own ids back, and every
/// routed event is claimed exactly once.
async fn concurrent_appends_each_get_their_own_answer(log: &impl EventLog) {
    let appends = (0..CONCURRENT_APPENDS).map(|i| {
        // Each append's first event has a producer id (kept: it shows whose answer is whose);
        // the others none (the log names them).
        let own = format!("concurrent-{i}");
        let events = match i % ROUTED_EVERY {
            0 => vec![event(ROUTED, Some(&own))],
            1 => std::iter::once(event(ROUTED, Some(&own))).chain((1..BATCH).map(|_| event(UNROUTED, None))).collect(),
            _ => vec![event(UNROUTED, Some(&own))],
        };
        let sent: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        async move { (sent, log.append(batch(events, None)).await.expect("an append to a healthy log")) }
    });
    let answers = futures_util::future::join_all(appends).await;
    let (mut routed, mut every) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for (sent, appended) in &answers {
        assert_eq!(appended.ids.len(), sent.len(), "an id per event");
        assert_eq!(appended.ids[0], sent[0], "each append is answered with its own events' ids");
        let fresh: Vec<&String> = appended.fresh.iter().map(|e| &e.id).collect();
        assert!(appended.ids.iter().eq(fresh), "in order");
        assert!(appended.ids.iter().all(|id| every.insert(id.clone())), "no id is answered twice");
        for (e, r) in appended.fresh.iter().zip(&appended.routed) {
            assert_eq!(*r, &*e.type_name == ROUTED);
            if *r {
                routed.insert(e.id.clone());
            }
        }
    }
    let claims = if log.shared() {
        claimed(log, None, routed.len()).await
    } else {
        let mut each = Vec::new();
        for (_, appended) in &answers {
            each.extend(claimed(log, Some(appended), 0).await);
        }
        each
    };
    let mut ids: Vec<String> = claims.into_iter().map(|e| e.id).collect();
    ids.sort();
    let mut expected: Vec<String> = routed.into_iter().collect();
    expected.sort();
    assert_eq!(ids, expected, "every routed event is claimed, once");
}

async fn statuses_follow_each_event_to_its_outcome(log: &impl EventLog) {
    let appended = log.append(batch(vec![event(ROUTED, None), event(ROUTED, None)], None)).await.unwrap();
    let (ok, bad) = (&appended.fresh[0], &appended.fresh[1]);
    log.progress(&ok.id, State::InProgress);
    assert!(matches!(log.status(&ok.id).await.map(|s| s.state), Some(State::InProgress)));
    // Tracked under the id its maker gave it.
    let emitted = Event { id: crate::event::new_id(), ..event("kit/emitted", None) };
    log.track(&emitted, State::InProgress);
    assert!(
        matches!(log.status(&emitted.id).await.map(|s| s.state), Some(State::InProgress)),
        "emitted events are tracked"
    );
    // Named by the log: a fresh id, whatever the event had, under which its status moves on.
    let mut named = event("kit/emitted", Some(&emitted.id));
    log.track_named(&mut named, State::InProgress);
    assert!(!named.id.is_empty() && named.id != emitted.id, "a named event gets an id of its own");
    log.progress(&named.id, State::Processed { outcome: Outcome::default() });
    let s = log.status(&named.id).await.expect("named events are tracked");
    assert!(matches!(s.state, State::Processed { .. }));
    assert_eq!((&*s.id, &*s.type_name), (named.id.as_str(), "kit/emitted"));
    let outcome = Outcome { dropped: vec![("filter".into(), "not today".into())], ..Outcome::default() };
    let failed = FailureNote { plugin: "h".into(), kind: "trap".into(), message: "boom".into(), attempts: 1 };
    // Finished together, as a worker finishes its run (one at a time: the recovery case).
    log.complete_many(vec![(ok, outcome.clone()), (bad, Outcome { failed: vec![failed], ..Outcome::default() })]);
    match log.status(&ok.id).await {
        Some(s) => match s.state {
            State::Processed { outcome: kept } => assert_eq!(kept, outcome, "the outcome is kept"),
            other => panic!("a completed event without failures is processed, not {other:?}"),
        },
        None => panic!("a completed event keeps its status"),
    }
    assert!(matches!(log.status(&bad.id).await.map(|s| s.state), Some(State::DeadLettered { .. })));
    let s = log.status(&bad.id).await.unwrap();
    assert_eq!((&*s.type_name, s.priority), (ROUTED, 3), "the status names the type and priority");
}

async fn recovery_hands_back_unfinished_events_once_and_remembers_the_rest<
    L: EventLog + 'static,
    F: Future<Output = L>,
>(
    open: &impl Fn(&Path) -> F,
    dir: &Path,
) {
    let (finished, unfinished) = {
        let log = open(dir).await;
        let events =
            vec![event(ROUTED, Some("keyed")), event(ROUTED, None), event(ROUTED, None), event(UNROUTED, None)];
        let appended = log.append(batch(events, Some("token-a"))).await.unwrap();
        let ids: Vec<String> = appended.ids.clone();
        let work = claimed(&log, Some(&appended), 3).await;
        let mut claimed_ids: Vec<&str> = work.iter().map(|e| e.id.as_str()).collect();
        claimed_ids.sort();
        let mut routed = vec![ids[0].as_str(), ids[1].as_str(), ids[2].as_str()];
        routed.sort();
        assert_eq!(claimed_ids, routed, "the routed events are claimed, each once");
        let done = work.iter().find(|e| e.id == ids[1]).expect("claimed");
        log.complete(done, Outcome::default());
        log.flush().await;
        (ids[1].clone(), vec![ids[0].clone(), ids[2].clone()])
    };
    let log = open(dir).await;
    let mut recovered: Vec<String> = claimed(&log, None, 2).await.into_iter().map(|e| e.id).collect();
    recovered.sort();
    let mut expected = unfinished.clone();
    expected.sort();
    assert_eq!(recovered, expected, "exactly the unfinished routed events come back");
    assert!(claimed(&log, None, 0).await.is_empty(), "each recovered event is handed out once");
    assert!(
        matches!(log.status(&finished).await.map(|s| s.state), Some(State::Processed { .. })),
        "finished stays finished"
    );
    assert!(
        matches!(log.status(&unfinished[1]).await.map(|s| s.state), Some(State::Queued)),
        "unfinished is queued again"
    );
    let again = log.append(batch(vec![event(ROUTED, Some("keyed"))], Some("token-a"))).await.unwrap();
    assert_eq!(again.duplicates, 1, "idempotency survives a restart");
}
