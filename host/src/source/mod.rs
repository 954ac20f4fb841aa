//! Sources: where messages come from. A source runs on its own thread, cuts messages into
//! batches, issues each an [`AckHandle`](crate::ack::AckHandle), and commits positions as
//! batches complete (see [`crate::ack`]).

pub mod kafka;
pub mod kafka_group;
pub mod kafka_state;
pub mod s3;
pub mod stdin;

use crate::ack::AckHandle;
use crate::codec::InvalidJson;
use crate::event::RawMessage;
use crate::sink::InputTraits;
use crate::sink::kafka_transaction::{KafkaTransaction, TransactionSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shared decoding keys (`batch_max_records`, `batch_max_wait_ms`, `max_message_bytes`,
/// `invalid_json`) of a source config, which every source config names alike.
macro_rules! decoding_keys {
    ($config:expr) => {
        $crate::source::DecodingConfig::new(
            $config.batch_max_records,
            $config.batch_max_wait_ms,
            $config.max_message_bytes,
            $config.invalid_json,
        )
    };
}
pub(crate) use decoding_keys;

/// A kind of source, implemented by its config struct: what `[source] type = "…"` runs.
pub trait SourceKind: Send + Sync {
    /// Checks that need no network: `Err((key, message))`.
    fn check(&self) -> Result<(), (String, String)>;

    /// Its batching and decoding settings.
    fn decoding(&self) -> DecodingConfig;

    /// What the sinks may rely on about its input.
    fn input_traits(&self) -> InputTraits {
        InputTraits::default()
    }

    /// One line for `sluice validate`: what it reads.
    fn describe(&self) -> String;

    /// How often the pipeline snapshots the plugins' state of each partition, when this
    /// source stores it (see [`crate::state`]); `None` when it does not.
    fn snapshot_interval(&self) -> Option<Duration> {
        None
    }

    /// The transactional producer this source commits through, when it reads exactly once
    /// (see [`crate::sink::kafka_transaction`]); `sink_options` are the options every Kafka
    /// sink shares.
    fn transaction_settings(
        &self,
        _sink_options: &BTreeMap<String, String>,
    ) -> Option<TransactionSettings> {
        None
    }

    /// Read on the calling (source) thread until the input ends or `links.stop` is set,
    /// sending batches to the pipeline and committing what completes.
    fn run(&self, links: SourceLinks) -> Result<(), SourceError>;
}

/// What a running source is connected to.
pub struct SourceLinks {
    /// Batches and progress for the pipeline (bounded: a full channel is backpressure).
    pub pipeline: SyncSender<PipelineInput>,
    /// Set when the host is asked to stop.
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<SourceStats>,
    /// How long the shutdown may drain, and where the source records when it began to
    /// stop (the host's whole shutdown is bounded from then on).
    pub shutdown: (Duration, Arc<OnceLock<Instant>>),
    /// Where the pipeline leaves the plugins' state for the source to store, when the
    /// source stores it and a plugin keeps any.
    pub state: Option<StateLink>,
    /// The host's transactional producer, when the source reads exactly once.
    pub transaction: Option<Arc<KafkaTransaction>>,
}

/// The pipeline's snapshots, and the largest one (every stage's state of a partition).
#[derive(Debug, Clone)]
pub struct StateLink {
    pub exchange: Arc<crate::state::SnapshotExchange>,
    pub max_snapshot_bytes: usize,
}

crate::registry::registry! {
    /// The source's configuration, selected by `type`.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    SourceConfig: SourceKind {
        Kafka(kafka::KafkaSourceConfig),
        Stdin(stdin::StdinSourceConfig),
        S3(s3::S3SourceConfig),
    }
}

/// The configured source runs as its kind.
impl SourceKind for SourceConfig {
    fn check(&self) -> Result<(), (String, String)> {
        SourceConfig::check(self)
    }

    fn decoding(&self) -> DecodingConfig {
        self.kind().decoding()
    }

    fn input_traits(&self) -> InputTraits {
        self.kind().input_traits()
    }

    fn describe(&self) -> String {
        self.kind().describe()
    }

    fn snapshot_interval(&self) -> Option<Duration> {
        self.kind().snapshot_interval()
    }

    fn transaction_settings(
        &self,
        sink_options: &BTreeMap<String, String>,
    ) -> Option<TransactionSettings> {
        self.kind().transaction_settings(sink_options)
    }

    fn run(&self, links: SourceLinks) -> Result<(), SourceError> {
        self.kind().run(links)
    }
}

impl SourceConfig {
    /// Checks that need no network: `Err((key, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let common = self.decoding();
        if common.batch_max_records == 0 {
            return Err(("batch_max_records".into(), "must be at least 1".into()));
        }
        if common.max_message_bytes == 0 {
            return Err(("max_message_bytes".into(), "must be at least 1".into()));
        }
        self.kind().check()
    }
}

