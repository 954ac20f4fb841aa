//! Kafka sink: one topic per sink, the routes it takes written to it.
//!
//! Logs are written as ECS JSON keyed by `key_field` (default `service.name`), so one
//! service keeps its order in one partition; a record without that field is keyed by its
//! source topic and partition, so the order of a source partition is kept. `raw` events as
//! the original bytes and key; dead letters as the original bytes with the reason and
//! origin in headers (the Kafka Connect dead-letter pattern).
//!
//! A batch's messages are handed to librdkafka together, through a topic handle
//! ([`super::kafka_produce`]); dead letters, which carry headers, one by one.
//!
//! The producer is idempotent, so its own retries never duplicate or reorder. A batch is
//! acknowledged once the broker has acknowledged every message (`acks=all`). What fails
//! is sorted by librdkafka's error code ([`verdict`]):
//!
//! - refused for good, the message's own fault (too large, invalid record): dead-lettered
//!   with a reason that says what to change, and the rest of the batch goes on;
//! - anything else means the destination cannot take messages now (topic deleted, not
//!   authorized, brokers gone, a fatal producer error): those messages are sent again with
//!   backoff and jitter, without a deadline, in batch order. Meanwhile the sink reads no
//!   more input, so backpressure pauses the source; after a few attempts `SinkUnavailable`
//!   is raised, cleared once they are delivered. Nothing is dead-lettered or committed for
//!   an outage. A producer with a fatal error is replaced before the next attempt.
//!
//! Dead letters (the `dlq` route) carry at most `dead_letter_max_payload_bytes` of their
//! payload, with its whole size and SHA-256 in headers; one refused even so is sent again
//! without payload (reason and origin kept), and one refused without payload is logged:
//! a dead letter never fails a batch for its size, so one oversized record cannot stop the
//! host.

use super::driver::{Answer, Driver, DriverSettings, Failure, Failures, Protocol};
use super::kafka_produce::{Outgoing, TopicHandle};
use super::kafka_transaction::KafkaTransaction;
use super::retry::Backoff;
use super::{SinkContext, SinkError, SinkInput, SinkInputs, SinkKind, Starting};
use crate::codec;
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::kafka_security::{self, KafkaSecurity, OAuth};
use crate::route::RouteName;
use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use sluice_plugin_sdk::OriginRef;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub routes: Vec<RouteName>,
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// The attribute whose value keys each log record.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Batches whose deliveries may be outstanding at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_batches: usize,
    /// Dead letters written by this sink carry at most this many bytes of their payload.
    #[serde(default = "default_dead_letter_max_payload_bytes")]
    pub dead_letter_max_payload_bytes: usize,
    /// First delay before sending again what the destination could not take; doubles per
    /// attempt (with jitter) up to `retry_max_backoff_ms`.
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// TLS and SASL to the brokers (see [`crate::kafka_security`]).
    /// Boxed: most configs leave it out, and the sink config stays small.
    #[serde(default)]
    pub security: Box<KafkaSecurity>,
    /// Extra librdkafka producer properties (linger, batch sizes…).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_key_field() -> String {
    "service.name".into()
}

fn default_in_flight() -> usize {
    8
}

fn default_dead_letter_max_payload_bytes() -> usize {
    64 * 1024
}

fn default_retry_initial_backoff_ms() -> u64 {
    100
}

fn default_retry_max_backoff_ms() -> u64 {
    30_000
}

/// librdkafka's own default for the producer's `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl KafkaSinkConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers".into(), "must list at least one host:port".into()));
        }
        if self.topic.trim().is_empty() {
            return Err(("topic".into(), "must name a topic".into()));
        }
        if self.max_in_flight_batches == 0 {
            return Err(("max_in_flight_batches".into(), "must be at least 1".into()));
        }
        Backoff::check_keys(self.retry_initial_backoff_ms, self.retry_max_backoff_ms)?;
        self.security.check(&self.options)?;
        if let Some(value) = self.options.get("message.max.bytes")
            && value.parse::<usize>().is_err()
        {
            return Err((
                "options.\"message.max.bytes\"".into(),
                format!("must be a number of bytes, not `{value}`"),
            ));
        }
        Ok(())
    }

    /// The producer's `message.max.bytes`: the largest message it will send.
    pub fn message_max_bytes(&self) -> usize {
        self.options
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }
}

impl SinkKind for KafkaSinkConfig {
    fn routes(&self) -> &[RouteName] {
        &self.routes
    }

    fn check(&self) -> Result<(), (String, String)> {
        KafkaSinkConfig::check(self)
    }

    fn reads_packed(&self) -> bool {
        true
    }

    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_> {
        Box::pin(start(ctx, self, input))
    }
}

