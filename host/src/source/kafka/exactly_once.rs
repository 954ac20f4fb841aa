//! Reading exactly once (`exactly_once = true`): the source's side of the transaction cycle.
//!
//! Every `transaction_interval_ms`, before partitions are given up, and at a clean stop,
//! the source commits the host's transaction (see [`crate::sink::kafka_transaction`]):
//!
//! 1. it sends no more batches and asks the pipeline to stop between two batches (a
//!    [`Barrier`]): the pipeline waits until every sink has accepted everything routed so
//!    far, snapshots the plugins' state of every partition that changed, and waits;
//! 2. it waits until every batch it sent is delivered (dead letters a sink routed on
//!    included), so the next offset of each partition covers exactly what was written;
//! 3. it puts those offsets and the snapshots in the transaction and commits it: the Kafka
//!    sinks' records, the offsets and the plugins' state become visible together;
//! 4. the pipeline goes on.
//!
//! The other sinks are not transactional: they have accepted everything by step 2, and a
//! replay after a crash writes the lake's objects and the search documents again under the
//! same keys. Every transaction cuts the lake's open segments.
//!
//! A transaction aborted in the cycle — typically a commit racing a rebalance, which
//! KIP-447 refuses with a stale group generation — sends every partition back to the last
//! committed transaction ([`SourceContext::rewind`]): the pipeline drops their state,
//! restores it from the state topic, and the consumer reads again from the committed
//! offsets. Any other failure stops the host (see [`TransactionError`]); so does a
//! partition lost to a session timeout, since the transaction already holds records of it.

use super::{KafkaSourceConfig, SourceContext};
use crate::sink::kafka_transaction::{KafkaTransaction, TransactionError};
use crate::source::{Barrier, PipelineInput, Resume, SourceError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Config checks for exactly once: `Err((key, message))`.
pub(super) fn check(config: &KafkaSourceConfig) -> Result<(), (String, String)> {
    if config.transaction_interval_ms < 100 {
        return Err((
            "transaction_interval_ms".into(),
            "must be at least 100 (every transaction waits for every sink)".into(),
        ));
    }
    if config.transaction_timeout_ms < 2 * config.transaction_interval_ms.max(1_000) {
        return Err((
            "transaction_timeout_ms".into(),
            "must be at least twice `transaction_interval_ms` and at least 2000: a transaction stays open for its interval and then waits for every sink".into(),
        ));
    }
    if config
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err((
            "transactional_id".into(),
            "must not be empty; leave it out for `<group_instance_id>`".into(),
        ));
    }
    Ok(())
}

impl KafkaSourceConfig {
    /// The transactional id this host's producer uses.
    pub fn transactional_id(&self) -> String {
        if let Some(id) = &self.transactional_id {
            return id.clone();
        }
        self.instance_id().unwrap_or_else(|| {
            format!(
                "{}-{}",
                super::super::kafka_group::hostname(),
                self.group_id
            )
        })
    }
}

/// The open transaction and when to commit it.
pub(super) struct Transactions {
    transaction: Arc<KafkaTransaction>,
    interval: Duration,
    timeout: Duration,
    last_commit: Mutex<Instant>,
}

