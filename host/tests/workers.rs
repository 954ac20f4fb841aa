//! Several pipeline workers on one host: the source's partitions spread over them, yet the
//! metrics of a service whose logs come through every partition are one window per
//! (service, minute) with the whole service's counts, and its error burst raises the same
//! alerts as with one worker.

mod common;

use common::metrics::{
    Alerts, Windows, alerts, chain_toml, closed_before, generate_round_robin, split, windows,
};
use common::{consume, create_topic, kafka_sink_toml, unique};
use std::time::Duration;

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
    c.push_str(&chain_toml(extra_metrics));
    c.push_str(&kafka_sink_toml("cleaned", &out.cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("metrics", &out.metrics, "metrics"));
    c.push_str(&kafka_sink_toml("alerts", &out.alerts, "alerts"));
    c.push_str(&kafka_sink_toml("dlq", &unique("wk-dlq"), "dlq"));
    (common::Host::start(&c), out)
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
    // Windows closed by event time alone, whatever the stop does.
    let before = closed_before(lines);
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
    let split = split(&three_windows);
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
