//! Event-time tumbling windows: per window, per service, the counts and the latency
//! sketch of the records that fell in it.

use crate::hash::FnvMap;
use crate::sketch::{DdSketch, Wire};
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{Origin, OriginRef, RecordView, SourcePartition, Value, severity};
use std::collections::BTreeMap;

/// What one record contributes, read from its attributes in a single scan.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub service: &'a str,
    pub error: bool,
    pub latency_ms: Option<f64>,
}

const ERROR_WORDS: [&str; 8] = [
    "error", "err", "fatal", "critical", "crit", "alert", "emerg", "panic",
];

/// Read a record. Error: severity ≥ ERROR; or, with no severity number, a `log.level`
/// naming an error or worse; or an HTTP status ≥ 500. Latency: `event.duration` (ns),
/// else `latency_ms`, else a raw `duration_ms`.
pub fn observe<'a>(record: &RecordView<'a>) -> Observation<'a> {
    let mut service = None;
    let mut fallback_service = None;
    let mut level_error = false;
    let mut status_error = false;
    let (mut duration_ns, mut latency_ms, mut raw_ms) = (None, None, None);
    for a in record.attributes {
        match a.key {
            "service.name" => service = a.value.as_str(),
            "service" => fallback_service = a.value.as_str(),
            "log.level" | "level" => {
                level_error |= a
                    .value
                    .as_str()
                    .is_some_and(|l| ERROR_WORDS.iter().any(|w| w.eq_ignore_ascii_case(l)));
            }
            "http.response.status_code" | "http.status" => {
                status_error |= a.value.as_i64().is_some_and(|s| (500..=599).contains(&s));
            }
            "event.duration" => duration_ns = a.value.as_f64(),
            "latency_ms" => latency_ms = a.value.as_f64(),
            "duration_ms" => raw_ms = a.value.as_f64(),
            _ => {}
        }
    }
    let severity_error = match record.severity_number {
        severity::UNSPECIFIED => level_error,
        n => n >= severity::ERROR,
    };
    Observation {
        service: service.or(fallback_service).unwrap_or("unknown"),
        error: severity_error || status_error,
        latency_ms: duration_ns.map(|ns| ns / 1e6).or(latency_ms).or(raw_ms),
    }
}

/// One service in one window.
#[derive(Debug, Clone)]
pub struct Accumulator {
    pub count: u64,
    pub errors: u64,
    pub sketch: DdSketch,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Origin of the first record: metric and alert records derive from it.
    pub origin: Origin,
}

impl Accumulator {
    fn new(origin: Origin, alpha: f64, max_bins: usize) -> Self {
        Accumulator {
            count: 0,
            errors: 0,
            sketch: DdSketch::new(alpha, max_bins),
            min_ms: f64::INFINITY,
            max_ms: f64::NEG_INFINITY,
            origin,
        }
    }

    /// Fold in the same service's window from another partition. The origin of the lowest
    /// partition is kept, so the merged metric's origin does not depend on which partition
    /// was read first.
    pub fn merge(&mut self, other: Accumulator) {
        self.count += other.count;
        self.errors += other.errors;
        // Both sketches come from one config: the same accuracy.
        let _ = self.sketch.merge(&other.sketch);
        self.min_ms = self.min_ms.min(other.min_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        let key = |o: &Origin| (o.topic.clone(), o.partition, o.offset);
        if key(&other.origin) < key(&self.origin) {
            self.origin = other.origin;
        }
    }

    /// As kept in a state snapshot (its origin's topic and partition are the snapshot's).
    pub fn to_state(&self) -> AccumulatorState {
        AccumulatorState {
            count: self.count,
            errors: self.errors,
            sketch: self.sketch.to_wire(),
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            offset: self.origin.offset,
        }
    }

    /// Back from a snapshot of `source`'s state, refused unless its sketch has this
    /// config's accuracy `alpha`.
    pub fn from_state(
        state: AccumulatorState,
        source: &SourcePartition,
        alpha: f64,
        max_bins: usize,
    ) -> Result<Accumulator, String> {
        if (state.sketch.alpha - alpha).abs() > 1e-12 {
            return Err(format!(
                "a latency sketch has relative accuracy {}, not this config's {alpha}",
                state.sketch.alpha
            ));
        }
        Ok(Accumulator {
            count: state.count,
            errors: state.errors,
            sketch: DdSketch::from_wire(state.sketch, max_bins)?,
            min_ms: state.min_ms,
            max_ms: state.max_ms,
            origin: Origin {
                topic: source.topic.clone(),
                partition: source.partition,
                offset: state.offset,
            },
        })
    }

    fn add(&mut self, o: &Observation) {
        self.count += 1;
        self.errors += u64::from(o.error);
        if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite()) {
            self.sketch.add(ms);
            self.min_ms = self.min_ms.min(ms);
            self.max_ms = self.max_ms.max(ms);
        }
    }
}

