//! Plugins as chain stages: a wasm component ([`WasmStage`]) or, for tests and benchmarks,
//! a bundled plugin's logic compiled into the host ([`NativeStage`]).

use super::{CallFailure, WasmStage};
use crate::batch::{Batch, PackedBatch};
use crate::chain::{Stage, StageError};
use crate::config::{OnFailure, Role};

impl From<CallFailure> for StageError {
    fn from(failure: CallFailure) -> Self {
        StageError {
            stage: failure.plugin().to_owned(),
            reason: failure.to_string(),
        }
    }
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        &self.plugin().name
    }
    fn on_failure(&self) -> OnFailure {
        self.plugin().on_failure
    }
    fn role(&self) -> Option<Role> {
        self.plugin().role
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
        Ok(self.process_batch(batch)?)
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, StageError> {
        Ok(self.tick_batch(watermark)?)
    }
    fn keeps_state(&self) -> bool {
        WasmStage::keeps_state(self)
    }
    fn snapshot(&mut self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>, StageError> {
        Ok(WasmStage::snapshot(self, topic, partition)?)
    }
    fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        resume_at: i64,
        state: &[u8],
    ) -> Result<(), StageError> {
        Ok(WasmStage::restore(
            self, topic, partition, resume_at, state,
        )?)
    }
    fn release(&mut self, topic: &str, partition: i32) -> Result<(), StageError> {
        Ok(WasmStage::release(self, topic, partition)?)
    }
    fn another_instance(&self) -> Option<Box<dyn Stage>> {
        Some(Box::new(self.fresh()))
    }
}

/// A plugin's logic compiled into the host: the same calls on the same packed batches as
/// its wasm build, no sandbox.
pub struct NativeStage<P: sluice_plugin_sdk::PackedPlugin + Send> {
    name: String,
    role: Option<Role>,
    plugin: sluice_plugin_sdk::native::NativePlugin<P>,
}

impl<P: sluice_plugin_sdk::PackedPlugin + Send> NativeStage<P> {
    pub fn new(name: &str, config_json: &str) -> Result<Self, sluice_plugin_sdk::PluginError> {
        Ok(NativeStage {
            name: name.to_owned(),
            role: None,
            plugin: sluice_plugin_sdk::native::NativePlugin::new(config_json)?,
        })
    }

    /// The same stage, with the role declared for it.
    pub fn with_role(mut self, role: Option<Role>) -> Self {
        self.role = role;
        self
    }

    fn output(
        &self,
        result: Result<Vec<u8>, sluice_plugin_sdk::PluginError>,
    ) -> Result<Batch, StageError> {
        let error = |message: String| -> StageError {
            CallFailure::Error {
                plugin: self.name.clone(),
                message,
            }
            .into()
        };
        let bytes = result.map_err(|e| error(e.message))?;
        PackedBatch::new(bytes)
            .map(Batch::Packed)
            .map_err(|e| error(e.to_string()))
    }
}

impl<P: sluice_plugin_sdk::PackedPlugin + Send> Stage for NativeStage<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn role(&self) -> Option<Role> {
        self.role
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
        // SAFETY: a batch holds records (Rust strings) or bytes that passed `packed::scan`
        // (`PackedBatch::new`): every string in it is UTF-8.
        let result = unsafe { self.plugin.process_from_host(&batch.packed()) };
        self.output(result)
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, StageError> {
        let result = self.plugin.tick_packed(watermark);
        self.output(result)
    }
}
