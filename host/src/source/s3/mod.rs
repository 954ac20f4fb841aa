//! S3 source: objects another producer (Firehose, an application) drops in a bucket,
//! announced by S3 event notifications on an SQS queue.
//!
//! - `config.rs`: the source's keys and their checks.
//! - `queue.rs`: SQS: receive, delete, the visibility heartbeat, the start-up check.
//! - `notification.rs`: what a message says (objects created, the test event, or neither).
//! - `object.rs`: an object read streaming into messages with deterministic origins.
//! - `done.rs`: the done marker per object key.
//!
//! Each object's lines go to the pipeline in batches; the object is done when every batch
//! completed delivered. Then its marker is written (conditionally), and once every object
//! of a message is done the message is deleted. While it is read, the object's origin
//! partitions are reported to the pipeline, and given up at its end, so sinks that buffer
//! per partition (the S3 lake) write it out at once instead of after their idle flush.
//!
//! A message is left in the queue — not deleted, no longer kept invisible, so the queue's
//! redrive policy sends it to its dead-letter queue after `maxReceiveCount` receives — when
//! it is not an S3 notification, or an object of it is missing (`S3MissingFile`) or cannot
//! be read. A batch a sink failed stops the host, as with every source.

pub mod config;
mod done;
mod notification;
mod object;
mod queue;

pub use config::{ObjectFormat, S3SourceConfig};

use super::{
    DecodingConfig, PartitionProgress, PipelineInput, SourceBatch, SourceError, SourceKind,
    SourceLinks,
};
use crate::ack::{AckIssuer, BatchOffsets, Completion};
use crate::event::RawMessage;
use crate::health::{self, FailState};
use crate::sink::InputTraits;
use done::Marker;
use notification::{Notice, ObjectRef};
use object::{Line, ObjectReader, ReadError};
use queue::{Queue, Receipts, Received};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long sinks may take to write out an object's records: no deadline (the message
/// stays invisible meanwhile; nobody else owns the object's partitions).
const WRITE_OUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl SourceKind for S3SourceConfig {
    fn check(&self) -> Result<(), (String, String)> {
        S3SourceConfig::check(self)
    }

    fn decoding(&self) -> DecodingConfig {
        crate::source::decoding_keys!(self)
    }

    /// Offsets are line numbers of objects, not positions in a durable log: sinks rewrite
    /// by deterministic keys instead of skipping by offset.
    fn input_traits(&self) -> InputTraits {
        InputTraits {
            durable_offsets: false,
            rebalance_drain: WRITE_OUT,
        }
    }

    fn describe(&self) -> String {
        format!("s3 objects announced on SQS {}", self.queue_url)
    }

    fn run(&self, links: SourceLinks) -> Result<(), SourceError> {
        let source = Source::start(self, links).map_err(source_error)?;
        source.run().map_err(source_error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3SourceError {
    #[error("{0}")]
    Start(String),
    #[error(
        "a batch was not delivered by every sink (see the errors above); its object is not marked done and its message stays in the queue, so it is processed again"
    )]
    BatchFailed,
}

fn source_error(e: S3SourceError) -> SourceError {
    match e {
        S3SourceError::BatchFailed => SourceError::BatchFailed,
        S3SourceError::Start(message) => SourceError::Failed {
            kind: "S3",
            message,
        },
    }
}

/// A received message not yet deleted or left.
struct InFlight {
    receipt: String,
    sqs_id: String,
    objects_left: usize,
    /// An object of it was not processed: leave the message in the queue.
    leave: bool,
}

/// An object whose batches are in flight.
struct Pending {
    message: u64,
    object: ObjectRef,
    marker: Marker,
    batches_left: usize,
    records: u64,
    /// Every line was sent.
    all_sent: bool,
    /// Reading stopped before the end: not done.
    incomplete: bool,
}

struct Source<'a> {
    config: &'a S3SourceConfig,
    runtime: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
    queue: Queue,
    links: SourceLinks,
    issuer: AckIssuer,
    completions: UnboundedReceiver<Completion>,
    messages: HashMap<u64, InFlight>,
    objects: HashMap<u64, Pending>,
    /// Batch number → the object it belongs to.
    batches: HashMap<u64, u64>,
    /// `(bucket, key)` of the objects in flight: a second message for one waits for it.
    busy: HashSet<(String, String)>,
    waiting: VecDeque<(u64, ObjectRef)>,
    receipts: Receipts,
    next_id: u64,
    failed: bool,
}

