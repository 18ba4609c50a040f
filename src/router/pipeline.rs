//! The pipeline: an accepted event goes to the live subscribers, then, when a route
//! matches its type, onto a bounded queue that worker threads drain. Each matching route
//! runs its filters in order (drop stops the event, replace re-validates the rewritten
//! one) and then its handlers; what handlers emit is validated, checked against their
//! manifest and routed like any other event, up to the hop limit. A failed plugin call
//! fails that event for that plugin only: it becomes a dead letter.

use super::bus::Bus;
use super::dead_letters::DeadLetters;
use super::pattern::TypePattern;
use super::queue::JobQueue;
use super::status::{self, State, StatusBoard};
use super::Event;
use crate::config::{Config, World};
use crate::metrics::PluginSamples;
use crate::schema::Registry;
use crate::store::{Emission, EventStore, FailureNote, Outcome, Recovered, StoreError};
use crate::wasm::bindings::Verdict;
use crate::wasm::host::PluginEvent;
use crate::wasm::plugin::Output;
use crate::wasm::{Checked, Failure, FailureKind, Plugin};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Matches event types by glob or regex.
pub enum Matcher {
    Glob(TypePattern),
    Regex(regex::Regex),
}

impl Matcher {
    pub fn matches(&self, type_name: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.matches(type_name),
            Matcher::Regex(r) => r.is_match(type_name),
        }
    }
}

pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    pub filters: Vec<Arc<Plugin>>,
    pub handlers: Vec<Arc<Plugin>>,
}

/// Why events could not be accepted; nothing of them was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The queue or the log is full: answer 503 with `Retry-After`.
    #[error("the router is at capacity")]
    Overloaded,
    /// The log could not be written.
    #[error(transparent)]
    Store(StoreError),
}

#[derive(Default)]
pub struct PipelineCounters {
    pub routed: AtomicU64,
    pub dropped: AtomicU64,
    pub emitted: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Unfinished events found in the log at start-up and processed again.
    pub recovered: AtomicU64,
    /// Events answered as duplicates (an id seen within the idempotency window).
    pub duplicates: AtomicU64,
}

/// A routed event waiting for a worker. `reserved`: it holds a queue reservation (new
/// events do; recovered ones do not).
struct Job {
    event: Event,
    reserved: bool,
}

pub struct Pipeline {
    pub bus: Bus,
    core: Arc<Core>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What the workers share.
pub struct Core {
    pub registry: Arc<Registry>,
    pub routes: Vec<Route>,
    pub plugins: Vec<Arc<Plugin>>,
    pub dead_letters: DeadLetters,
    pub counters: PipelineCounters,
    pub samples: Arc<PluginSamples>,
    /// Where every accepted event is, for `GET /v1/events/{id}`.
    pub statuses: StatusBoard,
    bus: Bus,
    hop_limit: u8,
    queue: JobQueue<Job>,
    store: Option<Arc<dyn EventStore>>,
    idempotency_window: std::time::Duration,
}

impl Pipeline {
    /// A pipeline with no plugins and no log: accepted events only reach subscribers.
    pub fn new(subscriber_buffer: usize) -> Self {
        Self::with_routes(
            &Config { subscribers: crate::config::SubscriberConfig { buffer: subscriber_buffer }, ..Config::default() },
            Arc::new(Registry::default()),
            vec![],
            vec![],
            Arc::default(),
            None,
        )
    }

