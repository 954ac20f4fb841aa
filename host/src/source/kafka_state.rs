//! The Kafka source's state topic: a compacted topic (`<group>.sluice-state` unless
//! `state_topic` names another) holding each source partition's latest plugin-state
//! [`Snapshot`], keyed `<topic>/<partition>`. A source partition's snapshots go to state
//! partition `partition % N`, so restoring a partition reads one state partition.
//!
//! Snapshots are stored only once the group has committed the offset they reflect (see
//! [`crate::state`]): a failed or late write leaves an older snapshot, which costs a
//! longer replay, never a wrong count. Hence writes are not waited for, except before a
//! revoked partition is let go, so its next owner finds its latest state.

use super::SourceError;
use super::kafka::KafkaSourceConfig;
use crate::kafka_security::{OAuth, TokenContext};
use crate::sink::kafka_transaction::{KafkaTransaction, TransactionError};
use crate::state::{Snapshot, SnapshotExchange};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of one stored snapshot beyond the stages' states (header, names).
const SNAPSHOT_OVERHEAD_BYTES: usize = 1 << 20;

/// The `max.message.bytes` of a state topic for snapshots of up to `max_snapshot_bytes`.
pub fn message_max_bytes(max_snapshot_bytes: usize) -> usize {
    max_snapshot_bytes + SNAPSHOT_OVERHEAD_BYTES
}
/// Longest a new assignment waits to read its partitions' state.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

pub struct StateTopic {
    name: String,
    partitions: i32,
    producer: ThreadedProducer<StateDelivery>,
    reader: ClientConfig,
    /// The source's OAUTHBEARER tokens, for the readers made on each assignment.
    oauth: OAuth,
    pub exchange: Arc<SnapshotExchange>,
}

/// Logs a snapshot that could not be stored: the previous one stays, and a restore from it
/// replays further.
struct StateDelivery(OAuth);

impl ClientContext for StateDelivery {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.0.generate()
    }
}

impl ProducerContext for StateDelivery {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, message)) = result {
            tracing::warn!(
                error = %e, topic = message.topic(),
                "a plugin state snapshot was not stored; the previous one stays, and a restore from it replays further"
            );
        }
    }
}

