//! The pipeline: an accepted event goes to the live subscribers, then, when a route
//! matches its type, onto a bounded queue that worker threads drain. Each matching route
//! runs its filters in order (drop stops the event, replace re-validates the rewritten
//! one) and then its handlers; what handlers emit is validated, checked against their
//! manifest and routed like any other event, up to the hop limit. A failed plugin call
//! fails that event for that plugin only: it becomes a dead letter.

use super::bus::Bus;
use super::dead_letters::{self, DeadLetter, DeadLetters};
use super::pattern::Matcher;
use super::queue::JobQueue;
use super::retry::{Clock, RetryPolicy, RetryTask, Scheduler};
use super::rpc::Waiters;
use super::status::{self, State, StatusBoard};
use super::{Body, Event};
use crate::config::{Config, World};
use crate::metrics::PluginSamples;
use crate::schema::Registry;
use crate::store::{Emission, EventStore, FailureNote, Outcome, Recovered, StoreError};
use crate::wasm::bindings::Verdict;
use crate::wasm::host::PluginEvent;
use crate::wasm::plugin::Output;
use crate::wasm::{Checked, Failure, FailureKind, Plugin};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Matches event types by glob or regex.
#[derive(Clone)]
pub struct Route {
    pub name: String,
    /// A route of a plugin that was deleted: it matches nothing any more, but keeps its place
    /// (retries refer to routes and handlers by index) and its plugins (retries in flight end).
    pub disabled: bool,
    pub matcher: Matcher,
    pub retry: RetryPolicy,
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
    /// Handler calls scheduled to be made again.
    pub retries: AtomicU64,
}

/// What survives a restart: the event log, what it recovered, the dead letters.
pub struct Durable {
    pub store: Arc<dyn EventStore>,
    pub recovered: Recovered,
    pub dead_letters: DeadLetters,
}

/// Work waiting for a worker.
enum Job {
    /// A dead letter to try again (after a fix or a new plugin version).
    Replay(DeadLetter),
    /// A routed event; `reserved`: it holds a queue reservation (new events do; recovered
    /// ones do not).
    Event { event: Event, reserved: bool },
    /// A handler call to make again.
    Retry(RetryTask),
}

/// What processing (part of) one accepted event produced.
struct Run {
    /// The accepted event's id.
    root: String,
    outcome: Outcome,
    retries: Vec<RetryTask>,
    last_error: String,
}

impl Run {
    fn new(root: &str) -> Self {
        Run { root: root.to_string(), outcome: Outcome::default(), retries: Vec::new(), last_error: String::new() }
    }
}

/// An accepted event waiting for its retries.
struct Inflight {
    event: Event,
    outcome: Outcome,
    remaining: usize,
}

