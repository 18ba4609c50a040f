//! A loaded plugin: its `InstancePre`, a pool of warm instances, the per-call sandbox
//! limits, failure classification, the circuit breaker and call statistics.
//!
//! Hot reload: the compiled component and its warm pool are one [`Version`] behind an
//! `ArcSwap`. A call takes the current version when it starts, so calls in flight finish on
//! the old one while new calls use the new one; the old version (and its instances) goes
//! away with its last call. Name, manifest, breaker and statistics stay with the plugin.

use super::bindings::{batch_handler, filter, handler, BatchAnswer, Emitted, LentBatchEvent, LiftedEmitted, Verdict};
use super::config::{PluginConfig, World};
use super::engine::{WasmEngine, EPOCH_TICK};
use super::host::{event_rep, CallState, EventHandle, HostState, PluginContext, PluginEvent, MAX_CALL_EVENTS};
use super::link::Grants;
use super::{Checked, WasmError};
use crate::event::text::{clean, MAX_PLUGIN_MESSAGE_BYTES};
use crate::event::{Failure, FailureKind};
use crate::metrics::{Histogram, PluginSamples};
use crate::schema::Registry;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

enum Pre {
    Filter(filter::FilterPre<HostState>),
    Handler(handler::HandlerPre<HostState>),
    /// A handler that also exports `handle-batch`.
    BatchHandler(batch_handler::BatchHandlerPre<HostState>),
}

enum Bound {
    Filter(filter::Filter),
    Handler(handler::Handler),
    /// The bindings (for `handle`) and `handle-batch` typed to lift [`BatchAnswer`].
    BatchHandler(batch_handler::BatchHandler, BatchFunc),
}

type BatchFunc = wasmtime::component::TypedFunc<(Vec<LentBatchEvent>,), (BatchAnswer,)>;

/// An instance kept warm between events.
struct Warm {
    store: Store<HostState>,
    bound: Bound,
    calls: u64,
}

/// What one successful call produced.
pub enum Output {
    Verdict(Verdict),
    /// Checked emitted events (host `emit` and the returned list), as (type, data).
    Emitted(Vec<Checked>),
}

/// A plugin of the `filter` world: each call answers with a verdict. Made only from a
/// filter (see [`Filter::new`]), so the router never sees events from a filter.
#[derive(Clone)]
pub struct Filter(Arc<Plugin>);

/// A plugin of the `handler` world: each call answers with the events it emitted.
#[derive(Clone)]
pub struct Handler(Arc<Plugin>);

impl Filter {
    /// `None` when `plugin` is not a filter.
    pub fn new(plugin: Arc<Plugin>) -> Option<Self> {
        (plugin.world() == World::Filter).then_some(Self(plugin))
    }

    pub fn call(&self, event: &Arc<PluginEvent>) -> Result<Verdict, Failure> {
        match self.0.call(event)? {
            Output::Verdict(v) => Ok(v),
            Output::Emitted(_) => Err(wrong_world("filter")),
        }
    }
}

impl Handler {
    /// `None` when `plugin` is not a handler.
    pub fn new(plugin: Arc<Plugin>) -> Option<Self> {
        (plugin.world() == World::Handler).then_some(Self(plugin))
    }

    pub fn call(&self, event: &Arc<PluginEvent>) -> Result<Vec<Checked>, Failure> {
        emitted(self.0.call(event))
    }

    /// Handles a run of events, one result per event in order: in one call when the
    /// component exports `handle-batch`, else one call each (see [`Plugin::call_batch`]).
    pub fn call_batch(&self, events: &[Arc<PluginEvent>]) -> Vec<Result<Vec<Checked>, Failure>> {
        self.0.call_batch(events).into_iter().map(emitted).collect()
    }
}

/// A handler's answer.
fn emitted(r: Result<Output, Failure>) -> Result<Vec<Checked>, Failure> {
    match r? {
        Output::Emitted(events) => Ok(events),
        Output::Verdict(_) => Err(wrong_world("handler")),
    }
}

