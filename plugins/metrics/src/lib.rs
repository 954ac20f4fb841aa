//! # metrics
//!
//! Observes the log stream and emits, per `service.name` and event-time tumbling window,
//! a metric record (count, errors, error rate, latency quantiles from a mergeable
//! DDSketch, throughput) on `Route::Metrics`, plus alert records on `Route::Alerts`
//! when a window's error rate or p99 latency spikes against the service's baseline.
//! Every input record passes through unchanged. Open windows are kept per source
//! partition and merged across partitions when they close; they and the baselines are
//! durable state (contract 0.2.0). See `README.md`.

pub mod detect;
pub mod hash;
pub mod records;
pub mod sketch;
pub mod window;

use detect::{Anomaly, DetectConfig, ServiceDetector, WindowStats};
use hash::FnvMap;
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    BatchView, Config as PluginConfig, Output, PackedPlugin, Partitions, PluginError, RecordView,
    SourcePartition, Stateful, host,
};
use std::collections::BTreeMap;
use window::{Accumulator, OVERFLOW_SERVICE, Windows, WindowsState};

const NS_PER_SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub window_seconds: u64,
    /// How far behind the host's event time a record may be and still count.
    pub allowed_lateness_seconds: u64,
    /// The latency sketch's relative accuracy.
    pub relative_accuracy: f64,
    pub max_sketch_bins: usize,
    /// Services tracked per window; more are counted as `_other`.
    pub max_services: usize,
    pub anomaly: DetectConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_seconds: 60,
            allowed_lateness_seconds: 30,
            relative_accuracy: 0.01,
            max_sketch_bins: 2048,
            max_services: 10_000,
            anomaly: DetectConfig::default(),
        }
    }
}

pub struct Metrics {
    cfg: Config,
    /// Window size, ns.
    size: i64,
    partitions: Partitions<PartitionWindows>,
    lateness: i64,
    /// Highest event time reported by the host's `tick`: the least advanced of the
    /// source partitions it owns, where a partition that is behind its log holds event
    /// time back (`i64::MAX` at end of input). The plugin cannot judge this from the
    /// records alone — it never sees a partition whose messages are still in the log.
    ticked: i64,
    /// Baselines per service, learnt from the windows merged over every partition.
    detectors: FnvMap<String, ServiceDetector>,
}

/// The open windows of one source partition.
struct PartitionWindows {
    windows: Windows,
    /// Highest origin offset read; -1 before any.
    offset: i64,
    /// After a restore, records up to this offset are already counted in the restored
    /// windows (the host replays from its committed offset): they are not counted again.
    replay_until: i64,
}

/// One partition's state, as stored: its open windows, how far it has read, and the
/// services' baselines (learnt over every partition; each partition carries them, so
/// wherever a partition goes its services' baselines go too).
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub window_seconds: u64,
    pub offset: i64,
    pub windows: WindowsState,
    pub baselines: Vec<(String, ServiceDetector)>,
}

#[derive(Default)]
struct Counts {
    observed: u64,
    late_dropped: u64,
    no_timestamp: u64,
    windows_closed: u64,
    alerts: u64,
    /// Records read again after a restore, already counted in the restored windows.
    replayed: u64,
}

impl Counts {
    fn flush(&self) {
        host::counter_add("observed", self.observed);
        host::counter_add("late_dropped", self.late_dropped);
        host::counter_add("no_timestamp", self.no_timestamp);
        host::counter_add("windows_closed", self.windows_closed);
        host::counter_add("alerts", self.alerts);
        host::counter_add("replayed", self.replayed);
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX)
        .saturating_mul(NS_PER_SEC)
}

impl Metrics {
    pub fn new(cfg: Config) -> Result<Self, PluginError> {
        if cfg.window_seconds == 0 {
            return Err(PluginError::new(
                "invalid config: window_seconds must be positive",
            ));
        }
        if !(cfg.relative_accuracy > 0.0 && cfg.relative_accuracy < 1.0) {
            return Err(PluginError::new(
                "invalid config: relative_accuracy must be in (0, 1)",
            ));
        }
        Ok(Metrics {
            size: secs(cfg.window_seconds),
            partitions: Partitions::default(),
            lateness: secs(cfg.allowed_lateness_seconds),
            ticked: i64::MIN,
            detectors: FnvMap::default(),
            cfg,
        })
    }

    /// Windows ending at or before the watermark are complete: the host's event time
    /// less the allowed lateness.
    pub fn watermark(&self) -> i64 {
        self.ticked.saturating_sub(self.lateness)
    }

    /// Windows open in any partition (each start counted once).
    pub fn open_windows(&self) -> usize {
        let mut starts: Vec<i64> = self
            .partitions
            .iter()
            .flat_map(|(_, p)| p.windows.starts())
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts.len()
    }

    /// Count `record` in its partition's window, unless it was counted before a restore
    /// or the watermark has passed its window.
    fn observe(&mut self, record: &RecordView<'_>, counts: &mut Counts) {
        let t = record.timestamp;
        let start = t - t.rem_euclid(self.size);
        let watermark = self.watermark();
        let origin = record.origin;
        let (size, alpha, bins) = (
            self.size,
            self.cfg.relative_accuracy,
            self.cfg.max_sketch_bins,
        );
        let max_services = self.cfg.max_services.max(1);
        let part = self
            .partitions
            .get_or_insert_with(origin.topic, origin.partition, || PartitionWindows {
                windows: Windows::new(size, alpha, bins, max_services),
                offset: -1,
                replay_until: -1,
            });
        if origin.offset <= part.replay_until {
            counts.replayed += 1;
            return;
        }
        part.offset = part.offset.max(origin.offset);
        // A metric carries its window's start as `timestamp`, where 0 means "no event
        // time": the epoch's first window (a zeroed clock, not an event) is untimed too.
        if t <= 0 || start <= 0 {
            counts.no_timestamp += 1;
            return;
        }
        if start.saturating_add(size) <= watermark {
            // Its window is closed (or closing): metrics do not change after the fact.
            counts.late_dropped += 1;
            return;
        }
        counts.observed += 1;
        let o = window::observe(record);
        part.windows.add(start, &o, origin);
    }

