//! Kafka source: a consumer-group member on its own thread.
//!
//! It polls with librdkafka's `BaseConsumer` (no async overhead on the hot path), cuts
//! batches by size and time, and hands them to the pipeline through a bounded channel.
//! When the channel stays full (a sink outage) it pauses its partitions and keeps polling
//! — so group membership and rebalances stay alive — and resumes once there is room.
//!
//! Offsets: auto-commit is on but automatic *storing* is off; an offset is stored only when
//! the [`OffsetTracker`] says every batch up to it is delivered (see [`crate::ack`]). On a
//! revoke (cooperative-sticky rebalancing) the source waits for in-flight batches of the
//! revoked partitions — bounded by `rebalance_drain_timeout_ms` — and commits synchronously
//! before letting them go. On shutdown it does the same for every partition.

use super::{
    DecodingConfig, PartitionProgress, PipelineInput, SourceBatch, SourceError, SourceKind,
    SourceLinks, SourceStats,
};
use crate::health::{self, FailState};
use crate::sink::InputTraits;
use rdkafka::types::RDKafkaErrorCode;

use super::kafka_state::StateTopic;
use crate::sink::kafka_transaction::TransactionSettings;

mod exactly_once;
use crate::ack::{AckIssuer, BatchOffsets, Completion, OffsetTracker};
use crate::codec::InvalidJson;
use crate::event::RawMessage;
use crate::kafka_security::{self, KafkaSecurity, OAuth};
use crate::{Origin, time};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group; hosts sharing it share the partitions.
    pub group_id: String,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
    /// How long a revoke waits for in-flight batches before giving the partitions up.
    #[serde(default = "default_drain_ms")]
    pub rebalance_drain_timeout_ms: u64,
    /// How long the brokers may be unreachable before `KafkaUnavailable` is raised.
    #[serde(default = "default_unavailable_ms")]
    pub unavailable_after_ms: u64,
    /// TLS and SASL to the brokers, for every client of the source: the consumer and the
    /// plugin state topic's (the transactional producer's come from the Kafka sinks).
    /// Boxed: most configs leave it out, and the source config stays small.
    #[serde(default)]
    pub security: Box<KafkaSecurity>,
    /// Extra librdkafka consumer properties (fetch sizes…).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default = "defaults::batch_max_records")]
    pub batch_max_records: usize,
    #[serde(default = "defaults::batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub invalid_json: InvalidJson,
    /// Keep the plugins' state of each partition (contract 0.2.0: dedup keys, open metric
    /// windows, anomaly baselines) in a compacted topic, so it survives restarts and
    /// follows the partition to its next owner.
    #[serde(default = "default_plugin_state")]
    pub plugin_state: bool,
    /// The compacted topic for it; `<group_id>.sluice-state` when unset.
    #[serde(default)]
    pub state_topic: Option<String>,
    /// How often each partition's state is snapshotted: a restart replays at most about
    /// this much (plus the commit interval) into the restored state.
    #[serde(default = "default_state_interval_ms")]
    pub state_interval_ms: u64,
    /// Static group membership: a restarted host rejoins under this id and gets its
    /// partitions back at once. `<hostname>-<group_id>` when unset; "" for dynamic
    /// membership (see [`super::kafka_group`]).
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Exactly once into Kafka: the records every Kafka sink writes, the offsets they came
    /// from and the plugins' state are committed together in one Kafka transaction (see
    /// [`exactly_once`]). Readers of the sinks' topics with
    /// `isolation.level=read_committed` see each record once, after any crash.
    #[serde(default)]
    pub exactly_once: bool,
    /// How often the transaction is committed: what `read_committed` readers wait for at
    /// most, and where the lake's segments are cut.
    #[serde(default = "default_transaction_interval_ms")]
    pub transaction_interval_ms: u64,
    /// The broker aborts a transaction open longer than this (`transaction.timeout.ms`);
    /// a sink that takes longer to accept a transaction's records stops the host.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// The producer's `transactional.id`: stable for one host, unique in the group.
    /// `<group_instance_id>` (`<hostname>-<group_id>` by default) when unset.
    #[serde(default)]
    pub transactional_id: Option<String>,
}

pub(super) mod defaults {
    pub fn batch_max_records() -> usize {
        super::DecodingConfig::default().batch_max_records
    }
    pub fn batch_max_wait_ms() -> u64 {
        super::DecodingConfig::default().batch_max_wait_ms
    }
    pub fn max_message_bytes() -> usize {
        super::DecodingConfig::default().max_message_bytes
    }
}

/// How long the pipeline may stay full before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

fn default_drain_ms() -> u64 {
    10_000
}

fn default_unavailable_ms() -> u64 {
    30_000
}

fn default_plugin_state() -> bool {
    true
}

fn default_state_interval_ms() -> u64 {
    5_000
}

fn default_transaction_interval_ms() -> u64 {
    1_000
}

fn default_transaction_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

impl SourceKind for KafkaSourceConfig {
    fn check(&self) -> Result<(), (String, String)> {
        KafkaSourceConfig::check(self)
    }

    fn decoding(&self) -> DecodingConfig {
        super::decoding_keys!(self)
    }

