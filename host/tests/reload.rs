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
