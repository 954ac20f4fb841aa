//! # dedup
//!
//! Drops records whose key was already seen within a window of event time. Memory is
//! bounded (`max_entries`, oldest evicted first). State lives in the instance only: see
//! `README.md` for what that means across restarts and consumer-group rebalances.

pub mod hash;
pub mod key;
pub mod seen;

use key::KeySpec;
use seen::Seen;
use serde::Deserialize;
use sluice_plugin_sdk::{
    BatchView, Config as PluginConfig, Output, PackedPlugin, PluginError, RecordView, host,
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
    spec: KeySpec,
    window: i64,
    max_entries: usize,
    max_future: i64,
    seen: Seen,
    /// Highest trusted event time seen (or ticked); `i64::MIN` before any.
    watermark: i64,
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
            spec: match cfg.key_fields.is_empty() {
                true => KeySpec::Auto,
                false => KeySpec::Fields(cfg.key_fields.clone()),
            },
            window: secs(cfg.window_seconds),
            max_entries: cfg.max_entries,
            max_future: secs(cfg.max_future_seconds),
            seen: Seen::default(),
            watermark: i64::MIN,
        })
    }

    /// Number of keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn cutoff(&self) -> i64 {
        self.watermark.saturating_sub(self.window)
    }

    /// Whether `record` is a duplicate; remembers it when it is not.
    fn is_duplicate(&mut self, record: &RecordView<'_>, counts: &mut Counts) -> bool {
        let t = record.timestamp;
        let trusted = record.observed_timestamp == 0
            || t <= record.observed_timestamp.saturating_add(self.max_future);
        if trusted && t > self.watermark {
            self.watermark = t;
        }
        let (key, _) = self.spec.key(record);
        if let Some(first) = self.seen.get(key)
            && first >= self.cutoff()
            && t.abs_diff(first) <= self.window.unsigned_abs()
        {
            return true;
        }
        if t < self.cutoff() {
            counts.late += 1;
            return false;
        }
        self.seen.insert(key, t);
        counts.evicted += self.seen.evict_to(self.max_entries);
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
                if self.is_duplicate(&record, &mut counts) {
                    counts.dropped += 1;
                    continue;
                }
            }
            out.keep(&record);
        }
        counts.expired += self.seen.expire(self.cutoff());
        counts.flush();
        Ok(())
    }

    fn tick(&mut self, watermark: i64, _out: &mut Output) -> Result<(), PluginError> {
        self.watermark = self.watermark.max(watermark);
        let expired = self.seen.expire(self.cutoff());
        host::counter_add("expired", expired);
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Dedup);
