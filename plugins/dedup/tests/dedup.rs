//! Dedup behaviour through the plugin interface, as the host drives it.

use sluice_dedup::Dedup;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{Origin, Record, SourcePartition, Value};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_795_600_800 * S;

/// A normalized record (as after normalize).
fn norm(service: &str, t: i64, body: &str) -> Record {
    let mut r = Record::new(Origin::default());
    r.timestamp = t;
    r.observed_timestamp = t;
    r.body = body.into();
    r.set("service.name", service);
    r
}

fn bodies(out: &[Record]) -> Vec<&str> {
    out.iter().map(|r| r.body.as_str()).collect()
}

#[test]
fn drops_repeats_within_the_window() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    take_recorded();
    let out = p
        .process(vec![
            norm("a", T0, "x"),
            norm("a", T0, "x"),
            norm("b", T0, "x"),     // another service
            norm("a", T0 + 1, "x"), // another time
            norm("a", T0, "y"),     // another message
        ])
        .unwrap();
    assert_eq!(out.len(), 4);
    // Across batches too.
    assert!(p.process(vec![norm("a", T0, "x")]).unwrap().is_empty());
    let c = take_recorded().counters;
    assert_eq!((c["seen"], c["dropped"]), (6, 2));
}

#[test]
fn event_id_wins_over_content() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    let mut a = norm("a", T0, "first delivery");
    a.set("event.id", "e-1");
    let mut b = norm("a", T0 + 5 * S, "redelivered with another body");
    b.set("event.id", "e-1");
    let mut raw = Record::new(Origin::default());
    raw.set("event_id", "e-1"); // the pre-normalize name is the same id
    raw.timestamp = T0;
    assert_eq!(p.process(vec![a, b, raw]).unwrap().len(), 1);
}

#[test]
fn works_before_normalize_on_raw_fields() {
    // Two copies of one JSON line, read at different Kafka times: same fields.
    let raw = |kafka_ts: i64, msg: &str| {
        let mut r = Record::new(Origin::default());
        r.timestamp = kafka_ts;
        r.set("ts", "2026-11-25T10:00:00Z");
        r.set("service", "api");
        r.set("msg", msg);
        r.set("http.status", Value::Int(200));
        r
    };
    let mut text = Record::new(Origin::default());
    text.timestamp = T0;
    text.body = "plain line".into();
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    let out = p
        .process(vec![
            raw(T0, "x"),
            raw(T0 + 3 * S, "x"),
            raw(T0, "y"),
            text.clone(),
            text,
        ])
        .unwrap();
    assert_eq!(out.len(), 3);
}

