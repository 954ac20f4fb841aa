//! Fail states through the real binary: visible on `/readyz` and `/metrics`, raised when a
//! metrics plugin traps (while logs keep flowing), cleared when it recovers.

mod common;

use common::admin::{admin_address, get};
use common::{Host, consume, create_topic, kafka_config, plugin, produce, unique};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(from: usize, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let line = format!(r#"{{"seq":{i},"service":"api","msg":"ok {i}"}}"#);
            (Some("api".to_owned()), line.into_bytes())
        })
        .collect()
}

#[test]
fn a_trapping_metrics_plugin_raises_metrics_generation_failed_while_logs_flow() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    // The hostile fixture stands in for a metrics plugin that traps; it only observes, so
    // its failures must not stop the logs. No ticks, so only batches change its health.
    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("metrics", plugin("fixtures/hostile"))],
    )
    .replace("tick_interval_ms = 200", "tick_interval_ms = 3600000")
    .replace("listen = \"\"", "listen = \"127.0.0.1:0\"")
    .replace(
        "name = \"metrics\"",
        "name = \"metrics\"\nrole = \"metrics\"\non_failure = \"pass_through\"",
    );
    let mut host = Host::start(&config);
    let admin = admin_address(&host);
    wait_for("readiness", Duration::from_secs(30), || {
        get(&admin, "/readyz").0 == 200
    });
    assert_eq!(get(&admin, "/healthz"), (200, "ok\n".to_owned()));

    produce(&source, &lines(0, 50));
    produce(&source, &[(Some("api".into()), b"hostile:trap".to_vec())]);
    wait_for("MetricsGenerationFailed", Duration::from_secs(30), || {
        let (status, body) = get(&admin, "/readyz");
        status == 503 && body.contains("MetricsGenerationFailed") && body.contains("PluginFailing")
    });
    let (_, metrics) = get(&admin, "/metrics");
    assert!(
        metrics.contains(r#"sluice_fail_state_raised_total{state="MetricsGenerationFailed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_plugin_traps_total{plugin="metrics"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_ready 0"));

    // Logs keep flowing, the trapping batch included; good batches then clear the state.
    for i in 0..4 {
        produce(&source, &lines(100 + i * 10, 10));
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = consume(
        &cleaned,
        91,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(out.len(), 91, "{}", host.log());
    wait_for("recovery", Duration::from_secs(30), || {
        get(&admin, "/readyz").0 == 200
    });
    let (_, metrics) = get(&admin, "/metrics");
    assert!(metrics.contains(r#"sluice_fail_state_active{state="MetricsGenerationFailed"} 0"#));
    assert!(
        metrics.contains("sluice_source_consumed_total 91"),
        "{metrics}"
    );
    assert!(host.terminate().success());
}
