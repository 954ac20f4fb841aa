//! Engine, compilation, instances and guarded calls.

use super::bindings::packed::{TransformPacked, TransformPackedPre};
use super::bindings::typed::{Transform, TransformPre};
use super::bindings::v2::packed::{
    TransformPacked as TransformPackedV2, TransformPackedPre as TransformPackedPreV2,
};
use super::bindings::v2::typed::{Transform as TransformV2, TransformPre as TransformPreV2};
// Each world's bindings generate their own copy of the `state` interface's record.
use super::bindings::v2::packed::exports::sluice::plugin::state::SourcePartition as PackedSource;
use super::bindings::v2::typed::exports::sluice::plugin::state::SourcePartition as TypedSource;
use super::cache::{CompileCache, Source};
use super::clock::{self, WaitPastDeadline};
use super::origins::GivenOrigins;
use super::{CallFailure, LoadError, PluginStats};
use crate::Record;
use crate::batch::{Batch, PackedBatch};
use crate::config::{OnFailure, PluginConfig, Role};
use sluice_plugin_sdk::{PluginError, packed};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How often the engine's epoch advances; plugin deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// What a plugin may write to stderr (a panic message) before writes fail.
const STDERR_CAPACITY: usize = 64 * 1024;
/// Wasm stack per call: far below the native stack of the thread that runs plugins, so a
/// runaway recursion traps in wasm instead of overflowing the host's stack.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Per-store host state.
pub struct StoreState {
    pub(super) plugin: String,
    pub(super) stats: Arc<PluginStats>,
    limits: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
    /// When the current call must end: clock waits may not go past it.
    pub(super) deadline: Instant,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The shared engine (with its epoch ticker) and linker.
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    stop_ticker: Arc<AtomicBool>,
    /// Largest snapshot of one partition's state (`pipeline.max_state_mb`).
    max_state_bytes: usize,
    /// Where compiled components are kept; `None` compiles at every load.
    cache: Option<CompileCache>,
}

