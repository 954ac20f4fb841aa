//! Sluice over the secured listeners of the local stack's Kafka (`dev/stack up kafka`
//! makes them: TLS, mutual TLS, and SASL over TLS with PLAIN, SCRAM and unsecured
//! OAUTHBEARER tokens): records consumed and produced through each, OAUTHBEARER tokens
//! refreshed while the host runs, and refused credentials stopping the host at start
//! with the key to check. Topics are set up and read on the plaintext listener.

mod common;

use common::{Host, consume, create_topic, kafka_config, plugin, produce, unique};
use std::time::{Duration, Instant};

/// A value `dev/stack env` exports for the secured listeners.
fn stack(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run `eval \"$(dev/stack env)\"`; a stack started before the secured listeners existed needs `dev/stack restart kafka`"
        )
    })
}

fn lines(from: usize, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let line = format!(r#"{{"seq":{i},"service":"svc-{}","msg":"m {i}"}}"#, i % 3);
            (Some(format!("svc-{}", i % 3)), line.into_bytes())
        })
        .collect()
}

/// Topics for one test: the source with `n` lines in it, cleaned and dead letters.
fn topics(n: usize) -> (String, String, String) {
    let (source, cleaned, dlq) = (unique("sec-raw"), unique("sec-cleaned"), unique("sec-dlq"));
    create_topic(&source, 2);
    create_topic(&cleaned, 2);
    create_topic(&dlq, 1);
    produce(&source, &lines(0, n));
    (source, cleaned, dlq)
}

/// The usual test config with every Kafka client on `listener`, each with `security`.
fn secured_config(
    source: &str,
    cleaned: &str,
    dlq: &str,
    listener: &str,
    security: &str,
) -> String {
    let mut config = kafka_config(
        source,
        cleaned,
        dlq,
        &[("passthrough", plugin("fixtures/hostile"))],
    )
    .replace(&common::brokers(), listener);
    for part in ["source", "sinks.cleaned", "sinks.dlq"] {
        config.push_str(&format!("\n[{part}.security]\n{security}\n"));
    }
    config
}

/// Run a host on `config` until `n` records reached `cleaned`; stop it cleanly.
fn flows(config: &str, cleaned: &str, n: usize) -> Host {
    let mut host = Host::start(config);
    let out = consume(
        cleaned,
        n,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    assert!(host.is_running(), "host died:\n{}", host.log());
    assert_eq!(
        out.len(),
        n,
        "{} of {n} arrived:\n{}",
        out.len(),
        host.log()
    );
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());
    host
}

#[test]
fn consumes_and_produces_over_tls() {
    let (source, cleaned, dlq) = topics(300);
    let security = format!("ca_file = {:?}", stack("SLUICE_KAFKA_CA"));
    let config = secured_config(
        &source,
        &cleaned,
        &dlq,
        &stack("SLUICE_KAFKA_TLS"),
        &security,
    );
    flows(&config, &cleaned, 300);
}

#[test]
fn consumes_and_produces_over_mutual_tls() {
    let (source, cleaned, dlq) = topics(300);
    let security = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        stack("SLUICE_KAFKA_CA"),
        stack("SLUICE_KAFKA_CLIENT_CERT"),
        stack("SLUICE_KAFKA_CLIENT_KEY"),
    );
    let config = secured_config(
        &source,
        &cleaned,
        &dlq,
        &stack("SLUICE_KAFKA_MTLS"),
        &security,
    );
    flows(&config, &cleaned, 300);
}

#[test]
fn consumes_and_produces_with_scram() {
    let (source, cleaned, dlq) = topics(300);
    let security = format!(
        "protocol = \"sasl_tls\"\nca_file = {:?}\nsasl_mechanism = \"scram-sha-512\"\nusername = {:?}\npassword = {:?}",
        stack("SLUICE_KAFKA_CA"),
        stack("SLUICE_KAFKA_USER"),
        stack("SLUICE_KAFKA_PASSWORD"),
    );
    let config = secured_config(
        &source,
        &cleaned,
        &dlq,
        &stack("SLUICE_KAFKA_SASL"),
        &security,
    );
    flows(&config, &cleaned, 300);
}

/// Tokens living 15 s (the shortest allowed): librdkafka asks for a new one every ~12 s,
/// and the broker ends a session when its token expires, so records keep flowing past the
/// first tokens' expiry only if the refreshed tokens reach the broker (re-authentication).
#[test]
fn oauthbearer_tokens_are_refreshed_while_the_host_runs() {
    let (source, cleaned, dlq) = topics(100);
    let security = format!(
        "ca_file = {:?}\nauth = \"unsecured_jwt\"\nusername = \"sluice-test\"\ntoken_lifetime_ms = 15000",
        stack("SLUICE_KAFKA_CA"),
    );
    let config = secured_config(
        &source,
        &cleaned,
        &dlq,
        &stack("SLUICE_KAFKA_SASL"),
        &security,
    );
    let mut host = Host::start(&config);
    let first = consume(
        &cleaned,
        100,
        Duration::from_secs(60),
        Duration::from_millis(200),
    );
    assert_eq!(first.len(), 100, "before any refresh:\n{}", host.log());

    // The consumer and a sink's producer each refresh their token several times (their
    // first tokens have expired by then).
    let made = |part: &str| {
        let line = format!("OAUTHBEARER token made part={part} ");
        host.log().matches(&line).count()
    };
    let started = Instant::now();
    while (made("source") < 3 || made("sinks.cleaned") < 3)
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        made("source") >= 3 && made("sinks.cleaned") >= 3,
        "tokens were not refreshed ({} for the source, {} for sink cleaned):\n{}",
        made("source"),
        made("sinks.cleaned"),
        host.log()
    );
    produce(&source, &lines(100, 100));
    let all = consume(
        &cleaned,
        200,
        Duration::from_secs(60),
        Duration::from_millis(500),
    );
    assert!(host.is_running(), "host died:\n{}", host.log());
    assert_eq!(all.len(), 200, "after the refreshes:\n{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());
}

/// Refused credentials stop the host at start with an error naming the keys, whether the
/// plugin state topic's clients meet them first or the consumer does.
#[test]
fn a_wrong_password_stops_the_host_at_start_naming_the_key() {
    let (source, cleaned, dlq) = topics(10);
    let security = format!(
        "ca_file = {:?}\nsasl_mechanism = \"scram-sha-256\"\nusername = {:?}\npassword = \"not-the-password\"",
        stack("SLUICE_KAFKA_CA"),
        stack("SLUICE_KAFKA_USER"),
    );
    let config = secured_config(
        &source,
        &cleaned,
        &dlq,
        &stack("SLUICE_KAFKA_SASL"),
        &security,
    );
    let without_state = config.replace(
        "batch_max_wait_ms = 20",
        "batch_max_wait_ms = 20\nplugin_state = false",
    );
    for config in [config, without_state] {
        let mut host = Host::start(&config);
        let started = Instant::now();
        while host.is_running() && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!host.is_running(), "still running:\n{}", host.log());
        let status = host.child.wait().unwrap();
        let log = host.log();
        assert!(!status.success(), "{log}");
        // The error the host stops with, not only the sinks' logged complaints.
        let fatal = log
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        assert!(
            fatal.contains("refused") && fatal.contains("`source.security.password`"),
            "{log}"
        );
        eprintln!("{fatal}");
    }
}
