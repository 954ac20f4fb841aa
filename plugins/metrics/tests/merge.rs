//! Several hosts: each emits its partitions' shares of the windows (`mode = "partial"`),
//! one instance merges them (`mode = "merge"`), and the merged windows and their alerts
//! are those of one host reading every partition.

mod common;

use common::*;
use sluice_metrics::Metrics;
use sluice_plugin_sdk::native::NativePlugin;
use sluice_plugin_sdk::{Origin, Record, Route, SourcePartition};

const LATENESS: i64 = 30 * S;
const PARTIALS: &str = "metric-partials";
/// The merge stage's config: the source topic has three partitions.
const MERGE: &str = r#"{"mode":"merge","source_partitions":3}"#;

fn plugin(config: &str) -> NativePlugin<Metrics> {
    NativePlugin::<Metrics>::new(config).unwrap()
}

/// `r` with another origin (everything else kept).
fn with_origin(r: &Record, origin: Origin) -> Record {
    let mut moved = Record::new(origin);
    moved.timestamp = r.timestamp;
    moved.observed_timestamp = r.observed_timestamp;
    moved.severity_number = r.severity_number;
    moved.severity_text = r.severity_text.clone();
    moved.body = r.body.clone();
    moved.attributes = r.attributes.clone();
    moved.route = r.route.clone();
    moved
}

/// Thirty minutes of three services, then an error burst in checkout and a latency spike
/// in search; every service's records spread round robin over three partitions.
fn traffic() -> Vec<Record> {
    let mut rng = Rng::new(11);
    let mut all = Vec::new();
    for (service, rate) in [("checkout", 6.0), ("search", 5.0), ("cart", 2.0)] {
        all.extend(steady(&mut rng, service, T0, 1800, rate, 0.01, 40.0));
    }
    let t1 = T0 + 1800 * S;
    all.extend(steady(&mut rng, "checkout", t1, 60, 6.0, 0.30, 40.0));
    all.extend(steady(&mut rng, "search", t1, 60, 5.0, 0.01, 160.0));
    all.extend(steady(&mut rng, "cart", t1, 60, 2.0, 0.01, 40.0));
    all.sort_by_key(|r| r.timestamp);
    all.iter()
        .enumerate()
        .map(|(i, r)| {
            let origin = Origin {
                topic: "logs".into(),
                partition: (i % 3) as i32,
                offset: (i / 3) as i64,
            };
            with_origin(r, origin)
        })
        .collect()
}

/// Consecutive minutes of `records` (event time), each ticked closed after it.
fn minutes(records: &[Record]) -> Vec<(Vec<Record>, i64)> {
    let mut out: Vec<(Vec<Record>, i64)> = Vec::new();
    for r in records {
        let end = r.timestamp - r.timestamp.rem_euclid(60 * S) + 60 * S;
        match out.last_mut() {
            Some((minute, e)) if *e == end => minute.push(r.clone()),
            _ => out.push((vec![r.clone()], end)),
        }
    }
    out.into_iter()
        .map(|(m, end)| (m, end + LATENESS))
        .collect()
}

fn on(route: &Route, out: &[Record]) -> Vec<Record> {
    out.iter().filter(|r| &r.route == route).cloned().collect()
}

/// What a metric or an alert says, without where it derives from.
fn said(records: &[Record]) -> Vec<(i64, String, Vec<sluice_plugin_sdk::Attribute>)> {
    records
        .iter()
        .map(|r| (r.timestamp, r.body.clone(), r.attributes.clone()))
        .collect()
}

/// `left` and `right` say the same, or the panic names the first window they differ in.
#[track_caller]
fn assert_same(left: &[Record], right: &[Record]) {
    let brief = |r: &Record| {
        let service = r.get_str("service.name").unwrap_or_default().to_owned();
        let start = (r.timestamp - T0) / S;
        let count = r.get("count").and_then(|v| v.as_i64());
        let kind = r.get_str("alert.kind").map(str::to_owned);
        (start, service, count, kind)
    };
    let (l, r) = (said(left), said(right));
    if let Some(i) = (0..l.len().max(r.len())).find(|&i| l.get(i) != r.get(i)) {
        panic!(
            "{} vs {} records; first difference at {i}: {:?} vs {:?}",
            l.len(),
            r.len(),
            left.get(i).map(brief),
            right.get(i).map(brief)
        );
    }
}

/// One host reading every partition.
fn one_host(records: &[Record]) -> Vec<Record> {
    let mut p = plugin("{}");
    let mut out = Vec::new();
    for (minute, tick) in minutes(records) {
        out.extend(p.process(minute).unwrap());
        out.extend(p.tick(tick).unwrap());
    }
    out
}