    /// A Kafka log replays the same records at the same offsets.
    fn input_traits(&self) -> InputTraits {
        InputTraits {
            durable_offsets: true,
            rebalance_drain: Duration::from_millis(self.rebalance_drain_timeout_ms),
        }
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} topics {:?} group {}",
            self.brokers, self.topics, self.group_id
        )
    }

    /// Reading exactly once, every transaction snapshots what changed (see
    /// [`exactly_once`]): no snapshot is taken between them.
    fn snapshot_interval(&self) -> Option<Duration> {
        let interval = match self.exactly_once {
            true => Duration::MAX,
            false => Duration::from_millis(self.state_interval_ms),
        };
        self.plugin_state.then_some(interval)
    }

    fn transaction_settings(
        &self,
        sink_options: &BTreeMap<String, String>,
    ) -> Option<TransactionSettings> {
        self.exactly_once.then(|| TransactionSettings {
            security: KafkaSecurity::default(),
            brokers: self.brokers.clone(),
            transactional_id: self.transactional_id(),
            timeout: Duration::from_millis(self.transaction_timeout_ms),
            options: sink_options.clone(),
            max_state_bytes: None,
        })
    }

    fn run(&self, links: SourceLinks) -> Result<(), SourceError> {
        run(self, links)
    }
}

impl KafkaSourceConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one host:port".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(("topics".into(), "must name at least one topic".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(("group_id".into(), "must not be empty".into()));
        }
        if self
            .state_topic
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err((
                "state_topic".into(),
                "must name a topic; leave it out for `<group_id>.sluice-state`".into(),
            ));
        }
        self.security.check(&self.options)?;
        if self.exactly_once {
            exactly_once::check(self)?;
        }
        if self.plugin_state && self.state_interval_ms < 100 {
            return Err((
                "state_interval_ms".into(),
                "must be at least 100 (snapshots cost a call into every stateful plugin)".into(),
            ));
        }
        Ok(())
    }

    /// The compacted topic keeping the plugins' state.
    pub fn state_topic_name(&self) -> String {
        self.state_topic
            .clone()
            .unwrap_or_else(|| format!("{}.sluice-state", self.group_id))
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            // Reading exactly once, offsets are committed in the transactions.
            .set("enable.auto.commit", (!self.exactly_once).to_string())
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                match self.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("enable.partition.eof", "false")
            // Per-partition lag for /metrics.
            .set("statistics.interval.ms", "5000")
            // librdkafka prefetches up to 64 MiB by default, more than the rest of the host
            // holds at full speed; 16 MiB keeps the fetcher ahead of the pipeline.
            .set("queued.max.messages.kbytes", "16384")
            // Once that queue is full librdkafka postpones the partition's next fetch by
            // this much (1 s by default): the pipeline would drain the queue and then wait
            // for up to a second with nothing to read.
            .set("fetch.queue.backoff.ms", "10");
        if let Some(id) = self.instance_id() {
            c.set("group.instance.id", id);
        }
        self.security.apply(&mut c);
        for (key, value) in &self.options {
            c.set(key, value);
        }
        c
    }
}

/// Offset bookkeeping shared by the poll loop and the rebalance callbacks (both run on the
/// source thread, inside `poll`).
struct SourceContext {
    tracker: Mutex<OffsetTracker>,
    completions: Mutex<UnboundedReceiver<Completion>>,
    /// Per partition, the next offset stored for commit.
    stored: Mutex<HashMap<(String, i32), i64>>,
    /// Per partition resumed from its plugin state below the group's commit, that commit:
    /// what is replayed up to it is never committed, so offsets never move back.
    floors: Mutex<HashMap<(String, i32), i64>>,
    paused: AtomicBool,
    drain_timeout: Duration,
    /// The pipeline's input, for reports during a rebalance.
    pipeline: SyncSender<PipelineInput>,
    /// Partitions revoked or lost since the poll loop last looked: messages of them read
    /// before and not yet sent must not be sent (their new owner reads them again).
    given_up: Mutex<Vec<(String, i32)>>,
    /// Set once shutdown has drained: leaving the group must not wait again.
    shutting_down: AtomicBool,
    /// Since when every broker has been unreachable, as librdkafka reports it.
    brokers_down_since: Mutex<Option<Instant>>,
    stats: Arc<SourceStats>,
    /// Where the plugins' state is kept, when it is (see [`crate::state`]).
    state: Option<StateTopic>,
    /// The open transaction, when reading exactly once (see [`exactly_once`]).
    transactions: Option<exactly_once::Transactions>,
    /// A failure met inside a rebalance callback, for the poll loop to stop with.
    failure: Mutex<Option<SourceError>>,
    /// Where a partition with no committed offset starts.
    start_from: Offset,
    /// Set when the host is asked to stop, and how long the stop may drain (see
    /// [`SourceLinks::shutdown`]): a transaction waiting for a sink gives up by then.
    stop: Arc<AtomicBool>,
    shutdown: (Duration, Arc<std::sync::OnceLock<Instant>>),
    /// OAUTHBEARER tokens, when the host makes them (`source.security.auth`).
    oauth: OAuth,
    /// What to check when the brokers refuse the source's credentials.
    auth_hint: String,
    /// Set once the group assigned partitions: the credentials were good.
    joined: AtomicBool,
}