pub async fn start(
    ctx: SinkContext,
    config: &KafkaSinkConfig,
    rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let protocol = KafkaProtocol::new(&ctx.name, config, ctx.transaction.as_deref())?;
    let settings = DriverSettings {
        max_in_flight: config.max_in_flight_batches,
        backoff: Backoff::from_millis(config.retry_initial_backoff_ms, config.retry_max_backoff_ms),
        hint: "Check that the topic exists, that the sink may write to it, and that the brokers are reachable.",
    };
    Ok(Driver::spawn(&ctx, protocol, settings, rx))
}

/// How this sink writes a batch: messages handed to an idempotent producer, answered by
/// its delivery reports.
struct KafkaProtocol {
    shared: Arc<Shared>,
    producer: Arc<Producer>,
    /// The sink's topic on `producer`, made again with it.
    topic: Arc<TopicHandle>,
    /// The producer is the host's transactional one (see [`super::kafka_transaction`]):
    /// the source commits what it delivers, and a failed producer stops the host.
    transactional: bool,
}

/// What the answer to each hand-over needs.
struct Shared {
    name: String,
    config: KafkaSinkConfig,
    message_max_bytes: usize,
}

impl KafkaProtocol {
    fn new(
        name: &str,
        config: &KafkaSinkConfig,
        transaction: Option<&KafkaTransaction>,
    ) -> Result<KafkaProtocol, SinkError> {
        let producer = match transaction {
            Some(transaction) => transaction.producer(),
            None => Arc::new(producer(name, config)?),
        };
        let topic = topic_handle(name, config, &producer)?;
        Ok(KafkaProtocol {
            producer,
            topic,
            transactional: transaction.is_some(),
            shared: Arc::new(Shared {
                name: name.to_owned(),
                config: config.clone(),
                message_max_bytes: config.message_max_bytes(),
            }),
        })
    }
}

impl Protocol for KafkaProtocol {
    fn send<'a>(
        &'a self,
        batch: &'a SinkBatch,
        only: Option<&'a [usize]>,
    ) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let resend = only.map(|indices| Resend {
                indices: indices.to_vec(),
                bare: Vec::new(),
            });
            let to = To {
                producer: &self.producer,
                topic: &self.topic,
            };
            let handed = enqueue(to, &self.shared, &batch.events, resend.as_ref()).await;
            let answer = answer(
                self.shared.clone(),
                (self.producer.clone(), self.topic.clone()),
                batch.events.clone(),
                batch.route == RouteName::Dlq,
                handed,
            );
            Answer::new(answer)
        })
    }

    fn describe(&self, items: usize) -> String {
        format!(
            "sending {items} messages to topic `{}`",
            self.shared.config.topic
        )
    }

    /// A producer with a fatal error (its idempotence broken, say) refuses every message
    /// from then on: replace it. Every message it held has been answered by now.
    fn before_retry(&mut self) {
        let Some((code, reason)) = self.producer.client.client().fatal_error() else {
            return;
        };
        let name = &self.shared.name;
        if self.transactional {
            // Replacing it would fence the transaction the source is about to commit.
            tracing::error!(sink = %name, ?code, %reason,
                "the transactional Kafka producer failed fatally; the host stops at its next commit");
            return;
        }
        tracing::error!(sink = %name, ?code, %reason,
            "the Kafka producer failed fatally; replacing it and sending again what it did not deliver");
        let fresh = producer(name, &self.shared.config)
            .map(Arc::new)
            .and_then(|fresh| {
                let topic = topic_handle(name, &self.shared.config, &fresh)?;
                Ok((fresh, topic))
            });
        match fresh {
            Ok((producer, topic)) => (self.producer, self.topic) = (producer, topic),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot replace the producer; trying again later")
            }
        }
    }
}

/// The messages of a batch to send, when not all of them.
#[derive(Debug, Default, PartialEq)]
struct Resend {
    /// Places in the batch, ascending.
    indices: Vec<usize>,
    /// The dead letters among them to send without payload, ascending.
    bare: Vec<usize>,
}

/// The messages handed to the producer in one go.
struct Handed {
    /// Which, when not every message of the batch.
    resend: Option<Resend>,
    answers: oneshot::Receiver<FailedMessages>,
}

/// How one message failed.
#[derive(Debug, Clone)]
pub(super) struct Failed {
    error: KafkaError,
    /// Its key and payload, in bytes: a reason for "too large" says how large.
    bytes: usize,
    /// Refused by the client at `send` rather than reported by the broker.
    at_send: bool,
}

/// The messages of a batch that failed: (place in the batch, how).
pub(super) type FailedMessages = Vec<(usize, Failed)>;

