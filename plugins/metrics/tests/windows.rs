//! Windows, quantiles, lateness and ticks, checked against a brute-force computation.

mod common;

use common::*;
use sluice_metrics::Metrics;
use sluice_metrics::sketch::DdSketch;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{Record, Route};
use std::collections::BTreeMap;

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

#[test]
fn windows_and_quantiles_match_brute_force() {
    let mut rng = Rng::new(7);
    let services = [
        ("checkout", 40.0, 0.02),
        ("search", 15.0, 0.001),
        ("auth", 3.0, 0.1),
    ];
    let mut stream = Vec::new();
    for (name, rate, p_err) in services {
        stream.extend(steady(&mut rng, name, T0, 600, rate, p_err, 30.0));
    }
    stream.sort_by_key(|r| r.timestamp);
    // Out of order within the allowed lateness: swap neighbours up to 10 s apart.
    for i in (1..stream.len()).step_by(3) {
        if stream[i].timestamp - stream[i - 1].timestamp < 10 * S {
            stream.swap(i, i - 1);
        }
    }
    // Brute force: (service, window start) → (count, errors, latencies).
    let mut truth: BTreeMap<(String, i64), (i64, i64, Vec<f64>)> = BTreeMap::new();
    for r in &stream {
        let start = r.timestamp - (r.timestamp - T0).rem_euclid(60 * S);
        let e = truth
            .entry((r.get_str("service.name").unwrap().to_string(), start))
            .or_default();
        e.0 += 1;
        e.1 += i64::from(r.is_error());
        e.2.push(get_i(r, "event.duration") as f64 / 1e6);
    }

    let mut p = NativePlugin::<Metrics>::new(r#"{"anomaly": {"enabled": false}}"#).unwrap();
    let mut metrics = Vec::new();
    let n = stream.len();
    let mut passed = 0;
    for batch in stream.chunks(97) {
        let out = p.process(batch.to_vec()).unwrap();
        passed += out.iter().filter(|r| r.route == Route::Cleaned).count();
        metrics.extend(out.into_iter().filter(|r| r.route == Route::Metrics));
    }
    assert_eq!(passed, n, "every log record passes through");
    metrics.extend(p.tick(T0 + 3600 * S).unwrap());
    assert_eq!(metrics.len(), truth.len());

    for m in &metrics {
        let key = (
            m.get_str("service.name").unwrap().to_string(),
            get_i(m, "metric.window.start"),
        );
        let (count, errors, lat) = truth.get_mut(&key).expect("a window that had records");
        assert_eq!(m.timestamp, key.1);
        assert_eq!(get_i(m, "metric.window.end"), key.1 + 60 * S);
        assert_eq!(get_i(m, "count"), *count);
        assert_eq!(get_i(m, "error_count"), *errors);
        assert!((get_f(m, "error_rate") - *errors as f64 / *count as f64).abs() < 1e-12);
        assert!((get_f(m, "throughput_rps") - *count as f64 / 60.0).abs() < 1e-9);
        lat.sort_by(f64::total_cmp);
        for (q, name) in [
            (0.5, "latency.p50_ms"),
            (0.95, "latency.p95_ms"),
            (0.99, "latency.p99_ms"),
        ] {
            let (got, want) = (get_f(m, name), exact(lat, q));
            assert!(
                (got - want).abs() <= 0.01 * want + 1e-9,
                "{key:?} {name}: {got} vs {want}"
            );
        }
        assert_eq!(get_f(m, "latency.max_ms"), *lat.last().unwrap());
        // The sketch round-trips and gives the same quantiles.
        let sketch = DdSketch::from_json(m.get_str("latency.sketch").unwrap(), 2048).unwrap();
        assert_eq!(sketch.count(), lat.len() as u64);
        assert_eq!(sketch.quantile(0.99), Some(get_f(m, "latency.p99_ms")));
    }
}

#[test]
fn merging_partial_sketches_from_two_hosts() {
    // Two hosts each see half of a service's window; merged sketches give the quantiles of
    // the union within the stated accuracy.
    let mut rng = Rng::new(11);
    let stream = steady(&mut rng, "api", T0, 60, 50.0, 0.0, 80.0);
    let (a, b): (Vec<_>, Vec<_>) = stream
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let run = |part: Vec<(usize, sluice_plugin_sdk::Record)>| {
        let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
        p.process(part.into_iter().map(|(_, r)| r).collect())
            .unwrap();
        let out = p.tick(T0 + 90 * S).unwrap();
        DdSketch::from_json(out[0].get_str("latency.sketch").unwrap(), 2048).unwrap()
    };
    let mut merged = run(a);
    merged.merge(&run(b)).unwrap();
    let mut all: Vec<f64> = stream
        .iter()
        .map(|r| get_i(r, "event.duration") as f64 / 1e6)
        .collect();
    all.sort_by(f64::total_cmp);
    for q in [0.5, 0.95, 0.99] {
        let (got, want) = (merged.quantile(q).unwrap(), exact(&all, q));
        assert!((got - want).abs() <= 0.01 * want, "q={q}: {got} vs {want}");
    }
}

#[test]
fn late_records_are_left_out_of_metrics_but_pass() {
    let mut p = NativePlugin::<Metrics>::new(r#"{"allowed_lateness_seconds": 30}"#).unwrap();
    take_recorded();
    let out = p
        .process(vec![
            record("a", T0 + 10 * S, false, Some(5.0)),
            record("a", T0 + 85 * S, false, Some(5.0)),
            record("a", T0 + 50 * S, true, Some(5.0)), // out of order, within lateness
        ])
        .unwrap();
    assert!(out.iter().all(|r| r.route == Route::Cleaned));
    // Window [T0, T0+60) closes when the host's event time reaches T0+90.
    let metrics = p.tick(T0 + 91 * S).unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        (
            get_i(&metrics[0], "count"),
            get_i(&metrics[0], "error_count")
        ),
        (2, 1)
    );
    let out = p
        .process(vec![
            record("a", T0 + 91 * S, false, None),
            record("a", T0 + 59 * S, true, None), // its window has closed: late
        ])
        .unwrap();
    assert_eq!(out.len(), 2, "the late record itself still passes");
    assert!(out.iter().all(|r| r.route == Route::Cleaned));
    assert_eq!(take_recorded().counters["late_dropped"], 1);
}

#[test]
fn records_in_the_epochs_first_window_count_as_untimed() {
    // A metric's `timestamp` is its window start, and 0 means "no event time": a window
    // starting at the epoch could not be told from an untimed record (the host would
    // dead-letter the metric). Such times are a zeroed clock, not an event.
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    take_recorded();
    let out = p
        .process(vec![
            record("a", S, true, Some(5.0)),
            record("a", 59 * S, true, Some(5.0)),
            record("a", 60 * S, false, Some(5.0)),
        ])
        .unwrap();
    assert_eq!(out.len(), 3, "every record still passes");
    let metrics = p.tick(T0).unwrap();
    assert_eq!(take_recorded().counters["no_timestamp"], 2);
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0].timestamp, 60 * S);
    assert_eq!(get_i(&metrics[0], "count"), 1);
}

