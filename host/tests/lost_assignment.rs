//! A host that loses its assignment (session timeout) while it holds open lake segments:
//! host A stalls (SIGSTOP) past its session timeout, host B takes every partition over and
//! replays from the last commit, then A wakes up. A must not write anything of the
//! partitions it lost — B owns them now — and every record must be in the lake exactly
//! once, with the group's committed offsets never moving back.
//!
//! Before A dropped a lost partition's open segments, it wrote them when it woke up (the
//! lake's offset marker kept the rows exactly once, but A wrote objects of partitions it no
//! longer owned, racing their new owner).

mod common;

use common::group::*;
use common::lake::*;
use common::{Host, consume};
use common::{committed_offsets, produce};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const LINES: usize = 3_000;

impl LakeGroup {
    /// Wait until the cleaned topic holds `n` messages (replays repeat lines there).
    fn wait_for_cleaned_messages(&self, n: usize, logs: impl Fn() -> String) {
        let started = Instant::now();
        loop {
            let got = consume(
                &self.cleaned,
                n,
                Duration::from_secs(20),
                Duration::from_millis(500),
            );
            if got.len() >= n {
                let distinct: BTreeSet<i64> = got
                    .iter()
                    .filter_map(|m| request_number(&m.payload))
                    .collect();
                assert_eq!(distinct.len(), LINES, "every line cleaned");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{} of {n} cleaned messages\n{}",
                got.len(),
                logs()
            );
        }
    }
}

#[test]
fn a_host_that_lost_its_partitions_never_writes_them_to_the_lake() {
    let setup = LakeGroup::new("lost-assignment", PARTITIONS);
    // Keyed by line number, so every partition gets lines.
    let backlog: Vec<(Option<String>, Vec<u8>)> = lines(LINES)
        .into_iter()
        .enumerate()
        .map(|(i, (_, line))| (Some(i.to_string()), line))
        .collect();
    produce(&setup.source, &backlog);
    let watch = OffsetWatch::start(&setup.source, &setup.group, PARTITIONS);

    // A: the shortest session the broker allows (group.min.session.timeout.ms, 6 s), and
    // its own way to S3, so what it writes can be told from what B writes.
    let proxy = S3Proxy::start(&endpoint());
    let mut a = Host::start(&setup.config(
        &proxy.url(),
        "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"",
    ));
    setup.wait_for_cleaned_messages(LINES, || a.log());

    // A has read the whole backlog; at the default rotation it holds the last segment of
    // every partition (the idle flush is a minute away). It stalls.
    a.signal("STOP");
    let stalled = Instant::now();
    // A commit A sent just before has reached the broker.
    std::thread::sleep(Duration::from_secs(1));
    let committed_by_a: i64 = committed_offsets(&setup.group, &setup.source, PARTITIONS)
        .into_iter()
        .map(|o| o.max(0))
        .sum();
    assert!(
        (committed_by_a as usize) < LINES,
        "A held nothing back: {committed_by_a} committed"
    );

    // B joins; once A's session has timed out, B owns every partition and replays what A
    // had not committed.
    let mut b = Host::start(&setup.config(&endpoint(), ""));
    let started = Instant::now();
    while assigned(&b.log()) < PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "B never took every partition:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let replayed = LINES - committed_by_a as usize;
    setup.wait_for_cleaned_messages(LINES + replayed, || b.log());
    assert!(
        stalled.elapsed() < Duration::from_secs(50),
        "A's idle flush must not be due yet"
    );

    // A wakes up. It finds its partitions lost (or some given back by B, which wrote and
    // committed them first) and must not write what it held of them.
    let resumed = utc_now();
    a.signal("CONT");
    wait_for_log(&a, "partitions lost", Duration::from_secs(30));
    let started = Instant::now();
    while assigned(&a.log()) <= PARTITIONS as usize && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));

    assert!(a.terminate().success(), "A:\n{}", a.log());
    assert!(b.terminate().success(), "B:\n{}", b.log());
    let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());

    // From A's waking up until the group gives it a partition again (then it may write
    // that partition from the last commit on), A owns nothing.
    let log = a.log();
    let owns_again = log
        .lines()
        .skip_while(|l| !l.contains("partitions lost"))
        .find(|l| l.contains("partitions assigned count=") && !l.ends_with("count=0"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("~")
        .to_owned();
    let late_writes: Vec<(String, String)> = proxy
        .requests()
        .into_iter()
        .filter(|(at, r)| r.starts_with("PUT ") && *at >= resumed && *at < owns_again)
        .collect();
    assert!(
        late_writes.is_empty(),
        "A wrote to the lake after it lost its partitions: {late_writes:#?}\n{logs}"
    );

    let ends = high_watermarks(&setup.source, PARTITIONS);
    assert_eq!(ends.values().sum::<i64>() as usize, LINES);
    let keys: Vec<String> = list(&setup.prefix).into_iter().map(|(k, _)| k).collect();
    let logs = format!("{logs}\nobjects: {keys:#?}");
    if let Some(report) = exactly_once_report(&cleaned_seqs(&setup.prefix), 0..LINES as i64) {
        panic!("cleaned table: {report}\n{logs}");
    }
    let expected = ends
        .iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)));
    if let Some(report) = exactly_once_report(&raw_offsets(&setup.prefix), expected) {
        panic!("raw table: {report}\n{logs}");
    }
    let (last, backwards) = watch.stop();
    assert!(
        backwards.is_empty(),
        "committed offsets moved back: {backwards:?}\n{logs}"
    );
    assert_eq!(
        last, ends,
        "committed offsets at the end of the topic\n{logs}"
    );
}