/// The broker's answers for one batch, gathered by the producer's delivery callback: one
/// count and one signal per batch rather than a future per message.
pub(super) struct Answers {
    /// Messages not answered yet.
    pending: AtomicUsize,
    failed: Mutex<FailedMessages>,
    /// Gets `failed` once every message is answered. Dropped unsent if the producer
    /// drops messages without answering, which fails the batch.
    done: Mutex<Option<oneshot::Sender<FailedMessages>>>,
}

impl Answers {
    pub(super) fn new(count: usize) -> (Arc<Answers>, oneshot::Receiver<FailedMessages>) {
        let (tx, rx) = oneshot::channel();
        let answers = Arc::new(Answers {
            pending: AtomicUsize::new(count),
            failed: Mutex::new(Vec::new()),
            done: Mutex::new(Some(tx)),
        });
        if count == 0 {
            answers.finish();
        }
        (answers, rx)
    }

    /// Message `index` was delivered (`None`) or failed.
    fn answer(&self, index: usize, failure: Option<Failed>) {
        if let Some(failure) = failure {
            lock(&self.failed).push((index, failure));
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        if let Some(done) = lock(&self.done).take() {
            let _ = done.send(std::mem::take(&mut *lock(&self.failed)));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What travels with each message through librdkafka: its batch's answers and its place.
pub(super) struct InFlight {
    pub(super) answers: Arc<Answers>,
    pub(super) index: usize,
}

/// Hands each delivery report to the batch its message belongs to; answers the
/// producer's OAUTHBEARER refresh events.
pub(super) struct Delivery {
    pub(super) oauth: OAuth,
    /// What to check when the brokers refuse the producer's credentials.
    pub(super) auth_hint: String,
}

impl Delivery {
    pub(super) fn new(part: &str, security: &KafkaSecurity) -> Result<Delivery, String> {
        Ok(Delivery {
            oauth: security
                .oauth(part)
                .map_err(|e| format!("{part}.security: {e}"))?,
            auth_hint: kafka_security::authentication_hint(part, security),
        })
    }
}

impl ClientContext for Delivery {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.oauth.generate()
    }

    /// Refused credentials stall the sink (its messages wait, `SinkUnavailable` is
    /// raised); the log says what to check.
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::Global(RDKafkaErrorCode::Authentication) => {
                tracing::error!(%error, reason, "the brokers refused to authenticate the producer; {}", self.auth_hint)
            }
            _ => tracing::error!(%error, reason, "Kafka producer error"),
        }
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, message: Box<InFlight>) {
        let failure = result.as_ref().err().map(|(error, m)| Failed {
            error: error.clone(),
            bytes: m.key_len() + m.payload_len(),
            at_send: false,
        });
        message.answers.answer(message.index, failure);
    }
}

/// What a failure means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The message itself is refused for good: dead-letter it.
    Refused,
    /// The destination cannot take messages now (topic missing, not authorized, brokers
    /// gone, fatal producer error…): send it again later. Anything not known to be the
    /// message's own fault is this, so the sink stalls visibly rather than losing data.
    Unavailable,
}

fn verdict(error: &KafkaError) -> Verdict {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge | MessageBatchTooLarge | InvalidMessage | InvalidMessageSize
            | InvalidRecord | InvalidTimestamp | BadMessage,
        ) => Verdict::Refused,
        _ => Verdict::Unavailable,
    }
}

/// Why sink `sink` refused a message for good, and what to change.
fn refusal(sink: &str, failure: &Failed, message_max_bytes: usize) -> String {
    let bytes = failure.bytes;
    match failure.error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) if failure.at_send => format!(
            "it is {bytes} bytes as a message, larger than the sink's message.max.bytes \
             ({message_max_bytes}); to deliver such records raise `options.\"message.max.bytes\"` \
             on sink `{sink}` and the topic's max.message.bytes"
        ),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge) => {
            format!(
                "the broker refused it as too large ({bytes} bytes as a message): to deliver such \
                 records raise the topic's max.message.bytes (and `options.\"message.max.bytes\"` \
                 on sink `{sink}` if it is smaller)"
            )
        }
        _ => failure.error.to_string(),
    }
}

/// How long each poll for delivery reports may wait. rust-rdkafka's poll rounds the time
/// left down to whole milliseconds and then polls without waiting, so it spins through the
/// last millisecond of every window: 1 % of a core per producer at its own threaded
/// producer's 100 ms, even when idle. A one-second window keeps that to 0.1 %.
const DELIVERY_POLL_WINDOW: Duration = Duration::from_secs(1);

