//! The one place that runs `bindgen!` over `wit/`. The worlds share the `types`, `log`,
//! `metrics` and `config` interfaces (and `emit`, of the two handler worlds); the others
//! reuse the handler world's modules so the host implements each interface once.

/// World `handler` (imports log, emit, metrics, config; exports `handle`).
pub mod handler {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "handler",
        imports: { default: trappable },
        with: { "eventyard:plugin/types.event": crate::wasm::host::EventHandle },
    });
}

/// World `filter` (imports log, metrics, config; exports `filter`).
pub mod filter {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "filter",
        imports: { default: trappable },
        with: {
            "eventyard:plugin/types": super::handler::eventyard::plugin::types,
            "eventyard:plugin/log": super::handler::eventyard::plugin::log,
            "eventyard:plugin/metrics": super::handler::eventyard::plugin::metrics,
            "eventyard:plugin/config": super::handler::eventyard::plugin::config,
        },
    });
}

pub use handler::eventyard::plugin::types::{Emitted, Event, HandlerError, Verdict};
pub use handler::eventyard::plugin::{config, emit, log, metrics};

/// World `batch-handler`: a handler that also exports `handle-batch` (a run of events in one
/// call). A component configured as a `handler` is bound to this world when it exports both.
pub mod batch_handler {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "batch-handler",
        imports: { default: trappable },
        with: {
            "eventyard:plugin/types": super::handler::eventyard::plugin::types,
            "eventyard:plugin/log": super::handler::eventyard::plugin::log,
            "eventyard:plugin/emit": super::handler::eventyard::plugin::emit,
            "eventyard:plugin/metrics": super::handler::eventyard::plugin::metrics,
            "eventyard:plugin/config": super::handler::eventyard::plugin::config,
        },
    });
}
