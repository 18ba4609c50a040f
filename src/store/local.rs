//! [`LocalStore`]: the segment log's records (under [`super::LocalLog`]), for one machine with no external
//! service. Keeps, per segment, how many of its routed events are still unfinished; once
//! the oldest segments hold none, the writer deletes them (compaction), so disk use is
//! bounded by the unfinished events plus at most one segment of finished ones... and by
//! `max_bytes`, past which appends are refused (back-pressure) instead of filling the disk.

use super::segment::{self, Command, Needed, Writer};
use super::{Ack, Durability, Record, Recovered, StoreError};
use crate::event::Event;
use crate::event::Outcome;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Settings of the local log (from `[store]` in the config).
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Appends are refused (503) while the log holds more than this.
    pub max_bytes: u64,
}

pub struct LocalStore {
    tx: crossbeam_channel::Sender<Command>,
    /// The segment appends currently go to (or the one before, just after a roll: an event
    /// is never tracked in a segment newer than the one it lands in).
    current: Arc<AtomicU64>,
    /// Bytes of all segments on disk.
    bytes: Arc<AtomicU64>,
    /// Bytes of the other files the bound covers (the dead letters), kept by their owners.
    side: Arc<AtomicU64>,
    max_bytes: u64,
    tracking: Mutex<Tracking>,
    /// The directory's lock, held as long as this store lives (see [`lock_dir`]).
    _lock: Arc<std::fs::File>,
}

/// How long opening waits for another holder of the directory to let go: a router being
/// restarted may still be writing its last group when the new one starts.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the exclusive lock of the log directory (the file `lock` in it, which names the
/// holder's pid), waiting up to [`LOCK_WAIT`]. Why: nothing else stops two routers from being
/// started on one `data_dir`, and then each would cut the other's newest records off as a torn
/// tail at its start and delete the other's unfinished segments. An advisory `flock`, which
/// the kernel drops with its holder, so a crashed router's lock never stays behind.
///
/// Within one process a lock already held for the directory is shared, not waited for: a log
/// opened again while the last one is still being let go (an app rebuilt in the same process,
/// as tests do) would otherwise wait on its own process.
fn lock_dir(dir: &Path) -> Result<Arc<std::fs::File>, StoreError> {
    /// The locks this process holds, by directory (held while waiting: two openers of one
    /// directory in this process must not both wait for the other process).
    static HELD: Mutex<Vec<(PathBuf, std::sync::Weak<std::fs::File>)>> = Mutex::new(Vec::new());
    let canonical = dir.canonicalize().map_err(|e| StoreError::io(dir, e))?;
    let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    held.retain(|(_, lock)| lock.strong_count() > 0);
    if let Some(lock) = held.iter().find(|(d, _)| *d == canonical).and_then(|(_, lock)| lock.upgrade()) {
        return Ok(lock);
    }
    let lock = Arc::new(flock_within(dir, LOCK_WAIT)?);
    held.push((canonical, Arc::downgrade(&lock)));
    Ok(lock)
}