impl ClientContext for SourceContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.oauth.generate()
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // Credentials refused before the group was joined are wrong, and do not mend
        // themselves: stop, saying what to check. Later (a token that could not be made
        // in time, a password rotated on the brokers) librdkafka retries; it is logged.
        if let rdkafka::error::KafkaError::Global(RDKafkaErrorCode::Authentication) = error {
            let message = format!(
                "the brokers refused to authenticate the consumer ({reason}); {}",
                self.auth_hint
            );
            match self.joined.load(Ordering::Relaxed) {
                false => self.fail(SourceError::Kafka(message)),
                true => tracing::error!("{message}"),
            }
            return;
        }
        if let rdkafka::error::KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) = error {
            let mut since = self
                .brokers_down_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(Instant::now);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        super::kafka_group::record(&self.stats, statistics, self.transactions.is_some());
    }
}

impl ConsumerContext for SourceContext {
    /// librdkafka's rebalance, with the plugins' state restored before an assignment takes
    /// effect: each assigned partition with a stored snapshot resumes at the snapshot's
    /// offset (see [`crate::state`]).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.restore_state(consumer, tpl);
                Rebalance::Assign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "rebalance error");
                Rebalance::Error(rdkafka::error::KafkaError::Rebalance(code))
            }
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match (err, cooperative) {
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => {
                consumer.incremental_assign(tpl)
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => consumer.assign(tpl),
            (_, true) => consumer.incremental_unassign(tpl),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance failed");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            if self.shutting_down.load(Ordering::Relaxed) {
                // Leaving: the shutdown already drained (within its own deadline) and
                // committed what completed; only forget.
                self.forget(&parts);
            } else if consumer.assignment_lost() {
                // The group moved on without us (session timeout): another member may
                // already have committed further — committing now could move its offsets
                // back — and written their records. Forget them first, so nothing of them
                // completes here any more, then tell the sinks to drop what they hold.
                tracing::warn!(partitions = ?parts, "partitions lost; their uncommitted batches will be replayed by the new owner");
                if self.transactions.is_some() {
                    self.fail(SourceError::Kafka(format!(
                        "partitions {parts:?} were lost (the group's session timed out) while the open transaction holds records of them; the host stops so that it starts again from the last committed transaction. Raise `session.timeout.ms` in `source.options` if the host is often too slow to poll"
                    )));
                }
                self.forget(&parts);
                if let Some(state) = &self.state {
                    state.exchange.forget(&parts);
                }
                self.send_report(consumer, PipelineInput::Lost(parts));
            } else {
                tracing::info!(partitions = ?parts, "partitions revoked; draining in-flight batches");
                self.tracker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .revoking(&parts);
                self.report_revoke(consumer, &parts);
                let deadline = Instant::now() + self.drain_timeout;
                self.drain(consumer, Some(&parts), deadline);
                self.wait_last_snapshots(&parts, deadline);
                self.commit(consumer, Some(&parts));
                if let Some(state) = &self.state {
                    // Their next owner restores what is stored now.
                    state.flush(deadline);
                    state.exchange.forget(&parts);
                }
                self.forget(&parts);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(count = tpl.count(), "partitions assigned");
            self.joined.store(true, Ordering::Relaxed);
            self.tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .assign(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            if self.paused.load(Ordering::Relaxed) {
                let _ = consumer.pause(tpl);
            }
            if self.transactions.is_some() {
                self.note_assignment(consumer, tpl);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.committed(offsets),
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; it is retried with the next commit")
            }
        }
    }
}

impl SourceContext {
    /// Remember the first failure met in a callback; the poll loop stops with it.
    fn fail(&self, error: SourceError) {
        tracing::error!(%error, "the source stops");
        lock(&self.failure).get_or_insert(error);
    }

    fn has_failed(&self) -> bool {
        lock(&self.failure).is_some()
    }

