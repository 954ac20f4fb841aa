//! Reading the records the metrics plugin emits into the policy's inputs.

use super::config::Severity;
use super::policy::{DataAlert, MetricWindow};
use crate::{Record, Value};

/// An alert record (route `alerts`). `Err` says which attribute is missing or wrong.
pub fn alert(r: &Record) -> Result<DataAlert, String> {
    let text = |key: &str| {
        r.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("not an alert record: text attribute `{key}` is missing"))
    };
    let int = |key: &str| {
        r.get(key)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("not an alert record: integer attribute `{key}` is missing"))
    };
    let float = |key: &str| r.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let severity_text = text("alert.severity")?;
    let severity = Severity::parse(severity_text).ok_or_else(|| {
        format!("alert.severity `{severity_text}` is not info, warning or critical")
    })?;
    let window_start = int("alert.window.start")?;
    let window_end = int("alert.window.end")?;
    if window_end <= window_start {
        return Err("alert.window.end is not after alert.window.start".into());
    }
    Ok(DataAlert {
        id: text("alert.id")?.to_owned(),
        service: text("service.name")?.to_owned(),
        kind: text("alert.kind")?.to_owned(),
        severity,
        observed: float("alert.observed"),
        baseline: float("alert.baseline"),
        zscore: float("alert.zscore"),
        window_start,
        window_end,
        description: r.body.clone(),
    })
}

/// A metric record (route `metrics`); `None` for records that are not window metrics.
pub fn window(r: &Record) -> Option<MetricWindow<'_>> {
    Some(MetricWindow {
        service: r.get_str("service.name")?,
        start: r.get("metric.window.start").and_then(Value::as_i64)?,
        end: r.get("metric.window.end").and_then(Value::as_i64)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Origin};

    fn record(attrs: &[(&str, Value)]) -> Record {
        let mut r = Record::new(Origin::default());
        r.body = "critical: checkout error rate 31.2%".into();
        r.attributes = attrs
            .iter()
            .map(|(k, v)| Attribute {
                key: (*k).into(),
                value: v.clone(),
            })
            .collect();
        r
    }

    #[test]
    fn reads_the_metrics_plugin_alert_shape() {
        let r = record(&[
            ("alert.id", "00ab00ab00ab00ab".into()),
            ("alert.kind", "error_rate_spike".into()),
            ("alert.severity", "critical".into()),
            ("alert.observed", Value::Float(0.312)),
            ("alert.baseline", Value::Float(0.011)),
            ("alert.zscore", Value::Float(14.6)),
            ("service.name", "checkout".into()),
            ("alert.window.start", Value::Int(60)),
            ("alert.window.end", Value::Int(120)),
        ]);
        let a = alert(&r).unwrap();
        assert_eq!(a.service, "checkout");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!((a.window_start, a.window_end), (60, 120));
        assert_eq!(a.description, "critical: checkout error rate 31.2%");

        let missing = record(&[("alert.kind", "error_rate_spike".into())]);
        assert!(alert(&missing).unwrap_err().contains("alert.severity"));
    }

    #[test]
    fn reads_metric_windows_and_skips_other_records() {
        let r = record(&[
            ("service.name", "cart".into()),
            ("metric.window.start", Value::Int(0)),
            ("metric.window.end", Value::Int(60)),
        ]);
        assert_eq!(
            window(&r),
            Some(MetricWindow {
                service: "cart",
                start: 0,
                end: 60
            })
        );
        assert_eq!(window(&record(&[("service.name", "cart".into())])), None);
    }
}
