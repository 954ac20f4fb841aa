//! S3 data lake sink: one lake table per sink (`raw`, `cleaned` or `metrics`), written as
//! objects under `<prefix>/<table>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>`.
//!
//! - `config.rs`: the sink's keys and their checks.
//! - `segment.rs`: how a source partition's records are cut into objects (deterministic).
//! - `store.rs`: S3 access with start-up checks and retries without a deadline.
//! - `athena.rs`: the `CREATE EXTERNAL TABLE` statements for its table, and the
//!   registration of new partitions when partition projection is off.
//!
//! Batches are acknowledged only once every object holding their records is written (and
//! the partition's offset marker updated), so a crash replays exactly what is not in the
//! lake, and the replay rewrites the same keys: see `docs/lake.md` for the guarantee.
//!
//! Two hosts may hold records of one partition across a rebalance. So a segment is written
//! only after reading the partition's marker — dropping what another writer already put in
//! the lake — and the marker is replaced only if it is still the version read (a
//! conditional PUT), so it never moves backwards. On `Revoked` the partition's segment is
//! written within the source's drain timeout or abandoned: never written later. On `Lost`
//! (the source's group session timed out) it is dropped at once, never written.

pub mod athena;
mod config;
mod segment;
mod store;

pub use config::{AthenaConfig, Format, S3SinkConfig};

use super::{SinkContext, SinkError, SinkInput, SinkInputs, SinkKind, SinkStats, Starting};
use crate::event::SinkBatch;
use crate::health::{self, FailState};
use crate::lake::layout::{Partition, prefix_path};
use crate::lake::{ObjectName, Table, columns};
use crate::route::RouteName;
use athena::AthenaRunner;
use segment::{Item, Limits, Segment};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use store::{Expect, PutIfError, Store};
use tokio::sync::mpsc;

impl SinkKind for S3SinkConfig {
    fn routes(&self) -> &[RouteName] {
        &self.routes
    }

    fn check(&self) -> Result<(), (String, String)> {
        S3SinkConfig::check(self)
    }

    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_> {
        Box::pin(start(ctx, self, input))
    }
}

/// Start the sink. With a Kafka source (durable offsets) it keeps an offset marker per
/// partition and skips what a replay would write again; otherwise (stdin, a backfill) it
/// writes everything, relying on the same input giving the same keys.
pub async fn start(
    ctx: SinkContext,
    config: &S3SinkConfig,
    rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let sdk = store::sdk_config(config).await;
    let store = Store::connect(&ctx.name, config, &sdk, ctx.stats.clone()).await?;
    let table = config.table();
    let athena = (!config.athena.partition_projection).then(|| AthenaRunner::new(&sdk, config));
    let writer = Writer {
        name: ctx.name.clone(),
        table,
        prefix: prefix_path(&config.prefix),
        limits: Limits {
            max_records: config.max_records,
            max_bytes: config.max_bytes,
            max_span_ns: (config.max_event_time_span_s as i64).saturating_mul(1_000_000_000),
        },
        // Metrics records come from ticks, keyed by the first record of their window: not
        // in offset order, so an offset marker cannot tell what was written.
        markers: ctx.input.durable_offsets && table != Table::Metrics,
        config: config.clone(),
        store,
        athena,
        registered: HashSet::new(),
        open: BTreeMap::new(),
        written: HashMap::new(),
        stats: ctx.stats.clone(),
        drain_timeout: ctx.input.rebalance_drain,
    };
    let idle = Duration::from_millis(config.idle_flush_ms);
    Ok(tokio::spawn(writer.run(rx, idle)))
}

struct Writer {
    name: String,
    table: Table,
    prefix: String,
    limits: Limits,
    markers: bool,
    config: S3SinkConfig,
    store: Store,
    athena: Option<AthenaRunner>,
    /// Partitions registered with Athena by this process.
    registered: HashSet<Partition>,
    /// Per source partition, the records not yet written.
    open: BTreeMap<(String, i32), Segment>,
    /// Per source partition, the last offset the lake holds (from the marker).
    written: HashMap<(String, i32), i64>,
    stats: Arc<SinkStats>,
    /// How long the source waits for a revoked partition's batches: the time a revoked
    /// partition's segment has to be written.
    drain_timeout: Duration,
}

/// One object of a segment, encoded.
struct Object {
    key: String,
    partition: Partition,
    body: bytes::Bytes,
    content_type: &'static str,
    written: bool,
}