/// The sink's producer, with a thread of its own that serves the delivery reports.
pub(super) struct Producer {
    pub(super) client: Arc<BaseProducer<Delivery>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    pub(super) fn start(name: &str, client: BaseProducer<Delivery>) -> Result<Producer, SinkError> {
        let client = Arc::new(client);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (client.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-deliveries".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(DELIVERY_POLL_WINDOW);
                }
            })
            .map_err(|e| SinkError::Start {
                sink: name.to_owned(),
                message: format!("cannot start the delivery thread: {e}"),
            })?;
        Ok(Producer { client, stop })
    }
}

impl Drop for Producer {
    /// The thread sees this within a window and drops the last handle to the client. Every
    /// batch has settled by then: the sink task drains before it ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What every producer of a Kafka sink is set up with: idempotent, every replica
/// acknowledging, no delivery deadline (a broker outage stalls the sink instead of
/// dropping data).
pub(super) fn producer_settings(client: &mut ClientConfig, brokers: &str) {
    client
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.kbytes", "65536");
}

fn producer(name: &str, config: &KafkaSinkConfig) -> Result<Producer, SinkError> {
    let mut client = ClientConfig::new();
    producer_settings(&mut client, &config.brokers);
    config.security.apply(&mut client);
    for (key, value) in &config.options {
        client.set(key, value);
    }
    let start_error = |message: String| SinkError::Start {
        sink: name.to_owned(),
        message,
    };
    let context = Delivery::new(&format!("sinks.{name}"), &config.security).map_err(start_error)?;
    let client = client.create_with_context(context).map_err(|e| {
        start_error(format!(
            "cannot create the Kafka producer: {e}. Check `brokers`, `security` and `options`."
        ))
    })?;
    Producer::start(name, client)
}

/// The sink's topic on `producer`, for handing messages over in batches.
fn topic_handle(
    name: &str,
    config: &KafkaSinkConfig,
    producer: &Producer,
) -> Result<Arc<TopicHandle>, SinkError> {
    TopicHandle::new(producer.client.clone(), &config.topic)
        .map(Arc::new)
        .map_err(|message| SinkError::Start {
            sink: name.to_owned(),
            message,
        })
}

/// Where a sink's messages go: its producer, and its topic on it.
#[derive(Clone, Copy)]
struct To<'a> {
    producer: &'a Producer,
    topic: &'a TopicHandle,
}

/// Hand events to the producer — every one, or those `resend` names — waiting while its
/// queue is full.
async fn enqueue(to: To<'_>, shared: &Shared, events: &Events, resend: Option<&Resend>) -> Handed {
    let config = &shared.config;
    let count = resend.map_or(events.len(), |r| r.indices.len());
    let (answers, done) = Answers::new(count);
    let sender = Sender {
        to,
        topic: &config.topic,
        answers,
        max_bytes: shared.message_max_bytes,
    };
    let key_field = config.key_field.as_str();
    // Sending again is rare; the first send of a batch takes every event unchecked.
    let wanted = |index: usize| resend.is_none_or(|r| r.indices.binary_search(&index).is_ok());
    let mut staged = Staged::default();
    let mut origin_key = String::new();
    match events {
        Events::Logs(logs) => match logs.packed() {
            // The chain's output, read in place: no record is decoded to be encoded.
            Some(packed) => {
                for (index, r) in packed.view().iter().enumerate() {
                    if wanted(index) {
                        let key = message_key(r.get_str(key_field), r.origin, &mut origin_key);
                        staged.encode(index, key, |buf| codec::encode_view(&r, buf));
                        if staged.is_full() {
                            sender.hand_over(&mut staged).await;
                        }
                    }
                }
            }
            None => {
                for (index, r) in logs.records().iter().enumerate() {
                    if wanted(index) {
                        let origin = r.origin().view();
                        let key = message_key(r.get_str(key_field), origin, &mut origin_key);
                        staged.encode(index, key, |buf| codec::encode_record(r, buf));
                        if staged.is_full() {
                            sender.hand_over(&mut staged).await;
                        }
                    }
                }
            }
        },
        Events::Raw(messages) => {
            for (index, m) in messages.iter().enumerate() {
                if wanted(index) {
                    staged.borrow(index, m.key.as_deref(), &m.payload);
                    if staged.is_full() {
                        sender.hand_over(&mut staged).await;
                    }
                }
            }
        }
        Events::DeadLetters(letters) => {
            for (index, d) in letters.iter().enumerate() {
                if wanted(index) {
                    let bare = resend.is_some_and(|r| r.bare.binary_search(&index).is_ok());
                    let max = if bare {
                        0
                    } else {
                        config.dead_letter_max_payload_bytes
                    };
                    let (payload, headers) = dead_letter_message(d, max, shared.message_max_bytes);
                    sender.send(index, None, payload, Some(headers)).await;
                }
            }
        }
    }
    sender.hand_over(&mut staged).await;
    Handed {
        resend: resend.map(|r| Resend {
            indices: r.indices.clone(),
            bare: r.bare.clone(),
        }),
        answers: done,
    }
}