    /// Take every window the watermark has passed out of every partition, each service's
    /// windows of one start merged over the partitions; oldest first, services by name.
    fn close_merged(&mut self) -> Vec<(i64, Vec<(String, Accumulator)>)> {
        let watermark = self.watermark();
        let max_services = self.cfg.max_services.max(1);
        let mut closing: BTreeMap<i64, FnvMap<String, Accumulator>> = BTreeMap::new();
        for (_, part) in self.partitions.iter_mut() {
            for (start, services) in part.windows.close_until(watermark) {
                let merged = closing.entry(start).or_default();
                for (service, acc) in services {
                    let name = match merged.contains_key(&service) || merged.len() < max_services {
                        true => service,
                        false => OVERFLOW_SERVICE.to_owned(),
                    };
                    match merged.get_mut(&name) {
                        Some(into) => into.merge(acc),
                        None => {
                            merged.insert(name, acc);
                        }
                    }
                }
            }
        }
        closing
            .into_iter()
            .map(|(start, services)| {
                let mut services: Vec<_> = services.into_iter().collect();
                services.sort_by(|a, b| a.0.cmp(&b.0));
                (start, services)
            })
            .collect()
    }

    /// Emit metric and alert records for every window the watermark has passed.
    fn close(&mut self, out: &mut Output, counts: &mut Counts) {
        let mut alerts = Vec::new();
        let mut anomalies: Vec<Anomaly> = Vec::new();
        let size = self.size;
        for (start, services) in self.close_merged() {
            for (service, acc) in services {
                counts.windows_closed += 1;
                out.push(&records::metric(&service, start, size, &acc));
                if !self.cfg.anomaly.enabled {
                    continue;
                }
                let stats = WindowStats {
                    count: acc.count,
                    errors: acc.errors,
                    latency: &acc.sketch,
                };
                anomalies.clear();
                self.detectors.entry(service.clone()).or_default().observe(
                    &self.cfg.anomaly,
                    stats,
                    &mut anomalies,
                );
                for a in &anomalies {
                    alerts.push(records::alert(&service, start, size, &acc, a));
                }
            }
        }
        counts.alerts += alerts.len() as u64;
        alerts.iter().for_each(|a| out.push(a));
    }
}

// Metrics only reads records: it takes them in place and forwards every one as bytes.
impl PackedPlugin for Metrics {
    fn init(config: &PluginConfig) -> Result<Self, PluginError> {
        Metrics::new(config.parse()?)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut counts = Counts::default();
        for record in batch.iter() {
            if record.is_cleaned() {
                self.observe(&record, &mut counts);
            }
            out.keep(&record);
        }
        self.close(out, &mut counts);
        counts.flush();
        Ok(())
    }

    fn tick(&mut self, watermark: i64, out: &mut Output) -> Result<(), PluginError> {
        self.ticked = self.ticked.max(watermark);
        let mut counts = Counts::default();
        self.close(out, &mut counts);
        counts.flush();
        Ok(())
    }
}

impl Stateful for Metrics {
    type State = State;

    fn snapshot(&self, source: &SourcePartition) -> Option<State> {
        let part = self.partitions.get(source)?;
        if part.windows.open_windows() == 0 && self.detectors.is_empty() {
            return None;
        }
        let mut baselines: Vec<(String, ServiceDetector)> = self
            .detectors
            .iter()
            .map(|(name, d)| (name.clone(), d.clone()))
            .collect();
        baselines.sort_by(|a, b| a.0.cmp(&b.0));
        Some(State {
            window_seconds: self.cfg.window_seconds,
            offset: part.offset,
            windows: part.windows.to_state(),
            baselines,
        })
    }

    fn restore(&mut self, source: &SourcePartition, state: State) -> Result<(), PluginError> {
        if state.window_seconds != self.cfg.window_seconds {
            return Err(PluginError::new(format!(
                "the state of {source} has {} s windows, this config {} s",
                state.window_seconds, self.cfg.window_seconds
            )));
        }
        let mut windows = Windows::new(
            self.size,
            self.cfg.relative_accuracy,
            self.cfg.max_sketch_bins,
            self.cfg.max_services.max(1),
        );
        windows
            .restore(state.windows, source)
            .map_err(|e| PluginError::new(format!("the state of {source}: {e}")))?;
        let part = PartitionWindows {
            windows,
            offset: state.offset,
            replay_until: state.offset,
        };
        self.partitions.insert(source.clone(), part);
        // Every partition carries every service's baselines: keep the most learnt.
        for (name, restored) in state.baselines {
            let kept = self.detectors.entry(name).or_default();
            if restored.error_rate.windows > kept.error_rate.windows {
                *kept = restored;
            }
        }
        Ok(())
    }

    fn release(&mut self, source: &SourcePartition) {
        self.partitions.remove(source);
    }
}

sluice_plugin_sdk::export_plugin!(Metrics, state);