    /// The group committed `offsets`: store the plugin-state snapshots they cover.
    fn committed(&self, offsets: &TopicPartitionList) {
        let Some(state) = &self.state else {
            return;
        };
        let committed: Vec<((String, i32), i64)> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some(((e.topic().to_owned(), e.partition()), next)),
                _ => None,
            })
            .collect();
        state.store_committed(&committed);
    }

    /// Wait (until `deadline`) for the pipeline to snapshot the partitions it gives up,
    /// after its last batch of them, so the commit that follows stores their latest state.
    fn wait_last_snapshots(&self, parts: &[(String, i32)], deadline: Instant) {
        if let Some(state) = &self.state
            && !state.exchange.wait_last_taken(parts, deadline)
        {
            tracing::warn!(partitions = ?parts, "the pipeline did not snapshot the partitions it gives up within the drain; their next owner restores an older state and replays further");
        }
    }

    /// Before an assignment takes effect: read the stored state of the partitions
    /// assigned, hand it to the pipeline ahead of their records, and start each partition
    /// where its state ends. A snapshot ahead of the committed offset (the group's offsets
    /// were reset or deleted) is not used: the partition starts empty at the commit.
    fn restore_state(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let Some(state) = &self.state else {
            return;
        };
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let snapshots = state.load(&assigned);
        if snapshots.is_empty() {
            return;
        }
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .unwrap_or_default();
        for ((topic, partition), snapshot) in snapshots {
            let commit =
                committed
                    .find_partition(&topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            if commit.is_none_or(|c| snapshot.next_offset > c) {
                tracing::warn!(
                    topic, partition, state_at = snapshot.next_offset, committed = ?commit,
                    "stored plugin state is ahead of the group's committed offset (were the offsets reset?); the partition starts with empty state"
                );
                continue;
            }
            if tpl
                .set_partition_offset(&topic, partition, Offset::Offset(snapshot.next_offset))
                .is_err()
            {
                continue;
            }
            if let Some(commit) = commit {
                self.floors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((topic.clone(), partition), commit);
            }
            tracing::info!(
                topic, partition, resume_at = snapshot.next_offset, committed = ?commit,
                "plugin state restored; the partition resumes where its state ends"
            );
            self.send_report(consumer, PipelineInput::Restore(snapshot));
        }
    }

    /// Stop tracking partitions given up: nothing of them is committed here any more, and
    /// the poll loop drops their messages not yet sent (see [`SourceContext::given_up`]).
    fn forget(&self, parts: &[(String, i32)]) {
        let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let mut given_up = self.given_up.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in parts {
            tracker.forget(topic, *partition);
            stored.remove(&(topic.clone(), *partition));
            (self.floors.lock().unwrap_or_else(|e| e.into_inner()))
                .remove(&(topic.clone(), *partition));
            if !given_up.contains(&(topic.clone(), *partition)) {
                given_up.push((topic.clone(), *partition));
            }
        }
    }

    /// Tell the pipeline, behind the batches already sent, which partitions remain; it
    /// tells the sinks, so those holding records of `revoked` write them out for the
    /// commit below. Waits no longer than the drain timeout for room in the channel.
    fn report_revoke(&self, consumer: &BaseConsumer<Self>, revoked: &[(String, i32)]) {
        let Some(mut remaining) = partition_progress(consumer) else {
            return;
        };
        remaining.retain(|p| {
            !revoked
                .iter()
                .any(|(t, q)| *q == p.partition && *t == p.topic)
        });
        self.send_report(consumer, PipelineInput::Progress(remaining));
    }

    /// Send a report behind the batches already sent, waiting no longer than the drain
    /// timeout for room in the channel.
    fn send_report(&self, consumer: &BaseConsumer<Self>, mut report: PipelineInput) {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            match self.pipeline.try_send(report) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    report = back;
                    self.pump(consumer);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        "the pipeline took no partition report within the drain timeout (a sink is blocking it); the sinks were not told which partitions this host gave up"
                    );
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Apply completed batches: store the offsets that became committable.
    fn pump(&self, consumer: &BaseConsumer<Self>) -> bool {
        let mut completions = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        // One entry per partition: a list naming a partition twice stores the second
        // entry's offset last, and librdkafka's list helpers leave that one unset (-1001),
        // so the partition would stop being committed until the next store.
        let mut advanced: BTreeMap<(String, i32), i64> = BTreeMap::new();
        while let Ok(completion) = completions.try_recv() {
            for (partition, next) in tracker.complete(&completion) {
                advanced.insert(partition, next);
            }
        }
        let mut tpl = TopicPartitionList::new();
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        for ((topic, partition), next) in advanced {
            if floors
                .get(&(topic.clone(), partition))
                .is_some_and(|floor| next < *floor)
            {
                continue;
            }
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
            stored.insert((topic, partition), next);
        }
        drop(stored);
        drop(floors);
        if tpl.count() > 0 {
            // Fails for a partition no longer assigned; its new owner replays from the
            // last commit, which is safe.
            if let Err(e) = consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "storing offsets");
            }
        }
        !tracker.has_failed()
    }

    /// Wait until no batch of `parts` (or of any partition) is in flight, or `deadline`.
    fn drain(
        &self,
        consumer: &BaseConsumer<Self>,
        parts: Option<&[(String, i32)]>,
        deadline: Instant,
    ) {
        let started = Instant::now();
        loop {
            self.pump(consumer);
            let in_flight = {
                let tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
                match parts {
                    Some(parts) => parts.iter().map(|(t, p)| tracker.in_flight(t, *p)).sum(),
                    None => tracker.total_in_flight(),
                }
            };
            if in_flight == 0 {
                if parts.is_some() {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "revoked partitions drained"
                    );
                }
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    in_flight,
                    "drain timed out; uncommitted batches will be replayed by the next owner"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Commit what is stored, synchronously. Reading exactly once, the whole transaction
    /// is committed, whichever partitions are named.
    fn commit(&self, consumer: &BaseConsumer<Self>, parts: Option<&[(String, i32)]>) {
        if let Some(transactions) = &self.transactions {
            if self.has_failed() {
                return;
            }
            let point = match self.shutting_down.load(Ordering::Relaxed) {
                true => exactly_once::CommitPoint::Stop,
                false => exactly_once::CommitPoint::Rebalance {
                    giving_up: parts.unwrap_or_default(),
                },
            };
            if let Err(e) = self.commit_transaction(consumer, transactions, point) {
                self.fail(e.stop());
            }
            return;
        }
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in stored.iter() {
            if parts.is_none_or(|p| p.iter().any(|(t, q)| t == topic && q == partition)) {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(partitions = tpl.count(), "committed");
                self.committed(&tpl);
            }
            Err(e) => tracing::warn!(error = %e, "synchronous commit failed"),
        }
    }
}

/// Consume until `stop`, sending batches to the pipeline.
/// On `stop`, what is in flight gets `shutdown.0` to be delivered before the source commits
/// what completed and leaves; the moment that time runs out is set in `shutdown.1`, for the
/// rest of the host's shutdown.
pub fn run(config: &KafkaSourceConfig, links: SourceLinks) -> Result<(), SourceError> {
    let SourceLinks {
        pipeline: tx,
        stop,
        stats,
        shutdown,
        state,
        transaction,
    } = links;
    let (issuer, completions) = AckIssuer::new();
    // A revoked partition commits once its own records are written (see `ack`).
    let mut issuer = issuer.reporting_shares();
    let state = match state {
        Some(link) => Some(StateTopic::open(
            config,
            link.exchange,
            link.max_snapshot_bytes,
        )?),
        None => None,
    };
    let transactions = transaction.map(|t| exactly_once::Transactions::new(config, t));
    let stopping = (stop.clone(), shutdown.clone());
    let consumer = subscribe(
        config,
        &tx,
        completions,
        stats,
        state,
        transactions,
        stopping,
    )?;
    let mut availability = Availability {
        subject: config.brokers.clone(),
        grace: Duration::from_millis(config.unavailable_after_ms),
        last_probe: Instant::now(),
    };
    let mut batching = Batching::new(config);
    let mut fatal = super::kafka_group::FatalWatch::new(config);
    let ctx = consumer.context();

    let result = loop {
        if !ctx.pump(&consumer) {
            break Err(SourceError::BatchFailed);
        }
        if let Some(failure) = lock(&ctx.failure).take() {
            break Err(failure);
        }
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Some(transactions) = &ctx.transactions
            && transactions.due()
        {
            let point = exactly_once::CommitPoint::Interval;
            match ctx.commit_transaction(&consumer, transactions, point) {
                Ok(true) => {}
                // Every partition went back to the last commit: the pipeline forgot them,
                // tell it again with the next batch.
                Ok(false) => batching.progress = ProgressReport::default(),
                Err(e) => break Err(e.stop()),
            }
        }
        availability.check(&consumer);
        if let Err(e) = fatal.check(consumer.client()) {
            break Err(e);
        }
        // A poll that served a rebalance returned no message: what is held or being cut
        // was read before it.
        batching.drop_given_up(&ctx.given_up);
        match batching.offer_held(&consumer, &tx) {
            Offer::Taken => {}
            Offer::Waiting => continue,
            Offer::Closed => break Ok(()),
        }
        batching.report_progress(&consumer, &tx);
        batching.poll(&consumer, &availability);
        batching.drop_given_up(&ctx.given_up);
        if !batching.cut(&consumer, &tx, &mut issuer) {
            break Ok(());
        }
    };

    set_paused(&consumer, true);
    drop(batching.held.take());
    leave(&consumer, tx, &shutdown, result)
}

/// The consumer, subscribed to the configured topics.
fn subscribe(
    config: &KafkaSourceConfig,
    tx: &SyncSender<PipelineInput>,
    completions: UnboundedReceiver<Completion>,
    stats: Arc<SourceStats>,
    state: Option<StateTopic>,
    transactions: Option<exactly_once::Transactions>,
    (stop, shutdown): (
        Arc<AtomicBool>,
        (Duration, Arc<std::sync::OnceLock<Instant>>),
    ),
) -> Result<BaseConsumer<SourceContext>, SourceError> {
    let context = SourceContext {
        tracker: Mutex::new(OffsetTracker::default()),
        completions: Mutex::new(completions),
        stored: Mutex::new(HashMap::new()),
        floors: Mutex::new(HashMap::new()),
        paused: AtomicBool::new(false),
        drain_timeout: Duration::from_millis(config.rebalance_drain_timeout_ms),
        pipeline: tx.clone(),
        given_up: Mutex::new(Vec::new()),
        shutting_down: AtomicBool::new(false),
        brokers_down_since: Mutex::new(None),
        stats,
        state,
        transactions,
        failure: Mutex::new(None),
        start_from: match config.start_from {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
        },
        stop,
        shutdown,
        oauth: config
            .security
            .oauth("source")
            .map_err(|e| SourceError::Kafka(format!("source.security: {e}")))?,
        auth_hint: kafka_security::authentication_hint("source", &config.security),
        joined: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<SourceContext> = config
        .client_config()
        .create_with_context(context)
        .map_err(|e| {
            SourceError::Kafka(format!(
                "cannot create the consumer: {e}. Check `source.brokers`, `source.security` and `source.options`."
            ))
        })?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| SourceError::Kafka(format!("cannot subscribe to {topics:?}: {e}")))?;
    tracing::info!(topics = ?topics, group = %config.group_id, "consuming");
    Ok(consumer)
}

/// Shutdown, the partitions already paused: let the pipeline finish what it has — for at
/// most the drain timeout, a sink may be down — commit what completed, leave.
fn leave(
    consumer: &BaseConsumer<SourceContext>,
    tx: SyncSender<PipelineInput>,
    shutdown: &(Duration, Arc<std::sync::OnceLock<Instant>>),
    result: Result<(), SourceError>,
) -> Result<(), SourceError> {
    let ctx = consumer.context();
    let deadline = *shutdown.1.get_or_init(|| Instant::now() + shutdown.0);
    let send = |mut input: PipelineInput| loop {
        match tx.try_send(input) {
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                input = back;
                ctx.pump(consumer);
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => break,
        }
    };
    let owned: Vec<(String, i32)> = consumer
        .assignment()
        .map(|tpl| {
            (tpl.elements().iter())
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        })
        .unwrap_or_default();
    let keeps_state = ctx.state.is_some() && result.is_ok();
    if keeps_state {
        // The plugins' state of every partition is snapshotted after its last batch and
        // stored with the commit below, so it goes on after a restart, where it was.
        send(PipelineInput::Progress(Vec::new()));
    }
    // A stop in order: the plugins are told their input has ended, so what they hold
    // (open metric windows, counting records committed below) is emitted and written
    // before the commit — all but the state just snapshotted. After a failure nothing
    // past it is committed: it is replayed.
    send(PipelineInput::End {
        complete: result.is_ok(),
    });
    drop(tx);
    ctx.drain(consumer, None, deadline);
    if keeps_state {
        ctx.wait_last_snapshots(&owned, deadline);
    }
    ctx.shutting_down.store(true, Ordering::Relaxed);
    let failed = !ctx.pump(consumer);
    // After a failure, or a drain cut short by its deadline (a sink down), the transaction
    // holds records of batches that did not complete: it is aborted, not committed, and
    // the next start replays from the last commit.
    let undrained = lock(&ctx.tracker).total_in_flight() > 0;
    let transaction_failed = ctx.transactions.is_some() && (failed || result.is_err() || undrained);
    if !failed && !transaction_failed {
        ctx.commit(consumer, None);
    }
    if let Some(transactions) = &ctx.transactions
        && (transaction_failed || ctx.has_failed())
    {
        transactions.abort();
    }
    if let Some(state) = &ctx.state {
        state.flush(deadline);
    }
    consumer.unsubscribe();
    let commit_failure = lock(&ctx.failure).take();
    match (result, commit_failure) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) if failed => Err(SourceError::BatchFailed),
        (Ok(()), None) => Ok(()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What became of a batch the pipeline had no room for.
enum Offer {
    /// None was held, or the pipeline took it.
    Taken,
    /// Still held: wait before fetching more.
    Waiting,
    /// The pipeline is gone.
    Closed,
}

/// The batch being cut, and one the pipeline had no room for yet.
struct Batching {
    max_records: usize,
    max_wait: Duration,
    messages: Vec<RawMessage>,
    offsets: BatchOffsets,
    started: Instant,
    /// A batch the pipeline had no room for, with its offsets and since when it waits.
    held: Option<(SourceBatch, BatchOffsets, Instant)>,
    progress: ProgressReport,
}

impl Batching {
    /// Drop what was read, and not yet sent, of partitions the source gave up.
    fn drop_given_up(&mut self, given_up: &Mutex<Vec<(String, i32)>>) {
        drop_given_up(
            given_up,
            &mut self.messages,
            &mut self.offsets,
            &mut self.held,
        );
    }

    fn new(config: &KafkaSourceConfig) -> Self {
        Batching {
            max_records: config.batch_max_records,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
            messages: Vec::with_capacity(config.batch_max_records),
            offsets: BatchOffsets::default(),
            started: Instant::now(),
            held: None,
            progress: ProgressReport::default(),
        }
    }

    /// Offer the held batch first. A full pipeline is normal for a moment under load: wait
    /// without fetching more. Only a pipeline full for longer (a sink outage) pauses the
    /// partitions, and polling then continues so group membership and rebalances stay
    /// alive. Pausing at batch rate would throw away librdkafka's prefetched messages on
    /// every pause and refetch them on every resume.
    fn offer_held(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        tx: &SyncSender<PipelineInput>,
    ) -> Offer {
        let Some((batch, batch_offsets, since)) = self.held.take() else {
            return Offer::Taken;
        };
        let ctx = consumer.context();
        let seq = batch.ack.seq();
        match tx.try_send(PipelineInput::Batch(batch)) {
            Ok(()) => {
                register(ctx, seq, &batch_offsets);
                set_paused(consumer, false);
                Offer::Taken
            }
            Err(TrySendError::Full(PipelineInput::Batch(batch))) => {
                self.held = Some((batch, batch_offsets, since));
                if since.elapsed() < PAUSE_AFTER {
                    std::thread::sleep(Duration::from_millis(1));
                    return Offer::Waiting;
                }
                set_paused(consumer, true);
                // Paused partitions deliver nothing, but a message that raced the pause
                // has already moved the consumer's position: keep it.
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(message)) => self.accept(ctx, &message),
                    Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
                    None => {}
                }
                Offer::Waiting
            }
            Err(_) => Offer::Closed,
        }
    }

    /// With nothing to carry it, tell the pipeline of partitions assigned, revoked or
    /// caught up on their own.
    fn report_progress(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        tx: &SyncSender<PipelineInput>,
    ) {
        if !self.messages.is_empty() {
            return;
        }
        if let Some(report) = self.progress.due(consumer)
            && tx.try_send(PipelineInput::Progress(report.clone())).is_ok()
        {
            self.progress.sent(report);
        }
    }

    /// Wait for messages until the batch is due, and take what else is ready.
    fn poll(&mut self, consumer: &BaseConsumer<SourceContext>, availability: &Availability) {
        let ctx = consumer.context();
        let wait = if self.messages.is_empty() {
            Duration::from_millis(100)
        } else {
            self.max_wait.saturating_sub(self.started.elapsed())
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                availability.reachable(ctx);
                self.accept(ctx, &message);
                drop(message);
                take_ready(
                    ctx,
                    consumer,
                    self.max_records,
                    &mut self.messages,
                    &mut self.offsets,
                );
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
            None => {}
        }
    }

    fn accept(&mut self, ctx: &SourceContext, message: &rdkafka::message::BorrowedMessage<'_>) {
        if self.messages.is_empty() {
            self.started = Instant::now();
        }
        accept(ctx, message, &mut self.messages, &mut self.offsets);
    }

    /// Send the batch when it is full or due; hold it when the pipeline has no room.
    /// Returns false when the pipeline is gone.
    fn cut(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        tx: &SyncSender<PipelineInput>,
        issuer: &mut AckIssuer,
    ) -> bool {
        let full = self.messages.len() >= self.max_records;
        let due = !self.messages.is_empty() && self.started.elapsed() >= self.max_wait;
        if !(full || due) {
            return true;
        }
        let batch_offsets = std::mem::take(&mut self.offsets);
        let report = self.progress.changed(consumer);
        let fresh = Vec::with_capacity(self.max_records);
        let batch = SourceBatch {
            messages: std::mem::replace(&mut self.messages, fresh),
            ack: issuer.issue(batch_offsets.clone()),
            progress: report,
        };
        let seq = batch.ack.seq();
        match tx.try_send(PipelineInput::Batch(batch)) {
            Ok(()) => register(consumer.context(), seq, &batch_offsets),
            Err(TrySendError::Full(PipelineInput::Batch(batch))) => {
                self.held = Some((batch, batch_offsets, Instant::now()));
            }
            Err(_) => return false,
        }
        true
    }
}

