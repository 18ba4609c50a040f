//! Counters the router exports at `GET /metrics` in the Prometheus text format.
//! Plain atomics: the hot path pays one relaxed add per event.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub rejected: RejectCounters,
    pub subscriber_lagged: AtomicU64,
    /// Parts that add their own lines (the broker sources).
    parts: std::sync::Mutex<Vec<std::sync::Arc<dyn Render>>>,
}

/// A part with lines of its own in `/metrics`.
pub trait Render: Send + Sync {
    fn render(&self, out: &mut String);
}

/// One series of [`render_per_part`]: its name, help text, and how to read it off a part.
pub type PartSeries<P> = (&'static str, &'static str, fn(&P) -> &AtomicU64);

/// The lines of series that every part of one kind has (each AMQP source, each sink), one
/// line per part labelled `label="<name>"`: each series' `HELP` and `TYPE` once (the text
/// format allows them once), a `_total` series a counter, others gauges. Nothing without
/// parts.
pub fn render_per_part<P>(out: &mut String, label: &str, parts: &[(&str, &P)], series: &[PartSeries<P>]) {
    if parts.is_empty() {
        return;
    }
    for (name, help, value) in series {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (part, counters) in parts {
            let _ = writeln!(out, "{name}{{{label}=\"{part}\"}} {}", value(counters).load(Ordering::Relaxed));
        }
    }
}

/// Rejections by the stable error code the client saw.
#[derive(Default)]
pub struct RejectCounters {
    counts: [AtomicU64; REJECT_CODES.len()],
}

/// Every error code that rejects an event; the order is the exposition order.
pub const REJECT_CODES: [&str; 13] = [
    "overloaded",
    "log_unavailable",
    "validation_failed",
    "unknown_event_type",
    "malformed_json",
    "payload_too_large",
    "unsupported_media_type",
    "invalid_cloudevent",
    "invalid_batch_line",
    "too_many_items",
    "id_too_long",
    "too_deep",
    "forbidden_type",
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
        let _ = writeln!(s, "# HELP eventyard_events_rejected_total Events refused at ingestion, by error code.");
        let _ = writeln!(s, "# TYPE eventyard_events_rejected_total counter");
        for (code, n) in REJECT_CODES.iter().zip(&self.rejected.counts) {
            let _ = writeln!(s, "eventyard_events_rejected_total{{error=\"{code}\"}} {}", n.load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "# HELP eventyard_subscriber_frames_lagged_total Frames slow subscribers missed.");
        let _ = writeln!(s, "# TYPE eventyard_subscriber_frames_lagged_total counter");
        let _ =
            writeln!(s, "eventyard_subscriber_frames_lagged_total {}", self.subscriber_lagged.load(Ordering::Relaxed));
        for part in self.parts.lock().expect("metrics parts").iter() {
            part.render(&mut s);
        }
        s
    }

    /// Adds `part`'s lines to every rendering from now on.
    pub fn register(&self, part: std::sync::Arc<dyn Render>) {
        self.parts.lock().expect("metrics parts").push(part);
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

    /// Calls observed and their total seconds (the dashboard charts the mean between two
    /// readings).
    pub fn count_and_sum(&self) -> (u64, f64) {
        (self.count.load(Ordering::Relaxed), self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
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

/// Most series one plugin may create; past it, new series are refused (and counted), so a
/// plugin cannot grow the router's memory or the scrape through label values.
pub const MAX_SERIES_PER_PLUGIN: usize = 1000;
/// Most bytes of exposition text one plugin's series may take (names and labels, times the
/// lines a series renders: one, or 13 for a histogram). 1000 plain series with labels of
/// ~200 bytes fit; past it new series are refused and counted.
pub const MAX_SERIES_BYTES_PER_PLUGIN: usize = 256 * 1024;
/// Most labels on one sample; checked before any label is read from the guest.
pub const MAX_LABELS_PER_SAMPLE: usize = 16;
/// Longest metric name and label name a plugin may use.
pub const MAX_METRIC_NAME_BYTES: usize = 128;
/// Longest label value a plugin may use (longer values are refused, not cut: two cut
/// values could become one series).
pub const MAX_LABEL_VALUE_BYTES: usize = 512;
/// Label names the router uses itself: `plugin` (who published it), `le` and `quantile`
/// (histogram and summary buckets). Names starting with `__` are reserved by Prometheus.
pub const RESERVED_LABELS: [&str; 3] = ["plugin", "le", "quantile"];
/// Prefix of every plugin metric's family name.
pub const PLUGIN_METRIC_PREFIX: &str = "eventyard_plugin_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Counter,
    Gauge,
    Histogram,
}

impl SampleKind {
    fn as_str(self) -> &'static str {
        match self {
            SampleKind::Counter => "counter",
            SampleKind::Gauge => "gauge",
            SampleKind::Histogram => "histogram",
        }
    }

    /// Lines one series of this kind renders.
    fn lines(self) -> usize {
        match self {
            SampleKind::Histogram => SAMPLE_BUCKETS.len() + 3,
            _ => 1,
        }
    }
}

/// Why a plugin's metric sample was not recorded (the `reason` label of
/// `eventyard_plugin_samples_refused_total`). A refused sample never fails the call: the
/// plugin's work is done, only its telemetry is wrong, and the count tells its author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Not `[a-zA-Z_][a-zA-Z0-9_]*`, or longer than [`MAX_METRIC_NAME_BYTES`].
    InvalidName,
    /// A label name that is not `[a-zA-Z_][a-zA-Z0-9_]*` or is too long.
    InvalidLabel,
    /// A label name in [`RESERVED_LABELS`] or starting with `__`.
    ReservedLabel,
    /// The same label name twice.
    DuplicateLabel,
    /// More than [`MAX_LABELS_PER_SAMPLE`] labels.
    TooManyLabels,
    /// A label value longer than [`MAX_LABEL_VALUE_BYTES`].
    LabelTooLong,
    /// The name is already a metric of another kind (or a histogram's `_bucket`, `_sum`,
    /// `_count`).
    TypeConflict,
    /// NaN or infinite.
    NotFinite,
    /// The plugin has [`MAX_SERIES_PER_PLUGIN`] series.
    SeriesLimit,
    /// The plugin's series take [`MAX_SERIES_BYTES_PER_PLUGIN`].
    BytesLimit,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidName => "invalid_name",
            Refusal::InvalidLabel => "invalid_label",
            Refusal::ReservedLabel => "reserved_label",
            Refusal::DuplicateLabel => "duplicate_label",
            Refusal::TooManyLabels => "too_many_labels",
            Refusal::LabelTooLong => "label_too_long",
            Refusal::TypeConflict => "type_conflict",
            Refusal::NotFinite => "not_finite",
            Refusal::SeriesLimit => "series_limit",
            Refusal::BytesLimit => "bytes_limit",
        }
    }
}

