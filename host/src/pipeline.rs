//! The pipeline thread: decode each source batch once, run it through the chain, and route
//! what comes out to the sinks; tick the chain so windows close.
//!
//! It runs on a plain thread because plugin calls are synchronous CPU work. Sends to sinks
//! block when a sink is full, and that is the backpressure that pauses the source.

use crate::ack::{AckHandle, AckIssuer, BatchOffsets, Completion};
use crate::batch::{Batch, PackedBatch};
use crate::chain::{Chain, ChainOutput, Stage};
use crate::codec::{self, DecodeOptions};
use crate::config::Config;
use crate::event::{DeadLetter, Events, Logs, RawMessage};
use crate::health::{self, FailState};
use crate::reload::Reload;
use crate::role;
use crate::route::RouteName;
use crate::sink::Router;
use crate::snapshots::Snapshotter;
use crate::source::{Barrier, PipelineInput, Resume, SourceBatch, SourceKind};
use crate::state::SnapshotExchange;
use crate::{Record, time};
use sluice_plugin_sdk::Output;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Packed bytes per record beyond its message's length (fixed fields, topic, lengths), to
/// size a batch's buffer once.
const PACKED_HEAD_BYTES: usize = 96;

/// Counters of the pipeline itself.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub batches: AtomicU64,
    pub records_in: AtomicU64,
    pub decode_rejected: AtomicU64,
    pub plugin_dead_lettered: AtomicU64,
    pub unrouted: AtomicU64,
    pub records_routed: AtomicU64,
}

pub struct Pipeline {
    chain: Chain,
    router: Arc<Router>,
    decode: DecodeOptions,
    tick_interval: Duration,
    /// Handles for what ticks emit: it derives from no single source batch.
    tick_acks: AckIssuer,
    tick_completions: UnboundedReceiver<Completion>,
    /// A share of the last source batch's handle, held until the next batch or tick: what
    /// a tick emits (metrics, alerts) is delivered under it, so a sink that fails to write
    /// it fails that batch and the source stops before committing it, as for any output.
    last_batch: Option<AckHandle>,
    warned_unrouted: HashSet<RouteName>,
    /// Per plugin, consecutive successful calls since its last failure.
    healthy_calls: HashMap<String, u32>,
    /// Snapshots of the plugins' state for the source to store, when it does.
    state: Option<Snapshotter>,
    /// Which pipeline worker this is (see [`crate::workers`]); 0 when it is the only one.
    worker: usize,
    pub stats: Arc<PipelineStats>,
}

/// Successful calls after which a failing plugin counts as recovered.
const RECOVERED_AFTER_CALLS: u32 = 3;

impl Pipeline {
    /// The pipeline `config` describes, running `stages` in order and sending to `router`.
    pub fn new(stages: Vec<Box<dyn Stage>>, router: Arc<Router>, config: &Config) -> Pipeline {
        let chain = Chain::new(
            stages,
            Duration::from_millis(config.pipeline.idle_watermark_ms),
        );
        let decoding = config.source.decoding();
        let (tick_acks, tick_completions) = AckIssuer::new();
        Pipeline {
            chain,
            router,
            decode: DecodeOptions {
                max_message_bytes: decoding.max_message_bytes,
                invalid_json: decoding.invalid_json,
            },
            tick_interval: Duration::from_millis(config.pipeline.tick_interval_ms),
            tick_acks,
            tick_completions,
            last_batch: None,
            warned_unrouted: HashSet::new(),
            healthy_calls: HashMap::new(),
            state: None,
            worker: 0,
            stats: Arc::new(PipelineStats::default()),
        }
    }

    /// The same pipeline as worker `worker` of several, counting into `stats`.
    pub fn worker(mut self, worker: usize, stats: Arc<PipelineStats>) -> Pipeline {
        self.worker = worker;
        self.stats = stats;
        self
    }

    /// Whether a stage keeps durable state (contract 0.2.0).
    pub fn keeps_state(&self) -> bool {
        self.chain.keeps_state()
    }

    /// Snapshot the plugins' state of each partition every `interval` (and when the source
    /// gives it up) into `exchange`, and restore what the source hands back.
    pub fn keep_state(&mut self, exchange: Arc<SnapshotExchange>, interval: Duration) {
        self.state = Some(Snapshotter::new(exchange, interval));
    }