/// Turns librdkafka's "all brokers down" into the `KafkaUnavailable` fail state once it
/// lasts longer than the grace period, and clears it when the brokers answer again.
struct Availability {
    subject: String,
    grace: Duration,
    last_probe: Instant,
}

impl Availability {
    fn check(&mut self, consumer: &BaseConsumer<SourceContext>) {
        let ctx = consumer.context();
        let Some(since) = *ctx
            .brokers_down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return;
        };
        if since.elapsed() >= self.grace {
            health::global().raise(
                FailState::KafkaUnavailable,
                &self.subject,
                format!(
                    "no broker of {} has been reachable for {} s; consuming is stalled (offsets are safe)",
                    self.subject,
                    since.elapsed().as_secs()
                ),
            );
        }
        // librdkafka reports brokers going down, not coming back: probe while down.
        if self.last_probe.elapsed() >= Duration::from_secs(2) {
            self.last_probe = Instant::now();
            if consumer
                .fetch_metadata(None, Duration::from_millis(1_500))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                self.reachable(ctx);
            }
        }
    }

    fn reachable(&self, ctx: &SourceContext) {
        let mut since = ctx
            .brokers_down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if since.take().is_some() {
            tracing::info!(brokers = %self.subject, "Kafka brokers reachable again");
            health::global().clear(FailState::KafkaUnavailable, &self.subject);
        }
    }
}

