//! Running plugin logic natively, without wasm: for unit tests and for the host's native
//! benchmark variant.

use crate::host::Level;
use crate::{Config, Plugin, PluginError, Record};
#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;
use std::collections::BTreeMap;

/// One log line a plugin wrote: level, message, fields.
pub type LogLine = (Level, String, Vec<(String, String)>);

/// What plugins on this thread logged and counted (native builds only).
#[derive(Debug, Default)]
pub struct Recorded {
    pub logs: Vec<LogLine>,
    pub counters: BTreeMap<String, u64>,
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    pub(crate) static RECORDER: RefCell<Recorded> = RefCell::new(Recorded::default());
}

/// Take (and reset) what plugins on this thread logged and counted.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_recorded() -> Recorded {
    RECORDER.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// A plugin instance driven directly, with the same call sequence the host uses.
pub struct NativePlugin<P: Plugin> {
    plugin: P,
}

impl<P: Plugin> NativePlugin<P> {
    /// Initialise from the plugin's config as JSON text.
    pub fn new(config_json: &str) -> Result<Self, PluginError> {
        Ok(NativePlugin {
            plugin: P::init(&Config::from_json(config_json))?,
        })
    }

    pub fn process(&mut self, batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let mut out = Vec::with_capacity(batch.len());
        self.plugin.process(batch, &mut out)?;
        Ok(out)
    }

    pub fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, PluginError> {
        let mut out = Vec::new();
        self.plugin.tick(watermark, &mut out)?;
        Ok(out)
    }

    /// The plugin itself, for tests that inspect its state.
    pub fn inner(&self) -> &P {
        &self.plugin
    }
}
