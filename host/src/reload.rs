//! Hot reload: the host watches the directories of its plugins and reloads on SIGHUP.
//!
//! A new or changed `.wasm` is compiled, checked against the contract and initialised on
//! this watcher's own thread — off the hot path — and only then handed to the pipeline,
//! which swaps it in between two batches. A plugin that fails any of that is rejected with
//! a log line naming it and why; the running version keeps going. A removed plugin file is
//! handled as `reload.on_removed` says: keep running the loaded version (default), or
//! bypass the stage.
//!
//! On SIGHUP the config file is read again, its `${secret:…}` and `${ssm:…}` fetched anew:
//! each plugin's `config`, `timeout_ms`, `memory_limit_mb`, `max_output_factor`,
//! `on_failure` and `role`, and `reload.on_removed`, apply live. Adding, removing or
//! reordering plugins, and any change to the source, sinks, pipeline or admin sections,
//! need a restart; the host logs which keys changed (never their values), which secrets
//! changed, and that those keys wait for a restart, and keeps the running setup.

use crate::config::{Config, OnRemoved, PluginConfig};
use crate::plugin::{LoadedPlugin, PluginRuntime, PluginStats};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

/// A change for the pipeline to apply between batches.
#[derive(Clone)]
pub enum Reload {
    /// Replace the plugin at this chain position.
    Replace {
        index: usize,
        plugin: Arc<LoadedPlugin>,
    },
    /// Let records pass this position unchanged.
    Bypass { index: usize },
}

/// What the watcher knows about one plugin file.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The watcher's state: the config in force and what it loaded.
pub struct Watcher {
    config: Config,
    runtime: Arc<PluginRuntime>,
    loaded: Vec<Option<Fingerprint>>,
    bypassed: Vec<bool>,
    /// Each position's counters, carried over to new versions so `/metrics` keeps counting.
    stats: Vec<Arc<PluginStats>>,
    to_pipeline: Sender<Reload>,
}

impl Watcher {
    pub fn new(
        config: Config,
        runtime: Arc<PluginRuntime>,
        stats: Vec<Arc<PluginStats>>,
        to_pipeline: Sender<Reload>,
    ) -> Self {
        let loaded = config
            .plugins
            .iter()
            .map(|p| fingerprint(&config.resolve(&p.path)))
            .collect();
        let bypassed = vec![false; config.plugins.len()];
        Watcher {
            config,
            runtime,
            loaded,
            bypassed,
            stats,
            to_pipeline,
        }
    }

    /// Run until the pipeline goes away: reload on file changes (debounced) and on each
    /// `hup` message.
    pub fn run(mut self, hup: Receiver<()>) {
        let (events_tx, events) = std::sync::mpsc::channel();
        let mut _watcher = None;
        if self.config.reload.watch {
            match self.watch(events_tx) {
                Ok(w) => _watcher = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the plugin directories; reload with SIGHUP instead")
                }
            }
        }
        let debounce = Duration::from_millis(self.config.reload.debounce_ms);
        loop {
            match hup.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => {
                    tracing::info!("SIGHUP: reloading the config and plugins");
                    self.reload_config();
                    if !self.check_plugins() {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if events.try_recv().is_ok() {
                // Wait for the writes to settle.
                while events.recv_timeout(debounce).is_ok() {}
                if !self.check_plugins() {
                    return;
                }
            }
        }
    }

    fn watch(&self, events: Sender<()>) -> Result<notify::RecommendedWatcher, notify::Error> {
        use notify::Watcher as _;
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = events.send(());
                }
            })?;
        let mut dirs: Vec<PathBuf> = self
            .config
            .plugins
            .iter()
            .filter_map(|p| self.config.resolve(&p.path).parent().map(PathBuf::from))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
            tracing::info!(dir = %dir.display(), "watching for plugin changes");
        }
        Ok(watcher)
    }

    /// Re-read the config; take the plugin settings that can change live.
    fn reload_config(&mut self) {
        let fresh = match Config::load(&self.config.path) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; the running config stays");
                return;
            }
        };
        let shape = |c: &Config| -> Vec<(String, PathBuf)> {
            c.plugins
                .iter()
                .map(|p| (p.name.clone(), c.resolve(&p.path)))
                .collect()
        };
        if shape(&fresh) != shape(&self.config) {
            tracing::warn!(
                "the plugin chain's names, paths or order changed: restart to apply; the running chain stays"
            );
            return;
        }
        let secrets = self.config.secrets.changed_in(&fresh.secrets);
        if !secrets.is_empty() {
            tracing::info!(secrets = %secrets.join(", "), "secret values changed since they were last read");
        }
        let (live, restart): (Vec<String>, Vec<String>) = (self.config.values)
            .changed_keys(&fresh.values)
            .into_iter()
            .partition(|key| applies_live(key));
        if !live.is_empty() {
            tracing::info!(keys = %live.join(", "), "config keys changed; applying them live");
        }
        if !restart.is_empty() || needs_restart(&fresh, &self.config) {
            tracing::warn!(
                keys = %restart.join(", "),
                "config keys changed that apply only after a restart (source, sinks, pipeline, admin, reload.watch): the running values stay until then"
            );
        }
        let changed: Vec<usize> = (0..fresh.plugins.len())
            .filter(|&i| !same_settings(&fresh.plugins[i], &self.config.plugins[i]))
            .collect();
        let mut config = self.config.clone();
        config.plugins = fresh.plugins;
        config.reload.on_removed = fresh.reload.on_removed;
        // What is now in force: the running values but for the keys applied live.
        for (section, key) in [("plugins", None), ("reload", Some("on_removed"))] {
            take_live(&mut config.values.0, &fresh.values.0, section, key);
        }
        let previous = std::mem::replace(&mut self.config, config);
        for index in changed {
            if !self.load(index) {
                // Keep the old settings for the plugin that failed.
                self.config.plugins[index] = previous.plugins[index].clone();
            }
        }
    }

    /// Reload every plugin whose file changed. Returns false when the pipeline is gone.
    fn check_plugins(&mut self) -> bool {
        for index in 0..self.config.plugins.len() {
            let path = self.config.resolve(&self.config.plugins[index].path);
            let now = fingerprint(&path);
            if now == self.loaded[index] && !self.bypassed[index] {
                continue;
            }
            match now {
                None => {
                    if self.loaded[index].is_some() {
                        self.removed(index);
                    }
                }
                Some(_) => {
                    self.load(index);
                }
            }
        }
        true
    }

    fn removed(&mut self, index: usize) {
        let plugin = &self.config.plugins[index];
        self.loaded[index] = None;
        match self.config.reload.on_removed {
            OnRemoved::Keep => tracing::warn!(
                plugin = %plugin.name,
                "plugin file removed; the loaded version keeps running (reload.on_removed = \"keep\")"
            ),
            OnRemoved::Bypass => {
                tracing::warn!(
                    plugin = %plugin.name,
                    "plugin file removed; records now pass this stage unchanged (reload.on_removed = \"bypass\")"
                );
                self.bypassed[index] = true;
                let _ = self.to_pipeline.send(Reload::Bypass { index });
            }
        }
    }

    /// Compile, check and initialise plugin `index`; hand it to the pipeline if it works.
    fn load(&mut self, index: usize) -> bool {
        let plugin = &self.config.plugins[index];
        let path = self.config.resolve(&plugin.path);
        let print = fingerprint(&path);
        match self
            .runtime
            .load_with_stats(plugin, &path, self.stats[index].clone())
        {
            Ok(loaded) => {
                tracing::info!(plugin = %plugin.name, path = %path.display(), "plugin reloaded; swapping it in at the next batch");
                self.loaded[index] = print;
                self.bypassed[index] = false;
                self.to_pipeline
                    .send(Reload::Replace {
                        index,
                        plugin: Arc::new(loaded),
                    })
                    .is_ok()
            }
            Err(e) => {
                // Remember the broken file so it is not retried until it changes again.
                self.loaded[index] = print;
                tracing::error!(plugin = %plugin.name, error = %e, "new plugin version rejected; the running version stays");
                false
            }
        }
    }
}