/// What the pipeline was last told about the partitions (see [`PartitionProgress`]).
#[derive(Default)]
struct ProgressReport {
    last: Option<Vec<PartitionProgress>>,
    checked: Option<Instant>,
}

/// How often an idle source looks whether its partitions changed.
const PROGRESS_CHECK: Duration = Duration::from_millis(500);

impl ProgressReport {
    /// The partitions now, if that differs from the last report; assumed sent.
    fn changed(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
    ) -> Option<Vec<PartitionProgress>> {
        self.checked = Some(Instant::now());
        let now = partition_progress(consumer)?;
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now.clone());
        Some(now)
    }

    /// Like [`ProgressReport::changed`], at most every [`PROGRESS_CHECK`]; not assumed sent.
    fn due(&mut self, consumer: &BaseConsumer<SourceContext>) -> Option<Vec<PartitionProgress>> {
        if self.checked.is_some_and(|t| t.elapsed() < PROGRESS_CHECK) {
            return None;
        }
        self.checked = Some(Instant::now());
        let now = partition_progress(consumer)?;
        (self.last.as_ref() != Some(&now)).then_some(now)
    }

    fn sent(&mut self, report: Vec<PartitionProgress>) {
        self.last = Some(report);
    }
}

/// For every assigned partition, whether the consumer has read all it holds: its position
/// (librdkafka's, which steps over transaction markers) at the high watermark of the last
/// fetch. Before anything is read from a partition, the group's lag from the statistics
/// decides. `None` when librdkafka cannot say.
fn partition_progress(consumer: &BaseConsumer<SourceContext>) -> Option<Vec<PartitionProgress>> {
    let positions = consumer.position().ok()?;
    let lag = consumer
        .context()
        .stats
        .lag
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let progress = positions
        .elements()
        .iter()
        .map(|e| {
            let (topic, partition) = (e.topic(), e.partition());
            let no_lag = || lag.get(&(topic.to_owned(), partition)) == Some(&0);
            let caught_up = match (e.offset(), watermarks(consumer, topic, partition)) {
                (Offset::Offset(next), Some((_, high))) => next >= high,
                // Nothing read yet: caught up if the log holds nothing to read. An empty
                // partition must not hold event time back (until it counts as idle).
                (_, Some((low, high))) if high == 0 || low == high => true,
                _ => no_lag(),
            };
            PartitionProgress {
                topic: topic.to_owned(),
                partition,
                caught_up,
            }
        })
        .collect();
    Some(progress)
}