/// Cannot happen (the component was bound to its world's exports when loaded); a failure
/// of that call, not a panic, should it ever.
fn wrong_world(world: &str) -> Failure {
    Failure::new(FailureKind::BadOutput, format!("a {world} answered like another world"))
}

impl std::ops::Deref for Filter {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

impl std::ops::Deref for Handler {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

/// One loaded version of a plugin's component.
struct Version {
    pre: Pre,
    warm: Mutex<Vec<Warm>>,
    /// SHA-256 of the component, hex.
    revision: String,
    loaded_at: time::OffsetDateTime,
}

pub struct Plugin {
    pub ctx: Arc<PluginContext>,
    version: ArcSwap<Version>,
    /// The component file, watched for changes (`None` for built-in plugins).
    pub source: Option<std::path::PathBuf>,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Why the last reload was refused (the previous version kept running).
    pub last_reload_error: Mutex<Option<String>>,
    /// Whether the engine meters fuel.
    metered: bool,
    breaker: Breaker,
    pub stats: PluginStats,
}

/// Per-plugin counters for `/metrics`.
#[derive(Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub failures: [AtomicU64; FailureKind::ALL.len()],
    pub latency: Histogram,
    pub instantiations: AtomicU64,
    /// Bytes of stdout/stderr over the capture cap, dropped instead of logged.
    pub output_dropped_bytes: AtomicU64,
    /// The largest linear memory any instance grew to (bytes).
    pub peak_memory_bytes: AtomicU64,
    /// Fuel the calls used, when the engine meters fuel (some plugin has a budget).
    pub fuel_consumed: AtomicU64,
    /// `handle-batch` calls that answered (each counted in `calls` once per event).
    pub batch_calls: AtomicU64,
    /// `handle-batch` calls that failed as a whole, whose events were handled again alone.
    pub batch_fallbacks: AtomicU64,
}

impl Plugin {
    /// Compiles (or loads from the cache) and type-checks a component against its world.
    pub fn load(
        engine: &WasmEngine,
        manifest: PluginConfig,
        bytes: &[u8],
        registry: Arc<Registry>,
        samples: Arc<PluginSamples>,
    ) -> Result<Plugin, WasmError> {
        let version = Version::compile(engine, manifest.world, Grants::of(&manifest.capabilities), bytes)?;
        let source = (!manifest.component.starts_with(super::config::BUILTIN_PREFIX))
            .then(|| std::path::PathBuf::from(&manifest.component));
        // Saturating: a deadline too long for the tick counter means "as long as it can be".
        let ticks = (u128::from(manifest.limits.deadline_ms) * 1000 / EPOCH_TICK.as_micros()).max(1);
        let deadline_ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        let breaker = Breaker::new(manifest.breaker.failures, Duration::from_millis(manifest.breaker.cool_down_ms));
        let config_json = manifest.config.to_string();
        let ctx = Arc::new(PluginContext {
            name: crate::name::Name::intern(&manifest.name),
            manifest,
            config_json,
            registry,
            samples,
            deadline_ticks,
            ticks: engine.ticks.clone(),
        });
        Ok(Plugin {
            ctx,
            version: ArcSwap::from_pointee(version),
            source,
            reloads: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            metered: engine.fuel,
            breaker,
            stats: PluginStats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    /// Replaces the component (hot reload) when `bytes` differ from the running version:
    /// compiled and checked against the plugin's world first, so a broken component is
    /// refused and the running version stays. Returns whether it changed.
    pub fn replace(&self, engine: &WasmEngine, bytes: &[u8]) -> Result<bool, WasmError> {
        if revision_of(bytes) == self.version.load().revision {
            return Ok(false);
        }
        let result = Version::compile(engine, self.world(), Grants::of(&self.ctx.manifest.capabilities), bytes);
        *self.last_reload_error.lock().expect("reload error") = result.as_ref().err().map(|e| e.to_string());
        self.version.store(Arc::new(result?));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The running component's SHA-256 (hex) and when it was loaded.
    pub fn revision(&self) -> (String, time::OffsetDateTime) {
        let v = self.version.load();
        (v.revision.clone(), v.loaded_at)
    }

    pub fn world(&self) -> World {
        self.ctx.manifest.world
    }

    /// Whether the running version takes runs of events in one call (`handle-batch`).
    pub fn batches(&self) -> bool {
        matches!(self.version.load().pre, Pre::BatchHandler(_))
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Runs the plugin on one event: a filter's verdict or a handler's checked output.
    pub fn call(&self, event: &Arc<PluginEvent>) -> Result<Output, Failure> {
        let n = self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // Two clock reads cost about as much as a filter's whole guest code: time one call
        // in LATENCY_SAMPLE (always the first), which keeps the histogram's shape.
        let start = n.is_multiple_of(LATENCY_SAMPLE).then(Instant::now);
        let result = if !self.breaker.allow() {
            Err(Failure::new(FailureKind::CircuitOpen, "circuit breaker open after repeated failures"))
        } else {
            let r = self.call_sandboxed(event);
            if self.breaker.record(r.is_ok()) {
                tracing::error!(plugin = self.name(), "circuit breaker tripped; calls paused for the cool-down");
            }
            r
        };
        if let Some(start) = start {
            self.stats.latency.observe(start.elapsed().as_secs_f64());
        }
        if let Err(f) = &result {
            self.count_failure(f);
        }
        result
    }

    fn count_failure(&self, f: &Failure) {
        let i = FailureKind::ALL.iter().position(|k| *k == f.kind).expect("every kind is listed");
        self.stats.failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a handler on a run of events: one result per event, in order. With a component
    /// that exports `handle-batch` and more than one event, in one call (one entry into the
    /// sandbox, one warm instance); should that call fail as a whole (a trap, the deadline,
    /// an answer of the wrong length, or a reload to a version without the export), each
    /// event is handled again alone, so a bad event fails only itself. Otherwise one call
    /// per event.
    pub fn call_batch(&self, events: &[Arc<PluginEvent>]) -> Vec<Result<Output, Failure>> {
        if events.len() > MAX_CALL_EVENTS {
            return events.chunks(MAX_CALL_EVENTS).flat_map(|run| self.call_batch(run)).collect();
        }
        let alone = || events.iter().map(|e| self.call(e)).collect();
        // An open breaker: the single calls answer `circuit_open`, each counted.
        if events.len() < 2 || !self.batches() || !self.breaker.allow() {
            return alone();
        }
        let start = Instant::now();
        match self.call_batch_sandboxed(events) {
            Ok(results) => {
                let n = results.len() as u64;
                self.stats.calls.fetch_add(n, Ordering::Relaxed);
                self.stats.batch_calls.fetch_add(1, Ordering::Relaxed);
                // One observation per run (its `_count` stays a sample): the share of one event.
                self.stats.latency.observe(start.elapsed().as_secs_f64() / n as f64);
                for r in &results {
                    if self.breaker.record(r.is_ok()) {
                        tracing::error!(
                            plugin = self.name(),
                            "circuit breaker tripped; calls paused for the cool-down"
                        );
                    }
                    if let Err(f) = r {
                        self.count_failure(f);
                    }
                }
                results.into_iter().map(|r| r.map(Output::Emitted)).collect()
            }
            Err(whole) => {
                self.stats.batch_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    plugin = self.name(),
                    kind = whole.kind.as_str(),
                    "a batch call failed; its events are handled one by one"
                );
                alone()
            }
        }
    }

    /// One `handle-batch` call on `events` (at most [`super::host::MAX_CALL_EVENTS`]),
    /// without [`Plugin::call_batch`]'s fallback to single calls: each event's answer, or the
    /// failure of the call as a whole. For `eventyard plugin test --batch`.
    pub fn call_batch_once(&self, events: &[Arc<PluginEvent>]) -> Result<Vec<Result<Output, Failure>>, Failure> {
        let answers = self.call_batch_sandboxed(events)?;
        Ok(answers.into_iter().map(|r| r.map(Output::Emitted)).collect())
    }

    fn call_sandboxed(&self, event: &Arc<PluginEvent>) -> Result<Output, Failure> {
        // The guest reaches the event through a borrowed handle; the host answers its
        // getters from `CallState::events`, so no resource table entry is needed.
        let run = |bound: &Bound, store: &mut Store<HostState>, tag| {
            let handle = Resource::<EventHandle>::new_borrow(event_rep(tag, 0));
            match bound {
                Bound::Filter(f) => f.call_filter(store, handle).map(Raw::Verdict),
                Bound::Handler(h) => h.call_handle(store, handle).map(Raw::Handled),
                Bound::BatchHandler(h, _) => h.call_handle(store, handle).map(Raw::Handled),
            }
        };
        self.in_sandbox(vec![event.clone()], run, |raw, call| self.classify(raw, call))
    }

    /// One `handle-batch` call; `Err` when it failed as a whole.
    fn call_batch_sandboxed(&self, events: &[Arc<PluginEvent>]) -> Result<Vec<Result<Vec<Checked>, Failure>>, Failure> {
        let n = events.len();
        // Owned handles (see the WIT): the guest drops them, the host's `drop` does nothing.
        // Each with its data and priority, which the guest would otherwise ask for per event.
        let run = |bound: &Bound, store: &mut Store<HostState>, tag| match bound {
            Bound::BatchHandler(_, batch) => {
                let lent = events.iter().enumerate().map(|(i, e)| {
                    let event: &crate::event::Event = (**e).borrow();
                    let (data, priority) = (event.data.text().clone(), event.priority);
                    LentBatchEvent { event: Resource::new_own(event_rep(tag, i)), data, priority }
                });
                batch.call(store, (lent.collect(),)).map(|(answers,)| answers)
            }
            _ => Err(wasmtime::Error::msg("this version of the plugin has no handle-batch")),
        };
        self.in_sandbox(events.to_vec(), run, |raw, mut call| {
            if let Some(v) = call.violation.take() {
                return Err(v);
            }
            let answers = raw.map_err(|e| classify_error(&e))?;
            if answers.len() != n {
                let message = format!("handle-batch answered {} results for {n} events", answers.len());
                return Err(Failure::new(FailureKind::BadOutput, message));
            }
            let answer = |a: Result<Vec<LiftedEmitted>, super::bindings::HandlerError>| {
                // Each event has the per-call emit budget of its own.
                let mut budget = CallState::default();
                let check = |e: LiftedEmitted| self.ctx.check_emitted_parts(&e.type_, e.data, &mut budget);
                a.map_err(handler_error)?.into_iter().map(check).collect()
            };
            Ok(answers.into_iter().map(answer).collect())
        })
    }

    /// Enters the sandbox once for `events` (one, or a batch's run): a warm instance (or a
    /// new one) of the current version, the call's state, deadline and fuel (the per-event
    /// ones times the events), then `run`, then the call's accounting; `finish` turns the
    /// raw answer into the outcome. The instance goes back to the warm pool unless the
    /// outcome says it may be in any state (a trap).
    fn in_sandbox<R, T>(
        &self,
        events: Vec<Arc<PluginEvent>>,
        run: impl FnOnce(&Bound, &mut Store<HostState>, u16) -> wasmtime::Result<R>,
        finish: impl FnOnce(wasmtime::Result<R>, CallState) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        // This call's version, whatever a reload does meanwhile.
        let version = self.version.load_full();
        let mut warm = match self.take_warm(&version) {
            Some(w) => w,
            None => self.instantiate(&version)?,
        };
        let n = events.len() as u64;
        let store = &mut warm.store;
        let start_tick = self.ctx.ticks.load(Ordering::Relaxed);
        // Truncated on purpose: the tag only has to differ from the earlier calls' of this
        // instance, which it does for 65,536 calls (an instance is recycled after 10,000 by
        // default, `limits.recycle_after_calls`).
        let tag = warm.calls as u16;
        store.data_mut().call = CallState { events, tag, start_tick, ..CallState::default() };
        store.set_epoch_deadline(self.ctx.deadline_ticks.saturating_mul(n));
        let fuel = self.ctx.manifest.limits.fuel.map_or(u64::MAX, |f| f.saturating_mul(n));
        if self.metered {
            // A fuel-metering engine needs fuel in every store; only budgeted plugins run short.
            store.set_fuel(fuel).map_err(|e| Failure::new(FailureKind::Instantiate, e.to_string()))?;
        }
        let raw = run(&warm.bound, &mut *store, tag);
        warm.calls += 1;
        if self.metered {
            let used = fuel - store.get_fuel().unwrap_or(0);
            self.stats.fuel_consumed.fetch_add(used, Ordering::Relaxed);
        }
        // Locked read-modify-writes cost as much as a filter's guest code: only on a new peak.
        let peak = store.data().limits.peak_memory as u64;
        if peak > self.stats.peak_memory_bytes.load(Ordering::Relaxed) {
            self.stats.peak_memory_bytes.fetch_max(peak, Ordering::Relaxed);
        }
        let stderr_tail = self.drain_output(store);
        let call = std::mem::take(&mut store.data_mut().call);
        let outcome = finish(raw, call).map_err(|mut f| {
            let limits = &self.ctx.manifest.limits;
            match f.kind {
                FailureKind::Deadline => f.message = format!("ran past its deadline of {} ms", limits.deadline_ms),
                FailureKind::Fuel => f.message = format!("used up its fuel budget of {}", limits.fuel.unwrap_or(0)),
                // A panicking guest says why on stderr; the dead letter should say it too.
                FailureKind::Trap if !stderr_tail.is_empty() => {
                    f.message = crate::event::text::clean_owned(
                        format!("{}; guest stderr: {stderr_tail}", f.message),
                        MAX_PLUGIN_MESSAGE_BYTES,
                    )
                }
                _ => {}
            }
            f
        });
        // A trapped instance may be in any state: it is dropped, never reused.
        let trapped = matches!(&outcome, Err(f) if !matches!(f.kind, FailureKind::HandlerError | FailureKind::EmitDenied | FailureKind::EmitInvalid | FailureKind::EmitBudget | FailureKind::BadOutput));
        let limits = &self.ctx.manifest.limits;
        if !trapped && !limits.strict && warm.calls < limits.recycle_after_calls {
            version.warm.lock().expect("warm pool").push(warm);
        }
        outcome
    }

    fn classify(&self, raw: wasmtime::Result<Raw>, mut call: CallState) -> Result<Output, Failure> {
        if let Some(v) = call.violation.take() {
            return Err(v);
        }
        match raw {
            Err(e) => Err(classify_error(&e)),
            Ok(Raw::Verdict(Verdict::Drop(reason))) => {
                Ok(Output::Verdict(Verdict::Drop(crate::event::text::clean_owned(reason, MAX_PLUGIN_MESSAGE_BYTES))))
            }
            Ok(Raw::Verdict(v)) => Ok(Output::Verdict(v)),
            Ok(Raw::Handled(Err(he))) => Err(handler_error(he)),
            Ok(Raw::Handled(Ok(list))) => {
                let mut out = std::mem::take(&mut call.emitted);
                for e in list {
                    out.push(self.ctx.check_emitted(e, &mut call)?);
                }
                Ok(Output::Emitted(out))
            }
        }
    }

    fn take_warm(&self, version: &Version) -> Option<Warm> {
        if self.ctx.manifest.limits.strict {
            return None;
        }
        version.warm.lock().expect("warm pool").pop()
    }

    fn instantiate(&self, version: &Version) -> Result<Warm, Failure> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let engine = match &version.pre {
            Pre::Filter(p) => p.engine(),
            Pre::Handler(p) => p.engine(),
            Pre::BatchHandler(p) => p.engine(),
        };
        let mut store = Store::new(engine, HostState::new(self.ctx.clone()));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.ctx.deadline_ticks);
        if self.metered {
            let _ = store.set_fuel(u64::MAX);
        }
        let bound = match &version.pre {
            Pre::Filter(p) => p.instantiate(&mut store).map(Bound::Filter),
            Pre::Handler(p) => p.instantiate(&mut store).map(Bound::Handler),
            Pre::BatchHandler(p) => bind_batch(p, &mut store),
        }
        .map_err(|e| {
            let f = classify_error(&e);
            Failure::new(if f.kind == FailureKind::Trap { FailureKind::Instantiate } else { f.kind }, f.message)
        })?;
        Ok(Warm { store, bound, calls: 0 })
    }

    /// Copies what the guest printed into the router's log, under its name; returns the
    /// last few lines of stderr (for a trap's dead letter).
    fn drain_output(&self, store: &mut Store<HostState>) -> String {
        let data = store.data();
        let mut stderr_tail = String::new();
        for (stream, cap) in [("stdout", &data.stdout), ("stderr", &data.stderr)] {
            let (bytes, dropped) = cap.drain();
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(&bytes);
                for line in text.lines() {
                    let line = clean(line, MAX_PLUGIN_MESSAGE_BYTES);
                    tracing::info!(target: "plugin", plugin = self.name(), stream, "{line}");
                }
                if stream == "stderr" {
                    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                    // Cleaned and capped when it becomes the failure's message.
                    stderr_tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ");
                }
            }
            if dropped > 0 {
                self.stats.output_dropped_bytes.fetch_add(dropped as u64, Ordering::Relaxed);
                tracing::warn!(target: "plugin", plugin = self.name(), stream, dropped, "output over the limit was dropped");
            }
        }
        stderr_tail
    }
}

impl Version {
    /// Compiles (or loads from the cache) and type-checks a component against `world`.
    /// Linked with only the imports `grants` allows (the others are stubs that deny).
    fn compile(engine: &WasmEngine, world: World, grants: Grants, bytes: &[u8]) -> Result<Version, WasmError> {
        let component = engine.load(bytes)?;
        let world_err = |world, e: wasmtime::Error| WasmError::World { world, message: format!("{e:#}") };
        let linker = engine.linker(grants)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| world_err(world.as_str(), e))?;
        let pre = match world {
            World::Filter => Pre::Filter(filter::FilterPre::new(instance_pre).map_err(|e| world_err("filter", e))?),
            // A handler that also exports `handle-batch` takes runs of events in one call.
            World::Handler => match batch_handler::BatchHandlerPre::new(instance_pre.clone()) {
                Ok(batch) => Pre::BatchHandler(batch),
                Err(_) => Pre::Handler(handler::HandlerPre::new(instance_pre).map_err(|e| world_err("handler", e))?),
            },
        };
        Ok(Version {
            pre,
            warm: Mutex::new(Vec::new()),
            revision: revision_of(bytes),
            loaded_at: time::OffsetDateTime::now_utc(),
        })
    }
}

/// SHA-256 of a component, hex.
/// Instantiates a batch handler: its bindings, and `handle-batch` typed to lift each
/// emitted event's data as an `Arc<str>` ([`BatchAnswer`]).
fn bind_batch(
    pre: &batch_handler::BatchHandlerPre<HostState>,
    store: &mut Store<HostState>,
) -> wasmtime::Result<Bound> {
    let instance = pre.instance_pre().instantiate(&mut *store)?;
    let bindings = batch_handler::BatchHandler::new(&mut *store, &instance)?;
    let batch = instance.get_typed_func(&mut *store, "handle-batch")?;
    Ok(Bound::BatchHandler(bindings, batch))
}

fn revision_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A handler's own error, as a failure of its event.
fn handler_error(he: super::bindings::HandlerError) -> Failure {
    Failure::with_retry(FailureKind::HandlerError, he.message, he.retryable)
}

enum Raw {
    Verdict(Verdict),
    Handled(Result<Vec<Emitted>, super::bindings::HandlerError>),
}

/// One call in this many is timed for the latency histogram (its `_count` is the sample).
pub const LATENCY_SAMPLE: u64 = 8;

/// Lines of a trapping guest's stderr kept in its dead letter (a Rust panic is 2-3 lines).
const STDERR_TAIL_LINES: usize = 3;

/// Maps a wasmtime error to the failure kind an operator needs to see. The message is the
/// cause (the trap, the refused memory growth); the Wasm backtrace goes to the debug log.
fn classify_error(e: &wasmtime::Error) -> Failure {
    let cause = e.root_cause().to_string();
    let kind = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Deadline,
        Some(Trap::OutOfFuel) => FailureKind::Fuel,
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        _ if cause.contains("forcing trap when growing memory") => FailureKind::Memory,
        _ => FailureKind::Trap,
    };
    tracing::debug!(kind = kind.as_str(), "plugin call failed: {e:?}");
    Failure::new(kind, cause)
}

/// Opens after `threshold` consecutive failures. After `cool_down` calls go through again
/// (half-open, without a single-probe limit: concurrent calls all pass): a success closes
/// it, a failure opens it for another cool-down (so does a failure of a call that was
/// already running while it was open).
struct Breaker {
    threshold: u32,
    cool_down: Duration,
    consecutive: AtomicU32,
    opened_at: Mutex<Option<Instant>>,
}

impl Breaker {
    fn new(threshold: u32, cool_down: Duration) -> Self {
        Self { threshold, cool_down, consecutive: AtomicU32::new(0), opened_at: Mutex::new(None) }
    }

