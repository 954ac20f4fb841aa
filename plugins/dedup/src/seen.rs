//! The bounded set of recently seen keys, ordered by event time for expiry and eviction.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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

/// Key → event time and origin offset of its last accepted occurrence, plus every accepted
/// (event time, key) pair in event-time order, for removing the oldest first.
///
/// Event time mostly grows as records arrive, so pairs are kept in a queue in arrival
/// order, and only a pair older than the newest one queued goes to a min-heap. Removing the
/// oldest is then O(1) for in-order input; a heap alone costs a cache-missing O(log n) pop
/// for every record once `max_entries` is reached, which is the steady state under load.
/// Stale pairs (a key re-accepted later) stay queued; a pair only removes its key while the
/// times still match.
#[derive(Default)]
pub struct Seen {
    times: HashMap<u64, (i64, i64), BuildHasherDefault<PassThrough>>,
    /// Pairs in arrival order, event times non-decreasing.
    in_order: VecDeque<(i64, u64)>,
    /// Pairs that arrived older than the newest of `in_order`.
    late: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Seen {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn get(&self, key: u64) -> Option<i64> {
        self.times.get(&key).map(|&(time, _)| time)
    }

    /// The event time and origin offset the key was accepted at.
    pub fn get_at(&self, key: u64) -> Option<(i64, i64)> {
        self.times.get(&key).copied()
    }

    pub fn insert(&mut self, key: u64, time: i64) {
        self.insert_at(key, time, 0);
    }

    /// Remember `key` as accepted at event time `time`, from origin offset `offset`.
    pub fn insert_at(&mut self, key: u64, time: i64, offset: i64) {
        self.times.insert(key, (time, offset));
        match self.in_order.back() {
            Some(&(newest, _)) if time < newest => self.late.push(Reverse((time, key))),
            _ => self.in_order.push_back((time, key)),
        }
        // Stale pairs are garbage: rebuild when they dominate (amortised O(1)).
        if self.in_order.len() + self.late.len() > 2 * self.times.len() + 1024 {
            let mut pairs: Vec<(i64, u64)> =
                self.times.iter().map(|(&k, &(t, _))| (t, k)).collect();
            pairs.sort_unstable();
            self.in_order = pairs.into();
            self.late.clear();
        }
    }

    /// Whether the oldest pair, stale or not, is in `late` rather than `in_order`.
    fn late_is_oldest(&self) -> bool {
        match (self.in_order.front(), self.late.peek()) {
            (Some(&(queued, _)), Some(Reverse((late, _)))) => *late < queued,
            (queued, late) => queued.is_none() && late.is_some(),
        }
    }

    /// The oldest pair, stale or not.
    fn peek_pair(&self) -> Option<(i64, u64)> {
        if self.late_is_oldest() {
            self.late.peek().map(|Reverse(pair)| *pair)
        } else {
            self.in_order.front().copied()
        }
    }

    /// Take the oldest pair, stale or not.
    fn pop_pair(&mut self) -> Option<(i64, u64)> {
        if self.late_is_oldest() {
            self.late.pop().map(|Reverse(pair)| pair)
        } else {
            self.in_order.pop_front()
        }
    }

    /// Remove the pair's key if the pair is current; whether it was. One lookup: the key
    /// of the oldest pair is rarely in cache.
    fn remove_current(&mut self, (time, key): (i64, u64)) -> bool {
        match self.times.entry(key) {
            Entry::Occupied(entry) if entry.get().0 == time => {
                entry.remove();
                true
            }
            _ => false,
        }
    }

    /// Remove the entry with the oldest event time; false when empty.
    fn pop_oldest(&mut self) -> Option<i64> {
        while let Some(pair) = self.pop_pair() {
            if self.remove_current(pair) {
                return Some(pair.0);
            }
        }
        None
    }

    /// Remove entries older than `cutoff`; returns how many.
    pub fn expire(&mut self, cutoff: i64) -> u64 {
        let mut n = 0;
        while self.peek_pair().is_some_and(|(time, _)| time < cutoff) {
            let pair = self.pop_pair().expect("a pair is queued");
            n += u64::from(self.remove_current(pair));
        }
        n
    }

    /// Every entry as (key, event time, origin offset), oldest first.
    pub fn entries(&self) -> Vec<(u64, i64, i64)> {
        let mut entries: Vec<(u64, i64, i64)> =
            self.times.iter().map(|(&k, &(t, o))| (k, t, o)).collect();
        entries.sort_unstable_by_key(|&(k, t, _)| (t, k));
        entries
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

    /// Against a plain map as the model: each eviction removes an entry with the least time
    /// (among equal times any one will do), and expiry removes exactly the entries older than
    /// the cutoff. Mostly ordered input with late records, re-accepted keys and compactions.
    #[test]
    fn removes_oldest_first_like_a_model() {
        let mut s = Seen::default();
        let mut model: HashMap<u64, i64> = HashMap::new();
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000i64 {
            let r = next();
            let key = r % 3_000;
            // Mostly increasing; one in eight is up to 500 behind.
            let time = if r % 8 == 0 {
                step - (r % 500) as i64
            } else {
                step
            };
            s.insert(key, time);
            model.insert(key, time);
            if step % 3 == 0 {
                let oldest = model.values().copied().min();
                assert_eq!(s.evict_to(s.len() - 1), 1);
                let removed: Vec<u64> = model
                    .keys()
                    .copied()
                    .filter(|k| s.get(*k).is_none())
                    .collect();
                assert_eq!(removed.len(), 1, "step {step}");
                assert_eq!(model.remove(&removed[0]), oldest, "step {step}");
            }
            if step % 1_000 == 999 {
                let cutoff = step - 300;
                let expired = model.values().filter(|&&t| t < cutoff).count() as u64;
                model.retain(|_, t| *t >= cutoff);
                assert_eq!(s.expire(cutoff), expired, "step {step}");
            }
            assert_eq!(s.len(), model.len(), "step {step}");
        }
    }
}
