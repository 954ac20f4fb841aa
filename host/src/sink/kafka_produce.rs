//! Many messages handed to librdkafka in one call, through a topic handle kept for the
//! producer's life.
//!
//! rust-rdkafka's `send` names the topic for every message: it copies the name into a
//! `CString`, and librdkafka looks the name up under its client-wide write lock, takes the
//! topic's lock and reads the clock twice — per message. `rd_kafka_produce_batch` on a
//! topic handle does the lookup once, and the lock and the clock reads once per call.
//! Messages go to librdkafka's partitioner exactly as with `send`, in the order given, and
//! are answered by the same delivery reports.

use super::kafka::{Delivery, InFlight};
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::Arc;

/// librdkafka's "any partition": its partitioner chooses by key.
const PARTITION_UNASSIGNED: i32 = -1;

/// A message to hand over: its key, its payload (both copied by librdkafka) and what its
/// delivery report settles.
pub(super) struct Outgoing<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: &'a [u8],
    pub(super) in_flight: Box<InFlight>,
}

/// The failure of a message that did not reach librdkafka's queue.
pub(super) struct Refused<'a> {
    pub(super) message: Outgoing<'a>,
    pub(super) code: RDKafkaErrorCode,
}

/// One topic of one producer.
pub(super) struct TopicHandle {
    topic: NonNull<rdsys::rd_kafka_topic_t>,
    /// The client the handle belongs to, kept alive by it: the handle is destroyed first
    /// (see `Drop`), then this.
    _client: Arc<BaseProducer<Delivery>>,
}

