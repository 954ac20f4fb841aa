//! The transactional producer of a host that reads Kafka exactly once
//! (`source.exactly_once`): one per host, shared by every Kafka sink and by the source,
//! which puts the consumed offsets and the plugins' state in the same transaction as the
//! records derived from them (KIP-98, with KIP-447's consumer-group fencing).
//!
//! The source drives the cycle: every `transaction_interval_ms` it brings the pipeline to a
//! stop between batches, waits until every sink has accepted everything routed so far,
//! then [`KafkaTransaction::commit`] sends the offsets, commits and begins the next
//! transaction. A failed transaction is not mended in place: the host stops with the error
//! and its replacement starts from the last committed transaction. `read_committed`
//! readers never see the records of an aborted one.

use super::kafka::{Answers, Delivery, InFlight, Producer, producer_settings};
use crate::kafka_security::KafkaSecurity;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the transactional producer is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionSettings {
    pub brokers: String,
    /// TLS and SASL: those every Kafka sink shares.
    pub security: KafkaSecurity,
    /// Stable across restarts of one host, so a restarted host aborts what its predecessor
    /// left open at once, instead of readers waiting for the transaction timeout.
    pub transactional_id: String,
    /// The broker aborts a transaction open longer than this (`transaction.timeout.ms`).
    pub timeout: Duration,
    /// librdkafka options: those every Kafka sink shares.
    pub options: BTreeMap<String, String>,
    /// The largest plugin-state snapshot the transactions carry, when they carry any: the
    /// producer's `message.max.bytes` is raised to fit it (each Kafka sink still holds its
    /// own records to its own limit).
    pub max_state_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error(
        "the Kafka producer with transactional id `{id}` was fenced: a newer one with the same id started (this host's replacement, or a second host with the same `source.transactional_id`), or the group moved on without this host. This host stops; give every host its own `source.transactional_id`"
    )]
    Fenced { id: String },
    #[error(
        "the Kafka transaction failed and was aborted ({reason}); readers with isolation.level=read_committed see none of its records"
    )]
    Aborted { reason: String },
    #[error(
        "the transactional Kafka producer failed: {reason}. Check `source.brokers`, that the brokers allow transactions (transaction.state.log.* settings on a small cluster), and that the host may write its transactional id"
    )]
    Failed { reason: String },
}

/// One host's transactional producer, with its transaction open.
pub struct KafkaTransaction {
    producer: Arc<Producer>,
    id: String,
    timeout: Duration,
}

/// How often a commit whose failure librdkafka calls retriable is tried before giving up.
const COMMIT_ATTEMPTS: u32 = 5;

impl KafkaTransaction {
    /// Create the producer, fence any earlier one with the same id (aborting what it left
    /// open), and begin the first transaction.
    pub fn start(
        settings: &TransactionSettings,
    ) -> Result<Arc<KafkaTransaction>, TransactionError> {
        let failed = |e: &dyn std::fmt::Display| TransactionError::Failed {
            reason: e.to_string(),
        };
        let timeout_ms = settings.timeout.as_millis().to_string();
        let mut config = ClientConfig::new();
        producer_settings(&mut config, &settings.brokers);
        settings.security.apply(&mut config);
        config
            .set("transactional.id", &settings.transactional_id)
            .set("transaction.timeout.ms", &timeout_ms)
            // A message must be delivered within its transaction.
            .set("message.timeout.ms", &timeout_ms);
        for (key, value) in &settings.options {
            config.set(key, value);
        }
        if let Some(state) = settings.max_state_bytes {
            let sinks = (settings.options.get("message.max.bytes"))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1_000_000);
            config.set("message.max.bytes", sinks.max(state).to_string());
        }
        let context = Delivery::new("sinks.<name>", &settings.security).map_err(|e| failed(&e))?;
        let client = config
            .create_with_context(context)
            .map_err(|e| failed(&e))?;
        let producer = Producer::start("exactly-once", client).map_err(|e| failed(&e))?;
        let transaction = KafkaTransaction {
            producer: Arc::new(producer),
            id: settings.transactional_id.clone(),
            timeout: settings.timeout,
        };
        let client = &transaction.producer.client;
        client
            .init_transactions(settings.timeout)
            .map_err(|e| transaction.classify(e))?;
        client
            .begin_transaction()
            .map_err(|e| transaction.classify(e))?;
        tracing::info!(transactional_id = %transaction.id, "exactly-once: transactional producer ready");
        Ok(Arc::new(transaction))
    }

    /// The producer the Kafka sinks write through.
    pub(super) fn producer(&self) -> Arc<Producer> {
        self.producer.clone()
    }

    /// Add a record to the open transaction outside any sink (the plugins' state). Its
    /// delivery is settled by the commit: a record that fails fails the commit.
    pub fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), TransactionError> {
        let (answers, _unwatched) = Answers::new(1);
        let opaque = Box::new(InFlight { answers, index: 0 });
        let mut record = BaseRecord::with_opaque_to(topic, opaque)
            .partition(partition)
            .key(key)
            .payload(value);
        loop {
            match self.producer.client.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(self.classify(e)),
            }
        }
    }

    /// Put `offsets` (the next offset to read, per partition) in the open transaction with
    /// the consumer's group metadata, commit it, and begin the next one.
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TransactionError> {
        let client = &self.producer.client;
        if offsets.count() > 0 {
            client
                .send_offsets_to_transaction(offsets, group, self.timeout)
                .map_err(|e| self.fail(e))?;
        }
        let mut attempt = 1;
        loop {
            match client.commit_transaction(self.timeout) {
                Ok(()) => break,
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && attempt < COMMIT_ATTEMPTS =>
                {
                    tracing::warn!(error = %e, attempt, "committing the Kafka transaction; trying again");
                    attempt += 1;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        client.begin_transaction().map_err(|e| self.fail(e))
    }

    /// Begin the next transaction after one was aborted.
    pub fn begin(&self) -> Result<(), TransactionError> {
        self.producer
            .client
            .begin_transaction()
            .map_err(|e| self.classify(e))
    }

    /// Abort the open transaction (the host is stopping after a failure): readers need not
    /// wait for the broker's timeout to pass it.
    pub fn abort(&self) {
        if let Err(e) = self.producer.client.abort_transaction(self.timeout) {
            tracing::warn!(error = %e, "aborting the Kafka transaction; the broker aborts it once transaction.timeout.ms passes");
        }
    }

    /// A failure inside the transaction: abort it when librdkafka says it must be.
    fn fail(&self, error: KafkaError) -> TransactionError {
        let requires_abort = matches!(&error, KafkaError::Transaction(e) if e.txn_requires_abort());
        if requires_abort {
            self.abort();
        }
        match self.classify(error) {
            TransactionError::Failed { reason } if requires_abort => {
                TransactionError::Aborted { reason }
            }
            other => other,
        }
    }

    fn classify(&self, error: KafkaError) -> TransactionError {
        use RDKafkaErrorCode::*;
        match error.rdkafka_error_code() {
            // A stale group generation (a commit racing a rebalance) is not among these:
            // the transaction is aborted and the host goes back to its last commit.
            Some(Fenced | ProducerFenced | InvalidProducerEpoch | FencedInstanceId) => {
                TransactionError::Fenced {
                    id: self.id.clone(),
                }
            }
            _ => TransactionError::Failed {
                reason: error.to_string(),
            },
        }
    }
}
