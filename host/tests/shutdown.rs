//! Stopping: SIGTERM while a sink is down must not hang past `pipeline.drain_timeout_ms`,
//! and must not commit what the sink never wrote.

mod common;

use common::proxy::DelayProxy;
use common::{Host, committed, create_topic, kafka_sink_toml, kafka_source_toml, produce, unique};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

fn search_url() -> String {
    std::env::var("SLUICE_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// Documents in `index` after a refresh (0 while it does not exist yet).
fn indexed(index: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let _ = client
            .post(format!("{}/{index}/_refresh", search_url()))
            .send()
            .await;
        let Ok(response) = client
            .get(format!("{}/{index}/_count", search_url()))
            .send()
            .await
        else {
            return 0;
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["count"].as_u64().unwrap_or(0)
    })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn config(source: &str, group: &str, dlq: &str, url: &str, namespace: &str) -> String {
    kafka_source_toml(source, group, "")
        .replace("[pipeline]\n", "[pipeline]\ndrain_timeout_ms = 3000\n")
        + &format!(
            r#"
[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "{url}"
index = {{ mode = "data_stream", dataset = "sluice", namespace = "{namespace}" }}
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 500
"#
        )
        + &kafka_sink_toml("dlq", dlq, "dlq")
}

fn lines(from: usize, to: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let line = format!(r#"{{"message":"line {i}","seq":{i},"service":"shop"}}"#);
            (None, line.into_bytes())
        })
        .collect()
}

#[test]
fn sigterm_during_a_sink_outage_stops_within_the_drain_timeout_and_commits_nothing_unwritten() {
    let (source, dlq, group) = (unique("stop-raw"), unique("stop-dlq"), unique("stop"));
    create_topic(&source, 1);
    create_topic(&dlq, 1);
    let namespace = unique("stop").replace('-', "");
    let stream = format!("logs-sluice-{namespace}");
    let target = search_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();

    let proxy = DelayProxy::start(target, Duration::ZERO);
    let mut host = Host::start(&config(&source, &group, &dlq, &proxy.url(), &namespace));
    produce(&source, &lines(0, 100));
    wait_for("100 documents", Duration::from_secs(120), || {
        indexed(&stream) == 100
    });
    wait_for("the commit of 100", Duration::from_secs(30), || {
        committed(&group, &source) == 100
    });

    // The engine goes away; 50 more lines are read but cannot be written.
    proxy.cut();
    produce(&source, &lines(100, 150));
    wait_for("the sink to notice", Duration::from_secs(60), || {
        host.log().contains("SinkUnavailable") || host.log().contains("retrying")
    });

    let asked = Instant::now();
    let status = host.terminate();
    let took = asked.elapsed();
    // One drain timeout for the whole shutdown (source and sinks), plus the time to exit.
    assert!(
        took < Duration::from_millis(5_500),
        "stopping took {took:?} with drain_timeout_ms = 3000\n{}",
        host.log()
    );
    assert!(
        !status.success(),
        "an incomplete drain must not look like a clean stop"
    );
    assert!(host.log().contains("drain_timeout_ms"), "{}", host.log());
    assert_eq!(
        committed(&group, &source),
        100,
        "offsets of records the sink never wrote were committed"
    );

    // Back up: the next start writes the 50, once.
    let mut host = Host::start(&config(&source, &group, &dlq, &search_url(), &namespace));
    wait_for("150 documents", Duration::from_secs(120), || {
        indexed(&stream) == 150
    });
    wait_for("the commit of 150", Duration::from_secs(30), || {
        committed(&group, &source) == 150
    });
    assert!(host.terminate().success(), "{}", host.log());
}
