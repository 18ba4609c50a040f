//! What a plugin is linked with: WASI (with its two waiting calls bounded by the call's
//! deadline) and the `eventyard:plugin` imports, each linked for real only when the
//! manifest grants it. The engine builds one `Linker` per set of grants and caches it.
//!
//! # Capabilities are checked before arguments are copied
//!
//! A component that imports `log`, `emit` or `metrics` without the grant still has to be
//! instantiated (it may never call them), so those imports are linked to stubs that record
//! `capability_denied` and trap. The stubs take their arguments as [`WasmStr`] and
//! [`WasmList`]: lifting those only checks that pointer and length lie inside the guest's
//! memory (O(1), nothing copied, nothing allocated), so a plugin without `metrics` cannot
//! make the host copy a label list at all. Granted `log` and `metrics` read their strings
//! in place the same way and copy only what passes the caps below.
//!
//! # Deadlines cover time spent waiting in WASI
//!
//! Epoch interruption stops guest *code*; a guest blocked inside a host call runs none, so
//! a `std::thread::sleep` (a monotonic-clock pollable plus `poll` or `block`) ignored the
//! deadline and held a pipeline worker. In this sandbox the only WASI calls that wait are
//! `wasi:io/poll#poll` and `[method]pollable.block`:
//! - the streams' `blocking-*` methods wait on the stream's readiness, and ours never wait:
//!   stdin is closed (reads end at once), stdout and stderr are [`super::output::Captured`]
//!   (always ready, never full);
//! - there is no filesystem (no preopens) and no network (TCP, UDP and name lookup are
//!   refused when a socket is created, so no socket pollable exists);
//! - clocks, random, environment and exit answer at once.
//!
//! So those two are shadowed here: the same wasmtime-wasi implementation, run under a
//! timeout of the call's remaining time, and a call that reaches its deadline while
//! waiting traps with [`Trap::Interrupt`] (kind `deadline`, like the epoch check). Bounding
//! the *wait* rather than the timers (shimming `subscribe-duration`/`subscribe-instant`)
//! covers every pollable, present and future, and traps exactly at the deadline instead of
//! relying on the guest to run code again. The async bindings would do the same with a
//! `tokio::time::timeout` around each call, but would put every warm call (~1-2 µs) through
//! a future and a runtime; this keeps the synchronous hot path and costs nothing until a
//! guest actually waits.

use super::bindings::handler::eventyard::plugin::{config, emit, log, types};
use super::config::Capability;
use super::host::HostState;
use crate::event::text::{clean, MAX_PLUGIN_MESSAGE_BYTES};
use crate::metrics::SampleKind;
use wasmtime::component::{ComponentType, HasSelf, Lift, Linker, Resource, WasmList, WasmStr};
use wasmtime::{Engine, StoreContextMut, Trap};
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi::p2::DynPollable;

/// Log lines one call may write; past it lines are dropped and counted
/// (`eventyard_plugin_log_dropped_lines_total`), so a plugin cannot flood the router's log.
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Bytes of log lines (each already capped at [`MAX_PLUGIN_MESSAGE_BYTES`]) one call may
/// write; past it lines are dropped and counted like the lines past the line cap.
pub const MAX_LOG_BYTES_PER_CALL: usize = 64 * 1024;

/// The WIT instances this module defines (the versions of `wit/eventyard.wit` and of
/// wasmtime-wasi's `wasi:io`; components importing older 0.2 versions resolve to them).
const TYPES: &str = "eventyard:plugin/types@0.2.0";
const LOG: &str = "eventyard:plugin/log@0.2.0";
const EMIT: &str = "eventyard:plugin/emit@0.2.0";
const METRICS: &str = "eventyard:plugin/metrics@0.2.0";
const POLL: &str = "wasi:io/poll@0.2.12";

/// A set of granted capabilities, as a bit set: which cached linker a plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants(u8);

impl Grants {
    /// How many different sets there are (three capabilities).
    pub const COUNT: usize = 8;

    pub fn of(capabilities: &[Capability]) -> Self {
        Self(capabilities.iter().fold(0, |bits, c| bits | Self::bit(*c)))
    }

    fn bit(c: Capability) -> u8 {
        match c {
            Capability::Log => 1,
            Capability::Emit => 2,
            Capability::Metrics => 4,
        }
    }

