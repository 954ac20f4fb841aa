//! The bounded set of recently seen keys, ordered by event time for expiry and eviction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are already hashes: use them as they are.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Key → event time of its last accepted occurrence, plus a min-heap of
/// (event time, key) for removing the oldest first. The heap may hold stale pairs
/// (a key re-accepted later): a pair only removes its key while the times still match.
#[derive(Default)]
pub struct Seen {
    times: HashMap<u64, i64, BuildHasherDefault<PassThrough>>,
    order: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Seen {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn get(&self, key: u64) -> Option<i64> {
        self.times.get(&key).copied()
    }

    pub fn insert(&mut self, key: u64, time: i64) {
        self.times.insert(key, time);
        self.order.push(Reverse((time, key)));
        // Stale heap pairs are garbage: rebuild when they dominate (amortised O(1)).
        if self.order.len() > 2 * self.times.len() + 1024 {
            self.order = self.times.iter().map(|(&k, &t)| Reverse((t, k))).collect();
        }
    }

    /// Remove the entry with the oldest event time; false when empty.
    fn pop_oldest(&mut self) -> Option<i64> {
        while let Some(Reverse((time, key))) = self.order.pop() {
            if self.times.get(&key) == Some(&time) {
                self.times.remove(&key);
                return Some(time);
            }
        }
        None
    }

    /// Remove entries older than `cutoff`; returns how many.
    pub fn expire(&mut self, cutoff: i64) -> u64 {
        let mut n = 0;
        while let Some(Reverse((time, _))) = self.order.peek() {
            if *time >= cutoff {
                break;
            }
            if let Some(Reverse((time, key))) = self.order.pop()
                && self.times.get(&key) == Some(&time)
            {
                self.times.remove(&key);
                n += 1;
            }
        }
        n
    }

    /// Evict oldest entries until at most `max` remain; returns how many.
    pub fn evict_to(&mut self, max: usize) -> u64 {
        let mut n = 0;
        while self.times.len() > max && self.pop_oldest().is_some() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_eviction_by_event_time() {
        let mut s = Seen::default();
        s.insert(1, 30);
        s.insert(2, 10);
        s.insert(3, 20);
        assert_eq!(s.evict_to(2), 1);
        assert_eq!(s.get(2), None);
        s.insert(1, 40); // re-accepted later: its old heap pair is stale
        assert_eq!(s.expire(35), 1); // removes 3 (20), not 1 (now 40)
        assert_eq!((s.get(1), s.get(3), s.len()), (Some(40), None, 1));
    }
}
