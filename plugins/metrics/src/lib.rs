//! # metrics
//!
//! Observes the log stream and emits, per `service.name` and event-time tumbling window,
//! a metric record (count, errors, error rate, latency quantiles from a mergeable
//! DDSketch, throughput) on `Route::Metrics`, plus alert records on `Route::Alerts`
//! when a window's error rate or p99 latency spikes against the service's baseline.
//! Every input record passes through unchanged. See `README.md`.

pub mod detect;
pub mod hash;
pub mod records;
pub mod sketch;
pub mod window;

use detect::{Anomaly, DetectConfig, ServiceDetector, WindowStats};
use hash::FnvMap;
use serde::Deserialize;
use sluice_plugin_sdk::{
    BatchView, Config as PluginConfig, Output, PackedPlugin, PluginError, RecordView, host,
};
use window::Windows;

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
    windows: Windows,
    lateness: i64,
    /// Highest event time reported by the host's `tick`: the least advanced of the
    /// source partitions it owns, where a partition that is behind its log holds event
    /// time back (`i64::MAX` at end of input). The plugin cannot judge this from the
    /// records alone — it never sees a partition whose messages are still in the log.
    ticked: i64,
    detectors: FnvMap<String, ServiceDetector>,
}

#[derive(Default)]
struct Counts {
    observed: u64,
    late_dropped: u64,
    no_timestamp: u64,
    windows_closed: u64,
    alerts: u64,
}

impl Counts {
    fn flush(&self) {
        host::counter_add("observed", self.observed);
        host::counter_add("late_dropped", self.late_dropped);
        host::counter_add("no_timestamp", self.no_timestamp);
        host::counter_add("windows_closed", self.windows_closed);
        host::counter_add("alerts", self.alerts);
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
            windows: Windows::new(
                secs(cfg.window_seconds),
                cfg.relative_accuracy,
                cfg.max_sketch_bins,
                cfg.max_services.max(1),
            ),
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

    pub fn open_windows(&self) -> usize {
        self.windows.open_windows()
    }

    /// Count `record` unless the watermark has passed its window.
    fn observe(&mut self, record: &RecordView<'_>, counts: &mut Counts) {
        let t = record.timestamp;
        let start = self.windows.start_of(t);
        // A metric carries its window's start as `timestamp`, where 0 means "no event
        // time": the epoch's first window (a zeroed clock, not an event) is untimed too.
        if t <= 0 || start <= 0 {
            counts.no_timestamp += 1;
            return;
        }
        if start.saturating_add(self.windows.size) <= self.watermark() {
            // Its window is closed (or closing): metrics do not change after the fact.
            counts.late_dropped += 1;
            return;
        }
        counts.observed += 1;
        let o = window::observe(record);
        self.windows.add(start, &o, record.origin);
    }

    /// Emit metric and alert records for every window the watermark has passed.
    fn close(&mut self, out: &mut Output, counts: &mut Counts) {
        let mut alerts = Vec::new();
        let mut anomalies: Vec<Anomaly> = Vec::new();
        for (start, services) in self.windows.close_until(self.watermark()) {
            for (service, acc) in services {
                counts.windows_closed += 1;
                let size = self.windows.size;
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

sluice_plugin_sdk::export_plugin!(Metrics);