/// Metric samples plugins publish through the `metrics` import, exported as
/// `eventyard_plugin_<name>{plugin="...",...}`, and the counts of what plugins sent that
/// the router did not keep (refused samples, dropped log lines).
#[derive(Default)]
pub struct PluginSamples {
    inner: std::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (family name, rendered labels) -> series.
    series: std::collections::BTreeMap<(String, String), Series>,
    /// Each family's kind: the first sample decides.
    kinds: std::collections::HashMap<String, SampleKind>,
    /// Per plugin: series and bytes used.
    usage: std::collections::HashMap<String, (usize, usize)>,
    refused: std::collections::BTreeMap<(String, Refusal), u64>,
    /// Per plugin: log lines dropped (over the per-call caps) and bytes not logged.
    log_dropped: std::collections::BTreeMap<String, (u64, u64)>,
}

struct Series {
    kind: SampleKind,
    value: f64,
    /// Histograms: per-bucket counts over [`SAMPLE_BUCKETS`]; `value` is then the sum.
    buckets: Vec<u64>,
    count: u64,
}

/// Buckets for plugin-published histograms (unit-free).
pub const SAMPLE_BUCKETS: [f64; 10] = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0];

/// Suffixes a histogram's samples add to its family name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Prometheus's rule for metric and label names, without `:` (kept for recording rules).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_METRIC_NAME_BYTES
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped; any other
/// control character replaced, so no line of the scrape can be forged or broken.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(crate::event::text::REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Whether `family` (of `kind`) would share a sample name with a family in `taken`.
fn collides(family: &str, kind: SampleKind, taken: impl Fn(&str) -> Option<SampleKind>) -> bool {
    if taken(family).is_some_and(|k| k != kind) {
        return true;
    }
    let stem_is_histogram = HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|s| family.strip_suffix(s))
        .any(|stem| taken(stem) == Some(SampleKind::Histogram));
    let suffix_taken =
        kind == SampleKind::Histogram && HISTOGRAM_SUFFIXES.iter().any(|s| taken(&format!("{family}{s}")).is_some());
    stem_is_histogram || suffix_taken
}

impl PluginSamples {
    /// Records one sample, or counts why it was refused.
    pub fn record(&self, plugin: &str, kind: SampleKind, name: &str, value: f64, labels: Vec<(String, String)>) {
        if let Err(why) = self.try_record(plugin, kind, name, value, labels) {
            self.refused(plugin, why);
        }
    }

