//! Drop-in plugin reload on a running host: a broken file is rejected and the chain keeps
//! going; a good new version is swapped in between batches, with no record lost.

mod common;

use common::{Host, consume, create_topic, kafka_config, plugin, produce, unique};
use std::time::{Duration, Instant};

fn lines(from: usize, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let line = format!(r#"{{"seq":{i},"svc":"api","level":"WARNING","msg":"m {i}"}}"#);
            (Some("api".to_owned()), line.into_bytes())
        })
        .collect()
}

fn wait_log(host: &Host, needle: &str) {
    let started = Instant::now();
    while !host.log().contains(needle) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no `{needle}` in the log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dropped_in_plugins_are_validated_then_swapped_in() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let dir = tempfile::tempdir().unwrap();
    let drop_in = dir.path().join("transform.wasm");
    std::fs::copy(plugin("fixtures/hostile"), &drop_in).unwrap();
    let config = kafka_config(&source, &cleaned, &dlq, &[("transform", drop_in.clone())])
        + "\n[reload]\ndebounce_ms = 200\n";
    let mut host = Host::start(&config);
    wait_log(&host, "watching for plugin changes");

    // Version 1 passes records through untouched.
    produce(&source, &lines(0, 20));
    let out = consume(
        &cleaned,
        20,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|m| m.json().get("service.name").is_none()));

    // A broken file is rejected; the running version keeps serving.
    std::fs::write(&drop_in, b"not a component").unwrap();
    wait_log(&host, "new plugin version rejected");
    produce(&source, &lines(20, 20));
    let out = consume(
        &cleaned,
        40,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    assert_eq!(out.len(), 40, "{}", host.log());

    // Version 2 (normalize) is swapped in: later records come out normalized.
    let staged = dir.path().join("transform.wasm.tmp");
    std::fs::copy(plugin("normalize"), &staged).unwrap();
    std::fs::rename(&staged, &drop_in).unwrap();
    wait_log(&host, "new plugin version in service");
    produce(&source, &lines(40, 20));
    let out = consume(
        &cleaned,
        60,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    assert_eq!(out.len(), 60, "{}", host.log());
    let last = out.last().unwrap().json();
    assert_eq!(last["service.name"], "api", "{last}");
    assert_eq!(last["log.level"], "warn");
    assert!(host.is_running());
    assert!(host.terminate().success(), "{}", host.log());
}

/// A generator-style line for `service` at `second` seconds past 10:00.
fn timed_line(second: u32) -> (Option<String>, Vec<u8>) {
    let line = format!(
        r#"{{"ts":"2026-11-25T10:{:02}:{:02}.000Z","level":"info","service":"api","msg":"m {second}"}}"#,
        second / 60,
        second % 60
    );
    (Some("api".to_owned()), line.into_bytes())
}

#[test]
fn a_reloaded_metrics_plugin_hands_over_its_open_windows() {
    let (source, cleaned, dlq, metrics) = (
        unique("raw"),
        unique("cleaned"),
        unique("dlq"),
        unique("metrics"),
    );
    for t in [&source, &cleaned, &dlq, &metrics] {
        create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let drop_in = dir.path().join("metrics.wasm");
    std::fs::copy(plugin("metrics"), &drop_in).unwrap();
    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[
            ("normalize", plugin("normalize")),
            ("metrics", drop_in.clone()),
        ],
    ) + &common::kafka_sink_toml("metrics", &metrics, "metrics")
        + "\n[reload]\ndebounce_ms = 200\n";
    let mut host = Host::start(&config);
    wait_log(&host, "watching for plugin changes");

    // Half of the 10:00 window, then a new version of the plugin, then the other half.
    produce(&source, &(0..30).map(timed_line).collect::<Vec<_>>());
    consume(
        &cleaned,
        30,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    let staged = dir.path().join("metrics.wasm.tmp");
    std::fs::copy(plugin("metrics"), &staged).unwrap();
    std::fs::rename(&staged, &drop_in).unwrap();
    wait_log(&host, "new plugin version in service");
    // The rest of the window, then a line far enough ahead to close it.
    let mut rest: Vec<_> = (30..60).map(timed_line).collect();
    rest.push(timed_line(300));
    produce(&source, &rest);

    let started = Instant::now();
    let counted = loop {
        let out = consume(&metrics, 1, Duration::from_secs(10), Duration::from_secs(1));
        let counted: i64 = out
            .iter()
            .map(|m| m.json())
            .filter(|v| v["@timestamp"].as_str() == Some("2026-11-25T10:00:00.000000000Z"))
            .map(|v| v["count"].as_i64().unwrap())
            .sum();
        if counted >= 60 || started.elapsed() > Duration::from_secs(60) {
            break counted;
        }
    };
    assert_eq!(
        counted,
        60,
        "the 10:00 window's records before the reload were dropped\n{}",
        host.log()
    );
    assert!(host.terminate().success(), "{}", host.log());
}
