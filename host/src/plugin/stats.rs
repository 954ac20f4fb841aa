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
    pub instantiations: AtomicU64,
    /// Total time spent in calls, in nanoseconds.
    pub call_nanos: AtomicU64,
    /// Linear memory of the current instance, in bytes.
    pub memory_bytes: AtomicU64,
    custom: Mutex<BTreeMap<String, u64>>,
}

impl PluginStats {
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
