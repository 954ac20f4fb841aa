//! The `sluice:plugin/host` imports (0.1.0 and 0.2.0 alike): logging and counters,
//! attributed to the plugin.
//! Both are bounded so a plugin cannot flood the host's log or memory.

use super::bindings::sluice::plugin::{host, types};
use super::bindings::v2::sluice::plugin::{host as v2host, types as v2types};
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
        let level = match level {
            host::Level::Trace => tracing::Level::TRACE,
            host::Level::Debug => tracing::Level::DEBUG,
            host::Level::Info => tracing::Level::INFO,
            host::Level::Warn => tracing::Level::WARN,
            host::Level::Error => tracing::Level::ERROR,
        };
        log(&self.plugin, level, &message, &fields);
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.stats.add_custom(&name, delta);
    }
}

// 0.2.0 offers the same imports: the same functions, with their own generated types.
impl v2types::Host for StoreState {}

impl v2host::Host for StoreState {
    fn log(&mut self, level: v2host::Level, message: String, fields: Vec<(String, String)>) {
        let level = match level {
            v2host::Level::Trace => tracing::Level::TRACE,
            v2host::Level::Debug => tracing::Level::DEBUG,
            v2host::Level::Info => tracing::Level::INFO,
            v2host::Level::Warn => tracing::Level::WARN,
            v2host::Level::Error => tracing::Level::ERROR,
        };
        log(&self.plugin, level, &message, &fields);
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.stats.add_custom(&name, delta);
    }
}

fn log(plugin: &str, level: tracing::Level, message: &str, fields: &[(String, String)]) {
    let message = cut(message);
    let fields: Vec<String> = fields
        .iter()
        .take(32)
        .map(|(k, v)| format!("{}={}", cut(k), cut(v)))
        .collect();
    let fields = fields.join(" ");
    match level {
        tracing::Level::TRACE => tracing::trace!(plugin, fields, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(plugin, fields, "{message}"),
        tracing::Level::INFO => tracing::info!(plugin, fields, "{message}"),
        tracing::Level::WARN => tracing::warn!(plugin, fields, "{message}"),
        _ => tracing::error!(plugin, fields, "{message}"),
    }
}