/// Whether a changed key takes effect without a restart.
fn applies_live(key: &str) -> bool {
    const PLUGIN_KEYS: [&str; 6] = [
        "config",
        "timeout_ms",
        "memory_limit_mb",
        "max_output_factor",
        "on_failure",
        "role",
    ];
    if key == "reload.on_removed" {
        return true;
    }
    let Some(rest) = key.strip_prefix("plugins[") else {
        return false;
    };
    let Some((_, field)) = rest.split_once("].") else {
        return false;
    };
    let field = field.split(['.', '[']).next().unwrap_or(field);
    PLUGIN_KEYS.contains(&field)
}

/// Copy `section` (or its one `key`) from `fresh` into `running`.
fn take_live(running: &mut toml::Table, fresh: &toml::Table, section: &str, key: Option<&str>) {
    match key {
        None => match fresh.get(section) {
            Some(v) => drop(running.insert(section.to_owned(), v.clone())),
            None => drop(running.remove(section)),
        },
        Some(key) => {
            let value = fresh.get(section).and_then(|t| t.get(key)).cloned();
            let table =
                (running.entry(section)).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(table) = table.as_table_mut() {
                match value {
                    Some(v) => drop(table.insert(key.to_owned(), v)),
                    None => drop(table.remove(key)),
                }
            }
        }
    }
}

fn same_settings(a: &PluginConfig, b: &PluginConfig) -> bool {
    a.config == b.config
        && a.timeout_ms == b.timeout_ms
        && a.memory_limit_mb == b.memory_limit_mb
        && a.max_output_factor == b.max_output_factor
        && a.on_failure == b.on_failure
        && a.role == b.role
}

/// Whether `fresh` changes what only a restart applies: the source, sinks, pipeline or admin.
fn needs_restart(fresh: &Config, running: &Config) -> bool {
    fresh.source != running.source
        || fresh.sinks != running.sinks
        || fresh.pipeline != running.pipeline
        || fresh.admin != running.admin
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(password: &str, batch_max_records: usize) -> Config {
        let text = format!(
            r#"
[source]
type = "stdin"
batch_max_records = {batch_max_records}

[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9200"
routes = ["cleaned", "dlq"]
auth = {{ type = "basic", user = "sluice", password = "{password}" }}
"#
        );
        Config::from_toml(&text, Path::new("sluice.toml")).unwrap()
    }

    #[test]
    fn changed_keys_are_named_and_sorted_into_live_and_restart() {
        let keys = config("b", 20).values.changed_keys(&config("a", 10).values);
        assert_eq!(
            keys,
            vec!["sinks.search.auth.password", "source.batch_max_records"]
        );
        assert!(!keys.iter().any(|k| applies_live(k)));
        assert!(applies_live("plugins[0].config.rules[2]"));
        assert!(applies_live("plugins[3].timeout_ms"));
        assert!(applies_live("reload.on_removed"));
        assert!(!applies_live("plugins[0].path"));
        assert!(!applies_live("reload.watch"));
        assert!(!applies_live("admin.token"));
    }

    #[test]
    fn a_changed_sink_secret_needs_a_restart() {
        assert!(!needs_restart(&config("a", 10), &config("a", 10)));
        assert!(needs_restart(&config("a", 10), &config("a", 20)));
        // The password never shows in the config's Debug form, yet it changed.
        assert!(needs_restart(&config("b", 10), &config("a", 10)));
    }
}