pub struct Pipeline {
    pub bus: Bus,
    core: Arc<Core>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What the workers share.
pub struct Core {
    pub registry: Arc<Registry>,
    /// Append-only (see [`Route::disabled`]): uploads add routes while events flow.
    routes: ArcSwap<Vec<Arc<Route>>>,
    plugins: ArcSwap<Vec<Arc<Plugin>>>,
    pub dead_letters: DeadLetters,
    pub counters: PipelineCounters,
    pub samples: Arc<PluginSamples>,
    /// Where every accepted event is, for `GET /v1/events/{id}`.
    pub statuses: StatusBoard,
    /// Callers of `POST /v1/rpc/{type}` waiting for their response.
    pub rpc: Waiters,
    bus: Bus,
    hop_limit: u8,
    queue: JobQueue<Job>,
    store: Option<Arc<dyn EventStore>>,
    idempotency_window: std::time::Duration,
    retries: Arc<Scheduler>,
    inflight: Mutex<HashMap<String, Inflight>>,
    /// Serialises changes of the routes and plugins (readers never wait).
    changes: Mutex<()>,
}

impl Pipeline {
    /// Starts the workers; `store` is the durable log and what it recovered (unfinished
    /// events are processed again, finished ones are remembered for status lookups).
    pub fn with_routes(
        config: &Config,
        registry: Arc<Registry>,
        plugins: Vec<Arc<Plugin>>,
        routes: Vec<Route>,
        samples: Arc<PluginSamples>,
        durable: Option<Durable>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let bus = Bus::new(config.subscribers.buffer);
        let (store, recovered, dead_letters) = match durable {
            Some(d) => (Some(d.store), d.recovered, d.dead_letters),
            None => (None, Recovered::default(), DeadLetters::default()),
        };
        let core = Arc::new(Core {
            registry,
            routes: ArcSwap::from_pointee(routes.into_iter().map(Arc::new).collect()),
            plugins: ArcSwap::from_pointee(plugins),
            dead_letters,
            counters: PipelineCounters::default(),
            samples,
            statuses: StatusBoard::default(),
            rpc: Waiters::default(),
            bus: bus.clone(),
            hop_limit: config.pipeline.hop_limit,
            queue: JobQueue::new(config.pipeline.queue),
            store,
            idempotency_window: std::time::Duration::from_secs(config.ingest.idempotency_window_secs),
            retries: Scheduler::new(clock),
            inflight: Mutex::default(),
            changes: Mutex::new(()),
        });
        for (event, outcome) in recovered.finished {
            let state = status::finished(outcome);
            core.statuses.insert_at(&event.id, event.type_name.clone(), event.priority, state, event.time);
        }
        let mut workers = Vec::new();
        // Always: routes can be added while the router runs.
        {
            let n = match config.pipeline.workers {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            for i in 0..n {
                let core = core.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("eventyard-worker-{i}"))
                    .spawn(move || {
                        while let Some(job) = core.queue.pop(|j| matches!(j, Job::Event { reserved: true, .. })) {
                            match job {
                                Job::Event { event, .. } => core.run(event),
                                Job::Retry(task) => core.retry(task),
                                Job::Replay(letter) => core.replay(letter),
                            }
                        }
                    })
                    .expect("spawn pipeline worker");
                workers.push(worker);
            }
            let c = core.clone();
            let scheduler = std::thread::Builder::new()
                .name("eventyard-retries".into())
                .spawn(move || {
                    c.retries.run(|task| {
                        let priority = task.event.priority;
                        c.queue.push(priority, Job::Retry(task));
                    })
                })
                .expect("spawn retry scheduler");
            workers.push(scheduler);
        }
        core.counters.recovered.fetch_add(recovered.pending.len() as u64, Ordering::Relaxed);
        for event in recovered.pending {
            core.statuses.insert_at(&event.id, event.type_name.clone(), event.priority, State::Queued, event.time);
            core.queue.push(event.priority, Job::Event { event, reserved: false });
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
        let (mut fresh, mut routed) = (Vec::with_capacity(events.len()), Vec::with_capacity(events.len()));
        for e in events {
            // Routes are matched once per event. Unrouted events are finished once durable;
            // a failed append unclaims them.
            let is_routed = self.core.is_routed(&e.type_name);
            let state = if is_routed { State::Queued } else { State::Processed { outcome: Outcome::default() } };
            if self.core.statuses.claim(&e.id, e.type_name.clone(), e.priority, window, state) {
                fresh.push(e);
                routed.push(is_routed);
            } else {
                self.core.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        let events = fresh;
        let unclaim = |events: &[Event]| events.iter().for_each(|e| self.core.statuses.unclaim(&e.id));
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
            self.core.rpc.offer(&event);
            if routed {
                self.core.queue.push(event.priority, Job::Event { event, reserved: true });
            }
        }
        Ok(())
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Tells the workers and the retry scheduler to stop after the event they are on,
    /// without waiting for them: their threads end and let go of the plugins (and so of the
    /// Wasm engine and its memory pool's address space).
    pub fn close(&self) {
        self.core.queue.close();
        self.core.retries.stop();
    }

    /// Graceful stop: workers finish the event they are on and stop; what is still queued
    /// stays unfinished in the log and is processed at the next start; the log is synced.
    pub async fn shutdown(&self) {
        self.close();
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
    /// The routes now (indices are stable: routes are only ever appended).
    pub fn routes(&self) -> arc_swap::Guard<Arc<Vec<Arc<Route>>>> {
        self.routes.load()
    }

    /// The plugins now (uploads add, deletes remove).
    pub fn plugins(&self) -> arc_swap::Guard<Arc<Vec<Arc<Plugin>>>> {
        self.plugins.load()
    }

    /// Adds an uploaded plugin and its routes; events accepted from now on are routed to it.
    pub fn add_plugin(&self, plugin: Arc<Plugin>, routes: Vec<Route>) {
        let _one_writer = self.changes.lock().expect("route changes");
        let mut plugins = (**self.plugins.load()).clone();
        plugins.push(plugin);
        self.plugins.store(Arc::new(plugins));
        let mut all = (**self.routes.load()).clone();
        all.extend(routes.into_iter().map(Arc::new));
        self.routes.store(Arc::new(all));
    }

    /// Removes a plugin: its routes are disabled (events no longer go to it; retries already
    /// scheduled still finish). False when there is no such plugin.
    pub fn remove_plugin(&self, name: &str) -> bool {
        let _one_writer = self.changes.lock().expect("route changes");
        let plugins = self.plugins.load();
        if !plugins.iter().any(|p| p.name() == name) {
            return false;
        }
        self.plugins.store(Arc::new(plugins.iter().filter(|p| p.name() != name).cloned().collect()));
        let uses = |r: &Route| r.filters.iter().chain(&r.handlers).any(|p| p.name() == name);
        let routes = self.routes.load();
        let next = routes
            .iter()
            .map(|r| if uses(r) { Arc::new(Route { disabled: true, ..(**r).clone() }) } else { r.clone() })
            .collect();
        self.routes.store(Arc::new(next));
        true
    }

    fn is_routed(&self, type_name: &str) -> bool {
        self.routes().iter().any(|r| !r.disabled && r.matcher.matches(type_name))
    }

    /// Processes one accepted event; it is finished now, or once its retries are done.
    fn run(&self, event: Event) {
        self.statuses.set(&event.id, State::InProgress);
        let mut run = Run::new(&event.id);
        self.process(&event, &mut run);
        self.settle(Some(event), run, 0);
    }

    /// Calls a handler again for an accepted event.
    fn retry(&self, task: RetryTask) {
        let mut run = Run::new(&task.root);
        self.call_again(&task, &mut run);
        self.settle(None, run, 1);
    }

    /// Tries a dead letter again: its handler alone when that handler is still on its
    /// route, else the whole event through every route. The letter is removed once the
    /// attempt is done (a new failure makes a new letter).
    fn replay(&self, letter: DeadLetter) {
        let event = letter.event.clone();
        let mut run = Run::new(&event.id);
        let routes = self.routes();
        let target = routes
            .iter()
            .position(|r| r.name == letter.route && !r.disabled)
            .and_then(|ri| routes[ri].handlers.iter().position(|h| h.name() == letter.plugin).map(|hi| (ri, hi)));
        match target {
            Some((route, handler)) => {
                let task = RetryTask { root: event.id.clone(), event: event.clone(), route, handler, attempt: 0 };
                self.call_again(&task, &mut run);
            }
            None => self.process(&event, &mut run),
        }
        self.settle(Some(event), run, 0);
        if let Err(e) = self.dead_letters.take(|d| d.id == letter.id) {
            tracing::error!(error = %e, "cannot remove a replayed dead letter");
        }
    }

    /// Queues the dead letters `q` selects for replay; returns how many.
    pub fn replay_matching(&self, q: &dead_letters::Query) -> usize {
        let letters = self.dead_letters.list(&dead_letters::Query { limit: Some(usize::MAX), ..q.clone() });
        let n = letters.len();
        for letter in letters {
            let priority = letter.event.priority;
            self.queue.push(priority, Job::Replay(letter));
        }
        n
    }

    /// Queues one dead letter for replay; false when there is none with this id.
    pub fn replay_one(&self, id: &str) -> bool {
        let Some(letter) = self.dead_letters.get(id) else { return false };
        self.queue.push(letter.event.priority, Job::Replay(letter));
        true
    }

    fn call_again(&self, task: &RetryTask, run: &mut Run) {
        let routes = self.routes();
        let route = &routes[task.route];
        let handler = &route.handlers[task.handler];
        let event = with_retry_count(&task.event, task.attempt);
        match handler.call(&plugin_event(event.as_ref().unwrap_or(&task.event))) {
            Ok(Output::Emitted(events)) => {
                for e in events {
                    self.emit(handler, route, &task.event, e, run);
                }
            }
            Ok(Output::Verdict(_)) => unreachable!("handlers answer with events"),
            Err(fail) => self.handler_failed(&task.event, task.route, task.handler, fail, task.attempt + 1, run),
        }
    }

    /// Adds what some work on an accepted event produced; schedules its retries; once none
    /// is left, finishes the event (the `done` record in the log, the final status).
    /// `first`: the event itself, on its first pass. `finished_tasks`: retries this work ended.
    fn settle(&self, first: Option<Event>, run: Run, finished_tasks: usize) {
        let Run { root, outcome, retries, last_error } = run;
        let done = {
            let mut inflight = self.inflight.lock().expect("inflight");
            let Some(entry) = (match first {
                Some(event) => Some(inflight.entry(root.clone()).or_insert(Inflight {
                    event,
                    outcome: Outcome::default(),
                    remaining: 0,
                })),
                None => inflight.get_mut(&root),
            }) else {
                return;
            };
            entry.outcome.emitted.extend(outcome.emitted);
            entry.outcome.failed.extend(outcome.failed);
            entry.outcome.dropped.extend(outcome.dropped);
            entry.remaining = (entry.remaining + retries.len()).saturating_sub(finished_tasks);
            if entry.remaining == 0 {
                inflight.remove(&root)
            } else {
                None
            }
        };
        for task in retries {
            let routes = self.routes();
            let delay = routes[task.route].retry.delay(task.attempt);
            let plugin = routes[task.route].handlers[task.handler].name().to_string();
            let due = self.retries.due_in(delay);
            let next_at = time::OffsetDateTime::now_utc() + delay;
            let state = State::Retrying { plugin, attempt: task.attempt, next_at, last_error: last_error.clone() };
            self.statuses.set(&root, state);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.retries.schedule_at(task, due);
        }
        if let Some(done) = done {
            if let Some(store) = &self.store {
                store.complete(&done.event, &done.outcome);
            }
            let errors = done.outcome.failed.iter().map(|f| format!("{}: {}: {}", f.plugin, f.kind, f.message));
            self.rpc.finished(&done.event, errors.collect());
            self.statuses.set(&done.event.id, status::finished(done.outcome));
        }
    }

    /// A handler call failed: retried later when the failure may pass and the route allows
    /// more attempts, else a dead letter.
    fn handler_failed(&self, event: &Event, route: usize, handler: usize, fail: Failure, attempts: u32, run: &mut Run) {
        let routes = self.routes();
        let policy = routes[route].retry;
        if fail.retryable && attempts < policy.max_attempts {
            run.last_error = format!("{}: {}", fail.kind.as_str(), fail.message);
            let task = RetryTask { root: run.root.clone(), event: event.clone(), route, handler, attempt: attempts };
            run.retries.push(task);
        } else {
            let r = &routes[route];
            self.dead_letter(event, &r.handlers[handler], r, fail, attempts, run);
        }
    }

    fn process(&self, event: &Event, run: &mut Run) {
        let routes = self.routes();
        let matching = routes.iter().enumerate().filter(|(_, r)| !r.disabled && r.matcher.matches(&event.type_name));
        'routes: for (route_index, route) in matching {
            self.counters.routed.fetch_add(1, Ordering::Relaxed);
            let mut current = std::borrow::Cow::Borrowed(event);
            let mut wit = plugin_event(&current);
            for f in &route.filters {
                match f.call(&wit) {
                    Ok(Output::Verdict(Verdict::Keep)) => {}
                    Ok(Output::Verdict(Verdict::Drop(reason))) => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(plugin = f.name(), event = %event.id, reason, "dropped by filter");
                        run.outcome.dropped.push((f.name().to_string(), reason));
                        continue 'routes;
                    }
                    Ok(Output::Verdict(Verdict::Replace(r))) => {
                        match self.replacement(f, &current, &r.type_, &r.data) {
                            Ok(e) => {
                                current = std::borrow::Cow::Owned(e);
                                wit = plugin_event(&current);
                            }
                            Err(fail) => {
                                self.dead_letter(&current, f, route, fail, 1, run);
                                continue 'routes;
                            }
                        }
                    }
                    Ok(Output::Emitted(_)) => unreachable!("filters answer with verdicts"),
                    Err(fail) => {
                        self.dead_letter(&current, f, route, fail, 1, run);
                        continue 'routes;
                    }
                }
            }
            for (handler_index, h) in route.handlers.iter().enumerate() {
                match h.call(&wit) {
                    Ok(Output::Emitted(events)) => {
                        for e in events {
                            self.emit(h, route, &current, e, run);
                        }
                    }
                    Ok(Output::Verdict(_)) => unreachable!("handlers answer with events"),
                    Err(fail) => self.handler_failed(&current, route_index, handler_index, fail, 1, run),
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
        let (data, priority) = Body::check(ty, raw.into()).map_err(|r| bad(format!("replacement {r}")))?;
        Ok(Event { type_name: ty.name.clone(), priority, data, ..current.clone() })
    }

    /// Routes one checked emitted event like any other, one hop further.
    fn emit(&self, from: &Plugin, route: &Route, parent: &Event, e: Checked, run: &mut Run) {
        let Ok(ty) = self.registry.get(&e.type_name) else { return };
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            type_name: ty.name.clone(),
            time: time::OffsetDateTime::now_utc(),
            priority: e.priority,
            source: Some(format!("plugin:{}", from.name())),
            data: e.data,
            hops: parent.hops + 1,
        };
        if event.hops > self.hop_limit {
            let f = Failure::new(
                FailureKind::HopLimit,
                format!("emitted event went past the hop limit of {}", self.hop_limit),
            );
            self.dead_letter(&event, from, route, f, 1, run);
            return;
        }
        self.counters.emitted.fetch_add(1, Ordering::Relaxed);
        run.outcome.emitted.push(Emission {
            plugin: from.name().to_string(),
            type_name: event.type_name.to_string(),
            id: event.id.clone(),
        });
        self.bus.publish(&event);
        self.rpc.offer(&event);
        self.statuses.insert(&event.id, event.type_name.clone(), event.priority, State::InProgress);
        // Emitted events are processed here, before their parent is finished: a crash in
        // between processes the parent (and so re-emits them) again.
        let before = (run.outcome.emitted.len(), run.outcome.failed.len());
        self.process(&event, run);
        let own = Outcome {
            emitted: run.outcome.emitted[before.0..].to_vec(),
            failed: run.outcome.failed[before.1..].to_vec(),
            dropped: Vec::new(),
        };
        self.statuses.set(&event.id, status::finished(own));
    }

    fn dead_letter(
        &self,
        event: &Event,
        plugin: &Plugin,
        route: &Route,
        failure: Failure,
        attempts: u32,
        run: &mut Run,
    ) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        run.outcome.failed.push(FailureNote {
            plugin: plugin.name().to_string(),
            kind: failure.kind.as_str().to_string(),
            message: failure.message.clone(),
            attempts,
        });
        self.dead_letters.push(event, plugin.name(), &route.name, failure, attempts);
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
            (
                "eventyard_handler_retries_total",
                "Handler calls scheduled again after a failure that may pass.",
                &c.retries,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        if let Some(store) = &self.store {
            let name = "eventyard_log_bytes";
            let _ = writeln!(out, "# HELP {name} Bytes of event log on disk (refused past store.max_bytes).\n# TYPE {name} gauge\n{name} {}", store.pending_bytes());
        }
        type Read = fn(&Plugin) -> u64;
        let per_plugin: [(&str, &str, &str, Read); 6] = [
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

/// The event as plugins receive it, shared by every plugin of a route.
/// The event as a retried handler sees it: Infrahub's `meta.retry_count` says how many
/// calls failed before (only events with a `meta` object; `None` when nothing changes).
fn with_retry_count(event: &Event, attempts: u32) -> Option<Event> {
    if attempts == 0 || !event.data.value().get("meta").is_some_and(serde_json::Value::is_object) {
        return None;
    }
    let mut data = event.data.value().clone();
    data["meta"]["retry_count"] = attempts.into();
    Some(Event { data: Body::from_value(data), ..event.clone() })
}

pub fn plugin_event(e: &Event) -> Arc<PluginEvent> {
    Arc::new(PluginEvent {
        id: e.id.clone(),
        type_name: e.type_name.clone(),
        source: e.source.clone(),
        time: e.time,
        priority: e.priority,
        data: e.data.clone(),
    })
}
