//! What a plugin's `Store` holds, and the host side of the WIT imports that bindgen links
//! (`types`, `config`, `emit`). `log` and `metrics`, and the stubs for imports that were
//! not granted, are in [`super::link`]: a call to an import that was not granted traps
//! and fails the event with `capability_denied`.

use super::bindings::{config, emit, Emitted};
use super::config::{Capability, PluginConfig};
use super::engine::EPOCH_TICK;
use super::output::Captured;
use super::Checked;
use crate::event::Body;
use crate::event::{Failure, FailureKind};
use crate::metrics::PluginSamples;
use crate::name::Name;
use crate::schema::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What every instance of one plugin shares.
pub struct PluginContext {
    pub name: Name,
    pub manifest: PluginConfig,
    /// The plugin's `config` table as JSON, handed to `config.get`.
    pub config_json: String,
    pub registry: Arc<Registry>,
    pub samples: Arc<PluginSamples>,
    /// The per-call deadline in epoch ticks.
    pub deadline_ticks: u64,
    /// The engine's epoch, mirrored (see [`super::engine::WasmEngine::ticks`]).
    pub ticks: Arc<AtomicU64>,
}

impl PluginContext {
    fn granted(&self, c: Capability) -> bool {
        self.manifest.capabilities.contains(&c)
    }

    /// Checks one emitted event against the manifest and its schema.
    pub fn check_emitted(&self, e: Emitted, call: &mut CallState) -> Result<Checked, Failure> {
        self.check_emitted_parts(&e.type_, e.data.into(), call)
    }

    /// [`check_emitted`](Self::check_emitted) of an event lifted as its parts (a batch's
    /// answers are lifted with their data as an `Arc<str>` already).
    pub fn check_emitted_parts(&self, type_: &str, data: Arc<str>, call: &mut CallState) -> Result<Checked, Failure> {
        let limits = &self.manifest.limits;
        call.emit_count += 1;
        call.emit_bytes += data.len();
        if call.emit_count > limits.max_emits || call.emit_bytes > limits.max_emit_bytes {
            return Err(Failure::new(
                FailureKind::EmitBudget,
                format!("more than {} events or {} bytes emitted in one call", limits.max_emits, limits.max_emit_bytes),
            ));
        }
        if !self.manifest.emits.iter().any(|t| t == type_) {
            return Err(Failure::new(
                FailureKind::EmitDenied,
                format!("type `{type_}` is not in the manifest's `emits`"),
            ));
        }
        let ty = self.registry.get(type_).map_err(|err| Failure::new(FailureKind::EmitInvalid, err.to_string()))?;
        // Validated in place: the router keeps the plugin's text and builds no tree.
        let (data, priority) =
            Body::check(ty, data).map_err(|r| Failure::new(FailureKind::EmitInvalid, format!("`{type_}` data {r}")))?;
        Ok(Checked { type_name: ty.name, priority, data })
    }
}

/// The WIT `event` resource as the host sees it: a marker, since the events a call is about
/// are the ones in [`CallState::events`]; the handle's rep says which (see [`event_rep`]).
pub struct EventHandle;

/// Bits of an event handle's rep that index [`CallState::events`]; the bits above hold the
/// call's [`CallState::tag`]. A run is far shorter than this (`pipeline`'s run limit).
const EVENT_INDEX_BITS: u32 = 16;
/// The most events one call can be handed.
pub const MAX_CALL_EVENTS: usize = 1 << EVENT_INDEX_BITS;

/// The rep of the handle of event `index` of the call tagged `tag`. The tag changes with
/// every call of an instance, so a handle a guest kept from an earlier call (the owned
/// handles of a batch can be kept) names no event and its getters trap.
pub fn event_rep(tag: u16, index: usize) -> u32 {
    debug_assert!(index < MAX_CALL_EVENTS);
    (u32::from(tag) << EVENT_INDEX_BITS) | index as u32
}

