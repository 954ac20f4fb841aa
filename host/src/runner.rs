//! Wiring for `sluice run`: load plugins, start sinks, the pipeline and the source, and
//! shut down in order on SIGTERM/SIGINT — stop consuming, drain, flush, commit, exit.

use crate::admin::{self, AdminError, AdminState};
use crate::chain::Stage;
use crate::config::Config;
use crate::health;
use crate::pipeline::Pipeline;
use crate::plugin::PluginStats;
use crate::plugin::{LoadError, PluginRuntime, WasmStage};
use crate::reload::Watcher;
use crate::sink::{self, Router, SinkError};
use crate::source::SourceStats;
use crate::source::{PipelineInput, SourceError, SourceLinks};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("internal: {0}")]
    Internal(String),
    #[error(
        "stopped before every sink had delivered (pipeline.drain_timeout_ms = {} ms passed); what they held is not committed and will be replayed on the next start. Check the sinks' errors above.",
        .0.as_millis()
    )]
    DrainTimedOut(Duration),
}

/// The runtime, the chain's stages, and each plugin's counters by name.
pub type Stages = (
    Arc<PluginRuntime>,
    Vec<Box<dyn Stage>>,
    Vec<(String, Arc<PluginStats>)>,
);

/// The chain's stages: wasm plugins, or natively compiled ones for `native:` paths.
pub fn build_stages(config: &Config) -> Result<Stages, LoadError> {
    let natives: Vec<&crate::config::PluginConfig> = config
        .plugins
        .iter()
        .filter(|p| p.native_name().is_some())
        .collect();
    if natives.is_empty() {
        let (runtime, stages) = load_plugins(config)?;
        let stats = stages
            .iter()
            .map(|s| (s.plugin().name.clone(), s.plugin().stats.clone()))
            .collect();
        let stages = stages
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn Stage>)
            .collect();
        return Ok((runtime, stages, stats));
    }
    if natives.len() != config.plugins.len() {
        return Err(LoadError::Runtime(
            "a chain is either all `native:` plugins or all wasm files".into(),
        ));
    }
    let runtime = Arc::new(PluginRuntime::new(1, 64)?);
    let mut stages = Vec::new();
    for p in &config.plugins {
        stages.push(native_stage(p)?);
    }
    Ok((runtime, stages, Vec::new()))
}

#[cfg(feature = "native-plugins")]
fn native_stage(p: &crate::config::PluginConfig) -> Result<Box<dyn Stage>, LoadError> {
    use crate::plugin::NativeStage;
    let json = p.config_json();
    let init = |e: sluice_plugin_sdk::PluginError| LoadError::Init {
        name: p.name.clone(),
        message: e.message,
    };
    Ok(match p.native_name() {
        Some("normalize") => Box::new(
            NativeStage::<sluice_normalize::Normalize>::new(&p.name, &json)
                .map_err(init)?
                .with_role(p.role),
        ),
        Some("dedup") => Box::new(
            NativeStage::<sluice_dedup::Dedup>::new(&p.name, &json)
                .map_err(init)?
                .with_role(p.role),
        ),
        Some("metrics") => Box::new(
            NativeStage::<sluice_metrics::Metrics>::new(&p.name, &json)
                .map_err(init)?
                .with_role(p.role),
        ),
        other => {
            return Err(LoadError::Runtime(format!(
                "plugin `{}`: no native plugin {other:?}; native ones are normalize, dedup, metrics",
                p.name
            )));
        }
    })
}

#[cfg(not(feature = "native-plugins"))]
fn native_stage(p: &crate::config::PluginConfig) -> Result<Box<dyn Stage>, LoadError> {
    Err(LoadError::Runtime(format!(
        "plugin `{}`: `native:` plugins need a build with the `native-plugins` feature",
        p.name
    )))
}

/// Compile and initialise every plugin of the chain, in order.
pub fn load_plugins(config: &Config) -> Result<(Arc<PluginRuntime>, Vec<WasmStage>), LoadError> {
    let max_memory = config
        .plugins
        .iter()
        .map(|p| p.memory_limit_mb)
        .max()
        .unwrap_or(64);
    // Two slots per plugin: the live instance and its replacement after a failure, plus
    // the instances `load` makes to check each plugin's config.
    let slots = (config.plugins.len() as u32) * 3 + 2;
    let runtime = Arc::new(PluginRuntime::new(slots, max_memory)?);
    let mut stages = Vec::with_capacity(config.plugins.len());
    for plugin in &config.plugins {
        let loaded = runtime.load(plugin, &config.resolve(&plugin.path))?;
        stages.push(WasmStage::new(Arc::new(loaded)));
    }
    Ok((runtime, stages))
}

