//! Events a plugin failed on for good, with the plugin, route, kind of failure, message and
//! attempts: served at `/v1/dead-letters` (list with filters, show one, replay, purge).
//!
//! Durable: each dead letter is appended to `dead-letters.jsonl` in the log's directory
//! (owner-only) and synced before it counts (dead letters are rare, so a sync each is
//! cheap). Replaying or purging appends a tombstone line (`{"tombstone": <id>}`) instead of
//! rewriting the file; once the dead (tombstoned) lines are more than half the file, it is
//! rewritten atomically without them. Unlike the event log, dead letters are not compacted
//! away when finished: they stay until replayed or purged, but they are bounded:
//! - at most `store.max_dead_letters` ([`DEFAULT_MAX_DEAD_LETTERS`]) are kept; past it the
//!   oldest is dropped (tombstoned) and counted in `eventyard_dead_letters_dropped_total`;
//! - the file's bytes count in the log's size bound (`store.max_bytes`): past it, ingestion
//!   answers 503 until dead letters are replayed or purged;
//! - a letter's message is cut to [`MAX_MESSAGE_BYTES`]; a letter whose line would be larger
//!   than a log record ([`crate::store::segment::MAX_RECORD_BYTES`]) is not kept (counted
//!   as dropped), so every line written reads back.

use crate::event::Event;
use crate::event::{Failure, FailureKind};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Dead letters kept by default (`store.max_dead_letters`); also the bound in memory when
/// there is no file. At the default ingestion limit (1 MiB bodies) that is at most ~10 GiB,
/// and the log's byte bound (`store.max_bytes`, which counts them) stops ingestion first.
pub const DEFAULT_MAX_DEAD_LETTERS: usize = 10_000;
/// Dead letters kept in memory when there is no file (the log is off).
pub const IN_MEMORY_CAPACITY: usize = DEFAULT_MAX_DEAD_LETTERS;
/// Longest failure message a dead letter keeps (the rest is cut and marked): a plugin's
/// error text is the plugin's to choose.
pub const MAX_MESSAGE_BYTES: usize = crate::event::outcome::MAX_OUTCOME_TEXT_BYTES;

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

/// A tombstone line: the dead letter with this id is gone (replayed, purged or dropped).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    tombstone: String,
}

/// A dead letter and the bytes of its line in the file.
struct Kept {
    letter: DeadLetter,
    bytes: u64,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Kept>,
    /// Bytes of the file: live lines, dead lines and tombstones.
    file_bytes: u64,
    /// Bytes of the live lines.
    live_bytes: u64,
}

/// Where dead letters are shared with other instances (a shared log's bucket): every
/// letter kept and removed here is told to it; what other instances keep and remove comes
/// back through [`DeadLetters::merge`] and [`DeadLetters::forget`].
pub trait Mirror: Send + Sync {
    fn put(&self, letter: &DeadLetter);
    fn remove(&self, ids: &[String]);
}

pub struct DeadLetters {
    file: Option<PathBuf>,
    mirror: std::sync::OnceLock<Arc<dyn Mirror>>,
    max: usize,
    inner: Mutex<Inner>,
    /// The file's bytes, shared with the event log, which counts them in its bound.
    bytes: Arc<AtomicU64>,
    /// Dead letters dropped because of the bound (or too large to keep).
    pub dropped: AtomicU64,
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters {
            file: None,
            mirror: std::sync::OnceLock::new(),
            max: IN_MEMORY_CAPACITY,
            inner: Mutex::default(),
            bytes: Arc::default(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl DeadLetters {
    /// Opens (or creates) `path` and loads what it holds, keeping at most `max` (the
    /// newest); unreadable lines are skipped with a warning (a torn last line after a
    /// crash). `bytes` is kept up to date with the file's size (the event log counts it).
    pub fn open(path: PathBuf, max: usize, bytes: Arc<AtomicU64>) -> std::io::Result<DeadLetters> {
        let mut inner = Inner::default();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                inner.file_bytes = text.len() as u64;
                let mut gone = std::collections::HashSet::new();
                let mut lines = Vec::new();
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    if let Ok(t) = serde_json::from_str::<Tombstone>(line) {
                        gone.insert(t.tombstone);
                        continue;
                    }
                    match serde_json::from_str::<DeadLetter>(line) {
                        Ok(letter) => lines.push(Kept { letter, bytes: line.len() as u64 + 1 }),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), line = n + 1, error = %e, "skipping a dead letter")
                        }
                    }
                }
                for kept in lines.into_iter().filter(|k| !gone.contains(&k.letter.id)) {
                    inner.live_bytes += kept.bytes;
                    inner.items.push_back(kept);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        bytes.store(inner.file_bytes, Ordering::Relaxed);
        let letters =
            DeadLetters { file: Some(path), max: max.max(1), inner: Mutex::new(inner), bytes, ..Default::default() };
        {
            let mut inner = letters.inner.lock().expect("dead letters");
            let over = inner.items.len().saturating_sub(letters.max);
            if over > 0 {
                tracing::warn!(
                    dropped = over,
                    max = letters.max,
                    "more dead letters on disk than store.max_dead_letters; dropping the oldest"
                );
                letters.dropped.fetch_add(over as u64, Ordering::Relaxed);
                for kept in inner.items.drain(..over).collect::<Vec<_>>() {
                    inner.live_bytes -= kept.bytes;
                }
            }
            letters.compact_if_mostly_dead(&mut inner)?;
        }
        Ok(letters)
    }

