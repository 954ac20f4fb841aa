//! Sinks: where routed events go.
//!
//! Each sink runs as its own task behind a bounded channel. The pipeline blocks when a
//! sink's channel is full, which in turn fills the source's channel and pauses the Kafka
//! consumer: backpressure instead of unbounded buffers.
//!
//! A sink's contract is the [`crate::ack`] one: acknowledge a [`SinkBatch`] only once every
//! event in it is durably written — or handed to the dead-letter route through the
//! [`Router`] with a clone of the batch's handle. Sinks never dead-letter events of the
//! `dlq` route itself; a dead letter that cannot be written fails the batch. A sink that
//! takes `dlq` as well gets its own dead letters back from the router to write at once
//! (never through its own channel, which it is not reading while it settles a batch).
//!
//! To add a sink: a folder `sink/<name>/` with its config struct (`deny_unknown_fields`, a
//! `routes` list) implementing [`SinkKind`], and one line in the [`registry!`] below. A sink
//! that writes each batch as it comes brings a [`driver::Protocol`] and lets the
//! [`driver::Driver`] run it (see `kafka.rs`); one that buffers runs its own loop under the
//! same contract (see `s3/`). `docs/architecture.md` walks through it.

pub mod driver;
pub mod elasticsearch;
pub mod file;
pub mod kafka;
mod kafka_produce;
pub mod kafka_transaction;
pub mod retry;
pub mod s3;
pub mod sns;

pub use retry::backoff;

use crate::ack::AckHandle;
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::route::RouteName;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A kind of sink, implemented by its config struct: what `[sinks.<name>] type = "…"`
/// builds.
pub trait SinkKind: Send + Sync {
    /// The routes this sink takes (its `routes` key).
    fn routes(&self) -> &[RouteName];

    /// Checks that need no network: `Err((key, message))`.
    fn check(&self) -> Result<(), (String, String)>;

    /// Whether it writes log records from the packed batch, read in place, rather than
    /// from owned records.
    fn reads_packed(&self) -> bool {
        false
    }

    /// Checks against the destination that write nothing (`sluice validate`).
    fn preflight<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// Start the sink's task. Fails with a clear error when the destination is unusable
    /// (missing credentials, bucket, topic…).
    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_>;
}

/// A sink's input channel.
pub type SinkInputs = mpsc::Receiver<SinkInput>;

/// A sink starting: its task, or why it cannot start.
pub type Starting<'a> = BoxFuture<'a, Result<tokio::task::JoinHandle<()>, SinkError>>;

crate::registry::registry! {
    /// One sink's configuration, selected by `type`.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    SinkConfig: SinkKind {
        Kafka(kafka::KafkaSinkConfig),
        File(file::FileSinkConfig),
        S3(s3::S3SinkConfig),
        Elasticsearch(elasticsearch::ElasticsearchSinkConfig),
        Sns(sns::SnsSinkConfig),
    }
}

impl SinkConfig {
    /// The routes this sink takes.
    pub fn routes(&self) -> &[RouteName] {
        self.kind().routes()
    }

