//! A segment log of our own: numbered append-only files of checksummed records, one
//! writer thread that commits in groups, recovery that skips damaged records and cuts only a
//! torn tail, and compaction that deletes the oldest segments once everything in them is
//! finished.
//!
//! Why our own and not an embedded database: the access pattern is a pure append-only
//! journal read back only at start-up, where a file append plus one `fdatasync` per group
//! is the cheapest durable write there is; a B-tree store (redb, sled) would add a
//! write-ahead log and page writes on top for features we do not use.
//!
//! Segment (version 2): [`SEGMENT_MAGIC`], then frames
//! `FRAME_MAGIC | len: u32 LE | crc32(len bytes ++ payload): u32 LE | payload` (payload = one
//! JSON [`Record`]). The magic makes frames findable again: a damaged frame in the middle of
//! a segment (a flipped bit, a bad sector, a record the reader refuses) is skipped and reading
//! goes on at the next magic with a valid checksum; only damage with nothing valid after it
//! (a write torn by a crash) is cut off. The magic holds bytes JSON text never contains
//! (NUL, a raw control character), so it can only appear inside a payload escaped, never raw.
//!
//! Version 1 segments (no segment magic; frames `len | crc32(payload) | payload`) written by
//! earlier versions are still read, the old way: up to the first bad frame.

use super::{Durability, Record, StoreError};
use crate::event::{json, Outcome};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Threads that sync groups with `Durability::Group`. A sync makes durable what was written
/// before it started, so syncs may overlap: while one is in flight the writer goes on
/// writing and the next group's sync starts at once, instead of every ack waiting for the
/// sync in flight to end before its own begins. Measured on this disk: two concurrent
/// `fdatasync`s give 1.5x the syncs per second of one at about the same latency.
pub const SYNCERS: usize = 2;

/// Largest record: refused when a record is made ([`StoreError::TooLarge`]), so the
/// writer never writes what the reader would refuse; at recovery a frame claiming more is
/// damage. Far above any event the default ingestion limits let in (the config check keeps
/// `ingest.max_body_bytes` below [`MAX_EVENT_DATA_BYTES`]).
pub const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
/// Largest event data the log takes: a record's room minus generous space for the event's
/// id, type, source and the record's own keys.
pub const MAX_EVENT_DATA_BYTES: usize = MAX_RECORD_BYTES as usize - 64 * 1024;
/// First bytes of every version-2 segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\0EYLOG\x02\n";
/// First bytes of every version-2 frame.
pub const FRAME_MAGIC: [u8; 4] = *b"\0EY\x02";
/// A version-2 frame's header: magic, length, checksum.
const HEADER: usize = 12;
/// A version-1 frame's header: length, checksum.
const HEADER_V1: usize = 8;

/// Which segments still hold unfinished events, as the store last told the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needed {
    /// This one and newer (it holds the oldest unfinished event).
    From(u64),
    /// Only the one being written: no event is unfinished. Said as this and not as a number
    /// because the writer may roll after the store looked (the `done` records of the last
    /// events may fill a segment or two): the writer knows which segment is current when it
    /// reads the command, and again at each roll, so no finished segment is left behind.
    Current,
}