#[test]
fn a_key_is_forgotten_after_the_window() {
    let mut p = NativePlugin::<Dedup>::new(r#"{"window_seconds": 60}"#).unwrap();
    let mut again = norm("a", T0, "x");
    again.set("event.id", "e");
    let mut later = again.clone();
    later.timestamp = T0 + 61 * S;
    later.observed_timestamp = later.timestamp;
    assert_eq!(p.process(vec![again.clone()]).unwrap().len(), 1);
    // 61 s later by event time: outside the window, passes and is remembered anew.
    assert_eq!(p.process(vec![later.clone()]).unwrap().len(), 1);
    assert_eq!(p.process(vec![later]).unwrap().len(), 0);
}

#[test]
fn tick_expires_and_late_records_pass() {
    let mut p = NativePlugin::<Dedup>::new(r#"{"window_seconds": 60}"#).unwrap();
    p.process(vec![norm("a", T0, "x"), norm("a", T0 + S, "y")])
        .unwrap();
    assert_eq!(p.inner().len(), 2);
    take_recorded();
    p.tick(T0 + 61 * S + 1).unwrap(); // both now older than the window
    assert_eq!(p.inner().len(), 0);
    assert_eq!(take_recorded().counters["expired"], 2);
    // A record older than watermark - window passes and is not remembered.
    let out = p
        .process(vec![norm("a", T0, "x"), norm("a", T0, "x")])
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(take_recorded().counters["late"], 2);
}

#[test]
fn memory_is_bounded_and_evicts_oldest() {
    let mut p = NativePlugin::<Dedup>::new(r#"{"max_entries": 100}"#).unwrap();
    take_recorded();
    // 200 distinct keys, arriving newest first: eviction must follow event time.
    let batch = (0..200).rev().map(|i| norm("a", T0 + i * S, "x")).collect();
    assert_eq!(p.process(batch).unwrap().len(), 200);
    assert_eq!(p.inner().len(), 100);
    assert_eq!(take_recorded().counters["evicted"], 100);
    // The newest 100 are remembered, the oldest 100 are not.
    assert_eq!(
        p.process(vec![norm("a", T0 + 199 * S, "x")]).unwrap().len(),
        0
    );
    assert_eq!(
        p.process(vec![norm("a", T0 + 5 * S, "x")]).unwrap().len(),
        1
    );
}

#[test]
fn a_future_clock_does_not_flush_state() {
    let mut p = NativePlugin::<Dedup>::new(r#"{"window_seconds": 60}"#).unwrap();
    let mut wild = norm("a", T0 + 86_400 * S, "from a broken clock");
    wild.observed_timestamp = T0;
    p.process(vec![norm("a", T0, "x"), wild]).unwrap();
    assert_eq!(p.process(vec![norm("a", T0, "x")]).unwrap().len(), 0);
}

#[test]
fn explicit_key_fields() {
    let cfg = r#"{"key_fields": ["service.name", "body"]}"#;
    let mut p = NativePlugin::<Dedup>::new(cfg).unwrap();
    // Time is not part of the key: the retry 2 s later is a duplicate.
    let out = p
        .process(vec![norm("a", T0, "x"), norm("a", T0 + 2 * S, "x")])
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(NativePlugin::<Dedup>::new(r#"{"window": 5}"#).is_err());
    assert!(NativePlugin::<Dedup>::new(r#"{"max_entries": 0}"#).is_err());
}

#[test]
fn other_routes_are_not_deduplicated() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    let mut m = norm("a", T0, "metric");
    m.route = sluice_plugin_sdk::Route::Metrics;
    assert_eq!(
        bodies(&p.process(vec![m.clone(), m]).unwrap()),
        ["metric", "metric"]
    );
}

/// A normalized record from `offset` of partition `partition` of topic `logs`.
fn at(partition: i32, offset: i64, t: i64, body: &str) -> Record {
    let mut r = Record::new(Origin {
        topic: "logs".into(),
        partition,
        offset,
    });
    r.timestamp = t;
    r.observed_timestamp = t;
    r.body = body.into();
    r.set("service.name", "a");
    r
}

fn logs(partition: i32) -> SourcePartition {
    SourcePartition::new("logs", partition)
}

/// What a restart does: the state of the partition, snapshotted, restored into a fresh
/// instance.
fn restarted(p: &NativePlugin<Dedup>, partition: i32, config: &str) -> NativePlugin<Dedup> {
    let state = p.snapshot(&logs(partition)).unwrap().expect("state kept");
    let mut fresh = NativePlugin::<Dedup>::new(config).unwrap();
    fresh.restore(&logs(partition), &state).unwrap();
    fresh
}

#[test]
fn a_duplicate_of_a_record_seen_before_a_restart_is_dropped_after_it() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    p.process(vec![at(0, 10, T0, "x"), at(0, 11, T0, "y")])
        .unwrap();
    let mut fresh = restarted(&p, 0, "{}");
    assert_eq!(fresh.inner().len(), 2);
    let out = fresh
        .process(vec![at(0, 12, T0 + S, "z"), at(0, 13, T0, "x")])
        .unwrap();
    assert_eq!(bodies(&out), ["z"], "the copy of x is dropped");
    // Without the restore the copy passes: the state is what drops it.
    let mut empty = NativePlugin::<Dedup>::new("{}").unwrap();
    assert_eq!(empty.process(vec![at(0, 13, T0, "x")]).unwrap().len(), 1);
}

#[test]
fn records_replayed_after_a_restore_are_not_duplicates_of_themselves() {
    // The host snapshots after committing offset 11 (say), when offsets 12 and 13 went
    // through already; after a restart it replays them.
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    let first = vec![at(0, 12, T0, "x"), at(0, 13, T0, "x")];
    assert_eq!(bodies(&p.process(first.clone()).unwrap()), ["x"]);
    let mut fresh = restarted(&p, 0, "{}");
    // Offset 12 is the first copy, replayed: it passes again. 13 stays a duplicate, and
    // so is a new copy past what the state had read.
    let mut replay = first;
    replay.push(at(0, 14, T0, "x"));
    let out = fresh.process(replay).unwrap();
    assert_eq!(
        out.iter().map(|r| r.origin().offset).collect::<Vec<_>>(),
        [12]
    );
}

#[test]
fn keys_are_kept_per_partition_and_move_alone() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    // The same line in two partitions: each partition's first copy passes.
    let out = p
        .process(vec![at(0, 1, T0, "x"), at(1, 1, T0, "x")])
        .unwrap();
    assert_eq!(out.len(), 2);
    p.process(vec![at(1, 2, T0, "only-in-1")]).unwrap();
    // Partition 1 moves to another host: it takes partition 1's keys, and only those.
    let mut other = restarted(&p, 1, "{}");
    assert_eq!(other.inner().len(), 2);
    assert!(
        other
            .process(vec![at(1, 3, T0, "only-in-1")])
            .unwrap()
            .is_empty()
    );
    p.release(&logs(1));
    assert_eq!(p.inner().len(), 1);
    assert_eq!(p.process(vec![at(1, 3, T0, "only-in-1")]).unwrap().len(), 1);
    // A partition never seen, or released, has nothing to keep.
    assert_eq!(p.snapshot(&logs(7)).unwrap(), None);
}

#[test]
fn a_snapshot_that_does_not_read_back_is_refused() {
    let mut p = NativePlugin::<Dedup>::new("{}").unwrap();
    p.process(vec![at(0, 1, T0, "x")]).unwrap();
    let mut state = p.snapshot(&logs(0)).unwrap().unwrap();
    state.truncate(state.len() - 3);
    let mut fresh = NativePlugin::<Dedup>::new("{}").unwrap();
    let err = fresh.restore(&logs(0), &state).unwrap_err().message;
    assert!(
        err.starts_with("the state of logs/0 cannot be restored"),
        "{err}"
    );
    assert!(fresh.inner().is_empty());
}

#[test]
fn max_entries_bounds_all_partitions_together() {
    let mut p = NativePlugin::<Dedup>::new(r#"{"max_entries": 100}"#).unwrap();
    for partition in 0..4 {
        let batch = (0..60)
            .map(|i| at(partition, i, T0 + i * S, &format!("{i}")))
            .collect();
        p.process(batch).unwrap();
        assert!(p.inner().len() <= 100, "{}", p.inner().len());
    }
    // A restored snapshot larger than this instance's limit is cut to it.
    let mut big = NativePlugin::<Dedup>::new(r#"{"max_entries": 1000}"#).unwrap();
    big.process((0..300).map(|i| at(0, i, T0 + i * S, "k")).collect())
        .unwrap();
    let state = big.snapshot(&logs(0)).unwrap().unwrap();
    let mut small = NativePlugin::<Dedup>::new(r#"{"max_entries": 100}"#).unwrap();
    small.restore(&logs(0), &state).unwrap();
    assert_eq!(small.inner().len(), 100);
}