    /// Checks that need no network: `Err((key, message))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.routes().is_empty() {
            return Err((
                "routes".into(),
                "must name at least one route (e.g. [\"cleaned\"])".into(),
            ));
        }
        self.kind().check()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{sink}`: {message}")]
    Start { sink: String, message: String },
}

/// What a sink task receives.
#[derive(Debug)]
pub enum SinkInput {
    Batch(SinkBatch),
    /// Write out anything buffered, then answer.
    Flush(oneshot::Sender<()>),
    /// The source gave these partitions up (a rebalance): every batch of them routed
    /// before this message has been sent, none after it until they are assigned again. A
    /// sink holding their records writes them out now, while the source waits to commit,
    /// and must never write them later: the partitions' new owner replays from the last
    /// commit and writes the same objects (see `sink::s3`).
    Revoked(Arc<[(String, i32)]>),
    /// The source lost these partitions (its group session timed out): another member may
    /// own them and have written their records already. Like [`SinkInput::Revoked`], every
    /// batch of them routed before has been sent; but a sink drops what it holds of them at
    /// once, without writing it, and never writes it later. Nothing of them is committed.
    Lost(Arc<[(String, i32)]>),
}

/// Counters every sink keeps (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events handed to the destination.
    pub sent: AtomicU64,
    /// Events the destination durably accepted.
    pub acknowledged: AtomicU64,
    /// Retried attempts (requests or items).
    pub retried: AtomicU64,
    /// Events this sink dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Bytes buffered or in flight right now.
    pub in_flight_bytes: AtomicU64,
}

impl SinkStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What sinks may rely on about their input, from the source.
/// The default is stdin's: no durable offsets, no drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputTraits {
    /// A replay gives the same records at the same offsets (a Kafka log), so a sink may
    /// skip by offset what it wrote before. Not so for stdin or a backfill.
    pub durable_offsets: bool,
    /// How long the source waits for the sinks to write out a revoked partition.
    pub rebalance_drain: Duration,
}

/// What every sink gets besides its config and input.
#[derive(Clone)]
pub struct SinkContext {
    /// The sink's name (the `[sinks.<name>]` key), for logs and errors.
    pub name: String,
    /// For dead letters.
    pub router: Arc<Router>,
    pub stats: Arc<SinkStats>,
    pub input: InputTraits,
    /// The host's transactional Kafka producer, when the source reads exactly once: every
    /// Kafka sink writes through it (see [`kafka_transaction`]).
    pub transaction: Option<Arc<kafka_transaction::KafkaTransaction>>,
}

impl SinkContext {
    pub fn new(name: &str, router: Arc<Router>) -> SinkContext {
        SinkContext {
            name: name.to_owned(),
            router,
            stats: Arc::default(),
            input: InputTraits::default(),
            transaction: None,
        }
    }
}

/// A running sink.
pub struct SinkHandle {
    pub name: String,
    pub routes: Vec<RouteName>,
    /// Whether the sink writes log records from the packed batch read in place (the Kafka
    /// sink), rather than from owned records.
    pub reads_packed: bool,
    pub tx: mpsc::Sender<SinkInput>,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: Arc<SinkStats>,
}

/// Start the sink `name` taking `routes` (its configured ones unless a command narrows
/// them), behind a channel of `capacity` batches.
pub async fn start(
    name: &str,
    config: &SinkConfig,
    routes: Vec<RouteName>,
    router: Arc<Router>,
    input: InputTraits,
    capacity: usize,
    transaction: Option<Arc<kafka_transaction::KafkaTransaction>>,
) -> Result<SinkHandle, SinkError> {
    let (tx, rx) = mpsc::channel(capacity);
    let mut ctx = SinkContext::new(name, router);
    ctx.input = input;
    ctx.transaction = transaction;
    let stats = ctx.stats.clone();
    let kind = config.kind();
    let task = kind.start(ctx, rx).await?;
    Ok(SinkHandle {
        name: name.to_owned(),
        routes,
        reads_packed: kind.reads_packed(),
        tx,
        task,
        stats,
    })
}

/// Per route, the (sink name, channel) of every sink that takes it.
type RouteTable = HashMap<RouteName, Vec<(String, mpsc::Sender<SinkInput>)>>;

/// Route name → the channels of the sinks that take it. Shared by the pipeline and by
/// sinks (for dead letters); filled once every sink has started.
#[derive(Default)]
pub struct Router {
    routes: OnceLock<RouteTable>,
    /// Routes whose every sink reads packed log records.
    packed_routes: OnceLock<HashSet<RouteName>>,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    /// Install the sinks. Called once.
    pub fn install(&self, sinks: &[SinkHandle]) {
        let mut routes = RouteTable::new();
        let mut packed: HashSet<RouteName> = sinks.iter().flat_map(|s| s.routes.clone()).collect();
        for sink in sinks {
            for route in &sink.routes {
                routes
                    .entry(route.clone())
                    .or_default()
                    .push((sink.name.clone(), sink.tx.clone()));
                if !sink.reads_packed {
                    packed.remove(route);
                }
            }
        }
        let mixed: Vec<&str> = sinks
            .iter()
            .filter(|s| s.routes.len() > 1 && s.routes.contains(&RouteName::Dlq))
            .map(|s| s.name.as_str())
            .collect();
        if mixed.len() > 1 {
            // Each writes its own dead letters, but sends them to the others through their
            // channels: two such sinks, both full, could each wait for the other.
            tracing::warn!(sinks = ?mixed,
                "more than one sink takes `dlq` along with other routes; under load they can wait on each other. Let one of them, or sinks taking only `dlq`, take it.");
        }
        let _ = self.routes.set(routes);
        let _ = self.packed_routes.set(packed);
    }

    /// Whether every sink taking `route` reads log records packed. When one does not, the
    /// pipeline hands the route owned records instead, decoded once for all of them: a
    /// batch would otherwise be decoded by each sink that reads records, and held in both
    /// forms while they work on it.
    pub fn reads_packed(&self, route: &RouteName) -> bool {
        self.packed_routes
            .get()
            .is_some_and(|routes| routes.contains(route))
    }

    /// Whether some sink takes `route`.
    pub fn takes(&self, route: &RouteName) -> bool {
        self.routes
            .get()
            .is_some_and(|r| r.get(route).is_some_and(|s| !s.is_empty()))
    }

    fn targets(&self, route: &RouteName) -> &[(String, mpsc::Sender<SinkInput>)] {
        self.routes
            .get()
            .and_then(|r| r.get(route))
            .map_or(&[], Vec::as_slice)
    }

    /// Send `events` on `route` to every sink that takes it, each with a clone of `ack`.
    /// Waits while a sink is full. Returns false if no sink takes the route.
    pub async fn send(&self, route: &RouteName, events: Events, ack: &AckHandle) -> bool {
        let targets = self.targets(route);
        if targets.is_empty() {
            return false;
        }
        let events = Arc::new(events);
        for (_, tx) in targets {
            let batch = SinkBatch {
                route: route.clone(),
                events: events.clone(),
                ack: ack.clone(),
            };
            // A closed channel means the sink task ended; the batch's handle is dropped
            // unacknowledged, which fails the batch: nothing is silently lost.
            let _ = tx.send(SinkInput::Batch(batch)).await;
        }
        true
    }

    /// Blocking form of [`Router::send`], for the pipeline thread.
    pub fn send_blocking(&self, route: &RouteName, events: Events, ack: &AckHandle) -> bool {
        let targets = self.targets(route);
        if targets.is_empty() {
            return false;
        }
        let events = Arc::new(events);
        for (_, tx) in targets {
            let batch = SinkBatch {
                route: route.clone(),
                events: events.clone(),
                ack: ack.clone(),
            };
            let _ = tx.blocking_send(SinkInput::Batch(batch));
        }
        true
    }

    /// Dead-letter `letters` refused by the sink `from`, keeping `ack` pending until the
    /// dead-letter sinks have written them.
    ///
    /// Every other sink taking `dlq` gets them through its channel. When `from` takes `dlq`
    /// itself they come back as [`DeadLettered::Own`], for it to write at once as part of
    /// the batch: sent into its own channel they would wait behind input the sink is not
    /// reading while it settles this batch — a deadlock once the channel is full.
    pub async fn dead_letter(
        &self,
        from: &str,
        mut letters: Vec<DeadLetter>,
        ack: &AckHandle,
    ) -> DeadLettered {
        if letters.is_empty() {
            return DeadLettered::Sent;
        }
        DeadLetter::redact_reasons(&mut letters);
        let targets = self.targets(&RouteName::Dlq);
        let own = targets.iter().any(|(name, _)| name == from);
        let others = targets.iter().filter(|(name, _)| name != from).count();
        if others == 0 {
            return if own {
                DeadLettered::Own(letters)
            } else {
                DeadLettered::Nowhere
            };
        }
        // A copy only when the caller keeps one too; dead letters are the rare path.
        let (shared, kept) = if own {
            (
                Arc::new(Events::DeadLetters(letters.clone())),
                Some(letters),
            )
        } else {
            (Arc::new(Events::DeadLetters(letters)), None)
        };
        for (_, tx) in targets.iter().filter(|(name, _)| name != from) {
            let batch = SinkBatch {
                route: RouteName::Dlq,
                events: shared.clone(),
                ack: ack.clone(),
            };
            // A closed channel drops the handle unacknowledged: the batch fails.
            let _ = tx.send(SinkInput::Batch(batch)).await;
        }
        kept.map_or(DeadLettered::Sent, DeadLettered::Own)
    }

    /// Tell every sink that the source gave `partitions` up, after what was routed before.
    pub fn revoked_blocking(&self, partitions: &[(String, i32)]) {
        let partitions: Arc<[(String, i32)]> = partitions.into();
        for (_, tx) in self.sinks() {
            let _ = tx.blocking_send(SinkInput::Revoked(partitions.clone()));
        }
    }

    /// Tell every sink that the source lost `partitions`, after what was routed before.
    pub fn lost_blocking(&self, partitions: &[(String, i32)]) {
        let partitions: Arc<[(String, i32)]> = partitions.into();
        for (_, tx) in self.sinks() {
            let _ = tx.blocking_send(SinkInput::Lost(partitions.clone()));
        }
    }

    /// Every sink's channel, once.
    fn sinks(&self) -> Vec<(&String, &mpsc::Sender<SinkInput>)> {
        let mut seen = HashSet::new();
        self.routes
            .get()
            .into_iter()
            .flat_map(|routes| routes.values().flatten())
            .filter(|(name, _)| seen.insert(name.clone()))
            .map(|(name, tx)| (name, tx))
            .collect()
    }

    /// Ask every sink to write out what it buffers, and wait until all have.
    pub fn flush_all_blocking(&self) {
        let mut waits = Vec::new();
        for (_, tx) in self.sinks() {
            let (done, wait) = oneshot::channel();
            if tx.blocking_send(SinkInput::Flush(done)).is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = wait.blocking_recv();
        }
    }
}

/// What became of dead letters handed to [`Router::dead_letter`].
#[must_use = "dead letters the caller must write, or a batch that must fail"]
#[derive(Debug)]
pub enum DeadLettered {
    /// Every sink taking `dlq` has them, each with a clone of the batch's handle.
    Sent,
    /// The calling sink takes `dlq` itself: any other `dlq` sink has them; these the caller
    /// writes now, before acknowledging the batch (and fails the batch if it cannot).
    Own(Vec<DeadLetter>),
    /// No sink takes `dlq`: nothing holds them, so the batch must fail.
    Nowhere,
}

impl DeadLettered {
    /// For sinks that do not write dead letters themselves: whether the batch may be
    /// acknowledged. [`DeadLettered::Own`] fails the batch (it is replayed after a restart).
    pub fn sent(self, sink: &str) -> bool {
        match self {
            DeadLettered::Sent => true,
            DeadLettered::Own(letters) => {
                tracing::error!(
                    sink,
                    count = letters.len(),
                    "this sink takes `dlq` but cannot write its own dead letters; the batch fails and will be replayed. Send `dlq` to another sink."
                );
                false
            }
            DeadLettered::Nowhere => {
                tracing::error!(
                    sink,
                    "no sink takes the `dlq` route; the batch fails and will be replayed"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(name: &str, routes: &[&str], reads_packed: bool) -> SinkHandle {
        handle_with_rx(name, routes, reads_packed).0
    }

    fn handle_with_rx(
        name: &str,
        routes: &[&str],
        reads_packed: bool,
    ) -> (SinkHandle, mpsc::Receiver<SinkInput>) {
        let (tx, rx) = mpsc::channel(1);
        let handle = SinkHandle {
            name: name.into(),
            routes: routes.iter().map(|r| RouteName::from(*r)).collect(),
            reads_packed,
            tx,
            task: tokio::spawn(async {}),
            stats: Arc::default(),
        };
        (handle, rx)
    }

    /// A dead letter of offset `offset` of topic `t`.
    pub(super) fn letter(offset: i64) -> DeadLetter {
        DeadLetter {
            origin: crate::Origin {
                topic: "t".into(),
                partition: 0,
                offset,
            },
            reason: "refused".into(),
            payload: b"{}".to_vec(),
            timestamp: 0,
        }
    }

    #[tokio::test]
    async fn a_sink_taking_dlq_gets_its_own_dead_letters_back_not_through_its_channel() {
        let (search, mut search_rx) = handle_with_rx("search", &["cleaned", "dlq"], false);
        let (archive, mut archive_rx) = handle_with_rx("archive", &["dlq"], false);
        let router = Router::new();
        router.install(&[search, archive]);
        let (mut issuer, _done) = crate::ack::AckIssuer::new();
        let ack = issuer.issue(Default::default());
        // The sink's own channel is full, as when it is busy with this very batch.
        let (_, own_tx) = router
            .targets(&RouteName::Dlq)
            .iter()
            .find(|(name, _)| name == "search")
            .unwrap();
        own_tx
            .try_send(SinkInput::Flush(oneshot::channel().0))
            .unwrap();

        let out = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            router.dead_letter("search", vec![letter(1), letter(2)], &ack),
        )
        .await
        .expect("dead_letter waited on the caller's own full channel");
        let DeadLettered::Own(own) = out else {
            panic!("{out:?}")
        };
        assert_eq!(own.len(), 2);
        let Some(SinkInput::Batch(other)) = archive_rx.recv().await else {
            panic!("the other dlq sink got nothing")
        };
        assert_eq!(other.route, RouteName::Dlq);
        assert_eq!(other.events.len(), 2);
        assert!(matches!(search_rx.try_recv(), Ok(SinkInput::Flush(_))));
        assert!(search_rx.try_recv().is_err(), "sent into its own channel");

        // A sink not taking dlq: everything goes to the dlq sinks.
        let out = router.dead_letter("kafka", vec![letter(3)], &ack).await;
        assert!(matches!(out, DeadLettered::Sent));
        assert!(matches!(search_rx.recv().await, Some(SinkInput::Batch(_))));
        assert!(matches!(archive_rx.recv().await, Some(SinkInput::Batch(_))));
        ack.ack();
    }

    #[tokio::test]
    async fn a_route_is_read_packed_only_when_every_sink_on_it_reads_packed() {
        let router = Router::new();
        router.install(&[
            handle("kafka", &["cleaned", "metrics"], true),
            handle("lake", &["metrics"], false),
            handle("dlq", &["dlq"], true),
        ]);
        assert!(router.reads_packed(&RouteName::Cleaned));
        assert!(!router.reads_packed(&RouteName::Metrics));
        assert!(router.reads_packed(&RouteName::Dlq));
        assert!(!router.reads_packed(&RouteName::Alerts), "no sink takes it");
    }
}
