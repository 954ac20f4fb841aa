//! Acknowledgements: the one mechanism that decides when a source offset may be committed.
//!
//! Every source batch gets a [`BatchTicket`]. Each sink delivery derived from the batch holds
//! an [`AckHandle`] cloned from it; a sink that hands events on (to the dead-letter route, say)
//! clones its handle for them. When the last handle is gone, the batch is complete:
//! *delivered* if every handle was explicitly [`AckHandle::ack`]ed, *failed* if any was
//! dropped without it. A batch that produced no output completes as soon as the pipeline
//! releases its own handle.
//!
//! Sources turn completions into commits through an [`OffsetTracker`]: per partition, offsets
//! are committed in order, up to the last batch whose predecessors are all complete. So a
//! crash anywhere replays from the first batch not fully delivered — at-least-once — and
//! sinks that name their output deterministically (S3 object keys, search `_id`s) turn the
//! replay into exactly-once.
//!
//! A failed batch is never skipped: the pipeline stops without committing past it, so it is
//! replayed after the restart.
//!
//! A participant that holds only one partition's records of a batch (the S3 sink keeps a
//! segment per partition) holds a handle narrowed to that partition
//! ([`AckHandle::narrow`]). With an issuer that reports shares
//! ([`AckIssuer::reporting_shares`]), a partition's share of the batch completes as soon as
//! every handle still holding it is acknowledged: a revoked partition commits when its own
//! records are written, not when the segments of the partitions the host keeps are.
//!
//! One exception, for rebalances: a sink that drops what it holds of a partition the source
//! gave up (revoked and not written within the drain, or lost) calls
//! [`AckHandle::give_up`] instead. Nothing of that partition in the batch is committed —
//! the partition's new owner replays it — but the batch does not fail for the partitions
//! the source keeps, so the host goes on, as a Kafka Connect task closing a partition's
//! writer does. If the source still owns the partition and is not giving it up, it fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The offsets one batch covers: per (topic, partition), the highest offset in the batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOffsets {
    pub highest: BTreeMap<(String, i32), i64>,
    /// The partition of the last [`BatchOffsets::record`]: a source reads runs of one
    /// partition, so its key is found again without allocating one per message.
    last: Option<(String, i32)>,
}

impl PartialEq for BatchOffsets {
    fn eq(&self, other: &Self) -> bool {
        self.highest == other.highest
    }
}

impl Eq for BatchOffsets {}

impl BatchOffsets {
    pub fn record(&mut self, topic: &str, partition: i32, offset: i64) {
        let key = match self.last.take() {
            Some(last) if last.1 == partition && last.0 == topic => last,
            _ => (topic.to_owned(), partition),
        };
        match self.highest.get_mut(&key) {
            Some(h) => *h = (*h).max(offset),
            None => {
                self.highest.insert(key.clone(), offset);
            }
        }
        self.last = Some(key);
    }
}

/// A batch finished: every handle is gone.
#[derive(Debug)]
pub struct Completion {
    pub seq: u64,
    pub offsets: BatchOffsets,
    /// Every participant acknowledged everything it was given: nothing failed and nothing
    /// was given up. What a source that does not follow partition ownership (stdin, the
    /// lake, the s3 source) goes by.
    pub delivered: bool,
    /// A participant dropped its handle unacknowledged: the batch failed.
    pub failed: bool,
    /// Partitions of the batch a participant gave up ([`AckHandle::give_up`]): not
    /// delivered, never committable from this batch.
    pub given_up: Vec<(String, i32)>,
}