    /// Kept in memory only, at most `max` (a shared log's instances: the bucket given to
    /// [`mirror_to`](Self::mirror_to) is the durable copy).
    pub fn in_memory(max: usize) -> DeadLetters {
        DeadLetters { max: max.max(1), ..Default::default() }
    }

    /// Shares every letter kept and removed from now on with `mirror` (set once).
    pub fn mirror_to(&self, mirror: Arc<dyn Mirror>) {
        let _ = self.mirror.set(mirror);
    }

    /// A letter another instance kept (or this one, coming back from the mirror): kept
    /// here too, once.
    pub fn merge(&self, letter: DeadLetter) {
        let mut inner = self.inner.lock().expect("dead letters");
        if inner.items.iter().any(|k| k.letter.id == letter.id) {
            return;
        }
        if inner.items.len() >= self.max {
            inner.items.pop_front();
        }
        // Newest last, as `push` keeps them (ids are UUIDv7: time-ordered).
        let at = inner.items.partition_point(|k| k.letter.id < letter.id);
        inner.items.insert(at, Kept { letter, bytes: 0 });
    }

    /// Letters another instance replayed, purged or dropped: gone here too.
    pub fn forget(&self, ids: &[String]) {
        self.inner.lock().expect("dead letters").items.retain(|k| !ids.contains(&k.letter.id));
    }

    pub fn push(&self, event: &Event, plugin: &str, route: &str, failure: Failure, attempts: u32) {
        let message = crate::event::outcome::cut_text(&failure.message, MAX_MESSAGE_BYTES);
        tracing::warn!(plugin, route, event = %event.id, kind = failure.kind.as_str(), attempts, message = %message, "dead letter");
        let letter = DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            time: time::OffsetDateTime::now_utc(),
            plugin: plugin.to_string(),
            route: route.to_string(),
            kind: failure.kind,
            message,
            retryable: failure.retryable,
            attempts,
            event: event.clone(),
        };
        let mut line = serde_json::to_string(&letter).expect("dead letters serialise");
        line.push('\n');
        if line.len() > crate::store::segment::MAX_RECORD_BYTES as usize {
            tracing::error!(event = %event.id, bytes = line.len(), "dead letter too large to keep; dropped");
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut inner = self.inner.lock().expect("dead letters");
        let mut tombstones = String::new();
        let mut freed = Vec::new();
        while inner.items.len() >= self.max {
            let Some(oldest) = inner.items.pop_front() else { break };
            inner.live_bytes -= oldest.bytes;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tombstones.push_str(&tombstone(&oldest.letter.id));
            freed.push(oldest.letter.id);
        }
        if !freed.is_empty() {
            tracing::warn!(dropped = ?freed, max = self.max, "dead letters past store.max_dead_letters: dropped the oldest");
        }
        let bytes = line.len() as u64;
        if self.file.is_some() {
            tombstones.push_str(&line);
            if let Err(e) = self.append(&mut inner, &tombstones) {
                tracing::error!(error = %e, "cannot write a dead letter; kept in memory only");
            }
        }
        if let Some(mirror) = self.mirror.get() {
            if !freed.is_empty() {
                mirror.remove(&freed);
            }
            mirror.put(&letter);
        }
        inner.live_bytes += bytes;
        inner.items.push_back(Kept { letter, bytes });
        if let Err(e) = self.compact_if_mostly_dead(&mut inner) {
            tracing::error!(error = %e, "cannot compact the dead letters");
        }
    }