/// The partials topic: what the hosts emit on the partials route, in the order produced,
/// as the merge stage reads it back (its own offsets).
#[derive(Default)]
struct PartialsTopic {
    log: Vec<Record>,
}

impl PartialsTopic {
    fn append(&mut self, out: Vec<Record>) {
        let route = Route::Named("metric_partials".into());
        for r in out.into_iter().filter(|r| r.route == route) {
            let origin = Origin {
                topic: PARTIALS.into(),
                partition: 0,
                offset: self.log.len() as i64,
            };
            self.log.push(with_origin(&r, origin));
        }
    }
}

/// Three hosts, host `h` reading partition `h`; host 2 runs `lag` minutes behind the others
/// (a backlog). Returns the partials topic.
fn three_hosts(records: &[Record], lag: usize) -> PartialsTopic {
    let mut hosts: Vec<_> = (0..3).map(|_| plugin(r#"{"mode":"partial"}"#)).collect();
    let mut topic = PartialsTopic::default();
    let per_host: Vec<Vec<(Vec<Record>, i64)>> = (0..3)
        .map(|h| {
            minutes(records)
                .into_iter()
                .map(|(m, tick)| {
                    (
                        m.into_iter()
                            .filter(|r| r.origin().partition == h)
                            .collect(),
                        tick,
                    )
                })
                .collect()
        })
        .collect();
    let steps = per_host[0].len();
    for step in 0..steps + lag {
        for (h, host) in hosts.iter_mut().enumerate() {
            let at = if h == 2 {
                step.checked_sub(lag)
            } else {
                Some(step)
            };
            let Some((minute, tick)) = at.and_then(|i| per_host[h].get(i)).cloned() else {
                continue;
            };
            let mut out = host.process(minute).unwrap();
            out.extend(host.tick(tick).unwrap());
            assert!(
                on(&Route::Metrics, &out).is_empty() && on(&Route::Alerts, &out).is_empty(),
                "a partial instance emits only partials"
            );
            topic.append(out);
        }
    }
    topic
}

/// The merge stage reading `topic` in batches of `batch` records.
fn merged(topic: &PartialsTopic, batch: usize) -> Vec<Record> {
    let mut m = plugin(MERGE);
    let mut out = Vec::new();
    for chunk in topic.log.chunks(batch) {
        out.extend(m.process(chunk.to_vec()).unwrap());
    }
    out
}

#[test]
fn three_hosts_merged_give_the_windows_and_alerts_of_one_host() {
    let records = traffic();
    let one = one_host(&records);
    let topic = three_hosts(&records, 0);
    let merged = merged(&topic, 7);

    let (one_metrics, one_alerts) = (on(&Route::Metrics, &one), on(&Route::Alerts, &one));
    assert!(one_metrics.len() >= 3 * 30, "{} windows", one_metrics.len());
    let kinds: Vec<_> = one_alerts
        .iter()
        .map(|a| (a.get_str("service.name"), a.get_str("alert.kind")))
        .collect();
    assert!(
        kinds.contains(&(Some("checkout"), Some("error_rate_spike"))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(Some("search"), Some("latency_p99_spike"))),
        "{kinds:?}"
    );

    // The last minute closes on the last tick, in every run.
    assert_same(&on(&Route::Metrics, &merged), &one_metrics);
    assert_same(&on(&Route::Alerts, &merged), &one_alerts);
    // Merged records derive from the partials read, so their offsets commit with them.
    assert!(merged.iter().all(|r| r.origin().topic == PARTIALS));
}

#[test]
fn each_host_alone_sees_a_third_of_a_service_and_misses_its_burst() {
    // Why the merge exists: three hosts in the default mode, each on its own partition.
    let records = traffic();
    let one = one_host(&records);
    let mut alerts = Vec::new();
    let mut counts = 0;
    for h in 0..3 {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.origin().partition == h)
            .cloned()
            .collect();
        let out = one_host(&mine);
        alerts.extend(on(&Route::Alerts, &out));
        let metrics = on(&Route::Metrics, &out);
        counts += metrics.len();
    }
    assert_eq!(
        counts,
        3 * on(&Route::Metrics, &one).len(),
        "every window split in three"
    );
    assert_ne!(said(&alerts), said(&on(&Route::Alerts, &one)));
}

#[test]
fn a_host_behind_its_log_holds_the_merged_windows_back_until_it_catches_up() {
    let records = traffic();
    let one = one_host(&records);
    // Host 2 is five minutes behind the others all along.
    let topic = three_hosts(&records, 5);
    let merged = merged(&topic, 5);
    assert_same(&on(&Route::Metrics, &merged), &on(&Route::Metrics, &one));
    assert_same(&on(&Route::Alerts, &merged), &on(&Route::Alerts, &one));
}

#[test]
fn a_replayed_partial_replaces_its_copy_and_a_split_window_sums() {
    let records = traffic();
    let topic = three_hosts(&records, 0);
    let reference = on(&Route::Metrics, &merged(&topic, 10_000));

    // A host that restarted from a snapshot emits a window's partials again: read twice,
    // they count once. Each partial is repeated just before the next mark.
    let mut replayed = PartialsTopic::default();
    let mut since_mark = Vec::new();
    for r in &topic.log {
        if r.get("metric.closed_until").is_some() {
            replayed.append(since_mark.clone());
            replayed.append(std::mem::take(&mut since_mark));
            replayed.append(vec![r.clone()]);
        } else {
            since_mark.push(r.clone());
        }
    }
    replayed.append(since_mark);
    assert!(replayed.log.len() > topic.log.len() * 3 / 2);
    let again = on(&Route::Metrics, &merged(&replayed, 64));
    assert_same(&again, &reference);

    // A hot reload splits one partition's window in two partials (two first offsets):
    // both count.
    let mut split = plugin(r#"{"mode":"merge","source_partitions":1}"#);
    let window = |first_offset: i64, count: i64| {
        let mut r = Record::new(Origin {
            topic: PARTIALS.into(),
            partition: 0,
            offset: first_offset,
        });
        r.route = Route::Named("metric_partials".into());
        r.timestamp = T0;
        for (k, v) in [
            ("metric.window.start", T0),
            ("metric.window.end", T0 + 60 * S),
            ("count", count),
            ("error_count", 1),
            ("metric.source.partition", 0),
            ("metric.source.first_offset", first_offset),
        ] {
            r.set(k, v);
        }
        r.set("service.name", "cart");
        r.set("metric.source.topic", "logs");
        r
    };
    let mut mark = Record::new(Origin {
        topic: PARTIALS.into(),
        partition: 0,
        offset: 9,
    });
    mark.set("metric.closed_until", T0 + 60 * S);
    mark.set("metric.source.topic", "logs");
    mark.set("metric.source.partition", 0);
    let out = split
        .process(vec![window(100, 4), window(170, 6), mark])
        .unwrap();
    let metrics = on(&Route::Metrics, &out);
    assert_eq!(metrics.len(), 1, "{out:?}");
    assert_eq!(
        (
            get_i(&metrics[0], "count"),
            get_i(&metrics[0], "error_count")
        ),
        (10, 2)
    );

    // A partial of a window already merged changes nothing: it is counted late.
    let late = split.process(vec![window(200, 5)]).unwrap();
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn a_partition_that_stops_marking_holds_windows_back_only_for_merge_wait_seconds() {
    let records = traffic();
    let topic = three_hosts(&records, 0);
    // Partition 2's host goes away after its first ten minutes and nobody takes over.
    let cut = T0 + 10 * 60 * S;
    let gone = |r: &&Record| {
        r.get_str("metric.source.topic") == Some("logs")
            && r.get("metric.source.partition").and_then(|v| v.as_i64()) == Some(2)
            && r.timestamp >= cut
    };
    let mut without = PartialsTopic::default();
    without.append(topic.log.iter().filter(|r| !gone(r)).cloned().collect());

    let mut m = plugin(r#"{"mode":"merge","source_partitions":3,"merge_wait_seconds":300}"#);
    let out = m.process(without.log.clone()).unwrap();
    let metrics = on(&Route::Metrics, &out);
    let starts: Vec<i64> = metrics
        .iter()
        .map(|r| get_i(r, "metric.window.start"))
        .collect();
    // Windows after the cut were merged from the two partitions left, up to the newest
    // mark less the windows still within the five minutes' wait.
    let newest = starts.iter().max().copied().unwrap();
    assert!(
        newest > cut + 15 * 60 * S,
        "merging stopped at {}",
        (newest - T0) / S
    );
    let count_at = |start: i64| -> i64 {
        metrics
            .iter()
            .filter(|r| get_i(r, "metric.window.start") == start)
            .map(|r| get_i(r, "count"))
            .sum()
    };
    let full = on(&Route::Metrics, &merged(&topic, 10_000));
    let full_at = |start: i64| -> i64 {
        full.iter()
            .filter(|r| get_i(r, "metric.window.start") == start)
            .map(|r| get_i(r, "count"))
            .sum()
    };
    assert_eq!(count_at(T0), full_at(T0), "before the cut: every partition");
    let after = cut + 5 * 60 * S;
    assert!(
        count_at(after) < full_at(after) && count_at(after) > full_at(after) / 2,
        "after the cut: two partitions of three ({} of {})",
        count_at(after),
        full_at(after)
    );
}

#[test]
fn the_merge_state_survives_a_restart_between_any_two_batches() {
    let records = traffic();
    let topic = three_hosts(&records, 0);
    let reference = merged(&topic, 50);
    let partials = SourcePartition::new(PARTIALS, 0);
    let mut m = plugin(MERGE);
    let mut out = Vec::new();
    for chunk in topic.log.chunks(50) {
        out.extend(m.process(chunk.to_vec()).unwrap());
        let state = m.snapshot(&partials).unwrap().expect("state kept");
        m = plugin(MERGE);
        m.restore(&partials, &state).unwrap();
    }
    assert_same(&on(&Route::Metrics, &out), &on(&Route::Metrics, &reference));
    assert_same(&on(&Route::Alerts, &out), &on(&Route::Alerts, &reference));

    // A snapshot of another mode is refused (the host starts the partition empty).
    let local = plugin("{}");
    assert!(local.snapshot(&partials).unwrap().is_none());
    let mut local = plugin("{}");
    let state = m.snapshot(&partials).unwrap().unwrap();
    let err = local.restore(&partials, &state).unwrap_err();
    assert!(err.to_string().contains("another mode"), "{err}");
}

#[test]
fn a_record_that_is_not_a_partial_is_dead_lettered_with_the_reason() {
    let mut m = plugin(MERGE);
    let mut r = record("cart", T0, false, Some(3.0));
    r.body = "GET /".into();
    let out = m.process(vec![r]).unwrap();
    assert_eq!(out.len(), 1);
    match &out[0].route {
        Route::Dlq(reason) => assert!(reason.contains("not a metrics partial"), "{reason}"),
        other => panic!("routed to {other:?}"),
    }

    // Partials from a config with other windows are refused, naming the fix.
    let mut ten = plugin(r#"{"mode":"partial","window_seconds":10}"#);
    let mut out = ten
        .process(vec![record("cart", T0 + S, false, Some(3.0))])
        .unwrap();
    out.extend(ten.tick(T0 + 3600 * S).unwrap());
    let mut topic = PartialsTopic::default();
    topic.append(out);
    assert!(!topic.log.is_empty());
    let out = m.process(topic.log).unwrap();
    assert!(
        out.iter()
            .all(|r| matches!(&r.route, Route::Dlq(reason) if reason.contains("window_seconds"))),
        "{out:?}"
    );
}

#[test]
fn partials_from_a_second_partition_of_the_partials_topic_are_dead_lettered_naming_the_fix() {
    let records = traffic();
    let topic = three_hosts(&records[..records.len() / 4], 0);
    let second: Vec<Record> = (topic.log.iter())
        .map(|r| {
            let mut origin = r.origin().clone();
            origin.partition = 1;
            with_origin(r, origin)
        })
        .collect();
    assert!(!second.is_empty());
    let mut m = plugin(MERGE);
    let out = m.process(second.clone()).unwrap();
    assert_eq!(out.len(), second.len(), "every partial comes back");
    assert!(
        out.iter().all(|r| matches!(&r.route,
            Route::Dlq(reason) if reason.contains("partition 1") && reason.contains("--partitions 1"))),
        "{:?}",
        out.first().map(|r| &r.route)
    );
    // The same partials on partition 0 are merged, not refused.
    let out = m.process(topic.log.clone()).unwrap();
    assert!(out.iter().all(|r| !matches!(r.route, Route::Dlq(_))));
    assert!(!on(&Route::Metrics, &out).is_empty());
}

#[test]
fn at_the_end_of_input_the_merge_emits_the_windows_it_holds() {
    let records = traffic();
    let topic = three_hosts(&records, 0);
    // Partition 2's partials and marks after the first ten minutes never come.
    let cut = T0 + 10 * 60 * S;
    let mut held = PartialsTopic::default();
    held.append(
        (topic.log.iter())
            .filter(|r| {
                r.get("metric.source.partition").and_then(|v| v.as_i64()) != Some(2)
                    || r.timestamp < cut
            })
            .cloned()
            .collect(),
    );
    // A long wait: partition 2 holds every window after its last mark.
    let mut m = plugin(r#"{"mode":"merge","source_partitions":3,"merge_wait_seconds":3600}"#);
    let before = on(&Route::Metrics, &m.process(held.log).unwrap());
    let last = before.iter().map(|r| get_i(r, "metric.window.start")).max();
    assert!(last < Some(cut), "merged past the cut: {last:?}");
    // A hot reload or a stop without state: what is held comes out, not lost.
    let at_end = on(&Route::Metrics, &m.tick(i64::MAX).unwrap());
    let mut starts: Vec<i64> = (at_end.iter())
        .map(|r| (get_i(r, "metric.window.start") - T0) / (60 * S))
        .collect();
    starts.dedup();
    // Its last mark closed minute 9's start; minutes 9 to 30 were held.
    assert_eq!(starts, (9..=30).collect::<Vec<i64>>());
}