/// One service's window as kept in a state snapshot; its origin's topic and partition are
/// the snapshot's.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccumulatorState {
    pub count: u64,
    pub errors: u64,
    pub sketch: Wire,
    pub min_ms: f64,
    pub max_ms: f64,
    pub offset: i64,
}

/// Open windows as kept in a state snapshot: (start, services).
pub type WindowsState = Vec<(i64, Vec<(String, AccumulatorState)>)>;

/// Name under which services beyond `max_services` in one window are counted.
pub const OVERFLOW_SERVICE: &str = "_other";

/// Open windows, keyed by start (ns), then by service.
pub struct Windows {
    pub size: i64,
    alpha: f64,
    max_bins: usize,
    max_services: usize,
    open: BTreeMap<i64, FnvMap<String, Accumulator>>,
}

impl Windows {
    pub fn new(size: i64, alpha: f64, max_bins: usize, max_services: usize) -> Self {
        Windows {
            size,
            alpha,
            max_bins,
            max_services,
            open: BTreeMap::new(),
        }
    }

    pub fn start_of(&self, t: i64) -> i64 {
        t - t.rem_euclid(self.size)
    }

    pub fn add(&mut self, start: i64, o: &Observation, origin: OriginRef<'_>) {
        let services = self.open.entry(start).or_default();
        // Look up by &str first: a String is only built for a new service.
        if let Some(acc) = services.get_mut(o.service) {
            acc.add(o);
            return;
        }
        let name = if services.len() < self.max_services {
            o.service
        } else {
            OVERFLOW_SERVICE
        };
        let (alpha, bins) = (self.alpha, self.max_bins);
        services
            .entry(name.to_string())
            .or_insert_with(|| Accumulator::new(origin.to_origin(), alpha, bins))
            .add(o);
    }

    /// Remove and return, oldest first, every window whose end is at or before
    /// `watermark`, with its services sorted by name.
    pub fn close_until(&mut self, watermark: i64) -> Vec<(i64, Vec<(String, Accumulator)>)> {
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.key().saturating_add(self.size) > watermark {
                break;
            }
            let (start, services) = entry.remove_entry();
            let mut services: Vec<_> = services.into_iter().collect();
            services.sort_by(|a, b| a.0.cmp(&b.0));
            closed.push((start, services));
        }
        closed
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Start times of the open windows.
    pub fn starts(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.keys().copied()
    }

    /// The open windows, for a state snapshot.
    pub fn to_state(&self) -> WindowsState {
        self.open
            .iter()
            .map(|(&start, services)| {
                let mut services: Vec<(String, AccumulatorState)> = services
                    .iter()
                    .map(|(name, acc)| (name.clone(), acc.to_state()))
                    .collect();
                services.sort_by(|a, b| a.0.cmp(&b.0));
                (start, services)
            })
            .collect()
    }

    /// Replace the open windows with those of a snapshot of `source`'s state.
    pub fn restore(&mut self, state: WindowsState, source: &SourcePartition) -> Result<(), String> {
        let mut open = BTreeMap::new();
        for (start, services) in state {
            if start.rem_euclid(self.size) != 0 {
                return Err(format!(
                    "a window starts at {start}, which is not a multiple of this window size ({} s)",
                    self.size / 1_000_000_000
                ));
            }
            let mut map = FnvMap::default();
            for (name, a) in services {
                let acc = Accumulator::from_state(a, source, self.alpha, self.max_bins)?;
                map.insert(name, acc);
            }
            open.insert(start, map);
        }
        self.open = open;
        Ok(())
    }
}

/// A value helper: `Value::Float` that stays valid JSON (no NaN/inf).
pub fn float(v: f64) -> Value {
    if v.is_finite() {
        Value::Float(v)
    } else {
        Value::Null
    }
}
