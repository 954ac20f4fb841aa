//! Durable state: open windows and baselines survive a restart and move with their
//! partition; windows of one start merge over partitions when they close.

mod common;

use common::*;
use sluice_metrics::Metrics;
use sluice_plugin_sdk::native::NativePlugin;
use sluice_plugin_sdk::{Origin, Record, Route, SourcePartition};

const LATENESS: i64 = 30 * S;

fn logs(partition: i32) -> SourcePartition {
    SourcePartition::new("logs", partition)
}

/// `r` as read from `partition` (same offset).
fn from_partition(r: Record, partition: i32) -> Record {
    let mut moved = Record::new(Origin {
        partition,
        ..r.origin().clone()
    });
    moved.timestamp = r.timestamp;
    moved.observed_timestamp = r.observed_timestamp;
    moved.severity_number = r.severity_number;
    moved.severity_text = r.severity_text;
    moved.body = r.body;
    moved.attributes = r.attributes;
    moved
}

/// A fresh instance holding `p`'s state of `partitions`, as after a restart.
fn restarted(p: &NativePlugin<Metrics>, partitions: &[i32]) -> NativePlugin<Metrics> {
    let mut fresh = NativePlugin::<Metrics>::new("{}").unwrap();
    for &partition in partitions {
        let state = p.snapshot(&logs(partition)).unwrap().expect("state kept");
        fresh.restore(&logs(partition), &state).unwrap();
    }
    fresh
}

fn on(route: Route, out: Vec<Record>) -> Vec<Record> {
    out.into_iter().filter(|r| r.route == route).collect()
}

/// `stream` processed, then event time ticked past `close_at`: what was emitted.
fn run(p: &mut NativePlugin<Metrics>, stream: Vec<Record>, close_at: i64) -> Vec<Record> {
    let mut out = p.process(stream).unwrap();
    out.extend(p.tick(close_at + LATENESS).unwrap());
    out
}

#[test]
fn an_error_burst_in_the_first_window_after_a_restart_alerts_as_without_it() {
    let mut rng = Rng::new(3);
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    let calm = steady(&mut rng, "checkout", T0, 1800, 5.0, 0.01, 40.0);
    assert!(on(Route::Alerts, run(&mut p, calm, T0 + 1800 * S)).is_empty());
    let t1 = T0 + 1800 * S;
    let burst = steady(&mut rng, "checkout", t1, 60, 5.0, 0.30, 40.0);

    let mut restored = restarted(&p, &[0]);
    let mut empty = NativePlugin::<Metrics>::new("{}").unwrap();
    let without_restart = on(Route::Alerts, run(&mut p, burst.clone(), t1 + 60 * S));
    let after_restart = on(
        Route::Alerts,
        run(&mut restored, burst.clone(), t1 + 60 * S),
    );
    assert_eq!(without_restart.len(), 1, "{without_restart:?}");
    assert_eq!(
        after_restart, without_restart,
        "the same alert, the same id"
    );
    // Without its baseline the service is warming up again: the burst passes unseen.
    assert!(on(Route::Alerts, run(&mut empty, burst, t1 + 60 * S)).is_empty());
}

#[test]
fn open_windows_survive_a_restart_without_counting_replays_twice() {
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    let first: Vec<Record> = (0..10)
        .map(|i| record("api", T0 + i * S, i < 2, Some(10.0)))
        .collect();
    assert!(on(Route::Metrics, p.process(first.clone()).unwrap()).is_empty());
    let mut restored = restarted(&p, &[0]);
    // The host resumes at its committed offset: the last 4 records come again, then more.
    let mut next = first[6..].to_vec();
    next.extend((10..15).map(|i| record("api", T0 + i * S, false, Some(10.0))));
    let metrics = on(Route::Metrics, run(&mut restored, next, T0 + 60 * S));
    assert_eq!(metrics.len(), 1);
    assert_eq!(get_i(&metrics[0], "count"), 15);
    assert_eq!(get_i(&metrics[0], "error_count"), 2);
    // From the restored window's first record, which the new instance never read.
    assert_eq!(metrics[0].origin(), first[0].origin());
}

#[test]
fn windows_merge_over_partitions_and_move_with_theirs() {
    let window = |partition: i32, from: i64, n: i64| -> Vec<Record> {
        (0..n)
            .map(|i| {
                from_partition(
                    record("api", T0 + (from + i) * S, false, Some(5.0)),
                    partition,
                )
            })
            .collect()
    };
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    let mut batch = window(0, 0, 7);
    batch.extend(window(1, 10, 5));
    p.process(batch).unwrap();

    // Partition 1 moves to another instance; partition 0 stays.
    let mut other = restarted(&p, &[1]);
    p.release(&logs(1));
    assert_eq!(p.snapshot(&logs(1)).unwrap(), None, "released");
    let here = on(Route::Metrics, p.tick(T0 + 60 * S + LATENESS).unwrap());
    let there = on(Route::Metrics, other.tick(T0 + 60 * S + LATENESS).unwrap());
    assert_eq!(
        (get_i(&here[0], "count"), get_i(&there[0], "count")),
        (7, 5)
    );
    assert_eq!(there[0].origin().partition, 1);

    // Both partitions restored into one instance: one metric per window, merged.
    let mut both = NativePlugin::<Metrics>::new("{}").unwrap();
    let mut batch = window(0, 0, 7);
    batch.extend(window(1, 10, 5));
    both.process(batch).unwrap();
    let mut merged = restarted(&both, &[1, 0]);
    let metrics = on(Route::Metrics, merged.tick(T0 + 60 * S + LATENESS).unwrap());
    assert_eq!(metrics.len(), 1);
    assert_eq!(get_i(&metrics[0], "count"), 12);
    assert_eq!(
        metrics[0].origin().partition,
        0,
        "the lowest partition's origin"
    );
}

#[test]
fn a_snapshot_of_another_window_size_is_refused() {
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    p.process(vec![record("api", T0, false, None)]).unwrap();
    let state = p.snapshot(&logs(0)).unwrap().unwrap();
    let mut other = NativePlugin::<Metrics>::new(r#"{"window_seconds": 300}"#).unwrap();
    let err = other.restore(&logs(0), &state).unwrap_err().message;
    assert_eq!(
        err,
        "the state of logs/0 has 60 s windows, this config 300 s"
    );
    assert_eq!(
        NativePlugin::<Metrics>::new("{}")
            .unwrap()
            .snapshot(&logs(0))
            .unwrap(),
        None
    );
}
