//! The thin wasm layer: the `transform-packed` world's bindings (contract 0.2.0), each
//! call's batch read in place and its output written packed (see [`crate::BatchView`]),
//! and the `state` calls in bytes ([`crate::state`]).

use crate::{BatchView, Config, Output, PackedPlugin, PluginError};
use std::cell::RefCell;

pub mod bindings {
    wit_bindgen::generate!({
        world: "transform-packed",
        path: "../../wit/0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_transform_packed",
        default_bindings_module: "::sluice_plugin_sdk::wasm::bindings",
    });
    pub use sluice::plugin::types::*;
}

use bindings as b;

pub fn init<P: PackedPlugin>(
    slot: &RefCell<Option<P>>,
    config: String,
) -> Result<(), b::PluginError> {
    let plugin = P::init(&Config::from_json(config)).map_err(to_wit_error)?;
    *slot.borrow_mut() = Some(plugin);
    Ok(())
}

pub fn process<P: PackedPlugin>(
    slot: &RefCell<Option<P>>,
    batch: Vec<u8>,
) -> Result<Vec<u8>, b::PluginError> {
    let mut slot = slot.borrow_mut();
    let plugin = slot.as_mut().ok_or_else(not_initialised)?;
    // SAFETY: the host only sends batches it encoded from Rust strings or checked with
    // `packed::scan`; the contract requires UTF-8.
    let view = unsafe { BatchView::trusting_utf8(&batch) }.map_err(|e| b::PluginError {
        message: format!("the host sent a batch the SDK cannot read: {e}"),
    })?;
    // Most plugins emit about what they read.
    let mut out = Output::with_capacity(batch.len());
    plugin.process(&view, &mut out).map_err(to_wit_error)?;
    Ok(out.into_bytes())
}

pub fn tick<P: PackedPlugin>(
    slot: &RefCell<Option<P>>,
    watermark: i64,
) -> Result<Vec<u8>, b::PluginError> {
    let mut slot = slot.borrow_mut();
    let plugin = slot.as_mut().ok_or_else(not_initialised)?;
    let mut out = Output::new();
    plugin.tick(watermark, &mut out).map_err(to_wit_error)?;
    Ok(out.into_bytes())
}

/// The `state` interface's partition.
pub type Source = b::exports::sluice::plugin::state::SourcePartition;

fn source(s: Source) -> crate::SourcePartition {
    crate::SourcePartition::new(s.topic, s.partition)
}

/// The `state` calls of a [`crate::Stateful`] plugin.
pub mod stateful {
    use super::*;
    use crate::Stateful;

    pub fn snapshot<P: Stateful>(
        slot: &RefCell<Option<P>>,
        s: Source,
    ) -> Result<Option<Vec<u8>>, b::PluginError> {
        let slot = slot.borrow();
        let plugin = slot.as_ref().ok_or_else(not_initialised)?;
        crate::state::snapshot(plugin, &source(s)).map_err(to_wit_error)
    }

    pub fn restore<P: Stateful>(
        slot: &RefCell<Option<P>>,
        s: Source,
        state: Vec<u8>,
    ) -> Result<(), b::PluginError> {
        let mut slot = slot.borrow_mut();
        let plugin = slot.as_mut().ok_or_else(not_initialised)?;
        crate::state::restore(plugin, &source(s), &state).map_err(to_wit_error)
    }

    pub fn release<P: Stateful>(slot: &RefCell<Option<P>>, s: Source) {
        if let Some(plugin) = slot.borrow_mut().as_mut() {
            plugin.release(&source(s));
        }
    }
}

/// The `state` calls of a plugin that keeps no state: nothing to snapshot, and so never
/// anything to restore.
pub mod stateless {
    use super::*;

    pub fn snapshot<P: PackedPlugin>(
        _slot: &RefCell<Option<P>>,
        _source: Source,
    ) -> Result<Option<Vec<u8>>, b::PluginError> {
        Ok(None)
    }

    pub fn restore<P: PackedPlugin>(
        _slot: &RefCell<Option<P>>,
        s: Source,
        _state: Vec<u8>,
    ) -> Result<(), b::PluginError> {
        Err(b::PluginError {
            message: format!(
                "this plugin keeps no state; the state given for {} is ignored",
                source(s)
            ),
        })
    }

    pub fn release<P: PackedPlugin>(_slot: &RefCell<Option<P>>, _source: Source) {}
}

fn not_initialised() -> b::PluginError {
    b::PluginError {
        message: "plugin called before init".into(),
    }
}

fn to_wit_error(e: PluginError) -> b::PluginError {
    b::PluginError { message: e.message }
}
