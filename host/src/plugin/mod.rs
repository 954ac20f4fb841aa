//! The wasmtime component host for transform plugins.
//!
//! Each plugin is compiled once into an [`InstancePre`](wasmtime::component::InstancePre)
//! from which instances are made cheaply with the pooling allocator. Every call runs under
//! an epoch deadline and a linear-memory limit; a trap, timeout or out-of-memory discards
//! the instance (a trapped store is unusable) and the next call gets a fresh one. The
//! deadline also bounds waits on the WASI clock, which block in the host where no epoch
//! check runs ([`clock`]). Plugins see no filesystem, sockets or environment: only the
//! `sluice:plugin/host` imports and a WASI context with nothing in it (Rust's std needs
//! WASI to link).
//!
//! Compiled components are kept on disk ([`cache`]): a start or reload does not compile an
//! unchanged component again.
//!
//! What a plugin emits is held to the origin rule ([`origins`]): a record claiming an
//! origin the host never gave that plugin is dead-lettered, never delivered.

pub mod cache;
mod clock;
mod host_api;
pub mod inspect;
mod origins;
mod runtime;
mod stage;
mod stats;

pub use runtime::{LoadedPlugin, PluginRuntime, WasmStage, World};
pub use stage::NativeStage;
pub use stats::{LATENCY_BUCKETS_SECONDS, PluginStats};

/// Generated bindings for the contract's versions, `wit/0.1.0/` and `wit/0.2.0/`: the host
/// calls plugins only through these, so a change to the contract fails to compile instead
/// of failing to load. Both versions are linked; a component may implement either.
pub mod bindings {
    // The host's imports, and the linker glue of the interface of shared types.
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        interfaces: "import sluice:plugin/host@0.1.0; import sluice:plugin/types@0.1.0;",
    });

    /// `sluice:plugin/types` as both worlds' bindings see it: records and errors are the
    /// SDK's own types, which implement the component-model traits (its `host` feature),
    /// so records cross straight into the host's `Record` with no intermediate copy. The
    /// generated assertions on each type's size and alignment hold them to the WIT.
    pub mod types {
        pub use super::sluice::plugin::types::{
            Host, HostWithStore, add_to_linker, add_to_linker_instance,
        };
        pub use sluice_plugin_sdk::{
            Attribute, Origin, PluginError, Record as LogRecord, Route, Value,
        };
        pub type PackedBatch = Vec<u8>;
    }

    /// The `transform` world (0.1.0): typed records.
    pub mod typed {
        wasmtime::component::bindgen!({
            world: "transform",
            path: "../wit/0.1.0",
            with: {
                "sluice:plugin/types": crate::plugin::bindings::types,
                "sluice:plugin/host": crate::plugin::bindings::sluice::plugin::host,
            },
        });
    }

    /// The `transform-packed` world (0.1.0): one byte string each way.
    pub mod packed {
        wasmtime::component::bindgen!({
            world: "transform-packed",
            path: "../wit/0.1.0",
            with: {
                "sluice:plugin/types": crate::plugin::bindings::types,
                "sluice:plugin/host": crate::plugin::bindings::sluice::plugin::host,
            },
        });
    }

    /// `sluice:plugin@0.2.0`: the worlds of 0.1.0 plus the `state` exports. Its types are
    /// the same SDK types as 0.1.0's (the WIT of `types` did not change).
    pub mod v2 {
        wasmtime::component::bindgen!({
            path: "../wit/0.2.0",
            interfaces: "import sluice:plugin/host@0.2.0; import sluice:plugin/types@0.2.0;",
        });

        /// As [`super::types`], for the 0.2.0 package.
        pub mod types {
            pub use super::sluice::plugin::types::{
                Host, HostWithStore, add_to_linker, add_to_linker_instance,
            };
            pub use sluice_plugin_sdk::{
                Attribute, Origin, PluginError, Record as LogRecord, Route, Value,
            };
            pub type PackedBatch = Vec<u8>;
        }

        /// The `transform` world (0.2.0).
        pub mod typed {
            wasmtime::component::bindgen!({
                world: "transform",
                path: "../wit/0.2.0",
                with: {
                    "sluice:plugin/types": crate::plugin::bindings::v2::types,
                    "sluice:plugin/host": crate::plugin::bindings::v2::sluice::plugin::host,
                },
            });
        }

        /// The `transform-packed` world (0.2.0).
        pub mod packed {
            wasmtime::component::bindgen!({
                world: "transform-packed",
                path: "../wit/0.2.0",
                with: {
                    "sluice:plugin/types": crate::plugin::bindings::v2::types,
                    "sluice:plugin/host": crate::plugin::bindings::v2::sluice::plugin::host,
                },
            });
        }
    }
}