struct Shared {
    seq: u64,
    offsets: BatchOffsets,
    /// Per partition of `offsets` (in its order), the live handles holding its share, when
    /// the issuer reports shares; empty otherwise.
    holders: Vec<AtomicUsize>,
    failed: AtomicBool,
    /// Empty, and never locked, unless a rebalance made a sink give a partition up.
    given_up: Mutex<Vec<(String, i32)>>,
    done: mpsc::UnboundedSender<Completion>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let given_up = std::mem::take(self.given_up.get_mut().unwrap_or_else(|e| e.into_inner()));
        let failed = self.failed.load(Ordering::Acquire);
        let _ = self.done.send(Completion {
            seq: self.seq,
            offsets: std::mem::take(&mut self.offsets),
            delivered: !failed && given_up.is_empty(),
            failed,
            given_up,
        });
    }
}

/// A participant in a batch's delivery. Clone it for every additional delivery.
#[derive(Debug)]
pub struct AckHandle {
    shared: Arc<Shared>,
    settled: bool,
    /// The partition (index into the batch's offsets) this handle holds alone, if narrowed.
    only: Option<usize>,
    /// A partition this handle gave up: its share is never released.
    gave_up: Option<(String, i32)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("seq", &self.seq).finish()
    }
}

impl Clone for AckHandle {
    fn clone(&self) -> Self {
        let handle = AckHandle {
            shared: self.shared.clone(),
            settled: false,
            only: self.only,
            gave_up: None,
        };
        handle.hold();
        handle
    }
}

impl AckHandle {
    /// This participant has durably delivered (or dead-lettered) everything it was given.
    pub fn ack(mut self) {
        self.settled = true;
    }

    /// This participant could not deliver: the batch fails and will be replayed.
    pub fn fail(self) {
        // Dropping unsettled marks the failure.
        drop(self)
    }

    /// This participant drops, undelivered, what it holds of a partition the source gave up
    /// (a rebalance): nothing of `partition` in this batch is ever committed here. Unlike
    /// [`AckHandle::fail`], the batch fails only if the source still owns the partition and
    /// is not giving it up.
    pub fn give_up(mut self, topic: &str, partition: i32) {
        let mut given_up = self
            .shared
            .given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !given_up.iter().any(|(t, p)| *p == partition && t == topic) {
            given_up.push((topic.to_owned(), partition));
        }
        drop(given_up);
        self.gave_up = Some((topic.to_owned(), partition));
        self.settled = true;
    }

    /// A handle for a participant that holds only `partition`'s records of the batch: once
    /// acknowledged, that partition's share no longer waits for it. A full clone when the
    /// batch does not cover the partition (a tick's output riding the batch).
    pub fn narrow(&self, topic: &str, partition: i32) -> AckHandle {
        let index =
            (self.shared.offsets.highest.keys()).position(|(t, p)| *p == partition && t == topic);
        let mut handle = self.clone();
        if let (Some(index), None) = (index, self.only) {
            handle.release(|i| i != index);
            handle.only = Some(index);
        }
        handle
    }

    /// The offsets the batch covers.
    pub fn offsets(&self) -> &BatchOffsets {
        &self.shared.offsets
    }

    /// The batch's number, unique in the process whichever issuer issued it: sinks tell
    /// one pipeline output from the next by it.
    pub fn seq(&self) -> u64 {
        self.shared.seq
    }
}