/// Messages handed over to the producer in one call at most.
const STAGED_MAX_MESSAGES: usize = 1024;
/// Bytes of encoded messages held for one hand-over at most.
const STAGED_MAX_BYTES: usize = 4 << 20;

/// Messages waiting to be handed over together: borrowed from the batch as they are (raw
/// messages), or encoded into one buffer (log records and their keys).
#[derive(Default)]
struct Staged<'a> {
    encoded: Vec<u8>,
    messages: Vec<StagedMessage<'a>>,
}

struct StagedMessage<'a> {
    index: usize,
    key: Option<Bytes<'a>>,
    payload: Bytes<'a>,
}

enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Encoded(Range<usize>),
}

impl<'a> Staged<'a> {
    fn borrow(&mut self, index: usize, key: Option<&'a [u8]>, payload: &'a [u8]) {
        self.messages.push(StagedMessage {
            index,
            key: key.map(Bytes::Borrowed),
            payload: Bytes::Borrowed(payload),
        });
    }

    /// Stage a message whose payload `encode` appends to the buffer.
    fn encode(&mut self, index: usize, key: &[u8], encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.encoded.len();
        self.encoded.extend_from_slice(key);
        let key = start..self.encoded.len();
        encode(&mut self.encoded);
        let payload = key.end..self.encoded.len();
        self.messages.push(StagedMessage {
            index,
            key: Some(Bytes::Encoded(key)),
            payload: Bytes::Encoded(payload),
        });
    }

    fn is_full(&self) -> bool {
        self.messages.len() >= STAGED_MAX_MESSAGES || self.encoded.len() >= STAGED_MAX_BYTES
    }

    fn bytes(&self, bytes: &Bytes<'a>) -> &[u8] {
        match bytes {
            Bytes::Borrowed(b) => b,
            Bytes::Encoded(range) => &self.encoded[range.clone()],
        }
    }
}

/// Sends the messages of one batch, each with its place in the batch.
struct Sender<'a> {
    to: To<'a>,
    /// The topic's name, for messages sent one by one.
    topic: &'a str,
    answers: Arc<Answers>,
    /// The sink's own `message.max.bytes`: the host's transactional producer, shared with
    /// the plugins' state snapshots, may take larger messages than the sink's topic.
    max_bytes: usize,
}

impl Sender<'_> {
    /// A message over the sink's `message.max.bytes` is answered here as librdkafka would
    /// answer it, without asking it.
    fn over_limit(&self, index: usize, key: Option<&[u8]>, payload: &[u8]) -> bool {
        let bytes = key.map_or(0, <[u8]>::len) + payload.len();
        if bytes <= self.max_bytes {
            return false;
        }
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let failure = Failed {
            error,
            bytes,
            at_send: true,
        };
        self.answers.answer(index, Some(failure));
        true
    }

    /// Hand the staged messages over, in order, waiting while the producer's queue is
    /// full; empties `staged`.
    async fn hand_over(&self, staged: &mut Staged<'_>) {
        let messages = std::mem::take(&mut staged.messages);
        let mut outgoing = Vec::with_capacity(messages.len());
        for m in &messages {
            let key = m.key.as_ref().map(|k| staged.bytes(k));
            let payload = staged.bytes(&m.payload);
            if self.over_limit(m.index, key, payload) {
                continue;
            }
            let in_flight = Box::new(InFlight {
                answers: self.answers.clone(),
                index: m.index,
            });
            outgoing.push(Outgoing {
                key,
                payload,
                in_flight,
            });
        }
        while !outgoing.is_empty() {
            let refused = self.to.topic.produce(outgoing);
            outgoing = Vec::new();
            for r in refused {
                if r.code == RDKafkaErrorCode::QueueFull {
                    // It and every message after it wait for room, in order.
                    outgoing.push(r.message);
                    continue;
                }
                // Refused before it reached the queue; what that means is settled with
                // the broker's answers.
                let m = r.message;
                let failure = Failed {
                    error: KafkaError::MessageProduction(r.code),
                    bytes: m.key.map_or(0, <[u8]>::len) + m.payload.len(),
                    at_send: true,
                };
                m.in_flight.answers.answer(m.in_flight.index, Some(failure));
            }
            if !outgoing.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        staged.encoded.clear();
    }

    /// Send one message with headers (a dead letter), as `hand_over` cannot.
    async fn send(
        &self,
        index: usize,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) {
        if self.over_limit(index, key, payload) {
            return;
        }
        let message = Box::new(InFlight {
            answers: self.answers.clone(),
            index,
        });
        let mut record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(self.topic, message).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.to.producer.client.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Refused before it reached the queue; what that means is settled with the
                // broker's answers.
                Err((error, back)) => {
                    let failure = Failed {
                        error,
                        bytes: key.map_or(0, <[u8]>::len) + payload.len(),
                        at_send: true,
                    };
                    let message = back.delivery_opaque;
                    message.answers.answer(message.index, Some(failure));
                    return;
                }
            }
        }
    }
}