/// `flock`s `<dir>/lock` (owner-only), waiting up to `wait` for another holder, and writes this
/// process's pid into it; `InUse`, naming the holder's pid, when it is not let go in time.
fn flock_within(dir: &Path, wait: std::time::Duration) -> Result<std::fs::File, StoreError> {
    use std::fs::TryLockError;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("lock");
    let io = |e| StoreError::io(&path, e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::files::FILE_MODE)
        .open(&path)
        .map_err(io)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                let holder = if holder.is_empty() { "unknown".to_string() } else { holder };
                return Err(StoreError::InUse { path: dir.display().to_string(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    file.set_len(0).and_then(|_| write!(file, "{}", std::process::id())).map_err(io)?;
    Ok(file)
}

/// How many unfinished routed events each segment holds. Each such event holds its segment
/// in its own [`LogPin`](crate::event::LogPin) (the oldest, if it was appended twice), so
/// finishing it needs no look-up by id.
#[derive(Default)]
struct Tracking {
    unfinished: BTreeMap<u64, usize>,
    /// What the writer was last told ([`Command::Needed`]); `None` before it was told.
    told: Option<Needed>,
}

impl Tracking {
    /// Counts `event` as unfinished in segment `seg`, unless it holds a segment already.
    fn track(&mut self, event: &Event, seg: u64) {
        if event.pin.hold(seg) {
            *self.unfinished.entry(seg).or_default() += 1;
        }
    }

    /// Counts `event` as finished: whether that was the last unfinished event of its
    /// segment (which compaction may then delete).
    fn untrack(&mut self, event: &Event) -> bool {
        let Some(seg) = event.pin.release() else { return false };
        let Some(n) = self.unfinished.get_mut(&seg) else {
            debug_assert!(false, "a pin of segment {seg}, which counts no unfinished event");
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.unfinished.remove(&seg);
            return true;
        }
        false
    }
}

impl LocalStore {
    /// Opens (or creates) the log in `options.dir`, recovers what it holds, and starts the
    /// writer on a fresh segment. `routed` says which recovered events need processing.
    pub fn open(
        options: &LocalOptions,
        routed: impl Fn(&Event) -> bool,
    ) -> Result<(LocalStore, Recovered), StoreError> {
        let dir = &options.dir;
        crate::files::private_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        // Before recovery, which cuts what looks like a torn tail: the holder may be writing it.
        let lock = lock_dir(dir)?;
        let (recovered, tracking, next, bytes) = recover(dir, routed)?;
        let writer = Writer::open(dir, next, options.durability, options.segment_bytes)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let current = Arc::new(AtomicU64::new(next));
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (cur, b) = (current.clone(), bytes.clone());
        std::thread::Builder::new()
            .name("eventyard-log".into())
            .spawn(move || writer.with_bytes(b).run(rx, move |n| cur.store(n, Ordering::Release)))
            .map_err(|e| StoreError::io(dir, e))?;
        let store = LocalStore {
            tx,
            current,
            bytes,
            side: Arc::default(),
            max_bytes: options.max_bytes,
            tracking: Mutex::new(tracking),
            _lock: lock,
        };
        store.compact(&mut store.tracking.lock().expect("tracking"));
        Ok((store, recovered))
    }

    /// A counter of bytes that count in `max_bytes` besides the segments: the dead letters
    /// keep it at their file's size, so they cannot grow the data directory past the bound.
    pub fn side_bytes(&self) -> Arc<AtomicU64> {
        self.side.clone()
    }

    /// Tells the writer which segments are needed when that changed (it deletes the older
    /// ones). Called under the tracking lock, before the append of any event tracked after
    /// it is sent: the writer reads the two in that order, so it never deletes a segment an
    /// unfinished event is written to.
    fn compact(&self, t: &mut Tracking) {
        let needed = t.unfinished.keys().next().map_or(Needed::Current, |&n| Needed::From(n));
        if t.told != Some(needed) {
            t.told = Some(needed);
            let _ = self.tx.send(Command::Needed(needed));
        }
    }
}

impl LocalStore {
    /// Appends accepted events. Those that need processing (`routed`) are tracked until
    /// [`complete`](Self::complete)d; the others are finished as soon as they are durable.
    pub fn append(&self, events: &[Event], routed: &[bool]) -> Result<Ack, StoreError> {
        let bytes = self.bytes.load(Ordering::Relaxed) + self.side.load(Ordering::Relaxed);
        if bytes > self.max_bytes {
            return Err(StoreError::Full { bytes });
        }
        let mut frames = Vec::with_capacity(events.len() * 512);
        for event in events {
            segment::frame_event(event, &mut frames)?;
        }
        let (ack, rx) = oneshot::channel();
        {
            let mut t = self.tracking.lock().expect("tracking");
            let seg = self.current.load(Ordering::Acquire);
            for (event, _) in events.iter().zip(routed).filter(|(_, routed)| **routed) {
                t.track(event, seg);
            }
            // Segments of unrouted (finished on arrival) events go once the log has rolled
            // past them, even when no event is ever completed.
            self.compact(&mut t);
        }
        self.tx.send(Command::Append { frames, ack: Some(ack) }).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Records that routed events are finished; not awaited (a crash before it is durable
    /// only means an event is processed again). Several at once (a worker's run): their
    /// `done` records reach the writer in one message and they are forgotten under one lock.
    pub fn complete(&self, done: &[(&Event, Outcome)]) {
        let mut frames = Vec::with_capacity(256 * done.len());
        for (event, outcome) in done {
            // The record as `Record::Done` is written, from borrowed parts: no copy of the id or
            // of an outcome that is within the bounds already (nearly all are).
            let bounded;
            let outcome = if outcome.is_bounded() {
                outcome
            } else {
                bounded = outcome.bounded();
                &bounded
            };
            if let Err(e) = segment::frame_done(&event.id, outcome, &mut frames) {
                let done = |outcome| Record::Done { id: event.id.clone(), outcome };
                // Only a huge id could do this (ids are capped at ingestion): the event is still
                // finished, its outcome is not kept.
                tracing::error!(event = %event.id, error = %e, "outcome too large for the log; recorded without it");
                let _ = segment::frame(&done(Outcome::default()), &mut frames);
            }
        }
        let _ = self.tx.send(Command::Append { frames, ack: None });
        self.untrack(done.iter().map(|(event, _)| *event));
    }

    /// These events' append failed (their producers got an error): they are not tracked
    /// any more (compaction is not pinned by them) and, if part of them reached the disk,
    /// recovery will not process them.
    pub fn abandon(&self, events: &[Event]) {
        let mut frames = Vec::new();
        let ids = events.iter().map(|e| e.id.clone()).collect();
        if segment::frame(&Record::Cancelled { ids }, &mut frames).is_ok() {
            let _ = self.tx.send(Command::Append { frames, ack: None });
        }
        self.untrack(events.iter());
    }

    /// Writes and syncs everything queued (graceful shutdown).
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Flush(tx));
        rx
    }

    /// Bytes in the log not yet compacted away.
    pub fn pending_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl LocalStore {
    /// Forgets finished (or abandoned) events; deletes segments nobody needs any more.
    fn untrack<'a>(&self, events: impl Iterator<Item = &'a Event>) {
        let mut t = self.tracking.lock().expect("tracking");
        let mut freed = false;
        for event in events {
            freed |= t.untrack(event);
        }
        if freed {
            self.compact(&mut t);
        }
    }
}

/// Reads every segment, cuts a torn tail, and sorts events into unfinished and finished.
/// Returns also the tracking of the unfinished, the next segment number and the bytes on disk.
fn recover(dir: &Path, routed: impl Fn(&Event) -> bool) -> Result<(Recovered, Tracking, u64, u64), StoreError> {
    let mut order: Vec<(u64, Event)> = Vec::new();
    let mut done: HashMap<String, Outcome> = HashMap::new();
    // An event cancelled after it was written (its append failed): the index in `order` up
    // to which its copies are void.
    let mut cancelled: HashMap<String, usize> = HashMap::new();
    let mut next = 1;
    let mut bytes = 0;
    for (number, path) in segment::segments(dir)? {
        let (records, good) = segment::read_segment(&path)?;
        let len = std::fs::metadata(&path).map_err(|e| StoreError::io(&path, e))?.len();
        if good < len {
            tracing::warn!(path = %path.display(), kept = good, cut = len - good, "cutting a torn record off the log");
            let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
            f.set_len(good).and_then(|_| f.sync_all()).map_err(|e| StoreError::io(&path, e))?;
        }
        bytes += good;
        for r in records {
            match r {
                Record::Event { event } => order.push((number, event)),
                Record::Done { id, outcome } => {
                    done.insert(id, outcome);
                }
                Record::Cancelled { ids } => {
                    for id in ids {
                        cancelled.insert(id, order.len());
                    }
                }
            }
        }
        next = number + 1;
    }
    let mut recovered = Recovered::default();
    let mut tracking = Tracking::default();
    let mut seen = std::collections::HashSet::new();
    for (at, (seg, event)) in order.into_iter().enumerate() {
        if cancelled.get(&event.id).is_some_and(|&upto| at < upto) || !seen.insert(event.id.clone()) {
            continue;
        }
        match done.remove(&event.id) {
            Some(outcome) => recovered.finished.push((event, outcome)),
            None if routed(&event) => {
                tracking.track(&event, seg);
                recovered.pending.push(event);
            }
            None => recovered.finished.push((event, Outcome::default())),
        }
    }
    if !recovered.pending.is_empty() {
        tracing::info!(events = recovered.pending.len(), "recovered unfinished events from the log");
    }
    Ok((recovered, tracking, next, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            type_name: crate::name::Name::intern("t/x"),
            time: time::OffsetDateTime::UNIX_EPOCH,
            priority: 3,
            source: None,
            data: crate::event::Body::from_value(serde_json::json!({"a": 1})),
            hops: 0,
            keyed: false,
            pin: Default::default(),
        }
    }

    #[test]
    fn a_done_record_framed_by_hand_is_the_same_json_as_an_owned_one() {
        let outcome = Outcome {
            emitted: vec![crate::event::Emission {
                plugin: crate::name::Name::intern("p"),
                type_name: crate::name::Name::intern("t/y"),
                id: "e\"1".into(),
            }],
            failed: vec![crate::event::FailureNote {
                plugin: "q".into(),
                kind: "trap".into(),
                message: "m".into(),
                attempts: 2,
            }],
            dropped: vec![("f".into(), "r".into())],
        };
        for outcome in [outcome.clone(), Outcome { failed: vec![], dropped: vec![], ..outcome.clone() }] {
            let owned = serde_json::to_vec(&Record::Done { id: "a\"b".into(), outcome: outcome.clone() }).unwrap();
            let mut framed = Vec::new();
            segment::frame_done("a\"b", &outcome, &mut framed).unwrap();
            assert_eq!(&framed[12..], &owned[..], "the frame's payload after its 12-byte header");
        }
        assert!(outcome.is_bounded());
        let long = Outcome {
            failed: vec![crate::event::FailureNote { message: "x".repeat(5000), ..outcome.failed[0].clone() }],
            ..outcome
        };
        assert!(!long.is_bounded());
    }

    /// An event counts once in the oldest segment it was appended to, and only the event
    /// the log counted (not a copy of it) lets go of it, once.
    #[test]
    fn each_event_pins_one_segment_until_it_is_finished() {
        let mut t = Tracking::default();
        let (a, b) = (event("a"), event("b"));
        t.track(&a, 5);
        t.track(&a, 7);
        t.track(&b, 7);
        assert_eq!(t.unfinished.get(&5), Some(&1), "appended again, it keeps the older segment");
        assert_eq!(t.unfinished.get(&7), Some(&1));
        assert!(!t.untrack(&a.clone()), "a copy holds nothing");
        assert!(t.untrack(&a), "segment 5 has nothing unfinished now");
        assert!(!t.untrack(&a), "finished once");
        assert_eq!(t.unfinished.get(&7), Some(&1));
        assert!(t.untrack(&b));
        assert!(t.unfinished.is_empty());
    }

    /// The directory's lock keeps other holders out while a store lives, names its holder,
    /// is shared by stores of one process, and goes with the last of them.
    #[test]
    fn the_directory_is_locked_while_a_store_lives() {
        let dir = tempfile::tempdir().unwrap();
        let options = small(dir.path(), Durability::Off);
        let (a, _) = LocalStore::open(&options, |_| true).unwrap();
        let (b, _) = LocalStore::open(&options, |_| true).expect("the same process shares its lock");
        let path = dir.path().join("lock");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), std::process::id().to_string());
        // Another open file description, as another process would have.
        let other = std::fs::File::open(&path).unwrap();
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(a);
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)), "held while a store lives");
        drop(b);
        other.try_lock().expect("let go with the last store");
        // Opening waits for a holder that lets go within LOCK_WAIT (a restart overlapping the
        // old process's shutdown)...
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(other);
        });
        LocalStore::open(&options, |_| true).expect("taken once the holder let go");
        release.join().unwrap();
        // ...and names one that does not.
        let other = std::fs::File::open(&path).unwrap();
        other.try_lock().unwrap();
        std::fs::write(&path, "4242").unwrap();
        match flock_within(dir.path(), std::time::Duration::from_millis(100)) {
            Err(StoreError::InUse { holder, .. }) => assert_eq!(holder, "4242"),
            r => panic!("not refused: {r:?}"),
        }
    }

    /// A small log of `durability` in `dir`.
    fn small(dir: &Path, durability: Durability) -> LocalOptions {
        LocalOptions { dir: dir.to_path_buf(), durability, segment_bytes: 4096, max_bytes: 1 << 30 }
    }

    #[tokio::test]
    async fn an_abandoned_append_pins_nothing_and_is_not_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let options = small(dir.path(), Durability::Always);
        {
            let (store, _) = LocalStore::open(&options, |_| true).unwrap();
            // As if the sync of this append had failed after its bytes reached the file.
            let lost = [event("lost")];
            store.append(&lost, &[true]).unwrap().await.unwrap().unwrap();
            store.abandon(&lost);
            assert!(store.tracking.lock().unwrap().unfinished.is_empty(), "compaction is not pinned");
            // The producer retries with the same id, accepted this time.
            store.append(&lost, &[true]).unwrap().await.unwrap().unwrap();
            store.append(&[event("kept")], &[true]).unwrap().await.unwrap().unwrap();
            store.abandon(&[event("gone")]);
            store.flush().await.unwrap();
        }
        let (_store, recovered) = LocalStore::open(&options, |_| true).unwrap();
        let pending: Vec<&str> = recovered.pending.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(pending, ["lost", "kept"], "the retry after the cancel stands");
    }
}
