//! The pipeline: an accepted event goes to the live subscribers, then, when a route
//! matches its type, onto a bounded queue that worker threads drain. Each matching route
//! runs its filters in order (drop stops the event, replace re-validates the rewritten
//! one) and then its handlers; what handlers emit is validated, checked against their
//! manifest and routed like any other event, up to the hop limit. A failed plugin call
//! fails that event for that plugin only: it becomes a dead letter.

use super::bus::Bus;
use super::completion::{Completions, Finished};
use super::config::{PipelineConfig, RootBudget};
use super::metrics::{PipelineCounters, WORKER_PANIC};
use super::queue::JobQueue;
use super::retry::with_retry_count;
use super::retry::{Clock, RetryTask, Scheduler};
use super::rpc::Waiters;
use super::settle::{RootWork, Run};
use super::{Route, RouteHandler};
use crate::event::{Body, Event};
use crate::event::{Emission, FailureNote, Outcome};
use crate::event::{Failure, FailureKind};
use crate::metrics::PluginSamples;
use crate::name::Name;
use crate::schema::Registry;
use crate::store::dead_letters::{self, DeadLetter, DeadLetters};
use crate::store::status::{State, Status};
use crate::store::EventLog;
use crate::wasm::bindings::Verdict;
use crate::wasm::host::PluginEvent;
use crate::wasm::{Checked, Plugin};
use arc_swap::ArcSwap;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most jobs a worker takes at once. New events among them are processed together, one
/// call per handler that takes runs (`handle-batch`) for all of them: that is what makes an
/// NDJSON batch cheap end to end. Bounded because a run's events wait for each other (its
/// first is finished with its last) and a batch call's deadline grows with its events. 64,
/// not 32: what a run costs once (the batch call's setup, the message to the log writer,
/// the wake-ups) was 0.15 µs of the workers' ~2.7 µs per event end to end at 32; at 128 it
/// saved no more.
pub const MAX_RUN: usize = 64;

/// What survives a restart: the event log (with what it recovered), the dead letters.
pub struct Durable {
    pub log: Arc<dyn EventLog>,
    pub dead_letters: Arc<DeadLetters>,
}

/// Work waiting for a worker.
pub(super) enum Job {
    /// A dead letter to try again (after a fix or a new plugin version).
    Replay(DeadLetter),
    /// A routed event; `reserved`: it holds a queue reservation (new events do; recovered
    /// ones do not).
    Event { event: Event, reserved: bool },
    /// A handler call to make again.
    Retry(RetryTask),
    /// A sink's answer about a delivery, to settle.
    Delivered(Delivery),
    /// A job that panics (the supervision test).
    #[cfg(test)]
    Panic(Event),
}

/// A sink's answer about one delivery of `event` (by handler `handler` of route `route`,
/// after `attempt` earlier attempts), pending work of its accepted event until settled.
pub(super) struct Delivery {
    root: Arc<RootWork>,
    event: Event,
    route: usize,
    handler: usize,
    attempt: u32,
    result: Result<(), Failure>,
}

/// A job's part of its event's work.
enum Step {
    First,
    Retry(RetryTask),
    Delivered(Delivery),
    Replay(DeadLetter),
    #[cfg(test)]
    Panic,
}

/// What the pipeline is set up with: its own config section and what it takes from the
/// doors' (how many events a slow subscriber may fall behind).
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    pub pipeline: &'a PipelineConfig,
    pub subscriber_buffer: usize,
}