/// The partition's low and high watermarks as of the consumer's last fetch (no request is
/// made).
fn watermarks(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle lives as long as `consumer`; librdkafka reads the
    // NUL-terminated topic name and writes the two offsets, from its cache, under its own
    // locks. rust-rdkafka offers only the variant that asks the broker.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

/// Add a consumed message to the batch being cut.
fn accept(
    ctx: &SourceContext,
    message: &rdkafka::message::BorrowedMessage<'_>,
    messages: &mut Vec<RawMessage>,
    offsets: &mut BatchOffsets,
) {
    ctx.stats.consumed.fetch_add(1, Ordering::Relaxed);
    let origin = Origin {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    offsets.record(&origin.topic, origin.partition, origin.offset);
    let timestamp = message
        .timestamp()
        .to_millis()
        .map_or_else(time::now_ns, |ms| ms.saturating_mul(1_000_000));
    messages.push(RawMessage {
        origin,
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp,
    });
}

/// Take the messages librdkafka already holds, up to a full batch, without waiting. The
/// loop's per-poll bookkeeping (completions, broker health, the batch clock) is then paid
/// once per burst instead of once per message.
fn take_ready(
    ctx: &SourceContext,
    consumer: &BaseConsumer<SourceContext>,
    max_records: usize,
    messages: &mut Vec<RawMessage>,
    offsets: &mut BatchOffsets,
) {
    while messages.len() < max_records {
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => accept(ctx, &message, messages, offsets),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                return;
            }
            None => return,
        }
    }
}

