//! The S3 lake across consumer-group rebalances: hosts joining and leaving one group while
//! a stream flows, at the sink's default rotation and idle settings (so segments are open
//! when partitions move), with and without an S3 outage on the host that gives partitions
//! up. Every record must be in the lake exactly once, and the group's committed offsets
//! must never move backwards.

mod common;

use common::group::*;
use common::lake::*;
use common::produce;
use common::{Host, consume};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

/// Produces numbered lines to a topic from a thread, about 1,000 a second, until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    fn start(topic: &str) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (topic, flag, count) = (topic.to_owned(), stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // Keyed by line number, so every partition gets lines.
            let all: Vec<(Option<String>, Vec<u8>)> = lines(200_000)
                .into_iter()
                .enumerate()
                .map(|(i, (_, line))| (Some(i.to_string()), line))
                .collect();
            let mut next = 0;
            while !flag.load(Ordering::SeqCst) && next < all.len() {
                let chunk = &all[next..next + 100];
                produce(&topic, chunk);
                next += chunk.len();
                count.store(next, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Stream {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stop and return how many lines were produced.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.sent()
    }
}

impl LakeGroup {
    /// Wait until the Kafka sink has every line (the lake waits for a cut, the idle flush or
    /// the hosts' shutdown).
    fn wait_for_cleaned(&self, n: usize) {
        let started = Instant::now();
        loop {
            let got = consume(
                &self.cleaned,
                n,
                Duration::from_secs(30),
                Duration::from_secs(1),
            );
            // Replays may repeat lines in Kafka: count each line's number ("request <seq>") once.
            let distinct: std::collections::BTreeSet<i64> = got
                .iter()
                .filter_map(|m| request_number(&m.payload))
                .collect();
            if distinct.len() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} of {n} lines cleaned",
                distinct.len()
            );
        }
    }

    /// Every line in both tables exactly once, and the committed offsets at the end of the
    /// topic, never having moved back.
    fn check(&self, n: usize, watch: OffsetWatch, logs: &str) {
        let ends = high_watermarks(&self.source, PARTITIONS);
        let keys: Vec<String> = list(&self.prefix).into_iter().map(|(k, _)| k).collect();
        let logs = format!("{logs}\nobjects: {keys:#?}");
        assert_eq!(ends.values().sum::<i64>() as usize, n);
        if let Some(report) = exactly_once_report(&cleaned_seqs(&self.prefix), 0..n as i64) {
            panic!("cleaned table: {report}\n{logs}");
        }
        let expected = ends
            .iter()
            .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)));
        if let Some(report) = exactly_once_report(&raw_offsets(&self.prefix), expected) {
            panic!("raw table: {report}\n{logs}");
        }
        let (last, backwards) = watch.stop();
        assert!(
            backwards.is_empty(),
            "committed offsets moved back: {backwards:?}"
        );
        assert_eq!(
            last, ends,
            "committed offsets at the end of the topic\n{logs}"
        );
    }
}

#[test]
fn scale_out_then_in_keeps_every_record_in_the_lake_exactly_once() {
    let setup = LakeGroup::new("lake-scale", PARTITIONS);
    let config = setup.config(&endpoint(), "");
    let stream = Stream::start(&setup.source);
    let watch = OffsetWatch::start(&setup.source, &setup.group, PARTITIONS);
    let mut a = Host::start(&config);
    wait_for_log(&a, "partitions assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));

    // Scale out: B takes a partition from A while A holds an open segment of it.
    let mut b = Host::start(&config);
    wait_for_log(&a, "partitions revoked", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(6));
    assert!(b.is_running(), "{}", b.log());

    // Scale in: B leaves; its partitions go back to A, which must not still hold records
    // of them from before.
    assert!(b.terminate().success(), "{}", b.log());
    std::thread::sleep(Duration::from_secs(4));
    let n = stream.stop();
    setup.wait_for_cleaned(n);
    assert!(a.terminate().success(), "{}", a.log());
    setup.check(n, watch, &format!("A:\n{}\nB:\n{}", a.log(), b.log()));
}

#[test]
fn a_revoke_commits_the_revoked_partition_while_the_lake_holds_the_kept_ones() {
    // At the default rotation the S3 sink holds every partition's segment for minutes.
    // Batches span partitions: a revoke must wait only for the revoked partition's share
    // of them (written at the revoke), not for segments of the partitions the host keeps.
    let setup = LakeGroup::new("lake-revoke-share", PARTITIONS);
    let config = setup.config(&endpoint(), "");
    let stream = Stream::start(&setup.source);
    let watch = OffsetWatch::start(&setup.source, &setup.group, PARTITIONS);
    let mut a = Host::start(&config);
    wait_for_log(&a, "partitions assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));

    let mut b = Host::start(&config);
    wait_for_log(&a, "partitions revoked", Duration::from_secs(30));
    wait_for_log(&a, "revoked partitions drained", Duration::from_secs(15));
    assert!(
        !a.log().contains("drain timed out"),
        "the revoke waited for partitions A keeps:\n{}",
        a.log()
    );

    let n = stream.stop();
    setup.wait_for_cleaned(n);
    assert!(b.terminate().success(), "{}", b.log());
    assert!(a.terminate().success(), "{}", a.log());
    setup.check(n, watch, &format!("A:\n{}\nB:\n{}", a.log(), b.log()));
}

#[test]
fn an_s3_outage_during_a_rebalance_never_writes_a_revoked_partition_late() {
    let setup = LakeGroup::new("lake-revoke-outage", PARTITIONS);
    let proxy = S3Proxy::start(&endpoint());
    let stream = Stream::start(&setup.source);
    let watch = OffsetWatch::start(&setup.source, &setup.group, PARTITIONS);
    // A writes through a proxy that fails on demand: an S3 outage for A alone.
    let mut a = Host::start(&setup.config(&proxy.url(), ""));
    wait_for_log(&a, "partitions assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));

    // A cannot reach S3 while B takes a partition from it, works on it and leaves.
    proxy.set_up(false);
    let direct = setup.config(&endpoint(), "");
    let mut b = Host::start(&direct);
    wait_for_log(&a, "partitions revoked", Duration::from_secs(30));
    // A's drain times out (10 s), then B owns the partition.
    std::thread::sleep(Duration::from_secs(14));
    assert!(b.terminate().success(), "{}", b.log());

    // S3 is back for A. Whatever A held of the revoked partition must not land now, over
    // what B wrote of it.
    proxy.set_up(true);
    let mut c = Host::start(&direct);
    std::thread::sleep(Duration::from_secs(6));
    let n = stream.stop();
    assert!(n > 0);
    // A abandoned what it held of the revoked partition and goes on with the partitions it
    // kept, like a Kafka Connect task closing a partition writer: its batches that also
    // held records of a kept partition are not failed for it, so A writes and commits the
    // kept partitions on its way out. Stop A now, so C takes every partition.
    assert!(a.is_running(), "A stopped:\n{}", a.log());
    assert!(
        a.terminate().success(),
        "A failed over the partition it gave up:\n{}",
        a.log()
    );
    let started = Instant::now();
    while assigned(&c.log()) < PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "C never took every partition:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    setup.wait_for_cleaned(n);
    std::thread::sleep(Duration::from_secs(5));
    assert!(c.terminate().success(), "{}", c.log());
    setup.check(
        n,
        watch,
        &format!("A:\n{}\nB:\n{}\nC:\n{}", a.log(), b.log(), c.log()),
    );
}
