//! The one integration-test binary (so the heavy dependencies link once).
//! Every test talks to real things: a real server on 127.0.0.1:0, real HTTP and WebSocket
//! clients, the real `eventyard` binary.

mod support;

mod amqp;
mod architecture;
mod auth;
mod catalog;
mod cli;
mod cluster;
mod config;
mod contract;
mod corpus;
mod dashboard;
mod durability;
mod http;
mod inputs;
mod languages;
mod limits;
mod log_faults;
mod plugins;
mod progress;
mod properties;
mod protocols;
mod sandbox;
mod subscribe;
mod workflows;
