//! Durable plugin state: what the pipeline hands the source to keep, and in what form.
//!
//! The pipeline snapshots every stage's state of a source partition at a batch boundary —
//! every `state_interval_ms`, and when it gives the partition up — together with the
//! offset the snapshot reflects (the partition's next offset to process). It puts the
//! [`Snapshot`] in the [`SnapshotExchange`]; the source stores it only once the group has
//! committed that offset (every record the snapshot has seen is delivered), so a stored
//! snapshot is never ahead of the commit. On assignment the source restores a partition's
//! latest snapshot and resumes the partition at the snapshot's offset, not the later
//! commit: the records between are processed again (sinks keyed per record write them
//! once; Kafka topics get them again, as after any crash) and the state counts each record
//! exactly once.
//!
//! One snapshot holds every stage's state of its partition, so the stages of a restored
//! partition always agree on where they stand.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Every stage's state of one source partition, as of `next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub topic: String,
    pub partition: i32,
    /// The first offset the state has not seen: where the partition resumes.
    pub next_offset: i64,
    /// (stage name, its state); stages holding nothing are left out.
    pub stages: Vec<(String, Vec<u8>)>,
}

/// The first bytes of a stored snapshot: its format and version.
const MAGIC: &[u8; 4] = b"SLS1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Sluice state snapshot (it does not start with {MAGIC:?})")]
    NotASnapshot,
    #[error("the snapshot is cut short")]
    Truncated,
    #[error("a stage name in the snapshot is not UTF-8")]
    BadName,
}

impl Snapshot {
    /// The record key in the state topic: one per source partition.
    pub fn key(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}")
    }

    /// The stored value: magic, next offset, then each stage's name and state, each
    /// length-prefixed (big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.stages.iter().map(|(n, s)| 6 + n.len() + s.len()).sum();
        let mut out = Vec::with_capacity(16 + size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&(self.stages.len() as u32).to_be_bytes());
        for (name, state) in &self.stages {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(state.len() as u32).to_be_bytes());
            out.extend_from_slice(state);
        }
        out
    }

    pub fn decode(topic: &str, partition: i32, bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(DecodeError::NotASnapshot)?;
        let mut take = |n: usize| -> Result<&[u8], DecodeError> {
            if rest.len() < n {
                return Err(DecodeError::Truncated);
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let next_offset = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut stages = Vec::new();
        for _ in 0..count {
            let len = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
            let name = std::str::from_utf8(take(len as usize)?)
                .map_err(|_| DecodeError::BadName)?
                .to_owned();
            let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
            stages.push((name, take(len as usize)?.to_vec()));
        }
        Ok(Snapshot {
            topic: topic.to_owned(),
            partition,
            next_offset,
            stages,
        })
    }
}

/// Where the pipeline leaves snapshots for the source to store once they are committed.
#[derive(Debug, Default)]
pub struct SnapshotExchange {
    inner: Mutex<Pending>,
    /// Signalled when the pipeline leaves a partition's last snapshot.
    settled: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    /// Per partition, the newest snapshot not yet stored.
    latest: HashMap<(String, i32), Snapshot>,
    /// Partitions the pipeline gave up and took its last snapshot of (or had none).
    last_taken: Vec<(String, i32)>,
}

impl SnapshotExchange {
    /// A snapshot taken at a batch boundary; it replaces an older one of its partition.
    pub fn offer(&self, snapshot: Snapshot) {
        let mut pending = self.lock();
        let key = (snapshot.topic.clone(), snapshot.partition);
        pending.latest.insert(key, snapshot);
    }

    /// The pipeline gave `partitions` up after its last batch of them and left their last
    /// snapshots (if they held state): the source may store them once committed.
    pub fn last_taken(&self, partitions: &[(String, i32)]) {
        let mut pending = self.lock();
        for p in partitions {
            if !pending.last_taken.contains(p) {
                pending.last_taken.push(p.clone());
            }
        }
        self.settled.notify_all();
    }

    /// Wait until the pipeline took the last snapshot of each of `partitions`, or
    /// `deadline`; true if it did.
    pub fn wait_last_taken(&self, partitions: &[(String, i32)], deadline: Instant) -> bool {
        let mut pending = self.lock();
        loop {
            if partitions.iter().all(|p| pending.last_taken.contains(p)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = self
                .settled
                .wait_timeout(pending, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The group committed `offsets` (next offset per partition): take the snapshots they
    /// cover, to be stored. A snapshot ahead of its partition's commit stays pending.
    pub fn take_committed(&self, offsets: &[((String, i32), i64)]) -> Vec<Snapshot> {
        let mut pending = self.lock();
        let mut covered = Vec::new();
        for (key, committed) in offsets {
            if pending
                .latest
                .get(key)
                .is_some_and(|s| s.next_offset <= *committed)
            {
                covered.extend(pending.latest.remove(key));
            }
        }
        covered
    }

    /// The source no longer owns `partitions` (lost, or given up and stored): drop what is
    /// pending of them; a later assignment starts afresh.
    pub fn forget(&self, partitions: &[(String, i32)]) {
        let mut pending = self.lock();
        for p in partitions {
            pending.latest.remove(p);
            pending.last_taken.retain(|q| q != p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(partition: i32, next_offset: i64) -> Snapshot {
        Snapshot {
            topic: "raw".into(),
            partition,
            next_offset,
            stages: vec![
                ("dedup".into(), vec![1, 2, 3]),
                ("metrics".into(), Vec::new()),
            ],
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written_and_garbage_is_refused() {
        let s = snapshot(2, 4711);
        assert_eq!(Snapshot::decode("raw", 2, &s.encode()), Ok(s.clone()));
        let bytes = s.encode();
        assert_eq!(
            Snapshot::decode("raw", 2, &bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Snapshot::decode("raw", 2, b"{\"json\":1}"),
            Err(DecodeError::NotASnapshot)
        );
    }

    #[test]
    fn only_a_committed_snapshot_is_taken_and_the_newest_replaces_older_ones() {
        let exchange = SnapshotExchange::default();
        exchange.offer(snapshot(0, 100));
        exchange.offer(snapshot(0, 200));
        exchange.offer(snapshot(1, 50));
        let key = |p: i32| ("raw".to_owned(), p);
        // The commit is behind partition 0's newest snapshot: it stays pending.
        let taken = exchange.take_committed(&[(key(0), 150), (key(1), 50)]);
        assert_eq!(taken, vec![snapshot(1, 50)]);
        let taken = exchange.take_committed(&[(key(0), 200)]);
        assert_eq!(taken, vec![snapshot(0, 200)]);
        assert!(exchange.take_committed(&[(key(0), 300)]).is_empty());
    }

    #[test]
    fn waiting_for_last_snapshots_ends_when_taken_or_at_the_deadline() {
        let exchange = std::sync::Arc::new(SnapshotExchange::default());
        let parts = vec![("raw".to_owned(), 0), ("raw".to_owned(), 1)];
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(!exchange.wait_last_taken(&parts, soon));
        let pipeline = exchange.clone();
        let given_up = parts.clone();
        let t = std::thread::spawn(move || pipeline.last_taken(&given_up));
        assert!(exchange.wait_last_taken(&parts, Instant::now() + Duration::from_secs(10)));
        t.join().unwrap();
        exchange.forget(&parts);
        assert!(!exchange.wait_last_taken(&parts, Instant::now()));
    }
}
