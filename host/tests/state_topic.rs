//! Plugin state kept in the group's compacted state topic, through the real binary and
//! broker: dedup's keys survive a clean stop, a `kill -9` and a partition moving to another
//! host, so a copy of an event consumed before any of those is still dropped after it.
//! The group's committed offsets never move back while a restored partition replays from
//! its snapshot.

mod common;

use common::group::OffsetWatch;
use common::{Host, consume, create_topic, kafka_sink_toml, plugin, unique};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const EVENTS: usize = 300;

/// A stream of events with ids, keyed so that the copies of an event share its partition.
struct Events {
    source: String,
    cleaned: String,
    dlq: String,
    group: String,
}

impl Events {
    fn new() -> Events {
        let events = Events {
            source: unique("state-raw"),
            cleaned: unique("state-cleaned"),
            dlq: unique("state-dlq"),
            group: unique("state-g"),
        };
        create_topic(&events.source, PARTITIONS);
        create_topic(&events.cleaned, 1);
        create_topic(&events.dlq, 1);
        events
    }

    /// Events `ids`, the first copies or (`copy`) copies carrying the same id.
    fn produce(&self, ids: std::ops::Range<usize>, copy: bool) {
        let kind = if copy { "copy" } else { "first" };
        let messages: Vec<(Option<String>, Vec<u8>)> = ids
            .map(|i| {
                let line =
                    format!(r#"{{"event_id":"e-{i}","kind":"{kind}","message":"event {i}"}}"#);
                (Some(format!("key-{}", i % 30)), line.into_bytes())
            })
            .collect();
        common::produce(&self.source, &messages);
    }

    /// Kafka source → dedup → cleaned topic; plugin state on (the default), snapshotted
    /// every 200 ms.
    fn config(&self) -> String {
        common::kafka_source_toml(&self.source, &self.group, "")
            .replace("[pipeline]", "state_interval_ms = 200\n\n[pipeline]")
            + &format!(
                "\n[[plugins]]\nname = \"dedup\"\npath = \"{}\"\n",
                plugin("dedup").display()
            )
            + &kafka_sink_toml("cleaned", &self.cleaned, "cleaned")
            + &kafka_sink_toml("dlq", &self.dlq, "dlq")
    }

    /// A host that reads until the group committed `n` and stops in order, watched for
    /// committed offsets moving back.
    fn restart_until_committed(&self, n: usize) -> Host {
        let watch = OffsetWatch::start(&self.source, &self.group, PARTITIONS);
        let mut host = Host::start(&self.config());
        self.wait_committed(n, &mut host);
        assert!(host.terminate().success(), "{}", host.log());
        let (_, backwards) = watch.stop();
        assert!(
            backwards.is_empty(),
            "committed offsets moved back: {backwards:?}\n{}",
            host.log()
        );
        host
    }

    /// What the cleaned topic holds once `expected` messages are there and it is quiet:
    /// per event id, how many messages carry it, and how many are copies.
    fn cleaned(&self, expected: usize) -> (BTreeMap<String, usize>, usize) {
        let got = consume(
            &self.cleaned,
            expected,
            Duration::from_secs(60),
            Duration::from_secs(3),
        );
        common::count_event_ids(&got)
    }

    /// Wait until the group committed the end of the source topic.
    fn wait_committed(&self, n: usize, host: &mut Host) {
        let within = Duration::from_secs(60);
        common::wait_committed_while_running(&self.group, &self.source, n, host, within);
    }

    fn state_topic(&self) -> String {
        format!("{}.sluice-state", self.group)
    }
}

/// Every event id in cleaned, and no copy among them.
fn assert_each_event_once_and_no_copy(events: &Events, n: usize, logs: &str) {
    let (ids, copies) = events.cleaned(n);
    assert_eq!(
        copies, 0,
        "copies of events consumed before passed dedup\n{logs}"
    );
    assert_eq!(ids.len(), n, "every event in cleaned\n{logs}");
}

#[test]
fn a_copy_of_an_event_consumed_before_a_clean_stop_is_dropped_after_it() {
    let events = Events::new();
    events.produce(0..EVENTS, false);
    let mut host = Host::start(&events.config());
    events.wait_committed(EVENTS, &mut host);
    assert!(host.terminate().success(), "{}", host.log());
    // The copies and some new events, read by a host that restored dedup's keys.
    events.produce(0..EVENTS, true);
    events.produce(EVENTS..EVENTS + 30, false);
    let host = events.restart_until_committed(2 * EVENTS + 30);
    let log = host.log();
    assert_each_event_once_and_no_copy(&events, EVENTS + 30, &log);
    assert!(log.contains("plugin state restored"), "{log}");
    assert!(
        !consume(
            &events.state_topic(),
            PARTITIONS as usize,
            Duration::from_secs(10),
            Duration::from_secs(1)
        )
        .is_empty(),
        "the state topic holds the partitions' snapshots\n{}",
        log
    );
    assert_eq!(
        common::topic_setting(&events.state_topic(), "cleanup.policy").as_deref(),
        Some("compact")
    );

    let (ids, _) = events.cleaned(EVENTS + 30);
    assert!(
        ids.values().all(|n| *n == 1),
        "a clean stop replays nothing: each event once"
    );
}

#[test]
fn a_copy_of_an_event_consumed_before_a_kill_is_dropped_after_the_restart() {
    let events = Events::new();
    events.produce(0..EVENTS, false);
    let mut host = Host::start(&events.config());
    events.wait_committed(EVENTS, &mut host);
    // Let a snapshot taken after the last batch be stored behind a commit (auto-commit
    // every second, snapshots every 200 ms).
    std::thread::sleep(Duration::from_secs(3));
    host.kill();

    events.produce(0..EVENTS, true);
    let host = events.restart_until_committed(2 * EVENTS);
    assert_each_event_once_and_no_copy(&events, EVENTS, &host.log());
}

#[test]
fn dedup_keys_follow_a_partition_to_the_host_that_takes_it_over() {
    let events = Events::new();
    events.produce(0..EVENTS, false);
    let mut a = Host::start(&events.config());
    events.wait_committed(EVENTS, &mut a);

    // B joins: cooperative rebalancing moves some partitions, with their state, from A.
    let mut b = Host::start(&events.config());
    let started = Instant::now();
    while !b.log().contains("partitions assigned") || !a.log().contains("partitions revoked") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no partition moved to B\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    events.produce(0..EVENTS, true);
    events.wait_committed(2 * EVENTS, &mut b);
    assert!(b.terminate().success(), "{}", b.log());
    assert!(a.terminate().success(), "{}", a.log());
    let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());
    assert_each_event_once_and_no_copy(&events, EVENTS, &logs);
    assert!(b.log().contains("plugin state restored"), "{logs}");
}
