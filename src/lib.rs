//! Eventyard: a WebAssembly-extensible event router.
//!
//! The folder tree is the architecture: one core in the middle, doors around it, and every
//! module importing only from layers below its own (the README's "Architecture" section
//! has the picture and the path of one event).
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | vocabulary | [`settings`], [`files`], [`name`], [`schema`], [`event`], [`metrics`] | the refused-setting shape, owner-only atomic files, names shared by many events, the catalogue and compiled validators, the accepted event, outcomes and failures, Prometheus helpers |
//! | state and sandbox | [`store`], [`wasm`] | the event log (the `EventLog` contract), statuses and dedup, dead letters, documents; the Wasm plugin host |
//! | core | [`router`] | admission, routes, the workers that run plugins, settling, retries, telling whoever waits |
//! | doors | [`http`], [`protocols`], [`admin`], [`sources`], [`sinks`] (and [`amqp`], the AMQP client pieces the last two share) | ingestion and reads over HTTP; Fix Inventory and Infrahub; plugins, dead letters and ops; events from brokers (NATS, AMQP); events out to brokers (AMQP) |
//! | composition | [`config`], [`app`], [`cli`] | the TOML that composes every part's section; building and serving one router; the command line |

pub mod admin;
pub mod amqp;
pub mod app;
pub mod cli;
pub mod config;
pub mod event;
pub mod files;
pub mod http;
pub mod metrics;
pub mod name;
pub mod protocols;
pub mod router;
pub mod schema;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod wasm;
