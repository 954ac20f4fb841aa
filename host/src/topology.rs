//! What a command runs, built one way for `sluice run`, `sluice backfill` and `sluice
//! plugin test --chain`: the plugin chain ([`Topology::chain`]), the sinks behind their
//! router, and the pipeline between them ([`Topology::build`]). Commands differ only in
//! what they feed it (their source) and in [`Overrides`].

use crate::chain::Stage;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::plugin::{LoadError, PluginRuntime, PluginStats, WasmStage};
use crate::route::RouteName;
use crate::sink::kafka_transaction::KafkaTransaction;
use crate::sink::{self, InputTraits, Router, SinkError, SinkHandle};
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

/// The plugins, sinks and pipeline of one run.
pub struct Topology {
    pub runtime: Arc<PluginRuntime>,
    /// Each plugin's counters by name (for `/metrics` and reloads).
    pub plugin_stats: Vec<(String, Arc<PluginStats>)>,
    pub router: Arc<Router>,
    pub sinks: Vec<SinkHandle>,
    pub pipeline: Pipeline,
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
        let (runtime, stages, plugin_stats) = Topology::chain(config)?;
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
        let pipeline = Pipeline::new(stages, router.clone(), config);
        Ok(Topology {
            runtime,
            plugin_stats,
            router,
            sinks,
            pipeline,
        })
    }

    /// The chain's stages: wasm plugins, or natively compiled ones for `native:` paths.
    pub fn chain(config: &Config) -> Result<Stages, LoadError> {
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
}

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
    let max_memory = config
        .plugins
        .iter()
        .map(|p| p.memory_limit_mb)
        .max()
        .unwrap_or(64);
    // Two slots per plugin: the live instance and its replacement after a failure, plus
    // the instances `load` makes to check each plugin's config.
    let slots = (config.plugins.len() as u32) * 3 + 2;
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