#[test]
fn tick_closes_windows_and_backfills_use_event_time() {
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    // A backfill from a week ago: windows are a week ago too.
    let week_ago = T0 - 7 * 86_400 * S;
    let out = p
        .process(vec![
            record("a", week_ago + S, false, Some(1.0)),
            record("b", week_ago + 2 * S, true, None),
        ])
        .unwrap();
    assert_eq!(out.len(), 2);
    // Event time at the window's end is not enough: the allowed lateness (30 s) must pass.
    assert!(p.tick(week_ago + 89 * S).unwrap().is_empty());
    let closed = p.tick(week_ago + 90 * S).unwrap();
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|r| r.route == Route::Metrics && r.timestamp == week_ago)
    );
    let b = &closed[1];
    assert_eq!(b.get_str("service.name"), Some("b"));
    assert!(
        b.get("latency.p99_ms").is_none(),
        "no latency, no quantiles"
    );
    assert_eq!(get_f(b, "error_rate"), 1.0);
    assert_eq!(p.inner().open_windows(), 0);
}

#[test]
fn config_is_strict() {
    assert!(NativePlugin::<Metrics>::new(r#"{"windows_seconds": 60}"#).is_err());
    assert!(NativePlugin::<Metrics>::new(r#"{"anomaly": {"threshold": 3}}"#).is_err());
    assert!(NativePlugin::<Metrics>::new(r#"{"relative_accuracy": 0}"#).is_err());
}

/// Partitions are consumed at different speeds, and only the host knows how far each is
/// behind its log: however far ahead the records run, windows close on the host's tick.
#[test]
fn records_alone_never_close_a_window() {
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    // One partition races an hour ahead; another is still in the first minute.
    let batch: Vec<Record> = (0..60)
        .map(|m| record("a", T0 + m * 60 * S, false, Some(5.0)))
        .collect();
    let out = p.process(batch).unwrap();
    assert!(
        out.iter().all(|r| r.route == Route::Cleaned),
        "no window may close before the host says event time has passed it"
    );
    // The lagging partition's record arrives; the host's event time then reaches T0+90.
    p.process(vec![record("a", T0 + 5 * S, false, Some(5.0))])
        .unwrap();
    let out = p.tick(T0 + 90 * S).unwrap();
    let first = out
        .iter()
        .find(|r| r.route == Route::Metrics && r.timestamp == T0)
        .expect("the first window closed");
    assert_eq!(get_i(first, "count"), 2);
}