/// Batching and decoding settings every source shares (each source's config carries them
/// as its own keys).
#[derive(Debug, Clone)]
pub struct DecodingConfig {
    /// Most messages in one batch (one call into each plugin).
    pub batch_max_records: usize,
    /// Longest a partial batch waits for more messages.
    pub batch_max_wait_ms: u64,
    /// Larger messages are dead-lettered.
    pub max_message_bytes: usize,
    /// What to do with a message that starts with `{` but is not valid JSON.
    pub invalid_json: InvalidJson,
}

impl DecodingConfig {
    pub fn new(
        batch_max_records: usize,
        batch_max_wait_ms: u64,
        max_message_bytes: usize,
        invalid_json: InvalidJson,
    ) -> DecodingConfig {
        DecodingConfig {
            batch_max_records,
            batch_max_wait_ms,
            max_message_bytes,
            invalid_json,
        }
    }
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig {
            batch_max_records: 1_000,
            batch_max_wait_ms: 50,
            max_message_bytes: 1 << 20,
            invalid_json: InvalidJson::Dlq,
        }
    }
}

/// A batch of messages on its way to the pipeline.
#[derive(Debug)]
pub struct SourceBatch {
    pub messages: Vec<RawMessage>,
    pub ack: AckHandle,
    /// The source's partitions as they stand after this batch, when that changed since the
    /// last report (see [`PartitionProgress`]). Sources that do not track partitions
    /// (stdin, a lake backfill) never report; each partition they deliver counts as caught
    /// up.
    pub progress: Option<Vec<PartitionProgress>>,
}

/// One partition the source owns, and whether it has read everything the partition held
/// when it last looked. Event time may move on without a partition only while it is caught
/// up and the pipeline waits for input: a partition that is merely behind (its messages
/// still in the log, the consumer paused by a slow sink, its fetch not yet answered) holds
/// event time back, so its records are not counted late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    pub caught_up: bool,
}

/// What the pipeline receives from the source.
#[derive(Debug)]
pub enum PipelineInput {
    Batch(SourceBatch),
    /// The partitions changed (assigned, revoked, caught up) with no batch to carry the news.
    Progress(Vec<PartitionProgress>),
    /// The source lost these partitions (its group session timed out), after every batch
    /// of them already sent: sinks drop what they hold of them (see `SinkInput::Lost`).
    Lost(Vec<(String, i32)>),
    /// A partition's stored plugin state, ahead of its records: the partition resumes at
    /// the snapshot's offset.
    Restore(crate::state::Snapshot),
    /// Write out what the sinks buffer now, after everything sent before (a source whose
    /// unit of work is larger than a batch — the lake's objects — cuts the lake's objects
    /// where its own end). The last batch's handle is released first.
    Flush,
    /// Stop between two batches so the source can commit a transaction (exactly once).
    Barrier(Barrier),
    /// No more input. `complete` is true when the input ended in order — the end of a
    /// file, or a Kafka source stopping, which commits what it read — so the plugins are
    /// told input has ended and open windows are emitted; false when what was read may be
    /// read again (a failure, or a source that leaves unfinished work to be redelivered).
    End {
        complete: bool,
    },
}

/// A source reading exactly once commits its transaction at a point where every output
/// routed so far is delivered and the plugins' state reflects exactly what was read: the
/// pipeline releases its last batch, waits until every sink has accepted what it routed,
/// snapshots the state of every partition that changed, says so on `reached`, and waits
/// until `resume` says how to go on (or is dropped), so that no tick closes a window
/// between the snapshot and the commit.
#[derive(Debug)]
pub struct Barrier {
    pub reached: SyncSender<()>,
    pub resume: Receiver<Resume>,
}

/// How the pipeline goes on after a [`Barrier`].
#[derive(Debug)]
pub enum Resume {
    /// The transaction is committed.
    Committed,
    /// The transaction was aborted: drop these partitions as if lost (their state went past
    /// the last commit); the source restores them as from a new assignment.
    Rewind(Vec<(String, i32)>),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka source: {0}")]
    Kafka(String),
    #[error("stdin source: {0}")]
    Stdin(String),
    /// Any other source kind's failure, for the kind to describe without a variant here.
    #[error("{kind} source: {message}")]
    Failed { kind: &'static str, message: String },
    #[error(
        "a batch was not delivered by every sink (see the errors above); stopping without committing it so it is replayed on restart"
    )]
    BatchFailed,
}

/// What a source exports on `/metrics`.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Messages read.
    pub consumed: AtomicU64,
    /// Per (topic, partition), how many messages the group is behind the end of the log.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Per (topic, partition) assigned here, the group's committed offset.
    pub committed: Mutex<BTreeMap<(String, i32), i64>>,
    /// Reading exactly once: per partition, the offset the group had committed when it
    /// was assigned, then each transaction's (the consumer's statistics see neither).
    pub transaction_commits: Mutex<BTreeMap<(String, i32), i64>>,
}
