//! Running plugin logic natively, without wasm: for unit tests and for the host's native
//! benchmark variant.

use crate::host::Level;
use crate::{
    BatchView, Config, Output, PackedPlugin, PluginError, Record, SourcePartition, Stateful, packed,
};
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

/// A plugin instance driven directly, with the same calls and the same packed batches the
/// host's wasm calls use: a record makes the same round trip natively as in wasm.
pub struct NativePlugin<P: PackedPlugin> {
    plugin: P,
}

impl<P: PackedPlugin> NativePlugin<P> {
    /// Initialise from the plugin's config as JSON text.
    pub fn new(config_json: &str) -> Result<Self, PluginError> {
        Ok(NativePlugin {
            plugin: P::init(&Config::from_json(config_json))?,
        })
    }

    pub fn process(&mut self, batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        let mut bytes = Vec::new();
        packed::encode(&batch, &mut bytes);
        decoded(self.process_packed(&bytes)?)
    }

    pub fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, PluginError> {
        decoded(self.tick_packed(watermark)?)
    }

    /// One call on a packed batch, as the host makes it.
    pub fn process_packed(&mut self, batch: &[u8]) -> Result<Vec<u8>, PluginError> {
        self.process_view(batch.len(), BatchView::new(batch))
    }

    /// [`NativePlugin::process_packed`] without checking the batch's strings for UTF-8
    /// again, as the wasm layer reads the host's batches.
    ///
    /// # Safety
    /// Every string in `batch` must be valid UTF-8: it was encoded from Rust strings, or
    /// has passed [`packed::scan`].
    pub unsafe fn process_from_host(&mut self, batch: &[u8]) -> Result<Vec<u8>, PluginError> {
        // SAFETY: passed on from the caller.
        self.process_view(batch.len(), unsafe { BatchView::trusting_utf8(batch) })
    }

    fn process_view(
        &mut self,
        size: usize,
        view: Result<BatchView<'_>, packed::PackedError>,
    ) -> Result<Vec<u8>, PluginError> {
        let view = view.map_err(|e| PluginError::new(format!("malformed input batch: {e}")))?;
        let mut out = Output::with_capacity(size);
        self.plugin.process(&view, &mut out)?;
        Ok(out.into_bytes())
    }

    /// One tick, its output packed, as the host makes it.
    pub fn tick_packed(&mut self, watermark: i64) -> Result<Vec<u8>, PluginError> {
        let mut out = Output::new();
        self.plugin.tick(watermark, &mut out)?;
        Ok(out.into_bytes())
    }

    /// The plugin itself, for tests that inspect its state.
    pub fn inner(&self) -> &P {
        &self.plugin
    }
}

/// The `state` calls, in the same bytes as the host gets and gives back in wasm: a test
/// can snapshot one instance and restore into a fresh one, as a restart or a rebalance
/// does.
impl<P: Stateful> NativePlugin<P> {
    pub fn snapshot(&self, source: &SourcePartition) -> Result<Option<Vec<u8>>, PluginError> {
        crate::state::snapshot(&self.plugin, source)
    }

    pub fn restore(&mut self, source: &SourcePartition, state: &[u8]) -> Result<(), PluginError> {
        crate::state::restore(&mut self.plugin, source, state)
    }

    pub fn release(&mut self, source: &SourcePartition) {
        self.plugin.release(source)
    }
}

fn decoded(bytes: Vec<u8>) -> Result<Vec<Record>, PluginError> {
    // Output only holds whole records the SDK encoded: a failure here is an SDK bug.
    packed::decode(&bytes).map_err(|e| PluginError::new(format!("malformed output batch: {e}")))
}