/// `pipeline.max_state_mb` when the config does not say.
const DEFAULT_MAX_STATE_MB: u64 = 8;

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginRuntime {
    /// An engine able to hold `max_instances` live instances of at most `max_memory_mb`.
    pub fn new(max_instances: u32, max_memory_mb: u64) -> Result<PluginRuntime, LoadError> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let slots = max_instances.max(1);
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 4)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_memory_size((max_memory_mb as usize) << 20);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError::Runtime(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| clock::add_to_linker(&mut linker))
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        // Both versions of the contract: a component imports one of them.
        Transform::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s)
            .and_then(|()| TransformV2::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s))
            .map_err(|e| LoadError::Runtime(e.to_string()))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Runtime(e.to_string()))?;

        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            stop_ticker,
            max_state_bytes: (DEFAULT_MAX_STATE_MB as usize) << 20,
            cache: CompileCache::from_env(),
        })
    }

    /// The same runtime, refusing snapshots of more than `mb` MiB per partition
    /// (`pipeline.max_state_mb`) from the plugins it loads from now on.
    pub fn with_max_state_mb(mut self, mb: u64) -> Self {
        self.max_state_bytes = usize::try_from(mb).unwrap_or(usize::MAX >> 20) << 20;
        self
    }

    /// The same runtime keeping compiled components in `cache` (or in none) instead of
    /// where the environment says ([`super::cache`]).
    pub fn with_compile_cache(mut self, cache: Option<CompileCache>) -> Self {
        self.cache = cache;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile a plugin and check it implements one of the contract's worlds, in either
    /// version. Does not instantiate it.
    pub fn compile(&self, name: &str, path: &Path) -> Result<(Compiled, World), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            name: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let started = Instant::now();
        let component = match &self.cache {
            Some(cache) => cache.component(&self.engine, &bytes),
            None => Component::from_binary(&self.engine, &bytes).map(|c| (c, Source::Compiled)),
        };
        drop(bytes);
        // Compiling allocated and freed tens of MiB on this thread.
        crate::memory::release_freed_memory();
        let (component, source) = component.map_err(|e| LoadError::Compile {
            name: name.to_owned(),
            path: path.to_owned(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(
            plugin = name,
            path = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "{}",
            match source {
                Source::Compiled => "compiled plugin",
                Source::Cached => "loaded compiled plugin from the cache",
            }
        );
        let contract = |e: wasmtime::Error| LoadError::Contract {
            name: name.to_owned(),
            path: path.to_owned(),
            contract: sluice_plugin_sdk::CONTRACT_VERSION,
            message: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(contract)?;
        if let Ok(packed) = TransformPackedPreV2::new(pre.clone()) {
            return Ok((Compiled::PackedV2(packed), World::Packed));
        }
        if let Ok(typed) = TransformPreV2::new(pre.clone()) {
            return Ok((Compiled::TypedV2(typed), World::Typed));
        }
        if let Ok(packed) = TransformPackedPre::new(pre.clone()) {
            return Ok((Compiled::Packed(packed), World::Packed));
        }
        // Report against the typed world of the current version: it is the one documented
        // for every language.
        if let Ok(typed) = TransformPre::new(pre.clone()) {
            return Ok((Compiled::Typed(typed), World::Typed));
        }
        Err(contract(TransformPreV2::new(pre).err().unwrap_or_else(
            || wasmtime::Error::msg("no world of the contract matches"),
        )))
    }

    /// Compile, check, and initialise one instance (so a bad config fails now, not later).
    pub fn load(&self, config: &PluginConfig, path: &Path) -> Result<LoadedPlugin, LoadError> {
        self.load_with_stats(config, path, Arc::new(PluginStats::default()))
    }

    /// [`PluginRuntime::load`], counting into existing `stats` (a reloaded version).
    pub fn load_with_stats(
        &self,
        config: &PluginConfig,
        path: &Path,
        stats: Arc<PluginStats>,
    ) -> Result<LoadedPlugin, LoadError> {
        let (pre, world) = self.compile(&config.name, path)?;
        let plugin = LoadedPlugin {
            name: config.name.clone(),
            path: path.to_owned(),
            contract: pre.contract(),
            pre,
            world,
            engine: self.engine.clone(),
            config_json: config.config_json(),
            timeout_ms: config.timeout_ms,
            memory_limit_mb: config.memory_limit_mb,
            max_output_factor: config.max_output_factor,
            max_state_bytes: self.max_state_bytes,
            on_failure: config.on_failure,
            role: config.role,
            stats,
        };
        plugin.instantiate().map_err(|failure| LoadError::Init {
            name: config.name.clone(),
            message: match failure {
                CallFailure::Error { message, .. } => message,
                other => other.to_string(),
            },
        })?;
        Ok(plugin)
    }
}

/// Which world of the contract a component implements: how batches cross the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `transform`: a list of typed records, copied string by string.
    Typed,
    /// `transform-packed`: one byte string each way (the Rust SDK's choice).
    Packed,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Typed => "sluice:plugin/transform",
            World::Packed => "sluice:plugin/transform-packed",
        })
    }
}

/// A compiled component, checked against the bindings of the world and contract version
/// it implements.
#[derive(Clone)]
pub enum Compiled {
    Typed(TransformPre<StoreState>),
    Packed(TransformPackedPre<StoreState>),
    TypedV2(TransformPreV2<StoreState>),
    PackedV2(TransformPackedPreV2<StoreState>),
}

impl Compiled {
    /// The contract version (`sluice:plugin@…`) the component implements.
    pub fn contract(&self) -> &'static str {
        match self {
            Compiled::Typed(_) | Compiled::Packed(_) => "0.1.0",
            Compiled::TypedV2(_) | Compiled::PackedV2(_) => "0.2.0",
        }
    }
}

/// A live instance's exports, called through its world's bindings.
enum Exports {
    Typed(Transform),
    Packed(TransformPacked),
    TypedV2(TransformV2),
    PackedV2(TransformPackedV2),
}

