//! Dedup behaviour through the plugin interface, as the host drives it.

use sluice_dedup::Dedup;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{Origin, Record, Value};

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
