//! What a command runs, built one way for `sluice run`, `sluice backfill` and `sluice
//! plugin test --chain`: the plugin chain ([`Topology::chain`]), the sinks behind their
//! router, and the pipeline between them ([`Topology::build`]). Commands differ only in
//! what they feed it (their source) and in [`Overrides`].

use crate::chain::Stage;
use crate::config::Config;
use crate::pipeline::{Pipeline, PipelineStats};
use crate::plugin::{LoadError, PluginRuntime, PluginStats, WasmStage};
use crate::route::RouteName;
use crate::sink::kafka_transaction::KafkaTransaction;
use crate::sink::{self, InputTraits, Router, SinkError, SinkHandle};
use crate::workers::SharedStage;
use std::sync::Arc;

/// Why a topology cannot be built: a plugin or a sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plugin(#[from] LoadError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How a command's topology differs from the config's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Routes no sink takes in this run: a backfill does not write `raw`, its objects are
    /// the input.
    pub skip_routes: Vec<RouteName>,
}

/// The plugins, sinks and pipeline workers of one run.
pub struct Topology {
    pub runtime: Arc<PluginRuntime>,
    /// Each plugin's counters by name (for `/metrics` and reloads).
    pub plugin_stats: Vec<(String, Arc<PluginStats>)>,
    pub router: Arc<Router>,
    pub sinks: Vec<SinkHandle>,
    /// One pipeline per worker (`pipeline.workers`), sharing the router and the counters.
    pub pipelines: Vec<Pipeline>,
}

impl Topology {
    /// Load the chain, start every sink the config names (each taking its routes less
    /// `overrides.skip_routes`; one left with none is not started), and the pipeline
    /// routing to them. `input` is what the sinks may rely on about the source feeding it;
    /// `transaction`, the producer every Kafka sink writes through when it reads exactly
    /// once.
    pub async fn build(
        config: &Config,
        input: InputTraits,
        overrides: &Overrides,
        transaction: Option<Arc<KafkaTransaction>>,
    ) -> Result<Topology, BuildError> {
        let workers = crate::workers::count(config.pipeline.workers);
        let (runtime, chains, plugin_stats) = Topology::chains(config, workers)?;
        let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        tracing::info!(plugins = ?names, "plugins loaded");
        let router = Router::new();
        let mut sinks = Vec::with_capacity(config.sinks.len());
        for (name, sink_config) in &config.sinks {
            let routes: Vec<RouteName> = sink_config
                .routes()
                .iter()
                .filter(|r| !overrides.skip_routes.contains(r))
                .cloned()
                .collect();
            if routes.is_empty() {
                continue;
            }
            let capacity = config.pipeline.channel_capacity;
            let transaction = transaction.clone();
            let router = router.clone();
            sinks.push(
                sink::start(
                    name,
                    sink_config,
                    routes,
                    router,
                    input,
                    capacity,
                    transaction,
                )
                .await?,
            );
        }
        router.install(&sinks);
        let stats = Arc::new(PipelineStats::default());
        let pipelines = (chains.into_iter().enumerate())
            .map(|(worker, stages)| {
                Pipeline::new(stages, router.clone(), config).worker(worker, stats.clone())
            })
            .collect();
        if workers > 1 {
            tracing::info!(workers, "pipeline workers");
        }
        Ok(Topology {
            runtime,
            plugin_stats,
            router,
            sinks,
            pipelines,
        })
    }

    /// One chain per pipeline worker: each its own instances of the plugins, but one
    /// instance all of them call for a plugin shared by the workers (see
    /// [`crate::config::PluginConfig::shared_by_workers`]).
    pub fn chains(config: &Config, workers: usize) -> Result<Chains, LoadError> {
        let workers = workers.max(1);
        let (runtime, first, stats) = Topology::chain_for(config, workers)?;
        if workers == 1 {
            return Ok((runtime, vec![first], stats));
        }
        let mut chains: Vec<Vec<Box<dyn Stage>>> = (0..workers).map(|_| Vec::new()).collect();
        for (stage, plugin) in first.into_iter().zip(&config.plugins) {
            if plugin.shared_by_workers() {
                for (chain, handle) in chains.iter_mut().zip(SharedStage::handles(stage, workers)) {
                    chain.push(Box::new(handle));
                }
                continue;
            }
            for chain in chains.iter_mut().skip(1) {
                chain.push(match stage.another_instance() {
                    Some(fresh) => fresh,
                    None => native_stage(plugin)?,
                });
            }
            chains[0].push(stage);
        }
        Ok((runtime, chains, stats))
    }

    /// The chain's stages: wasm plugins, or natively compiled ones for `native:` paths.
    pub fn chain(config: &Config) -> Result<Stages, LoadError> {
        Topology::chain_for(config, 1)
    }

    /// [`Topology::chain`], with room in the runtime for `workers` instances of each plugin.
    fn chain_for(config: &Config, workers: usize) -> Result<Stages, LoadError> {
        let natives: Vec<&crate::config::PluginConfig> = config
            .plugins
            .iter()
            .filter(|p| p.native_name().is_some())
            .collect();
        if natives.is_empty() {
            let (runtime, stages) = load_plugins_for(config, workers)?;
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
}

/// The runtime, each worker's chain, and each plugin's counters by name.
pub type Chains = (
    Arc<PluginRuntime>,
    Vec<Vec<Box<dyn Stage>>>,
    Vec<(String, Arc<PluginStats>)>,
);

/// The runtime, the chain's stages, and each plugin's counters by name.
pub type Stages = (
    Arc<PluginRuntime>,
    Vec<Box<dyn Stage>>,
    Vec<(String, Arc<PluginStats>)>,
);

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

/// Compile and initialise every plugin of the chain, in order (wasm only: `sluice
/// validate` and `plugin test --chain` show each plugin's path).
pub fn load_plugins(config: &Config) -> Result<(Arc<PluginRuntime>, Vec<WasmStage>), LoadError> {
    load_plugins_for(config, 1)
}

/// [`load_plugins`], with room for `workers` live instances of each plugin.
fn load_plugins_for(
    config: &Config,
    workers: usize,
) -> Result<(Arc<PluginRuntime>, Vec<WasmStage>), LoadError> {
    let max_memory = config
        .plugins
        .iter()
        .map(|p| p.memory_limit_mb)
        .max()
        .unwrap_or(64);
    // Per worker, two slots per plugin: the live instance and its replacement after a
    // failure; plus the instances `load` makes to check each plugin's config.
    let slots = (config.plugins.len() as u32) * (2 * workers.max(1) as u32 + 1) + 2;
    let runtime =
        PluginRuntime::new(slots, max_memory)?.with_max_state_mb(config.pipeline.max_state_mb);
    let runtime = Arc::new(runtime);
    let mut stages = Vec::with_capacity(config.plugins.len());
    for plugin in &config.plugins {
        let loaded = runtime.load(plugin, &config.resolve(&plugin.path))?;
        stages.push(WasmStage::new(Arc::new(loaded)));
    }
    Ok((runtime, stages))
}
