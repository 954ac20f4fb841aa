//! # dedup
//!
//! Drops records whose key was already seen within a window of event time. Keys are kept
//! per source partition, and that state is durable (contract 0.2.0): it survives a restart
//! and moves with its partition on a rebalance. Memory is bounded (`max_entries` over all
//! partitions, oldest evicted first). See `README.md`.

pub mod hash;
pub mod key;
pub mod seen;

use key::KeySpec;
use seen::Seen;
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::{
    BatchView, Config as PluginConfig, Output, PackedPlugin, Partitions, PluginError, RecordView,
    SourcePartition, Stateful, host,
};

const NS_PER_SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long (event time) a key is remembered.
    pub window_seconds: u64,
    /// Most keys remembered; beyond it the oldest (by event time) are evicted.
    pub max_entries: usize,
    /// Fields making up the key; empty = automatic (see [`KeySpec::Auto`]).
    pub key_fields: Vec<String>,
    /// A record whose event time is further than this ahead of the time the host read it
    /// is deduplicated but does not advance the watermark (one bad clock must not expire
    /// everything).
    pub max_future_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_seconds: 600,
            max_entries: 100_000,
            key_fields: Vec::new(),
            max_future_seconds: 300,
        }
    }
}

pub struct Dedup {
    rules: Rules,
    max_entries: usize,
    partitions: Partitions<PartitionSeen>,
    /// Keys remembered over all partitions.
    total: usize,
    /// Highest event time the host's `tick` reported; `i64::MIN` before any.
    ticked: i64,
}

/// What makes a duplicate: fixed by the config.
struct Rules {
    spec: KeySpec,
    window: i64,
    max_future: i64,
}

/// The keys seen in one source partition.
struct PartitionSeen {
    seen: Seen,
    /// Highest trusted event time seen in the partition; `i64::MIN` before any.
    watermark: i64,
    /// Highest origin offset checked; -1 before any.
    offset: i64,
    /// After a restore, records up to this offset are replays of input the restored state
    /// already holds (the host resumes at its committed offset): the first copy of a key,
    /// replayed, is no duplicate of itself.
    replay_until: i64,
}

impl PartitionSeen {
    fn new() -> Self {
        PartitionSeen {
            seen: Seen::default(),
            watermark: i64::MIN,
            offset: -1,
            replay_until: -1,
        }
    }

    fn cutoff(&self, window: i64, ticked: i64) -> i64 {
        self.watermark.max(ticked).saturating_sub(window)
    }
}

/// One partition's state, as stored: the keys remembered there and how far it has read.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub watermark: i64,
    pub offset: i64,
    /// (key, event time, origin offset), oldest first.
    pub entries: Vec<(u64, i64, i64)>,
}

#[derive(Default)]
struct Counts {
    seen: u64,
    dropped: u64,
    evicted: u64,
    expired: u64,
    /// Records older than the window behind the watermark: passed, not remembered.
    late: u64,
}

impl Counts {
    fn flush(&self) {
        host::counter_add("seen", self.seen);
        host::counter_add("dropped", self.dropped);
        host::counter_add("evicted", self.evicted);
        host::counter_add("expired", self.expired);
        host::counter_add("late", self.late);
    }
}

impl Dedup {
    pub fn new(cfg: &Config) -> Result<Self, PluginError> {
        if cfg.max_entries == 0 || cfg.window_seconds == 0 {
            return Err(PluginError::new(
                "invalid config: window_seconds and max_entries must be positive",
            ));
        }
        let secs = |s: u64| {
            i64::try_from(s)
                .unwrap_or(i64::MAX / NS_PER_SEC)
                .saturating_mul(NS_PER_SEC)
        };
        Ok(Dedup {
            rules: Rules {
                spec: match cfg.key_fields.is_empty() {
                    true => KeySpec::Auto,
                    false => KeySpec::Fields(cfg.key_fields.clone()),
                },
                window: secs(cfg.window_seconds),
                max_future: secs(cfg.max_future_seconds),
            },
            max_entries: cfg.max_entries,
            partitions: Partitions::default(),
            total: 0,
            ticked: i64::MIN,
        })
    }

    /// Number of keys currently remembered, over all partitions.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Expire what every partition's window has passed.
    fn expire(&mut self) -> u64 {
        let (window, ticked) = (self.rules.window, self.ticked);
        let mut expired = 0;
        for (_, part) in self.partitions.iter_mut() {
            expired += part.seen.expire(part.cutoff(window, ticked));
        }
        self.total -= expired as usize;
        expired
    }

