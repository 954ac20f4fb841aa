//! The plugin chain: stages in order; `cleaned` records flow on, every other route leaves
//! the chain for the sinks; a failing stage dead-letters its input and the rest continues.

use crate::Record;
use crate::Route;
use crate::plugin::{CallFailure, WasmStage};
use std::time::{Duration, Instant};

/// One step of the chain. Implemented by wasm plugins and, for tests and benchmarks, by
/// plugin logic compiled natively.
pub trait Stage: Send {
    fn name(&self) -> &str;
    fn process(&mut self, batch: &[Record]) -> Result<Vec<Record>, CallFailure>;
    fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, CallFailure>;
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        &self.plugin().name
    }
    fn process(&mut self, batch: &[Record]) -> Result<Vec<Record>, CallFailure> {
        WasmStage::process(self, batch)
    }
    fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, CallFailure> {
        WasmStage::tick(self, watermark)
    }
}

/// A plugin's logic compiled into the host: same trait, no sandbox.
pub struct NativeStage<P: sluice_plugin_sdk::Plugin + Send> {
    name: String,
    plugin: sluice_plugin_sdk::native::NativePlugin<P>,
}

impl<P: sluice_plugin_sdk::Plugin + Send> NativeStage<P> {
    pub fn new(name: &str, config_json: &str) -> Result<Self, sluice_plugin_sdk::PluginError> {
        Ok(NativeStage {
            name: name.to_owned(),
            plugin: sluice_plugin_sdk::native::NativePlugin::new(config_json)?,
        })
    }
}

impl<P: sluice_plugin_sdk::Plugin + Send> Stage for NativeStage<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn process(&mut self, batch: &[Record]) -> Result<Vec<Record>, CallFailure> {
        self.plugin
            .process(batch.to_vec())
            .map_err(|e| CallFailure::Error {
                plugin: self.name.clone(),
                message: e.message,
            })
    }
    fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, CallFailure> {
        self.plugin.tick(watermark).map_err(|e| CallFailure::Error {
            plugin: self.name.clone(),
            message: e.message,
        })
    }
}

/// What came out of the chain for one batch (or tick).
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records for the sinks, each with its route (`dlq` excluded).
    pub routed: Vec<Record>,
    /// Records to dead-letter, with the reason.
    pub dead: Vec<(Record, String)>,
    /// Stage failures, for health and counters.
    pub failures: Vec<CallFailure>,
}

/// Event time as one stage has seen it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    max_event_time: i64,
    last_input: Instant,
}

pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    clocks: Vec<Clock>,
    idle_after: Duration,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Stage>>, idle_after: Duration) -> Chain {
        let clocks = vec![
            Clock {
                max_event_time: i64::MIN,
                last_input: Instant::now(),
            };
            stages.len()
        ];
        Chain {
            stages,
            clocks,
            idle_after,
        }
    }

    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Run a batch through every stage.
    pub fn process(&mut self, batch: Vec<Record>, out: &mut ChainOutput) {
        self.run_from(0, batch, out);
    }

    /// Tell every stage how far event time has come; what a stage emits runs through the
    /// stages after it. With `end_of_input`, the watermark is the end of time so every
    /// window closes.
    pub fn tick(&mut self, end_of_input: bool, out: &mut ChainOutput) {
        for index in 0..self.stages.len() {
            let watermark = if end_of_input {
                i64::MAX
            } else {
                let clock = self.clocks[index];
                if clock.max_event_time == i64::MIN {
                    continue;
                }
                // On a quiet input, let event time follow the wall clock so windows close.
                let idle = clock.last_input.elapsed();
                if idle >= self.idle_after {
                    clock
                        .max_event_time
                        .saturating_add(idle.as_nanos().min(i64::MAX as u128) as i64)
                } else {
                    clock.max_event_time
                }
            };
            match self.stages[index].tick(watermark) {
                Ok(emitted) => {
                    let next = split(emitted, self.stages[index].name(), out);
                    self.run_from(index + 1, next, out);
                }
                Err(failure) => out.failures.push(failure),
            }
        }
    }

    fn run_from(&mut self, start: usize, mut current: Vec<Record>, out: &mut ChainOutput) {
        for index in start..self.stages.len() {
            if current.is_empty() {
                return;
            }
            let clock = &mut self.clocks[index];
            clock.last_input = Instant::now();
            if let Some(max) = current.iter().map(|r| r.timestamp).max() {
                clock.max_event_time = clock.max_event_time.max(max);
            }
            let stage = &mut self.stages[index];
            match stage.process(&current) {
                Ok(emitted) => current = split(emitted, stage.name(), out),
                Err(failure) => {
                    let reason = failure.to_string();
                    out.dead
                        .extend(current.drain(..).map(|r| (r, reason.clone())));
                    out.failures.push(failure);
                    return;
                }
            }
        }
        out.routed.append(&mut current);
    }
}

/// Keep `cleaned` records for the next stage; move the rest to the output.
fn split(emitted: Vec<Record>, stage: &str, out: &mut ChainOutput) -> Vec<Record> {
    let mut next = Vec::with_capacity(emitted.len());
    for record in emitted {
        match &record.route {
            Route::Cleaned => next.push(record),
            Route::Dlq(reason) => {
                let reason = format!("plugin `{stage}`: {reason}");
                out.dead.push((record, reason));
            }
            _ => out.routed.push(record),
        }
    }
    next
}