    fn try_record(
        &self,
        plugin: &str,
        kind: SampleKind,
        name: &str,
        value: f64,
        mut labels: Vec<(String, String)>,
    ) -> Result<(), Refusal> {
        if !value.is_finite() {
            return Err(Refusal::NotFinite);
        }
        if !valid_name(name) {
            return Err(Refusal::InvalidName);
        }
        if labels.len() > MAX_LABELS_PER_SAMPLE {
            return Err(Refusal::TooManyLabels);
        }
        labels.sort();
        let mut rendered = format!("plugin=\"{}\"", escape(plugin));
        for (i, (k, v)) in labels.iter().enumerate() {
            if !valid_name(k) {
                return Err(Refusal::InvalidLabel);
            }
            if RESERVED_LABELS.contains(&k.as_str()) || k.starts_with("__") {
                return Err(Refusal::ReservedLabel);
            }
            if i > 0 && labels[i - 1].0 == *k {
                return Err(Refusal::DuplicateLabel);
            }
            if v.len() > MAX_LABEL_VALUE_BYTES {
                return Err(Refusal::LabelTooLong);
            }
            let _ = write!(rendered, ",{k}=\"{}\"", escape(v));
        }
        let family = format!("{PLUGIN_METRIC_PREFIX}{name}");
        let mut inner = self.inner.lock().expect("samples lock");
        let inner = &mut *inner;
        if collides(&family, kind, |f| inner.kinds.get(f).copied()) {
            return Err(Refusal::TypeConflict);
        }
        let key = (family, rendered);
        if !inner.series.contains_key(&key) {
            let cost = (key.0.len() + key.1.len() + 32) * kind.lines();
            let (series, bytes) = inner.usage.entry(plugin.to_string()).or_default();
            if *series >= MAX_SERIES_PER_PLUGIN {
                return Err(Refusal::SeriesLimit);
            }
            if *bytes + cost > MAX_SERIES_BYTES_PER_PLUGIN {
                return Err(Refusal::BytesLimit);
            }
            *series += 1;
            *bytes += cost;
            inner.kinds.entry(key.0.clone()).or_insert(kind);
            let buckets = vec![0; if kind == SampleKind::Histogram { SAMPLE_BUCKETS.len() } else { 0 }];
            inner.series.insert(key.clone(), Series { kind, value: 0.0, buckets, count: 0 });
        }
        let s = inner.series.get_mut(&key).expect("present");
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
        Ok(())
    }

    /// Counts a sample the router did not keep.
    pub fn refused(&self, plugin: &str, why: Refusal) {
        let mut inner = self.inner.lock().expect("samples lock");
        *inner.refused.entry((plugin.to_string(), why)).or_default() += 1;
    }

    /// Counts log lines dropped over the per-call caps and bytes not logged (those lines,
    /// and the part of longer lines that was cut).
    pub fn log_dropped(&self, plugin: &str, lines: u64, bytes: usize) {
        let mut inner = self.inner.lock().expect("samples lock");
        let e = inner.log_dropped.entry(plugin.to_string()).or_default();
        e.0 += lines;
        e.1 += bytes as u64;
    }

