//! Kafka sink: one topic per sink, the routes it takes written to it.
//!
//! Logs are written as ECS JSON keyed by `key_field` (default `service.name`), so one
//! service keeps its order in one partition; a record without that field is keyed by its
//! source topic and partition, so the order of a source partition is kept. `raw` events as the original bytes and key; dead letters as the original
//! bytes with the reason and origin in headers (the Kafka Connect dead-letter pattern).
//!
//! The producer is idempotent, so its own retries never duplicate or reorder. A batch is
//! acknowledged once the broker has acknowledged every message (`acks=all`). Messages the
//! broker rejects for good (too large, say) are dead-lettered; transient failures are
//! retried by the producer without a deadline — an unreachable broker stalls the sink, and
//! backpressure pauses the source, rather than losing data.

use super::{Router, SinkContext, SinkError, SinkInput, SinkStats};
use crate::codec;
use crate::event::{DeadLetter, Events, SinkBatch};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use sluice_plugin_sdk::OriginRef;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub routes: Vec<String>,
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// The attribute whose value keys each log record.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Batches whose deliveries may be outstanding at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_batches: usize,
    /// Extra librdkafka producer properties (e.g. security settings).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_key_field() -> String {
    "service.name".into()
}

fn default_in_flight() -> usize {
    8
}

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
        Ok(())
    }
}

