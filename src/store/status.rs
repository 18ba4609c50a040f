//! Where each accepted event is, for `GET /v1/events/{id}`: queued, in progress, retrying
//! (attempt and next time), processed (what each handler emitted) or dead-lettered (why).
//! Bounded: the oldest entries are forgotten past [`STATUS_CAPACITY`]; after a restart the
//! entries are rebuilt from the log.
//!
//! And which producer-given ids were accepted within the idempotency window
//! ([`Idempotency`]), kept apart from the statuses so that the window, not the status
//! board's capacity, decides how long an id is remembered.

use crate::event::{Emission, Outcome};
use crate::name::Name;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Producer-given ids remembered for deduplication (about 50 bytes each: at most ~50 MB).
/// Past it the oldest are forgotten before their window ends, counted in
/// `eventyard_idempotency_evicted_early_total`: a copy of such an event sent again later
/// within its window is accepted as new. Refusing new events instead would let one producer
/// sending unique ids shut ingestion for the whole window.
pub const MAX_IDEMPOTENCY_KEYS: usize = 1_000_000;

/// Events whose status is remembered (~200 bytes each).
pub const STATUS_CAPACITY: usize = 200_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Queued,
    InProgress,
    Retrying {
        plugin: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        next_at: time::OffsetDateTime,
        last_error: String,
    },
    Processed {
        #[serde(flatten)]
        outcome: Outcome,
    },
    DeadLettered {
        #[serde(flatten)]
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// When the router accepted it (for events recovered from the log, the restart): an
    /// id is not reused within the idempotency window from here. (Not kept by a shared
    /// log, whose server ages the ids instead: read back as now.)
    #[serde(skip, default = "time::OffsetDateTime::now_utc")]
    pub accepted_at: time::OffsetDateTime,
    pub id: Arc<str>,
    #[serde(rename = "type")]
    pub type_name: Name,
    pub priority: u8,
    #[serde(flatten)]
    pub state: State,
}

/// Named entries a thread writes into one shard before it moves on to the next: its ring's
/// head and lock stay in that thread's cache. (One shard per entry made every write a cache
/// miss on the lock and on the slot.)
const NAMED_RUN: usize = 64;

/// Where the last group of a hyphenated UUID's hex digits starts (the place of a named id).
const LAST_GROUP: usize = 24;

/// Bytes of a cache line on the machines the router runs on (x86-64).
const CACHE_LINE: usize = 64;

/// Shards of the status board, each behind its own lock. Why: ingestion claims a status per
/// event while the workers write three per event (in progress, an emitted event, finished);
/// with one lock every write, itself a cold cache line, made the others wait (ingestion
/// cost 4.6 times more per event with a route than without). An id's shard is picked by
/// bits of its hash that the shard's index does not use.
pub const STATUS_SHARDS: usize = 16;

pub struct StatusBoard {
    shards: Box<[Mutex<Board>]>,
    hasher: foldhash::fast::RandomState,
    /// Marks the ids this board names ([`StatusBoard::insert_named`]); drawn per process, so
    /// a name from before a restart (whose entry was rebuilt into the index) or another
    /// router's is not taken for a place in this board, nor is a producer's UUID but by
    /// chance (one in 65,536, and then the id comparison turns it away).
    marker: u16,
    /// Where each shard's slots start: they are allocated up front and never move, so a
    /// worker can ask for a slot's lines without taking the lock ([`Self::prefetch`]).
    slot_starts: Box<[usize]>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::with_shards(STATUS_SHARDS, STATUS_CAPACITY)
    }
}

impl StatusBoard {
    /// `capacity` entries in all, split evenly over `shards` rings (each forgets its own
    /// oldest). Sized up front: growing a map of 100,000s of entries under a lock would
    /// stall ingestion for milliseconds at each doubling.
    fn with_shards(shards: usize, capacity: usize) -> Self {
        let per = capacity.div_ceil(shards);
        let board = || Board {
            index: HashMap::with_capacity_and_hasher(per + 1, NoHash),
            slots: Vec::with_capacity(per),
            head: 0,
            capacity: per,
        };
        assert!(shards <= 256 && per < 1 << 24, "a named id has 8 bits for the shard and 24 for the slot");
        let boards: Vec<Board> = (0..shards).map(|_| board()).collect();
        Self {
            slot_starts: boards.iter().map(|b| b.slots.as_ptr() as usize).collect(),
            shards: boards.into_iter().map(Mutex::new).collect(),
            hasher: foldhash::fast::RandomState::default(),
            marker: fastrand::u16(..),
        }
    }

