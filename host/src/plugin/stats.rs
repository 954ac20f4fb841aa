//! Per-plugin counters: the host's own (calls, records, failures) and the plugin's
//! (`counter-add`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub out_of_memory: AtomicU64,
    pub errors: AtomicU64,
    /// Records dead-lettered for claiming an origin the plugin was never given.
    pub foreign_origins: AtomicU64,
    pub instantiations: AtomicU64,
    /// Total time spent in calls, in nanoseconds.
    pub call_nanos: AtomicU64,
    /// Linear memory of the current instance, in bytes.
    pub memory_bytes: AtomicU64,
    /// Call durations: counts per bucket of [`LATENCY_BUCKETS_SECONDS`] (cumulative when
    /// exported), plus one for slower calls.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    custom: Mutex<BTreeMap<String, u64>>,
}

/// Upper bounds of the call-latency histogram buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 10] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

impl PluginStats {
    /// Record one call's duration.
    pub fn observe_call(&self, nanos: u64) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.call_nanos
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        let seconds = nanos as f64 / 1e9;
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.latency_buckets[bucket].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn add_custom(&self, name: &str, delta: u64) {
        let mut custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        match custom.get_mut(name) {
            Some(v) => *v = v.saturating_add(delta),
            None => {
                // A plugin must not be able to grow host memory without bound.
                if custom.len() < 256 {
                    custom.insert(name.chars().take(64).collect(), delta);
                }
            }
        }
    }

    /// The plugin's own counters.
    pub fn custom(&self) -> BTreeMap<String, u64> {
        self.custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