pub async fn start(
    ctx: SinkContext,
    config: &KafkaSinkConfig,
    mut rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let producer = producer(&ctx.name, config)?;
    let name = ctx.name.clone();
    let router = ctx.router.clone();
    let stats = ctx.stats.clone();
    let topic = config.topic.clone();
    let key_field = config.key_field.clone();
    let max_in_flight = config.max_in_flight_batches;
    Ok(tokio::spawn(async move {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                input = rx.recv(), if in_flight.len() < max_in_flight => {
                    let Some(input) = input else { break };
                    match input {
                        SinkInput::Flush(done) => {
                            while in_flight.next().await.is_some() {}
                            let _ = done.send(());
                        }
                        // In-flight batches complete on their own: nothing held per partition.
                        SinkInput::Revoked(_) => {}
                        SinkInput::Batch(batch) => {
                            let answers = enqueue(&producer, &topic, &key_field, &batch).await;
                            SinkStats::add(&stats.sent, batch.events.len() as u64);
                            in_flight.push(settle(
                                name.clone(),
                                batch,
                                answers,
                                router.clone(),
                                stats.clone(),
                            ));
                        }
                    }
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }))
}

/// The messages of a batch refused or rejected for good: (place in the batch, why).
type Rejections = Vec<(usize, String)>;

/// The broker's answers for one batch, gathered by the producer's delivery callback: one
/// count and one signal per batch rather than a future per message.
struct Answers {
    /// Messages not answered yet.
    pending: AtomicUsize,
    rejected: Mutex<Rejections>,
    /// Gets `rejected` once every message is answered. Dropped unsent if the producer
    /// drops messages without answering, which fails the batch.
    done: Mutex<Option<oneshot::Sender<Rejections>>>,
}

impl Answers {
    fn new(count: usize) -> (Arc<Answers>, oneshot::Receiver<Rejections>) {
        let (tx, rx) = oneshot::channel();
        let answers = Arc::new(Answers {
            pending: AtomicUsize::new(count),
            rejected: Mutex::new(Vec::new()),
            done: Mutex::new(Some(tx)),
        });
        if count == 0 {
            answers.finish();
        }
        (answers, rx)
    }

    /// Message `index` was delivered (`None`) or failed for good.
    fn answer(&self, index: usize, error: Option<String>) {
        if let Some(error) = error {
            lock(&self.rejected).push((index, error));
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        if let Some(done) = lock(&self.done).take() {
            let _ = done.send(std::mem::take(&mut *lock(&self.rejected)));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What travels with each message through librdkafka: its batch's answers and its place.
struct InFlight {
    answers: Arc<Answers>,
    index: usize,
}

/// Hands each delivery report to the batch its message belongs to.
struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, message: Box<InFlight>) {
        let error = result.as_ref().err().map(|(error, _)| error.to_string());
        message.answers.answer(message.index, error);
    }
}

/// How long each poll for delivery reports may wait. rust-rdkafka's poll rounds the time
/// left down to whole milliseconds and then polls without waiting, so it spins through the
/// last millisecond of every window: 1 % of a core per producer at its own threaded
/// producer's 100 ms, even when idle. A one-second window keeps that to 0.1 %.
const DELIVERY_POLL_WINDOW: Duration = Duration::from_secs(1);

/// The sink's producer, with a thread of its own that serves the delivery reports.
struct Producer {
    client: Arc<BaseProducer<Delivery>>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    fn start(name: &str, client: BaseProducer<Delivery>) -> Result<Producer, SinkError> {
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

fn producer(name: &str, config: &KafkaSinkConfig) -> Result<Producer, SinkError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        // No delivery deadline: a broker outage stalls the sink instead of dropping data.
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.kbytes", "65536");
    for (key, value) in &config.options {
        client.set(key, value);
    }
    let client = client
        .create_with_context(Delivery)
        .map_err(|e| SinkError::Start {
            sink: name.to_owned(),
            message: format!(
                "cannot create the Kafka producer: {e}. Check `brokers` and `options`."
            ),
        })?;
    Producer::start(name, client)
}

/// One message to produce.
struct Outgoing<'a> {
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: Option<OwnedHeaders>,
}

/// Hand every event of the batch to the producer, waiting while its queue is full. The
/// receiver gets the messages the client refused outright (too large, say) or the broker
/// rejected for good, once all are answered.
async fn enqueue(
    producer: &Producer,
    topic: &str,
    key_field: &str,
    batch: &SinkBatch,
) -> oneshot::Receiver<Rejections> {
    let (answers, done) = Answers::new(batch.events.len());
    let mut index = 0;
    let mut buf = Vec::with_capacity(512);
    let mut origin_key = String::new();
    let mut send = async |out: Outgoing<'_>| {
        let message = Box::new(InFlight {
            answers: answers.clone(),
            index,
        });
        index += 1;
        let mut record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, message).payload(out.payload);
        if let Some(key) = out.key {
            record = record.key(key);
        }
        if let Some(headers) = out.headers {
            record = record.headers(headers);
        }
        loop {
            match producer.client.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Refused before it reached the queue: retrying cannot help.
                Err((error, back)) => {
                    let message = back.delivery_opaque;
                    message
                        .answers
                        .answer(message.index, Some(error.to_string()));
                    return;
                }
            }
        }
    };
    match &*batch.events {
        Events::Logs(logs) => match logs.packed() {
            // The chain's output, read in place: no record is decoded to be encoded.
            Some(packed) => {
                for r in packed.view().iter() {
                    buf.clear();
                    codec::encode_view(&r, &mut buf);
                    let key = message_key(r.get_str(key_field), r.origin, &mut origin_key);
                    let out = Outgoing {
                        key: Some(key),
                        payload: &buf,
                        headers: None,
                    };
                    send(out).await;
                }
            }
            None => {
                for r in logs.records() {
                    buf.clear();
                    codec::encode_record(r, &mut buf);
                    let key = message_key(r.get_str(key_field), r.origin().view(), &mut origin_key);
                    let out = Outgoing {
                        key: Some(key),
                        payload: &buf,
                        headers: None,
                    };
                    send(out).await;
                }
            }
        },
        Events::Raw(messages) => {
            for m in messages {
                send(Outgoing {
                    key: m.key.as_deref(),
                    payload: &m.payload,
                    headers: None,
                })
                .await;
            }
        }
        Events::DeadLetters(letters) => {
            for d in letters {
                send(Outgoing {
                    key: None,
                    payload: &d.payload,
                    headers: Some(dlq_headers(d)),
                })
                .await;
            }
        }
    }
    done
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

fn dlq_headers(d: &DeadLetter) -> OwnedHeaders {
    let partition = d.origin.partition.to_string();
    let offset = d.origin.offset.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "sluice.dlq.reason",
            value: Some(d.reason.as_bytes()),
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
}

/// Wait for the broker's answers; dead-letter what it refused for good; then acknowledge.
async fn settle(
    name: String,
    batch: SinkBatch,
    answers: oneshot::Receiver<Rejections>,
    router: Arc<Router>,
    stats: Arc<SinkStats>,
) {
    let Ok(mut rejected) = answers.await else {
        tracing::error!(sink = %name, "producer went away before delivering; batch fails");
        return;
    };
    // Answers arrive in any order across partitions; dead letters keep the batch's order.
    rejected.sort_unstable_by_key(|&(index, _)| index);
    let delivered = batch.events.len() - rejected.len();
    SinkStats::add(&stats.acknowledged, delivered as u64);
    if rejected.is_empty() {
        batch.ack.ack();
        return;
    }
    if &*batch.route == "dlq" {
        tracing::error!(sink = %name, count = rejected.len(), error = %rejected[0].1,
            "dead letters were refused by the broker; the batch fails and will be replayed");
        return;
    }
    tracing::warn!(sink = %name, count = rejected.len(), error = %rejected[0].1, "broker refused messages; dead-lettering them");
    let letters: Vec<DeadLetter> = rejected
        .into_iter()
        .map(|(index, error)| dead_letter(&name, &batch, index, &error))
        .collect();
    SinkStats::add(&stats.dead_lettered, letters.len() as u64);
    if router
        .dead_letter(&name, letters, &batch.ack)
        .await
        .sent(&name)
    {
        batch.ack.ack();
    }
}

fn dead_letter(sink: &str, batch: &SinkBatch, index: usize, error: &str) -> DeadLetter {
    let reason = format!("sink `{sink}` rejected it: {error}");
    let timestamp = crate::time::now_ns();
    match &*batch.events {
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

    #[test]
    fn a_batch_settles_once_every_message_is_answered() {
        let (answers, mut done) = Answers::new(3);
        answers.answer(2, None);
        answers.answer(0, Some("too large".into()));
        assert!(
            done.try_recv().is_err(),
            "settled with a message unanswered"
        );
        answers.answer(1, None);
        assert_eq!(done.try_recv().unwrap(), vec![(0, "too large".to_owned())]);
    }

    #[test]
    fn an_empty_batch_settles_at_once() {
        let (_answers, mut done) = Answers::new(0);
        assert_eq!(done.try_recv().unwrap(), Vec::new());
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
}