/// An event as plugins see it: shared by every plugin of a route, its fields handed out
/// only when a guest asks for them. Whatever owns the event can stand for it, so the router
/// lends the accepted event's own work record instead of a copy of the event (a copy of its
/// id and source per event was 5% of the plugin workers' time on the end-to-end row).
pub type PluginEvent = dyn std::borrow::Borrow<crate::event::Event> + Send + Sync;

/// Per-call bookkeeping, reset before each call.
#[derive(Default)]
pub struct CallState {
    /// The events of this call: one, or a batch's run.
    pub events: Vec<Arc<PluginEvent>>,
    /// This call's tag in its events' handles (see [`event_rep`]).
    pub tag: u16,
    /// Events sent through the `emit` import, already checked.
    pub emitted: Vec<Checked>,
    pub emit_count: usize,
    pub emit_bytes: usize,
    /// The first rule the call broke; it fails the event even if the guest carried on.
    pub violation: Option<Failure>,
    /// The epoch tick the call started at: what a wait in WASI is bounded by.
    pub start_tick: u64,
    /// Log lines and bytes written in this call (capped by `link::MAX_LOG_*_PER_CALL`).
    pub log_lines: u32,
    pub log_bytes: usize,
}

/// The store's memory limiter: the manifest's cap (wasmtime's [`StoreLimits`]), and the
/// largest linear memory the instance asked for, which `plugin test` and `/metrics` report.
pub struct Limiter {
    limits: StoreLimits,
    /// Bytes of the largest memory growth granted (or the initial size).
    pub peak_memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The data of one plugin instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: Limiter,
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) call: CallState,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
}

impl HostState {
    /// A sandbox: no preopened directories, no network, no environment, no arguments;
    /// stdout and stderr go to bounded capture buffers; memory capped by the manifest.
    pub fn new(plugin: Arc<PluginContext>) -> Self {
        let cap = plugin.manifest.limits.output_bytes;
        let (stdout, stderr) = (Captured::new(cap), Captured::new(cap));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(plugin.manifest.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            peak_memory: 0,
        };
        // Instantiation runs guest code too (its start-up): bounded from now.
        let call = CallState { start_tick: plugin.ticks.load(Ordering::Relaxed), ..CallState::default() };
        Self { wasi, table: ResourceTable::new(), limits, plugin, call, stdout, stderr }
    }

    /// Records `capability_denied` for this call; the error traps the guest.
    pub(crate) fn deny(&mut self, c: Capability) -> wasmtime::Error {
        let f = Failure::new(FailureKind::CapabilityDenied, format!("capability `{}` is not granted", c.as_str()));
        self.call.violation.get_or_insert(f.clone());
        wasmtime::Error::msg(f.message)
    }

    /// How long the current call may still wait in WASI; `None` once its deadline passed.
    /// Counted in epoch ticks, like the deadline the epoch check enforces.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        let elapsed = self.plugin.ticks.load(Ordering::Relaxed).wrapping_sub(self.call.start_tick);
        let left = self.plugin.deadline_ticks.checked_sub(elapsed).filter(|l| *l > 0)?;
        Some(EPOCH_TICK.saturating_mul(u32::try_from(left).unwrap_or(u32::MAX)))
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl super::bindings::handler::eventyard::plugin::types::Host for HostState {}

impl CallState {
    /// The event a handle of rep `rep` names in this call; `None` for a handle of another
    /// call (one a guest kept) or past this call's events.
    fn event_at(&self, rep: u32) -> Option<&crate::event::Event> {
        let index = (rep & (MAX_CALL_EVENTS as u32 - 1)) as usize;
        let this_call = rep >> EVENT_INDEX_BITS == u32::from(self.tag);
        this_call.then(|| self.events.get(index)).flatten().map(|e| std::borrow::Borrow::borrow(&**e))
    }

