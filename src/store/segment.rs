//! A segment log of our own: numbered append-only files of checksummed records, one
//! writer thread that commits in groups, recovery that stops at the first torn record, and
//! compaction that deletes the oldest segments once everything in them is finished.
//!
//! Why our own and not an embedded database: the access pattern is a pure append-only
//! journal read back only at start-up, where a file append plus one `fdatasync` per group
//! is the cheapest durable write there is; a B-tree store (redb, sled) would add a
//! write-ahead log and page writes on top for features we do not use.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` (payload = one JSON [`Record`]).

use super::{Durability, Record, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
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

/// Largest record accepted back at recovery; anything bigger is a torn or foreign write.
pub const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
const HEADER: usize = 8;

/// One write request for the writer thread.
pub enum Command {
    Append {
        frames: Vec<u8>,
        ack: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Delete segments numbered below this one (everything in them is finished).
    DeleteBelow(u64),
    /// Write and sync everything queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// Frames one accepted event (read back as [`Record::Event`]), written by hand: the data
/// goes in as the producer's JSON text when it is known, instead of re-serialising the
/// parsed tree (the costliest step of an append).
pub fn frame_event(event: &crate::router::Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write(out);
    out.extend_from_slice(br#"{"record":"event","event":{"id":"#);
    json(out, &event.id.as_str());
    out.extend_from_slice(br#","type":"#);
    json(out, &&*event.type_name);
    out.extend_from_slice(br#","time":""#);
    out.extend_from_slice(crate::router::rfc3339(event.time).as_bytes());
    out.extend_from_slice(br#"","priority":"#);
    out.extend_from_slice(event.priority.to_string().as_bytes());
    if let Some(source) = &event.source {
        out.extend_from_slice(br#","source":"#);
        json(out, &source.as_str());
    }
    if event.hops > 0 {
        out.extend_from_slice(format!(r#","hops":{}"#, event.hops).as_bytes());
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(event.data.text().as_bytes());
    out.extend_from_slice(b"}}");
    finish(out, start);
}

/// Writing one JSON value into a frame (strings escaped by serde_json).
mod erased {
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("JSON values always serialise");
        }
    }
}

pub fn frame(record: &impl serde::Serialize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *out, record).expect("records always serialise");
    finish(out, start);
}

/// Fills in the header of the frame that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
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
fn keep_text(payload: &[u8], event: &mut crate::router::Event) {
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
            event.data = crate::router::Body::read(text.clone(), &tape);
        }
    }
}

/// Reads every whole, intact record of a segment; returns them and the byte length of the
/// intact prefix (a crash can leave a torn record at the end: it is cut off there).
pub fn read_segment(path: &Path) -> Result<(Vec<Record>, u64), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut records, mut good) = (Vec::new(), 0u64);
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    loop {
        if read_full(&mut reader, &mut header).map_err(|e| StoreError::io(path, e))? < HEADER {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES {
            break;
        }
        payload.resize(len as usize, 0);
        if read_full(&mut reader, &mut payload).map_err(|e| StoreError::io(path, e))? < payload.len()
            || crc32fast::hash(&payload) != crc
        {
            break;
        }
        match serde_json::from_slice::<Record>(&payload) {
            Ok(Record::Event { mut event }) => {
                keep_text(&payload, &mut event);
                records.push(Record::Event { event })
            }
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), offset = good, error = %e, "skipping an unreadable record")
            }
        }
        good += (HEADER + payload.len()) as u64;
    }
    Ok((records, good))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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
}

impl Writer {
    /// Opens a fresh segment numbered `number` (segments are never appended to after a
    /// restart, so a torn tail in an old one stays where recovery cut it).
    pub fn open(dir: &Path, number: u64, durability: Durability, segment_bytes: u64) -> Result<Writer, StoreError> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
        if durability != Durability::Off {
            sync_dir(dir)?;
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            durability,
            segment_bytes,
            number,
            file: Arc::new(file),
            written: 0,
            bytes: Arc::default(),
        })
    }

    pub fn with_bytes(mut self, bytes: Arc<AtomicU64>) -> Self {
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
                    Command::DeleteBelow(n) => self.delete_below(n),
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

    fn commit(&mut self, buf: &mut Vec<u8>, sync: bool, on_roll: &impl Fn(u64)) -> Result<(), StoreError> {
        if !buf.is_empty() {
            let path = segment_path(&self.dir, self.number);
            self.file.write_all(buf).map_err(|e| StoreError::io(&path, e))?;
            self.written += buf.len() as u64;
            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
            if sync {
                self.file.sync_data().map_err(|e| StoreError::io(&path, e))?;
            }
        }
        if self.written >= self.segment_bytes {
            // `off` never syncs, not even here: syncing a whole unsynced segment at once
            // stalls every ack behind it for 100+ ms.
            if self.durability != Durability::Off {
                self.file.sync_data().map_err(|e| StoreError::io(&self.dir, e))?;
            }
            *self = Writer::open(&self.dir, self.number + 1, self.durability, self.segment_bytes)?
                .with_bytes(self.bytes.clone());
            on_roll(self.number);
        }
        Ok(())
    }

    fn delete_below(&self, n: u64) {
        let Ok(list) = segments(&self.dir) else { return };
        for (number, path) in list.into_iter().filter(|(k, _)| *k < n && *k < self.number) {
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
