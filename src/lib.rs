//! Eventyard: a WebAssembly-extensible event router.
//!
//! Events come in over HTTP, are validated against JSON Schemas generated from documented
//! event tables, and are routed to subscribers and through sandboxed Wasm filter and handler plugins.
//!
//! Module map, in the order an event meets them:
//! - [`catalog`]: Markdown event tables → event types → JSON Schema (the one source of truth);
//! - [`schema`]: the compiled validators, looked up by type name, and validation reports;
//! - [`ingest`]: the axum app: native events, CloudEvents, NDJSON, schemas, subscriptions;
//! - [`router`]: accepted events, type patterns, the subscriber bus, routes, the plugin
//!   pipeline and the dead letters;
//! - [`store`]: the durable event log (local segment log; a NATS backend later);
//! - [`wasm`]: the sandboxed Wasm plugin host (one engine, one `bindgen!`, limits, imports);
//! - [`workflow`]: Fix Inventory's workflows (steps sent to WebSocket subscribers and Wasm
//!   handlers), their tasks, and the subscribers ("actors");
//! - [`metrics`]: counters exported at `/metrics`;
//! - [`config`]: the TOML config and its defaults;
//! - [`server`]: assembles the above from a config;
//! - [`cli`]: the `eventyard` command line; [`cli_dead_letters`]: its `dead-letters` commands
//!   (a client of the running router's API); [`cli_plugin`]: `plugin test`.

pub mod catalog;
pub mod cli;
pub mod cli_dead_letters;
pub mod cli_plugin;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod router;
pub mod schema;
pub mod server;
pub mod store;
pub mod wasm;
pub mod workflow;
