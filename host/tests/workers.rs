//! Several pipeline workers on one host: the source's partitions spread over them, yet the
//! metrics of a service whose logs come through every partition are one window per
//! (service, minute) with the whole service's counts, and its error burst raises the same
//! alerts as with one worker.

mod common;

use common::{consume, create_topic, kafka_sink_toml, plugin, unique};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

const WINDOW_NS: i64 = 60_000_000_000;

/// `sluice gen` lines with an error burst in checkout, sent round robin over `partitions`:
/// every service comes through every partition (a producer that does not key by service).
fn generate_round_robin(topic: &str, partitions: i32, count: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gen", "--output", "-", "--log-level", "warn", "--seed", "7"])
        .args([
            "--start",
            "2026-11-25T10:00:00Z",
            "--events-per-second",
            "9",
        ])
        .args(["--duplicates", "0", "--burst", "checkout@600+180:0.6"])
        .args(["--count", &count.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let partitions: Vec<i32> = (0..partitions).collect();
    common::send_round_robin(topic, &out.stdout, &partitions);
}

struct Outputs {
    cleaned: String,
    metrics: String,
    alerts: String,
}

/// normalize → dedup → metrics over `source` with `workers` pipeline workers.
fn start(source: &str, workers: usize, extra_metrics: &str) -> (common::Host, Outputs) {
    let out = Outputs {
        cleaned: unique("wk-cleaned"),
        metrics: unique("wk-metrics"),
        alerts: unique("wk-alerts"),
    };
    for t in [&out.cleaned, &out.metrics, &out.alerts] {
        create_topic(t, 1);
    }
    let mut c = common::kafka_source_toml(source, &unique("workers"), "").replace(
        "tick_interval_ms = 200",
        &format!("tick_interval_ms = 200\nworkers = {workers}"),
    );
    for name in ["normalize", "dedup", "metrics"] {
        c.push_str(&format!(
            "\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n",
            plugin(name).display()
        ));
    }
    c.push_str("role = \"metrics\"\non_failure = \"pass_through\"\n");
    c.push_str(extra_metrics);
    c.push_str(&kafka_sink_toml("cleaned", &out.cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("metrics", &out.metrics, "metrics"));
    c.push_str(&kafka_sink_toml("alerts", &out.alerts, "alerts"));
    c.push_str(&kafka_sink_toml("dlq", &unique("wk-dlq"), "dlq"));
    (common::Host::start(&c), out)
}

/// Per (service, window start), every metric record's (count, errors).
type Windows = BTreeMap<(String, i64), Vec<(u64, u64)>>;
/// (service, kind, window start) of every alert.
type Alerts = BTreeSet<(String, String, String)>;

/// The windows closed before `before`.
fn windows(metrics: &[common::Consumed], before: i64) -> Windows {
    let mut out = Windows::new();
    for m in metrics {
        let v: Value = m.json();
        let start = v["metric.window.start"].as_i64().unwrap();
        if start < before {
            let service = v["service.name"].as_str().unwrap().to_owned();
            let counts = (
                v["count"].as_u64().unwrap(),
                v["error_count"].as_u64().unwrap(),
            );
            out.entry((service, start)).or_default().push(counts);
        }
    }
    out
}

fn alerts(topic: &str) -> Alerts {
    consume(topic, 1, Duration::from_secs(20), Duration::from_secs(3))
        .iter()
        .map(common::Consumed::json)
        .map(|a: Value| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            let window = a["alert.window.start"].to_string();
            (field("service.name"), field("alert.kind"), window)
        })
        .collect()
}

/// What one host made of the input: its windows closed by event time, and its alerts.
fn outcome(host: &mut common::Host, out: &Outputs, lines: usize) -> (Windows, Alerts) {
    // A few generated lines repeat another's key: dedup drops them.
    let at_least = lines * 99 / 100;
    let cleaned = consume(
        &out.cleaned,
        at_least,
        Duration::from_secs(300),
        Duration::from_secs(5),
    );
    assert!(host.is_running(), "host stopped:\n{}", host.log());
    assert!(
        cleaned.len() >= at_least,
        "{} cleaned records\n{}",
        cleaned.len(),
        host.log()
    );
    // The last event time is ~lines/9 s after the start; with 30 s of lateness, windows two
    // minutes before it are closed by event time alone, whatever the stop does.
    let end = 1_795_600_800_000_000_000 + (lines as i64 / 9) * 1_000_000_000;
    let before = end - end.rem_euclid(WINDOW_NS) - 2 * WINDOW_NS;
    let metrics = consume(
        &out.metrics,
        1,
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let alerts = alerts(&out.alerts);
    assert!(host.terminate().success(), "{}", host.log());
    (windows(&metrics, before), alerts)
}

#[test]
fn three_workers_give_one_window_per_service_and_the_same_alerts_as_one() {
    let source = unique("wk-raw");
    create_topic(&source, 3);
    let lines = 9_000;
    generate_round_robin(&source, 3, lines);

    let (mut one, one_out) = start(&source, 1, "");
    let (mut three, three_out) = start(&source, 3, "");
    let (one_windows, one_alerts) = outcome(&mut one, &one_out, lines);
    let (three_windows, three_alerts) = outcome(&mut three, &three_out, lines);

    assert!(one_windows.len() > 50, "{} windows", one_windows.len());
    let split: Vec<_> = (three_windows.iter())
        .filter(|(_, rows)| rows.len() != 1)
        .collect();
    assert!(split.is_empty(), "windows split over workers: {split:?}");
    assert_eq!(three_windows, one_windows);
    assert!(
        one_alerts
            .iter()
            .any(|(service, _, _)| service == "checkout"),
        "the checkout burst raised no alert: {one_alerts:?}"
    );
    assert_eq!(three_alerts, one_alerts);
}