    /// Starts the workers; `store` is the durable log and what it recovered (unfinished
    /// events are processed again, finished ones are remembered for status lookups).
    pub fn with_routes(
        config: &Config,
        registry: Arc<Registry>,
        plugins: Vec<Arc<Plugin>>,
        routes: Vec<Route>,
        samples: Arc<PluginSamples>,
        store: Option<(Arc<dyn EventStore>, Recovered)>,
    ) -> Self {
        let bus = Bus::new(config.subscribers.buffer);
        let (store, recovered) = match store {
            Some((s, r)) => (Some(s), r),
            None => (None, Recovered::default()),
        };
        let core = Arc::new(Core {
            registry,
            routes,
            plugins,
            dead_letters: DeadLetters::default(),
            counters: PipelineCounters::default(),
            samples,
            statuses: StatusBoard::default(),
            bus: bus.clone(),
            hop_limit: config.pipeline.hop_limit,
            queue: JobQueue::new(config.pipeline.queue),
            store,
            idempotency_window: std::time::Duration::from_secs(config.ingest.idempotency_window_secs),
        });
        for (event, outcome) in recovered.finished {
            let state = status::finished(outcome);
            core.statuses.insert_at(&event.id, event.type_name.clone(), event.priority, state, event.time);
        }
        let mut workers = Vec::new();
        if !core.routes.is_empty() {
            let n = match config.pipeline.workers {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            for i in 0..n {
                let core = core.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("eventyard-worker-{i}"))
                    .spawn(move || {
                        while let Some(job) = core.queue.pop(|j| j.reserved) {
                            core.run(job.event);
                        }
                    })
                    .expect("spawn pipeline worker");
                workers.push(worker);
            }
        }
        core.counters.recovered.fetch_add(recovered.pending.len() as u64, Ordering::Relaxed);
        for event in recovered.pending {
            core.statuses.insert_at(&event.id, event.type_name.clone(), event.priority, State::Queued, event.time);
            core.queue.push(event.priority, Job { event, reserved: false });
        }
        Self { bus, core, workers: Mutex::new(workers) }
    }

    /// Takes accepted (validated) events: written to the log and acknowledged by it (as
    /// durably as configured) before this returns; then subscribers see them and routed
    /// ones are queued for the workers. All or nothing: on an error none was accepted.
    ///
    /// An event whose id was accepted within the idempotency window is a duplicate: it is
    /// answered like the first (same id) and not stored or processed again.
    pub async fn accept(&self, events: Vec<Event>) -> Result<(), AcceptError> {
        let window = self.core.idempotency_window;
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| {
                let fresh = self.core.statuses.claim(&e.id, e.type_name.clone(), e.priority, window);
                if !fresh {
                    self.core.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                fresh
            })
            .collect();
        let unclaim = |events: &[Event]| events.iter().for_each(|e| self.core.statuses.unclaim(&e.id));
        let routed: Vec<bool> = events.iter().map(|e| self.core.is_routed(&e.type_name)).collect();
        let reserve = routed.iter().filter(|r| **r).count();
        if self.core.queue.reserve(reserve).is_err() {
            unclaim(&events);
            return Err(AcceptError::Overloaded);
        }
        if let Some(store) = &self.core.store {
            let durable = match store.append(&events, &routed) {
                Ok(ack) => ack.await.unwrap_or(Err(StoreError::Closed)),
                Err(e) => Err(e),
            };
            if let Err(e) = durable {
                self.core.queue.release(reserve);
                unclaim(&events);
                return Err(match e {
                    StoreError::Full { .. } => AcceptError::Overloaded,
                    other => AcceptError::Store(other),
                });
            }
        }
        for (event, routed) in events.into_iter().zip(routed) {
            self.bus.publish(&event);
            if !routed {
                self.core.statuses.set(&event.id, State::Processed { outcome: Default::default() });
            }
            if routed {
                self.core.queue.push(event.priority, Job { event, reserved: true });
            }
        }
        Ok(())
    }

    /// Whether any route exists (then events are worth preparing for plugins).
    pub fn has_routes(&self) -> bool {
        !self.core.routes.is_empty()
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Graceful stop: workers finish the event they are on and stop; what is still queued
    /// stays unfinished in the log and is processed at the next start; the log is synced.
    pub async fn shutdown(&self) {
        self.core.queue.close();
        let workers = std::mem::take(&mut *self.workers.lock().expect("workers"));
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        if let Some(store) = &self.core.store {
            let _ = store.flush().await;
        }
    }
}

impl Core {
    fn is_routed(&self, type_name: &str) -> bool {
        self.routes.iter().any(|r| r.matcher.matches(type_name))
    }