    /// The shard of an id's hash: bits 32 and up (the index's buckets use the low bits and
    /// its control bytes the top seven).
    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Board> {
        let i = ((key >> 32) as usize) % self.shards.len();
        self.shards[i].lock().expect("status board")
    }
}

/// The statuses in a ring of [`STATUS_CAPACITY`] slots, written in acceptance order (so the
/// next slot to write holds the oldest entry, which is evicted), and an index from the
/// 64-bit hash of an id to its slot.
///
/// Why not a map from id to status: with 200,000 entries of ~150 bytes every insert, lookup
/// and eviction touched a different cold cache line of a ~40 MB table, several per event
/// (13% of NDJSON ingestion). The index holds 16-byte entries, and slots are written in
/// order. Two live ids with the same 64-bit hash (seeded per process, so not chosen by a
/// producer) would make the older one forgotten early; at 200,000 entries that is about
/// one chance in 10^9.
struct Board {
    index: HashMap<u64, u32, NoHash>,
    slots: Vec<Slot>,
    /// The slot the next new entry takes.
    head: usize,
    /// Slots in this ring.
    capacity: usize,
}

/// A [`Status`] as the board keeps it: the id in the slot itself when it is short (a UUID
/// is), so that finding an entry reads no other memory and a new entry allocates nothing
/// for it, nor frees anything when it is evicted (on whichever thread evicts it).
struct Slot {
    key: u64,
    /// Whether the index points here: false for an id the board named, whose place is in
    /// the id itself.
    indexed: bool,
    id: SlotId,
    accepted_at: time::OffsetDateTime,
    type_name: Name,
    priority: u8,
    state: Kept,
}

/// A slot's state, with the usual end of an event (processed: one event emitted, nothing
/// failed or dropped) kept inline. Why: that outcome's list and the emitted id were made
/// by the worker that finished the event, and the slot is evicted later by whichever thread
/// writes the next entry into it (an HTTP thread admitting, most often); freeing memory of
/// another thread is an atomic operation on that thread's allocator page, on a cold line,
/// and it was half of the HTTP threads' `free` time on the end-to-end NDJSON row. Inline,
/// the worker frees the outcome it made and eviction frees nothing.
enum Kept {
    Answered { plugin: Name, type_name: Name, id: SlotId },
    Other(State),
}

impl Kept {
    fn new(state: State) -> Kept {
        if let State::Processed { outcome } = &state {
            if let ([one], [], []) = (&outcome.emitted[..], &outcome.failed[..], &outcome.dropped[..]) {
                if one.id.len() <= INLINE_ID_BYTES {
                    return Kept::Answered { plugin: one.plugin, type_name: one.type_name, id: SlotId::new(&one.id) };
                }
            }
        }
        Kept::Other(state)
    }

    fn state(&self) -> State {
        match self {
            Kept::Answered { plugin, type_name, id } => State::Processed {
                outcome: Outcome {
                    emitted: vec![Emission { plugin: *plugin, type_name: *type_name, id: id.as_str().into() }],
                    failed: Vec::new(),
                    dropped: Vec::new(),
                },
            },
            Kept::Other(state) => state.clone(),
        }
    }
}

/// Longest id kept inside a slot: a hyphenated UUID (36 bytes) and a little more.
const INLINE_ID_BYTES: usize = 39;

enum SlotId {
    Inline { len: u8, bytes: [u8; INLINE_ID_BYTES] },
    Heap(Box<str>),
}

impl SlotId {
    fn new(id: &str) -> Self {
        match id.len() {
            len @ 0..=INLINE_ID_BYTES => {
                let mut bytes = [0; INLINE_ID_BYTES];
                bytes[..len].copy_from_slice(id.as_bytes());
                SlotId::Inline { len: len as u8, bytes }
            }
            _ => SlotId::Heap(id.into()),
        }
    }

