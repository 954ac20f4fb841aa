//! End to end against the real Kafka of the local stack: raw-logs → plugin chain →
//! cleaned-logs, poison to the dead-letter topic, and nothing lost across a SIGKILL.

mod common;

use common::{
    Host, consume, create_topic, create_topic_with, kafka_config, kafka_sink_toml,
    kafka_source_toml, plugin, produce, unique,
};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// `n` JSON lines with a sequence number, keyed by one of four services.
fn numbered(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let service = ["checkout", "payments", "search", "auth"][i % 4];
            let line = format!(
                r#"{{"seq":{i},"service":"{service}","level":"info","msg":"request {i} done","http":{{"status":200}}}}"#
            );
            (Some(service.to_owned()), line.into_bytes())
        })
        .collect()
}

fn seq_of(m: &common::Consumed) -> i64 {
    m.json()["seq"].as_i64().expect("seq survives the chain")
}

#[test]
fn records_flow_in_order_and_poison_is_dead_lettered_with_reasons() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 3);
    create_topic(&cleaned, 3);
    create_topic(&dlq, 1);

    let n = 3_000;
    let mut messages = numbered(n);
    let poison: Vec<(Option<String>, Vec<u8>)> = vec![
        (None, Vec::new()),
        (None, b"\xff\xfe not utf-8".to_vec()),
        (None, br#"{"seq": 99999, "broken"#.to_vec()),
        (None, vec![b'x'; 100 * 1024]),
    ];
    messages.extend(poison.iter().cloned());
    produce(&source, &messages);

    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("passthrough", plugin("fixtures/hostile"))],
    )
    .replace(
        "batch_max_wait_ms = 20",
        "batch_max_wait_ms = 20\nmax_message_bytes = 65536",
    );
    let mut host = Host::start(&config);
    let out = consume(&cleaned, n, Duration::from_secs(90), Duration::from_secs(2));
    let dead = consume(&dlq, 4, Duration::from_secs(30), Duration::from_secs(1));
    assert!(host.is_running(), "host died:\n{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());

    // Every record exactly once (a clean run has no replays), in order per service.
    let seqs: Vec<i64> = out.iter().map(seq_of).collect();
    let unique_seqs: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(
        out.len(),
        n,
        "{} records arrived:\n{}",
        out.len(),
        host.log()
    );
    assert_eq!(unique_seqs.len(), n);
    // Each service's records stay in one source partition and must come out in order.
    let mut by_service: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &out {
        let service = m.json()["service"].as_str().unwrap().to_owned();
        by_service.entry(service).or_default().push(seq_of(m));
    }
    assert_eq!(by_service.len(), 4);
    for (service, seqs) in by_service {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{service} out of order"
        );
    }
    assert!(out.iter().all(|m| m.json()["@timestamp"].is_string()));

    let reasons: Vec<&str> = dead
        .iter()
        .map(|m| m.header("sluice.dlq.reason").expect("reason header"))
        .collect();
    assert_eq!(dead.len(), 4, "dead letters: {reasons:?}");
    for expected in [
        "empty message",
        "not valid UTF-8",
        "invalid JSON",
        "exceeds max_message_bytes",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter for `{expected}` in {reasons:?}"
        );
    }
    for m in &dead {
        assert_eq!(m.header("sluice.origin.topic"), Some(source.as_str()));
        assert!(m.header("sluice.origin.offset").is_some());
    }
    // The original bytes are kept, so the dead-letter topic can be replayed.
    assert!(dead.iter().any(|m| m.payload == b"\xff\xfe not utf-8"));
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 3);
    create_topic(&cleaned, 3);
    create_topic(&dlq, 1);
    let n = 30_000;
    produce(&source, &numbered(n));

    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("passthrough", plugin("fixtures/hostile"))],
    );
    let mut first = Host::start(&config);
    // Let it get part of the way, then kill it without warning.
    let partial = consume(&cleaned, 3_000, Duration::from_secs(60), Duration::ZERO);
    assert!(
        partial.len() >= 3_000,
        "host made no progress:\n{}",
        first.log()
    );
    first.kill();
    let before_restart = consume(&cleaned, 0, Duration::from_secs(5), Duration::from_secs(1)).len();

    // The same group resumes from its last commit: replays are allowed, losses are not.
    let mut second = Host::start(&config);
    let out = consume(
        &cleaned,
        n,
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    assert!(second.terminate().success(), "{}", second.log());
    let seen: HashSet<i64> = out.iter().map(seq_of).collect();
    let missing: Vec<i64> = (0..n as i64)
        .filter(|s| !seen.contains(s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {n} records missing after the crash, e.g. {missing:?} (killed after {before_restart} were out)",
        n - seen.len()
    );
    assert!(out.len() >= n);
}

/// Three records among 600 whose JSON is far wider than the others.
const WIDE: [usize; 3] = [100, 301, 599];

/// Run 600 records, `WIDE` among them, into a cleaned topic created with
/// `topic_settings` through a sink with `sink_options` (TOML lines). Check that every
/// other record arrived exactly once, and the wide ones went to the dead-letter topic with
/// the sink's reason.
fn run_wide_records(topic_settings: &[(&str, &str)], sink_options: &str) {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 2);
    create_topic_with(&cleaned, 2, topic_settings);
    create_topic(&dlq, 1);

    let n = 600;
    let mut messages = numbered(n);
    for &i in &WIDE {
        let line = format!(
            r#"{{"seq":{i},"service":"wide","msg":"{}"}}"#,
            "w".repeat(3_000)
        );
        messages[i] = (Some("wide".into()), line.into_bytes());
    }
    produce(&source, &messages);

    let mut config = kafka_source_toml(&source, &unique("sluice-test"), "");
    config.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    config.push_str(&format!("[sinks.cleaned.options]\n{sink_options}\n"));
    config.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    let mut host = Host::start(&config);
    let out = consume(
        &cleaned,
        n - WIDE.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let dead = consume(
        &dlq,
        WIDE.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert!(host.is_running(), "host died:\n{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());

    let delivered: HashSet<i64> = out.iter().map(seq_of).collect();
    assert_eq!(out.len(), n - WIDE.len(), "{}", host.log());
    assert_eq!(delivered.len(), out.len(), "each record once");
    assert!(WIDE.iter().all(|i| !delivered.contains(&(*i as i64))));
    let mut refused: Vec<i64> = dead.iter().map(seq_of).collect();
    refused.sort_unstable();
    assert_eq!(refused, WIDE.map(|i| i as i64), "{}", host.log());
    for m in &dead {
        let reason = m.header("sluice.dlq.reason").expect("reason header");
        assert!(reason.contains("sink `cleaned` rejected it"), "{reason}");
        assert_eq!(m.header("sluice.origin.topic"), Some(source.as_str()));
        // The dead letter is the record as the sink would have written it.
        assert_eq!(m.json()["service"], "wide");
        assert!(m.json()["@timestamp"].is_string());
    }
}

/// The client refuses the wide records before sending them: they exceed the producer's
/// own `message.max.bytes`.
#[test]
fn a_record_the_producer_refuses_is_dead_lettered_and_the_rest_delivered() {
    run_wide_records(&[], r#""message.max.bytes" = "2000""#);
}

/// The broker, not the client, refuses the wide records: the cleaned topic takes messages
/// of at most 2,000 bytes while the producer would send up to its default 1 MB. The
/// refusal comes back in a delivery report, after the records left the host.
#[test]
fn a_record_the_broker_refuses_is_dead_lettered_and_the_rest_delivered() {
    // The broker checks sizes per batch as sent: uncompressed batches of one message each
    // make it refuse exactly the wide records.
    run_wide_records(
        &[("max.message.bytes", "2000")],
        "\"compression.type\" = \"none\"\n\"batch.num.messages\" = \"1\"",
    );
}

#[test]
fn offsets_are_committed_while_the_host_runs_not_only_when_it_stops() {
    // Small batches: one store of completed offsets often advances a partition twice.
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 3);
    create_topic(&cleaned, 3);
    create_topic(&dlq, 1);
    let n = 3_000;
    produce(&source, &numbered(n));
    let group = unique("running-commits");
    let mut config = kafka_source_toml(&source, &group, "")
        .replace("batch_max_records = 200", "batch_max_records = 10");
    config.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    config.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    let mut host = Host::start(&config);
    let out = consume(&cleaned, n, Duration::from_secs(90), Duration::from_secs(1));
    assert_eq!(out.len(), n, "{}", host.log());
    // A crash now must replay nothing: every partition's offset is committed while the
    // host runs (auto-commit of the stored offsets, every second).
    let started = std::time::Instant::now();
    while common::committed(&group, &source) < n as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "committed {} of {n} while running: {:?}\n{}",
            common::committed(&group, &source),
            common::committed_offsets(&group, &source, 3),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(host.terminate().success(), "{}", host.log());
}