    /// Newest first.
    pub fn list(&self, q: &Query) -> Vec<DeadLetter> {
        let inner = self.inner.lock().expect("dead letters");
        inner
            .items
            .iter()
            .rev()
            .map(|k| &k.letter)
            .filter(|d| q.matches(d))
            .take(q.limit.unwrap_or(100))
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<DeadLetter> {
        self.inner.lock().expect("dead letters").items.iter().find(|k| k.letter.id == id).map(|k| k.letter.clone())
    }

    /// How many are kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("dead letters").items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the matching dead letters (all of `q`'s selection, no limit); returns them.
    /// One tombstone line each is appended (the file is not rewritten, unless dead lines
    /// are now more than half of it).
    pub fn take(&self, select: impl Fn(&DeadLetter) -> bool) -> std::io::Result<Vec<DeadLetter>> {
        let mut inner = self.inner.lock().expect("dead letters");
        let (taken, kept): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut inner.items).into_iter().partition(|k| select(&k.letter));
        inner.items = kept;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        inner.live_bytes -= taken.iter().map(|k| k.bytes).sum::<u64>();
        if let Some(mirror) = self.mirror.get() {
            mirror.remove(&taken.iter().map(|k| k.letter.id.clone()).collect::<Vec<_>>());
        }
        if self.file.is_some() {
            let tombstones: String = taken.iter().map(|k| tombstone(&k.letter.id)).collect();
            self.append(&mut inner, &tombstones)?;
            self.compact_if_mostly_dead(&mut inner)?;
        }
        Ok(taken.into_iter().map(|k| k.letter).collect())
    }

    /// Selection by query, for [`take`](Self::take).
    pub fn selector(q: &Query) -> impl Fn(&DeadLetter) -> bool + '_ {
        move |d| q.matches(d)
    }

    /// The dead letters' lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let (kept, dropped) = (self.len(), self.dropped.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP eventyard_dead_letters Dead letters kept (at most store.max_dead_letters).\n# TYPE eventyard_dead_letters gauge\neventyard_dead_letters {kept}\n\
             # HELP eventyard_dead_letters_dropped_total Dead letters dropped: the oldest past store.max_dead_letters, or too large to keep.\n# TYPE eventyard_dead_letters_dropped_total counter\neventyard_dead_letters_dropped_total {dropped}"
        );
    }

    /// Appends `text` (whole lines) to the file and syncs it.
    fn append(&self, inner: &mut Inner, text: &str) -> std::io::Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        let mut f = crate::files::open_append(path)?;
        let len = f.metadata()?.len();
        let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_data());
        if written.is_err() {
            // A failed append leaves no half line behind for the next one to run into.
            let _ = f.set_len(len);
        }
        written?;
        inner.file_bytes = len + text.len() as u64;
        self.bytes.store(inner.file_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites the file with the live lines only, once dead lines and tombstones are more
    /// than half of it: replays cost a line each, and the file stays within twice its live size.
    fn compact_if_mostly_dead(&self, inner: &mut Inner) -> std::io::Result<()> {
        let Some(path) = &self.file else { return Ok(()) };
        if inner.file_bytes <= 2 * inner.live_bytes {
            return Ok(());
        }
        let mut text = String::with_capacity(inner.live_bytes as usize);
        for k in inner.items.iter_mut() {
            let before = text.len();
            text.push_str(&serde_json::to_string(&k.letter).expect("dead letters serialise"));
            text.push('\n');
            k.bytes = (text.len() - before) as u64;
        }
        crate::files::write_atomic(path, text.as_bytes())?;
        inner.file_bytes = text.len() as u64;
        inner.live_bytes = inner.file_bytes;
        self.bytes.store(inner.file_bytes, Ordering::Relaxed);
        Ok(())
    }
}

fn tombstone(id: &str) -> String {
    let mut line = serde_json::to_string(&Tombstone { tombstone: id.to_string() }).expect("tombstones serialise");
    line.push('\n');
    line
}
