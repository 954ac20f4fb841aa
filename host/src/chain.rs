//! The plugin chain: stages in order; `cleaned` records flow on, every other route leaves
//! the chain for the sinks; a failing stage dead-letters its input and the rest continues.

use crate::Record;
use crate::Route;
use crate::batch::{Batch, PackedBatch};
use crate::config::OnFailure;
use crate::plugin::{CallFailure, WasmStage};
use std::time::{Duration, Instant};

/// One step of the chain. Implemented by wasm plugins and, for tests and benchmarks, by
/// plugin logic compiled natively.
pub trait Stage: Send {
    fn name(&self) -> &str;
    /// What to do with the input when a call fails.
    fn on_failure(&self) -> OnFailure {
        OnFailure::DeadLetter
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, CallFailure>;
    fn tick(&mut self, watermark: i64) -> Result<Batch, CallFailure>;
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        &self.plugin().name
    }
    fn on_failure(&self) -> OnFailure {
        self.plugin().on_failure
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, CallFailure> {
        WasmStage::process_batch(self, batch)
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, CallFailure> {
        WasmStage::tick_batch(self, watermark)
    }
}

/// A stage taken out of service (its plugin file was removed): records pass unchanged.
pub struct Bypass {
    pub name: String,
}

impl Stage for Bypass {
    fn name(&self) -> &str {
        &self.name
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, CallFailure> {
        Ok(Batch::Records(batch.records().into_owned()))
    }
    fn tick(&mut self, _watermark: i64) -> Result<Batch, CallFailure> {
        Ok(Batch::Records(Vec::new()))
    }
}

/// A plugin's logic compiled into the host: the same calls on the same packed batches as
/// its wasm build, no sandbox.
pub struct NativeStage<P: sluice_plugin_sdk::PackedPlugin + Send> {
    name: String,
    plugin: sluice_plugin_sdk::native::NativePlugin<P>,
}

impl<P: sluice_plugin_sdk::PackedPlugin + Send> NativeStage<P> {
    pub fn new(name: &str, config_json: &str) -> Result<Self, sluice_plugin_sdk::PluginError> {
        Ok(NativeStage {
            name: name.to_owned(),
            plugin: sluice_plugin_sdk::native::NativePlugin::new(config_json)?,
        })
    }

    fn output(
        &self,
        result: Result<Vec<u8>, sluice_plugin_sdk::PluginError>,
    ) -> Result<Batch, CallFailure> {
        let error = |message: String| CallFailure::Error {
            plugin: self.name.clone(),
            message,
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
    fn process(&mut self, batch: &Batch) -> Result<Batch, CallFailure> {
        // SAFETY: a batch holds records (Rust strings) or bytes that passed `packed::scan`
        // (`PackedBatch::new`): every string in it is UTF-8.
        let result = unsafe { self.plugin.process_from_host(&batch.packed()) };
        self.output(result)
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, CallFailure> {
        let result = self.plugin.tick_packed(watermark);
        self.output(result)
    }
}

/// What came out of the chain for one batch (or tick).
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records that left the chain on a route other than `cleaned` (`dlq` excluded).
    pub routed: Vec<Record>,
    /// What came out of the last stage, all on the `cleaned` route: kept as the stages
    /// passed it on, packed as a rule, so the sinks can read it in place.
    pub cleaned: Vec<Batch>,
    /// Records to dead-letter, with the reason.
    pub dead: Vec<(Record, String)>,
    /// Stage failures, for health and counters.
    pub failures: Vec<CallFailure>,
    /// Stages that completed a call, for health.
    pub succeeded: Vec<String>,
}

impl ChainOutput {
    /// Every record for the sinks, `cleaned` ones decoded: those that left the chain
    /// early, then those that went through it.
    pub fn records(&self) -> Vec<Record> {
        let mut records = self.routed.clone();
        for batch in &self.cleaned {
            records.extend(batch.records().iter().cloned());
        }
        records
    }
}

/// Event time as one stage has seen it, per source partition: partitions are consumed at
/// different speeds, so event time has reached only the *least* advanced of them. A
/// partition quiet for `idle_after` no longer holds the others back (Flink's idle sources).
#[derive(Debug, Clone, Default)]
struct Clock {
    /// (topic, partition, highest event time, when it last had input)
    partitions: Vec<(String, i32, i64, Instant)>,
}

impl Clock {
    fn observe(&mut self, batch: &Batch, now: Instant) {
        batch.for_each_origin(|topic, partition, timestamp| {
            match self
                .partitions
                .iter_mut()
                .find(|(t, p, _, _)| *p == partition && t == topic)
            {
                Some(entry) => {
                    entry.2 = entry.2.max(timestamp);
                    entry.3 = now;
                }
                None => self
                    .partitions
                    .push((topic.to_owned(), partition, timestamp, now)),
            }
        });
    }

    /// The watermark to tick with, or `None` before any input.
    fn watermark(&self, idle_after: Duration, now: Instant) -> Option<i64> {
        let active = self
            .partitions
            .iter()
            .filter(|(_, _, _, seen)| now.duration_since(*seen) < idle_after)
            .map(|&(_, _, t, _)| t)
            .min();
        if active.is_some() {
            return active;
        }
        // Every partition is quiet: let event time follow the wall clock so windows close.
        let (max, last_seen) = self
            .partitions
            .iter()
            .map(|&(_, _, t, seen)| (t, seen))
            .max_by_key(|&(t, _)| t)?;
        let idle = now
            .duration_since(last_seen)
            .as_nanos()
            .min(i64::MAX as u128) as i64;
        Some(max.saturating_add(idle))
    }
}

pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    clocks: Vec<Clock>,
    idle_after: Duration,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Stage>>, idle_after: Duration) -> Chain {
        let clocks = vec![Clock::default(); stages.len()];
        Chain {
            stages,
            clocks,
            idle_after,
        }
    }

    /// Swap the stage at `index` (between batches); its event-time clock is kept.
    pub fn replace(&mut self, index: usize, stage: Box<dyn Stage>) {
        if let Some(slot) = self.stages.get_mut(index) {
            *slot = stage;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Run a batch through every stage.
    pub fn process(&mut self, batch: Batch, out: &mut ChainOutput) {
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
                match self.clocks[index].watermark(self.idle_after, Instant::now()) {
                    Some(watermark) => watermark,
                    None => continue,
                }
            };
            match self.stages[index].tick(watermark) {
                Ok(emitted) => {
                    out.succeeded.push(self.stages[index].name().to_owned());
                    let next = split(emitted, self.stages[index].name(), out);
                    self.run_from(index + 1, next, out);
                }
                Err(failure) => out.failures.push(failure),
            }
        }
    }

    fn run_from(&mut self, start: usize, mut current: Batch, out: &mut ChainOutput) {
        for index in start..self.stages.len() {
            if current.is_empty() {
                return;
            }
            self.clocks[index].observe(&current, Instant::now());
            let stage = &mut self.stages[index];
            match stage.process(&current) {
                Ok(emitted) => {
                    out.succeeded.push(stage.name().to_owned());
                    current = split(emitted, stage.name(), out)
                }
                Err(failure) => {
                    let pass_through = stage.on_failure() == OnFailure::PassThrough;
                    out.failures.push(failure);
                    if pass_through {
                        continue;
                    }
                    let reason = out
                        .failures
                        .last()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    out.dead.extend(
                        current
                            .into_records()
                            .into_iter()
                            .map(|r| (r, reason.clone())),
                    );
                    return;
                }
            }
        }
        if !current.is_empty() {
            out.cleaned.push(current);
        }
    }
}

/// Keep `cleaned` records for the next stage; move the rest to the output.
fn split(emitted: Batch, stage: &str, out: &mut ChainOutput) -> Batch {
    let (next, leaving) = emitted.split_cleaned();
    for record in leaving {
        match &record.route {
            Route::Dlq(reason) => {
                let reason = format!("plugin `{stage}`: {reason}");
                out.dead.push((record, reason));
            }
            _ => out.routed.push(record),
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    fn at(partition: i32, timestamp: i64) -> Record {
        let mut r = Record::new(Origin {
            topic: "t".into(),
            partition,
            offset: 0,
        });
        r.timestamp = timestamp;
        r
    }

    #[test]
    fn watermark_is_the_least_advanced_active_partition() {
        let idle = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut clock = Clock::default();
        assert_eq!(clock.watermark(idle, t0), None);
        clock.observe(
            &Batch::Records(vec![at(0, 5_000), at(1, 100), at(0, 7_000)]),
            t0,
        );
        assert_eq!(clock.watermark(idle, t0), Some(100));
        // Partition 1 goes quiet; partition 0 keeps going and no longer waits for it.
        clock.observe(
            &Batch::Records(vec![at(0, 9_000)]),
            t0 + Duration::from_secs(11),
        );
        assert_eq!(
            clock.watermark(idle, t0 + Duration::from_secs(12)),
            Some(9_000)
        );
        // Everything quiet: event time follows the wall clock from the newest record.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(clock.watermark(idle, later), Some(9_000 + 19_000_000_000));
    }
}
