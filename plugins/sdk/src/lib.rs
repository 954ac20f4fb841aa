//! # Sluice plugin SDK
//!
//! A plugin is a plain Rust type that implements [`Plugin`], plus one line:
//!
//! ```ignore
//! use sluice_plugin_sdk::{Plugin, PluginError, Record, Config};
//!
//! struct Upper;
//! impl Plugin for Upper {
//!     fn init(_config: &Config) -> Result<Self, PluginError> { Ok(Upper) }
//!     fn process(&mut self, batch: Vec<Record>, out: &mut Vec<Record>) -> Result<(), PluginError> {
//!         for mut record in batch {
//!             record.body = record.body.to_uppercase();
//!             out.push(record);
//!         }
//!         Ok(())
//!     }
//! }
//! sluice_plugin_sdk::export_plugin!(Upper);
//! ```
//!
//! Built for `wasm32-wasip2`, the crate becomes a component implementing the
//! `sluice:plugin/transform-packed` world: batches cross the boundary packed into one byte
//! string each way ([`packed`]), which is several times cheaper than typed records. Built natively, the same type runs in unit tests and in
//! the host's native benchmark through [`native::NativePlugin`].

mod record;
mod view;

#[cfg(feature = "host")]
use wasmtime::component::{ComponentType, Lift, Lower};

pub mod host;
pub mod native;
pub mod packed;
pub mod state;

pub use record::{Attribute, Origin, Record, Route, RouteRef, Value, ValueRef, severity};
pub use state::{Partitions, SourcePartition, Stateful};
pub use view::{AttributeRef, BatchView, OriginRef, Output, RecordHead, RecordView, RecordWriter};

/// The version of the WIT contract (`sluice:plugin@…`) this SDK implements.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A failure of a whole call. The host dead-letters every record of the call's input with
/// the message. To reject a single record, emit it with [`Record::dead_letter`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct PluginError {
    pub message: String,
}

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// The plugin's own configuration: the `config` table of its entry in the host config,
/// as JSON.
#[derive(Debug, Clone)]
pub struct Config {
    json: String,
}

impl Config {
    pub fn from_json(json: impl Into<String>) -> Self {
        Config { json: json.into() }
    }

    /// The raw JSON text.
    pub fn as_json(&self) -> &str {
        &self.json
    }

    /// Deserialize into the plugin's config type. Use `#[serde(deny_unknown_fields)]` on it
    /// so a misspelt key fails at start-up, and `#[serde(default)]` for optional keys.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        let json = if self.json.trim().is_empty() {
            "{}"
        } else {
            &self.json
        };
        serde_json::from_str(json).map_err(|e| PluginError::new(format!("invalid config: {e}")))
    }
}

/// A transform plugin.
///
/// Calls are sequential on one instance: the plugin may keep any state in `self` between
/// calls. The host may recycle an instance (after a trap or timeout) and then calls `init`
/// again on a fresh one, so state in `self` is a cache; what must survive restarts and
/// move with its partition is kept per partition through [`Stateful`].
pub trait Plugin: Sized + 'static {
    /// Build the plugin from its config. An error here fails host start-up (or the reload).
    fn init(config: &Config) -> Result<Self, PluginError>;

    /// Process one batch, pushing every record to emit onto `out` (in order). A record not
    /// pushed is dropped. Records keep their input route (`cleaned`) unless you change it.
    fn process(&mut self, batch: Vec<Record>, out: &mut Vec<Record>) -> Result<(), PluginError>;

    /// Event time has reached `watermark` (ns since the epoch): emit whatever is complete.
    fn tick(&mut self, watermark: i64, out: &mut Vec<Record>) -> Result<(), PluginError> {
        let _ = (watermark, out);
        Ok(())
    }
}

