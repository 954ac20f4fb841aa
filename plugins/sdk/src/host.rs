//! What the host offers a plugin: logging and counters.
//!
//! In wasm these call the `sluice:plugin/host` imports. Natively they go to a per-thread
//! recorder that tests and the native benchmark can read with [`crate::native`].

/// Log levels, as in `sluice:plugin/host.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Write a structured log line to the host's log, attributed to this plugin.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    imp::log(level, message, fields)
}

/// Add `delta` to this plugin's counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    if delta > 0 {
        imp::counter_add(name, delta)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::wasm::bindings::sluice::plugin::host;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        host::log(level, message, &fields);
    }

    pub fn counter_add(name: &str, delta: u64) {
        host::counter_add(name, delta);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use crate::native::RECORDER;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        RECORDER.with(|r| {
            let mut r = r.borrow_mut();
            let fields = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            r.logs.push((level, message.to_string(), fields));
        });
    }

    pub fn counter_add(name: &str, delta: u64) {
        RECORDER.with(|r| *r.borrow_mut().counters.entry(name.to_string()).or_default() += delta);
    }
}
