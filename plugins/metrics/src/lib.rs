//! # metrics
//!
//! Observes the log stream and emits, per `service.name` and event-time tumbling window,
//! a metric record (count, errors, error rate, latency quantiles from a mergeable
//! DDSketch, throughput) on `Route::Metrics`, plus alert records on `Route::Alerts`
//! when a window's error rate or p99 latency spikes against the service's baseline.
//! Every input record passes through unchanged. Open windows are kept per source
//! partition and merged across partitions when they close; they and the baselines are
//! durable state (contract 0.2.0).
//!
//! On several hosts, `mode = "partial"` emits each host's shares of the windows instead
//! (see [`partial`]) and one `mode = "merge"` instance merges them before detection
//! (see [`merge`]). See `README.md`.

pub mod detect;
pub mod hash;
pub mod merge;
pub mod partial;
pub mod records;
pub mod sketch;
pub mod window;

use detect::{Anomaly, DetectConfig, ServiceDetector, WindowStats};
use hash::FnvMap;
use merge::{Merge, MergeState, Taken};
use partial::Partial;
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    BatchView, Config as PluginConfig, Origin, Output, PackedPlugin, Partitions, PluginError,
    RecordView, SourcePartition, Stateful, host,
};
use std::collections::BTreeMap;
use window::{Accumulator, OVERFLOW_SERVICE, Windows, WindowsState};

const NS_PER_SEC: i64 = 1_000_000_000;

/// What an instance computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Windows and alerts from the partitions this host reads (one host, or a service
    /// whose logs are keyed to one partition).
    #[default]
    Local,
    /// This host's shares of the windows and its partitions' marks, on the route
    /// `metric_partials`, for a merge stage; no detection.
    Partial,
    /// Read the partials of every host; emit each window merged over all of them, and
    /// the alerts on it.
    Merge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub window_seconds: u64,
    /// How far behind the host's event time a record may be and still count.
    pub allowed_lateness_seconds: u64,
    /// The latency sketch's relative accuracy.
    pub relative_accuracy: f64,
    pub max_sketch_bins: usize,
    /// Services tracked per window; more are counted as `_other`.
    pub max_services: usize,
    pub anomaly: DetectConfig,
    /// `merge`: a source partition whose mark is this far (event time) behind the most
    /// advanced one no longer holds windows back; its partials for windows merged
    /// meanwhile are counted `late_partials`.
    pub merge_wait_seconds: u64,
    /// `merge`: the source topic's partition count. Until each of them has marked a
    /// window (or `merge_wait_seconds` passed), the window waits; 0 = only the partitions
    /// heard from, so at a first start a partition whose first mark comes late misses
    /// the windows merged before it.
    pub source_partitions: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Local,
            window_seconds: 60,
            allowed_lateness_seconds: 30,
            relative_accuracy: 0.01,
            max_sketch_bins: 2048,
            max_services: 10_000,
            anomaly: DetectConfig::default(),
            merge_wait_seconds: 600,
            source_partitions: 0,
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
    /// `merge`: per partition of the partials topic, the partials held.
    merges: Partitions<Merge>,
}

/// The open windows of one source partition.
struct PartitionWindows {
    windows: Windows,
    /// Highest origin offset read; -1 before any.
    offset: i64,
    /// After a restore, records up to this offset are already counted in the restored
    /// windows (the host replays from its committed offset): they are not counted again.
    replay_until: i64,
    /// `partial`: the end of the last window this partition was marked complete to.
    marked_until: i64,
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
    /// `partial`: the partition's last mark.
    #[serde(default = "no_mark")]
    pub marked_until: i64,
    /// `merge`: the partials held for this partition of the partials topic.
    #[serde(default)]
    pub merge: Option<MergeState>,
}

fn no_mark() -> i64 {
    i64::MIN
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
    /// `merge`: partials of a window already merged.
    late_partials: u64,
}

