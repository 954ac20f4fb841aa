//! The pipeline's side of durable plugin state (see [`crate::state`]): the offset each
//! partition's state has reached, when to snapshot it, and restoring what the source hands
//! back.

use crate::ack::BatchOffsets;
use crate::chain::Chain;
use crate::state::{Snapshot, SnapshotExchange};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pipeline's side: which offset each partition's state has reached, and when to
/// snapshot it.
#[derive(Debug)]
pub struct Snapshotter {
    exchange: Arc<SnapshotExchange>,
    interval: Duration,
    last: Instant,
    /// Per partition, the next offset its state has not seen.
    next_offsets: HashMap<(String, i32), i64>,
    /// Partitions whose state may have changed since their last snapshot.
    changed: HashSet<(String, i32)>,
}

impl Snapshotter {
    pub fn new(exchange: Arc<SnapshotExchange>, interval: Duration) -> Snapshotter {
        Snapshotter {
            exchange,
            interval,
            last: Instant::now(),
            next_offsets: HashMap::new(),
            changed: HashSet::new(),
        }
    }

    /// The chain processed the records of `partitions` in a batch covering `offsets`.
    pub fn processed(&mut self, offsets: &BatchOffsets, partitions: &[(String, i32)]) {
        for (key, highest) in &offsets.highest {
            if !partitions.contains(key) {
                continue;
            }
            let next = self.next_offsets.entry(key.clone()).or_insert(highest + 1);
            *next = (*next).max(highest + 1);
            if !self.changed.contains(key) {
                self.changed.insert(key.clone());
            }
        }
    }

    /// A tick emitted something: windows closed, every partition's state moved.
    pub fn ticked(&mut self) {
        self.changed.extend(self.next_offsets.keys().cloned());
    }

    /// Hand `snapshot` to the chain before any record of its partition.
    pub fn restore(&mut self, chain: &mut Chain, snapshot: &Snapshot) {
        let key = (snapshot.topic.clone(), snapshot.partition);
        chain.restore(&key.0, key.1, snapshot.next_offset, &snapshot.stages);
        self.next_offsets.insert(key, snapshot.next_offset);
    }

    /// Every `interval`, snapshot the partitions whose state changed.
    pub fn snapshot_due(&mut self, chain: &mut Chain) {
        if self.last.elapsed() < self.interval {
            return;
        }
        self.snapshot_changed(chain);
    }

    /// Snapshot the partitions whose state changed, now.
    pub fn snapshot_changed(&mut self, chain: &mut Chain) {
        self.last = Instant::now();
        for key in std::mem::take(&mut self.changed) {
            self.snapshot(chain, &key);
        }
    }

    /// The source gives `partitions` up after its last batch of them: snapshot them one
    /// last time, drop them from the chain, and tell the source.
    pub fn give_up(&mut self, chain: &mut Chain, partitions: &[(String, i32)]) {
        for key in partitions {
            self.snapshot(chain, key);
            self.forget(chain, key);
        }
        self.exchange.last_taken(partitions);
    }

    /// The source lost `partitions`: their next owner restores what was stored; drop them.
    pub fn lose(&mut self, chain: &mut Chain, partitions: &[(String, i32)]) {
        for key in partitions {
            self.forget(chain, key);
        }
    }

    fn forget(&mut self, chain: &mut Chain, key: &(String, i32)) {
        for failure in chain.release(&key.0, key.1) {
            tracing::warn!(reason = %failure, topic = %key.0, partition = key.1, "a plugin failed to drop its state of a partition the host gave up");
        }
        self.next_offsets.remove(key);
        self.changed.remove(key);
    }

    fn snapshot(&mut self, chain: &mut Chain, key: &(String, i32)) {
        let Some(next_offset) = self.next_offsets.get(key).copied() else {
            return;
        };
        match chain.snapshot(&key.0, key.1) {
            Ok(stages) => self.exchange.offer(Snapshot {
                topic: key.0.clone(),
                partition: key.1,
                next_offset,
                stages,
            }),
            Err(failure) => tracing::warn!(
                reason = %failure, topic = %key.0, partition = key.1,
                "cannot snapshot the plugins' state of this partition; the last stored one stays, and a restore from it replays further"
            ),
        }
    }
}
