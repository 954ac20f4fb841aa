//! Partial windows, the records by which several hosts' metrics meet: with `mode =
//! "partial"` each host emits, on the route [`ROUTE`], one record per (source partition,
//! window, service) with that partition's share of the window, and a **mark** per source
//! partition saying every window ending at or before `metric.closed_until` is complete
//! for it. The `merge` mode reads them back (from the topic the route is written to) and
//! merges each window once every partition it knows has marked it.

use crate::records;
use crate::sketch::DdSketch;
use crate::window::Accumulator;
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{Attribute, Origin, Record, RecordView, Route, Value};

/// The route partials and marks are emitted on.
pub const ROUTE: &str = "metric_partials";

const SOURCE_TOPIC: &str = "metric.source.topic";
const SOURCE_PARTITION: &str = "metric.source.partition";
/// Offset of the first record counted in the partial: a replay of the same window (the
/// host restarted from a snapshot) repeats it, a window split by a hot reload does not.
const FIRST_OFFSET: &str = "metric.source.first_offset";
const CLOSED_UNTIL: &str = "metric.closed_until";

fn attr(key: &str, value: impl Into<Value>) -> Attribute {
    Attribute {
        key: key.to_string(),
        value: value.into(),
    }
}

/// A source partition, as partials name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One partition's share of a service's window: the metric record of that share, plus
/// where it comes from.
pub fn window(service: &str, start: i64, size: i64, acc: &Accumulator) -> Record {
    let mut r = records::metric(service, start, size, acc);
    r.route = Route::Named(ROUTE.into());
    r.attributes.extend([
        attr(SOURCE_TOPIC, acc.origin.topic.as_str()),
        attr(SOURCE_PARTITION, i64::from(acc.origin.partition)),
        attr(FIRST_OFFSET, acc.origin.offset),
    ]);
    r
}

/// The mark of a source partition: its windows ending at or before `closed_until` are
/// all emitted. `origin` is the partition's last record read.
pub fn mark(origin: Origin, closed_until: i64, size: i64) -> Record {
    let mut r = Record::new(origin.clone());
    r.route = Route::Named(ROUTE.into());
    r.timestamp = closed_until;
    r.observed_timestamp = closed_until;
    r.attributes = vec![
        attr(CLOSED_UNTIL, closed_until),
        attr("metric.window.seconds", size as f64 / 1e9),
        attr(SOURCE_TOPIC, origin.topic),
        attr(SOURCE_PARTITION, i64::from(origin.partition)),
    ];
    r
}

/// A partial or a mark, read back.
#[derive(Debug)]
pub enum Partial {
    Window {
        source: Source,
        first_offset: i64,
        service: String,
        start: i64,
        acc: Accumulator,
    },
    Mark {
        source: Source,
        closed_until: i64,
    },
}

/// Read a record of the partials route, as the host decodes it from JSON. `Err` says what
/// is wrong with it (the record goes to the dead-letter route with that reason).
pub fn read(
    record: &RecordView<'_>,
    size: i64,
    alpha: f64,
    max_bins: usize,
) -> Result<Partial, String> {
    let int = |key: &str| {
        record
            .get(key)
            .and_then(|v| v.as_i64())
            .ok_or_else(|| format!("not a metrics partial: no integer `{key}`"))
    };
    let source = Source {
        topic: record
            .get_str(SOURCE_TOPIC)
            .ok_or_else(|| format!("not a metrics partial: no `{SOURCE_TOPIC}`"))?
            .to_owned(),
        partition: i32::try_from(int(SOURCE_PARTITION)?)
            .map_err(|_| format!("`{SOURCE_PARTITION}` is out of range"))?,
    };
    if record.get(CLOSED_UNTIL).is_some() {
        let closed_until = int(CLOSED_UNTIL)?;
        if closed_until.rem_euclid(size) != 0 {
            return Err(format!(
                "a mark of {source} at {closed_until} ns is not on a {} s window boundary: \
                 the partial and merge configs must have the same window_seconds",
                size / 1_000_000_000
            ));
        }
        return Ok(Partial::Mark {
            source,
            closed_until,
        });
    }
    let start = int("metric.window.start")?;
    let end = int("metric.window.end")?;
    if end - start != size {
        return Err(format!(
            "a partial of a {} s window, this merge has {} s windows: give the partial and \
             merge configs the same window_seconds",
            (end - start) / 1_000_000_000,
            size / 1_000_000_000
        ));
    }
    let service = record
        .get_str("service.name")
        .ok_or("not a metrics partial: no `service.name`")?
        .to_owned();
    let first_offset = int(FIRST_OFFSET)?;
    let count = u64::try_from(int("count")?).map_err(|_| "a negative `count`")?;
    let errors = u64::try_from(int("error_count")?).map_err(|_| "a negative `error_count`")?;
    let float = |key: &str, none: f64| record.get(key).and_then(|v| v.as_f64()).unwrap_or(none);
    let sketch = match record.get_str("latency.sketch") {
        Some(json) => DdSketch::from_json(json, max_bins)
            .map_err(|e| format!("`latency.sketch` of {service}: {e}"))?,
        None => DdSketch::new(alpha, max_bins),
    };
    if (sketch.alpha() - alpha).abs() > 1e-12 {
        return Err(format!(
            "a latency sketch of relative accuracy {}, this merge's is {alpha}: give the \
             partial and merge configs the same relative_accuracy",
            sketch.alpha()
        ));
    }
    let acc = Accumulator {
        count,
        errors,
        sketch,
        min_ms: float("latency.min_ms", f64::INFINITY),
        max_ms: float("latency.max_ms", f64::NEG_INFINITY),
        // The merged metric derives from the partial record read, not from the source's.
        origin: record.origin.to_origin(),
    };
    Ok(Partial::Window {
        source,
        first_offset,
        service,
        start,
        acc,
    })
}