impl Counts {
    fn flush(&self) {
        host::counter_add("observed", self.observed);
        host::counter_add("late_dropped", self.late_dropped);
        host::counter_add("no_timestamp", self.no_timestamp);
        host::counter_add("windows_closed", self.windows_closed);
        host::counter_add("alerts", self.alerts);
        host::counter_add("replayed", self.replayed);
        if self.late_partials > 0 {
            host::counter_add("late_partials", self.late_partials);
        }
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
            merges: Partitions::default(),
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
                marked_until: i64::MIN,
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

    /// Emit what the watermark has closed: metric and alert records, or (`partial`) the
    /// partitions' shares and marks.
    fn close(&mut self, out: &mut Output, counts: &mut Counts) {
        match self.cfg.mode {
            Mode::Local => {
                let closed = self.close_merged();
                self.emit(closed, out, counts);
            }
            Mode::Partial => self.close_partials(out, counts),
            Mode::Merge => self.close_complete(out, counts),
        }
    }

    /// Every partition's share of each window the watermark has passed, then a mark per
    /// partition whose marked end moved.
    fn close_partials(&mut self, out: &mut Output, counts: &mut Counts) {
        let (watermark, size) = (self.watermark(), self.size);
        // Before the first tick event time is unknown; at the end of input (a reload, a
        // stop without state) every window closes early, but event time has not come that
        // far: no mark then, so the merge waits for the partition's next owner.
        let mark = (self.ticked != i64::MIN && self.ticked != i64::MAX)
            .then(|| watermark - watermark.rem_euclid(size));
        for (source, part) in self.partitions.iter_mut() {
            for (start, services) in part.windows.close_until(watermark) {
                for (service, acc) in services {
                    counts.windows_closed += 1;
                    out.push(&partial::window(&service, start, size, &acc));
                }
            }
            if let Some(mark) = mark.filter(|&m| m > part.marked_until) {
                part.marked_until = mark;
                let origin = Origin {
                    topic: source.topic.clone(),
                    partition: source.partition,
                    offset: part.offset,
                };
                out.push(&partial::mark(origin, mark, size));
            }
        }
    }

    /// Read a partial or a mark into its partials partition's merge state.
    fn take_partial(&mut self, record: &RecordView<'_>, out: &mut Output, counts: &mut Counts) {
        let origin = record.origin;
        if origin.partition != 0 {
            // Marks and partials must meet in one log: partials spread over several
            // partitions would each wait for marks that went elsewhere, and the windows
            // would come out split when the wait runs out.
            let reason = format!(
                "a metrics partial read from partition {} of `{}`: the merge needs that topic \
                 to have one partition, where every mark and partial meets. Recreate it with \
                 one (`sluice topics ensure --config <the merge config> --partitions 1`)",
                origin.partition, origin.topic
            );
            out.push(&record.to_record().dead_letter(reason));
            return;
        }
        let read = partial::read(
            record,
            self.size,
            self.cfg.relative_accuracy,
            self.cfg.max_sketch_bins,
        );
        let merge =
            (self.merges).get_or_insert_with(origin.topic, origin.partition, Merge::default);
        match read {
            Err(reason) => out.push(&record.to_record().dead_letter(reason)),
            Ok(Partial::Mark {
                source,
                closed_until,
            }) => merge.take_mark(source, closed_until),
            Ok(Partial::Window {
                source,
                first_offset,
                service,
                start,
                acc,
            }) => {
                if merge.take_window((source, first_offset), service, start, self.size, acc)
                    == Taken::Late
                {
                    counts.late_partials += 1;
                }
            }
        }
    }

    /// Merge and emit every window each partials partition's marks have completed.
    fn close_complete(&mut self, out: &mut Output, counts: &mut Counts) {
        let (size, wait) = (self.size, secs(self.cfg.merge_wait_seconds));
        let expected = self.cfg.source_partitions;
        let max_services = self.cfg.max_services.max(1);
        let mut closed = Vec::new();
        for (_, merge) in self.merges.iter_mut() {
            if let Some(until) = merge.complete_until(wait, expected) {
                closed.extend(merge.close_until(until, size, max_services));
            }
        }
        // One partials partition per source topic; emit oldest first across topics.
        closed.sort_by_key(|(start, _)| *start);
        self.emit(closed, out, counts);
    }

    /// Metric records for closed windows, and the alerts their detection raises.
    fn emit(
        &mut self,
        closed: Vec<(i64, Vec<(String, Accumulator)>)>,
        out: &mut Output,
        counts: &mut Counts,
    ) {
        let mut alerts = Vec::new();
        let mut anomalies: Vec<Anomaly> = Vec::new();
        let size = self.size;
        for (start, services) in closed {
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
        if self.cfg.mode == Mode::Merge {
            // The partials are consumed here: only merged windows and alerts go on.
            for record in batch.iter() {
                self.take_partial(&record, out, &mut counts);
            }
            self.close(out, &mut counts);
            counts.flush();
            return Ok(());
        }
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
        if self.cfg.mode == Mode::Merge && watermark == i64::MAX {
            // Input has ended (a hot reload, a stop without state): emit what is held, as
            // the other modes emit their open windows; the rest of a window comes later
            // as a second row, and the rows sum.
            let (size, max_services) = (self.size, self.cfg.max_services.max(1));
            let held: Vec<_> = (self.merges.iter_mut())
                .flat_map(|(_, merge)| merge.close_until(i64::MAX, size, max_services))
                .collect();
            self.emit(held, out, &mut counts);
        }
        self.close(out, &mut counts);
        counts.flush();
        Ok(())
    }
}

impl Stateful for Metrics {
    type State = State;

    fn snapshot(&self, source: &SourcePartition) -> Option<State> {
        if self.cfg.mode == Mode::Merge {
            let merge = self.merges.get(source)?;
            if merge.is_empty() && self.detectors.is_empty() {
                return None;
            }
            return Some(State {
                window_seconds: self.cfg.window_seconds,
                offset: -1,
                windows: Vec::new(),
                baselines: self.baselines(),
                marked_until: i64::MIN,
                merge: Some(merge.to_state()),
            });
        }
        let part = self.partitions.get(source)?;
        if part.windows.open_windows() == 0 && self.detectors.is_empty() {
            return None;
        }
        Some(State {
            window_seconds: self.cfg.window_seconds,
            offset: part.offset,
            windows: part.windows.to_state(),
            baselines: self.baselines(),
            marked_until: part.marked_until,
            merge: None,
        })
    }

    fn restore(&mut self, source: &SourcePartition, state: State) -> Result<(), PluginError> {
        if state.window_seconds != self.cfg.window_seconds {
            return Err(PluginError::new(format!(
                "the state of {source} has {} s windows, this config {} s",
                state.window_seconds, self.cfg.window_seconds
            )));
        }
        match (self.cfg.mode, state.merge) {
            (Mode::Merge, Some(merge)) => {
                let merge = Merge::from_state(
                    merge,
                    source,
                    self.cfg.relative_accuracy,
                    self.cfg.max_sketch_bins,
                )
                .map_err(|e| PluginError::new(format!("the state of {source}: {e}")))?;
                self.merges.insert(source.clone(), merge);
            }
            (Mode::Merge, None) | (Mode::Local | Mode::Partial, Some(_)) => {
                return Err(PluginError::new(format!(
                    "the state of {source} was kept by a metrics plugin of another mode \
                     (merge vs local or partial); starting it empty"
                )));
            }
            (Mode::Local | Mode::Partial, None) => {
                self.restore_windows(source, state.windows, state.offset, state.marked_until)?
            }
        }
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
        self.merges.remove(source);
    }
}

impl Metrics {
    /// Every service's baselines, by name.
    fn baselines(&self) -> Vec<(String, ServiceDetector)> {
        let mut baselines: Vec<(String, ServiceDetector)> = self
            .detectors
            .iter()
            .map(|(name, d)| (name.clone(), d.clone()))
            .collect();
        baselines.sort_by(|a, b| a.0.cmp(&b.0));
        baselines
    }

    fn restore_windows(
        &mut self,
        source: &SourcePartition,
        state: WindowsState,
        offset: i64,
        marked_until: i64,
    ) -> Result<(), PluginError> {
        let mut windows = Windows::new(
            self.size,
            self.cfg.relative_accuracy,
            self.cfg.max_sketch_bins,
            self.cfg.max_services.max(1),
        );
        windows
            .restore(state, source)
            .map_err(|e| PluginError::new(format!("the state of {source}: {e}")))?;
        let part = PartitionWindows {
            windows,
            offset,
            replay_until: offset,
            marked_until,
        };
        self.partitions.insert(source.clone(), part);
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Metrics, state);