    /// Appends the plugins' families to `out`, which holds the router's own metrics: a
    /// plugin family that would share a sample name with one of them is left out, so a
    /// plugin can never make the scrape invalid (whatever metrics the router adds later).
    pub fn render(&self, out: &mut String) {
        let inner = self.inner.lock().expect("samples lock");
        let _ =
            writeln!(out, "# HELP eventyard_plugin_samples_refused_total Plugin metric samples refused, by reason.");
        let _ = writeln!(out, "# TYPE eventyard_plugin_samples_refused_total counter");
        for ((plugin, why), n) in &inner.refused {
            let (plugin, why) = (escape(plugin), why.as_str());
            let _ = writeln!(out, "eventyard_plugin_samples_refused_total{{plugin=\"{plugin}\",reason=\"{why}\"}} {n}");
        }
        for (name, help, pick) in [
            (
                "eventyard_plugin_log_dropped_lines_total",
                "Plugin log lines dropped over the per-call caps.",
                (|e: &(u64, u64)| e.0) as fn(&(u64, u64)) -> u64,
            ),
            ("eventyard_plugin_log_dropped_bytes_total", "Plugin log bytes not logged (dropped or cut lines).", |e| {
                e.1
            }),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (plugin, e) in &inner.log_dropped {
                let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", escape(plugin), pick(e));
            }
        }
        let router: std::collections::HashMap<String, SampleKind> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, _)| (name.to_string(), SampleKind::Counter))
            .collect();
        let mut last_name = "";
        let mut skip = false;
        for ((name, labels), s) in inner.series.iter() {
            if name != last_name {
                last_name = name;
                // Any router family of that name conflicts, whatever its kind.
                skip = router.contains_key(name.as_str())
                    || collides(name, s.kind, |f| router.get(f).map(|_| SampleKind::Histogram));
                if !skip {
                    let _ = writeln!(out, "# TYPE {name} {}", s.kind.as_str());
                }
            }
            if skip {
                continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(samples: &PluginSamples) -> String {
        let mut out =
            String::from("# TYPE eventyard_plugin_calls_total counter\neventyard_plugin_calls_total{plugin=\"p\"} 1\n");
        samples.render(&mut out);
        out
    }

    #[test]
    fn bad_names_and_labels_are_refused_and_counted() {
        let s = PluginSamples::default();
        let l = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        s.record("p", SampleKind::Counter, "ok", 1.0, l("kind", "a"));
        s.record("p", SampleKind::Counter, "has spaces", 1.0, vec![]);
        s.record("p", SampleKind::Counter, "x", 1.0, l("1bad", "a"));
        s.record("p", SampleKind::Counter, "x", 1.0, l("plugin", "a"));
        s.record("p", SampleKind::Counter, "x", 1.0, l("__name__", "a"));
        s.record("p", SampleKind::Counter, "x", 1.0, vec![("a".into(), "1".into()), ("a".into(), "2".into())]);
        s.record("p", SampleKind::Gauge, "ok", 1.0, l("kind", "b")); // counter already
        s.record("p", SampleKind::Counter, "calls_total", 1.0, vec![]); // the router's
        s.record("p", SampleKind::Histogram, "h", 1.0, vec![]);
        s.record("p", SampleKind::Counter, "h_count", 1.0, vec![]); // the histogram's
        s.record("p", SampleKind::Gauge, "nan", f64::NAN, vec![]);
        let out = rendered(&s);
        for (reason, n) in [
            ("invalid_name", 1),
            ("invalid_label", 1),
            ("reserved_label", 2),
            ("duplicate_label", 1),
            ("type_conflict", 2),
            ("not_finite", 1),
        ] {
            let line = format!("eventyard_plugin_samples_refused_total{{plugin=\"p\",reason=\"{reason}\"}} {n}");
            assert!(out.contains(&line), "{line}\n{out}");
        }
        assert!(out.contains("eventyard_plugin_ok{plugin=\"p\",kind=\"a\"} 1"));
        assert!(out.contains("eventyard_plugin_h_count{plugin=\"p\"} 1"));
        // The one the router already has is left out of the scrape.
        assert_eq!(out.matches("# TYPE eventyard_plugin_calls_total").count(), 1, "{out}");
    }

    #[test]
    fn values_are_escaped() {
        let s = PluginSamples::default();
        s.record("p", SampleKind::Gauge, "q", 7.0, vec![("said".into(), "say \"hi\" \\ then\nnext\r".into())]);
        let out = rendered(&s);
        assert!(
            out.contains("eventyard_plugin_q{plugin=\"p\",said=\"say \\\"hi\\\" \\\\ then\\nnext\u{FFFD}\"} 7"),
            "{out}"
        );
    }

    #[test]
    fn series_per_plugin_are_capped() {
        let s = PluginSamples::default();
        for i in 0..MAX_SERIES_PER_PLUGIN + 10 {
            s.record("p", SampleKind::Counter, "flood", 1.0, vec![("n".into(), i.to_string())]);
        }
        s.record("other", SampleKind::Counter, "flood", 1.0, vec![("n".into(), "0".into())]);
        let out = rendered(&s);
        assert_eq!(out.matches("eventyard_plugin_flood{plugin=\"p\"").count(), MAX_SERIES_PER_PLUGIN);
        assert!(out.contains("reason=\"series_limit\"} 10"));
        assert!(out.contains("eventyard_plugin_flood{plugin=\"other\",n=\"0\"} 1"));
        let big = "v".repeat(MAX_LABEL_VALUE_BYTES);
        for i in 0..1000 {
            s.record("q", SampleKind::Counter, "wide", 1.0, vec![("n".into(), format!("{big:.500}{i}"))]);
        }
        let out = rendered(&s);
        let kept = out.matches("eventyard_plugin_wide{").count();
        assert!(kept < 1000 && kept * 500 <= MAX_SERIES_BYTES_PER_PLUGIN, "{kept}");
        assert!(out.contains("plugin=\"q\",reason=\"bytes_limit\"}"));
    }
}