impl StateTopic {
    /// The state topic of `config`'s group, created compacted if it does not exist, for
    /// snapshots of up to `max_bytes`.
    pub fn open(
        config: &KafkaSourceConfig,
        exchange: Arc<SnapshotExchange>,
        max_bytes: usize,
    ) -> Result<StateTopic, SourceError> {
        let name = config.state_topic_name();
        let limit = message_max_bytes(max_bytes).to_string();
        let client = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &config.brokers);
            config.security.apply(&mut c);
            for (key, value) in &config.options {
                c.set(key, value);
            }
            for (key, value) in extra {
                c.set(*key, *value);
            }
            c
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SourceError::Kafka(format!(
                "plugin state topic `{name}`: {what}: {e}. Let the host create it (it needs the right to create topics), create it yourself compacted, name another with `source.state_topic`, or set `source.plugin_state = false`."
            ))
        };
        let oauth = config
            .security
            .oauth("source.state_topic")
            .map_err(|e| fail("source.security", &e))?;
        let admin: AdminClient<TokenContext> = client(&[])
            .create_with_context(TokenContext::new(oauth.clone()))
            .map_err(|e| fail("cannot create a client", &e))?;
        oauth
            .seed(admin.inner())
            .map_err(|e| fail("cannot give the client its OAUTHBEARER token", &e))?;
        let partitions = ensure_topic(&admin, config, &name, message_max_bytes(max_bytes))
            .map_err(|e| match crate::kafka_security::refusal(&client(&[]), &oauth) {
                Some(reason) => SourceError::Kafka(format!(
                    "the brokers refused to authenticate the plugin state topic's client ({reason}); {}",
                    crate::kafka_security::authentication_hint("source", &config.security)
                )),
                None => fail("setting it up", &e),
            })?;
        let producer = client(&[
            ("message.max.bytes", &limit),
            ("enable.idempotence", "true"),
            ("linger.ms", "50"),
        ])
        .create_with_context(StateDelivery(oauth.clone()))
        .map_err(|e| fail("cannot create its producer", &e))?;
        let reader = client(&[
            ("group.id", &format!("{}.state-reader", config.group_id)),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            ("isolation.level", "read_committed"),
            ("receive.message.max.bytes", "2147483647"),
            ("fetch.max.bytes", &limit),
        ]);
        tracing::info!(topic = %name, partitions, "plugin state kept in a compacted topic");
        Ok(StateTopic {
            name,
            partitions,
            producer,
            reader,
            oauth,
            exchange,
        })
    }

    fn state_partition(&self, partition: i32) -> i32 {
        partition.rem_euclid(self.partitions)
    }

    /// The group committed `offsets`: store the snapshots they cover.
    pub fn store_committed(&self, offsets: &[((String, i32), i64)]) {
        for snapshot in self.exchange.take_committed(offsets) {
            let key = Snapshot::key(&snapshot.topic, snapshot.partition);
            let value = snapshot.encode();
            let record = BaseRecord::to(&self.name)
                .partition(self.state_partition(snapshot.partition))
                .key(&key)
                .payload(&value);
            if let Err((e, _)) = self.producer.send(record) {
                tracing::warn!(error = %e, key, "a plugin state snapshot was not stored; the previous one stays");
            }
        }
    }

    /// Reading exactly once: put the snapshots `offsets` cover in the open transaction,
    /// committed with those offsets.
    pub fn store_in(
        &self,
        transaction: &KafkaTransaction,
        offsets: &[((String, i32), i64)],
    ) -> Result<(), TransactionError> {
        for snapshot in self.exchange.take_committed(offsets) {
            let key = Snapshot::key(&snapshot.topic, snapshot.partition);
            let partition = self.state_partition(snapshot.partition);
            transaction.send(&self.name, partition, key.as_bytes(), &snapshot.encode())?;
        }
        Ok(())
    }

    /// Wait for what was sent to be stored, until `deadline`.
    pub fn flush(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.flush(left) {
            tracing::warn!(error = %e, "plugin state snapshots not all stored before the partitions were let go; their next owner replays further");
        }
    }

    /// The latest stored snapshot of each of `wanted` that has one.
    pub fn load(&self, wanted: &[(String, i32)]) -> HashMap<(String, i32), Snapshot> {
        match self.read(wanted) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, topic = %self.name, "cannot read the plugin state of the assigned partitions; they start with empty state");
                HashMap::new()
            }
        }
    }

    fn read(
        &self,
        wanted: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), Snapshot>, rdkafka::error::KafkaError> {
        let reader: BaseConsumer<TokenContext> = self
            .reader
            .create_with_context(TokenContext::new(self.oauth.clone()))?;
        // Read inside the source's rebalance callback, before any poll: its first token
        // cannot wait for one.
        self.oauth
            .seed(reader.client())
            .map_err(rdkafka::error::KafkaError::ClientCreation)?;
        let deadline = Instant::now() + LOAD_TIMEOUT;
        let state_partitions: HashSet<i32> = wanted
            .iter()
            .map(|(_, p)| self.state_partition(*p))
            .collect();
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for sp in state_partitions {
            let (low, high) = reader.fetch_watermarks(&self.name, sp, LOAD_TIMEOUT)?;
            if high > low {
                ends.insert(sp, high);
                tpl.add_partition_offset(&self.name, sp, Offset::Beginning)?;
            }
        }
        let mut found: HashMap<(String, i32), Snapshot> = HashMap::new();
        if ends.is_empty() {
            return Ok(found);
        }
        reader.assign(&tpl)?;
        let keys: HashMap<String, (String, i32)> = wanted
            .iter()
            .map(|(t, p)| (Snapshot::key(t, *p), (t.clone(), *p)))
            .collect();
        while !ends.is_empty() {
            if Instant::now() >= deadline {
                return Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            let polled = reader.poll(Duration::from_millis(200));
            // Done with a partition once the position passed its end (control records of
            // transactions take offsets no message is read at).
            let position = reader.position()?;
            ends.retain(|sp, end| {
                !matches!(
                    position.find_partition(&self.name, *sp).map(|e| e.offset()),
                    Some(Offset::Offset(at)) if at >= *end
                )
            });
            let Some(message) = polled else {
                continue;
            };
            let message = message?;
            let Some(wanted) = message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| keys.get(k))
            else {
                continue;
            };
            match message
                .payload()
                .map(|v| Snapshot::decode(&wanted.0, wanted.1, v))
            {
                None => {
                    found.remove(wanted);
                }
                Some(Ok(snapshot)) => {
                    found.insert(wanted.clone(), snapshot);
                }
                Some(Err(e)) => tracing::warn!(
                    error = %e, topic = %wanted.0, partition = wanted.1,
                    "a stored plugin state snapshot is unreadable and skipped"
                ),
            }
        }
        Ok(found)
    }
}

/// Create `name` compacted unless it exists; its partition count.
fn ensure_topic<C: ClientContext>(
    admin: &AdminClient<C>,
    config: &KafkaSourceConfig,
    name: &str,
    max_message_bytes: usize,
) -> Result<i32, String> {
    let metadata_partitions = |topic: &str| -> Result<i32, String> {
        partitions_of(admin, topic)
            .map(|count| count.unwrap_or(0) as i32)
            .map_err(|e| format!("cannot read the cluster's metadata: {e}"))
    };
    let existing = metadata_partitions(name)?;
    if existing > 0 {
        return Ok(existing);
    }
    // As many partitions as the widest source topic: one state partition per source
    // partition, as a Kafka Streams changelog has.
    let mut partitions = 1;
    for topic in &config.topics {
        partitions = partitions.max(metadata_partitions(topic)?);
    }
    let settings = state_topic_settings(max_message_bytes);
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    for (key, value) in &settings {
        topic = topic.set(key, value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .map_err(|e| format!("cannot create it: {e}"))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = name, partitions, "created the plugin state topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(format!("cannot create it: {code}")),
        }
    }
    Ok(partitions)
}

/// The settings a state topic is created with: compacted, room for the largest snapshot.
pub fn state_topic_settings(max_message_bytes: usize) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".into()),
        ("max.message.bytes", max_message_bytes.to_string()),
        // Segments roll hourly so the cleaner can drop superseded snapshots.
        ("segment.ms", "3600000".into()),
    ]
}

/// How many partitions `topic` has, `None` if it does not exist. Reads the whole cluster's
/// metadata: asking for one topic by name makes a broker with `auto.create.topics.enable`
/// create it, with the broker's defaults (a state topic not compacted).
pub fn partitions_of<C: ClientContext>(
    admin: &AdminClient<C>,
    topic: &str,
) -> Result<Option<usize>, rdkafka::error::KafkaError> {
    let metadata = admin.inner().fetch_metadata(None, LOAD_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}
