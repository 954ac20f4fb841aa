//! Stopping the real Kafka raises `KafkaUnavailable` and makes the host not ready; bringing
//! it back clears both. This stops the shared broker, so it is the only test in its binary
//! (cargo runs test binaries one after another).

mod common;

use common::{Host, create_topic, kafka_config, plugin, unique};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

/// Restarts Kafka however the test ends.
struct KafkaBack;

impl Drop for KafkaBack {
    fn drop(&mut self) {
        stack(&["up", "kafka"]);
    }
}

fn stack(args: &[&str]) {
    let status = Command::new(common::workspace_root().join("dev/stack"))
        .args(args)
        .status()
        .expect("dev/stack");
    assert!(status.success(), "dev/stack {args:?} failed");
}

fn readyz(address: &str) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return (0, String::new());
    };
    let _ = write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn wait_for(what: &str, host: &Host, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {what}:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stopping_kafka_raises_kafka_unavailable_and_recovery_clears_it() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = format!("127.0.0.1:{port}");
    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("passthrough", plugin("fixtures/hostile"))],
    )
    .replace("listen = \"\"", &format!("listen = \"{admin}\""))
    .replace(
        "batch_max_wait_ms = 20",
        "batch_max_wait_ms = 20\nunavailable_after_ms = 3000",
    );
    let mut host = Host::start(&config);
    wait_for("ready", &host, Duration::from_secs(30), || {
        readyz(&admin).0 == 200
    });

    let _restore = KafkaBack;
    stack(&["down", "kafka"]);
    wait_for("KafkaUnavailable", &host, Duration::from_secs(90), || {
        let (status, body) = readyz(&admin);
        status == 503 && body.contains("KafkaUnavailable")
    });
    assert!(host.is_running(), "the host must ride out the outage");

    stack(&["up", "kafka"]);
    wait_for("recovery", &host, Duration::from_secs(90), || {
        readyz(&admin).0 == 200
    });
    assert!(host.log().contains("Kafka brokers reachable again"));
    assert!(host.terminate().success(), "{}", host.log());
}