/// A batch as the plugin's world takes it.
enum Input<'a> {
    Records(&'a [Record]),
    Packed(&'a Vec<u8>),
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    pub path: PathBuf,
    pre: Compiled,
    pub world: World,
    /// The contract version it implements: `"0.1.0"` or `"0.2.0"` (with state).
    pub contract: &'static str,
    engine: Engine,
    config_json: String,
    timeout_ms: u64,
    memory_limit_mb: u64,
    max_output_factor: usize,
    /// Largest snapshot of one partition's state (`max_state_mb`).
    max_state_bytes: usize,
    pub on_failure: OnFailure,
    pub role: Option<Role>,
    pub stats: Arc<PluginStats>,
}

/// A live instance: its store and its exports.
struct Instance {
    store: Store<StoreState>,
    exports: Exports,
    stderr: MemoryOutputPipe,
}

impl Instance {
    /// `init` with the plugin's config as JSON.
    fn init(&mut self, config_json: &str) -> wasmtime::Result<Result<(), PluginError>> {
        match &self.exports {
            Exports::Typed(t) => t.call_init(&mut self.store, config_json),
            Exports::Packed(p) => p.call_init(&mut self.store, config_json),
            Exports::TypedV2(t) => t.call_init(&mut self.store, config_json),
            Exports::PackedV2(p) => p.call_init(&mut self.store, config_json),
        }
    }

    /// `process`. Typed records are lifted straight into the host's `Record`; packed
    /// output is copied out in one piece (a borrowed view would dangle: the guest frees it
    /// as the call returns).
    fn process(&mut self, input: Input<'_>) -> wasmtime::Result<Result<Batch, PluginError>> {
        match (&self.exports, input) {
            (Exports::Typed(t), Input::Records(records)) => Ok(t
                .call_process(&mut self.store, records)?
                .map(Batch::Records)),
            (Exports::Packed(p), Input::Packed(bytes)) => {
                Ok(unpack(p.call_process(&mut self.store, bytes)?))
            }
            (Exports::TypedV2(t), Input::Records(records)) => Ok(t
                .call_process(&mut self.store, records)?
                .map(Batch::Records)),
            (Exports::PackedV2(p), Input::Packed(bytes)) => {
                Ok(unpack(p.call_process(&mut self.store, bytes)?))
            }
            _ => unreachable!("a batch is prepared for its plugin's world"),
        }
    }

    /// `tick`.
    fn tick(&mut self, watermark: i64) -> wasmtime::Result<Result<Batch, PluginError>> {
        match &self.exports {
            Exports::Typed(t) => Ok(t.call_tick(&mut self.store, watermark)?.map(Batch::Records)),
            Exports::Packed(p) => Ok(unpack(p.call_tick(&mut self.store, watermark)?)),
            Exports::TypedV2(t) => Ok(t.call_tick(&mut self.store, watermark)?.map(Batch::Records)),
            Exports::PackedV2(p) => Ok(unpack(p.call_tick(&mut self.store, watermark)?)),
        }
    }

    /// `snapshot`; `Ok(None)` from a 0.1.0 component, which keeps no state.
    fn snapshot(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, PluginError>> {
        match &self.exports {
            Exports::TypedV2(t) => t
                .sluice_plugin_state()
                .call_snapshot(&mut self.store, &typed_source(topic, partition)),
            Exports::PackedV2(p) => p
                .sluice_plugin_state()
                .call_snapshot(&mut self.store, &packed_source(topic, partition)),
            Exports::Typed(_) | Exports::Packed(_) => Ok(Ok(None)),
        }
    }

    /// `restore`; a 0.1.0 component has nothing to restore into.
    fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        bytes: &[u8],
    ) -> wasmtime::Result<Result<(), PluginError>> {
        match &self.exports {
            Exports::TypedV2(t) => t.sluice_plugin_state().call_restore(
                &mut self.store,
                &typed_source(topic, partition),
                bytes,
            ),
            Exports::PackedV2(p) => p.sluice_plugin_state().call_restore(
                &mut self.store,
                &packed_source(topic, partition),
                bytes,
            ),
            Exports::Typed(_) | Exports::Packed(_) => Ok(Ok(())),
        }
    }

    /// `release`; nothing for a 0.1.0 component.
    fn release(&mut self, topic: &str, partition: i32) -> wasmtime::Result<()> {
        match &self.exports {
            Exports::TypedV2(t) => t
                .sluice_plugin_state()
                .call_release(&mut self.store, &typed_source(topic, partition)),
            Exports::PackedV2(p) => p
                .sluice_plugin_state()
                .call_release(&mut self.store, &packed_source(topic, partition)),
            Exports::Typed(_) | Exports::Packed(_) => Ok(()),
        }
    }
}

fn typed_source(topic: &str, partition: i32) -> TypedSource {
    TypedSource {
        topic: topic.to_owned(),
        partition,
    }
}

fn packed_source(topic: &str, partition: i32) -> PackedSource {
    PackedSource {
        topic: topic.to_owned(),
        partition,
    }
}

/// Check a packed result. A batch that does not scan is the plugin's failure.
fn unpack(out: Result<Vec<u8>, PluginError>) -> Result<Batch, PluginError> {
    out.and_then(|bytes| {
        PackedBatch::new(bytes)
            .map(Batch::Packed)
            .map_err(|e| PluginError::new(format!("the plugin returned {e}")))
    })
}

impl LoadedPlugin {
    fn instantiate(&self) -> Result<Instance, CallFailure> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let limits = MemoryLimiter {
            limit: (self.memory_limit_mb as usize) << 20,
            peak: 0,
        };
        let mut store = Store::new(
            &self.engine,
            StoreState {
                plugin: self.name.clone(),
                stats: self.stats.clone(),
                limits,
                wasi,
                table: ResourceTable::new(),
                deadline: self.deadline(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        store.epoch_deadline_trap();
        let exports = match &self.pre {
            Compiled::Typed(pre) => pre.instantiate(&mut store).map(Exports::Typed),
            Compiled::Packed(pre) => pre.instantiate(&mut store).map(Exports::Packed),
            Compiled::TypedV2(pre) => pre.instantiate(&mut store).map(Exports::TypedV2),
            Compiled::PackedV2(pre) => pre.instantiate(&mut store).map(Exports::PackedV2),
        }
        .map_err(|e| self.classify(e, &stderr))?;
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let mut instance = Instance {
            store,
            exports,
            stderr,
        };
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().deadline = self.deadline();
        let result = instance
            .init(&self.config_json)
            .map_err(|e| self.classify(e, &instance.stderr))?;
        result.map_err(|e| CallFailure::Error {
            plugin: self.name.clone(),
            message: e.message,
        })?;
        Ok(instance)
    }

    /// The deadline of a call starting now, for clock waits. The epoch deadline comes no
    /// sooner: ticks are at least [`EPOCH_TICK`] apart.
    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.timeout_ms)
    }

    fn deadline_ticks(&self) -> u64 {
        (self.timeout_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
    }

    /// Turn a wasmtime error from a call into why it failed.
    fn classify(&self, error: wasmtime::Error, stderr: &MemoryOutputPipe) -> CallFailure {
        let plugin = self.name.clone();
        if error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            self.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
            return CallFailure::OutOfMemory {
                plugin,
                limit_mb: self.memory_limit_mb,
            };
        }
        let waited_too_long = error.downcast_ref::<WaitPastDeadline>().is_some();
        match error.downcast_ref::<Trap>() {
            _ if waited_too_long => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                return CallFailure::Timeout {
                    plugin,
                    timeout_ms: self.timeout_ms,
                };
            }
            Some(Trap::Interrupt) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                return CallFailure::Timeout {
                    plugin,
                    timeout_ms: self.timeout_ms,
                };
            }
            Some(Trap::AllocationTooLarge) => {
                self.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
                return CallFailure::OutOfMemory {
                    plugin,
                    limit_mb: self.memory_limit_mb,
                };
            }
            _ => {}
        }
        let text = format!("{error:#}");
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        let mut message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => text.lines().next().unwrap_or("unknown failure").to_owned(),
        };
        // A Rust plugin's panic message is on its stderr: it says far more than the trap.
        let err = stderr.contents();
        let err = String::from_utf8_lossy(&err);
        let last = err.trim().lines().last().unwrap_or("");
        if !last.is_empty() {
            message.push_str(" (stderr: ");
            message.push_str(&last.chars().take(300).collect::<String>());
            message.push(')');
        }
        CallFailure::Trap { plugin, message }
    }
}

