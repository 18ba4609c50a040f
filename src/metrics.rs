//! Counters the router exports at `GET /metrics` in the Prometheus text format.
//! Plain atomics: the hot path pays one relaxed add per event.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub rejected: RejectCounters,
    pub subscriber_lagged: AtomicU64,
}

/// Rejections by the stable error code the client saw.
#[derive(Default)]
pub struct RejectCounters {
    counts: [AtomicU64; REJECT_CODES.len()],
}

/// Every error code that rejects an event; the order is the exposition order.
pub const REJECT_CODES: [&str; 7] = [
    "validation_failed",
    "unknown_event_type",
    "malformed_json",
    "payload_too_large",
    "unsupported_media_type",
    "invalid_cloudevent",
    "invalid_batch_line",
];

impl RejectCounters {
    pub fn inc(&self, code: &str) {
        if let Some(i) = REJECT_CODES.iter().position(|c| *c == code) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP eventyard_events_accepted_total Events that passed validation and were accepted.");
        let _ = writeln!(s, "# TYPE eventyard_events_accepted_total counter");
        let _ = writeln!(s, "eventyard_events_accepted_total {}", self.accepted.load(Ordering::Relaxed));
        let _ = writeln!(s, "# HELP eventyard_events_rejected_total Events refused at ingestion, by error code.");
        let _ = writeln!(s, "# TYPE eventyard_events_rejected_total counter");
        for (code, n) in REJECT_CODES.iter().zip(&self.rejected.counts) {
            let _ = writeln!(s, "eventyard_events_rejected_total{{error=\"{code}\"}} {}", n.load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "# HELP eventyard_subscriber_frames_lagged_total Frames slow subscribers missed.");
        let _ = writeln!(s, "# TYPE eventyard_subscriber_frames_lagged_total counter");
        let _ =
            writeln!(s, "eventyard_subscriber_frames_lagged_total {}", self.subscriber_lagged.load(Ordering::Relaxed));
        s
    }
}