    /// A `handle-batch` call (a single call always has one event, a batch call more).
    fn is_batch(&self) -> bool {
        self.events.len() > 1
    }
}

impl HostState {
    pub(super) fn event(&self, handle: &Resource<EventHandle>) -> wasmtime::Result<&crate::event::Event> {
        self.call
            .event_at(handle.rep())
            .ok_or_else(|| wasmtime::Error::msg("an event handle used outside the call it was given to"))
    }

    /// What `[method]event.data` answers: the event's own text, shared (not copied).
    pub(super) fn event_data(&self, handle: &Resource<EventHandle>) -> wasmtime::Result<&Arc<str>> {
        Ok(self.event(handle)?.data.text())
    }
}

impl super::bindings::handler::eventyard::plugin::types::HostEvent for HostState {
    fn id(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(self.event(&h)?.id.clone())
    }

    fn type_(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(String::from(&*self.event(&h)?.type_name))
    }

    fn source(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(self.event(&h)?.source.clone().unwrap_or_else(|| "eventyard".to_string()))
    }

    fn time(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(crate::event::rfc3339(self.event(&h)?.time))
    }

    fn priority(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<u8> {
        Ok(self.event(&h)?.priority)
    }

    fn correlation_id(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.event(&h)?.data.correlation_id().map(str::to_string))
    }

    fn attributes(&mut self, _: Resource<EventHandle>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Never called: [`super::link`]'s `lent_data` is linked in its place and lowers
    /// [`HostState::event_data`] without this copy; the generated trait still asks for it.
    fn data(&mut self, h: Resource<EventHandle>) -> wasmtime::Result<String> {
        // `String::from`, not `to_string`: an `Arc<str>` would go through `Display`.
        Ok(String::from(&**self.event_data(&h)?))
    }

    fn drop(&mut self, _: Resource<EventHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl emit::Host for HostState {
    fn send(&mut self, event: Emitted) -> wasmtime::Result<Result<(), String>> {
        if !self.plugin.granted(Capability::Emit) {
            return Err(self.deny(Capability::Emit));
        }
        // An event sent here could not be told apart by the event it answers.
        if self.call.is_batch() {
            return Ok(Err("emit.send is not available in handle-batch: return the events instead".into()));
        }
        let plugin = self.plugin.clone();
        match plugin.check_emitted(event, &mut self.call) {
            Ok(checked) => {
                self.call.emitted.push(checked);
                Ok(Ok(()))
            }
            Err(f) => {
                let message = f.message.clone();
                self.call.violation.get_or_insert(f);
                Ok(Err(message))
            }
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self) -> wasmtime::Result<String> {
        Ok(self.plugin.config_json.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Arc<PluginEvent> {
        Arc::new(crate::event::Event {
            id: id.into(),
            type_name: crate::name::Name::intern("infrahub/send.echo.request"),
            source: None,
            time: time::OffsetDateTime::UNIX_EPOCH,
            priority: 3,
            data: crate::event::Body::from_value(serde_json::json!({ "message": "x" })),
            hops: 0,
            keyed: false,
            pin: Default::default(),
        })
    }

    /// A handle names an event of the call it was given in only: one kept from an earlier
    /// call of the instance (another tag), or past the call's events, names none.
    #[test]
    fn a_handle_names_an_event_of_its_own_call_only() {
        let call = CallState { events: vec![event("a"), event("b")], tag: 7, ..CallState::default() };
        assert_eq!(call.event_at(event_rep(7, 0)).map(|e| e.id.as_str()), Some("a"));
        assert_eq!(call.event_at(event_rep(7, 1)).map(|e| e.id.as_str()), Some("b"));
        assert!(call.event_at(event_rep(7, 2)).is_none(), "past the call's events");
        assert!(call.event_at(event_rep(6, 0)).is_none(), "a handle of the call before");
        assert!(call.is_batch());
        let single = CallState { events: vec![event("c")], tag: 8, ..CallState::default() };
        assert!(!single.is_batch());
    }
}
