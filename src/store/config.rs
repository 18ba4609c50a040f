//! `[store]`: where and how durably the event log, dead letters and documents are kept.

use crate::settings::{at_most, positive, Invalid};
use serde::Deserialize;
use std::path::PathBuf;

/// Log segment size: large enough that rolling is rare, small enough that a finished one
/// is deleted soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Log size past which ingestion answers 503 (unfinished events are piling up).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Largest `store.group_window_us` (one second): every 202 waits up to this long.
pub const MAX_GROUP_WINDOW_US: u64 = 1_000_000;

/// `[store]`: the durable event log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `local` (default: the segment log in `dir`, one router) or `nats` (a JetStream
    /// shared by several routers, set up in `[store.nats]`).
    pub backend: Backend,
    /// `[store.nats]`: used when `backend = "nats"`.
    pub nats: crate::store::nats::NatsConfig,
    /// `group` (default: appends arriving together share one fdatasync before their 202),
    /// `always` (one fdatasync per request), `off` (no sync; survives a process crash, not
    /// a power loss).
    pub durability: DurabilityMode,
    /// How long the writer gathers appends before a group sync (µs); 0 = sync as soon as
    /// the previous sync is done. A 202 waits at most about this plus one sync.
    pub group_window_us: u64,
    /// A segment file is closed past this size; finished segments are deleted.
    pub segment_bytes: u64,
    /// Past this much log on disk (segments and the dead-letter file), ingestion answers
    /// 503 instead of filling the disk.
    pub max_bytes: u64,
    /// Dead letters kept; past it the oldest is dropped and counted in
    /// `eventyard_dead_letters_dropped_total`.
    pub max_dead_letters: usize,
    /// Where the durable state lives: the event log's segments, the dead letters and the
    /// config service's documents (`config/`); default `<data_dir>/log`.
    pub dir: Option<PathBuf>,
}

/// Which [`crate::store::EventLog`] backend keeps the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    Always,
    Group,
    Off,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            nats: Default::default(),
            durability: DurabilityMode::Group,
            group_window_us: 0,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_LOG_BYTES,
            max_dead_letters: crate::store::dead_letters::DEFAULT_MAX_DEAD_LETTERS,
            dir: None,
        }
    }
}

impl StoreConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        at_most("store.group_window_us", self.group_window_us, MAX_GROUP_WINDOW_US)?;
        positive("store.max_dead_letters", self.max_dead_letters as u64)?;
        if self.backend == Backend::Nats {
            self.nats.check()?;
        }
        if self.segment_bytes < 4096 || self.max_bytes < self.segment_bytes {
            return Err(Invalid::new(
                "store",
                "segment_bytes must be at least 4096 and max_bytes at least segment_bytes",
            ));
        }
        Ok(())
    }
}
