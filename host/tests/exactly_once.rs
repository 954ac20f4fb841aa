//! Exactly once into Kafka (`source.exactly_once`), through the real binary and broker:
//! hosts killed with SIGKILL again and again, and a stalled host whose partitions moved on
//! (a zombie), leave every event in the output topic once for `read_committed` readers —
//! the test reader's isolation level, librdkafka's default. Dedup runs in the chain with
//! its state committed in the same transactions, so copies of events consumed before a
//! kill are still dropped after it.

mod common;

use common::admin::{admin_address, get, sample};
use common::group::{OffsetWatch, wait_for_log};
use common::{Host, consume, create_topic, kafka_sink_toml, plugin, unique};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

struct Stream {
    source: String,
    cleaned: String,
    dlq: String,
    group: String,
}

impl Stream {
    fn new() -> Stream {
        let stream = Stream {
            source: unique("eos-raw"),
            cleaned: unique("eos-cleaned"),
            dlq: unique("eos-dlq"),
            group: unique("eos-g"),
        };
        create_topic(&stream.source, PARTITIONS);
        create_topic(&stream.cleaned, PARTITIONS);
        create_topic(&stream.dlq, 1);
        stream
    }

    /// Events `ids` (`copy`: second copies of them, which dedup must drop), keyed so that
    /// the copies of an event share its partition.
    fn produce(&self, ids: std::ops::Range<usize>, copy: bool) {
        let kind = if copy { "copy" } else { "first" };
        let messages: Vec<(Option<String>, Vec<u8>)> = ids
            .map(|i| {
                let line = format!(
                    r#"{{"event_id":"e-{i}","kind":"{kind}","level":"info","message":"event {i} of a stream read exactly once"}}"#
                );
                (Some(format!("key-{}", i % 64)), line.into_bytes())
            })
            .collect();
        common::produce(&self.source, &messages);
    }

    /// Kafka source (exactly once, static member `member`, or dynamic for "") → dedup →
    /// cleaned; dlq.
    fn config(&self, member: &str, transactional_id: &str, options: &str) -> String {
        let exactly_once = format!(
            "exactly_once = true\ntransaction_interval_ms = 300\ntransaction_timeout_ms = 10000\ntransactional_id = \"{transactional_id}\"\n"
        );
        let mut source = common::kafka_source_toml(&self.source, &self.group, "")
            .replace(
                "group_instance_id = \"\"",
                &format!("group_instance_id = \"{member}\""),
            )
            .replace("[pipeline]", &format!("{exactly_once}\n[pipeline]"));
        if !options.is_empty() {
            source = source.replace(
                "[pipeline]",
                &format!("[source.options]\n{options}\n\n[pipeline]"),
            );
        }
        source
            + &format!(
                "\n[[plugins]]\nname = \"dedup\"\npath = \"{}\"\n",
                plugin("dedup").display()
            )
            + &kafka_sink_toml("cleaned", &self.cleaned, "cleaned")
            + &kafka_sink_toml("dlq", &self.dlq, "dlq")
    }

    /// What the group committed; 0 while a killed host's open transaction holds its
    /// offsets unstable.
    fn committed(&self) -> i64 {
        common::try_committed(&self.group, &self.source).unwrap_or(0)
    }

    /// Per event id, how many messages of cleaned carry it (read committed), and how many
    /// copies passed.
    fn cleaned(&self, expected: usize) -> (BTreeMap<String, usize>, usize) {
        let got = consume(
            &self.cleaned,
            expected,
            Duration::from_secs(90),
            Duration::from_secs(3),
        );
        common::count_event_ids(&got)
    }

    fn wait_committed(&self, n: usize, host: &mut Host, within: Duration) {
        common::wait_committed_while_running(&self.group, &self.source, n, host, within);
    }
}