/// One write request for the writer thread.
pub enum Command {
    Append {
        frames: Vec<u8>,
        ack: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Which segments are needed from now on: older ones are deleted, now and (for
    /// [`Needed::Current`]) at every roll until the next such command.
    Needed(Needed),
    /// Write and sync everything queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// Frames one accepted event (read back as [`Record::Event`]), written by
/// [`Event::write_json`](crate::event::Event::write_json): the data goes in as the
/// producer's JSON text, not re-serialised (the costliest step of an append). An event too
/// large for a record is refused here, with nothing left in `out`.
pub fn frame_event(event: &crate::event::Event, out: &mut Vec<u8>) -> Result<(), StoreError> {
    framed(out, |out| {
        out.extend_from_slice(br#"{"record":"event","event":"#);
        event.write_json(out);
        out.push(b'}');
    })
}

/// Frames a [`Record::Done`], written by hand (the same JSON serde writes): one is written
/// for every finished event, by the plugin workers.
pub fn frame_done(id: &str, outcome: &Outcome, out: &mut Vec<u8>) -> Result<(), StoreError> {
    framed(out, |out| {
        out.extend_from_slice(br#"{"record":"done","id":"#);
        json::write_str(out, id);
        out.extend_from_slice(br#","outcome":"#);
        outcome.write_json(out);
        out.push(b'}');
    })
}

/// Frames any record; one over [`MAX_RECORD_BYTES`] is refused, with nothing left in `out`.
pub fn frame(record: &impl serde::Serialize, out: &mut Vec<u8>) -> Result<(), StoreError> {
    framed(out, |out| serde_json::to_writer(out, record).expect("records always serialise"))
}

/// Appends one frame whose payload `write` appends: room for the header, the payload, then
/// the header filled in ([`finish`]).
fn framed(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    write(out);
    finish(out, start)
}

/// Fills in the header of the frame that starts at `start`, or takes the frame back out
/// when it is larger than a reader takes.
fn finish(out: &mut Vec<u8>, start: usize) -> Result<(), StoreError> {
    let len = out.len() - start - HEADER;
    if len > MAX_RECORD_BYTES as usize {
        out.truncate(start);
        return Err(StoreError::TooLarge { bytes: len as u64, limit: MAX_RECORD_BYTES as u64 });
    }
    let len = (len as u32).to_le_bytes();
    out[start..start + 4].copy_from_slice(&FRAME_MAGIC);
    out[start + 4..start + 8].copy_from_slice(&len);
    let crc = checksum(&len, &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A version-2 frame's checksum covers its length too: a damaged length is caught at once.
fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

/// The segment files of `dir`, oldest first, as (number, path).
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let number = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        if let (Some(n), Some("seg")) = (number, path.extension().and_then(|e| e.to_str())) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Gives a recovered event its data's text exactly as it was written (the record as a whole
/// goes through serde's buffered content, which re-serialises it): plugins see the same
/// bytes again when an event is processed after a restart.
fn keep_text(payload: &[u8], event: &mut crate::event::Event) {
    #[derive(serde::Deserialize)]
    struct Framed<'a> {
        #[serde(borrow)]
        event: Data<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    if let Ok(framed) = serde_json::from_slice::<Framed>(payload) {
        let text: Arc<str> = framed.event.data.get().into();
        if let Ok(tape) = crate::schema::tape::Tape::parse(&text) {
            event.data = crate::event::Body::read(text.clone(), &tape);
        }
    }
}

/// What reading a segment's bytes found.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    /// Where each intact frame's payload is, in order.
    pub payloads: Vec<std::ops::Range<usize>>,
    /// Damaged stretches in the middle that were skipped (frames after them were intact).
    pub skipped: Vec<std::ops::Range<usize>>,
    /// Length of the part worth keeping: everything up to the end of the last intact frame
    /// (or the segment header); what follows is a torn tail.
    pub keep: usize,
}

/// Finds the intact frames of a segment's bytes. Never panics, whatever the bytes: this is
/// what the proptests in `tests/properties.rs` and the unit tests below throw garbage at.
pub fn scan(bytes: &[u8]) -> Scan {
    if bytes.starts_with(&SEGMENT_MAGIC) {
        return scan_v2(bytes, SEGMENT_MAGIC.len());
    }
    let v1 = scan_v1(bytes);
    if !v1.payloads.is_empty() || bytes.len() <= SEGMENT_MAGIC.len() {
        return v1;
    }
    // Nothing reads as version 1: a version-2 segment whose header is damaged reads from
    // its first intact frame on (the header counts as a damaged stretch).
    let v2 = scan_v2(bytes, 0);
    if v2.payloads.is_empty() {
        v1
    } else {
        v2
    }
}

/// Version 1: frames back to back, reading stops at the first bad one (nothing to resync on).
fn scan_v1(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_V1) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let body = at + HEADER_V1;
        match bytes.get(body..body.saturating_add(len as usize)) {
            Some(payload) if len <= MAX_RECORD_BYTES && crc32fast::hash(payload) == crc => {
                scan.payloads.push(body..body + len as usize);
                at = body + len as usize;
            }
            _ => break,
        }
    }
    scan.keep = at;
    scan
}

/// The payload of the intact version-2 frame starting at `at`, if there is one.
fn frame_at(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if header[..4] != FRAME_MAGIC {
        return None;
    }
    let len: [u8; 4] = header[4..8].try_into().expect("4 bytes");
    let n = u32::from_le_bytes(len);
    if n > MAX_RECORD_BYTES {
        return None;
    }
    let body = at + HEADER;
    let payload = bytes.get(body..body + n as usize)?;
    (checksum(&len, payload) == u32::from_le_bytes(header[8..].try_into().expect("4 bytes")))
        .then_some(body..body + n as usize)
}

/// Version 2, from `start`: frames back to back; past a bad one, the next magic that starts
/// an intact frame.
fn scan_v2(bytes: &[u8], start: usize) -> Scan {
    let mut scan = Scan { keep: start, ..Scan::default() };
    let mut at = start;
    while at < bytes.len() {
        if let Some(payload) = frame_at(bytes, at) {
            at = payload.end;
            scan.keep = at;
            scan.payloads.push(payload);
            continue;
        }
        // Damage: look for the next intact frame; none at all means a torn tail.
        let next = (at + 1..bytes.len().saturating_sub(HEADER - 1))
            .filter(|&k| bytes[k..k + 4] == FRAME_MAGIC)
            .find(|&k| frame_at(bytes, k).is_some());
        match next {
            Some(k) => {
                scan.skipped.push(at..k);
                at = k;
            }
            None => break,
        }
    }
    scan
}

/// Reads every intact record of a segment; returns them and the byte length worth keeping
/// (recovery cuts what follows: a record torn by a crash). Damaged frames in the middle are
/// skipped, and the segment is first copied aside as `<segment>.damaged` for the operator
/// (kept until removed by hand; the log itself goes on from the intact frames).
pub fn read_segment(path: &Path) -> Result<(Vec<Record>, u64), StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let scan = scan(&bytes);
    if !scan.skipped.is_empty() {
        let aside = path.with_extension("seg.damaged");
        let damaged: usize = scan.skipped.iter().map(|r| r.len()).sum();
        tracing::error!(path = %path.display(), copy = %aside.display(), bytes = damaged, stretches = scan.skipped.len(),
            "damaged records in the middle of a log segment: skipped them, kept every intact record, copied the segment aside");
        if !aside.exists() {
            crate::files::create_new(&aside)
                .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
                .map_err(|e| StoreError::io(&aside, e))?;
        }
    }
    let mut records = Vec::with_capacity(scan.payloads.len());
    for range in scan.payloads {
        let payload = &bytes[range.clone()];
        match serde_json::from_slice::<Record>(payload) {
            Ok(Record::Event { mut event }) => {
                keep_text(payload, &mut event);
                records.push(Record::Event { event })
            }
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), offset = range.start, error = %e, "skipping an unreadable record")
            }
        }
    }
    Ok((records, scan.keep as u64))
}

/// The writer thread's state: the open segment and what it has written.
pub struct Writer {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    number: u64,
    /// Shared with the syncers, which may still be syncing it after a roll.
    file: Arc<File>,
    written: u64,
    /// Bytes of all segments on disk, shared with the store (back-pressure, metrics).
    bytes: Arc<AtomicU64>,
    /// What the store last said it needs: anything older is deleted.
    needed: Needed,
}

impl Writer {
    /// Opens a fresh segment numbered `number` (segments are never appended to after a
    /// restart, so a torn tail in an old one stays where recovery cut it) and writes its
    /// header. Owner-only, like every file of the data directory.
    pub fn open(dir: &Path, number: u64, durability: Durability, segment_bytes: u64) -> Result<Writer, StoreError> {
        let path = segment_path(dir, number);
        let mut file = crate::files::open_append(&path).map_err(|e| StoreError::io(&path, e))?;
        // A file left by a failed roll (its header never written) is started over.
        let header = file.set_len(0).and_then(|_| file.write_all(&SEGMENT_MAGIC));
        if let Err(e) = header {
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::io(&path, e));
        }
        if durability != Durability::Off {
            sync_dir(dir)?;
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            durability,
            segment_bytes,
            number,
            file: Arc::new(file),
            written: SEGMENT_MAGIC.len() as u64,
            bytes: Arc::default(),
            // Nothing is deleted until the store says what it needs.
            needed: Needed::From(0),
        })
    }

    /// Shares the count of bytes on disk (this segment's header is added to it).
    pub fn with_bytes(mut self, bytes: Arc<AtomicU64>) -> Self {
        bytes.fetch_add(self.written, Ordering::Relaxed);
        self.bytes = bytes;
        self
    }

    /// Serves commands until every sender is gone: drains what is queued, writes it in
    /// one go, syncs once per group (or per append with `Durability::Always`), then acks.
    /// With `Durability::Group` the sync and the acks are the [`SYNCERS`]' work.
    pub fn run(self, rx: crossbeam_channel::Receiver<Command>, on_roll: impl Fn(u64)) {
        std::thread::scope(|scope| {
            let (sync_tx, sync_rx) = crossbeam_channel::unbounded::<Written>();
            for _ in 0..SYNCERS {
                let sync_rx = sync_rx.clone();
                scope.spawn(move || sync_groups(sync_rx));
            }
            self.serve(rx, &sync_tx, on_roll);
            // Dropping `sync_tx` here lets the syncers finish what is queued and stop.
        });
    }

    fn serve(
        mut self,
        rx: crossbeam_channel::Receiver<Command>,
        sync_tx: &crossbeam_channel::Sender<Written>,
        on_roll: impl Fn(u64),
    ) {
        let mut acks = Vec::new();
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            if let Durability::Group { window } = self.durability {
                if !window.is_zero() {
                    std::thread::sleep(window.min(Duration::from_millis(50)));
                }
            }
            let started = Instant::now();
            let mut flushes = Vec::new();
            while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
                match cmd {
                    Command::Append { frames, ack } => {
                        buf.extend_from_slice(&frames);
                        acks.extend(ack);
                        if self.durability == Durability::Always {
                            let r = self.commit(&mut buf, true, &on_roll);
                            answer(&mut acks, &r);
                        }
                    }
                    Command::Needed(needed) => {
                        self.needed = needed;
                        self.compact();
                    }
                    Command::Flush(done) => flushes.push(done),
                }
                // Bound a group so one ack never waits behind an unbounded burst.
                if buf.len() >= 8 << 20 || started.elapsed() > Duration::from_millis(20) {
                    break;
                }
            }
            if matches!(self.durability, Durability::Group { .. }) && flushes.is_empty() {
                // Written here, synced and acked by a syncer (the file as it was before a roll).
                let file = self.file.clone();
                let path = segment_path(&self.dir, self.number);
                match self.commit(&mut buf, false, &on_roll) {
                    Ok(()) if !acks.is_empty() => {
                        let _ = sync_tx.send(Written { file, path, acks: std::mem::take(&mut acks) });
                    }
                    r => answer(&mut acks, &r),
                }
                continue;
            }
            let sync = self.durability != Durability::Off || !flushes.is_empty();
            let r = self.commit(&mut buf, sync, &on_roll);
            answer(&mut acks, &r);
            for f in flushes {
                let _ = f.send(());
            }
        }
        let _ = self.commit(&mut buf, true, &on_roll);
    }

    /// Writes (and with `sync`, syncs) the group in `buf`, then rolls to a new segment when
    /// this one is full. A group that cannot be written or synced (disk full, EIO) is undone:
    /// the segment is cut back to where the group started, so nothing of it is read back at
    /// recovery, and the next group tries again (ingestion resumes by itself once there is
    /// room). Only when even the cut fails does the writer move to a new segment; the
    /// producers were answered 503 and the store's `abandon` cancels those events.
    fn commit(&mut self, buf: &mut Vec<u8>, sync: bool, on_roll: &impl Fn(u64)) -> Result<(), StoreError> {
        if !buf.is_empty() {
            let path = segment_path(&self.dir, self.number);
            let written = self.file.write_all(buf).and_then(|_| if sync { self.file.sync_data() } else { Ok(()) });
            let len = buf.len() as u64;
            buf.clear();
            if let Err(e) = written {
                self.undo(on_roll);
                return Err(StoreError::io(&path, e));
            }
            self.written += len;
            self.bytes.fetch_add(len, Ordering::Relaxed);
        }
        if self.written >= self.segment_bytes {
            // `off` never syncs, not even here: syncing a whole unsynced segment at once
            // stalls every ack behind it for 100+ ms.
            if self.durability != Durability::Off {
                self.file.sync_data().map_err(|e| StoreError::io(&self.dir, e))?;
            }
            self.roll(on_roll)?;
        }
        Ok(())
    }

    /// Cuts the segment back to the end of the last good group.
    fn undo(&mut self, on_roll: &impl Fn(u64)) {
        let path = segment_path(&self.dir, self.number);
        if let Err(e) = self.file.set_len(self.written) {
            tracing::error!(path = %path.display(), error = %e, "cannot cut a failed write off the log; moving to a new segment");
            if let Err(e) = self.roll(on_roll) {
                tracing::error!(error = %e, "cannot start a new log segment either");
            }
        }
    }

    fn roll(&mut self, on_roll: &impl Fn(u64)) -> Result<(), StoreError> {
        let needed = self.needed;
        *self = Writer::open(&self.dir, self.number + 1, self.durability, self.segment_bytes)?
            .with_bytes(self.bytes.clone());
        self.needed = needed;
        on_roll(self.number);
        if needed == Needed::Current {
            self.compact();
        }
        Ok(())
    }

    /// Deletes the segments older than what is [`needed`](Self::needed) (never the one
    /// being written).
    fn compact(&self) {
        let below = match self.needed {
            Needed::From(n) => n.min(self.number),
            Needed::Current => self.number,
        };
        let Ok(list) = segments(&self.dir) else { return };
        for (number, path) in list.into_iter().filter(|(k, _)| *k < below) {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.bytes.fetch_sub(len.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
                    tracing::debug!(segment = number, "compacted: every event in it is finished")
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot delete a finished segment"),
            }
        }
    }
}