/// A transform plugin that reads its batch in place: the fast path.
///
/// Where [`Plugin`] gets owned [`Record`]s, this gets a [`BatchView`] whose strings are
/// borrowed from the batch the host sent, and writes to an [`Output`]: a record forwarded
/// with [`Output::keep`] is copied as bytes, never decoded or encoded, and a rewritten one
/// is written field by field from borrowed parts with [`Output::record`]. The bundled
/// plugins run 1.6–1.9× faster in wasm this way than as [`Plugin`]s, which remains the
/// simpler choice when a plugin's own work dominates. Every [`Plugin`] is a
/// `PackedPlugin`; [`export_plugin!`] takes either.
///
/// The contract is [`Plugin`]'s: sequential calls on one instance, state is a cache.
pub trait PackedPlugin: Sized + 'static {
    /// Build the plugin from its config. An error here fails host start-up (or the reload).
    fn init(config: &Config) -> Result<Self, PluginError>;

    /// Process one batch, emitting every record to pass on to `out` (in order). A record
    /// not emitted is dropped.
    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError>;

    /// Event time has reached `watermark` (ns since the epoch): emit whatever is complete.
    fn tick(&mut self, watermark: i64, out: &mut Output) -> Result<(), PluginError> {
        let _ = (watermark, out);
        Ok(())
    }
}

impl<P: Plugin> PackedPlugin for P {
    fn init(config: &Config) -> Result<Self, PluginError> {
        <P as Plugin>::init(config)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut emitted = Vec::with_capacity(batch.len());
        Plugin::process(self, batch.to_records(), &mut emitted)?;
        emitted.iter().for_each(|r| out.push(r));
        Ok(())
    }

    fn tick(&mut self, watermark: i64, out: &mut Output) -> Result<(), PluginError> {
        let mut emitted = Vec::new();
        Plugin::tick(self, watermark, &mut emitted)?;
        emitted.iter().for_each(|r| out.push(r));
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

/// Export a [`Plugin`] or [`PackedPlugin`] type as the component's `transform-packed` world
/// (contract 0.2.0). `export_plugin!(MyPlugin, state)` exports a [`Stateful`] plugin's
/// state; without it the plugin keeps none (every snapshot is empty). Does nothing when
/// the crate is built natively, so one crate serves both.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin!($plugin, stateless);
    };
    ($plugin:ty, state) => {
        $crate::__export_plugin!($plugin, stateful);
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __export_plugin {
    ($plugin:ty, $state:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __sluice_plugin_export {
            use super::*;

            thread_local! {
                static INSTANCE: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct Guest;

            impl $crate::wasm::bindings::Guest for Guest {
                fn init(config: String) -> Result<(), $crate::wasm::bindings::PluginError> {
                    INSTANCE.with(|slot| $crate::wasm::init::<$plugin>(slot, config))
                }
                fn process(
                    batch: Vec<u8>,
                ) -> Result<Vec<u8>, $crate::wasm::bindings::PluginError> {
                    INSTANCE.with(|slot| $crate::wasm::process::<$plugin>(slot, batch))
                }
                fn tick(watermark: i64) -> Result<Vec<u8>, $crate::wasm::bindings::PluginError> {
                    INSTANCE.with(|slot| $crate::wasm::tick::<$plugin>(slot, watermark))
                }
            }

            impl $crate::wasm::bindings::exports::sluice::plugin::state::Guest for Guest {
                fn snapshot(
                    source: $crate::wasm::Source,
                ) -> Result<Option<Vec<u8>>, $crate::wasm::bindings::PluginError> {
                    INSTANCE.with(|slot| $crate::wasm::$state::snapshot::<$plugin>(slot, source))
                }
                fn restore(
                    source: $crate::wasm::Source,
                    state: Vec<u8>,
                ) -> Result<(), $crate::wasm::bindings::PluginError> {
                    INSTANCE.with(|slot| $crate::wasm::$state::restore::<$plugin>(slot, source, state))
                }
                fn release(source: $crate::wasm::Source) {
                    INSTANCE.with(|slot| $crate::wasm::$state::release::<$plugin>(slot, source))
                }
            }

            $crate::wasm::bindings::__export_transform_packed!(Guest with_types_in $crate::wasm::bindings);
        }
    };
}
