//! What a plugin's declared `role` (its `[[plugins]]` entry) asks of the host besides
//! running it.
//!
//! `role = "metrics"` marks the plugin that generates the pipeline's metrics. Its failures
//! raise `MetricsGenerationFailed` as well as `PluginFailing`, and every record it emits on
//! the `metrics` route must be a metric the metric tables can hold — a service and an event
//! time — else the record is dead-lettered and `MetricsGenerationFailed` is raised.

use crate::config::Role;
use crate::health::FailState;
use crate::{Record, Route};

/// The fail state a stage of `role` raises, besides `PluginFailing`, when a call fails or
/// it emits a record its role forbids.
pub fn fail_state(role: Option<Role>) -> Option<FailState> {
    match role? {
        Role::Metrics => Some(FailState::MetricsGenerationFailed),
    }
}

/// Why `record`, emitted by a stage of `role`, breaks what the role promises; `None` when
/// it does not.
pub fn breach(role: Option<Role>, record: &Record) -> Option<&'static str> {
    match role? {
        Role::Metrics if record.route == Route::Metrics && !is_metric(record) => {
            Some("invalid metric record: a metric needs `service.name` and an event timestamp")
        }
        Role::Metrics => None,
    }
}

/// Whether a metric table can hold the record: it names its service and has an event time.
fn is_metric(record: &Record) -> bool {
    record.timestamp > 0
        && record
            .get_str("service.name")
            .is_some_and(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    fn metric(service: Option<&str>, timestamp: i64, route: Route) -> Record {
        let mut r = Record::new(Origin::default());
        r.timestamp = timestamp;
        r.route = route;
        if let Some(service) = service {
            r.set("service.name", service);
        }
        r
    }

    #[test]
    fn a_metrics_plugin_must_emit_metrics_with_a_service_and_a_time() {
        let metrics = Some(Role::Metrics);
        assert_eq!(
            breach(metrics, &metric(Some("api"), 1, Route::Metrics)),
            None
        );
        assert!(breach(metrics, &metric(None, 1, Route::Metrics)).is_some());
        assert!(breach(metrics, &metric(Some(""), 1, Route::Metrics)).is_some());
        assert!(breach(metrics, &metric(Some("api"), 0, Route::Metrics)).is_some());
        // Other routes and other plugins are not held to it.
        assert_eq!(breach(metrics, &metric(None, 0, Route::Alerts)), None);
        assert_eq!(breach(None, &metric(None, 0, Route::Metrics)), None);
        assert_eq!(fail_state(None), None);
        assert_eq!(
            fail_state(metrics),
            Some(FailState::MetricsGenerationFailed)
        );
    }
}