/// A log record's key: its `key_field` value, else its source topic and partition, written
/// into `scratch`.
fn message_key<'a>(
    field: Option<&'a str>,
    origin: OriginRef<'_>,
    scratch: &'a mut String,
) -> &'a [u8] {
    if let Some(key) = field {
        return key.as_bytes();
    }
    scratch.clear();
    scratch.push_str(origin.topic);
    scratch.push('/');
    scratch.push_str(itoa::Buffer::new().format(origin.partition));
    scratch.as_bytes()
}

/// Room left in a message for its headers besides the payload.
const HEADER_ROOM: usize = 8 * 1024;

/// A dead letter as a message: at most `max_payload` bytes of its payload (and never more
/// than fits the producer's `message.max.bytes` with its headers), with the reason, the
/// origin, and the whole payload's size and SHA-256 in headers.
fn dead_letter_message(
    d: &DeadLetter,
    max_payload: usize,
    message_max_bytes: usize,
) -> (&[u8], OwnedHeaders) {
    let max_payload = max_payload.min(message_max_bytes.saturating_sub(HEADER_ROOM));
    let payload = &d.payload[..d.payload.len().min(max_payload)];
    // A reason quoting a huge error must not make the letter too large by itself.
    let reason = truncate_str(&d.reason, HEADER_ROOM / 2);
    let partition = d.origin.partition.to_string();
    let offset = d.origin.offset.to_string();
    let size = d.payload.len().to_string();
    let sha256 = d.payload_sha256();
    let mut headers = OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: "sluice.dlq.reason",
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: "sluice.origin.topic",
            value: Some(d.origin.topic.as_bytes()),
        })
        .insert(Header {
            key: "sluice.origin.partition",
            value: Some(partition.as_bytes()),
        })
        .insert(Header {
            key: "sluice.origin.offset",
            value: Some(offset.as_bytes()),
        })
        .insert(Header {
            key: "sluice.payload.size",
            value: Some(size.as_bytes()),
        })
        .insert(Header {
            key: "sluice.payload.sha256",
            value: Some(sha256.as_bytes()),
        });
    if payload.len() < d.payload.len() {
        headers = headers.insert(Header {
            key: "sluice.payload.truncated",
            value: Some("true".as_bytes()),
        });
    }
    (payload, headers)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Wait for the producer's answers to one hand-over and sort what failed: the
/// destination unavailable (sent again by the driver) or a message refused for good
/// (dead-lettered). A dead letter refused for good is sent again at once without its
/// payload (reason and origin kept), and one refused even so is only logged: a dead letter
/// never fails a batch for its size.
async fn answer(
    shared: Arc<Shared>,
    (producer, topic): (Arc<Producer>, Arc<TopicHandle>),
    events: Arc<Events>,
    dead_letters: bool,
    mut handed: Handed,
) -> Failures {
    let name = &shared.name;
    let mut out = Failures::new();
    loop {
        let Ok(mut failed) = handed.answers.await else {
            tracing::warn!(sink = %name, "the producer went away before answering; sending the messages again");
            let all = handed
                .resend
                .map_or_else(|| (0..events.len()).collect(), |r| r.indices);
            let why = "the producer went away before answering";
            out.extend(all.into_iter().map(|i| (i, Failure::Retry(why.into()))));
            return out;
        };
        // Answers arrive in any order across partitions; what follows keeps the batch's order.
        failed.sort_unstable_by_key(|&(index, _)| index);
        let sent_bare = handed.resend.map(|r| r.bare).unwrap_or_default();
        let mut bare = Resend::default();
        for (index, failure) in failed {
            let was_bare = sent_bare.binary_search(&index).is_ok();
            match verdict(&failure.error) {
                Verdict::Unavailable => {
                    out.push((index, Failure::Retry(failure.error.to_string())));
                }
                Verdict::Refused if dead_letters && !was_bare => {
                    tracing::warn!(sink = %name, error = %refusal(name, &failure, shared.message_max_bytes),
                        "a dead letter was refused; sending it again without its payload");
                    bare.indices.push(index);
                    bare.bare.push(index);
                }
                Verdict::Refused if dead_letters => give_up(name, &events, index, &failure),
                Verdict::Refused => {
                    let why = refusal(name, &failure, shared.message_max_bytes);
                    out.push((
                        index,
                        Failure::Refused(dead_letter(name, &events, index, &why)),
                    ));
                }
            }
        }
        if bare.indices.is_empty() {
            return out;
        }
        let to = To {
            producer: &producer,
            topic: &topic,
        };
        handed = enqueue(to, &shared, &events, Some(&bare)).await;
    }
}

