//! Doors that speak a documented system's own protocol over HTTP: [`fixinventory`] (its
//! WebSocket message bus, workflows, tasks and config service) and [`infrahub`] (its
//! request/response RPC). Each uses the HTTP plumbing of `crate::http` and reaches the
//! core only through `crate::router`.

pub mod fixinventory;
pub mod infrahub;
