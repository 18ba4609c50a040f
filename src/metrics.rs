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
pub const REJECT_CODES: [&str; 8] = [
    "overloaded",
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

/// Upper bounds (seconds) of the latency histogram buckets: 10 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 12] = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A lock-free latency histogram (Prometheus cumulative buckets, rendered on scrape).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    /// Writes `<name>_bucket`, `_sum` and `_count` lines with `labels` (`k="v",...`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Most series one plugin may create; past it, new series are ignored (and logged once),
/// so a plugin cannot grow the router's memory through label values.
pub const MAX_SERIES_PER_PLUGIN: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Counter,
    Gauge,
    Histogram,
}

/// Metric samples plugins publish through the `metrics` import, exported as
/// `eventyard_plugin_<name>{plugin="...",...}`.
#[derive(Default)]
pub struct PluginSamples {
    series: std::sync::Mutex<std::collections::BTreeMap<(String, String), Series>>,
}

struct Series {
    kind: SampleKind,
    plugin: String,
    value: f64,
    /// Histograms: per-bucket counts over [`SAMPLE_BUCKETS`]; `value` is then the sum.
    buckets: Vec<u64>,
    count: u64,
}

/// Buckets for plugin-published histograms (unit-free).
pub const SAMPLE_BUCKETS: [f64; 10] = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0];

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl PluginSamples {
    pub fn record(&self, plugin: &str, kind: SampleKind, name: &str, value: f64, mut labels: Vec<(String, String)>) {
        if !value.is_finite() {
            return;
        }
        labels.sort();
        let mut rendered = format!("plugin=\"{}\"", escape(plugin));
        for (k, v) in &labels {
            let _ = write!(rendered, ",{}=\"{}\"", sanitize(k), escape(v));
        }
        let key = (format!("eventyard_plugin_{}", sanitize(name)), rendered);
        let mut series = self.series.lock().expect("samples lock");
        if !series.contains_key(&key) {
            if series.values().filter(|s| s.plugin == plugin).count() >= MAX_SERIES_PER_PLUGIN {
                return;
            }
            let buckets = vec![0; SAMPLE_BUCKETS.len()];
            series.insert(key.clone(), Series { kind, plugin: plugin.to_string(), value: 0.0, buckets, count: 0 });
        }
        let s = series.get_mut(&key).expect("just inserted");
        if s.kind != kind {
            return;
        }
        match kind {
            SampleKind::Counter => s.value += value.max(0.0),
            SampleKind::Gauge => s.value = value,
            SampleKind::Histogram => {
                s.value += value;
                s.count += 1;
                if let Some(i) = SAMPLE_BUCKETS.iter().position(|b| value <= *b) {
                    s.buckets[i] += 1;
                }
            }
        }
    }

    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().expect("samples lock");
        let mut last_name = "";
        for ((name, labels), s) in series.iter() {
            if name != last_name {
                let t = match s.kind {
                    SampleKind::Counter => "counter",
                    SampleKind::Gauge => "gauge",
                    SampleKind::Histogram => "histogram",
                };
                let _ = writeln!(out, "# TYPE {name} {t}");
                last_name = name;
            }
            match s.kind {
                SampleKind::Counter | SampleKind::Gauge => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", s.value);
                }
                SampleKind::Histogram => {
                    let mut cumulative = 0;
                    for (b, n) in SAMPLE_BUCKETS.iter().zip(&s.buckets) {
                        cumulative += n;
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
                    }
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
                    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.value);
                    let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
                }
            }
        }
    }
}
