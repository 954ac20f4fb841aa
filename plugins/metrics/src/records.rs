//! The records this plugin emits: one metric record per service and closed window on
//! `Route::Metrics`, and one alert record per anomaly on `Route::Alerts`.

use crate::detect::Anomaly;
use crate::hash::fnv1a;
use crate::window::{Accumulator, float};
use sluice_plugin_sdk::{Attribute, Record, Route, Value, severity};

const NS_PER_SEC: i64 = 1_000_000_000;

fn attr(key: &str, value: impl Into<Value>) -> Attribute {
    Attribute {
        key: key.to_string(),
        value: value.into(),
    }
}

/// Quantiles reported as attributes, with their names.
pub const QUANTILES: [(f64, &str); 3] = [
    (0.5, "latency.p50_ms"),
    (0.95, "latency.p95_ms"),
    (0.99, "latency.p99_ms"),
];

pub fn metric(service: &str, start: i64, size: i64, acc: &Accumulator) -> Record {
    let mut r = Record::new(acc.origin.clone());
    r.route = Route::Metrics;
    r.timestamp = start;
    r.observed_timestamp = start + size;
    let seconds = size as f64 / NS_PER_SEC as f64;
    let latency_count = acc.sketch.count();
    let mut a = vec![
        attr("service.name", service),
        attr("metric.window.start", start),
        attr("metric.window.end", start + size),
        attr("metric.window.seconds", float(seconds)),
        attr("count", acc.count as i64),
        attr("error_count", acc.errors as i64),
        attr(
            "error_rate",
            float(acc.errors as f64 / acc.count.max(1) as f64),
        ),
        attr("throughput_rps", float(acc.count as f64 / seconds)),
        attr("latency.count", latency_count as i64),
    ];
    if latency_count > 0 {
        for (q, name) in QUANTILES {
            a.push(attr(
                name,
                acc.sketch.quantile(q).map_or(Value::Null, float),
            ));
        }
        a.push(attr("latency.min_ms", float(acc.min_ms)));
        a.push(attr("latency.max_ms", float(acc.max_ms)));
        a.push(attr("latency.sketch", acc.sketch.to_json()));
    }
    r.attributes = a;
    r
}

pub fn alert(service: &str, start: i64, size: i64, acc: &Accumulator, a: &Anomaly) -> Record {
    let mut r = Record::new(acc.origin.clone());
    r.route = Route::Alerts;
    r.timestamp = start;
    r.observed_timestamp = start + size;
    let kind = a.kind.name();
    let level = if a.critical { "critical" } else { "warning" };
    (r.severity_number, r.severity_text) = if a.critical {
        (severity::ERROR, "error".into())
    } else {
        (severity::WARN, "warn".into())
    };
    let id = fnv1a(&[service.as_bytes(), kind.as_bytes(), &start.to_le_bytes()]);
    let what = match a.kind {
        crate::detect::Kind::ErrorRate => format!(
            "error rate {:.1}% ({} of {}) vs baseline {:.1}%",
            a.observed * 100.0,
            acc.errors,
            acc.count,
            a.baseline * 100.0
        ),
        crate::detect::Kind::LatencyP99 => {
            format!(
                "p99 latency {:.0} ms vs baseline {:.0} ms",
                a.observed, a.baseline
            )
        }
    };
    r.body = format!(
        "{level}: {service} {what}, z={:.1}, in the {}s window from {}",
        a.zscore,
        size / NS_PER_SEC,
        rfc3339(start)
    );
    r.attributes = vec![
        attr("alert.id", format!("{id:016x}")),
        attr("alert.kind", kind),
        attr("alert.severity", level),
        attr("alert.observed", float(a.observed)),
        attr("alert.baseline", float(a.baseline)),
        attr("alert.zscore", float(a.zscore)),
        attr("service.name", service),
        attr("alert.window.start", start),
        attr("alert.window.end", start + size),
    ];
    r
}

/// `2026-11-25T10:00:00Z` (whole seconds, UTC) for human-readable text.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        assert_eq!(rfc3339(1_795_600_800 * NS_PER_SEC), "2026-11-25T10:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 * NS_PER_SEC), "2000-02-29T00:00:00Z");
    }
}