impl Transactions {
    pub(super) fn new(config: &KafkaSourceConfig, transaction: Arc<KafkaTransaction>) -> Self {
        Transactions {
            transaction,
            interval: Duration::from_millis(config.transaction_interval_ms),
            timeout: Duration::from_millis(config.transaction_timeout_ms),
            last_commit: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn due(&self) -> bool {
        lock(&self.last_commit).elapsed() >= self.interval
    }

    /// The host stops after a failure: abort what is open rather than leave readers
    /// waiting for the broker's timeout.
    pub(super) fn abort(&self) {
        self.transaction.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceContext {
    /// Commit the open transaction (steps 1–4 above) at `point`: true when committed,
    /// false when it was aborted and every partition went back to the last commit.
    pub(super) fn commit_transaction(
        &self,
        consumer: &BaseConsumer<Self>,
        transactions: &Transactions,
        point: CommitPoint,
    ) -> Result<bool, CommitFailure> {
        // Half the broker's timeout for the sinks, the rest for the commit itself.
        let deadline = Instant::now() + transactions.timeout / 2;
        let resume = match point {
            CommitPoint::Stop => None,
            _ => self.stop_pipeline(consumer, deadline)?,
        };
        let result = self.commit_stopped(consumer, transactions, deadline);
        match (result, resume) {
            (Ok(()), resume) => {
                if let Some(resume) = resume {
                    let _ = resume.send(Resume::Committed);
                }
                Ok(true)
            }
            (Err(CommitFailure::Aborted(why)), Some(resume)) => {
                // Inside a rebalance the partitions given up go back too: their next owner
                // reads them from the last commit, so only the ones kept are read again here.
                let giving_up = match point {
                    CommitPoint::Rebalance { giving_up } => giving_up,
                    _ => &[],
                };
                self.rewind(consumer, transactions, &why, resume, giving_up)
                    .map_err(CommitFailure::Stop)?;
                Ok(false)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Steps 2 and 3, the pipeline stopped.
    fn commit_stopped(
        &self,
        consumer: &BaseConsumer<Self>,
        transactions: &Transactions,
        deadline: Instant,
    ) -> Result<(), CommitFailure> {
        self.wait_delivered(consumer, deadline)?;
        let (offsets, next) = self.next_offsets();
        if let Some(state) = &self.state {
            state
                .store_in(&transactions.transaction, &next)
                .map_err(CommitFailure::from)?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            SourceError::Kafka("the consumer has no group metadata to commit with".into())
        })?;
        transactions
            .transaction
            .commit(&offsets, &group)
            .map_err(CommitFailure::from)?;
        *lock(&transactions.last_commit) = Instant::now();
        lock(&self.stats.transaction_commits).extend(next);
        tracing::debug!(partitions = offsets.count(), "transaction committed");
        Ok(())
    }

    /// Step 1: the pipeline stopped between two batches, with every sink's input accepted
    /// and the state snapshotted; it goes on once the returned sender is dropped. `None`
    /// when the pipeline has ended.
    fn stop_pipeline(
        &self,
        consumer: &BaseConsumer<Self>,
        deadline: Instant,
    ) -> Result<Option<SyncSender<Resume>>, SourceError> {
        let (reached_tx, reached) = std::sync::mpsc::sync_channel(1);
        let (resume, resume_rx) = std::sync::mpsc::sync_channel(1);
        let mut input = PipelineInput::Barrier(Barrier {
            reached: reached_tx,
            resume: resume_rx,
        });
        loop {
            match self.pipeline.try_send(input) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    input = back;
                    self.waited(consumer, deadline)?;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return Ok(None),
            }
        }
        loop {
            match reached.recv_timeout(Duration::from_millis(5)) {
                Ok(()) => return Ok(Some(resume)),
                Err(RecvTimeoutError::Timeout) => self.waited(consumer, deadline)?,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Step 2: every batch sent is delivered.
    fn wait_delivered(
        &self,
        consumer: &BaseConsumer<Self>,
        deadline: Instant,
    ) -> Result<(), SourceError> {
        loop {
            if !self.pump(consumer) {
                return Err(SourceError::BatchFailed);
            }
            if lock(&self.tracker).total_in_flight() == 0 {
                return Ok(());
            }
            self.waited(consumer, deadline)?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Apply what completed meanwhile; an error once `deadline` has passed, or once the
    /// host's stop has drained as long as it may (the shutdown's bound starts here then).
    fn waited(&self, consumer: &BaseConsumer<Self>, deadline: Instant) -> Result<(), SourceError> {
        if !self.pump(consumer) {
            return Err(SourceError::BatchFailed);
        }
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (drain, bound) = &self.shutdown;
            if Instant::now() >= *bound.get_or_init(|| Instant::now() + *drain) {
                return Err(SourceError::Kafka(
                    "asked to stop while a sink had not accepted the open transaction's records within `pipeline.drain_timeout_ms`; the transaction is aborted and the next start replays it".into(),
                ));
            }
        }
        if Instant::now() < deadline {
            return Ok(());
        }
        Err(SourceError::Kafka(
            "the sinks did not accept the open transaction's records within half of `source.transaction_timeout_ms`; the host stops and its replacement starts from the last committed transaction. Check the sinks' errors above, or raise the timeout".into(),
        ))
    }

    /// Each partition's next offset to read, as stored: as a list for the transaction,
    /// and as pairs for the snapshots it covers.
    #[allow(clippy::type_complexity)]
    fn next_offsets(&self) -> (TopicPartitionList, Vec<((String, i32), i64)>) {
        let stored = lock(&self.stored);
        let mut tpl = TopicPartitionList::with_capacity(stored.len());
        let mut next = Vec::with_capacity(stored.len());
        for ((topic, partition), offset) in stored.iter() {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            next.push(((topic.clone(), *partition), *offset));
        }
        (tpl, next)
    }
}

/// Where a transaction is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitPoint<'a> {
    /// Every `transaction_interval_ms`, from the poll loop: an aborted transaction goes
    /// back to the last commit and the host goes on.
    Interval,
    /// Before `giving_up` is let go, inside the rebalance. A commit there races the group
    /// moving to its next generation, and the broker may refuse it as stale: the
    /// transaction is aborted, `giving_up` is left to its next owner at the last commit,
    /// and the partitions kept go back to it here.
    Rebalance { giving_up: &'a [(String, i32)] },
    /// At a clean stop, the pipeline ended.
    Stop,
}

/// Why a transaction was not committed.
#[derive(Debug)]
pub(super) enum CommitFailure {
    /// It was aborted: go back to the last committed transaction ([`SourceContext::rewind`]).
    Aborted(String),
    /// The host must stop.
    Stop(SourceError),
}

impl From<SourceError> for CommitFailure {
    fn from(e: SourceError) -> Self {
        CommitFailure::Stop(e)
    }
}

impl From<TransactionError> for CommitFailure {
    fn from(e: TransactionError) -> Self {
        match e {
            TransactionError::Aborted { .. } => CommitFailure::Aborted(e.to_string()),
            other => CommitFailure::Stop(SourceError::Kafka(other.to_string())),
        }
    }
}

impl CommitFailure {
    /// Where going back is not possible (a stop in progress, or going back failed): stop.
    pub(super) fn stop(self) -> SourceError {
        match self {
            CommitFailure::Aborted(why) => SourceError::Kafka(format!(
                "{why}. The host stops so that it starts again from the last committed transaction"
            )),
            CommitFailure::Stop(e) => e,
        }
    }
}

impl SourceContext {
    /// Reading exactly once, note where the group stands on `assigned` for `/metrics`
    /// (the transactions' commits are noted as they happen); forget what was given up.
    pub(super) fn note_assignment(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) {
        let mut known = lock(&self.stats.transaction_commits);
        let owned = consumer.assignment().unwrap_or_default();
        known.retain(|(t, p), _| owned.find_partition(t, *p).is_some());
        let Ok(committed) = consumer.committed_offsets(assigned.clone(), Duration::from_secs(10))
        else {
            return;
        };
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                known.insert((e.topic().to_owned(), e.partition()), o);
            }
        }
    }

    /// After an aborted transaction: its records are invisible and its offsets were not
    /// committed, while the plugins' state of every partition went past the last commit.
    /// Treat every assigned partition as assigned afresh: the pipeline drops their state
    /// (and the sinks what they hold of them), the stored state is restored, and the
    /// consumer reads again from each partition's committed offset. Partitions in
    /// `giving_up` are only dropped: the rebalance hands them to their next owner.
    fn rewind(
        &self,
        consumer: &BaseConsumer<Self>,
        transactions: &Transactions,
        why: &str,
        pipeline: SyncSender<Resume>,
        giving_up: &[(String, i32)],
    ) -> Result<(), SourceError> {
        let assigned = consumer
            .assignment()
            .map_err(|e| SourceError::Kafka(format!("reading the assignment to go back: {e}")))?;
        let parts: Vec<(String, i32)> = (assigned.elements().iter())
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let kept: Vec<(String, i32)> = (parts.iter())
            .filter(|p| !giving_up.contains(p))
            .cloned()
            .collect();
        match giving_up.is_empty() {
            true => {
                tracing::warn!(reason = why, partitions = ?parts, "the transaction was aborted; every partition goes back to the last committed transaction")
            }
            false => {
                tracing::warn!(reason = why, partitions = ?parts, giving_up = ?giving_up, "the transaction was aborted while partitions were being given up; they go to their next owner, and every partition kept goes back to the last committed transaction")
            }
        }
        // Before the pipeline goes on: nothing it emits may be written outside one.
        transactions
            .transaction
            .begin()
            .map_err(|e| SourceError::Kafka(e.to_string()))?;
        *lock(&transactions.last_commit) = Instant::now();
        self.forget(&parts);
        if let Some(state) = &self.state {
            state.exchange.forget(&parts);
        }
        let _ = pipeline.send(Resume::Rewind(parts));
        if kept.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::with_capacity(kept.len());
        for (topic, partition) in &kept {
            assignment.add_partition(topic, *partition);
        }
        let mut resume = assignment.clone();
        self.restore_state(consumer, &mut resume);
        let committed = consumer
            .committed_offsets(assignment, Duration::from_secs(30))
            .map_err(|e| {
                SourceError::Kafka(format!("reading the committed offsets to go back: {e}"))
            })?;
        for (topic, partition) in &kept {
            let restored = resume.find_partition(topic, *partition).map(|e| e.offset());
            let committed = committed
                .find_partition(topic, *partition)
                .map(|e| e.offset());
            let at = match (restored, committed) {
                (Some(Offset::Offset(o)), _) | (_, Some(Offset::Offset(o))) => Offset::Offset(o),
                _ => self.start_from,
            };
            consumer
                .seek(topic, *partition, at, Duration::from_secs(30))
                .map_err(|e| {
                    SourceError::Kafka(format!("going back on {topic}/{partition}: {e}"))
                })?;
        }
        lock(&self.tracker).assign(kept);
        Ok(())
    }
}