    /// Evict the oldest keys of the fullest partitions until at most `max_entries` remain.
    fn bound(&mut self) -> u64 {
        let mut evicted = 0;
        while self.total > self.max_entries {
            let over = self.total - self.max_entries;
            let mut sizes: Vec<usize> = self.partitions.iter().map(|(_, p)| p.seen.len()).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let (largest, next) = (sizes[0], sizes.get(1).copied().unwrap_or(0));
            let keep = largest - over.min(largest - next).max(1).min(largest);
            let Some((_, part)) = self
                .partitions
                .iter_mut()
                .find(|(_, p)| p.seen.len() == largest)
            else {
                break;
            };
            let n = part.seen.evict_to(keep);
            self.total -= n as usize;
            evicted += n;
        }
        evicted
    }
}

impl Rules {
    /// Whether `record` is a duplicate in its partition; remembers it when it is not.
    fn is_duplicate(
        &self,
        part: &mut PartitionSeen,
        ticked: i64,
        record: &RecordView<'_>,
        counts: &mut Counts,
    ) -> bool {
        let t = record.timestamp;
        let offset = record.origin.offset;
        let trusted = record.observed_timestamp == 0
            || t <= record.observed_timestamp.saturating_add(self.max_future);
        if trusted && t > part.watermark {
            part.watermark = t;
        }
        part.offset = part.offset.max(offset);
        let cutoff = part.cutoff(self.window, ticked);
        let (key, _) = self.spec.key(record);
        if let Some((first, first_offset)) = part.seen.get_at(key)
            && first >= cutoff
            && t.abs_diff(first) <= self.window.unsigned_abs()
        {
            let replayed_first_copy = offset <= part.replay_until && offset == first_offset;
            return !replayed_first_copy;
        }
        if t < cutoff {
            counts.late += 1;
            return false;
        }
        part.seen.insert_at(key, t, offset);
        false
    }
}

// Dedup only reads records: it takes them in place and forwards the ones it keeps as bytes.
impl PackedPlugin for Dedup {
    fn init(config: &PluginConfig) -> Result<Self, PluginError> {
        Dedup::new(&config.parse::<Config>()?)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut counts = Counts::default();
        for record in batch.iter() {
            if record.is_cleaned() {
                counts.seen += 1;
                let origin = record.origin;
                let part = self.partitions.get_or_insert_with(
                    origin.topic,
                    origin.partition,
                    PartitionSeen::new,
                );
                let before = part.seen.len();
                let duplicate = self
                    .rules
                    .is_duplicate(part, self.ticked, &record, &mut counts);
                self.total = self.total + part.seen.len() - before;
                if duplicate {
                    counts.dropped += 1;
                    continue;
                }
            }
            out.keep(&record);
        }
        counts.evicted += self.bound();
        counts.expired += self.expire();
        counts.flush();
        Ok(())
    }

    fn tick(&mut self, watermark: i64, _out: &mut Output) -> Result<(), PluginError> {
        self.ticked = self.ticked.max(watermark);
        let expired = self.expire();
        host::counter_add("expired", expired);
        Ok(())
    }
}

impl Stateful for Dedup {
    type State = State;

    fn snapshot(&self, source: &SourcePartition) -> Option<State> {
        let part = self.partitions.get(source).filter(|p| !p.seen.is_empty())?;
        Some(State {
            watermark: part.watermark,
            offset: part.offset,
            entries: part.seen.entries(),
        })
    }

    fn restore(&mut self, source: &SourcePartition, state: State) -> Result<(), PluginError> {
        let mut part = PartitionSeen::new();
        part.watermark = state.watermark;
        part.offset = state.offset;
        part.replay_until = state.offset;
        for (key, time, offset) in state.entries {
            part.seen.insert_at(key, time, offset);
        }
        self.total += part.seen.len();
        if let Some(old) = self.partitions.remove(source) {
            self.total -= old.seen.len();
        }
        self.partitions.insert(source.clone(), part);
        // A smaller `max_entries` than the snapshot's holds from now on.
        host::counter_add("evicted", self.bound());
        Ok(())
    }

    fn release(&mut self, source: &SourcePartition) {
        if let Some(part) = self.partitions.remove(source) {
            self.total -= part.seen.len();
        }
    }
}

sluice_plugin_sdk::export_plugin!(Dedup, state);