impl AckHandle {
    /// Count this handle among the holders of the partitions it holds.
    fn hold(&self) {
        for (i, count) in self.shared.holders.iter().enumerate() {
            if self.only.is_none_or(|only| only == i) {
                count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Stop holding the partitions `which` selects among those held; report each share
    /// this completes while other handles still hold the batch.
    fn release(&self, which: impl Fn(usize) -> bool) {
        let shared = &self.shared;
        for (i, ((topic, partition), &highest)) in shared.offsets.highest.iter().enumerate() {
            let Some(count) = shared.holders.get(i) else {
                return;
            };
            if !which(i) || self.only.is_some_and(|only| only != i) {
                continue;
            }
            // A share given up is never released: it never completes early, and the batch's
            // completion says it was given up.
            let given_up =
                (self.gave_up.as_ref()).is_some_and(|(t, p)| p == partition && t == topic);
            if given_up {
                continue;
            }
            if count.fetch_sub(1, Ordering::AcqRel) == 1
                && !shared.failed.load(Ordering::Acquire)
                && Arc::strong_count(shared) > 1
            {
                let mut offsets = BatchOffsets::default();
                offsets.record(topic, *partition, highest);
                let _ = shared.done.send(Completion {
                    seq: shared.seq,
                    offsets,
                    delivered: true,
                    failed: false,
                    given_up: Vec::new(),
                });
            }
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.failed.store(true, Ordering::Release);
        } else {
            self.release(|_| true);
        }
    }
}

/// Issues batch handles whose completions arrive on one channel.
pub struct AckIssuer {
    done: mpsc::UnboundedSender<Completion>,
    /// Report each partition's share of a batch as it completes (see the module doc).
    shares: bool,
}

/// The next batch number, shared by every issuer (a source's, the backfill's, the
/// pipeline's own for ticks) so that numbers never repeat across them.
static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl AckIssuer {
    pub fn new() -> (AckIssuer, mpsc::UnboundedReceiver<Completion>) {
        let (done, rx) = mpsc::unbounded_channel();
        (
            AckIssuer {
                done,
                shares: false,
            },
            rx,
        )
    }

    /// Also report each partition's share of a batch, as a completion covering that
    /// partition alone, once no handle holds it any more: for a source that commits per
    /// partition. Others count one completion per batch.
    pub fn reporting_shares(mut self) -> AckIssuer {
        self.shares = true;
        self
    }

    /// A handle for a new batch covering `offsets`.
    pub fn issue(&mut self, offsets: BatchOffsets) -> AckHandle {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let holders = if self.shares {
            (0..offsets.highest.len())
                .map(|_| AtomicUsize::new(1))
                .collect()
        } else {
            Vec::new()
        };
        AckHandle {
            shared: Arc::new(Shared {
                seq,
                offsets,
                holders,
                failed: AtomicBool::new(false),
                given_up: Mutex::new(Vec::new()),
                done: self.done.clone(),
            }),
            settled: false,
            only: None,
            gave_up: None,
        }
    }
}

/// Per partition, which batches are still in flight, so commits advance in order.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<(String, i32), VecDeque<Pending>>,
    failed: bool,
    /// The partitions the source owns, once it tracks ownership ([`OffsetTracker::assign`]):
    /// a batch cut before a revoke and sent after it must not make a partition that now
    /// belongs to another host committable here.
    owned: Option<BTreeSet<(String, i32)>>,
    /// Partitions the source is giving up (a revoke, draining): a sink may give them up
    /// before the source forgets them.
    revoking: BTreeSet<(String, i32)>,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    highest: i64,
    done: bool,
}

impl OffsetTracker {
    /// The source was assigned these partitions.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = (String, i32)>) {
        self.owned
            .get_or_insert_with(Default::default)
            .extend(partitions);
    }

    /// The source is giving these partitions up (revoked; it drains, commits and forgets).
    pub fn revoking(&mut self, partitions: &[(String, i32)]) {
        self.revoking.extend(partitions.iter().cloned());
    }

    /// A batch was issued: remember its offsets, in issue order (for owned partitions).
    pub fn issued(&mut self, seq: u64, offsets: &BatchOffsets) {
        for (tp, &highest) in &offsets.highest {
            if self.owned.as_ref().is_some_and(|owned| !owned.contains(tp)) {
                continue;
            }
            self.partitions
                .entry(tp.clone())
                .or_default()
                .push_back(Pending {
                    seq,
                    highest,
                    done: false,
                });
        }
    }

    /// A batch completed. Returns, per partition whose committable position moved, the next
    /// offset to consume (highest completed + 1: what Kafka expects to be committed).
    /// After a failed batch nothing more is ever committable.
    /// Completions of batches never registered (or of forgotten partitions) are ignored.
    pub fn complete(&mut self, completion: &Completion) -> Vec<((String, i32), i64)> {
        let known = self
            .partitions
            .values()
            .any(|q| q.iter().any(|p| p.seq == completion.seq));
        if !known {
            return Vec::new();
        }
        if completion.failed {
            self.failed = true;
        }
        for tp in &completion.given_up {
            if !completion.offsets.highest.contains_key(tp) {
                // Records of the partition riding another batch's handle (a tick's output
                // keyed by the partition): no replay of this batch brings them back.
                self.failed = true;
                continue;
            }
            let pending = self
                .partitions
                .get(tp)
                .is_some_and(|q| q.iter().any(|p| p.seq == completion.seq));
            if !pending {
                // Forgotten already, or assigned again since: nothing of this batch counts.
                continue;
            }
            if self.revoking.contains(tp) {
                // What completed before stays committable; nothing from this batch on is.
                self.partitions.remove(tp);
            } else {
                self.failed = true;
            }
        }
        let mut advanced = Vec::new();
        for tp in completion.offsets.highest.keys() {
            let Some(queue) = self.partitions.get_mut(tp) else {
                continue;
            };
            if let Some(p) = queue.iter_mut().find(|p| p.seq == completion.seq) {
                p.done = true;
            }
            let mut next = None;
            while queue.front().is_some_and(|p| p.done) {
                next = queue.pop_front().map(|p| p.highest + 1);
            }
            if let Some(next) = next
                && !self.failed
            {
                advanced.push((tp.clone(), next));
            }
        }
        advanced
    }

    /// Whether a batch has failed (the pipeline must stop and replay).
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Batches still in flight for a partition.
    pub fn in_flight(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(0, VecDeque::len)
    }

    /// Batches still in flight anywhere.
    pub fn total_in_flight(&self) -> usize {
        self.partitions.values().map(VecDeque::len).sum()
    }

    /// Forget a partition (revoked): its in-flight batches no longer commit anything here,
    /// nor do batches of it issued later.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        let tp = (topic.to_owned(), partition);
        self.partitions.remove(&tp);
        self.revoking.remove(&tp);
        if let Some(owned) = &mut self.owned {
            owned.remove(&tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(parts: &[(i32, i64)]) -> BatchOffsets {
        let mut o = BatchOffsets::default();
        for &(p, off) in parts {
            o.record("t", p, off);
        }
        o
    }

    #[test]
    fn batch_offsets_keep_each_partition_highest_whatever_the_order() {
        let mut o = BatchOffsets::default();
        for (topic, p, off) in [
            ("t", 0, 5),
            ("t", 0, 7),
            ("u", 0, 3),
            ("t", 1, 2),
            ("t", 0, 6),
        ] {
            o.record(topic, p, off);
        }
        let expected: BTreeMap<(String, i32), i64> = [
            (("t".into(), 0), 7),
            (("t".into(), 1), 2),
            (("u".into(), 0), 3),
        ]
        .into();
        assert_eq!(o.highest, expected);
        // The partition last recorded, dropped from the map, is recorded afresh.
        o.highest.retain(|(_, p), _| *p != 0);
        o.record("t", 0, 1);
        assert_eq!(o.highest.get(&("t".into(), 0)), Some(&1));
    }

    #[test]
    fn completes_when_last_handle_acks_and_commits_in_order() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        let first = issuer.issue(offsets(&[(0, 9)]));
        let second = issuer.issue(offsets(&[(0, 19)]));
        tracker.issued(first.seq(), &offsets(&[(0, 9)]));
        tracker.issued(second.seq(), &offsets(&[(0, 19)]));

        // The second batch finishes first (two sinks): nothing committable yet.
        let sink_a = second.clone();
        second.ack();
        assert!(rx.try_recv().is_err(), "one sink has not acked yet");
        sink_a.ack();
        let c = rx.try_recv().unwrap();
        assert!(c.delivered);
        assert!(tracker.complete(&c).is_empty(), "batch 0 still in flight");

        first.ack();
        let c = rx.try_recv().unwrap();
        assert_eq!(tracker.complete(&c), vec![(("t".to_string(), 0), 20)]);
        assert_eq!(tracker.total_in_flight(), 0);
    }

    #[test]
    fn a_dropped_handle_fails_the_batch_and_stops_commits() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        let batch = issuer.issue(offsets(&[(1, 5)]));
        tracker.issued(batch.seq(), &offsets(&[(1, 5)]));
        let dlq = batch.clone();
        batch.ack();
        drop(dlq);
        let c = rx.try_recv().unwrap();
        assert!(!c.delivered);
        assert!(tracker.complete(&c).is_empty());
        assert!(tracker.has_failed());
    }

    #[test]
    fn a_batch_of_a_partition_given_up_is_never_committable() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        tracker.assign([("t".to_string(), 0), ("t".to_string(), 1)]);
        tracker.forget("t", 1);
        // Cut before the revoke, sent after it (it waited for room in the pipeline).
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        b.ack();
        assert_eq!(
            tracker.complete(&rx.try_recv().unwrap()),
            vec![(("t".to_string(), 0), 4)],
            "partition 1 belongs to another host now"
        );
    }