    /// Process input until the source ends, then flush every sink. Plugin reloads from
    /// `reloads` are applied between batches.
    pub fn run(mut self, input: Receiver<PipelineInput>, reloads: Option<Receiver<Reload>>) {
        let mut last_tick = Instant::now();
        loop {
            if let Some(reloads) = &reloads {
                while let Ok(reload) = reloads.try_recv() {
                    self.apply(reload);
                }
            }
            let wait = self.tick_interval.saturating_sub(last_tick.elapsed());
            let waiting = Instant::now();
            let received = input.recv_timeout(wait);
            self.chain.starved_for(waiting.elapsed());
            match received {
                Ok(PipelineInput::Batch(batch)) => self.process(batch),
                Ok(PipelineInput::Progress(progress)) => self.follow(progress),
                Ok(PipelineInput::Lost(lost)) => self.lose(&lost),
                Ok(PipelineInput::Restore(snapshot)) => {
                    if let Some(state) = &mut self.state {
                        state.restore(&mut self.chain, &snapshot);
                    }
                }
                Ok(PipelineInput::Flush) => {
                    if let Some(held) = self.last_batch.take() {
                        held.ack();
                    }
                    self.router.flush_all_blocking();
                }
                Ok(PipelineInput::Barrier(barrier)) => self.barrier(barrier),
                Ok(PipelineInput::End { complete }) => {
                    if complete {
                        self.tick(true);
                    }
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= self.tick_interval {
                self.tick(false);
                last_tick = Instant::now();
            }
        }
        if let Some(held) = self.last_batch.take() {
            held.ack();
        }
        self.router.flush_all_blocking();
        self.report_tick_failures();
    }

    fn apply(&mut self, reload: Reload) {
        let index = match &reload {
            Reload::Replace { index, .. } | Reload::Bypass { index } => *index,
        };
        // Every worker is told; the first replaces a stage they share, for all.
        if self.worker != 0 && self.chain.is_shared(index) {
            return;
        }
        let (index, stage): (usize, Box<dyn Stage>) = match reload {
            Reload::Replace { index, plugin } => {
                tracing::info!(plugin = %plugin.name, "new plugin version in service");
                (index, Box::new(crate::plugin::WasmStage::new(plugin)))
            }
            Reload::Bypass { index } => {
                let name = self
                    .chain
                    .stage_names()
                    .get(index)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                (index, Box::new(crate::chain::Bypass { name }))
            }
        };
        // What the old version held (open windows) is delivered like a tick's output.
        let mut out = ChainOutput::default();
        self.chain.replace(index, stage, &mut out);
        self.deliver_emitted(out);
    }

    fn process(&mut self, batch: SourceBatch) {
        let SourceBatch {
            messages,
            ack,
            progress,
        } = batch;
        if let Some(previous) = self.last_batch.take() {
            previous.ack();
        }
        let partitions = partitions_of(&messages);
        self.chain.had_input(&partitions);
        let observed = time::now_ns();
        let stats = &self.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .records_in
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // With no plugins and nobody taking decoded records, there is nothing to parse:
        // only the raw bytes move (the benchmark's I/O ceiling).
        if self.chain.is_empty()
            && !self.router.takes(&RouteName::Cleaned)
            && self.router.takes(&RouteName::Raw)
        {
            self.router
                .send_blocking(&RouteName::Raw, Events::Raw(messages), &ack);
            ack.ack();
            return;
        }

        // Decode straight into the packed form the plugins take and the sinks read in
        // place: no record is owned string by string on the way through.
        let bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
        let mut packed = Output::with_capacity(bytes + messages.len() * PACKED_HEAD_BYTES);
        let mut dead = Vec::new();
        for m in &messages {
            let decoded = codec::decode_packed(
                &m.payload,
                m.origin.view(),
                m.timestamp,
                observed,
                &self.decode,
                &mut packed,
            );
            if let Err(reason) = decoded {
                dead.push(DeadLetter {
                    origin: m.origin.clone(),
                    reason: format!("cannot decode: {reason}"),
                    payload: m.payload.clone(),
                    timestamp: observed,
                });
            }
        }
        stats
            .decode_rejected
            .fetch_add(dead.len() as u64, Ordering::Relaxed);

        let records = PackedBatch::new(packed.into_bytes())
            .expect("a batch the host packed from Rust strings scans");
        let mut out = ChainOutput::default();
        self.chain.process(Batch::Packed(records), &mut out);
        if let Some(state) = &mut self.state {
            // The handle covers the whole source batch; a worker holds only its partitions.
            state.processed(ack.offsets(), &partitions);
        }
        self.deliver(out, dead, &messages, &ack);
        if let Some(progress) = progress {
            self.follow(progress);
        }
        if self.router.takes(&RouteName::Raw) {
            self.router
                .send_blocking(&RouteName::Raw, Events::Raw(messages), &ack);
        }
        self.last_batch = Some(ack.clone());
        ack.ack();
    }

    /// Stop between two batches for the source's transaction (see [`Barrier`]).
    fn barrier(&mut self, barrier: Barrier) {
        // Other workers may still be on their way to the barrier: a window they closed now
        // would be in this transaction while this worker's snapshot still holds it open.
        self.chain.hold_event_time();
        if let Some(held) = self.last_batch.take() {
            held.ack();
        }
        self.router.flush_all_blocking();
        if let Some(state) = &mut self.state {
            if self.chain.moved_by_others() {
                state.ticked();
            }
            state.snapshot_changed(&mut self.chain);
        }
        if barrier.reached.send(()).is_err() {
            return;
        }
        // Until the transaction is committed, aborted, or given up (dropped).
        if let Ok(Resume::Rewind(partitions)) = barrier.resume.recv() {
            self.lose(&partitions);
        }
    }

    /// The source no longer holds `lost` as they are here: drop them, and what the sinks
    /// hold of them.
    fn lose(&mut self, lost: &[(String, i32)]) {
        self.chain.lose(lost);
        if let Some(state) = &mut self.state {
            state.lose(&mut self.chain, lost);
        }
        self.router.lost_blocking(lost);
    }

    /// Take the source's report on its partitions; tell the sinks of revoked ones, after
    /// everything routed from them.
    fn follow(&mut self, progress: Vec<crate::source::PartitionProgress>) {
        let revoked = self.chain.set_progress(progress);
        if !revoked.is_empty() {
            if let Some(state) = &mut self.state {
                state.give_up(&mut self.chain, &revoked);
            }
            self.router.revoked_blocking(&revoked);
        }
    }

    fn tick(&mut self, end_of_input: bool) {
        let mut out = ChainOutput::default();
        self.chain.tick(end_of_input, &mut out);
        if let Some(state) = &mut self.state {
            if !out.has_no_records() || self.chain.moved_by_others() {
                state.ticked();
            }
            state.snapshot_due(&mut self.chain);
        }
        self.deliver_emitted(out);
    }

    /// Deliver what the chain emitted outside a source batch (a tick, a retired stage)
    /// under the last batch's handle (see [`Pipeline::last_batch`]).
    fn deliver_emitted(&mut self, out: ChainOutput) {
        let ack = self
            .last_batch
            .take()
            .unwrap_or_else(|| self.tick_acks.issue(BatchOffsets::default()));
        // Always: a failed tick is counted in the plugin's health even when nothing came out.
        self.deliver(out, Vec::new(), &[], &ack);
        ack.ack();
        self.report_tick_failures();
    }

    /// Route chain output and dead letters to the sinks, all under `ack`.
    fn deliver(
        &mut self,
        out: ChainOutput,
        mut dead: Vec<DeadLetter>,
        messages: &[RawMessage],
        ack: &AckHandle,
    ) {
        self.track_plugin_health(&out);
        if !out.dead.is_empty() {
            self.stats
                .plugin_dead_lettered
                .fetch_add(out.dead.len() as u64, Ordering::Relaxed);
            dead.extend(dead_letters(out.dead, messages));
        }

        // Group by route, keeping order within each route.
        let mut by_route: Vec<(RouteName, Vec<Record>)> = Vec::new();
        for record in out.routed {
            let name = RouteName::from(&record.route);
            match by_route.iter_mut().find(|(r, _)| *r == name) {
                Some((_, records)) => records.push(record),
                None => by_route.push((name, vec![record])),
            }
        }
        for (route, records) in by_route {
            self.route(&route, records.into(), ack);
        }
        for batch in out.cleaned {
            let logs = if self.router.reads_packed(&RouteName::Cleaned) {
                batch.into()
            } else {
                batch.into_records().into()
            };
            self.route(&RouteName::Cleaned, logs, ack);
        }
        if !dead.is_empty() {
            DeadLetter::redact_reasons(&mut dead);
            let taps = crate::tap::global();
            if taps.active() {
                taps.dead_letters(&dead);
            }
            // Config validation guarantees a sink takes `dlq`.
            self.router
                .send_blocking(&RouteName::Dlq, Events::DeadLetters(dead), ack);
        }
    }

    fn route(&mut self, route: &RouteName, logs: Logs, ack: &AckHandle) {
        let count = logs.len() as u64;
        let taps = crate::tap::global();
        if taps.active() {
            taps.route(route.as_str(), &logs);
        }
        if self.router.send_blocking(route, Events::Logs(logs), ack) {
            self.stats
                .records_routed
                .fetch_add(count, Ordering::Relaxed);
        } else {
            self.stats.unrouted.fetch_add(count, Ordering::Relaxed);
            if self.warned_unrouted.insert(route.clone()) {
                tracing::warn!(
                    %route,
                    "records were emitted on a route no sink takes; they are dropped (add the route to a sink's `routes` to keep them)"
                );
            }
        }
    }

    /// Raise `PluginFailing` (and the fail state of the plugin's role, see [`role`]) when
    /// a call fails; clear them after a few good calls in a row. Raise the role's fail state
    /// when a plugin emits records against its role.
    fn track_plugin_health(&mut self, out: &ChainOutput) {
        let health = health::global();
        for failure in &out.failures {
            tracing::warn!(%failure, "plugin call failed; its input is dead-lettered");
            let plugin = failure.stage.as_str();
            self.healthy_calls.insert(plugin.to_owned(), 0);
            health.raise(FailState::PluginFailing, plugin, failure.to_string());
            if let Some(state) = role::fail_state(self.chain.role_of(plugin)) {
                health.raise(state, plugin, failure.to_string());
            }
        }
        for breach in &out.breaches {
            if let Some(state) = role::fail_state(breach.role) {
                let context = format!("{} ({} of them)", breach.reason, breach.records);
                health.raise(state, &breach.stage, context);
            }
        }
        for plugin in &out.succeeded {
            let Some(streak) = self.healthy_calls.get_mut(plugin) else {
                continue;
            };
            *streak += 1;
            if *streak >= RECOVERED_AFTER_CALLS {
                self.healthy_calls.remove(plugin);
                health.clear(FailState::PluginFailing, plugin);
                if let Some(state) = role::fail_state(self.chain.role_of(plugin)) {
                    health.clear(state, plugin);
                }
            }
        }
    }

    fn report_tick_failures(&mut self) {
        while let Ok(completion) = self.tick_completions.try_recv() {
            if !completion.delivered {
                tracing::error!(
                    "records emitted by a plugin tick (metrics, alerts) were not delivered by every sink"
                );
            }
        }
    }
}

/// The source partitions a batch holds messages of, each once.
fn partitions_of(messages: &[RawMessage]) -> Vec<(String, i32)> {
    let mut partitions: Vec<(String, i32)> = Vec::new();
    for m in messages {
        let (topic, partition) = (&m.origin.topic, m.origin.partition);
        if !partitions
            .iter()
            .any(|(t, p)| *p == partition && t == topic)
        {
            partitions.push((topic.clone(), partition));
        }
    }
    partitions
}

/// Dead letters for records the chain rejected, carrying the original message bytes when
/// the record came straight from one (what a replay needs), else the record as JSON.
fn dead_letters(dead: Vec<(Record, String)>, messages: &[RawMessage]) -> Vec<DeadLetter> {
    let by_origin: HashMap<(i32, i64), &RawMessage> = messages
        .iter()
        .map(|m| ((m.origin.partition, m.origin.offset), m))
        .collect();
    let now = time::now_ns();
    dead.into_iter()
        .map(|(record, reason)| {
            let origin = record.origin().clone();
            let payload = match by_origin.get(&(origin.partition, origin.offset)) {
                Some(m) if m.origin.topic == origin.topic => m.payload.clone(),
                _ => codec::record_to_json(&record),
            };
            DeadLetter {
                origin,
                reason,
                payload,
                timestamp: now,
            }
        })
        .collect()
}