    /// Processes one event to the end and records what became of it.
    fn run(&self, event: Event) {
        self.statuses.set(&event.id, State::InProgress);
        let mut outcome = Outcome::default();
        self.process(&event, &mut outcome);
        if let Some(store) = &self.store {
            store.complete(&event, &outcome);
        }
        self.statuses.set(&event.id, status::finished(outcome));
    }

    fn process(&self, event: &Event, outcome: &mut Outcome) {
        'routes: for route in self.routes.iter().filter(|r| r.matcher.matches(&event.type_name)) {
            self.counters.routed.fetch_add(1, Ordering::Relaxed);
            let mut current = std::borrow::Cow::Borrowed(event);
            let mut wit = plugin_event(&current);
            for f in &route.filters {
                match f.call(&wit) {
                    Ok(Output::Verdict(Verdict::Keep)) => {}
                    Ok(Output::Verdict(Verdict::Drop(reason))) => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(plugin = f.name(), event = %event.id, reason, "dropped by filter");
                        outcome.dropped.push((f.name().to_string(), reason));
                        continue 'routes;
                    }
                    Ok(Output::Verdict(Verdict::Replace(r))) => {
                        match self.replacement(f, &current, &r.type_, &r.data) {
                            Ok(e) => {
                                current = std::borrow::Cow::Owned(e);
                                wit = plugin_event(&current);
                            }
                            Err(fail) => {
                                self.dead_letter(&current, f, route, fail, outcome);
                                continue 'routes;
                            }
                        }
                    }
                    Ok(Output::Emitted(_)) => unreachable!("filters answer with verdicts"),
                    Err(fail) => {
                        self.dead_letter(&current, f, route, fail, outcome);
                        continue 'routes;
                    }
                }
            }
            for h in &route.handlers {
                match h.call(&wit) {
                    Ok(Output::Emitted(events)) => {
                        for e in events {
                            self.emit(h, route, &current, e, outcome);
                        }
                    }
                    Ok(Output::Verdict(_)) => unreachable!("handlers answer with events"),
                    Err(fail) => self.dead_letter(&current, h, route, fail, outcome),
                }
            }
        }
    }