    #[test]
    fn a_partition_given_up_while_revoking_commits_nothing_of_it_and_fails_nothing_else() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        tracker.assign([("t".to_string(), 0), ("t".to_string(), 1)]);
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        tracker.revoking(&[("t".to_string(), 1)]);
        // One sink wrote partition 0 of the batch; another could not write partition 1
        // within the drain.
        let segment_1 = b.clone();
        segment_1.give_up("t", 1);
        b.ack();
        let c = rx.try_recv().unwrap();
        assert_eq!(c.given_up, vec![("t".to_string(), 1)]);
        assert_eq!(tracker.complete(&c), vec![(("t".to_string(), 0), 4)]);
        assert!(!tracker.has_failed(), "partition 0 was delivered");
        assert_eq!(tracker.in_flight("t", 1), 0, "the drain need not wait");
    }

    #[test]
    fn a_batch_with_a_partition_given_up_is_not_delivered_to_a_source_without_partitions() {
        // The s3 source and the lake source go by `delivered`: a segment a sink abandoned
        // must not let them mark an object done.
        let (mut issuer, mut rx) = AckIssuer::new();
        let b = issuer.issue(offsets(&[(0, 3)]));
        let segment = b.clone();
        segment.give_up("t", 0);
        b.ack();
        let c = rx.try_recv().unwrap();
        assert!(!c.delivered);
        assert!(!c.failed, "nothing was dropped unacknowledged");
    }

    #[test]
    fn giving_up_a_partition_the_source_keeps_fails_the_batch() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        tracker.assign([("t".to_string(), 0)]);
        let o = offsets(&[(0, 3)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        b.give_up("t", 0);
        assert!(tracker.complete(&rx.try_recv().unwrap()).is_empty());
        assert!(tracker.has_failed());
    }

    #[test]
    fn a_lost_partition_given_up_after_it_was_forgotten_changes_nothing() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        tracker.assign([("t".to_string(), 0), ("t".to_string(), 1)]);
        let first = issuer.issue(offsets(&[(0, 3), (1, 7)]));
        tracker.issued(first.seq(), &offsets(&[(0, 3), (1, 7)]));
        tracker.forget("t", 1);
        // Assigned again, read again from the last commit.
        tracker.assign([("t".to_string(), 1)]);
        let second = issuer.issue(offsets(&[(1, 5)]));
        tracker.issued(second.seq(), &offsets(&[(1, 5)]));
        first.clone().give_up("t", 1);
        first.ack();
        assert_eq!(
            tracker.complete(&rx.try_recv().unwrap()),
            vec![(("t".to_string(), 0), 4)]
        );
        assert!(!tracker.has_failed());
        assert_eq!(tracker.in_flight("t", 1), 1, "the new batch still counts");
    }

    #[test]
    fn giving_up_a_partition_the_batch_does_not_cover_fails_it() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        tracker.assign([("t".to_string(), 0), ("t".to_string(), 1)]);
        tracker.revoking(&[("t".to_string(), 1)]);
        // A tick's metric records of partition 1 ride a batch of partition 0 only.
        let o = offsets(&[(0, 3)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        b.clone().give_up("t", 1);
        b.ack();
        assert!(tracker.complete(&rx.try_recv().unwrap()).is_empty());
        assert!(tracker.has_failed(), "the metric records would be lost");
    }

    /// An issuer reporting shares, and a tracker.
    fn sharing() -> (
        AckIssuer,
        mpsc::UnboundedReceiver<Completion>,
        OffsetTracker,
    ) {
        let (issuer, rx) = AckIssuer::new();
        (issuer.reporting_shares(), rx, OffsetTracker::default())
    }

    #[test]
    fn a_partitions_share_commits_once_its_own_holders_acked() {
        let (mut issuer, mut rx, mut tracker) = sharing();
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        // A sink keeping a segment per partition; another sink acknowledges the batch.
        let (segment_0, segment_1) = (b.narrow("t", 0), b.narrow("t", 1));
        b.ack();
        assert!(rx.try_recv().is_err(), "both segments are open");
        segment_0.ack();
        let share = rx.try_recv().unwrap();
        assert_eq!(tracker.complete(&share), vec![(("t".to_string(), 0), 4)]);
        assert_eq!(tracker.in_flight("t", 1), 1, "partition 1 still waits");
        segment_1.ack();
        let batch = rx.try_recv().unwrap();
        assert!(batch.delivered);
        assert_eq!(tracker.complete(&batch), vec![(("t".to_string(), 1), 8)]);
        assert_eq!(tracker.total_in_flight(), 0);
    }

    #[test]
    fn a_share_never_completes_while_a_full_holder_or_a_failed_segment_holds_it() {
        let (mut issuer, mut rx, mut tracker) = sharing();
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        let other_sink = b.clone();
        let (segment_0, segment_1) = (b.narrow("t", 0), b.narrow("t", 1));
        b.ack();
        segment_0.ack();
        assert!(
            rx.try_recv().is_err(),
            "the other sink holds partition 0 too"
        );
        other_sink.ack();
        let share = rx.try_recv().unwrap();
        assert_eq!(tracker.complete(&share), vec![(("t".to_string(), 0), 4)]);
        drop(segment_1); // its write failed
        let batch = rx.try_recv().unwrap();
        assert!(batch.failed);
        assert!(tracker.complete(&batch).is_empty());
        assert!(tracker.has_failed());
    }

    #[test]
    fn a_share_given_up_never_completes_early_and_a_tick_output_narrows_to_the_whole_batch() {
        let (mut issuer, mut rx, mut tracker) = sharing();
        tracker.assign([("t".to_string(), 0), ("t".to_string(), 1)]);
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        tracker.revoking(&[("t".to_string(), 1)]);
        let (segment_1, metric_of_2) = (b.narrow("t", 1), b.narrow("t", 2));
        segment_1.give_up("t", 1);
        b.ack();
        assert!(
            rx.try_recv().is_err(),
            "a record of partition 2 holds every share"
        );
        metric_of_2.ack();
        let batch = rx.try_recv().unwrap();
        assert_eq!(batch.given_up, vec![("t".to_string(), 1)]);
        assert_eq!(tracker.complete(&batch), vec![(("t".to_string(), 0), 4)]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn batches_spanning_partitions_commit_each_partition() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let mut tracker = OffsetTracker::default();
        let o = offsets(&[(0, 3), (1, 7)]);
        let b = issuer.issue(o.clone());
        tracker.issued(b.seq(), &o);
        b.ack();
        let mut got = tracker.complete(&rx.try_recv().unwrap());
        got.sort();
        assert_eq!(
            got,
            vec![(("t".to_string(), 0), 4), (("t".to_string(), 1), 8)]
        );
    }
}