/// Every event id once in cleaned, no copy among them.
fn assert_each_event_once(stream: &Stream, events: usize, logs: &str) {
    let (ids, copies) = stream.cleaned(events);
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    let total: usize = ids.values().sum();
    assert!(
        repeated.is_empty() && copies == 0,
        "{} events more than once ({} messages for {} events), {copies} copies passed dedup; first: {:?}\n{logs}",
        repeated.len(),
        total,
        ids.len(),
        repeated.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(ids.len(), events, "every event in cleaned\n{logs}");
}

/// Once everything is committed, `/metrics` reports no lag and the committed offsets, though
/// the consumer never commits itself: the offsets are committed in the transactions.
fn assert_no_lag_reported(host: &Host, stream: &Stream) {
    let admin = admin_address(host);
    let committed = common::committed_offsets(&stream.group, &stream.source, PARTITIONS);
    let started = Instant::now();
    loop {
        let (_, metrics) = get(&admin, "/metrics");
        let series = |name: &str, p: i32| {
            let source = &stream.source;
            sample(
                &metrics,
                &format!(r#"{name}{{topic="{source}",partition="{p}"}}"#),
            )
        };
        let lags: Vec<_> = (0..PARTITIONS)
            .map(|p| series("sluice_source_lag", p))
            .collect();
        let offsets: Vec<_> = (0..PARTITIONS)
            .map(|p| series("sluice_source_committed_offset", p))
            .collect();
        let expected: Vec<_> = committed.iter().map(|o| Some(*o as f64)).collect();
        if lags.iter().all(|l| *l == Some(0.0)) && offsets == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lag {lags:?}, committed {offsets:?} (the group: {committed:?}):\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

const EVENTS: usize = 12_000;
const KILLS: usize = 5;

#[test]
fn hosts_killed_again_and_again_leave_every_event_once_in_committed_reads() {
    let stream = Stream::new();
    stream.produce(0..EVENTS, false);
    // Copies of the first tenth, read after most of the kills: dedup's keys must have
    // survived them.
    stream.produce(0..EVENTS / 10, true);
    let total = EVENTS + EVENTS / 10;
    let watch = OffsetWatch::start(&stream.source, &stream.group, PARTITIONS);
    let config = stream.config("eos-member", "eos-host", "");
    let mut logs = String::new();
    for kill in 0..KILLS {
        let mut host = Host::start(&config);
        // Killed while it writes: after it committed some of the stream, mid-transaction.
        let target = (total * (kill + 1) / (KILLS + 2)) as i64;
        let started = Instant::now();
        while stream.committed() < target {
            assert!(host.is_running(), "the host stopped:\n{}", host.log());
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{} of {target} committed\n{}",
                stream.committed(),
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150));
        host.kill();
        logs.push_str(&format!("--- host {kill} (killed)\n{}", host.log()));
    }
    let mut host = Host::start(&config.replace("listen = \"\"", "listen = \"127.0.0.1:0\""));
    wait_for_log(&host, "partitions assigned", Duration::from_secs(60));
    stream.wait_committed(total, &mut host, Duration::from_secs(120));
    assert_no_lag_reported(&host, &stream);
    assert!(host.terminate().success(), "{}", host.log());
    logs.push_str(&format!("--- last host\n{}", host.log()));
    let (_, backwards) = watch.stop();
    assert!(backwards.is_empty(), "offsets moved back: {backwards:?}");
    assert_each_event_once(&stream, EVENTS, &logs);
    assert!(
        logs.contains("plugin state restored"),
        "restarts restored dedup's keys\n{logs}"
    );
}

#[test]
fn a_stalled_host_whose_partitions_moved_on_is_fenced_and_writes_nothing_twice() {
    let stream = Stream::new();
    stream.produce(0..EVENTS, false);
    // A: the shortest session the broker allows, so its partitions move on while it stalls.
    let short_session = "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"";
    let mut a = Host::start(&stream.config("eos-a", "eos-a", short_session));
    stream.wait_committed(EVENTS / 3, &mut a, Duration::from_secs(90));
    a.signal("STOP");

    let mut b = Host::start(&stream.config("eos-b", "eos-b", ""));
    stream.produce(EVENTS..EVENTS + EVENTS / 10, false);
    let events = EVENTS + EVENTS / 10;
    stream.wait_committed(events, &mut b, Duration::from_secs(120));

    // A wakes up holding an open transaction of partitions it no longer owns: it must not
    // commit it, and stops.
    a.signal("CONT");
    let started = Instant::now();
    while a.is_running() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let a_stopped = !a.is_running();
    let a_status = a.terminate();
    assert!(b.terminate().success(), "B:\n{}", b.log());
    let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());
    assert_each_event_once(&stream, events, &logs);
    assert!(a_stopped, "A went on after its partitions moved\n{logs}");
    assert!(
        !a_status.success(),
        "A must fail, not stop in order\n{logs}"
    );
    assert!(
        a.log().contains("lost") || a.log().contains("fenced"),
        "A says why it stops\n{logs}"
    );
    assert_each_event_once(&stream, events, &logs);
}

#[test]
fn hosts_joining_and_leaving_while_transactions_commit_leave_every_event_once() {
    // Transactions every 100 ms: commits race each rebalance, and the broker refuses a
    // commit under a stale group generation. The host aborts that transaction, goes back
    // to its last commit and goes on; no host stops, no event is written twice.
    let stream = Stream::new();
    // Dynamic members, so a host stopping in order leaves the group at once.
    let config = |id: &str| {
        stream.config("", id, "").replace(
            "transaction_interval_ms = 300",
            "transaction_interval_ms = 100",
        )
    };
    let chunk = EVENTS / 4;
    stream.produce(0..chunk, false);
    let mut a = Host::start(&config("eos-join-a"));
    stream.wait_committed(chunk / 2, &mut a, Duration::from_secs(90));
    let mut b = Host::start(&config("eos-join-b"));
    wait_for_log(&b, "partitions assigned", Duration::from_secs(60));
    stream.produce(chunk..2 * chunk, false);
    stream.wait_committed(2 * chunk, &mut b, Duration::from_secs(90));
    assert!(b.terminate().success(), "B:\n{}", b.log());
    stream.produce(2 * chunk..3 * chunk, false);
    let mut c = Host::start(&config("eos-join-c"));
    wait_for_log(&c, "partitions assigned", Duration::from_secs(60));
    stream.produce(3 * chunk..EVENTS, false);
    stream.produce(0..chunk / 2, true);
    stream.wait_committed(EVENTS + chunk / 2, &mut c, Duration::from_secs(120));
    assert!(a.is_running(), "A stopped:\n{}", a.log());
    assert!(a.terminate().success(), "A:\n{}", a.log());
    assert!(c.terminate().success(), "C:\n{}", c.log());
    let logs = format!("A:\n{}\nB:\n{}\nC:\n{}", a.log(), b.log(), c.log());
    let rewinds = logs.matches("goes back to the last committed").count();
    let while_giving_up = logs
        .matches("aborted while partitions were being given up")
        .count();
    eprintln!(
        "transactions aborted and gone back from: {rewinds} ({while_giving_up} while giving partitions up)"
    );
    assert_each_event_once(&stream, EVENTS, &logs);
}

#[test]
fn plugin_state_larger_than_a_kafka_message_commits_with_the_transactions() {
    // 60,000 events of one partition: dedup's snapshot of it (about 22 bytes a key) is
    // larger than the producer's default message.max.bytes (1,000,000), and still goes in
    // the transactions, while the sinks keep their own limit.
    let stream = Stream::new();
    let events = 60_000;
    let messages: Vec<(Option<String>, Vec<u8>)> = (0..events)
        .map(|i| {
            let line = format!(r#"{{"event_id":"e-{i}","kind":"first","message":"event {i}"}}"#);
            (Some("one partition".to_owned()), line.into_bytes())
        })
        .collect();
    common::produce(&stream.source, &messages);
    let mut host = Host::start(&stream.config("eos-large", "eos-large", ""));
    stream.wait_committed(events, &mut host, Duration::from_secs(180));
    assert!(host.terminate().success(), "{}", host.log());
    let state = consume(
        &format!("{}.sluice-state", stream.group),
        1,
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    let largest = state.iter().map(|m| m.payload.len()).max().unwrap_or(0);
    assert!(
        largest > 1_000_000,
        "a snapshot of {largest} bytes does not show the case\n{}",
        host.log()
    );
    assert_each_event_once(&stream, events, &host.log());
}
