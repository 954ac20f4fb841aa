//! Durable plugin state through the host (contract 0.2.0): real wasm components, one
//! runtime's instance snapshotted and a new runtime's instance restored from it, as a
//! restart or a move to another host does. And 0.1.0 components still load and run.

mod common;

use sluice::Route;
use sluice::config::PluginConfig;
use sluice::plugin::{CallFailure, PluginRuntime, WasmStage, World};
use sluice::{Origin, Record};
use std::sync::Arc;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_795_600_800 * S; // a window boundary
const TOPIC: &str = "app-logs";

fn stage(runtime: &PluginRuntime, name: &str, config: &str) -> WasmStage {
    let plugin = PluginConfig {
        config: serde_json::from_str(config).unwrap(),
        ..common::plugin_config(name)
    };
    WasmStage::new(Arc::new(runtime.load(&plugin, &plugin.path).unwrap()))
}

/// A normalized record from `offset` of partition 0.
fn record(offset: i64, t: i64, body: &str, error: bool) -> Record {
    let mut r = Record::new(Origin {
        topic: TOPIC.into(),
        partition: 0,
        offset,
    });
    r.timestamp = t;
    r.observed_timestamp = t;
    r.severity_number = if error { 17 } else { 9 };
    r.body = body.into();
    r.set("service.name", "checkout");
    r
}

fn bodies(out: &[Record]) -> Vec<&str> {
    out.iter().map(|r| r.body.as_str()).collect()
}

/// `stage`'s state of partition 0, restored into an instance of a new runtime.
fn moved(stage: &mut WasmStage, name: &str, config: &str, resume_at: i64) -> WasmStage {
    let state = stage.snapshot(TOPIC, 0).unwrap().expect("state kept");
    let runtime = PluginRuntime::new(2, 64).unwrap();
    let mut fresh = self::stage(&runtime, name, config);
    fresh.restore(TOPIC, 0, resume_at, &state).unwrap();
    fresh
}

#[test]
fn dedup_drops_after_a_restart_the_duplicate_of_a_record_seen_before_it() {
    let runtime = PluginRuntime::new(2, 64).unwrap();
    let mut dedup = stage(&runtime, "dedup", "{}");
    assert!(dedup.keeps_state());
    assert_eq!(dedup.plugin().contract, "0.2.0");
    let out = dedup
        .process(&[record(0, T0, "a", false), record(1, T0, "b", false)])
        .unwrap();
    assert_eq!(bodies(&out), ["a", "b"]);

    // The host committed offset 0 (resumes at 1): offset 1 is replayed, then new input.
    let mut restarted = moved(&mut dedup, "dedup", "{}", 1);
    let out = restarted
        .process(&[
            record(1, T0, "b", false),
            record(2, T0, "a", false),
            record(3, T0, "c", false),
        ])
        .unwrap();
    assert_eq!(
        bodies(&out),
        ["b", "c"],
        "b replayed passes; the copy of a is dropped"
    );

    // Without the state the copy passes: the restore is what drops it.
    let mut empty = stage(&runtime, "dedup", "{}");
    assert_eq!(
        empty.process(&[record(2, T0, "a", false)]).unwrap().len(),
        1
    );
    assert_eq!(
        empty.snapshot(TOPIC, 9).unwrap(),
        None,
        "a partition never seen"
    );
}

/// 20 windows of 100 records with 1 error each, then `burst` errors in 100: the alerts
/// emitted for the burst window, by `metrics` alone or by a new instance restored from its
/// state just before the burst.
fn burst_alerts(restart: bool) -> Vec<Record> {
    let runtime = PluginRuntime::new(2, 64).unwrap();
    let mut metrics = stage(&runtime, "metrics", "{}");
    let window = |w: i64, errors: i64| -> Vec<Record> {
        (0..100)
            .map(|i| {
                let t = T0 + w * 60 * S + i * S / 2;
                record(w * 100 + i, t, "req", i < errors)
            })
            .collect()
    };
    for w in 0..20 {
        metrics.process(&window(w, 1)).unwrap();
        metrics.tick(T0 + (w + 1) * 60 * S + 30 * S).unwrap();
    }
    let mut metrics = match restart {
        true => moved(&mut metrics, "metrics", "{}", 2_000),
        false => metrics,
    };
    let mut out = metrics.process(&window(20, 40)).unwrap();
    out.extend(metrics.tick(T0 + 21 * 60 * S + 30 * S).unwrap());
    out.into_iter()
        .filter(|r| r.route == Route::Alerts)
        .collect()
}

