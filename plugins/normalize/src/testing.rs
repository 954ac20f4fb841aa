//! Test support: build records from raw Kafka message text the way the host decodes them
//! (a JSON object → flattened attributes with an empty body; anything else → the body).

use crate::formats::json;
use sluice_plugin_sdk::{Origin, Record};

/// A record as the host would hand it to the first plugin of the chain.
pub fn host_record(
    message: &str,
    topic: &str,
    offset: i64,
    kafka_ts: i64,
    observed_ts: i64,
) -> Record {
    let mut record = Record::new(Origin {
        topic: topic.to_string(),
        partition: 0,
        offset,
    });
    record.timestamp = kafka_ts;
    record.observed_timestamp = observed_ts;
    let trimmed = message.trim();
    if !(trimmed.starts_with('{') && json::parse_object(trimmed, &mut record.attributes)) {
        record.body = message.to_string();
    }
    record
}
