//! The `sluice:plugin/host` imports: logging and counters, attributed to the plugin.
//! Both are bounded so a plugin cannot flood the host's log or memory.

use super::bindings::sluice::plugin::{host, types};
use super::runtime::StoreState;

/// Longest message or field a plugin may log; the rest is cut.
const MAX_LOG_BYTES: usize = 4096;

fn cut(s: &str) -> &str {
    if s.len() <= MAX_LOG_BYTES {
        return s;
    }
    let mut end = MAX_LOG_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        let plugin = self.plugin.as_str();
        let message = cut(&message);
        let fields: Vec<String> = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{}={}", cut(k), cut(v)))
            .collect();
        let fields = fields.join(" ");
        match level {
            host::Level::Trace => tracing::trace!(plugin, fields, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, fields, "{message}"),
            host::Level::Info => tracing::info!(plugin, fields, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, fields, "{message}"),
            host::Level::Error => tracing::error!(plugin, fields, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.stats.add_custom(&name, delta);
    }
}
