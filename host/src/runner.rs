//! Running a [`Topology`]: the pipeline and the source on threads of their own, the
//! daemon's duties (admin endpoint, plugin reloads, systemd), and an orderly shutdown on
//! SIGTERM/SIGINT — stop consuming, drain, flush, commit, exit. `sluice run` and `sluice
//! backfill` both run through here.

use crate::admin::{self, AdminError, AdminState};
use crate::config::Config;
use crate::health;
use crate::pipeline::Pipeline;
use crate::plugin::LoadError;
use crate::reload::{Reload, Watcher};
use crate::sink::kafka_transaction::{KafkaTransaction, TransactionError};
use crate::sink::{SinkError, SinkHandle};
use crate::source::{PipelineInput, SourceError, SourceKind, SourceLinks, SourceStats, StateLink};
use crate::state::SnapshotExchange;
use crate::topology::{BuildError, Overrides, Topology};
use crate::workers::Dispatcher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    #[error("internal: {0}")]
    Internal(String),
    #[error(
        "stopped before every sink had delivered (pipeline.drain_timeout_ms = {} ms passed); what they held is not committed and will be replayed on the next start. Check the sinks' errors above.",
        .0.as_millis()
    )]
    DrainTimedOut(Duration),
}

impl From<BuildError> for RunError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Plugin(e) => RunError::Plugin(e),
            BuildError::Sink(e) => RunError::Sink(e),
        }
    }
}

/// What a command runs besides the config.
pub struct RunPlan {
    /// The input, when not the config's `[source]` (the backfill reads the lake).
    pub source: Option<Box<dyn SourceKind>>,
    pub overrides: Overrides,
    /// Serve `admin.listen` and reload plugins on SIGHUP and file changes: the daemon's
    /// duties, not a one-off command's.
    pub daemon: bool,
}

impl RunPlan {
    /// `sluice run`.
    pub fn daemon() -> RunPlan {
        RunPlan {
            source: None,
            overrides: Overrides::default(),
            daemon: true,
        }
    }
}

/// Run the configured pipeline until the input ends or `stop` is set.
pub async fn run(config: Config, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    run_plan(config, RunPlan::daemon(), stop).await
}

/// Run `plan` over `config`'s chain and sinks: start them, feed them from the source on a
/// thread of its own, and shut down in order once the source ends.
pub async fn run_plan(
    config: Config,
    plan: RunPlan,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    let source: Box<dyn SourceKind> = plan
        .source
        .unwrap_or_else(|| Box::new(config.source.clone()));
    let transaction = match source.transaction_settings(&config.kafka_sink_options()) {
        Some(mut settings) => {
            settings.security = config.kafka_sink_security();
            settings.max_state_bytes = source.snapshot_interval().map(|_| {
                crate::source::kafka_state::message_max_bytes(max_snapshot_bytes(&config))
            });
            Some(KafkaTransaction::start(&settings)?)
        }
        None => None,
    };
    let topology = Topology::build(
        &config,
        source.input_traits(),
        &plan.overrides,
        transaction.clone(),
    )
    .await?;
    let source_stats = Arc::new(SourceStats::default());
    if plan.daemon && !config.admin.listen.trim().is_empty() {
        serve_admin(&config, &topology, source_stats.clone()).await?;
    }
    let Topology {
        runtime,
        plugin_stats,
        sinks,
        mut pipelines,
        ..
    } = topology;
    let state = link_state(&config, &*source, &mut pipelines);
    let reloads = plan.daemon.then(|| {
        let stats = plugin_stats.iter().map(|(_, s)| s.clone()).collect();
        start_reloads(&config, runtime, stats)
    });
    let (reload_rx, hup_tx) = match reloads.transpose()? {
        Some((rx, hup)) => (Some(rx), Some(hup)),
        None => (None, None),
    };
    let (tx, pipeline_thread) =
        start_pipelines(pipelines, config.pipeline.channel_capacity, reload_rx)?;

    let drain_timeout = Duration::from_millis(config.pipeline.drain_timeout_ms);
    // When the source began to stop, plus the drain timeout: the whole shutdown's bound.
    let shutdown_deadline = Arc::new(std::sync::OnceLock::new());
    let links = SourceLinks {
        pipeline: tx,
        stop: stop.clone(),
        stats: source_stats,
        shutdown: (drain_timeout, shutdown_deadline.clone()),
        state,
        transaction,
    };
    let source_thread = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || source.run(links))
        .map_err(|e| RunError::Internal(e.to_string()))?;

    health::global().set_started(true);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog();
    spawn_signal_handler(stop.clone());
    if let Some(hup_tx) = hup_tx {
        spawn_hangup_handler(hup_tx);
    }

    let source_result = tokio::task::spawn_blocking(move || source_thread.join())
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .map_err(|_| RunError::Internal("the source thread panicked".into()))?;
    health::global().set_started(false);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop.store(true, Ordering::Relaxed);
    // The source set when its drain began; the pipeline gets what is left of the same
    // bound, not a second one.
    let deadline = *shutdown_deadline.get_or_init(|| Instant::now() + drain_timeout);
    shut_down(pipeline_thread, sinks, deadline, drain_timeout).await?;
    source_result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// When the source stores plugin state and a plugin keeps any, the pipeline snapshots it
/// for the source: the link between them.
fn link_state(
    config: &Config,
    source: &dyn SourceKind,
    pipelines: &mut [Pipeline],
) -> Option<StateLink> {
    let interval = source.snapshot_interval()?;
    if !pipelines.first().is_some_and(|p| p.keeps_state()) {
        return None;
    }
    let exchange = Arc::new(SnapshotExchange::default());
    for pipeline in pipelines {
        pipeline.keep_state(exchange.clone(), interval);
    }
    Some(StateLink {
        exchange,
        max_snapshot_bytes: max_snapshot_bytes(config),
    })
}