#[test]
fn metrics_alerts_on_a_burst_in_the_first_window_after_a_restart_as_without_it() {
    let without = burst_alerts(false);
    assert_eq!(without.len(), 1, "{without:?}");
    assert_eq!(burst_alerts(true), without);
}

#[test]
fn metrics_emits_a_window_opened_before_the_restart_from_the_origin_of_its_first_record() {
    let runtime = PluginRuntime::new(2, 64).unwrap();
    let mut metrics = stage(&runtime, "metrics", "{}");
    metrics
        .process(&[record(40, T0, "a", false), record(41, T0 + S, "b", true)])
        .unwrap();
    let mut restarted = moved(&mut metrics, "metrics", "{}", 42);
    restarted
        .process(&[record(42, T0 + 2 * S, "c", false)])
        .unwrap();
    let out = restarted.tick(T0 + 120 * S).unwrap();
    let metric: Vec<&Record> = out.iter().filter(|r| r.route == Route::Metrics).collect();
    assert_eq!(metric.len(), 1, "{out:?}");
    // Offset 40 was never given to the new instance; the restored state vouches for it.
    assert_eq!(metric[0].origin().offset, 40);
    assert_eq!(metric[0].get("count").and_then(|v| v.as_i64()), Some(3));
}

#[test]
fn a_snapshot_above_the_limit_is_refused_naming_the_plugin_and_the_key() {
    let runtime = PluginRuntime::new(2, 64).unwrap().with_max_state_mb(1);
    let mut dedup = stage(&runtime, "dedup", "{}");
    // ~21 bytes a key in the snapshot: 60,000 keys are above 1 MiB.
    for chunk in 0..60 {
        let batch: Vec<Record> = (0..1_000)
            .map(|i| {
                let n = chunk * 1_000 + i;
                record(n, T0 + n * 1_000, &format!("line {n}"), false)
            })
            .collect();
        dedup.process(&batch).unwrap();
    }
    let err = dedup.snapshot(TOPIC, 0).unwrap_err();
    assert!(matches!(err, CallFailure::StateTooLarge { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("plugin `dedup`: its state for app-logs/0 is ")
            && message.contains("above the limit of 1 MiB; raise `pipeline.max_state_mb`"),
        "{message}"
    );
    // A restore that large is refused without calling the plugin.
    let big = vec![0u8; (1 << 20) + 1];
    let err = dedup.restore(TOPIC, 0, 0, &big).unwrap_err();
    assert!(matches!(err, CallFailure::StateTooLarge { .. }), "{err:?}");
}

#[test]
fn a_corrupt_snapshot_fails_the_restore_and_the_instance_goes_on() {
    let runtime = PluginRuntime::new(2, 64).unwrap();
    let mut dedup = stage(&runtime, "dedup", "{}");
    let err = dedup.restore(TOPIC, 0, 5, b"not a snapshot").unwrap_err();
    let CallFailure::Error { plugin, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(plugin, "dedup");
    assert!(
        message.starts_with("the state of app-logs/0 cannot be restored"),
        "{message}"
    );
    // Starts that partition empty: the instance is the same and works.
    dedup.release(TOPIC, 0).unwrap();
    let out = dedup.process(&[record(5, T0, "a", false), record(6, T0, "a", false)]);
    assert_eq!(bodies(&out.unwrap()), ["a"]);
    assert_eq!(
        dedup
            .plugin()
            .stats
            .instantiations
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn contract_0_1_0_plugins_load_and_run_and_keep_no_state() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    for (name, world) in [
        ("fixtures/typed", World::Typed),
        ("fixtures/malformed", World::Packed),
    ] {
        let mut old = stage(&runtime, name, "{}");
        assert_eq!(old.plugin().contract, "0.1.0", "{name}");
        assert_eq!(old.plugin().world, world, "{name}");
        assert!(!old.keeps_state());
        assert_eq!(old.snapshot(TOPIC, 0).unwrap(), None);
        old.restore(TOPIC, 0, 0, b"anything").unwrap();
        old.release(TOPIC, 0).unwrap();
    }
    let mut typed = stage(&runtime, "fixtures/typed", "{}");
    let out = typed.process(&[record(0, T0, "hello", false)]).unwrap();
    assert_eq!(bodies(&out), ["HELLO"]);
    // A 0.2.0 plugin that keeps no state (normalize): no snapshot.
    let mut normalize = stage(&runtime, "normalize", "{}");
    assert_eq!(normalize.plugin().contract, "0.2.0");
    normalize.process(&[record(0, T0, "x", false)]).unwrap();
    assert_eq!(normalize.snapshot(TOPIC, 0).unwrap(), None);
}
