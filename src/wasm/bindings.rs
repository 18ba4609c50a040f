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

/// WIT `batch-event` (world `batch-handler`) as the host lowers it: the event's own data
/// text is copied straight into the guest (bindgen's `BatchEvent` holds a `String`, a copy
/// made only to be copied again).
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct LentBatchEvent {
    pub event: wasmtime::component::Resource<crate::wasm::host::EventHandle>,
    pub data: std::sync::Arc<str>,
    pub priority: u8,
}

/// `handle-batch`'s answer as the host lifts it: each emitted event's data straight into
/// the `Arc<str>` the router keeps (bindgen's `emitted` holds a `String`, which was copied
/// once more into one: two allocations and two copies of every answer instead of one).
pub type BatchAnswer = Vec<Result<Vec<LiftedEmitted>, HandlerError>>;

/// WIT `emitted`, lifted with its data as an `Arc<str>` (see [`BatchAnswer`]). bindgen's
/// `with` replaces resources only, so the batch export is called through a typed function
/// of its own ([`crate::wasm::plugin`]).
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct LiftedEmitted {
    #[component(name = "type")]
    pub type_: String,
    pub data: std::sync::Arc<str>,
}