    /// A filter's rewritten event: the same type or one its manifest lists, valid.
    fn replacement(&self, f: &Plugin, current: &Event, type_name: &str, raw: &str) -> Result<Event, Failure> {
        let bad = |m: String| Failure::new(FailureKind::BadOutput, m);
        if type_name != &*current.type_name && !f.ctx.manifest.emits.iter().any(|t| t == type_name) {
            return Err(bad(format!("replacement type `{type_name}` is neither the event's nor in `emits`")));
        }
        let ty = self.registry.get(type_name).map_err(|e| bad(e.to_string()))?;
        let data: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| bad(format!("replacement is not JSON: {e}")))?;
        if let Err(v) = ty.validate(&data) {
            let detail: Vec<String> = v.iter().map(|v| format!("{}: {}", v.instance_path, v.message)).collect();
            return Err(bad(format!("replacement fails its schema: {}", detail.join("; "))));
        }
        Ok(Event {
            type_name: ty.name.clone(),
            priority: ty.priority_of(&data),
            data,
            raw: Some(raw.into()),
            ..current.clone()
        })
    }

    /// Routes one checked emitted event like any other, one hop further.
    fn emit(&self, from: &Plugin, route: &Route, parent: &Event, e: Checked, outcome: &mut Outcome) {
        let Ok(ty) = self.registry.get(&e.type_name) else { return };
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            type_name: ty.name.clone(),
            time: time::OffsetDateTime::now_utc(),
            priority: ty.priority_of(&e.data),
            source: Some(format!("plugin:{}", from.name())),
            data: e.data,
            hops: parent.hops + 1,
            raw: Some(e.raw),
        };
        if event.hops > self.hop_limit {
            let f = Failure::new(
                FailureKind::HopLimit,
                format!("emitted event went past the hop limit of {}", self.hop_limit),
            );
            self.dead_letter(&event, from, route, f, outcome);
            return;
        }
        self.counters.emitted.fetch_add(1, Ordering::Relaxed);
        outcome.emitted.push(Emission {
            plugin: from.name().to_string(),
            type_name: event.type_name.to_string(),
            id: event.id.clone(),
        });
        self.bus.publish(&event);
        self.statuses.insert(&event.id, event.type_name.clone(), event.priority, State::InProgress);
        // Emitted events are processed here, before their parent is finished: a crash in
        // between processes the parent (and so re-emits them) again.
        let mut own = Outcome::default();
        self.process(&event, &mut own);
        outcome.failed.extend(own.failed.iter().cloned());
        outcome.emitted.extend(own.emitted.iter().cloned());
        self.statuses.set(&event.id, status::finished(own));
    }

    fn dead_letter(&self, event: &Event, plugin: &Plugin, route: &Route, failure: Failure, outcome: &mut Outcome) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        outcome.failed.push(FailureNote {
            plugin: plugin.name().to_string(),
            kind: failure.kind.as_str().to_string(),
            message: failure.message.clone(),
            attempts: 1,
        });
        self.dead_letters.push(event, plugin.name(), &route.name, failure);
    }

    /// The pipeline's and the plugins' lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        for (name, help, v) in [
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
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        type Read = fn(&Plugin) -> u64;
        let per_plugin: [(&str, &str, &str, Read); 4] = [
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
                "eventyard_plugin_output_dropped_bytes_total",
                "counter",
                "Guest stdout/stderr bytes over the capture cap.",
                |p| p.stats.output_dropped_bytes.load(Ordering::Relaxed),
            ),
            ("eventyard_plugin_circuit_open", "gauge", "1 while the plugin's circuit breaker is open.", |p| {
                u64::from(p.breaker_open())
            }),
        ];
        for (name, kind, help, read) in per_plugin {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for p in &self.plugins {
                let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", p.name(), read(p));
            }
        }
        let _ = writeln!(out, "# TYPE eventyard_plugin_failures_total counter");
        for p in &self.plugins {
            for (k, n) in FailureKind::ALL.iter().zip(&p.stats.failures) {
                let (plugin, kind, n) = (p.name(), k.as_str(), n.load(Ordering::Relaxed));
                let _ = writeln!(out, "eventyard_plugin_failures_total{{plugin=\"{plugin}\",kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# TYPE eventyard_plugin_call_seconds histogram");
        for p in &self.plugins {
            p.stats.latency.render(out, "eventyard_plugin_call_seconds", &format!("plugin=\"{}\"", p.name()));
        }
        self.samples.render(out);
    }

    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// Which plugins exist per world (for `/healthz`).
    pub fn plugin_names(&self) -> HashMap<&'static str, Vec<&str>> {
        let mut m: HashMap<&'static str, Vec<&str>> = HashMap::new();
        for p in &self.plugins {
            m.entry(match p.world() {
                World::Filter => "filters",
                World::Handler => "handlers",
            })
            .or_default()
            .push(p.name());
        }
        m
    }
}

/// The event as plugins receive it, shared by every plugin of a route.
pub fn plugin_event(e: &Event) -> Arc<PluginEvent> {
    Arc::new(PluginEvent {
        id: e.id.clone(),
        type_name: e.type_name.clone(),
        source: e.source.clone(),
        time: e.time,
        priority: e.priority,
        // Not `pointer()`: it unescapes every token with `str::replace`, a hot-path cost.
        correlation_id: e
            .data
            .get("meta")
            .and_then(|m| m.get("correlation_id"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        data: e.raw.clone().unwrap_or_else(|| e.data.to_string().into()),
    })
}
