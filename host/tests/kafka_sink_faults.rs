//! The Kafka sink against destinations that refuse: a record too large for any topic, a
//! dead-letter topic that takes only small messages, and a sink topic deleted mid-run.
//! Nothing is lost, nothing crash-loops, and only what is refused for good is dead-lettered.

mod common;

use common::admin::{admin_address, get};
use common::{
    Host, committed_offsets, consume, create_topic, create_topic_with, delete_topic,
    kafka_sink_toml, kafka_source_toml, produce, unique,
};
use std::time::{Duration, Instant};

/// The size of the oversized line: under the source's and the broker's 1 MiB limits, over
/// the producer's default `message.max.bytes` (1,000,000) once it is a cleaned record.
const BIG: usize = 1_040_000;

/// A JSON line of exactly `BIG` bytes whose text does not compress (so a broker's size
/// check sees what was written).
fn big_line() -> Vec<u8> {
    let head = r#"{"seq":0,"service":"big","msg":""#;
    let tail = r#""}"#;
    let mut line = head.as_bytes().to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while line.len() < BIG - tail.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        line.push(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize]);
    }
    line.extend_from_slice(tail.as_bytes());
    assert_eq!(line.len(), BIG);
    line
}

fn small_line(seq: usize) -> Vec<u8> {
    format!(r#"{{"seq":{seq},"service":"small","msg":"line {seq}"}}"#).into_bytes()
}

fn seq_of(m: &common::Consumed) -> i64 {
    m.json()["seq"].as_i64().expect("seq survives")
}

/// A config reading `source` as `group`, with Kafka sinks `cleaned` and `dlq`; `cleaned`
/// and `dlq` get the extra TOML lines in their `options` tables.
fn config(source: &str, group: &str, cleaned: &str, dlq: &str, admin: &str) -> String {
    let mut c = kafka_source_toml(source, group, admin);
    c.push_str(&kafka_sink_toml("cleaned", cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("dlq", dlq, "dlq"));
    c
}

/// Produce the big line then a small one; check the small one arrives, the big one is
/// dead-lettered once with its size and hash, the host keeps running, exits 0 on SIGTERM
/// and has committed past both. Returns the dead letter.
fn run_big_then_small(dlq_settings: &[(&str, &str)]) -> common::Consumed {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    let group = unique("sluice-test");
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic_with(&dlq, 1, dlq_settings);
    produce(&source, &[(None, big_line()), (None, small_line(1))]);

    let mut host = Host::start(&config(&source, &group, &cleaned, &dlq, ""));
    let out = consume(&cleaned, 1, Duration::from_secs(60), Duration::from_secs(1));
    let dead = consume(&dlq, 1, Duration::from_secs(30), Duration::from_secs(1));
    assert!(host.is_running(), "host died:\n{}", host.log());
    assert_eq!(
        out.iter().map(seq_of).collect::<Vec<_>>(),
        [1],
        "{}",
        host.log()
    );
    assert_eq!(dead.len(), 1, "{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());
    assert_eq!(committed_offsets(&group, &source, 1), [2], "{}", host.log());

    let letter = dead.into_iter().next().unwrap();
    assert_eq!(letter.header("sluice.origin.topic"), Some(source.as_str()));
    assert_eq!(letter.header("sluice.origin.offset"), Some("0"));
    let reason = letter.header("sluice.dlq.reason").expect("reason header");
    assert!(reason.contains("sink `cleaned`"), "{reason}");
    assert!(reason.contains("message.max.bytes"), "{reason}");
    let size: usize = letter
        .header("sluice.payload.size")
        .expect("size header")
        .parse()
        .unwrap();
    assert!(size > BIG, "the record as JSON is {size} bytes");
    let hash = letter.header("sluice.payload.sha256").expect("hash header");
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    assert_eq!(letter.header("sluice.payload.truncated"), Some("true"));
    letter
}

#[test]
fn an_oversized_line_is_dead_lettered_truncated_and_the_next_line_delivered() {
    let letter = run_big_then_small(&[]);
    assert_eq!(letter.payload.len(), 64 * 1024, "the default prefix");
    assert!(letter.payload.starts_with(b"{"));
}

/// The dead-letter topic takes messages of at most 2,000 bytes: even the 64 KiB prefix is
/// refused, so the dead letter goes out with its reason, origin, size and hash only.
#[test]
fn a_dead_letter_too_large_for_the_dlq_topic_goes_out_without_its_payload() {
    let letter = run_big_then_small(&[("max.message.bytes", "2000")]);
    assert!(letter.payload.is_empty(), "{} bytes", letter.payload.len());
}

/// `/readyz`: (status, body).
fn readyz(address: &str) -> (u16, String) {
    get(address, "/readyz")
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

/// The sink's topic is deleted mid-run (and the broker may not create it on demand): the
/// destination is unusable, not the records. Nothing is dead-lettered or committed while
/// it is gone, `SinkUnavailable` is raised for the sink, and once the topic is back the
/// records arrive, the condition clears and the offset is committed.
#[test]
fn a_deleted_sink_topic_stalls_the_sink_without_dead_lettering_or_committing() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    let group = unique("sluice-test");
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let lines = |range: std::ops::Range<usize>| -> Vec<(Option<String>, Vec<u8>)> {
        range.map(|i| (None, small_line(i))).collect()
    };
    let mut toml = config(&source, &group, &cleaned, &dlq, "127.0.0.1:0");
    // The broker creates topics on demand; a producer that may not ask it to sees the
    // deleted topic as missing, as it would be on a cluster that does not auto-create.
    toml.push_str("[sinks.cleaned.options]\n\"allow.auto.create.topics\" = \"false\"\n");
    let mut host = Host::start(&toml);
    let admin = admin_address(&host);

    produce(&source, &lines(0..100));
    let first = consume(
        &cleaned,
        100,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(first.len(), 100, "{}", host.log());
    wait_for("the first commit", &host, Duration::from_secs(30), || {
        committed_offsets(&group, &source, 1) == [100]
    });

    delete_topic(&cleaned);
    produce(&source, &lines(100..200));
    wait_for(
        "SinkUnavailable for the cleaned sink",
        &host,
        Duration::from_secs(120),
        || {
            let (status, body) = readyz(&admin);
            status == 503 && body.contains("SinkUnavailable") && body.contains("\"cleaned\"")
        },
    );
    assert!(host.is_running(), "host died:\n{}", host.log());
    let dead = consume(&dlq, 0, Duration::from_secs(3), Duration::from_secs(1));
    assert!(
        dead.is_empty(),
        "{} records dead-lettered, e.g. {:?}:\n{}",
        dead.len(),
        dead[0].header("sluice.dlq.reason"),
        host.log()
    );
    assert_eq!(committed_offsets(&group, &source, 1), [100]);

    create_topic(&cleaned, 1);
    let second = consume(
        &cleaned,
        100,
        Duration::from_secs(120),
        Duration::from_secs(2),
    );
    let mut seqs: Vec<i64> = second.iter().map(seq_of).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (100..200).collect::<Vec<i64>>(), "{}", host.log());
    wait_for("readiness again", &host, Duration::from_secs(30), || {
        readyz(&admin).0 == 200
    });
    wait_for("the second commit", &host, Duration::from_secs(30), || {
        committed_offsets(&group, &source, 1) == [200]
    });
    let dead = consume(&dlq, 0, Duration::from_secs(3), Duration::from_secs(1));
    assert!(dead.is_empty(), "{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());
}