    fn has(self, c: Capability) -> bool {
        self.0 & Self::bit(c) != 0
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// `emitted` as a stub receives it: two bounds-checked pointers, nothing copied.
#[derive(ComponentType, Lift)]
#[component(record)]
struct EmittedUnread {
    #[component(name = "type")]
    _type: WasmStr,
    #[component(name = "data")]
    _data: WasmStr,
}

type Labels = WasmList<(WasmStr, WasmStr)>;

/// A linker for plugins granted exactly `grants`.
pub(crate) fn linker(engine: &Engine, grants: Grants) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bound_waits(&mut linker)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    lent_data(&mut linker)?;
    config::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;

    let mut log = linker.instance(LOG)?;
    if grants.has(Capability::Log) {
        log.func_wrap("write", log_write)?;
    } else {
        log.func_wrap("write", |s, _: (log::Level, WasmStr)| denied::<()>(s, Capability::Log))?;
    }
    if grants.has(Capability::Emit) {
        emit::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    } else {
        linker
            .instance(EMIT)?
            .func_wrap("send", |s, _: (EmittedUnread,)| -> wasmtime::Result<(Result<(), String>,)> {
                denied(s, Capability::Emit)
            })?;
    }
    let mut metrics = linker.instance(METRICS)?;
    for (name, kind) in
        [("counter", SampleKind::Counter), ("gauge", SampleKind::Gauge), ("histogram", SampleKind::Histogram)]
    {
        if grants.has(Capability::Metrics) {
            metrics.func_wrap(name, move |s, (n, v, l): (WasmStr, f64, Labels)| sample(s, kind, n, v, l))?;
        } else {
            metrics.func_wrap(name, |s, _: (WasmStr, f64, Labels)| denied::<()>(s, Capability::Metrics))?;
        }
    }
    Ok(linker)
}

/// Records `capability_denied` for the call and traps.
fn denied<R>(mut store: StoreContextMut<'_, HostState>, c: Capability) -> wasmtime::Result<R> {
    Err(store.data_mut().deny(c))
}

/// Replaces wasmtime-wasi's `poll` and `pollable.block` with the same calls bounded by the
/// time the plugin call has left (see the module docs).
fn bound_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL)?;
    poll.func_wrap("poll", |mut store: StoreContextMut<'_, HostState>, (list,): (Vec<Resource<DynPollable>>,)| {
        let left = store.data().time_left().ok_or(Trap::Interrupt)?;
        let table = store.data_mut().table();
        let ready = wasmtime_wasi::runtime::in_tokio(async { tokio::time::timeout(left, table.poll(list)).await });
        Ok((ready.map_err(|_| Trap::Interrupt)??,))
    })?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let left = store.data().time_left().ok_or(Trap::Interrupt)?;
            let table = store.data_mut().table();
            let done =
                wasmtime_wasi::runtime::in_tokio(async { tokio::time::timeout(left, table.block(pollable)).await });
            done.map_err(|_| Trap::Interrupt)?
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces the generated `[method]event.data` (whose trait method answers a `String`, a
/// copy of the text made only to be copied again into the guest) with one that lowers the
/// event's own text: one copy, straight into the guest's memory, and no allocation.
fn lent_data(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TYPES)?.func_wrap(
        "[method]event.data",
        |store: StoreContextMut<'_, HostState>, (h,): (Resource<super::host::EventHandle>,)| {
            Ok((store.data().event_data(&h)?.clone(),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `log.write`: the line read in place, capped and cleaned, then counted against the
/// call's line and byte budget; only what passes is copied and logged.
fn log_write(
    mut store: StoreContextMut<'_, HostState>,
    (level, message): (log::Level, WasmStr),
) -> wasmtime::Result<()> {
    let (line, cut) = {
        let text = message.to_str(&store)?;
        let line = clean(&text, MAX_PLUGIN_MESSAGE_BYTES).into_owned();
        let cut = text.len().saturating_sub(line.len());
        (line, cut)
    };
    let state = store.data_mut();
    let plugin = state.plugin.clone();
    let call = &mut state.call;
    if call.log_lines >= MAX_LOG_LINES_PER_CALL || call.log_bytes + line.len() > MAX_LOG_BYTES_PER_CALL {
        plugin.samples.log_dropped(&plugin.name, 1, line.len() + cut);
        return Ok(());
    }
    call.log_lines += 1;
    call.log_bytes += line.len();
    if cut > 0 {
        plugin.samples.log_dropped(&plugin.name, 0, cut);
    }
    let plugin = &*plugin.name;
    match level {
        log::Level::Trace => tracing::trace!(target: "plugin", plugin, "{line}"),
        log::Level::Debug => tracing::debug!(target: "plugin", plugin, "{line}"),
        log::Level::Info => tracing::info!(target: "plugin", plugin, "{line}"),
        log::Level::Warn => tracing::warn!(target: "plugin", plugin, "{line}"),
        log::Level::Error => tracing::error!(target: "plugin", plugin, "{line}"),
    }
    Ok(())
}

/// A metric sample: the label count checked before any label is read, each string read in
/// place and copied only when within its cap; [`crate::metrics::PluginSamples::record`]
/// validates the rest. A refused sample is counted, and the call goes on.
fn sample(
    mut store: StoreContextMut<'_, HostState>,
    kind: SampleKind,
    name: WasmStr,
    value: f64,
    labels: Labels,
) -> wasmtime::Result<()> {
    use crate::metrics::{Refusal, MAX_LABELS_PER_SAMPLE, MAX_LABEL_VALUE_BYTES, MAX_METRIC_NAME_BYTES};
    let plugin = store.data().plugin.clone();
    let refuse = |why| {
        plugin.samples.refused(&plugin.name, why);
        Ok(())
    };
    if labels.len() > MAX_LABELS_PER_SAMPLE {
        return refuse(Refusal::TooManyLabels);
    }
    let Some(name) = read_capped(&store, &name, MAX_METRIC_NAME_BYTES)? else {
        return refuse(Refusal::InvalidName);
    };
    let mut pairs = Vec::with_capacity(labels.len());
    for i in 0..labels.len() {
        let Some(pair) = labels.get(&mut store, i) else { break };
        let (k, v) = pair?;
        let Some(k) = read_capped(&store, &k, MAX_METRIC_NAME_BYTES)? else {
            return refuse(Refusal::InvalidLabel);
        };
        let Some(v) = read_capped(&store, &v, MAX_LABEL_VALUE_BYTES)? else {
            return refuse(Refusal::LabelTooLong);
        };
        pairs.push((k, v));
    }
    plugin.samples.record(&plugin.name, kind, &name, value, pairs);
    Ok(())
}

/// A guest string, copied only when it is at most `max` bytes.
fn read_capped(store: &StoreContextMut<'_, HostState>, s: &WasmStr, max: usize) -> wasmtime::Result<Option<String>> {
    let text = s.to_str(store)?;
    Ok((text.len() <= max).then(|| text.into_owned()))
}