/// A group written to a segment, waiting for a sync before its acks.
struct Written {
    file: Arc<File>,
    path: PathBuf,
    acks: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// A syncer: takes every group written so far, syncs each file they are in once, acks them.
fn sync_groups(rx: crossbeam_channel::Receiver<Written>) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let mut synced: Option<(Arc<File>, Result<(), StoreError>)> = None;
        for mut g in groups {
            let r = match &synced {
                Some((f, r)) if Arc::ptr_eq(f, &g.file) => r.clone(),
                _ => {
                    let r = g.file.sync_data().map_err(|e| StoreError::io(&g.path, e));
                    synced = Some((g.file.clone(), r.clone()));
                    r
                }
            };
            answer(&mut g.acks, &r);
        }
    }
}

fn answer(acks: &mut Vec<oneshot::Sender<Result<(), StoreError>>>, r: &Result<(), StoreError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "event log write failed");
    }
    for ack in acks.drain(..) {
        let _ = ack.send(r.clone());
    }
}

/// Makes a new file's directory entry durable too.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: &str) -> Record {
        Record::Done { id: id.into(), outcome: Default::default() }
    }

    fn ids(bytes: &[u8]) -> Vec<String> {
        scan(bytes)
            .payloads
            .into_iter()
            .map(|r| match serde_json::from_slice(&bytes[r]).unwrap() {
                Record::Done { id, .. } => id,
                _ => unreachable!(),
            })
            .collect()
    }

    fn segment(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(bytes.len());
            frame(&done(&format!("r{i}")), &mut bytes).unwrap();
        }
        (bytes, starts)
    }

    /// A writer serving `commands` in `dir` with `SEGMENT`-byte segments (each append below
    /// fills one, so each rolls the log), one command at a time (a flush after each: the
    /// writer would write appends queued together as one group, with one roll); answers the
    /// segment numbers on disk after them.
    fn segments_after(dir: &Path, commands: Vec<Command>) -> Vec<u64> {
        const SEGMENT: u64 = 64;
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer::open(dir, 1, Durability::Off, SEGMENT).unwrap();
        let serving = std::thread::spawn(move || writer.run(rx, |_| {}));
        for c in commands {
            tx.send(c).unwrap();
            let (flushed, wait) = oneshot::channel();
            tx.send(Command::Flush(flushed)).unwrap();
            wait.blocking_recv().unwrap();
        }
        drop(tx);
        serving.join().unwrap();
        segments(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    fn append() -> Command {
        let mut frames = Vec::new();
        frame(&done(&"x".repeat(80)), &mut frames).unwrap();
        Command::Append { frames, ack: None }
    }

    /// `Needed::Current` deletes every older segment when the writer reads it, and again at
    /// each later roll (the `done` records of the last events can fill segments after the
    /// store looked); `Needed::From(n)` keeps `n` and newer; nothing is deleted before the
    /// store said what it needs.
    #[test]
    fn compaction_keeps_what_the_store_needs_and_current_holds_at_each_roll() {
        let dir = tempfile::tempdir().unwrap();
        let untold = segments_after(dir.path(), vec![append(), append(), append()]);
        assert_eq!(untold, [1, 2, 3, 4], "nothing deleted untold; the fourth is the one being written");
        let dir = tempfile::tempdir().unwrap();
        let from = segments_after(dir.path(), vec![append(), append(), Command::Needed(Needed::From(2)), append()]);
        assert_eq!(from, [2, 3, 4]);
        let dir = tempfile::tempdir().unwrap();
        let current = vec![append(), append(), Command::Needed(Needed::Current), append(), append()];
        assert_eq!(segments_after(dir.path(), current), [5], "only the segment being written is left");
    }

    #[test]
    fn a_damaged_frame_in_the_middle_is_skipped_and_a_torn_tail_cut() {
        let (mut bytes, starts) = segment(5);
        let whole = bytes.len();
        bytes[starts[2] + HEADER + 3] ^= 0x20;
        bytes[starts[3] + 5] ^= 0x01; // the next frame's length: caught by the checksum
        bytes.extend_from_slice(&FRAME_MAGIC);
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
        let found = scan(&bytes);
        assert_eq!(ids(&bytes), ["r0", "r1", "r4"]);
        assert_eq!(found.skipped, vec![starts[2]..starts[4]]);
        assert_eq!(found.keep, whole, "only the torn tail is cut");
        // A damaged segment header: the frames are still found.
        bytes[..4].copy_from_slice(b"junk");
        assert_eq!(ids(&bytes), ["r0", "r1", "r4"]);
    }

    #[test]
    fn version_1_segments_still_read() {
        let mut bytes = Vec::new();
        for i in 0..3 {
            let payload = serde_json::to_vec(&done(&format!("r{i}"))).unwrap();
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
        assert_eq!(ids(&bytes), ["r0", "r1", "r2"]);
        assert_eq!(scan(&bytes).keep, whole);
    }

    #[test]
    fn a_record_larger_than_the_reader_takes_is_never_framed() {
        let mut out = b"before".to_vec();
        let huge = Record::Cancelled { ids: vec!["x".repeat(MAX_RECORD_BYTES as usize)] };
        assert!(matches!(frame(&huge, &mut out), Err(StoreError::TooLarge { .. })));
        assert_eq!(out, b"before", "nothing of it is left to write");
    }

    #[test]
    fn framed_records_read_back_in_order_and_all_is_kept() {
        let (bytes, starts) = segment(3);
        let found = scan(&bytes);
        assert_eq!(ids(&bytes), ["r0", "r1", "r2"]);
        assert_eq!(found.payloads[0].start, starts[0] + HEADER);
        assert!(found.skipped.is_empty());
        assert_eq!(found.keep, bytes.len());
        let empty = scan(&SEGMENT_MAGIC);
        assert_eq!(empty, Scan { keep: SEGMENT_MAGIC.len(), ..Scan::default() }, "a new segment keeps its header");
    }

    #[test]
    fn a_last_frame_cut_short_anywhere_is_a_torn_tail() {
        let (bytes, starts) = segment(3);
        for cut in starts[2] + 1..bytes.len() {
            let found = scan(&bytes[..cut]);
            assert_eq!(ids(&bytes[..cut]), ["r0", "r1"], "cut at {cut}");
            assert!(found.skipped.is_empty(), "cut at {cut}");
            assert_eq!(found.keep, starts[2], "cut at {cut}: the torn frame goes");
        }
    }

    #[test]
    fn a_last_frame_whose_checksum_does_not_match_is_cut_not_read() {
        let (mut bytes, starts) = segment(3);
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        assert_eq!(ids(&bytes), ["r0", "r1"]);
        assert_eq!(scan(&bytes).keep, starts[2]);
        // A damaged checksum field itself is caught the same way.
        let (mut bytes, starts) = segment(3);
        bytes[starts[2] + 8] ^= 0xff;
        assert_eq!(ids(&bytes), ["r0", "r1"]);
        assert_eq!(scan(&bytes).keep, starts[2]);
    }
}