/// Drop what was read of partitions given up (revoked or lost) and not yet sent: their new
/// owner reads it again from the last commit, and a sink told of the revoke must not get
/// records of them after it. Called after every poll that can have served a rebalance and
/// before the next message is taken, so nothing read after a new assignment is dropped.
fn drop_given_up(
    given_up: &Mutex<Vec<(String, i32)>>,
    messages: &mut Vec<RawMessage>,
    offsets: &mut BatchOffsets,
    held: &mut Option<(SourceBatch, BatchOffsets, Instant)>,
) {
    let parts = {
        let mut given_up = given_up.lock().unwrap_or_else(|e| e.into_inner());
        if given_up.is_empty() {
            return;
        }
        std::mem::take(&mut *given_up)
    };
    let gone =
        |topic: &str, partition: i32| parts.iter().any(|(t, p)| *p == partition && t == topic);
    messages.retain(|m| !gone(&m.origin.topic, m.origin.partition));
    offsets.highest.retain(|(t, p), _| !gone(t, *p));
    if let Some((batch, batch_offsets, _)) = held {
        let before = batch.messages.len();
        batch
            .messages
            .retain(|m| !gone(&m.origin.topic, m.origin.partition));
        batch_offsets.highest.retain(|(t, p), _| !gone(t, *p));
        tracing::debug!(
            dropped = before - batch.messages.len(),
            "messages of partitions given up, not sent"
        );
    }
}

/// The pipeline accepted batch `seq`: track it until it completes. Completions are applied
/// only by `pump` on this thread, so registering after the send cannot miss one.
fn register(ctx: &SourceContext, seq: u64, offsets: &BatchOffsets) {
    let mut tracker = ctx.tracker.lock().unwrap_or_else(|e| e.into_inner());
    tracker.issued(seq, offsets);
}

fn set_paused(consumer: &BaseConsumer<SourceContext>, pause: bool) {
    let ctx = consumer.context();
    if ctx.paused.swap(pause, Ordering::Relaxed) == pause {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => tracing::debug!(paused = pause, "backpressure"),
        Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckIssuer;

    fn offsets_of(messages: &[RawMessage]) -> BatchOffsets {
        let mut o = BatchOffsets::default();
        for m in messages {
            o.record(&m.origin.topic, m.origin.partition, m.origin.offset);
        }
        o
    }

    #[test]
    fn messages_of_a_partition_given_up_are_never_sent() {
        let (mut issuer, _completions) = AckIssuer::new();
        let held_messages = vec![RawMessage::at(0, 1), RawMessage::at(1, 1)];
        let held_offsets = offsets_of(&held_messages);
        let mut held = Some((
            SourceBatch {
                ack: issuer.issue(held_offsets.clone()),
                messages: held_messages,
                progress: None,
            },
            held_offsets,
            Instant::now(),
        ));
        let mut messages = vec![
            RawMessage::at(0, 2),
            RawMessage::at(1, 2),
            RawMessage::at(1, 3),
        ];
        let mut offsets = offsets_of(&messages);
        let given_up = Mutex::new(vec![("t".to_string(), 1)]);

        drop_given_up(&given_up, &mut messages, &mut offsets, &mut held);

        let partitions =
            |m: &[RawMessage]| m.iter().map(|m| m.origin.partition).collect::<Vec<_>>();
        assert_eq!(partitions(&messages), vec![0]);
        assert_eq!(offsets, offsets_of(&messages));
        let (batch, batch_offsets, _) = held.as_ref().unwrap();
        assert_eq!(partitions(&batch.messages), vec![0]);
        assert_eq!(*batch_offsets, offsets_of(&batch.messages));
        assert!(given_up.lock().unwrap().is_empty(), "taken once");

        // Read after the partition was assigned again: kept.
        messages.push(RawMessage::at(1, 0));
        drop_given_up(&given_up, &mut messages, &mut offsets, &mut held);
        assert_eq!(partitions(&messages), vec![0, 1]);
    }
}