    /// The id's bytes: what a look-up compares (no UTF-8 check on the hot path).
    fn as_bytes(&self) -> &[u8] {
        match self {
            SlotId::Inline { len, bytes } => &bytes[..*len as usize],
            SlotId::Heap(id) => id.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // Copied from a `&str` whole, so a whole UTF-8 text.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl Slot {
    /// A new state for the same id: it keeps its slot and its acceptance time.
    fn update(&mut self, type_name: Name, priority: u8, state: State) {
        (self.type_name, self.priority, self.state) = (type_name, priority, Kept::new(state));
    }

    fn status(&self) -> Status {
        Status {
            accepted_at: self.accepted_at,
            id: self.id.as_str().into(),
            type_name: self.type_name,
            priority: self.priority,
            state: self.state.state(),
        }
    }
}

impl Board {
    fn find(&self, key: u64, id: &str) -> Option<usize> {
        let at = *self.index.get(&key)? as usize;
        (self.slots[at].id.as_bytes() == id.as_bytes()).then_some(at)
    }

    fn put(&mut self, key: u64, id: &str, type_name: Name, priority: u8, state: State, at: time::OffsetDateTime) {
        if let Some(i) = self.find(key, id) {
            self.slots[i].update(type_name, priority, state);
            return;
        }
        let i = self.head;
        let _evicted = self.push(Slot {
            key,
            indexed: true,
            id: SlotId::new(id),
            accepted_at: at,
            type_name,
            priority,
            state: Kept::new(state),
        });
        self.index.insert(key, i as u32);
    }

    /// Forgets the entry in slot `i` (it stays in the ring, found by no id, until overwritten).
    fn forget(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if !slot.indexed {
            // Its place is in its id: the id goes.
            slot.id = SlotId::new("");
        } else if self.index.get(&slot.key) == Some(&(i as u32)) {
            self.index.remove(&slot.key);
        }
    }

    /// Writes `slot` into the next slot of the ring: the oldest entry leaves (and its index
    /// entry, unless its id was accepted again since, into another slot), returned.
    fn push(&mut self, slot: Slot) -> Option<Slot> {
        let i = self.head;
        self.head = (i + 1) % self.capacity;
        if i == self.slots.len() {
            self.slots.push(slot);
            return None;
        }
        let old = std::mem::replace(&mut self.slots[i], slot);
        if old.indexed && self.index.get(&old.key) == Some(&(i as u32)) {
            self.index.remove(&old.key);
        }
        Some(old)
    }
}

/// The index's keys are already foldhash values: hashing them again would be wasted work.
#[derive(Clone, Copy, Default)]
struct NoHash;

impl std::hash::BuildHasher for NoHash {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl StatusBoard {
    fn key(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(id)
    }

    /// Inserts (or updates) an entry accepted now: the router's time, never a producer's
    /// `time` (events recovered from the log count as accepted at the restart).
    pub fn insert(&self, id: &str, type_name: Name, priority: u8, state: State) {
        if let Some((mut b, i)) = self.named(id) {
            b.slots[i].update(type_name, priority, state);
            return;
        }
        let key = self.key(id);
        let now = time::OffsetDateTime::now_utc();
        self.shard(key).put(key, id, type_name, priority, state, now);
    }

    /// A new entry under an id the board makes up: a UUIDv7 whose last bytes say which
    /// slot of which shard holds it, so that it is written and found again without the
    /// index. Why: the index is a table of 100,000s of entries, and an insert into it (and
    /// the removal of the entry it evicts) misses the cache; for the events plugins emit this
    /// was a sixth of the workers' time.
    ///
    /// `at` is when the router accepted it (a clock read per event was 2% of the end-to-end
    /// row's samples, so callers read it once per batch, or pass the time the router gave an
    /// emitted event).
    pub fn insert_named(&self, type_name: Name, priority: u8, state: State, at: time::OffsetDateTime) -> String {
        thread_local! {
            /// How many named entries this thread made: it writes [`NAMED_RUN`] of them into
            /// one shard, then moves on to the next, going round them all (every ring fills as
            /// fast) from its own start (threads seldom share a shard).
            static MADE: std::cell::Cell<usize> = std::cell::Cell::new(fastrand::usize(..));
        }
        let shard = MADE.with(|n| {
            let made = n.get();
            n.set(made.wrapping_add(1));
            made / NAMED_RUN % self.shards.len()
        });
        let mut b = self.shards[shard].lock().expect("status board");
        let id = self.name(at, shard, b.head);
        let evicted = b.push(Slot {
            key: 0,
            indexed: false,
            id: SlotId::new(&id),
            accepted_at: at,
            type_name,
            priority,
            state: Kept::new(state),
        });
        drop(b);
        // Freed outside the lock (an evicted outcome's memory is cold).
        drop(evicted);
        id
    }

    /// The id of the entry that `slot` of `shard` is about to hold, made at `at` (see
    /// [`Self::place`]).
    fn name(&self, at: time::OffsetDateTime, shard: usize, slot: usize) -> String {
        let millis = u64::try_from(at.unix_timestamp()).unwrap_or_default() * 1000 + u64::from(at.millisecond());
        // The 10 bytes after the time: 26 random bits (around the version and variant), then
        // the place. Not the uuid crate's counter, which would be cut by the place.
        let mut rest = [0u8; 10];
        rest[..4].copy_from_slice(&fastrand::u32(..).to_be_bytes());
        rest[4..6].copy_from_slice(&self.marker.to_be_bytes());
        rest[6] = shard as u8;
        rest[7..].copy_from_slice(&(slot as u32).to_be_bytes()[1..]);
        crate::event::id_of(uuid::Builder::from_unix_timestamp_millis(millis, &rest).into_uuid())
    }

    /// The shard and slot an id this board named says it is in: its last group of hex
    /// digits is the marker (2 bytes), the shard (1) and the slot (3). The UUIDv7 keeps its
    /// millisecond time, version, variant and 26 random bits: two named ids can be alike only
    /// if one slot is written twice within a millisecond (a whole ring: 12,500 entries at the
    /// default capacity), and then only once in 67 million.
    ///
    /// Only that group is read (a worker looks up two places per event): the callers compare
    /// the slot's id with `id` whole, which turns away any other text that ends alike.
    fn place(&self, id: &str) -> Option<(usize, usize)> {
        let id = id.as_bytes();
        if id.len() != uuid::fmt::Hyphenated::LENGTH || id[LAST_GROUP - 1] != b'-' {
            return None;
        }
        let mut last = 0u64;
        for &digit in &id[LAST_GROUP..] {
            last = last << 4 | u64::from(char::from(digit).to_digit(16)?);
        }
        if (last >> 32) as u16 != self.marker {
            return None;
        }
        let (shard, slot) = ((last >> 24) as usize & 0xff, last as usize & 0xff_ffff);
        (shard < self.shards.len()).then_some((shard, slot))
    }

    /// The entry of `id` under its shard's lock: a named id's own place, else the index's.
    fn entry(&self, id: &str) -> Option<(std::sync::MutexGuard<'_, Board>, usize)> {
        if let Some(found) = self.named(id) {
            return Some(found);
        }
        let key = self.key(id);
        let b = self.shard(key);
        let i = b.find(key, id)?;
        Some((b, i))
    }

    /// The entry of a named id, under its shard's lock, if it is still there.
    fn named(&self, id: &str) -> Option<(std::sync::MutexGuard<'_, Board>, usize)> {
        let (shard, i) = self.place(id)?;
        let b = self.shards[shard].lock().expect("status board");
        let slot = b.slots.get(i)?;
        (!slot.indexed && slot.id.as_bytes() == id.as_bytes()).then_some((b, i))
    }

    /// Inserts `id` in `state` unless it was accepted less than `window` ago: false for a
    /// duplicate. Atomic, so two concurrent copies of one event cannot both be accepted.
    /// `now`: when the router accepted it (read once per admitted batch, as for
    /// [`insert_named`](Self::insert_named)).
    pub fn claim(
        &self,
        id: &str,
        type_name: Name,
        priority: u8,
        window: std::time::Duration,
        state: State,
        now: time::OffsetDateTime,
    ) -> bool {
        if let Some((mut b, i)) = self.named(id) {
            // A producer's event under the id of one the router named (copied from a
            // subscription, say): a duplicate within the window, else the old entry goes.
            if now - b.slots[i].accepted_at < window {
                return false;
            }
            b.forget(i);
        }
        let key = self.key(id);
        let mut b = self.shard(key);
        if let Some(i) = b.find(key, id) {
            if now - b.slots[i].accepted_at < window {
                return false;
            }
            // Seen before the window: a new event under an old id, with a fresh time and slot.
            b.forget(i);
        }
        b.put(key, id, type_name, priority, state, now);
        true
    }

    /// Forgets a claim whose event was not accepted after all.
    pub fn unclaim(&self, id: &str) {
        if let Some((mut b, i)) = self.entry(id) {
            b.forget(i);
        }
    }

    pub fn set(&self, id: &str, state: State) {
        if let Some((mut b, i)) = self.entry(id) {
            b.slots[i].state = Kept::new(state);
        }
    }

    pub fn get(&self, id: &str) -> Option<Status> {
        self.entry(id).map(|(b, i)| b.slots[i].status())
    }

    /// Starts loading the slot of a named `id` for writing (a no-op for other ids). A worker
    /// asks for the slots of a whole run of events at once: each was last written by the
    /// thread that admitted the event, often on the other core, and the misses of a run
    /// overlap instead of coming one per [`set`](Self::set).
    pub fn prefetch(&self, id: &str) {
        let Some((shard, slot)) = self.place(id) else { return };
        // Never dereferenced: a prefetch does not fault, even past the slots written so far.
        let start = (self.slot_starts[shard] as *const Slot).wrapping_add(slot).cast::<u8>();
        let size = std::mem::size_of::<Slot>();
        for offset in (0..size).step_by(CACHE_LINE).chain([size - 1]) {
            crate::event::prefetch::write(start.wrapping_add(offset));
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entry(id).is_some()
    }
}

/// The answer of [`Idempotency::claim`].
#[derive(Debug, PartialEq)]
pub enum Dedup {
    /// Not seen within the window: now claimed under this key (for
    /// [`Idempotency::unclaim`] and [`Idempotency::renamed`]).
    Fresh(u64),
    /// Accepted before within the window; the id it was accepted under when the router gave
    /// it another one (its own was another producer's).
    Duplicate(Option<String>),
}

/// Producer-given ids accepted within the idempotency window, keyed by producer (ingestion
/// token and CloudEvents `source`) and id, as CloudEvents specifies: two producers may use
/// the same id. Kept as 64-bit hashes (seeded per process, so not chosen by a producer) in
/// claim order; entries leave when their window ends or past [`MAX_IDEMPOTENCY_KEYS`].
pub struct Idempotency {
    inner: Mutex<Keys>,
    hasher: foldhash::fast::RandomState,
    window: Duration,
    /// Entries forgotten before their window ended (the cap).
    pub evicted_early: AtomicU64,
}

#[derive(Default)]
struct Keys {
    /// Key -> when it was claimed.
    claimed: HashMap<u64, Instant, NoHash>,
    /// Keys in claim order (stale ones, unclaimed or claimed again, are skipped).
    order: VecDeque<(Instant, u64)>,
    /// The ids the router gave events whose own id was taken (rare).
    renamed: HashMap<u64, Box<str>, NoHash>,
    /// Entries recovered from the log, whose token is not known.
    recovered: usize,
}

impl Idempotency {
    pub fn new(window: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            hasher: foldhash::fast::RandomState::default(),
            window,
            evicted_early: AtomicU64::new(0),
        }
    }

    fn key(&self, token: Option<&str>, source: Option<&str>, id: &str) -> u64 {
        use std::hash::BuildHasher;
        // Tuples of strings hash with separators: ("ab", "c") and ("a", "bc") differ.
        self.hasher.hash_one((token.unwrap_or(""), source.unwrap_or(""), id))
    }

    /// Claims `id` for its producer unless it was claimed less than the window ago.
    pub fn claim(&self, token: Option<&str>, source: Option<&str>, id: &str) -> Dedup {
        let key = self.key(token, source, id);
        let now = Instant::now();
        let mut k = self.inner.lock().expect("idempotency keys");
        self.expire(&mut k, now);
        // The log does not keep the token: a recovered entry matches any token.
        let recovered = (token.is_some() && k.recovered > 0).then(|| self.key(None, source, id));
        for key in [Some(key), recovered].iter().flatten() {
            if k.claimed.contains_key(key) {
                return Dedup::Duplicate(k.renamed.get(key).map(|r| r.to_string()));
            }
        }
        self.insert(&mut k, key, now);
        Dedup::Fresh(key)
    }

    /// An event recovered from the log, remembered from now on for a whole window.
    pub fn recovered(&self, source: Option<&str>, id: &str) {
        let key = self.key(None, source, id);
        let now = Instant::now();
        let mut k = self.inner.lock().expect("idempotency keys");
        k.recovered += 1;
        self.insert(&mut k, key, now);
    }

    /// Forgets a claim whose event was not accepted after all.
    pub fn unclaim(&self, key: u64) {
        let mut k = self.inner.lock().expect("idempotency keys");
        k.claimed.remove(&key);
        k.renamed.remove(&key);
    }

    /// The claimed event was accepted under `id` (its own was taken).
    pub fn renamed(&self, key: u64, id: &str) {
        self.inner.lock().expect("idempotency keys").renamed.insert(key, id.into());
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("idempotency keys").claimed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, k: &mut Keys, key: u64, now: Instant) {
        k.claimed.insert(key, now);
        k.order.push_back((now, key));
        self.expire(k, now);
    }

    /// Drops the entries whose window is over, then the oldest past the cap.
    fn expire(&self, k: &mut Keys, now: Instant) {
        while let Some(&(at, key)) = k.order.front() {
            let over = now.saturating_duration_since(at) >= self.window;
            if !over && k.order.len() <= MAX_IDEMPOTENCY_KEYS {
                break;
            }
            k.order.pop_front();
            if k.claimed.get(&key) == Some(&at) {
                k.claimed.remove(&key);
                k.renamed.remove(&key);
                if !over {
                    self.evicted_early.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if k.order.is_empty() {
            k.recovered = 0;
        }
    }
}

/// The final state for an outcome.
pub fn finished(outcome: Outcome) -> State {
    if outcome.failed.is_empty() {
        State::Processed { outcome }
    } else {
        State::DeadLettered { outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_keyed_by_producer_and_forgotten_when_their_window_ends() {
        let keys = Idempotency::new(Duration::from_millis(200));
        let Dedup::Fresh(a) = keys.claim(None, Some("a"), "1") else { panic!("fresh") };
        assert!(matches!(keys.claim(None, Some("b"), "1"), Dedup::Fresh(_)), "another source, same id");
        assert!(matches!(keys.claim(Some("token-x"), Some("a"), "1"), Dedup::Fresh(_)), "another token");
        assert_eq!(keys.claim(None, Some("a"), "1"), Dedup::Duplicate(None));
        keys.renamed(a, "other");
        assert_eq!(keys.claim(None, Some("a"), "1"), Dedup::Duplicate(Some("other".into())));
        keys.unclaim(a);
        assert!(matches!(keys.claim(None, Some("a"), "1"), Dedup::Fresh(_)), "unclaimed ids can come again");
        std::thread::sleep(Duration::from_millis(250));
        assert!(matches!(keys.claim(None, Some("a"), "1"), Dedup::Fresh(_)), "the window is over");
        assert_eq!(keys.len(), 1, "expired entries left memory");
        // Recovered entries (the log does not keep tokens) match any token.
        keys.recovered(Some("s"), "r");
        assert!(matches!(keys.claim(Some("token-y"), Some("s"), "r"), Dedup::Duplicate(None)));
    }

    #[test]
    fn past_the_cap_the_oldest_ids_are_forgotten_early_and_counted() {
        let keys = Idempotency::new(Duration::from_secs(3600));
        for i in 0..MAX_IDEMPOTENCY_KEYS + 10 {
            keys.claim(None, None, &i.to_string());
        }
        assert_eq!(keys.len(), MAX_IDEMPOTENCY_KEYS);
        assert_eq!(keys.evicted_early.load(Ordering::Relaxed), 10);
        assert!(matches!(keys.claim(None, None, "0"), Dedup::Fresh(_)), "the oldest was forgotten");
        assert_eq!(keys.claim(None, None, "11"), Dedup::Duplicate(None));
    }

    /// Ids up to [`INLINE_ID_BYTES`] live in the slot, longer ones on the heap; both read
    /// back whole, multi-byte characters included, and find only themselves.
    #[test]
    fn short_and_long_ids_read_back_whole() {
        let board = StatusBoard::with_shards(1, 16);
        let t: Name = crate::name::Name::intern("t/x");
        let uuid = "0192f0c4-6f0e-7cc1-9c4f-2b8d1d0e5a11";
        let edge = "é".repeat(INLINE_ID_BYTES / 2) + "x";
        let long = "ü".repeat(100);
        for id in ["", "a", uuid, edge.as_str(), long.as_str()] {
            board.insert(id, t, 2, State::Queued);
        }
        for id in ["", "a", uuid, edge.as_str(), long.as_str()] {
            let s = board.get(id).expect("kept");
            assert_eq!(&*s.id, id);
            assert_eq!(s.priority, 2);
        }
        assert_eq!(edge.len(), INLINE_ID_BYTES);
        assert!(matches!(SlotId::new(&edge), SlotId::Inline { .. }));
        assert!(matches!(SlotId::new(&long), SlotId::Heap(_)));
        assert!(board.get(&uuid[..35]).is_none(), "a prefix is another id");
    }

    #[test]
    fn a_claim_is_refused_inside_the_window_and_renewed_after_it() {
        let board = StatusBoard::with_shards(1, STATUS_CAPACITY);
        let t: Name = crate::name::Name::intern("infrahub/send.echo.request");
        assert!(board.claim("a", t, 3, Duration::from_secs(60), State::Queued, time::OffsetDateTime::now_utc()));
        assert!(
            !board.claim("a", t, 3, Duration::from_secs(60), State::Queued, time::OffsetDateTime::now_utc()),
            "duplicate"
        );
        // With a zero window the old acceptance has expired: a new event under the old id...
        assert!(board.claim("a", t, 3, Duration::ZERO, State::Queued, time::OffsetDateTime::now_utc()));
        // ...whose own time starts a new window.
        assert!(!board.claim("a", t, 3, Duration::from_secs(60), State::Queued, time::OffsetDateTime::now_utc()));
        board.unclaim("a");
        assert!(board.get("a").is_none());
        assert!(
            board.claim("a", t, 3, Duration::from_secs(60), State::Queued, time::OffsetDateTime::now_utc()),
            "unclaimed ids can come again"
        );
        assert_eq!(board.shards[0].lock().unwrap().slots.len(), 3, "stale slots stay until overwritten, harmlessly");
    }

    #[test]
    fn the_oldest_entries_leave_past_the_capacity_and_a_renewed_id_keeps_its_new_slot() {
        // One shard: the ring's order is exact.
        let board = StatusBoard::with_shards(1, STATUS_CAPACITY);
        let t: Name = crate::name::Name::intern("fixinventory/collect");
        let long = Duration::from_secs(3600);
        assert!(board.claim("first", t, 3, long, State::Queued, time::OffsetDateTime::now_utc()));
        assert!(board.claim("renewed", t, 3, long, State::Queued, time::OffsetDateTime::now_utc()));
        board.unclaim("renewed");
        for i in 0..STATUS_CAPACITY - 3 {
            board.insert(&i.to_string(), t, 3, State::Queued);
        }
        // The ring is full; "renewed" comes again into the last slot.
        assert!(board.claim("renewed", t, 3, long, State::Queued, time::OffsetDateTime::now_utc()));
        // Wrapping around overwrites "first", then the stale slot of "renewed": only the
        // first is forgotten.
        board.insert("x", t, 3, State::Queued);
        board.insert("y", t, 3, State::Queued);
        assert!(board.get("first").is_none());
        assert!(board.contains("renewed") && board.contains("x") && board.contains("y") && board.contains("0"));
        board.set("renewed", State::InProgress);
        assert!(matches!(board.get("renewed").unwrap().state, State::InProgress));
    }

    /// An outcome reads back as it was set, whether the slot keeps it inline (one emitted
    /// event with a short id, nothing else: only the first here) or as it is.
    #[test]
    fn outcomes_read_back_as_they_were_set() {
        let board = StatusBoard::with_shards(2, 8);
        let name = crate::name::Name::intern;
        let emission = |id: &str| Emission { plugin: name("echo"), type_name: name("t/response"), id: id.into() };
        let note =
            crate::event::FailureNote { plugin: "p".into(), kind: "trap".into(), message: "m".into(), attempts: 2 };
        let outcomes = [
            Outcome { emitted: vec![emission("019ac1f0-0000-7000-8000-000000000001")], ..Outcome::default() },
            Outcome { emitted: vec![emission(&"x".repeat(INLINE_ID_BYTES + 1))], ..Outcome::default() },
            Outcome { emitted: vec![emission("a"), emission("b")], ..Outcome::default() },
            Outcome { emitted: vec![emission("a")], failed: vec![note], ..Outcome::default() },
            Outcome { emitted: vec![emission("a")], dropped: vec![("f".into(), "why".into())], ..Outcome::default() },
            Outcome::default(),
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let id = board.insert_named(name("t/request"), 3, State::InProgress, time::OffsetDateTime::now_utc());
            board.set(&id, State::Processed { outcome: outcome.clone() });
            let inline = board.named(&id).map(|(b, at)| matches!(b.slots[at].state, Kept::Answered { .. }));
            assert_eq!(inline, Some(i == 0), "outcome {i} kept inline");
            let State::Processed { outcome: read } = board.get(&id).unwrap().state else { panic!("processed") };
            assert_eq!(read, outcome, "outcome {i}");
        }
    }

    /// Ids the board names are UUIDv7s found again without the index: read, changed and
    /// forgotten with the ring like the others; any other text, another board's names and
    /// names whose slot was written again are not found.
    /// A prefetch is only a hint: for a named id (of a written slot or not), an id of no
    /// slot, or no UUID at all, it changes nothing and never faults.
    #[test]
    fn prefetching_any_id_changes_nothing() {
        let board = StatusBoard::with_shards(2, 8);
        let t: Name = crate::name::Name::intern("infrahub/response/send.echo.request");
        let a = board.insert_named(t, 4, State::Queued, time::OffsetDateTime::now_utc());
        // The same marker and shard, the ring's last slot (not written yet); its last six
        // hex digits are the slot.
        let unwritten = format!("{}000003", &a[..30]);
        // As long as a UUID, with a character of two bytes in its last group.
        let odd = format!("{}-{}é", "0".repeat(23), "0".repeat(10));
        for id in [&a, &unwritten, "not an id", &crate::event::new_id(), &odd] {
            board.prefetch(id);
        }
        assert!(matches!(board.get(&a).unwrap().state, State::Queued));
        assert!(board.get(&unwritten).is_none() && board.get(&odd).is_none());
    }

    #[test]
    fn named_ids_find_their_slot_without_the_index() {
        let board = StatusBoard::with_shards(2, 8);
        let t: Name = crate::name::Name::intern("infrahub/response/send.echo.request");
        let a = board.insert_named(t, 4, State::InProgress, time::OffsetDateTime::now_utc());
        let b = board.insert_named(t, 4, State::Queued, time::OffsetDateTime::now_utc());
        assert_ne!(a, b);
        assert_eq!(uuid::Uuid::parse_str(&a).expect("a UUID").get_version_num(), 7);
        assert!(board.shards.iter().all(|s| s.lock().unwrap().index.is_empty()), "nothing went into the index");
        let s = board.get(&a).expect("found");
        assert_eq!((&*s.id, s.priority), (a.as_str(), 4));
        assert!(matches!(s.state, State::InProgress));
        board.set(&a, State::Processed { outcome: Outcome::default() });
        assert!(matches!(board.get(&a).unwrap().state, State::Processed { .. }));
        board.insert(&b, t, 1, State::InProgress);
        assert_eq!(board.get(&b).unwrap().priority, 1, "an insert under a named id updates it in place");
        assert!(board.shards.iter().all(|s| s.lock().unwrap().index.is_empty()));
        // Near misses: another digit, upper case, another board's marker.
        let mut other = a.clone().into_bytes();
        other[35] = if other[35] == b'0' { b'1' } else { b'0' };
        let other = String::from_utf8(other).unwrap();
        assert!(board.get(&other).is_none() && board.get(&a.to_uppercase()).is_none());
        let elsewhere = StatusBoard::with_shards(2, 8);
        assert!(elsewhere.get(&a).is_none() && !elsewhere.contains(&a));
        // A producer's event under a named id is a duplicate within the window; after it,
        // the named entry makes way for the producer's.
        assert!(!board.claim(&a, t, 3, Duration::from_secs(60), State::Queued, time::OffsetDateTime::now_utc()));
        assert!(board.claim(&a, t, 3, Duration::ZERO, State::Queued, time::OffsetDateTime::now_utc()));
        assert!(matches!(board.get(&a).unwrap().state, State::Queued));
        // A named entry whose event was not accepted after all is forgotten.
        let c = board.insert_named(t, 4, State::Queued, time::OffsetDateTime::now_utc());
        board.unclaim(&c);
        assert!(board.get(&c).is_none() && !board.contains(&c));
        board.set(&c, State::InProgress);
        assert!(board.get(&c).is_none(), "a forgotten name stays forgotten");
        // Enough more entries to go round both rings of four (named ones fill a shard
        // NAMED_RUN at a time): the named `b` is forgotten.
        for i in 0..2 * NAMED_RUN + 8 {
            board.insert_named(t, 4, State::Queued, time::OffsetDateTime::now_utc());
            board.insert(&i.to_string(), t, 4, State::Queued);
        }
        assert!(board.get(&b).is_none() && !board.contains(&b));
    }

    /// Sharded, the board holds at most its capacity in all, forgets the oldest first
    /// within each shard, and keeps the recent entries whichever shard they fell in.
    #[test]
    fn a_sharded_board_keeps_its_capacity_and_the_recent_entries() {
        let board = StatusBoard::default();
        let t: Name = crate::name::Name::intern("fixinventory/collect");
        for i in 0..2 * STATUS_CAPACITY {
            board.insert(&i.to_string(), t, 3, State::Queued);
        }
        let held: usize = board.shards.iter().map(|b| b.lock().unwrap().index.len()).sum();
        assert!(held <= STATUS_CAPACITY, "{held} entries held");
        assert!(held > STATUS_CAPACITY * 9 / 10, "the shards are about evenly used: {held}");
        assert!(board.get("0").is_none(), "the oldest is forgotten");
        let recent = (2 * STATUS_CAPACITY - STATUS_CAPACITY / 4..2 * STATUS_CAPACITY).map(|i| i.to_string());
        assert!(recent.into_iter().all(|id| board.contains(&id)), "every recent entry is kept");
        board.set("399999", State::InProgress);
        assert!(matches!(board.get("399999").unwrap().state, State::InProgress));
    }
}