/// Why a plugin could not be loaded. Fails start-up (or a reload) naming the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{name}`: cannot read {path}: {source}")]
    Read {
        name: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "plugin `{name}`: {path} is not a valid WebAssembly component: {message}. Build plugins for the wasm32-wasip2 target (dev/build-plugins)."
    )]
    Compile {
        name: String,
        path: std::path::PathBuf,
        message: String,
    },
    #[error(
        "plugin `{name}`: {path} does not implement the sluice:plugin/transform world (contract {contract}, or 0.1.0): {message}"
    )]
    Contract {
        name: String,
        path: std::path::PathBuf,
        contract: &'static str,
        message: String,
    },
    #[error(
        "plugin `{name}`: init failed: {message}. Check the [plugins.config] table of this plugin."
    )]
    Init { name: String, message: String },
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

/// Why one call into a plugin failed. The call's input goes to the dead-letter route with
/// this as the reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CallFailure {
    #[error("plugin `{plugin}` timed out after {timeout_ms} ms")]
    Timeout { plugin: String, timeout_ms: u64 },
    #[error("plugin `{plugin}` ran out of memory (limit {limit_mb} MiB)")]
    OutOfMemory { plugin: String, limit_mb: u64 },
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin `{plugin}` returned an error: {message}")]
    Error { plugin: String, message: String },
    #[error("plugin `{plugin}` emitted {emitted} records from {input}, above its limit of {limit}")]
    TooManyOutputs {
        plugin: String,
        emitted: usize,
        input: usize,
        limit: usize,
    },
    #[error("plugin `{plugin}` could not be restarted: {message}")]
    Unavailable { plugin: String, message: String },
    #[error(
        "plugin `{plugin}`: its state for {topic}/{partition} is {bytes} bytes, above the limit of {limit_mb} MiB; raise `pipeline.max_state_mb`, or configure the plugin to keep less"
    )]
    StateTooLarge {
        plugin: String,
        topic: String,
        partition: i32,
        bytes: usize,
        limit_mb: u64,
    },
}

impl CallFailure {
    /// The plugin that failed.
    pub fn plugin(&self) -> &str {
        match self {
            CallFailure::Timeout { plugin, .. }
            | CallFailure::OutOfMemory { plugin, .. }
            | CallFailure::Trap { plugin, .. }
            | CallFailure::Error { plugin, .. }
            | CallFailure::TooManyOutputs { plugin, .. }
            | CallFailure::Unavailable { plugin, .. }
            | CallFailure::StateTooLarge { plugin, .. } => plugin,
        }
    }

    /// A short kind label for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Timeout { .. } => "timeout",
            CallFailure::OutOfMemory { .. } => "out_of_memory",
            CallFailure::Trap { .. } => "trap",
            CallFailure::Error { .. } => "error",
            CallFailure::TooManyOutputs { .. } => "too_many_outputs",
            CallFailure::Unavailable { .. } => "unavailable",
            CallFailure::StateTooLarge { .. } => "state_too_large",
        }
    }
}
