//! Sluice: a Kafka log pipeline with sandboxed WebAssembly plugins.
//!
//! Data flows source → [`pipeline`] (decode, plugin [`chain`], route) → sinks, and
//! acknowledgements flow back through [`ack`] so a source offset is committed only after
//! every sink has durably accepted everything derived from it.

mod registry;

pub mod ack;
pub mod admin;
pub mod backfill;
pub mod batch;
pub mod chain;
pub mod codec;
pub mod config;
pub mod event;
pub mod generator;
pub mod health;
pub mod kafka_security;
pub mod lake;
pub mod memory;
pub mod pipeline;
pub mod plugin;
pub mod progress;
pub mod reload;
pub mod role;
pub mod route;
pub mod runner;
pub mod scaffold;
pub mod secrets;
pub mod sink;
pub mod snapshots;
pub mod source;
pub mod spec;
pub mod state;
pub mod tap;
pub mod time;
pub mod top;
pub mod topics;
pub mod topology;
pub mod workers;

pub use sluice_plugin_sdk::{Attribute, Origin, Record, Route, Value};
