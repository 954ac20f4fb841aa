//! Both kinds of plugin through the native runner, which makes the calls the host makes on
//! the same packed batches: a `PackedPlugin` reading in place, and a `Plugin` on owned
//! records.

use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{
    BatchView, Config, Origin, Output, PackedPlugin, Plugin, PluginError, Record, Route, severity,
};

/// Drops debug-and-below records, forwards the rest untouched, and emits one summary
/// record per batch.
struct DropDebug;

impl PackedPlugin for DropDebug {
    fn init(_config: &Config) -> Result<Self, PluginError> {
        Ok(DropDebug)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut dropped = 0;
        for record in batch.iter() {
            let debug = record.severity_number > 0 && record.severity_number < severity::INFO;
            if record.is_cleaned() && debug {
                dropped += 1;
            } else {
                out.keep(&record);
            }
        }
        if let Some(last) = batch.iter().last() {
            let mut summary = Record::new(last.origin.to_origin());
            summary.route = Route::Metrics;
            summary.set("dropped", dropped as i64);
            out.push(&summary);
        }
        sluice_plugin_sdk::host::counter_add("dropped", dropped);
        Ok(())
    }
}

/// Upper-cases bodies, on owned records.
struct Upper;

impl Plugin for Upper {
    fn init(_config: &Config) -> Result<Self, PluginError> {
        Ok(Upper)
    }

    fn process(&mut self, batch: Vec<Record>, out: &mut Vec<Record>) -> Result<(), PluginError> {
        for mut record in batch {
            record.body = record.body.to_uppercase();
            out.push(record);
        }
        Ok(())
    }
}

fn record(offset: i64, severity_number: u8, route: Route) -> Record {
    let mut r = Record::new(Origin {
        topic: "raw-logs".into(),
        partition: 1,
        offset,
    });
    r.severity_number = severity_number;
    r.body = format!("line {offset}");
    r.set("service.name", "checkout");
    r.route = route;
    r
}

#[test]
fn a_packed_plugin_forwards_kept_records_unchanged_and_emits_new_ones() {
    let input = vec![
        record(0, severity::DEBUG, Route::Cleaned),
        record(1, severity::ERROR, Route::Cleaned),
        // Not on `cleaned`: passes whatever its severity.
        record(2, severity::DEBUG, Route::Dlq("bad".into())),
        record(3, severity::UNSPECIFIED, Route::Cleaned),
    ];
    let mut plugin = NativePlugin::<DropDebug>::new("{}").unwrap();
    take_recorded();
    let out = plugin.process(input.clone()).unwrap();

    assert_eq!(
        out[..3],
        [input[1].clone(), input[2].clone(), input[3].clone()]
    );
    assert_eq!(out[3].route, Route::Metrics);
    assert_eq!(out[3].get("dropped").and_then(|v| v.as_i64()), Some(1));
    assert_eq!(out[3].origin(), input[3].origin());
    assert_eq!(out.len(), 4);
    assert_eq!(take_recorded().counters.get("dropped"), Some(&1));
}

#[test]
fn a_plugin_on_owned_records_runs_through_the_same_packed_calls() {
    let input = vec![
        record(0, severity::INFO, Route::Cleaned),
        record(1, severity::WARN, Route::Named("audit".into())),
    ];
    let mut plugin = NativePlugin::<Upper>::new("{}").unwrap();
    let out = plugin.process(input.clone()).unwrap();
    let expected: Vec<Record> = input
        .into_iter()
        .map(|mut r| {
            r.body = r.body.to_uppercase();
            r
        })
        .collect();
    assert_eq!(out, expected);
    assert_eq!(plugin.tick(i64::MAX).unwrap(), Vec::new());
}

#[test]
fn a_malformed_input_batch_is_an_error_naming_where() {
    let mut plugin = NativePlugin::<DropDebug>::new("{}").unwrap();
    let err = plugin.process_packed(&[1, 0, 0, 0, 7]).unwrap_err();
    assert!(err.message.contains("malformed input batch"), "{err}");
    assert!(err.message.contains("byte"), "{err}");
}