impl<'a> Source<'a> {
    fn start(config: &'a S3SourceConfig, links: SourceLinks) -> Result<Source<'a>, S3SourceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("s3-source")
            .enable_all()
            .build()
            .map_err(|e| S3SourceError::Start(format!("cannot start its runtime: {e}")))?;
        let (s3, queue) = runtime.block_on(async {
            let sdk = sdk_config(config).await;
            let s3 = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(config.endpoint.is_some())
                    .build(),
            );
            let queue = Queue::connect(&sdk, &config.queue_url, config.visibility_timeout_s).await;
            queue.map(|q| (s3, q)).map_err(S3SourceError::Start)
        })?;
        let receipts = Receipts::default();
        runtime.spawn(queue.heartbeat(receipts.clone()));
        let (issuer, completions) = AckIssuer::new();
        tracing::info!(queue = %config.queue_url, "reading objects announced on the queue");
        Ok(Source {
            config,
            runtime,
            s3,
            queue,
            links,
            issuer,
            completions,
            messages: HashMap::new(),
            objects: HashMap::new(),
            batches: HashMap::new(),
            busy: HashSet::new(),
            waiting: VecDeque::new(),
            receipts,
            next_id: 0,
            failed: false,
        })
    }

    /// Receive and process until stopped or a batch fails; then drain and stop.
    fn run(mut self) -> Result<(), S3SourceError> {
        let mut last_receive = Instant::now() - Duration::from_secs(1);
        while !self.failed && !self.links.stop.load(Ordering::Relaxed) {
            self.pump();
            self.retry_waiting();
            let room = self
                .config
                .max_messages_in_flight
                .saturating_sub(self.messages.len());
            let idle = self.objects.is_empty() && self.waiting.is_empty();
            let mut received = Vec::new();
            if room > 0 && (idle || last_receive.elapsed() >= Duration::from_millis(500)) {
                // Long-poll only when nothing waits for completions.
                let wait_s = if idle { 2 } else { 0 };
                last_receive = Instant::now();
                match self.runtime.block_on(self.queue.receive(room, wait_s)) {
                    Ok(r) => received = r,
                    Err(e) => {
                        tracing::warn!(queue = %self.queue.url, error = %e, "receiving failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            if received.is_empty() && !idle {
                self.wait_completion(Duration::from_millis(200));
            }
            for message in received {
                self.take(message);
            }
        }
        self.shut_down()
    }

    /// Let the pipeline finish what it has (within the shutdown's bound), mark and delete
    /// what completed, leave the rest in the queue.
    fn shut_down(mut self) -> Result<(), S3SourceError> {
        let (drain, began) = &self.links.shutdown;
        let deadline = *began.get_or_init(|| Instant::now() + *drain);
        let mut end = PipelineInput::End { complete: false };
        loop {
            match self.links.pipeline.try_send(end) {
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    end = back;
                    self.pump();
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break,
            }
        }
        // Dropping the sender ends the pipeline once it has taken everything.
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.links.pipeline, closed));
        while !self.objects.is_empty() && Instant::now() < deadline {
            self.wait_completion(Duration::from_millis(50));
        }
        self.pump();
        if !self.messages.is_empty() {
            tracing::info!(
                messages = self.messages.len(),
                "stopping with messages not fully delivered: they stay in the queue and are received again after their visibility timeout"
            );
        }
        self.receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if self.failed {
            return Err(S3SourceError::BatchFailed);
        }
        Ok(())
    }

    /// Apply the completions that arrived.
    fn pump(&mut self) {
        while let Ok(completion) = self.completions.try_recv() {
            self.completed(completion);
        }
    }

    /// Wait up to `timeout` for a completion, then apply all that arrived.
    fn wait_completion(&mut self, timeout: Duration) {
        let completions = &mut self.completions;
        // The timer is made inside the runtime: it needs its clock.
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, completions.recv()).await });
        if let Ok(Some(completion)) = next {
            self.completed(completion);
        }
        self.pump();
    }

    fn completed(&mut self, completion: Completion) {
        if !completion.delivered && !self.failed {
            tracing::error!(
                "a batch was not delivered by every sink; stopping without marking its object done"
            );
            self.failed = true;
        }
        let Some(id) = self.batches.remove(&completion.seq) else {
            return;
        };
        let Some(pending) = self.objects.get_mut(&id) else {
            return;
        };
        pending.batches_left -= 1;
        if !completion.delivered {
            pending.incomplete = true;
        }
        if pending.all_sent && pending.batches_left == 0 {
            self.finish(id);
        }
    }

    /// One received message.
    fn take(&mut self, message: Received) {
        match notification::parse(&message.body) {
            Notice::Test => {
                tracing::info!(queue = %self.queue.url, "S3 test event: deleted");
                self.delete(&message.receipt, &message.id);
            }
            Notice::Foreign(why) => {
                tracing::error!(
                    queue = %self.queue.url,
                    message_id = %message.id,
                    reason = %why,
                    "not an S3 event notification: left in the queue, for its redrive policy to move to the dead-letter queue"
                );
            }
            Notice::Objects(objects) if objects.is_empty() => {
                self.delete(&message.receipt, &message.id);
            }
            Notice::Objects(objects) => {
                let id = self.new_id();
                self.receipts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, message.receipt.clone());
                self.messages.insert(
                    id,
                    InFlight {
                        receipt: message.receipt,
                        sqs_id: message.id,
                        objects_left: objects.len(),
                        leave: false,
                    },
                );
                for object in objects {
                    self.object(id, object);
                }
            }
        }
    }

    /// Process an object of message `message`, unless it is done or being processed.
    fn object(&mut self, message: u64, object: ObjectRef) {
        let state = self.config.state_location(&object.bucket);
        if done::is_marker(&state, &object.bucket, &object.key) {
            tracing::debug!(key = %object.key, "a done marker: ignored");
            return self.object_done(message, true);
        }
        let busy = (object.bucket.clone(), object.key.clone());
        if self.busy.contains(&busy) {
            // The same key twice at once: wait for the first, then find its marker.
            self.waiting.push_back((message, object));
            return;
        }
        let marker = Marker::new(&state, &object.bucket, &object.key);
        match self.runtime.block_on(done::read(&self.s3, &marker)) {
            Ok(Some(etag)) => {
                if !etag.is_empty() && !object.etag.is_empty() && etag != object.etag {
                    tracing::warn!(object = %url(&object), marker = %marker.url(), "the object was replaced after it was processed; the new version is not read (objects are processed once per key)");
                }
                tracing::info!(object = %url(&object), "already processed: its message is deleted");
                self.object_done(message, true)
            }
            Ok(None) => self.read(message, object, marker),
            Err(e) => {
                tracing::error!(marker = %marker.url(), error = %e, "cannot read the done marker; the message is left in the queue and received again");
                self.object_done(message, false)
            }
        }
    }

    /// Objects waiting for a key that is no longer in flight.
    fn retry_waiting(&mut self) {
        let mut still = VecDeque::new();
        while let Some((message, object)) = self.waiting.pop_front() {
            if self
                .busy
                .contains(&(object.bucket.clone(), object.key.clone()))
            {
                still.push_back((message, object));
            } else {
                self.object(message, object);
            }
        }
        self.waiting.extend(still);
    }

    /// Read an object and send its lines to the pipeline.
    fn read(&mut self, message: u64, object: ObjectRef, marker: Marker) {
        let opened = ObjectReader::open(
            self.runtime.handle(),
            &self.s3,
            &object.bucket,
            &object.key,
            self.config.format,
            self.config.max_message_bytes,
        );
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(ReadError::Missing) => {
                health::global().raise(
                    FailState::S3MissingFile,
                    &url(&object),
                    "an S3 notification announced the object but it is not there; its message is left in the queue, for the queue's redrive policy to move to the dead-letter queue",
                );
                return self.object_done(message, false);
            }
            Err(e) => {
                tracing::error!(object = %url(&object), error = %e, "the message is left in the queue and received again");
                return self.object_done(message, false);
            }
        };
        let id = self.new_id();
        self.busy
            .insert((object.bucket.clone(), object.key.clone()));
        self.objects.insert(
            id,
            Pending {
                message,
                object,
                marker,
                batches_left: 0,
                records: 0,
                all_sent: false,
                incomplete: false,
            },
        );
        let complete = self.send_lines(id, &mut reader);
        let Some(pending) = self.objects.get_mut(&id) else {
            return;
        };
        pending.all_sent = true;
        pending.incomplete |= !complete;
        if pending.batches_left == 0 {
            self.finish(id);
        }
    }

    /// Send the object's lines in batches; false if reading or sending stopped early.
    fn send_lines(&mut self, id: u64, reader: &mut ObjectReader) -> bool {
        let max_records = self.config.batch_max_records;
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut batch: Vec<RawMessage> = Vec::with_capacity(max_records.min(4096));
        let mut owned: Vec<(String, i32)> = Vec::new();
        let mut changed = false;
        let mut started = Instant::now();
        let mut complete = true;
        loop {
            let line = match reader.next_line() {
                Ok(Some(Line::Message(m))) => m,
                Ok(Some(Line::Empty)) => continue,
                Ok(None) => break,
                Err(e) => {
                    let object = &self.objects[&id].object;
                    tracing::error!(object = %url(object), error = %e, "reading stopped; the object is not marked done and its message is left in the queue");
                    complete = false;
                    break;
                }
            };
            self.links.stats.consumed.fetch_add(1, Ordering::Relaxed);
            let partition = (line.origin.topic.as_str(), line.origin.partition);
            if owned
                .last()
                .is_none_or(|(t, p)| (t.as_str(), *p) != partition)
                && !owned.iter().any(|(t, p)| (t.as_str(), *p) == partition)
            {
                owned.push((line.origin.topic.clone(), line.origin.partition));
                changed = true;
            }
            if batch.is_empty() {
                started = Instant::now();
            }
            batch.push(line);
            if batch.len() >= max_records || started.elapsed() >= max_wait {
                let progress = changed.then(|| progress(&owned));
                changed = false;
                if !self.send_batch(id, std::mem::take(&mut batch), progress) {
                    return false;
                }
            }
        }
        if !batch.is_empty() {
            let progress = changed.then(|| progress(&owned));
            if !self.send_batch(id, batch, progress) {
                return false;
            }
        }
        // The object's partitions are given up: sinks holding their records write them out.
        if !owned.is_empty() && !self.offer(PipelineInput::Progress(Vec::new())) {
            return false;
        }
        complete
    }

    fn send_batch(
        &mut self,
        id: u64,
        messages: Vec<RawMessage>,
        progress: Option<Vec<PartitionProgress>>,
    ) -> bool {
        let count = messages.len() as u64;
        let ack = self.issuer.issue(BatchOffsets::default());
        let seq = ack.seq();
        self.batches.insert(seq, id);
        if let Some(pending) = self.objects.get_mut(&id) {
            pending.batches_left += 1;
            pending.records += count;
        }
        self.offer(PipelineInput::Batch(SourceBatch {
            messages,
            ack,
            progress,
        }))
    }

    /// Send to the pipeline, waiting while it is full (backpressure: nothing more is
    /// received meanwhile). False if the host is stopping or the pipeline is gone.
    fn offer(&mut self, mut input: PipelineInput) -> bool {
        loop {
            match self.links.pipeline.try_send(input) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    if self.links.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    input = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    /// Every batch of the object completed: mark it done (if it was delivered whole).
    fn finish(&mut self, id: u64) {
        let Some(pending) = self.objects.remove(&id) else {
            return;
        };
        let object = &pending.object;
        self.busy
            .remove(&(object.bucket.clone(), object.key.clone()));
        if pending.incomplete || self.failed {
            return self.object_done(pending.message, false);
        }
        let mut attempt = 0;
        let marked = loop {
            let written = self.runtime.block_on(done::write(
                &self.s3,
                &pending.marker,
                &object.etag,
                pending.records,
            ));
            match written {
                Ok(_) => break true,
                Err(e) if attempt < 4 => {
                    tracing::warn!(marker = %pending.marker.url(), error = %e, "writing the done marker failed; retrying");
                }
                Err(e) => {
                    tracing::error!(marker = %pending.marker.url(), error = %e, "cannot write the done marker; the message is left in the queue, and the object processed again (to the same keys)");
                    break false;
                }
            }
            attempt += 1;
            std::thread::sleep(crate::sink::backoff(
                attempt,
                Duration::from_millis(200),
                Duration::from_secs(5),
            ));
        };
        tracing::debug!(object = %url(object), records = pending.records, "object delivered");
        self.object_done(pending.message, marked);
    }

    /// An object of `message` is finished with (`ok`: done, else left for another receive).
    fn object_done(&mut self, message: u64, ok: bool) {
        let Some(m) = self.messages.get_mut(&message) else {
            return;
        };
        m.objects_left = m.objects_left.saturating_sub(1);
        m.leave |= !ok;
        if m.objects_left > 0 {
            return;
        }
        let Some(m) = self.messages.remove(&message) else {
            return;
        };
        self.receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&message);
        if !m.leave {
            self.delete(&m.receipt, &m.sqs_id);
        }
    }

    fn delete(&self, receipt: &str, sqs_id: &str) {
        if let Err(e) = self.runtime.block_on(self.queue.delete(receipt)) {
            tracing::warn!(message_id = sqs_id, error = %e, "cannot delete the message; it is received again and its objects found done");
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn progress(owned: &[(String, i32)]) -> Vec<PartitionProgress> {
    owned
        .iter()
        .map(|(topic, partition)| PartitionProgress {
            topic: topic.clone(),
            partition: *partition,
            caught_up: true,
        })
        .collect()
}

fn url(object: &ObjectRef) -> String {
    format!("s3://{}/{}", object.bucket, object.key)
}

async fn sdk_config(config: &S3SourceConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}