/// Run the configured pipeline until the input ends or `stop` is set.
pub async fn run(config: Config, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    let (runtime, stages, plugin_stats) = build_stages(&config)?;
    let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(plugins = ?names, "plugins loaded");

    let router = Router::new();
    let input = config.source.input_traits();
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for (name, sink_config) in &config.sinks {
        sinks.push(
            sink::start(
                name,
                sink_config,
                sink_config.routes().to_vec(),
                router.clone(),
                input,
                config.pipeline.channel_capacity,
            )
            .await?,
        );
    }
    router.install(&sinks);

    let plugin_stats_for_reload = plugin_stats.iter().map(|(_, s)| s.clone()).collect();
    let pipeline = Pipeline::new(stages, router.clone(), &config);
    let source_stats = Arc::new(SourceStats::default());
    if !config.admin.listen.trim().is_empty() {
        let state = Arc::new(AdminState {
            source: source_stats.clone(),
            plugins: plugin_stats,
            pipeline: pipeline.stats.clone(),
            sinks: sinks
                .iter()
                .map(|s| (s.name.clone(), s.stats.clone()))
                .collect(),
        });
        admin::serve(&config.admin.listen, state).await?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<PipelineInput>(config.pipeline.channel_capacity);
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (hup_tx, hup_rx) = std::sync::mpsc::channel();
    let pipeline_thread = std::thread::Builder::new()
        .name("pipeline".into())
        // Plugins run on this thread: leave room far beyond the wasm stack limit.
        .stack_size(16 << 20)
        .spawn(move || pipeline.run(rx, Some(reload_rx)))
        .map_err(|e| RunError::Internal(e.to_string()))?;
    let watcher = Watcher::new(
        config.clone(),
        runtime.clone(),
        plugin_stats_for_reload,
        reload_tx,
    );
    std::thread::Builder::new()
        .name("plugin-reload".into())
        .spawn(move || watcher.run(hup_rx))
        .map_err(|e| RunError::Internal(e.to_string()))?;

    let source_config = config.source.clone();
    let drain_timeout = Duration::from_millis(config.pipeline.drain_timeout_ms);
    // When the source began to stop, plus the drain timeout: the whole shutdown's bound.
    let shutdown_deadline = Arc::new(std::sync::OnceLock::new());
    let deadline_out = shutdown_deadline.clone();
    let source_stop = stop.clone();
    let stats = source_stats.clone();
    let source_thread = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            source_config.kind().run(SourceLinks {
                pipeline: tx,
                stop: source_stop,
                stats,
                shutdown: (drain_timeout, deadline_out),
            })
        })
        .map_err(|e| RunError::Internal(e.to_string()))?;

    health::global().set_started(true);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog();
    spawn_signal_handler(stop.clone());
    spawn_hangup_handler(hup_tx);

    let source_result = tokio::task::spawn_blocking(move || source_thread.join())
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .map_err(|_| RunError::Internal("the source thread panicked".into()))?;
    health::global().set_started(false);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::Relaxed);
    // The source has committed what completed. The pipeline flushes the sinks; a sink
    // that cannot deliver (an outage) is not waited for past the drain timeout: what it
    // holds is not committed and is replayed after the restart.
    let stopped_at = std::time::Instant::now();
    let pipeline_done = tokio::task::spawn_blocking(move || pipeline_thread.join());
    let flushed = tokio::time::timeout(
        drain_timeout.saturating_sub(stopped_at.elapsed()),
        pipeline_done,
    )
    .await;
    for sink in sinks {
        sink.task.abort();
    }
    match flushed {
        Ok(joined) => {
            joined
                .map_err(|e| RunError::Internal(e.to_string()))?
                .map_err(|_| RunError::Internal("the pipeline thread panicked".into()))?;
        }
        Err(_) => {
            source_result?;
            return Err(RunError::DrainTimedOut(drain_timeout));
        }
    }
    source_result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// SIGHUP: reload the config and plugins (see [`crate::reload`]).
fn spawn_hangup_handler(hup: std::sync::mpsc::Sender<()>) {
    tokio::spawn(async move {
        let Ok(mut signals) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while signals.recv().await.is_some() {
            if hup.send(()).is_err() {
                return;
            }
        }
    });
}

/// Tell systemd we are alive at half its watchdog interval, when it asks for that.
fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        loop {
            interval.tick().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    });
}
