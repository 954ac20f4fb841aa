//! What makes two records "the same": the dedup key of a record.

use crate::hash::KeyHasher;
use sluice_plugin_sdk::RecordView;

/// How keys are built.
#[derive(Debug, Clone)]
pub enum KeySpec {
    /// `event.id`/`event_id` if present; else `service.name` + timestamp + body (a
    /// normalized record); else every attribute + body (a raw record, before normalize).
    Auto,
    /// These fields, in order. `@timestamp` is the record timestamp, `body` the body,
    /// `severity` the severity number; anything else an attribute.
    Fields(Vec<String>),
}

/// Which kind of key a record got (for tests and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EventId,
    Normalized,
    Raw,
    Fields,
}

impl KeySpec {
    pub fn key(&self, record: &RecordView<'_>) -> (u64, KeyKind) {
        let mut h = KeyHasher::default();
        match self {
            KeySpec::Fields(fields) => {
                for field in fields {
                    match field.as_str() {
                        "@timestamp" => h.i64(record.timestamp),
                        "body" => h.str(record.body),
                        "severity" => h.i64(record.severity_number.into()),
                        key => match record.get(key) {
                            Some(v) => h.value(v),
                            None => h.absent(),
                        },
                    }
                }
                (h.finish(), KeyKind::Fields)
            }
            KeySpec::Auto => {
                // One scan for the keys that decide the kind of key.
                let (mut event_id, mut service) = (None, None);
                for a in record.attributes {
                    match a.key {
                        "event.id" => event_id = Some(a.value),
                        "event_id" if event_id.is_none() => event_id = Some(a.value),
                        "service.name" => service = Some(a.value),
                        _ => {}
                    }
                }
                if let Some(id) = event_id {
                    h.bytes(b"id");
                    h.value(id);
                    return (h.finish(), KeyKind::EventId);
                }
                if let Some(service) = service {
                    h.bytes(b"norm");
                    h.value(service);
                    h.i64(record.timestamp);
                    h.str(record.body);
                    return (h.finish(), KeyKind::Normalized);
                }
                // Before normalize the record timestamp is the Kafka time, which differs
                // between copies of a line: the line's own fields decide.
                h.bytes(b"raw");
                for a in record.attributes {
                    h.str(a.key);
                    h.value(a.value);
                }
                h.str(record.body);
                (h.finish(), KeyKind::Raw)
            }
        }
    }
}