/// Why one attempt at writing a segment stopped.
enum Attempt {
    /// S3 failed; try again.
    Failed(String),
    /// The marker changed under us: another writer wrote the partition. Read it again.
    Moved,
    /// The records cannot be encoded: not transient.
    Encode(columns::EncodeError),
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<SinkInput>, idle: Duration) {
        let mut ticker = tokio::time::interval(
            (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    None => break,
                    Some(SinkInput::Batch(batch)) => self.accept(batch).await,
                    // Write the partitions' records now, so the source can commit them
                    // before their new owner starts from the last commit — or never.
                    Some(SinkInput::Revoked(partitions)) => self.write_revoked(&partitions).await,
                    // The new owner writes a lost partition's records again, but not the
                    // metric records of windows this host closed: without markers, write.
                    Some(SinkInput::Lost(partitions)) if !self.markers => {
                        self.write_revoked(&partitions).await
                    }
                    Some(SinkInput::Lost(partitions)) => self.drop_lost(&partitions),
                    Some(SinkInput::Flush(done)) => {
                        self.flush(|_| true).await;
                        let _ = done.send(());
                    }
                },
                _ = ticker.tick() => self.flush(|s| s.last_append.elapsed() >= idle).await,
            }
        }
        self.flush(|_| true).await;
    }

    /// Buffer a batch's events, writing every segment they complete.
    async fn accept(&mut self, batch: SinkBatch) {
        let SinkBatch { events, ack, .. } = batch;
        let mut complete = Vec::new();
        // The source partition of the record before: a batch's records come in runs of one
        // partition, so its name is copied once per run, not per record.
        let mut key: (String, i32) = (String::new(), -1);
        for index in 0..events.len() {
            let item = Item {
                events: &events,
                index,
            };
            let Some(facts @ (offset, time, size)) = item.facts() else {
                continue;
            };
            let origin = match (item.record(), item.raw()) {
                (Some(r), _) => r.origin(),
                (None, Some(m)) => &m.origin,
                (None, None) => continue,
            };
            if origin.partition != key.1 || origin.topic != key.0 {
                key = (origin.topic.clone(), origin.partition);
            }
            if self.markers {
                // The marker never moves back: at or below the last one read, the lake has it.
                if offset <= self.written.get(&key).copied().unwrap_or(-1) {
                    continue;
                }
                if !self.open.contains_key(&key) {
                    // A new segment: what did the lake get last (maybe from another host)?
                    let last = self.read_marker(&key).await;
                    self.written.insert(key.clone(), last);
                    if offset <= last {
                        continue;
                    }
                }
            }
            let table = self.table;
            let segment = match self.open.get_mut(&key) {
                Some(segment) => segment,
                None => self
                    .open
                    .entry(key.clone())
                    .or_insert_with(|| Segment::new(&key.0, key.1, table)),
            };
            if segment.must_cut_before(offset, time, size, &self.limits) {
                complete.push(std::mem::replace(
                    segment,
                    Segment::new(&key.0, key.1, table),
                ));
            }
            if let Err(e) = segment.push(&item, facts, &ack) {
                // Not transient: the batch fails (its handle dropped unacknowledged), so
                // the host stops and it is replayed, rather than acknowledged unwritten.
                tracing::error!(sink = %self.name, error = %e, "cannot buffer the record; its batch fails");
                return;
            }
        }
        // Each segment holds its own clone of the handle.
        ack.ack();
        for segment in complete {
            self.write(segment, None).await;
        }
        self.update_in_flight();
    }

    /// Write what the open segments hold of `partitions` within the drain timeout, or
    /// abandon it.
    async fn write_revoked(&mut self, partitions: &[(String, i32)]) {
        let deadline = Instant::now() + self.drain_timeout;
        self.flush_until(
            |s| {
                partitions
                    .iter()
                    .any(|(t, p)| *p == s.partition && *t == s.topic)
            },
            Some(deadline),
        )
        .await;
    }

    /// Drop a segment of a partition the source gave up, unwritten: nothing of the partition
    /// is committed from its batches, and the rest of them (partitions this host keeps) is
    /// not failed for it.
    fn give_up(&self, segment: Segment, why: &str) {
        tracing::warn!(
            sink = %self.name,
            topic = %segment.topic,
            partition = segment.partition,
            first_offset = segment.first_offset,
            records = segment.records,
            "{why}"
        );
        for ack in segment.acks {
            ack.give_up(&segment.topic, segment.partition);
        }
    }

    /// The source lost these partitions: their new owner writes what the open segments
    /// hold of them (from the last commit on). Drop the segments unwritten, giving their
    /// batches' share of the partitions up.
    fn drop_lost(&mut self, partitions: &[(String, i32)]) {
        for key in partitions {
            // What the lake holds is read again when a segment of it opens here next.
            self.written.remove(key);
            if let Some(segment) = self.open.remove(key) {
                self.give_up(
                    segment,
                    "partition lost: its open segment is dropped unwritten; the partition's new owner writes these records",
                );
            }
        }
        self.update_in_flight();
    }

    /// Write out the open segments `which` selects.
    async fn flush(&mut self, which: impl Fn(&Segment) -> bool) {
        self.flush_until(which, None).await;
    }

    /// Write out the open segments `which` selects; those not written by `deadline` are
    /// abandoned.
    async fn flush_until(&mut self, which: impl Fn(&Segment) -> bool, deadline: Option<Instant>) {
        let keys: Vec<(String, i32)> = self
            .open
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(segment) = self.open.remove(&key) {
                self.write(segment, deadline).await;
            }
        }
        self.update_in_flight();
    }

    /// Report what the open segments hold in memory: their objects' columns, not the
    /// records they were filled from (those are not kept).
    fn update_in_flight(&mut self) {
        let bytes: usize = self.open.values_mut().map(Segment::held_bytes).sum();
        self.stats
            .in_flight_bytes
            .store(bytes as u64, Ordering::Relaxed);
    }

    fn marker_key(&self, key: &(String, i32)) -> String {
        format!(
            "{}_sluice/offsets/{}/{}+{}.json",
            self.prefix, self.table, key.0, key.1
        )
    }

    async fn read_marker(&self, key: &(String, i32)) -> i64 {
        self.store
            .get(&self.marker_key(key))
            .await
            .map_or(-1, |bytes| marker_offset(&bytes))
    }

    /// Write a segment's objects, then its marker, then acknowledge its batches. With a
    /// `deadline` (the partition was revoked) give up when it passes: the segment is
    /// abandoned, its batches give the partition up, and its new owner writes its records.
    async fn write(&mut self, mut segment: Segment, deadline: Option<Instant>) {
        if segment.records == 0 {
            for ack in segment.acks.drain(..) {
                ack.ack();
            }
            return;
        }
        let records = segment.records;
        SinkStats::add(&self.stats.sent, records as u64);
        let what = format!(
            "writing {}+{} from offset {} to s3://{}/{}",
            segment.topic, segment.partition, segment.first_offset, self.store.bucket, self.prefix
        );
        let mut retry = self.store.retrier();
        let mut objects = None;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let result = {
                let attempt = self.try_write(&mut segment, &mut objects);
                match left {
                    Some(left) if left.is_zero() => None,
                    // A request still in flight at the deadline is cut off.
                    Some(left) => tokio::time::timeout(left, attempt).await.ok(),
                    None => Some(attempt.await),
                }
            };
            match result {
                Some(Ok(())) => break,
                Some(Err(Attempt::Moved)) => objects = None,
                Some(Err(Attempt::Failed(e))) => retry.failed(1, &what, &e, deadline).await,
                Some(Err(Attempt::Encode(e))) => {
                    // Not transient: fail the batches so the host stops and they are
                    // replayed, rather than acknowledging what was not written.
                    tracing::error!(sink = %self.name, error = %e, "cannot encode the object; its batches fail");
                    return;
                }
                None => {
                    self.give_up(
                        segment,
                        "revoked partition not written within the rebalance drain: abandoned; the partition's new owner writes these records",
                    );
                    return;
                }
            }
        }
        retry.succeeded();
        // After the write, so a slow Athena never holds a revoked partition's segment.
        let partitions: Vec<Partition> = objects.iter().flatten().map(|o| o.partition).collect();
        for partition in &partitions {
            self.register(partition).await;
        }
        SinkStats::add(&self.stats.acknowledged, records as u64);
        for ack in segment.acks {
            ack.ack();
        }
    }

    /// One attempt at writing a segment: fence on the marker, the objects not yet written,
    /// then the marker, conditionally.
    async fn try_write(
        &mut self,
        segment: &mut Segment,
        objects: &mut Option<Vec<Object>>,
    ) -> Result<(), Attempt> {
        let key = (segment.topic.clone(), segment.partition);
        let marker_key = self.marker_key(&key);
        let mut version = None;
        if self.markers {
            let current = self
                .store
                .try_get(&marker_key)
                .await
                .map_err(Attempt::Failed)?;
            let written = current.as_ref().map_or(-1, |(b, _)| marker_offset(b));
            version = Some(match current {
                None => Expect::Absent,
                Some((_, Some(etag))) => Expect::Version(etag),
                // No ETag to compare (a store without them): write unconditionally.
                Some((_, None)) => Expect::Anything,
            });
            if written >= segment.first_offset {
                tracing::warn!(sink = %self.name, topic = %key.0, partition = key.1, written, first_offset = segment.first_offset, "another writer put this partition's records in the lake up to `written`; writing only what follows");
                segment.rebase(written).map_err(Attempt::Encode)?;
                *objects = None;
            }
            self.written.insert(key.clone(), written);
            if segment.records == 0 {
                return Ok(());
            }
        }
        if objects.is_none() {
            *objects = Some(self.encode_segment(segment).map_err(Attempt::Encode)?);
        }
        for object in objects.iter_mut().flatten().filter(|o| !o.written) {
            self.store
                .try_put(&object.key, &object.body, object.content_type)
                .await
                .map_err(Attempt::Failed)?;
            object.written = true;
            tracing::debug!(sink = %self.name, key = object.key, "object written");
        }
        if let Some(version) = version {
            let marker = serde_json::json!({ "last_offset": segment.last_offset }).to_string();
            match self
                .store
                .try_put_if(
                    &marker_key,
                    marker.into_bytes(),
                    "application/json",
                    &version,
                )
                .await
            {
                Ok(()) => {}
                Err(PutIfError::Changed) => {
                    tracing::error!(sink = %self.name, topic = %key.0, partition = key.1, "another writer wrote this partition's marker while this host wrote its objects: two hosts held the partition at once; reading the marker again");
                    return Err(Attempt::Moved);
                }
                Err(PutIfError::Failed(e)) => return Err(Attempt::Failed(e)),
            }
            self.written.insert(key, segment.last_offset);
        }
        Ok(())
    }

    fn encode_segment(&self, segment: &mut Segment) -> Result<Vec<Object>, columns::EncodeError> {
        let mut out = Vec::with_capacity(segment.objects.len());
        for (partition, object) in &mut segment.objects {
            let name = ObjectName {
                table: self.table,
                partition: *partition,
                topic: segment.topic.clone(),
                source_partition: segment.partition,
                first_offset: object.first_offset,
            };
            let (body, content_type) = object.encode()?;
            out.push(Object {
                key: name.key(&self.prefix),
                partition: *partition,
                body: body.into(),
                content_type,
                written: false,
            });
        }
        Ok(out)
    }

    /// With projection off, register a partition the first time this process writes to it.
    /// A failure is reported and retried with the next object; the data is already safe.
    async fn register(&mut self, partition: &Partition) {
        let Some(runner) = &self.athena else {
            return;
        };
        if self.registered.contains(partition) {
            return;
        }
        let statement = athena::add_partition(&self.config, partition);
        let mut last_error = None;
        for attempt in 0..3u32 {
            match runner.execute(&statement).await {
                Ok(id) => {
                    tracing::info!(sink = %self.name, query = id, partition = %partition.path(), "Athena partition registered");
                    self.registered.insert(*partition);
                    health::global().clear(FailState::SinkUnavailable, &self.athena_subject());
                    return;
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, attempt, error = %e, "Athena partition registration failed");
                    last_error = Some(e);
                    tokio::time::sleep(super::backoff(
                        attempt,
                        Duration::from_millis(500),
                        Duration::from_secs(10),
                    ))
                    .await;
                }
            }
        }
        if let Some(e) = last_error {
            health::global().raise(
                FailState::SinkUnavailable,
                &self.athena_subject(),
                format!("{e}. The objects are written; the partition is registered again with the next object, or run the statement by hand."),
            );
        }
    }

    fn athena_subject(&self) -> String {
        format!("{}/athena", self.name)
    }
}

/// The `last_offset` of a marker object (-1 if unreadable).
fn marker_offset(bytes: &[u8]) -> i64 {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["last_offset"].as_i64())
        .unwrap_or(-1)
}

/// An S3 client configured like `config` (region, endpoint, path style), or from the
/// environment alone. For tools that read the lake (backfill).
pub async fn client(config: Option<&S3SinkConfig>) -> aws_sdk_s3::Client {
    let sdk = match config {
        Some(c) => store::sdk_config(c).await,
        None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
    };
    let path_style = config.is_some_and(|c| c.endpoint.is_some());
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .build(),
    )
}