/// A dead letter refused even without its payload (a topic whose max.message.bytes is
/// smaller than its headers): the log keeps what it says, and the batch goes on.
fn give_up(sink: &str, events: &Events, index: usize, failure: &Failed) {
    if let Events::DeadLetters(letters) = events {
        let d = &letters[index];
        tracing::error!(sink = %sink, error = %failure.error, origin.topic = %d.origin.topic,
            origin.partition = d.origin.partition, origin.offset = d.origin.offset,
            reason = %d.reason, payload.size = d.payload.len(), payload.sha256 = %d.payload_sha256(),
            "a dead letter was refused even without its payload; it is only logged here. Raise the dead-letter topic's max.message.bytes");
    }
}

fn dead_letter(sink: &str, events: &Events, index: usize, why: &str) -> DeadLetter {
    let reason = format!("sink `{sink}` rejected it: {why}");
    let timestamp = crate::time::now_ns();
    match events {
        Events::Logs(logs) => DeadLetter {
            origin: logs.records()[index].origin().clone(),
            reason,
            payload: codec::record_to_json(&logs.records()[index]),
            timestamp,
        },
        Events::Raw(messages) => DeadLetter {
            origin: messages[index].origin.clone(),
            reason,
            payload: messages[index].payload.clone(),
            timestamp,
        },
        Events::DeadLetters(letters) => letters[index].clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: RDKafkaErrorCode, bytes: usize, at_send: bool) -> Failed {
        Failed {
            error: KafkaError::MessageProduction(code),
            bytes,
            at_send,
        }
    }

    #[test]
    fn a_batch_settles_once_every_message_is_answered() {
        let (answers, mut done) = Answers::new(3);
        answers.answer(2, None);
        answers.answer(
            0,
            Some(failed(RDKafkaErrorCode::MessageSizeTooLarge, 9, false)),
        );
        assert!(
            done.try_recv().is_err(),
            "settled with a message unanswered"
        );
        answers.answer(1, None);
        let failures = done.try_recv().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, 0);
    }

    #[test]
    fn an_empty_batch_settles_at_once() {
        let (_answers, mut done) = Answers::new(0);
        assert!(done.try_recv().unwrap().is_empty());
    }

    #[test]
    fn messages_dropped_unanswered_fail_the_batch() {
        let (answers, done) = Answers::new(2);
        let in_flight = InFlight {
            answers: answers.clone(),
            index: 0,
        };
        in_flight.answers.answer(in_flight.index, None);
        drop((answers, in_flight));
        assert!(done.blocking_recv().is_err());
    }

    #[test]
    fn only_the_message_own_faults_are_refused_for_good() {
        use RDKafkaErrorCode::*;
        for code in [
            MessageSizeTooLarge,
            MessageBatchTooLarge,
            InvalidRecord,
            InvalidMessage,
        ] {
            let error = KafkaError::MessageProduction(code);
            assert_eq!(verdict(&error), Verdict::Refused, "{code:?}");
        }
        // The destination is unusable right now: never dead-lettered.
        for code in [
            UnknownTopicOrPartition,
            UnknownTopic,
            UnknownPartition,
            TopicAuthorizationFailed,
            ClusterAuthorizationFailed,
            MessageTimedOut,
            BrokerTransportFailure,
            AllBrokersDown,
            Fatal,
            OutOfOrderSequenceNumber,
            PurgeQueue,
        ] {
            let error = KafkaError::MessageProduction(code);
            assert_eq!(verdict(&error), Verdict::Unavailable, "{code:?}");
        }
    }

    #[test]
    fn a_message_too_large_for_the_producer_says_what_to_raise() {
        let at_send = failed(RDKafkaErrorCode::MessageSizeTooLarge, 1_040_123, true);
        let reason = refusal("cleaned", &at_send, 1_000_000);
        assert!(reason.contains("1040123 bytes"), "{reason}");
        assert!(reason.contains("message.max.bytes (1000000)"), "{reason}");
        assert!(reason.contains("on sink `cleaned`"), "{reason}");
        let by_broker = failed(RDKafkaErrorCode::MessageSizeTooLarge, 3_000, false);
        let reason = refusal("cleaned", &by_broker, 1_000_000);
        assert!(reason.contains("topic's max.message.bytes"), "{reason}");
    }

    fn letter(payload: Vec<u8>, reason: &str) -> DeadLetter {
        DeadLetter {
            origin: crate::Origin {
                topic: "raw".into(),
                partition: 2,
                offset: 41,
            },
            reason: reason.into(),
            payload,
            timestamp: 0,
        }
    }

    fn header<'a>(headers: &'a OwnedHeaders, key: &str) -> Option<&'a str> {
        use rdkafka::message::Headers;
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| std::str::from_utf8(h.value?).ok())
    }

    #[test]
    fn a_dead_letter_carries_a_prefix_of_its_payload_with_its_size_and_hash() {
        let d = letter(vec![b'x'; 100_000], "too large");
        let (payload, headers) = dead_letter_message(&d, 65_536, 1_000_000);
        assert_eq!(payload.len(), 65_536);
        assert_eq!(header(&headers, "sluice.payload.size"), Some("100000"));
        assert_eq!(header(&headers, "sluice.payload.truncated"), Some("true"));
        let sha256 = d.payload_sha256();
        assert_eq!(
            header(&headers, "sluice.payload.sha256"),
            Some(sha256.as_str())
        );
        assert_eq!(header(&headers, "sluice.origin.offset"), Some("41"));

        let small = letter(b"{}".to_vec(), "cannot decode");
        let (payload, headers) = dead_letter_message(&small, 65_536, 1_000_000);
        assert_eq!(payload, b"{}");
        assert_eq!(header(&headers, "sluice.payload.truncated"), None);
        assert_eq!(header(&headers, "sluice.dlq.reason"), Some("cannot decode"));
    }

    #[test]
    fn a_dead_letter_always_fits_the_producer_and_bare_keeps_reason_and_origin() {
        let d = letter(vec![b'x'; 100_000], &"é".repeat(10_000));
        let (payload, headers) = dead_letter_message(&d, 1 << 20, 50_000);
        assert!(payload.len() + HEADER_ROOM <= 50_000);
        let reason = header(&headers, "sluice.dlq.reason").unwrap();
        assert!(reason.len() <= HEADER_ROOM / 2 && reason.starts_with('é'));
        let (payload, headers) = dead_letter_message(&d, 0, 1_000_000);
        assert!(payload.is_empty());
        assert_eq!(header(&headers, "sluice.origin.topic"), Some("raw"));
        assert_eq!(header(&headers, "sluice.payload.truncated"), Some("true"));
    }

    /// Against the local broker (`SLUICE_KAFKA`): a producer whose idempotence broke
    /// refuses everything from then on; the sink replaces it and delivers the batch, rather
    /// than dead-lettering or stalling for good.
    #[tokio::test]
    async fn a_producer_that_failed_fatally_is_replaced_and_the_batch_delivered() {
        use crate::ack::{AckIssuer, BatchOffsets};
        use crate::event::RawMessage;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let config = KafkaSinkConfig {
            routes: vec!["raw".into()],
            brokers: std::env::var("SLUICE_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            // The local broker creates topics on demand.
            topic: format!("sink-fatal-{}-{nanos}", std::process::id()),
            key_field: default_key_field(),
            max_in_flight_batches: 1,
            dead_letter_max_payload_bytes: default_dead_letter_max_payload_bytes(),
            retry_initial_backoff_ms: 10,
            retry_max_backoff_ms: 100,
            security: Box::default(),
            options: BTreeMap::new(),
        };
        let protocol = KafkaProtocol::new("fatal", &config, None).unwrap();
        let client = protocol.producer.client.clone();
        let code = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
        // SAFETY: a live client handle and a NUL-terminated reason.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                client.client().native_ptr(),
                code,
                c"sequence broken (test)".as_ptr(),
            )
        };
        assert_eq!(
            raised,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        assert!(client.client().fatal_error().is_some());

        let ctx = SinkContext::new("fatal", super::super::Router::new());
        let settings = DriverSettings {
            max_in_flight: 1,
            backoff: Backoff::from_millis(10, 100),
            hint: "",
        };
        let (tx, rx) = mpsc::channel(1);
        let task = Driver::spawn(&ctx, protocol, settings, rx);
        let (mut issuer, mut completions) = AckIssuer::new();
        let message = RawMessage {
            origin: crate::Origin::default(),
            key: None,
            payload: b"after a fatal error".to_vec(),
            timestamp: 0,
        };
        let batch = SinkBatch {
            route: "raw".into(),
            events: Arc::new(Events::Raw(vec![message])),
            ack: issuer.issue(BatchOffsets::default()),
        };
        assert!(tx.send(SinkInput::Batch(batch)).await.is_ok());
        let completion = tokio::time::timeout(Duration::from_secs(60), completions.recv())
            .await
            .expect("the batch settles")
            .unwrap();
        assert!(completion.delivered);
        drop(tx);
        task.await.unwrap();
    }
}
