//! The Wasm plugin host: sandboxed filter and handler components behind the WIT package
//! in `wit/`.
//!
//! - [`engine`]: the one `Engine`/`Config`, the linkers, the epoch ticker and the
//!   precompiled-artifact cache;
//! - [`link`]: what a plugin is linked with: only the imports it was granted (stubs that
//!   copy nothing for the others), and WASI's waits bounded by the call's deadline;
//! - [`bindings`]: the one `bindgen!`;
//! - [`host`]: the per-store state and the host imports (log, emit, metrics, config),
//!   each checked against the plugin's grants;
//! - [`plugin`]: a loaded plugin: `InstancePre`, warm instances, limits, failure
//!   classification, circuit breaker, stats;
//! - [`output`]: bounded capture of the guest's stdout and stderr;
//! - [`config`]: the `[[plugin]]` section (manifest, grants, limits, breaker).
//!
//! Plugin text (error messages, drop reasons, log lines, captured output) is capped and
//! cleaned by [`crate::event::text`].

pub mod bindings;
pub mod builtin;
pub mod config;
pub mod engine;
pub mod host;
pub mod link;
mod output;
pub mod plugin;

pub use engine::WasmEngine;
pub use plugin::Plugin;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("component does not compile: {0}")]
    Compile(String),
    #[error("component does not fit world `{world}`: {message}")]
    World { world: &'static str, message: String },
    #[error("artifact cache: {0}")]
    Cache(String),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
}

/// An emitted event the host checked against the manifest and its schema.
#[derive(Debug, Clone)]
pub struct Checked {
    pub type_name: crate::name::Name,
    /// Its own `meta.priority`, else its type's.
    pub priority: u8,
    /// The JSON text the plugin sent.
    pub data: crate::event::Body,
}