/// One plugin as a chain stage: owns its current instance and replaces it after a failure.
pub struct WasmStage {
    plugin: Arc<LoadedPlugin>,
    instance: Option<Instance>,
    /// What its output may claim as origin.
    given: GivenOrigins,
}

impl WasmStage {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Self {
        WasmStage {
            plugin,
            instance: None,
            given: GivenOrigins::default(),
        }
    }

    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// A stage of the same compiled plugin with no instance and no state yet: a clean
    /// start without compiling again (`plugin test --spec` runs each case in one).
    pub fn fresh(&self) -> WasmStage {
        WasmStage::new(self.plugin.clone())
    }

    fn instance(&mut self) -> Result<&mut Instance, CallFailure> {
        if self.instance.is_none() {
            let fresh = self
                .plugin
                .instantiate()
                .map_err(|failure| CallFailure::Unavailable {
                    plugin: self.plugin.name.clone(),
                    message: failure.to_string(),
                })?;
            self.instance = Some(fresh);
        }
        Ok(self.instance.as_mut().expect("just set"))
    }

    /// Run one call with the deadline armed; on any trap, discard the instance.
    fn guarded<R>(
        &mut self,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        let ticks = self.plugin.deadline_ticks();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.plugin.timeout_ms);
        let instance = self.instance()?;
        instance.store.set_epoch_deadline(ticks);
        instance.store.data_mut().deadline = deadline;
        let result = call(instance);
        self.plugin
            .stats
            .observe_call(started.elapsed().as_nanos() as u64);
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let instance = self.instance.take().expect("instance in use");
                Err(self.plugin.classify(error, &instance.stderr))
            }
        }
    }

    /// Process a batch. On failure the batch is the caller's to dead-letter.
    pub fn process(&mut self, batch: &[Record]) -> Result<Vec<Record>, CallFailure> {
        self.given.give_records(batch);
        let out = match self.plugin.world {
            World::Typed => self.guarded(|i| i.process(Input::Records(batch)))?,
            World::Packed => {
                let mut bytes = Vec::new();
                packed::encode(batch, &mut bytes);
                self.guarded(|i| i.process(Input::Packed(&bytes)))?
            }
        };
        self.finish(out, batch.len()).map(Batch::into_records)
    }

    /// [`WasmStage::process`] for the chain: a packed batch goes to a packed-world plugin
    /// as it is, and what the plugin returns stays packed.
    pub fn process_batch(&mut self, batch: &Batch) -> Result<Batch, CallFailure> {
        self.given.give(batch);
        // Converted before the call starts, so the call's latency is the plugin's alone.
        let out = match self.plugin.world {
            World::Typed => {
                let records = batch.records();
                self.guarded(|i| i.process(Input::Records(&records)))?
            }
            World::Packed => {
                let bytes = batch.packed();
                self.guarded(|i| i.process(Input::Packed(&bytes)))?
            }
        };
        self.finish(out, batch.len())
    }

    /// Tell the plugin event time reached `watermark`.
    pub fn tick(&mut self, watermark: i64) -> Result<Vec<Record>, CallFailure> {
        self.tick_batch(watermark).map(Batch::into_records)
    }

    /// [`WasmStage::tick`] for the chain: packed output stays packed.
    pub fn tick_batch(&mut self, watermark: i64) -> Result<Batch, CallFailure> {
        let out = self.guarded(|i| i.tick(watermark))?;
        self.finish(out, 0)
    }

    /// Whether the plugin implements the `state` exports (contract 0.2.0).
    pub fn keeps_state(&self) -> bool {
        matches!(
            self.plugin.pre,
            Compiled::TypedV2(_) | Compiled::PackedV2(_)
        )
    }

    /// The plugin's state for one source partition, under the same deadline and memory
    /// limit as `process`; `None` when it holds none (or keeps no state: 0.1.0). A snapshot
    /// above `max_state_mb` is refused, naming the plugin and the key.
    pub fn snapshot(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Vec<u8>>, CallFailure> {
        if !self.keeps_state() {
            return Ok(None);
        }
        let out = self.guarded(|i| i.snapshot(topic, partition))?;
        let state = out.map_err(|e| self.state_error(e))?;
        match state {
            Some(bytes) if bytes.len() > self.plugin.max_state_bytes => {
                Err(self.too_large(topic, partition, bytes.len()))
            }
            state => Ok(state),
        }
    }

    /// Hand a snapshot of (`topic`, `partition`) back to the plugin, before any record of
    /// that partition: the host resumes the partition at `resume_at`. Records the plugin
    /// emits from the restored state may claim that partition's offsets below `resume_at`
    /// (a window opened before the snapshot). On an error the plugin's state for the
    /// partition is whatever the plugin left; the caller starts the partition empty by
    /// releasing it, and says so.
    pub fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        resume_at: i64,
        bytes: &[u8],
    ) -> Result<(), CallFailure> {
        if !self.keeps_state() {
            return Ok(());
        }
        if bytes.len() > self.plugin.max_state_bytes {
            return Err(self.too_large(topic, partition, bytes.len()));
        }
        let out = self.guarded(|i| i.restore(topic, partition, bytes))?;
        out.map_err(|e| self.state_error(e))?;
        self.given.vouch_below(topic, partition, resume_at);
        Ok(())
    }

    /// Tell the plugin the host no longer consumes (`topic`, `partition`).
    pub fn release(&mut self, topic: &str, partition: i32) -> Result<(), CallFailure> {
        if !self.keeps_state() {
            return Ok(());
        }
        self.guarded(|i| i.release(topic, partition))
    }

    fn state_error(&self, e: PluginError) -> CallFailure {
        self.plugin.stats.errors.fetch_add(1, Ordering::Relaxed);
        CallFailure::Error {
            plugin: self.plugin.name.clone(),
            message: e.message,
        }
    }

    fn too_large(&self, topic: &str, partition: i32, bytes: usize) -> CallFailure {
        self.plugin.stats.errors.fetch_add(1, Ordering::Relaxed);
        CallFailure::StateTooLarge {
            plugin: self.plugin.name.clone(),
            topic: topic.to_owned(),
            partition,
            bytes,
            limit_mb: (self.plugin.max_state_bytes >> 20) as u64,
        }
    }

    /// Count the call's records and check its output against the limits and the origin
    /// rule ([`super::origins`]).
    fn finish(
        &mut self,
        out: Result<Batch, PluginError>,
        input: usize,
    ) -> Result<Batch, CallFailure> {
        let stats = &self.plugin.stats;
        stats.records_in.fetch_add(input as u64, Ordering::Relaxed);
        let out = out.map_err(|e| {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            CallFailure::Error {
                plugin: self.plugin.name.clone(),
                message: e.message,
            }
        })?;
        let limit = input * self.plugin.max_output_factor + 1_000;
        if out.len() > limit {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CallFailure::TooManyOutputs {
                plugin: self.plugin.name.clone(),
                emitted: out.len(),
                input,
                limit,
            });
        }
        stats
            .records_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        let (out, foreign) = self.given.enforce(out, &self.plugin.name);
        if foreign > 0 {
            stats
                .foreign_origins
                .fetch_add(foreign as u64, Ordering::Relaxed);
        }
        if let Some(instance) = &self.instance {
            let peak = instance.store.data().limits.peak as u64;
            stats.memory_bytes.store(peak, Ordering::Relaxed);
        }
        Ok(out)
    }
}

/// Caps an instance's linear memory and records its high-water mark. Growth past the
/// limit traps at once (rather than failing `memory.grow`), so the failure is reported as
/// out-of-memory instead of as whatever the guest's allocator does next.
struct MemoryLimiter {
    limit: usize,
    peak: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("linear memory limit exceeded")]
struct MemoryLimitExceeded;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded.into());
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}
