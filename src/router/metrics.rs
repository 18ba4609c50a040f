//! The core's lines of `/metrics` (events routed, dropped, emitted, dead-lettered,
//! duplicates, retries, budgets, panics; the log's; each plugin's calls, failures by kind,
//! latency and samples) and the plugin list of `/healthz`.

use super::pipeline::Core;
use crate::event::FailureKind;
use crate::wasm::config::World;
use crate::wasm::Plugin;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct PipelineCounters {
    /// Events admitted through any door (HTTP, WebSockets, NATS, AMQP, the router's own),
    /// duplicates included: counted where the admission is written, so also when its
    /// producer hung up meanwhile (the door never sees the answer then).
    pub accepted: AtomicU64,
    pub routed: AtomicU64,
    pub dropped: AtomicU64,
    pub emitted: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Unfinished events found in the log at start-up and processed again.
    pub recovered: AtomicU64,
    /// Events answered as duplicates (an id seen within the idempotency window).
    pub duplicates: AtomicU64,
    /// Handler calls scheduled to be made again.
    pub retries: AtomicU64,
    /// Accepted events whose work went past `pipeline.root_budget`.
    pub over_budget: AtomicU64,
    /// Jobs a pipeline worker panicked on (each failed alone; the worker went on).
    pub worker_panics: AtomicU64,
}

/// The failure kind in an event's status when a worker panicked while working on it.
pub const WORKER_PANIC: &str = "worker_panic";

impl Core {
    /// The pipeline's and the plugins' lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        for (name, help, v) in [
            (
                "eventyard_events_accepted_total",
                "Events that passed validation and were accepted (any door; duplicates included).",
                &c.accepted,
            ),
            ("eventyard_events_routed_total", "Events that entered a route.", &c.routed),
            ("eventyard_events_dropped_total", "Events a filter dropped.", &c.dropped),
            ("eventyard_events_emitted_total", "Events plugins emitted and the router accepted.", &c.emitted),
            ("eventyard_events_dead_lettered_total", "Events a plugin failed on.", &c.dead_lettered),
            (
                "eventyard_events_duplicate_total",
                "Events answered as duplicates of one accepted before.",
                &c.duplicates,
            ),
            ("eventyard_events_recovered_total", "Unfinished events recovered from the log at start-up.", &c.recovered),
            (
                "eventyard_handler_retries_total",
                "Handler calls scheduled again after a failure that may pass.",
                &c.retries,
            ),
            (
                "eventyard_events_over_budget_total",
                "Accepted events whose work went past pipeline.root_budget (dead-lettered as root_budget).",
                &c.over_budget,
            ),
            (
                "eventyard_worker_panics_total",
                "Jobs a pipeline worker panicked on (that event failed; the worker went on).",
                &c.worker_panics,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        self.log.render_metrics(out);
        let name = "eventyard_rpc_waiters";
        let _ = writeln!(
            out,
            "# HELP {name} Callers of POST /v1/rpc waiting for a response.\n# TYPE {name} gauge\n{name} {}",
            self.rpc.waiting()
        );
        self.dead_letters.render_metrics(out);
        type Read = fn(&Plugin) -> u64;
        let per_plugin: [(&str, &str, &str, Read); 8] = [
            ("eventyard_plugin_calls_total", "counter", "Calls made to the plugin.", |p| {
                p.stats.calls.load(Ordering::Relaxed)
            }),
            (
                "eventyard_plugin_instantiations_total",
                "counter",
                "Instances created (warm pool misses, recycling, strict mode).",
                |p| p.stats.instantiations.load(Ordering::Relaxed),
            ),
            (
                "eventyard_plugin_batch_calls_total",
                "counter",
                "handle-batch calls (a run of events in one call; each event also counts in calls_total).",
                |p| p.stats.batch_calls.load(Ordering::Relaxed),
            ),
            (
                "eventyard_plugin_batch_fallbacks_total",
                "counter",
                "handle-batch calls that failed as a whole; their events were handled again one by one.",
                |p| p.stats.batch_fallbacks.load(Ordering::Relaxed),
            ),
            (
                "eventyard_plugin_output_dropped_bytes_total",
                "counter",
                "Guest stdout/stderr bytes over the capture cap.",
                |p| p.stats.output_dropped_bytes.load(Ordering::Relaxed),
            ),
            (
                "eventyard_plugin_peak_memory_bytes",
                "gauge",
                "The largest linear memory an instance of the plugin grew to.",
                |p| p.stats.peak_memory_bytes.load(Ordering::Relaxed),
            ),
            (
                "eventyard_plugin_fuel_consumed_total",
                "counter",
                "Fuel the plugin's calls used (only when some plugin has a fuel budget).",
                |p| p.stats.fuel_consumed.load(Ordering::Relaxed),
            ),
            ("eventyard_plugin_circuit_open", "gauge", "1 while the plugin's circuit breaker is open.", |p| {
                u64::from(p.breaker_open())
            }),
        ];
        for (name, kind, help, read) in per_plugin {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for p in self.plugins().iter() {
                let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", p.name(), read(p));
            }
        }
        let _ = writeln!(out, "# TYPE eventyard_plugin_failures_total counter");
        for p in self.plugins().iter() {
            for (k, n) in FailureKind::ALL.iter().zip(&p.stats.failures) {
                let (plugin, kind, n) = (p.name(), k.as_str(), n.load(Ordering::Relaxed));
                let _ = writeln!(out, "eventyard_plugin_failures_total{{plugin=\"{plugin}\",kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# TYPE eventyard_plugin_call_seconds histogram");
        for p in self.plugins().iter() {
            p.stats.latency.render(out, "eventyard_plugin_call_seconds", &format!("plugin=\"{}\"", p.name()));
        }
        self.samples.render(out);
    }

    /// Which plugins exist per world (for `/healthz`).
    pub fn plugin_names(&self) -> HashMap<&'static str, Vec<String>> {
        let mut m: HashMap<&'static str, Vec<String>> = HashMap::new();
        for p in self.plugins().iter() {
            m.entry(match p.world() {
                World::Filter => "filters",
                World::Handler => "handlers",
            })
            .or_default()
            .push(p.name().to_string());
        }
        m
    }
}