pub struct Pipeline {
    pub bus: Bus,
    pub(super) core: Arc<Core>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Numbers every route table any core makes (never 0), so that a number names one table in
/// the process: a per-thread memo keyed by it ([`Core::is_routed_name`]) cannot answer from
/// a table that was replaced, or from another core's.
static ROUTE_TABLES: AtomicU64 = AtomicU64::new(1);

/// What the workers share.
pub struct Core {
    pub registry: Arc<Registry>,
    /// Append-only (see [`Route::disabled`]): uploads add routes while events flow.
    pub(super) routes: ArcSwap<Vec<Arc<Route>>>,
    /// The number of the route table [`Self::routes`] holds now (see [`ROUTE_TABLES`]).
    routes_made: AtomicU64,
    pub(super) plugins: ArcSwap<Vec<Arc<Plugin>>>,
    pub dead_letters: Arc<DeadLetters>,
    pub counters: PipelineCounters,
    pub samples: Arc<PluginSamples>,
    /// Callers of `POST /v1/rpc/{type}` waiting for their response.
    pub rpc: Waiters,
    /// Whoever waits for an event to finish.
    pub completions: Completions,
    pub(super) bus: Bus,
    pub(super) hop_limit: u8,
    pub(super) root_budget: RootBudget,
    /// Shared with the sinks' answers, which come back as jobs.
    pub(super) queue: Arc<JobQueue<Job>>,
    /// How long a producer waits for room in a full queue (`pipeline.queue_wait_ms`).
    pub(super) queue_wait: std::time::Duration,
    /// The durable log: appends with dedup, statuses, outcomes (see [`EventLog`]).
    pub log: Arc<dyn EventLog>,
    pub(super) retries: Arc<Scheduler>,
    /// Serialises changes of the routes and plugins (readers never wait).
    pub(super) changes: Mutex<()>,
    /// Work whose callers went away, finished in tasks of its own ([`super::detach`]).
    detached: tokio_util::task::TaskTracker,
    /// The events the workers hold now (their `in_progress`, see [`super::holding`]).
    pub(super) holding: super::holding::Holding,
}

impl Pipeline {
    /// Starts the workers; `store` is the durable log and what it recovered (unfinished
    /// events are processed again, finished ones are remembered for status lookups).
    pub fn with_routes(
        settings: Settings<'_>,
        registry: Arc<Registry>,
        plugins: Vec<Arc<Plugin>>,
        routes: Vec<Route>,
        samples: Arc<PluginSamples>,
        durable: Durable,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let Settings { pipeline: config, subscriber_buffer } = settings;
        let bus = Bus::new(subscriber_buffer);
        let Durable { log, dead_letters } = durable;
        let n = match config.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let core = Arc::new(Core {
            registry,
            routes: ArcSwap::from_pointee(routes.into_iter().map(Arc::new).collect()),
            routes_made: AtomicU64::new(ROUTE_TABLES.fetch_add(1, Ordering::Relaxed)),
            plugins: ArcSwap::from_pointee(plugins),
            dead_letters,
            counters: PipelineCounters::default(),
            samples,
            rpc: Waiters::default(),
            completions: Completions::default(),
            bus: bus.clone(),
            hop_limit: config.hop_limit,
            root_budget: config.root_budget,
            queue: Arc::new(JobQueue::new(config.queue)),
            queue_wait: std::time::Duration::from_millis(config.queue_wait_ms),
            log,
            retries: Scheduler::new(clock),
            changes: Mutex::new(()),
            detached: tokio_util::task::TaskTracker::new(),
            holding: super::holding::Holding::new(n),
        });
        let mut workers = Vec::new();
        // Always: routes can be added while the router runs.
        {
            for i in 0..n {
                let core = core.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("eventyard-worker-{i}"))
                    .spawn(move || {
                        let reserved = |j: &Job| matches!(j, Job::Event { reserved: true, .. });
                        while let Some(jobs) = core.queue.pop_run(MAX_RUN, n, reserved) {
                            core.execute_run(i, jobs);
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
        // On a shared log, work comes from the log (which hands out what a dead instance
        // held too); here, what a crash left unfinished is this instance's work first.
        core.log.attach(Arc::new(super::feed::CoreFeed(Arc::downgrade(&core))));
        let recovered = core.log.take_recovered();
        core.counters.recovered.fetch_add(recovered.len() as u64, Ordering::Relaxed);
        for event in recovered {
            core.queue.push(event.priority, Job::Event { event, reserved: false });
        }
        Self { bus, core, workers: Mutex::new(workers) }
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

    /// Runs `work` to its end even if the returned future is dropped (see [`super::detach`]):
    /// for what a door must not leave half done when its caller goes away.
    pub fn finish_anyway<F>(&self, work: F) -> super::detach::Unabandoned<F>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send,
    {
        super::detach::Unabandoned::new(&self.core.detached, work)
    }

    /// Graceful stop: work whose callers went away is finished first (within
    /// [`super::detach::DETACHED_WAIT`]); workers finish the event they are on and stop; what
    /// is still queued stays unfinished in the log and is processed at the next start; the
    /// log is synced.
    pub async fn shutdown(&self) {
        if !super::detach::wait_for_detached(&self.core.detached).await {
            tracing::warn!("stopping with work whose callers went away still running");
        }
        self.close();
        let workers = std::mem::take(&mut *self.workers.lock().expect("workers"));
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        self.core.log.flush().await;
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
        self.store_routes(all);
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
        let uses =
            |r: &Route| r.filters.iter().any(|p| p.name() == name) || r.handlers.iter().any(|p| p.name() == name);
        let routes = self.routes.load();
        let next = routes
            .iter()
            .map(|r| if uses(r) { Arc::new(Route { disabled: true, ..(**r).clone() }) } else { r.clone() })
            .collect();
        self.store_routes(next);
        true
    }

    /// Makes `routes` the route table, under a new number (see [`ROUTE_TABLES`]).
    fn store_routes(&self, routes: Vec<Arc<Route>>) {
        self.routes.store(Arc::new(routes));
        self.routes_made.store(ROUTE_TABLES.fetch_add(1, Ordering::Relaxed), Ordering::Release);
    }

    /// Where event `id` is (`GET /v1/events/{id}`): its log's answer, and `in_progress` for
    /// an event the log has as queued while a worker holds it (see [`super::holding`]).
    pub async fn status(&self, id: &str) -> Option<Status> {
        // Held first, then the log: a worker that finishes the event in between has written
        // its final status, so the answer never steps back from `in_progress` to `queued`.
        let held = self.holding.holds(id);
        let mut status = self.log.status(id).await?;
        if held && matches!(status.state, State::Queued) {
            status.state = State::InProgress;
        }
        Some(status)
    }

    /// Waits until accepted event `id` is finished (processed or dead-lettered) and answers
    /// how; `None` when no accepted event has this id (or its status was forgotten).
    pub async fn finished(&self, id: &str) -> Option<Finished> {
        // Watch first, then look (see `completion`): no finish falls in between.
        let mut watch = self.completions.watch(id);
        if let Some(finished) = final_state(self.log.status(id).await?.state) {
            return Some(finished);
        }
        match (&mut watch.finished).await.ok()? {
            Some(finished) => Some(finished),
            // Woken without the outcome (see `completion`): the final status holds it.
            None => final_state(self.log.status(id).await?.state),
        }
    }

    /// Whether a route takes events of this type now.
    pub fn is_routed(&self, type_name: &str) -> bool {
        routed_by(&self.routes(), type_name)
    }

    /// [`is_routed`](Self::is_routed) for a shared type name (an emitted event's), remembered
    /// per thread for the last name asked of the current route table: a worker's emitted events
    /// are mostly of one type, and matching each route's pattern per emitted event was 1.5% of
    /// the workers' time end to end.
    pub(super) fn is_routed_name(&self, type_name: Name) -> bool {
        thread_local! {
            /// (route table number, the name's address and length, the answer).
            static LAST: Cell<(u64, usize, usize, bool)> = const { Cell::new((0, 0, 0, false)) };
        }
        let table = self.routes_made.load(Ordering::Acquire);
        let (at, len) = (type_name.as_ptr() as usize, type_name.len());
        LAST.with(|last| {
            let (t, a, l, routed) = last.get();
            if (t, a, l) == (table, at, len) {
                return routed;
            }
            let routed = self.is_routed(&type_name);
            last.set((table, at, len, routed));
            routed
        })
    }

    /// [`is_routed`](Self::is_routed) for each of `events`, against one load of the routes,
    /// matching each run of one type once (an NDJSON batch is mostly one type).
    pub fn routed(&self, events: &[Event]) -> Vec<bool> {
        let routes = self.routes();
        let mut last = LastType::default();
        events.iter().map(|e| last.answer(e.type_name, || routed_by(&routes, &e.type_name))).collect()
    }

    /// Runs one job on worker `worker`. A panic in it (a bug in the router or a host import)
    /// fails that job's event alone, with a `worker_panic` failure in its status and the
    /// log, counted in `/metrics`; the worker thread goes on with the next job, so no panic
    /// costs a worker.
    fn execute(&self, worker: usize, job: Job) {
        let budget = self.root_budget;
        let (root, step) = match job {
            Job::Event { event, .. } => (RootWork::new(event, budget), Step::First),
            Job::Replay(letter) => (RootWork::new(letter.event.clone(), budget), Step::Replay(letter)),
            Job::Retry(task) => (task.root.clone(), Step::Retry(task)),
            Job::Delivered(d) => (d.root.clone(), Step::Delivered(d)),
            #[cfg(test)]
            Job::Panic(event) => (RootWork::new(event, budget), Step::Panic),
        };
        self.execute_step(worker, root, step);
    }

    /// [`Self::execute`] of a job whose work record is made.
    fn execute_step(&self, worker: usize, root: Arc<RootWork>, step: Step) {
        // Retries and deliveries end a pending part of their event's work.
        let pending = matches!(step, Step::Retry(_) | Step::Delivered(_));
        let work = std::panic::AssertUnwindSafe(|| match step {
            Step::First => self.run(worker, root.clone()),
            Step::Retry(task) => self.retry(task),
            Step::Delivered(d) => self.delivered(d),
            Step::Replay(letter) => self.replay(root.clone(), letter),
            #[cfg(test)]
            Step::Panic => panic!("a job that panics"),
        });
        let Err(panic) = std::panic::catch_unwind(work) else { return };
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        self.counters.worker_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(event = %root.event.id, panic = %message, "a pipeline worker panicked; that event failed");
        let mut run = Run::new(root);
        let note = FailureNote { plugin: "eventyard".into(), kind: WORKER_PANIC.into(), message, attempts: 1 };
        run.outcome.failed.push(note);
        self.settle(run, usize::from(pending));
    }

    /// Runs the jobs worker `worker` took together: the new events among them at once (see
    /// [`MAX_RUN`]), every other job alone.
    fn execute_run(&self, worker: usize, jobs: Vec<Job>) {
        let mut roots = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                // Moved once more only, into its work record: an event is ~200 bytes, and its
                // moves through a run were 4-5% of the workers' time end to end.
                Job::Event { event, .. } => roots.push(RootWork::new(event, self.root_budget)),
                other => self.execute(worker, other),
            }
        }
        match roots.len() {
            0 => {}
            1 => self.execute_step(worker, roots.pop().expect("one event"), Step::First),
            _ => self.run_many(worker, roots),
        }
    }

    /// Processes accepted events together (each finished now, or once its retries are done).
    /// A panic fails no event here: the run's events are processed again one by one
    /// ([`Core::execute`]), where it fails its own event alone (the others may emit twice, as
    /// after a crash).
    fn run_many(&self, worker: usize, roots: Vec<Arc<RootWork>>) {
        // Made by another core's threads: their misses overlap if asked for all at once. The
        // status slots second: finding one reads the event's id, whose line is then on its way.
        roots.iter().for_each(|r| r.event.prefetch());
        roots.iter().for_each(|r| self.log.prefetch(&r.event));
        let work = std::panic::AssertUnwindSafe(|| {
            let _held = self.holding.hold(worker, &roots);
            let mut runs: Vec<Run> = roots.iter().map(|r| Run::new(r.clone())).collect();
            let mut items: Vec<(&Event, &mut Run)> = roots.iter().map(|r| &r.event).zip(runs.iter_mut()).collect();
            self.process_many(&mut items);
            // The run's events are finished together: one message to the log's writer.
            let mut done = Vec::with_capacity(runs.len());
            for run in runs {
                self.settle_into(run, 0, &mut done);
            }
            self.finish_logged(done);
        });
        if std::panic::catch_unwind(work).is_err() {
            tracing::warn!(
                events = roots.len(),
                "a panic while processing a run; its events are processed again one by one"
            );
            for root in &roots {
                self.execute(worker, Job::Event { event: root.event.take_over(), reserved: false });
            }
        }
    }

    /// Processes one accepted event (held by worker `worker`); it is finished now, or once its
    /// retries are done.
    fn run(&self, worker: usize, root: Arc<RootWork>) {
        let _held = self.holding.hold(worker, std::slice::from_ref(&root));
        let mut run = Run::new(root.clone());
        self.process(&root.event, &mut run);
        self.settle(run, 0);
    }

    /// Calls a handler again for an accepted event.
    fn retry(&self, task: RetryTask) {
        let mut run = Run::new(task.root.clone());
        self.call_again(&task, &mut run);
        self.settle(run, 1);
    }

    /// Settles a sink's answer: nothing more to do once delivered; a failure is retried or
    /// dead-lettered like a handler's.
    fn delivered(&self, d: Delivery) {
        let mut run = Run::new(d.root.clone());
        if let Err(fail) = d.result {
            self.handler_failed(&d.event, d.route, d.handler, fail, d.attempt + 1, &mut run);
        }
        self.settle(run, 1);
    }

    /// Tries a dead letter again (with a new budget): its handler alone when that handler
    /// is still on its route, else the whole event through every route. The letter is
    /// removed once the attempt is done (a new failure makes a new letter).
    fn replay(&self, root: Arc<RootWork>, letter: DeadLetter) {
        let event = &root.event;
        let mut run = Run::new(root.clone());
        let routes = self.routes();
        let target = routes
            .iter()
            .position(|r| r.name == letter.route && !r.disabled)
            .and_then(|ri| routes[ri].handlers.iter().position(|h| h.name() == letter.plugin).map(|hi| (ri, hi)));
        match target {
            Some((route, handler)) => {
                let task = RetryTask { root: root.clone(), event: event.clone(), route, handler, attempt: 0 };
                self.call_again(&task, &mut run);
            }
            None => self.process(event, &mut run),
        }
        self.settle(run, 0);
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
        if !self.charge(run, handler.name(), route, 1, 0, 0) {
            return;
        }
        let counted = with_retry_count(&task.event, task.attempt);
        let wit = plugin_event(counted.as_ref().unwrap_or(&task.event));
        self.call_handler((route, task.route, task.handler), &task.event, &wit, task.attempt, run);
    }

    /// Runs handler `at = (route, route index, handler index)` on `event` (`wit`: the event as
    /// plugins receive it); `attempt`: calls made before this one. A plugin's emitted events
    /// are routed at once and its failure retried or dead-lettered; a sink's delivery is
    /// pending work of the accepted event until its answer comes back as a job and is settled
    /// ([`Core::delivered`]).
    fn call_handler(
        &self,
        at: (&Route, usize, usize),
        event: &Event,
        wit: &Arc<PluginEvent>,
        attempt: u32,
        run: &mut Run,
    ) {
        let (route, ri, hi) = at;
        match &route.handlers[hi] {
            RouteHandler::Plugin(plugin) => {
                let answer = plugin.call(wit);
                self.handled(at, event, answer, time::OffsetDateTime::now_utc(), attempt, run)
            }
            RouteHandler::Sink(sink) => {
                // Counted before it starts: its answer may be settled on another worker
                // before this part of the work is.
                run.root.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remaining += 1;
                let (queue, root, delivered) = (self.queue.clone(), run.root.clone(), event.clone());
                let priority = event.priority;
                sink.deliver(
                    event.clone(),
                    Box::new(move |result| {
                        let d = Delivery { root, event: delivered, route: ri, handler: hi, attempt, result };
                        queue.push(priority, Job::Delivered(d));
                    }),
                );
            }
        }
    }

    /// What handler `at` answered about `event` (`attempt`: calls made before this one): its
    /// emitted events, `made` at the time of the answer, are routed at once; its failure is
    /// retried or dead-lettered.
    fn handled(
        &self,
        at: (&Route, usize, usize),
        event: &Event,
        answer: Result<Vec<Checked>, Failure>,
        made: time::OffsetDateTime,
        attempt: u32,
        run: &mut Run,
    ) {
        let (route, ri, hi) = at;
        match answer {
            Ok(events) => {
                let from = route.handlers[hi].shared_name();
                run.outcome.emitted.reserve(events.len());
                for e in events {
                    self.emit(&from, route, event, e, made, run);
                }
            }
            Err(fail) => self.handler_failed(event, ri, hi, fail, attempt + 1, run),
        }
    }

    fn process(&self, event: &Event, run: &mut Run) {
        self.process_many(&mut [(event, run)]);
    }

    /// Runs events through their routes. Per route: its filters, per event in order; then
    /// its handlers, each called once for all the events that reached it when it takes runs
    /// (`handle-batch`), else once per event. Each event keeps its own order of routes,
    /// filters and handlers; events are independent of each other.
    fn process_many(&self, items: &mut [(&Event, &mut Run)]) {
        let routes = self.routes();
        for (route_index, route) in routes.iter().enumerate().filter(|(_, r)| !r.disabled) {
            let mut kept = Vec::with_capacity(items.len());
            // A match per event and route was 1.2% of the workers' time.
            let mut last = LastType::default();
            for (i, (event, run)) in items.iter_mut().enumerate() {
                let event: &Event = event;
                let matches = last.answer(event.type_name, || route.matcher.matches(&event.type_name));
                if run.root.exhausted() || !matches {
                    continue;
                }
                self.counters.routed.fetch_add(1, Ordering::Relaxed);
                if let Some((current, wit)) = self.filtered(route, event, run) {
                    kept.push((i, current, wit));
                }
            }
            for (handler_index, h) in route.handlers.iter().enumerate() {
                // An event past its budget is done with (its later routes see it exhausted).
                kept.retain(|(i, ..)| self.charge(items[*i].1, h.name(), route, 1, 0, 0));
                let at = (&**route, route_index, handler_index);
                match h {
                    RouteHandler::Plugin(plugin) if kept.len() > 1 && plugin.batches() => {
                        let wits: Vec<Arc<PluginEvent>> = kept.iter().map(|(_, _, wit)| wit.clone()).collect();
                        let answers = plugin.call_batch(&wits);
                        // One clock read for the call's answers (one per emitted event was 1.4%
                        // of the workers' time end to end).
                        let made = time::OffsetDateTime::now_utc();
                        for ((i, current, _), answer) in kept.iter().zip(answers) {
                            self.handled(at, current, answer, made, 0, items[*i].1);
                        }
                    }
                    _ => {
                        for (i, current, wit) in &kept {
                            self.call_handler(at, current, wit, 0, items[*i].1);
                        }
                    }
                }
            }
        }
    }

    /// `event` through the filters of `route`: what they kept (maybe rewritten) and its
    /// plugin view, or `None` when one dropped it, failed on it (a dead letter) or its budget
    /// is spent.
    fn filtered<'e>(
        &self,
        route: &Route,
        event: &'e Event,
        run: &mut Run,
    ) -> Option<(std::borrow::Cow<'e, Event>, Arc<PluginEvent>)> {
        let mut current = std::borrow::Cow::Borrowed(event);
        let mut wit = plugin_view(&current, run);
        for f in &route.filters {
            if !self.charge(run, f.name(), route, 1, 0, 0) {
                return None;
            }
            match f.call(&wit) {
                Ok(Verdict::Keep) => {}
                Ok(Verdict::Drop(reason)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(plugin = f.name(), event = %event.id, reason, "dropped by filter");
                    run.outcome.dropped.push((f.name().to_string(), reason));
                    return None;
                }
                Ok(Verdict::Replace(r)) => match self.replacement(f, &current, &r.type_, &r.data) {
                    Ok(e) => {
                        current = std::borrow::Cow::Owned(e);
                        wit = plugin_event(&current);
                    }
                    Err(fail) => {
                        self.dead_letter(&current, f.name(), route, fail, 1, run);
                        return None;
                    }
                },
                Err(fail) => {
                    self.dead_letter(&current, f.name(), route, fail, 1, run);
                    return None;
                }
            }
        }
        Some((current, wit))
    }

    /// A filter's rewritten event: the same type or one its manifest lists, valid.
    fn replacement(&self, f: &Plugin, current: &Event, type_name: &str, raw: &str) -> Result<Event, Failure> {
        let bad = |m: String| Failure::new(FailureKind::BadOutput, m);
        if type_name != &*current.type_name && !f.ctx.manifest.emits.iter().any(|t| t == type_name) {
            return Err(bad(format!("replacement type `{type_name}` is neither the event's nor in `emits`")));
        }
        let ty = self.registry.get(type_name).map_err(|e| bad(e.to_string()))?;
        let (data, priority) = Body::check(ty, raw.into()).map_err(|r| bad(format!("replacement {r}")))?;
        Ok(Event { type_name: ty.name, priority, data, ..current.clone() })
    }

    /// Routes one checked emitted event (of plugin `from`) like any other, one hop further.
    fn emit(&self, from: &Name, route: &Route, parent: &Event, e: Checked, made: time::OffsetDateTime, run: &mut Run) {
        if !self.charge(run, from, route, 0, 1, e.data.text().len() as u64) {
            return;
        }
        let (event, routed) = match self.admit_emitted(from, parent, e, made) {
            Ok(admitted) => admitted,
            Err((event, failure)) => return self.dead_letter(&event, from, route, failure, 1, run),
        };
        if !routed {
            // Done with (a response, most often): its id moves to the outcome, uncopied.
            run.outcome.emitted.push(Emission { plugin: *from, type_name: event.type_name, id: event.id });
            return;
        }
        run.outcome.emitted.push(Emission { plugin: *from, type_name: event.type_name, id: event.id.clone() });
        // Emitted events are processed here, before their parent is finished: a crash in
        // between processes the parent (and so re-emits them) again.
        let before = (run.outcome.emitted.len(), run.outcome.failed.len());
        self.process(&event, run);
        let own = Outcome {
            emitted: run.outcome.emitted[before.0..].to_vec(),
            failed: run.outcome.failed[before.1..].to_vec(),
            dropped: Vec::new(),
        };
        self.finish_emitted(&event, own);
    }
}

/// How an event ended, if `state` is final.
fn final_state(state: State) -> Option<Finished> {
    match state {
        State::Processed { outcome } | State::DeadLettered { outcome } => Some(Finished { outcome: Arc::new(outcome) }),
        _ => None,
    }
}

/// The answer about the last type name asked, kept while the same type comes again: a run or
/// an NDJSON batch is mostly one type, and names compare as pointers.
#[derive(Default)]
struct LastType(Option<(Name, bool)>);

impl LastType {
    /// The answer for `name`: the kept one if it is the last name asked, else `compute`'s.
    fn answer(&mut self, name: Name, compute: impl FnOnce() -> bool) -> bool {
        match self.0 {
            Some((last, answer)) if last == name => answer,
            _ => {
                let answer = compute();
                self.0 = Some((name, answer));
                answer
            }
        }
    }
}

/// Whether one of `routes` takes events of this type.
fn routed_by(routes: &[Arc<Route>], type_name: &str) -> bool {
    routes.iter().any(|r| !r.disabled && r.matcher.matches(type_name))
}

/// The event as plugins receive it, shared by every plugin of a route: a copy of `e`.
pub fn plugin_event(e: &Event) -> Arc<PluginEvent> {
    Arc::new(e.clone())
}

/// [`plugin_event`] of an event of `run`: the accepted event's own work record when `event`
/// is that event (no copy), else a copy (an emitted or a rewritten event).
fn plugin_view(event: &Event, run: &Run) -> Arc<PluginEvent> {
    if std::ptr::eq(event, &run.root.event) {
        run.root.clone()
    } else {
        plugin_event(event)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::pattern::{Matcher, TypePattern};
    use crate::router::retry::RetryPolicy;
    use crate::router::retry::SystemClock;
    use std::time::Duration;

    pub(in crate::router) fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            type_name: Name::intern("infrahub/send.echo.request"),
            time: time::OffsetDateTime::now_utc(),
            priority: 3,
            source: None,
            data: Body::from_value(serde_json::json!({ "message": "x" })),
            hops: 0,
            // As if the producer gave the id: the log keeps it, and the tests find it by it.
            keyed: true,
            pin: Default::default(),
        }
    }

    /// A pipeline with one worker, one route on `infrahub/*` without plugins, and a log in
    /// a temp dir (kept alive by the returned guard).
    pub(in crate::router) fn pipeline() -> (Pipeline, tempfile::TempDir) {
        let config = PipelineConfig { workers: 1, ..PipelineConfig::default() };
        let catalog = crate::schema::catalog::Catalog::embedded().unwrap();
        let strictness = crate::schema::Strictness::allow_unknown_fields(&[]).unwrap();
        let registry = Arc::new(Registry::from_catalog(&catalog, &strictness).unwrap());
        let route = Route {
            name: "r".into(),
            disabled: false,
            matcher: Matcher::Glob(TypePattern::parse("infrahub/*").unwrap()),
            retry: RetryPolicy { max_attempts: 1, base: Duration::from_millis(1), max: Duration::from_millis(1) },
            filters: Vec::new(),
            handlers: Vec::new(),
        };
        let clock = Arc::new(SystemClock::default());
        let settings = Settings { pipeline: &config, subscriber_buffer: 16 };
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::local::LocalOptions {
            dir: dir.path().to_path_buf(),
            durability: crate::store::Durability::Off,
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        };
        let log = Arc::new(crate::store::LocalLog::open(&options, Duration::from_secs(60), |_| true).unwrap());
        let durable = Durable { log, dead_letters: Arc::default() };
        (Pipeline::with_routes(settings, registry, Vec::new(), vec![route], Arc::default(), durable, clock), dir)
    }

    /// Routes are matched per event, once per run of one type: events of a routed type, of
    /// another, and of the routed one again each get their own answer.
    #[test]
    fn each_event_of_a_batch_is_matched_against_the_routes() {
        let (pipeline, _dir) = pipeline();
        let other = |id: &str| Event { type_name: Name::intern("fixinventory/collect"), ..event(id) };
        let events = [event("a"), event("b"), other("c"), other("d"), event("e")];
        assert_eq!(pipeline.core().routed(&events), [true, true, false, false, true]);
        assert!(pipeline.core().is_routed("infrahub/send.echo.request"));
        assert!(!pipeline.core().is_routed("fixinventory/collect"));
    }

    /// The per-thread memo of whether an emitted type is routed answers from the current
    /// route table only: not from another core's, nor from a table replaced since.
    #[test]
    fn an_emitted_types_routing_is_remembered_per_route_table() {
        let echo = Name::intern("infrahub/send.echo.request");
        let (a, _a) = pipeline();
        assert!(a.core().is_routed_name(echo));
        let (b, _b) = pipeline();
        b.core().store_routes(Vec::new());
        assert!(!b.core().is_routed_name(echo), "another core's table");
        assert!(a.core().is_routed_name(echo), "and the first one's again");
        let routes: Vec<Arc<Route>> = a.core().routes().iter().cloned().collect();
        a.core().store_routes(Vec::new());
        assert!(!a.core().is_routed_name(echo), "a replaced table");
        a.core().store_routes(routes);
        assert!(a.core().is_routed_name(echo));
    }

    /// An event's state on the local log (whose lookups answer at once).
    pub(in crate::router) fn state(core: &Core, id: &str) -> Option<State> {
        use futures_util::FutureExt;
        core.log.status(id).now_or_never().expect("the local log answers at once").map(|s| s.state)
    }

    fn note(plugin: &str) -> FailureNote {
        FailureNote { plugin: plugin.into(), kind: "trap".into(), message: "boom".into(), attempts: 1 }
    }

    /// An event whose retries are in flight is finished by the last part of its work to
    /// settle, with what every part produced; its watchers are woken then, not before.
    #[tokio::test]
    async fn settle_finishes_an_event_with_its_last_part_and_adds_every_part() {
        let (pipeline, _dir) = pipeline();
        let core = pipeline.core();
        let e = event("root");
        core.log.track(&e, State::InProgress);
        let root = RootWork::new(e.clone(), RootBudget::default());
        // Two retries in flight (as if the first run scheduled them).
        root.settled.lock().unwrap().remaining = 2;
        let mut watch = core.completions.watch("root");

        let mut first = Run::new(root.clone());
        first.outcome.emitted.push(Emission {
            plugin: Name::intern("h1"),
            type_name: Name::intern("t"),
            id: "c1".into(),
        });
        core.settle(first, 1);
        assert!(matches!(state(core, "root"), Some(State::InProgress)), "one retry is left");
        assert!(watch.finished.try_recv().is_err(), "not finished yet");

        let mut last = Run::new(root.clone());
        last.outcome.failed.push(note("h2"));
        core.settle(last, 1);
        let finished = watch.finished.try_recv().expect("woken by the last part").expect("with the outcome");
        assert_eq!(finished.outcome.emitted.len(), 1, "the first part's emission is kept");
        assert_eq!(finished.outcome.failed, vec![note("h2")]);
        match state(core, "root") {
            Some(State::DeadLettered { outcome }) => assert_eq!(outcome, *finished.outcome),
            other => panic!("a failure makes the event dead-lettered: {other:?}"),
        }
        core.queue.close();
    }

    /// `GET /v1/events/{id}` through the core: an event the log has as queued is
    /// `in_progress` while a worker holds it, queued again once no worker does, and an event
    /// finished while still held answers its final status (the hold never masks it).
    #[tokio::test]
    async fn a_held_event_is_in_progress_and_its_final_status_wins() {
        let (pipeline, _dir) = pipeline();
        let core = pipeline.core();
        core.queue.close();
        let (held, waiting) = (event("held"), event("waiting"));
        for e in [&held, &waiting] {
            core.log.track(e, State::Queued);
        }
        let root = RootWork::new(held, RootBudget::default());
        let hold = core.holding.hold(0, std::slice::from_ref(&root));
        let state = |id: &'static str| async move { core.status(id).await.map(|s| s.state) };
        assert!(matches!(state("held").await, Some(State::InProgress)));
        assert!(matches!(state("waiting").await, Some(State::Queued)), "only the held event");
        core.finish_logged(vec![(root.clone(), Outcome::default())]);
        assert!(matches!(state("held").await, Some(State::Processed { .. })), "finished while held");
        drop(hold);
        assert!(matches!(state("held").await, Some(State::Processed { .. })));
        assert!(core.status("unknown").await.is_none());
    }

    /// Past its budget an event's pending retries are dropped: settling finishes it at once.
    #[tokio::test]
    async fn an_exhausted_event_drops_its_retries_and_is_finished() {
        let (pipeline, _dir) = pipeline();
        let core = pipeline.core();
        let e = event("spent");
        core.log.track(&e, State::InProgress);
        let root = RootWork::new(e.clone(), RootBudget { calls: 1, emits: 1, bytes: 1 });
        assert_eq!(root.spend(1, 0, 0), None, "within the budget");
        assert_eq!(root.spend(1, 0, 0).as_deref(), Some("1 plugin calls"), "past it, naming the limit");
        root.exhausted.store(true, Ordering::Release);
        let mut run = Run::new(root.clone());
        let task = RetryTask { root: root.clone(), event: e, route: 0, handler: 0, attempt: 1 };
        run.retries.push(task);
        core.settle(run, 0);
        assert!(matches!(state(core, "spent"), Some(State::Processed { .. })));
        assert_eq!(core.counters.retries.load(Ordering::Relaxed), 0, "no retry was scheduled");
        core.queue.close();
    }

    /// No request can make a worker panic today, so the test queues a job that does.
    #[test]
    fn a_job_that_panics_fails_its_event_alone_and_the_worker_runs_the_next_one() {
        let (pipeline, _dir) = pipeline();
        let core = pipeline.core();
        for id in ["boom", "next"] {
            core.log.track(&event(id), State::Queued);
        }
        // One worker: the job after the panic runs on the same worker.
        core.queue.push(3, Job::Panic(event("boom")));
        core.queue.push(3, Job::Event { event: event("next"), reserved: false });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !matches!(state(core, "next"), Some(State::Processed { .. })) {
            assert!(std::time::Instant::now() < deadline, "the next job never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        match state(core, "boom") {
            Some(State::DeadLettered { outcome }) => {
                assert_eq!(outcome.failed.len(), 1);
                assert_eq!(outcome.failed[0].kind, WORKER_PANIC);
                assert_eq!(outcome.failed[0].message, "a job that panics");
            }
            other => panic!("the panicked event's status: {other:?}"),
        }
        let mut metrics = String::new();
        core.render_metrics(&mut metrics);
        assert!(metrics.contains("\neventyard_worker_panics_total 1\n"), "{metrics}");
        core.queue.close();
    }
}