// SAFETY: librdkafka's topic handles may be used and destroyed from any thread; the
// client they belong to is itself `Send + Sync`.
unsafe impl Send for TopicHandle {}
// SAFETY: as above; `rd_kafka_produce_batch` locks what it shares.
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    pub(super) fn new(
        client: Arc<BaseProducer<Delivery>>,
        topic: &str,
    ) -> Result<TopicHandle, String> {
        let name = CString::new(topic).map_err(|_| format!("topic `{topic}` holds a NUL byte"))?;
        // SAFETY: a live client handle and a NUL-terminated name, which librdkafka copies.
        // A NULL configuration takes the producer's own topic settings (acks, compression,
        // timeouts), as a topic named in `send` does.
        let raw = unsafe {
            rdsys::rd_kafka_topic_new(
                client.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let topic = NonNull::new(raw)
            .ok_or_else(|| format!("librdkafka gave no handle for topic `{topic}`"))?;
        Ok(TopicHandle {
            topic,
            _client: client,
        })
    }

    /// Hand `messages` over, in order. Returns those that did not reach the queue, in
    /// order, each with why: a full queue refuses the first message that does not fit and
    /// every one after it. Each message handed over is answered by its delivery report.
    pub(super) fn produce<'a>(&self, messages: Vec<Outgoing<'a>>) -> Vec<Refused<'a>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let mut native: Vec<rdsys::rd_kafka_message_t> = Vec::with_capacity(messages.len());
        let mut borrowed = Vec::with_capacity(messages.len());
        for Outgoing {
            key,
            payload,
            in_flight,
        } in messages
        {
            let (key_ptr, key_len) = key.map_or((std::ptr::null_mut(), 0), |k| {
                (k.as_ptr() as *mut c_void, k.len())
            });
            native.push(rdsys::rd_kafka_message_t {
                err: RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: PARTITION_UNASSIGNED,
                payload: payload.as_ptr() as *mut c_void,
                len: payload.len(),
                key: key_ptr,
                key_len,
                offset: 0,
                // Taken back below unless librdkafka accepts the message; its delivery
                // report gives it back to `Delivery::delivery` as rust-rdkafka's `send`'s.
                _private: Box::into_raw(in_flight).cast::<c_void>(),
            });
            borrowed.push((key, payload));
        }
        let count = i32::try_from(native.len()).expect("a batch of fewer than 2^31 messages");
        // SAFETY: the topic handle is live (destroyed only on drop, before its client);
        // every key and payload pointer is valid for its length for this call, and
        // `RD_KAFKA_MSG_F_COPY` makes librdkafka copy them before it returns. librdkafka
        // takes ownership of `_private` of each message it accepts (and sets its `err`
        // to no error); the others are returned to us below.
        unsafe {
            rdsys::rd_kafka_produce_batch(
                self.topic.as_ptr(),
                PARTITION_UNASSIGNED,
                rdsys::RD_KAFKA_MSG_F_COPY,
                native.as_mut_ptr(),
                count,
            );
        }
        let mut refused = Vec::new();
        for (message, (key, payload)) in native.into_iter().zip(borrowed) {
            if message.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                continue;
            }
            // SAFETY: librdkafka did not accept this message, so `_private` is still the
            // box made above, owned by nobody else.
            let in_flight = unsafe { Box::from_raw(message._private.cast::<InFlight>()) };
            refused.push(Refused {
                message: Outgoing {
                    key,
                    payload,
                    in_flight,
                },
                code: message.err.into(),
            });
        }
        refused
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is destroyed once, while
        // `self.client` still holds the client alive. Messages already queued keep their
        // own reference to the topic.
        unsafe { rdsys::rd_kafka_topic_destroy(self.topic.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kafka::{Answers, Producer, producer_settings};
    use super::*;
    use crate::kafka_security::KafkaSecurity;
    use rdkafka::ClientConfig;
    use std::time::Duration;

    /// A producer against the local broker (`SLUICE_KAFKA`), set up as a sink's, with
    /// `extra` settings, and a fresh topic on it (the local broker creates it on demand).
    fn topic(extra: &[(&str, &str)]) -> (Producer, TopicHandle) {
        let brokers = std::env::var("SLUICE_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let mut config = ClientConfig::new();
        producer_settings(&mut config, &brokers);
        for (key, value) in extra {
            config.set(*key, *value);
        }
        let context = Delivery::new("test", &KafkaSecurity::default()).unwrap();
        let producer = Producer::start("test", config.create_with_context(context).unwrap());
        let producer = producer.unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("produce-batch-{}-{nanos}", std::process::id());
        let handle = TopicHandle::new(producer.client.clone(), &name).unwrap();
        (producer, handle)
    }

    fn outgoing<'a>(answers: &Arc<Answers>, index: usize, payload: &'a [u8]) -> Outgoing<'a> {
        Outgoing {
            key: Some(b"k"),
            payload,
            in_flight: Box::new(InFlight {
                answers: answers.clone(),
                index,
            }),
        }
    }

    /// The refused messages' places in the batch and codes.
    fn places(refused: &[Refused<'_>]) -> Vec<(usize, RDKafkaErrorCode)> {
        (refused.iter())
            .map(|r| (r.message.in_flight.index, r.code))
            .collect()
    }

    #[tokio::test]
    async fn messages_handed_over_together_are_delivered_and_one_too_large_comes_back_alone() {
        let (_producer, topic) = topic(&[("message.max.bytes", "1000")]);
        // Answers for the two messages librdkafka takes; the one it refuses comes back.
        let (answers, done) = Answers::new(2);
        let large = vec![b'x'; 2_000];
        let messages = vec![
            outgoing(&answers, 0, b"first"),
            outgoing(&answers, 1, &large),
            outgoing(&answers, 2, b"third"),
        ];
        let refused = topic.produce(messages);
        assert_eq!(
            places(&refused),
            vec![(1, RDKafkaErrorCode::MessageSizeTooLarge)]
        );
        assert_eq!(refused[0].message.payload.len(), 2_000);
        drop(refused);
        let failed = tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .expect("both messages are answered")
            .expect("answered by their delivery reports");
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_the_first_message_that_does_not_fit_and_all_after_it() {
        // Room for two messages, held a while before they are sent.
        let (_producer, topic) =
            topic(&[("queue.buffering.max.messages", "2"), ("linger.ms", "200")]);
        let (answers, done) = Answers::new(2);
        let messages = (0..5).map(|i| outgoing(&answers, i, b"m")).collect();
        let refused = topic.produce(messages);
        let full = RDKafkaErrorCode::QueueFull;
        assert_eq!(places(&refused), vec![(2, full), (3, full), (4, full)]);
        drop(refused);
        let failed = tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .expect("the two queued messages are answered")
            .expect("answered by their delivery reports");
        assert!(failed.is_empty(), "{failed:?}");
    }
}
