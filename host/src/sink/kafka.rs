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
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Deserialize;
use sluice_plugin_sdk::OriginRef;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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
                        SinkInput::Batch(batch) => {
                            let deliveries = enqueue(&producer, &topic, &key_field, &batch).await;
                            SinkStats::add(&stats.sent, deliveries.len() as u64);
                            in_flight.push(settle(
                                name.clone(),
                                batch,
                                deliveries,
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

fn producer(name: &str, config: &KafkaSinkConfig) -> Result<FutureProducer, SinkError> {
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
    client.create().map_err(|e| SinkError::Start {
        sink: name.to_owned(),
        message: format!("cannot create the Kafka producer: {e}. Check `brokers` and `options`."),
    })
}

/// One message to produce.
struct Outgoing<'a> {
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: Option<OwnedHeaders>,
}

/// Hand every event of the batch to the producer, waiting while its queue is full.
/// A message the client refuses outright (too large, say) is `Err` with the reason.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key_field: &str,
    batch: &SinkBatch,
) -> Vec<Result<DeliveryFuture, String>> {
    let mut deliveries = Vec::with_capacity(batch.events.len());
    let mut buf = Vec::with_capacity(512);
    let mut origin_key = String::new();
    let send = async |out: Outgoing<'_>| {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(out.payload);
        if let Some(key) = out.key {
            record = record.key(key);
        }
        if let Some(headers) = out.headers {
            record = record.headers(headers);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Refused before it reached the queue: retrying cannot help.
                Err((error, _)) => return Err(error.to_string()),
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
                    deliveries.push(send(out).await);
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
                    deliveries.push(send(out).await);
                }
            }
        },
        Events::Raw(messages) => {
            for m in messages {
                deliveries.push(
                    send(Outgoing {
                        key: m.key.as_deref(),
                        payload: &m.payload,
                        headers: None,
                    })
                    .await,
                );
            }
        }
        Events::DeadLetters(letters) => {
            for d in letters {
                deliveries.push(
                    send(Outgoing {
                        key: None,
                        payload: &d.payload,
                        headers: Some(dlq_headers(d)),
                    })
                    .await,
                );
            }
        }
    }
    deliveries
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
    deliveries: Vec<Result<DeliveryFuture, String>>,
    router: Arc<Router>,
    stats: Arc<SinkStats>,
) {
    let mut rejected = Vec::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                rejected.push((index, error));
                continue;
            }
        };
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => rejected.push((index, error.to_string())),
            Err(_cancelled) => {
                tracing::error!(sink = %name, "producer went away before delivering; batch fails");
                return;
            }
        }
    }
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
    if router.dead_letter(letters, &batch.ack).await {
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