    fn is_open(&self) -> bool {
        // Fast path without the lock: fewer consecutive failures than the threshold.
        if self.threshold == 0 || self.consecutive.load(Ordering::Relaxed) < self.threshold {
            return false;
        }
        self.opened_at.lock().expect("breaker").is_some_and(|t| t.elapsed() < self.cool_down)
    }

    fn allow(&self) -> bool {
        !self.is_open()
    }

    /// Records a call; returns true when this call tripped the breaker.
    fn record(&self, ok: bool) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if ok {
            // The common case (no failures before) reads and writes nothing shared.
            if self.consecutive.load(Ordering::Relaxed) == 0 {
                return false;
            }
            if self.consecutive.swap(0, Ordering::Relaxed) >= self.threshold {
                *self.opened_at.lock().expect("breaker") = None;
            }
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            let mut opened = self.opened_at.lock().expect("breaker");
            let tripped = opened.is_none_or(|t| t.elapsed() >= self.cool_down);
            *opened = Some(Instant::now());
            return tripped;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_trips_on_the_thresholdth_consecutive_failure_and_says_so_once() {
        let b = Breaker::new(3, Duration::from_secs(60));
        assert!(!b.record(false));
        assert!(!b.record(false));
        assert!(b.allow(), "two failures of three leave it closed");
        assert!(b.record(false), "the third failure trips it");
        assert!(!b.allow());
        assert!(!b.record(false), "a failure while open (a call already in flight) does not trip it again");
        assert!(!b.allow());
    }

    #[test]
    fn an_open_breaker_lets_calls_through_again_after_its_cool_down() {
        // Short, but long enough that a busy test machine does not see it end between two lines.
        let cool_down = Duration::from_millis(100);
        let b = Breaker::new(1, cool_down);
        assert!(b.record(false));
        assert!(!b.allow(), "open during the cool-down");
        std::thread::sleep(cool_down + Duration::from_millis(20));
        assert!(b.allow(), "half-open once the cool-down is over");
        assert!(b.record(false), "a failure after the cool-down trips it again");
        assert!(!b.allow());
        std::thread::sleep(cool_down + Duration::from_millis(20));
        assert!(b.allow());
        assert!(!b.record(true));
        assert!(b.allow(), "a success closes it");
        assert!(b.record(false), "and the next failure run counts from zero");
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let b = Breaker::new(3, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(!b.record(false));
            assert!(!b.record(false));
            assert!(!b.record(true));
        }
        assert!(b.allow(), "never three failures in a row");
        assert!(!b.record(false));
        assert!(!b.record(false));
        assert!(b.record(false));
    }

    #[test]
    fn a_success_closes_an_open_breaker_at_once() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record(false);
        assert!(b.record(false));
        assert!(!b.allow());
        assert!(!b.record(true), "a call that was in flight succeeds");
        assert!(b.allow());
    }

    #[test]
    fn a_threshold_of_zero_turns_the_breaker_off() {
        let b = Breaker::new(0, Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(!b.record(false));
        }
        assert!(b.allow());
    }
}