/// The largest snapshot of one partition: every stage's state at its limit.
fn max_snapshot_bytes(config: &Config) -> usize {
    let per_stage = usize::try_from(config.pipeline.max_state_mb).unwrap_or(usize::MAX >> 20) << 20;
    per_stage.saturating_mul(config.plugins.len().max(1))
}

/// The admin endpoint over the topology's counters and the source's.
async fn serve_admin(
    config: &Config,
    topology: &Topology,
    source: Arc<SourceStats>,
) -> Result<(), RunError> {
    let state = Arc::new(AdminState {
        source,
        plugins: topology.plugin_stats.clone(),
        pipeline: topology.pipelines[0].stats.clone(),
        sinks: (topology.sinks.iter())
            .map(|s| (s.name.clone(), s.stats.clone()))
            .collect(),
    });
    admin::serve(&config.admin, state).await?;
    Ok(())
}

/// The pipeline workers on threads of their own (see [`crate::workers`]), the channel the
/// source feeds them by, and a thread that ends once they all have.
fn start_pipelines(
    pipelines: Vec<Pipeline>,
    capacity: usize,
    reloads: Option<Receiver<Reload>>,
) -> Result<(SyncSender<PipelineInput>, JoinHandle<()>), RunError> {
    if pipelines.len() == 1 {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let pipeline = pipelines.into_iter().next().expect("one pipeline");
        return Ok((
            tx,
            spawn_pipeline("pipeline".into(), pipeline, rx, reloads)?,
        ));
    }
    let mut reloads: Vec<Option<Receiver<Reload>>> = match reloads {
        Some(reloads) => broadcast(reloads, pipelines.len())?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..pipelines.len()).map(|_| None).collect(),
    };
    let mut inputs = Vec::with_capacity(pipelines.len());
    let mut workers = Vec::with_capacity(pipelines.len());
    for (worker, pipeline) in pipelines.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let reloads = reloads[worker].take();
        workers.push(spawn_pipeline(
            format!("pipeline-{worker}"),
            pipeline,
            rx,
            reloads,
        )?);
        inputs.push(tx);
    }
    // The workers' channels buffer; this one only hands over.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let dispatcher = Dispatcher::new(inputs);
    let thread = std::thread::Builder::new()
        .name("dispatch".into())
        .spawn(move || {
            dispatcher.run(rx);
            for worker in workers {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        })
        .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok((tx, thread))
}

fn spawn_pipeline(
    name: String,
    pipeline: Pipeline,
    input: Receiver<PipelineInput>,
    reloads: Option<Receiver<Reload>>,
) -> Result<JoinHandle<()>, RunError> {
    std::thread::Builder::new()
        .name(name)
        // Plugins run on this thread: leave room far beyond the wasm stack limit.
        .stack_size(16 << 20)
        .spawn(move || pipeline.run(input, reloads))
        .map_err(|e| RunError::Internal(e.to_string()))
}

/// Every reload, to each of `workers` receivers.
fn broadcast(reloads: Receiver<Reload>, workers: usize) -> Result<Vec<Receiver<Reload>>, RunError> {
    let (senders, receivers): (Vec<Sender<Reload>>, Vec<Receiver<Reload>>) =
        (0..workers).map(|_| std::sync::mpsc::channel()).unzip();
    std::thread::Builder::new()
        .name("reload-fanout".into())
        .spawn(move || {
            while let Ok(reload) = reloads.recv() {
                if senders.iter().any(|s| s.send(reload.clone()).is_err()) {
                    return;
                }
            }
        })
        .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok(receivers)
}

/// The plugin watcher on a thread of its own: the pipeline's reloads, and the channel
/// SIGHUP asks it through.
fn start_reloads(
    config: &Config,
    runtime: Arc<crate::plugin::PluginRuntime>,
    stats: Vec<Arc<crate::plugin::PluginStats>>,
) -> Result<(Receiver<Reload>, Sender<()>), RunError> {
    let (reload_tx, reload_rx) = std::sync::mpsc::channel();
    let (hup_tx, hup_rx) = std::sync::mpsc::channel();
    let watcher = Watcher::new(config.clone(), runtime, stats, reload_tx);
    std::thread::Builder::new()
        .name("plugin-reload".into())
        .spawn(move || watcher.run(hup_rx))
        .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok((reload_rx, hup_tx))
}

/// The source has committed what completed. The pipeline flushes the sinks; a sink that
/// cannot deliver (an outage) is not waited for past the drain timeout: what it holds is
/// not committed and is replayed after the restart.
async fn shut_down(
    pipeline_thread: std::thread::JoinHandle<()>,
    sinks: Vec<SinkHandle>,
    deadline: Instant,
    drain_timeout: Duration,
) -> Result<(), RunError> {
    let pipeline_done = tokio::task::spawn_blocking(move || pipeline_thread.join());
    let left = deadline.saturating_duration_since(Instant::now());
    let flushed = tokio::time::timeout(left, pipeline_done).await;
    for sink in sinks {
        sink.task.abort();
    }
    match flushed {
        Ok(joined) => joined
            .map_err(|e| RunError::Internal(e.to_string()))?
            .map_err(|_| RunError::Internal("the pipeline thread panicked".into())),
        Err(_) => Err(RunError::DrainTimedOut(drain_timeout)),
    }
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
