//! Events → search documents: ECS JSON, the index (or data stream) each goes to, and the
//! deterministic `_id` that makes retries and replays harmless.
//!
//! Log records keep the ECS fields listed in [`ECS_FIELDS`] under their ECS names; every
//! other attribute goes under `labels.<key with dots replaced by _>` as a string, so one
//! service's odd field can never clash with another's mapping. Records on the `metrics`
//! and `alerts` routes carry Sluice's own schema (see the metrics plugin) and keep their
//! attributes as they are, with their numbers.
//!
//! `_id`s: a log record's is `<topic>:<partition>:<offset>:<n>`, `n` counting the outputs
//! of that origin within the batch (all outputs of one input arrive in one batch, in a
//! stable order). A metric's is the service, window and origin (each host's partial window
//! is its own document; dashboards sum them). An alert's is its `alert.id`, which every
//! host and replay computes the same. A dead letter's adds the hash of its reason and
//! payload: letters of one origin can come from different stages and batches.

use super::config::IndexConfig;
use crate::codec::{self, write_str, write_value};
use crate::event::{DeadLetter, RawMessage};
use crate::route::RouteName;
use crate::{Record, Value, time};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// How a field is mapped in the index template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Keyword,
    /// Full text (`match_only_text` on Elasticsearch, `text` on OpenSearch).
    Text,
    Long,
    Double,
    Date,
    /// Kept in `_source` only.
    Stored,
}

/// ECS fields a log document keeps under their own names, with their mapping.
pub const ECS_FIELDS: &[(&str, FieldType)] = &[
    ("@timestamp", FieldType::Date),
    ("message", FieldType::Text),
    ("ecs.version", FieldType::Keyword),
    ("log.level", FieldType::Keyword),
    ("log.logger", FieldType::Keyword),
    ("log.syslog.priority", FieldType::Long),
    ("log.syslog.facility.code", FieldType::Long),
    ("log.syslog.severity.code", FieldType::Long),
    ("service.name", FieldType::Keyword),
    ("service.version", FieldType::Keyword),
    ("service.environment", FieldType::Keyword),
    ("host.name", FieldType::Keyword),
    ("host.hostname", FieldType::Keyword),
    ("trace.id", FieldType::Keyword),
    ("span.id", FieldType::Keyword),
    ("transaction.id", FieldType::Keyword),
    ("event.dataset", FieldType::Keyword),
    ("event.id", FieldType::Keyword),
    ("event.kind", FieldType::Keyword),
    ("event.category", FieldType::Keyword),
    ("event.action", FieldType::Keyword),
    ("event.outcome", FieldType::Keyword),
    ("event.duration", FieldType::Long),
    ("event.original", FieldType::Stored),
    ("error.type", FieldType::Keyword),
    ("error.message", FieldType::Text),
    ("error.stack_trace", FieldType::Stored),
    ("http.version", FieldType::Keyword),
    ("http.request.method", FieldType::Keyword),
    ("http.request.referrer", FieldType::Keyword),
    ("http.request.body.bytes", FieldType::Long),
    ("http.response.status_code", FieldType::Long),
    ("http.response.body.bytes", FieldType::Long),
    ("url.full", FieldType::Keyword),
    ("url.original", FieldType::Keyword),
    ("url.path", FieldType::Keyword),
    ("url.query", FieldType::Keyword),
    ("url.domain", FieldType::Keyword),
    ("user.name", FieldType::Keyword),
    ("user.id", FieldType::Keyword),
    ("user_agent.original", FieldType::Keyword),
    // Keyword rather than `ip`: a malformed address must not dead-letter the whole line.
    ("client.ip", FieldType::Keyword),
    ("source.ip", FieldType::Keyword),
    ("process.pid", FieldType::Long),
    ("process.name", FieldType::Keyword),
    ("container.id", FieldType::Keyword),
    ("cloud.region", FieldType::Keyword),
];

/// Fields of the metrics plugin's metric and alert records, for the template.
pub const SLUICE_FIELDS: &[(&str, FieldType)] = &[
    ("metric.window.start", FieldType::Long),
    ("metric.window.end", FieldType::Long),
    ("metric.window.seconds", FieldType::Double),
    ("count", FieldType::Long),
    ("error_count", FieldType::Long),
    ("error_rate", FieldType::Double),
    ("throughput_rps", FieldType::Double),
    ("latency.count", FieldType::Long),
    ("latency.p50_ms", FieldType::Double),
    ("latency.p95_ms", FieldType::Double),
    ("latency.p99_ms", FieldType::Double),
    ("latency.min_ms", FieldType::Double),
    ("latency.max_ms", FieldType::Double),
    ("latency.sketch", FieldType::Stored),
    ("alert.id", FieldType::Keyword),
    ("alert.kind", FieldType::Keyword),
    ("alert.severity", FieldType::Keyword),
    ("alert.observed", FieldType::Double),
    ("alert.baseline", FieldType::Double),
    ("alert.zscore", FieldType::Double),
    ("alert.window.start", FieldType::Long),
    ("alert.window.end", FieldType::Long),
];

/// Longest `_id` the engines accept (bytes); longer natural ids are hashed.
const MAX_ID_BYTES: usize = 512;

fn is_ecs(key: &str) -> bool {
    ECS_FIELDS.iter().any(|(name, _)| *name == key)
}

/// Where documents go, per route.
#[derive(Debug, Clone)]
pub enum IndexNaming {
    DataStream { dataset: String, namespace: String },
    Daily { prefix: String },
}

impl From<&IndexConfig> for IndexNaming {
    fn from(c: &IndexConfig) -> Self {
        match c {
            IndexConfig::DataStream { dataset, namespace } => IndexNaming::DataStream {
                dataset: dataset.clone(),
                namespace: namespace.clone(),
            },
            IndexConfig::Daily { prefix } => IndexNaming::Daily {
                prefix: prefix.clone(),
            },
        }
    }
}

/// A route name made safe for an index name.
fn route_part(route: &RouteName) -> String {
    route
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl IndexNaming {
    pub fn is_data_stream(&self) -> bool {
        matches!(self, IndexNaming::DataStream { .. })
    }

    /// `event.dataset` of the documents of `route`.
    pub fn dataset(&self, route: &RouteName) -> String {
        let base = match self {
            IndexNaming::DataStream { dataset, .. } => dataset.as_str(),
            IndexNaming::Daily { .. } => "sluice",
        };
        match route {
            RouteName::Cleaned | RouteName::Metrics => base.to_owned(),
            other => format!("{base}.{}", route_part(other)),
        }
    }

    /// The index or data stream for a document of `route` with event time `timestamp_ns`.
    /// Daily indices follow the event time, not the clock, so a replay lands where the
    /// first write did.
    pub fn index(&self, route: &RouteName, timestamp_ns: i64) -> String {
        match self {
            IndexNaming::DataStream { namespace, .. } => {
                let kind = if *route == RouteName::Metrics {
                    "metrics"
                } else {
                    "logs"
                };
                format!("{kind}-{}-{namespace}", self.dataset(route))
            }
            IndexNaming::Daily { prefix } => {
                let (y, m, d, ..) = time::utc_parts(timestamp_ns);
                match route {
                    RouteName::Cleaned => format!("{prefix}-{y:04}.{m:02}.{d:02}"),
                    other => format!("{prefix}-{}-{y:04}.{m:02}.{d:02}", route_part(other)),
                }
            }
        }
    }

    /// Index patterns (for templates) per template kind: `(logs patterns, metrics patterns)`.
    pub fn patterns(&self) -> (Vec<String>, Vec<String>) {
        match self {
            IndexNaming::DataStream { dataset, .. } => (
                vec![format!("logs-{dataset}-*"), format!("logs-{dataset}.*-*")],
                vec![format!("metrics-{dataset}-*")],
            ),
            IndexNaming::Daily { prefix } => (vec![format!("{prefix}-*")], Vec::new()),
        }
    }
}

/// One encoded `_bulk` item: the action line and the document, each ending in `\n`.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub id: String,
    /// Action and source lines, ready to concatenate into a request body.
    pub lines: Vec<u8>,
    /// Where the document starts within `lines` (for dead letters).
    pub source_start: usize,
}

impl BulkItem {
    fn new(index: &str, id: String, source: &[u8]) -> BulkItem {
        let mut lines = Vec::with_capacity(source.len() + index.len() + id.len() + 40);
        lines.extend_from_slice(b"{\"create\":{\"_index\":");
        write_str(&mut lines, index);
        lines.extend_from_slice(b",\"_id\":");
        write_str(&mut lines, &id);
        lines.extend_from_slice(b"}}\n");
        let source_start = lines.len();
        lines.extend_from_slice(source);
        lines.push(b'\n');
        BulkItem {
            id,
            lines,
            source_start,
        }
    }

    /// The document JSON.
    pub fn source(&self) -> &[u8] {
        &self.lines[self.source_start..self.lines.len() - 1]
    }
}

/// Encodes one route's events into bulk items.
pub struct Encoder<'a> {
    pub naming: &'a IndexNaming,
    pub route: &'a RouteName,
}

impl Encoder<'_> {
    pub fn logs(&self, records: &[Record]) -> Vec<BulkItem> {
        let dataset = self.naming.dataset(self.route);
        let keep_attributes = matches!(self.route, RouteName::Metrics | RouteName::Alerts);
        let mut per_origin: HashMap<(&str, i32, i64), u32> = HashMap::new();
        let mut indices = Indices::new(self.naming, self.route);
        let mut doc = Vec::with_capacity(512);
        records
            .iter()
            .map(|r| {
                let o = r.origin();
                let n = per_origin
                    .entry((&o.topic, o.partition, o.offset))
                    .or_default();
                let position = *n;
                *n += 1;
                let id = self.record_id(r, position);
                doc.clear();
                encode_log(r, &dataset, keep_attributes, &mut doc);
                BulkItem::new(indices.of(event_time(r)), id, &doc)
            })
            .collect()
    }

    fn record_id(&self, r: &Record, position: u32) -> String {
        let o = r.origin();
        let origin = format!("{}:{}:{}:{position}", o.topic, o.partition, o.offset);
        let natural = match self.route {
            RouteName::Metrics => r
                .get_str("service.name")
                .zip(r.get("metric.window.start"))
                .map(|(service, start)| {
                    let start = match start {
                        Value::Int(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    format!("metric:{service}:{start}:{origin}")
                }),
            RouteName::Alerts => r.get_str("alert.id").map(|id| format!("alert:{id}")),
            _ => None,
        };
        bounded_id(natural.unwrap_or(origin))
    }

    pub fn raw(&self, messages: &[RawMessage]) -> Vec<BulkItem> {
        let dataset = self.naming.dataset(self.route);
        messages
            .iter()
            .map(|m| {
                let mut doc = Vec::with_capacity(m.payload.len() + 128);
                start_doc(&mut doc, m.timestamp, &dataset);
                doc.extend_from_slice(b",\"message\":");
                write_str(&mut doc, &String::from_utf8_lossy(&m.payload));
                if let Some(key) = &m.key {
                    doc.extend_from_slice(b",\"labels.kafka_key\":");
                    write_str(&mut doc, &String::from_utf8_lossy(key));
                }
                doc.push(b'}');
                let o = &m.origin;
                let id = bounded_id(format!("{}:{}:{}:0", o.topic, o.partition, o.offset));
                BulkItem::new(&self.naming.index(self.route, m.timestamp), id, &doc)
            })
            .collect()
    }

    pub fn dead_letters(&self, letters: &[DeadLetter]) -> Vec<BulkItem> {
        let dataset = self.naming.dataset(self.route);
        let mut per_letter: HashMap<(&str, i32, i64, u64), u32> = HashMap::new();
        letters
            .iter()
            .map(|d| {
                let o = &d.origin;
                // One origin can have several dead letters (a plugin's fan-out, refused at
                // different stages and batches): the letter's own hash tells them apart,
                // and stays the same when a replay writes the letter again.
                let letter = letter_hash(d);
                let n = per_letter
                    .entry((&o.topic, o.partition, o.offset, letter))
                    .or_default();
                let id = bounded_id(format!(
                    "{}:{}:{}:{letter:016x}:{n}",
                    o.topic, o.partition, o.offset
                ));
                *n += 1;
                let mut doc = Vec::with_capacity(d.payload.len() + d.reason.len() + 160);
                start_doc(&mut doc, d.timestamp, &dataset);
                doc.extend_from_slice(b",\"message\":");
                write_str(&mut doc, &String::from_utf8_lossy(&d.payload));
                doc.extend_from_slice(b",\"error.message\":");
                write_str(&mut doc, &d.reason);
                doc.extend_from_slice(b",\"labels.origin_topic\":");
                write_str(&mut doc, &o.topic);
                doc.extend_from_slice(
                    format!(
                        ",\"labels.origin_partition\":\"{}\",\"labels.origin_offset\":\"{}\"}}",
                        o.partition, o.offset
                    )
                    .as_bytes(),
                );
                BulkItem::new(&self.naming.index(self.route, d.timestamp), id, &doc)
            })
            .collect()
    }
}

/// The index of each document of one route, named once per UTC day rather than once per
/// document: a batch's records nearly all fall on the same day.
struct Indices<'a> {
    naming: &'a IndexNaming,
    route: &'a RouteName,
    /// The day (since the epoch) `name` is for; `None` before the first document.
    day: Option<i64>,
    name: String,
}

impl<'a> Indices<'a> {
    const NS_PER_DAY: i64 = 86_400_000_000_000;

    fn new(naming: &'a IndexNaming, route: &'a RouteName) -> Self {
        Indices {
            naming,
            route,
            day: None,
            name: String::new(),
        }
    }

    fn of(&mut self, timestamp_ns: i64) -> &str {
        let day = timestamp_ns.div_euclid(Self::NS_PER_DAY);
        if self.day != Some(day) {
            self.name = self.naming.index(self.route, timestamp_ns);
            self.day = Some(day);
        }
        &self.name
    }
}

/// FNV-1a over a dead letter's reason and payload.
fn letter_hash(letter: &DeadLetter) -> u64 {
    let bytes = (letter.reason.bytes())
        .chain([0xff])
        .chain(letter.payload.iter().copied());
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The record's event time, else when the host saw it.
fn event_time(r: &Record) -> i64 {
    if r.timestamp > 0 {
        r.timestamp
    } else {
        r.observed_timestamp
    }
}

fn start_doc(doc: &mut Vec<u8>, timestamp_ns: i64, dataset: &str) {
    doc.extend_from_slice(b"{\"@timestamp\":\"");
    doc.extend_from_slice(time::rfc3339_millis(timestamp_ns).as_bytes());
    doc.extend_from_slice(b"\",\"ecs.version\":\"");
    doc.extend_from_slice(ECS_VERSION.as_bytes());
    doc.extend_from_slice(b"\",\"event.dataset\":");
    write_str(doc, dataset);
}

/// Encode a log record as an ECS document with dotted keys (the engines expand them).
pub fn encode_log(r: &Record, dataset: &str, keep_attributes: bool, doc: &mut Vec<u8>) {
    start_doc(doc, event_time(r), dataset);
    // Fields written once; later attributes with the same name are dropped rather than
    // producing a duplicate key, which the engine would reject.
    let mut written = WrittenKeys::new(r.attributes.len());
    for key in ["@timestamp", "ecs.version", "event.dataset"] {
        written.insert(Cow::Borrowed(key));
    }
    let level = match codec::level_text(r) {
        "" => r.get_str("log.level").unwrap_or(""),
        level => level,
    };
    if !level.is_empty() {
        doc.extend_from_slice(b",\"log.level\":");
        write_str(doc, level);
        written.insert(Cow::Borrowed("log.level"));
    }
    let message = match r.body.as_str() {
        "" => r.get_str("message").unwrap_or(""),
        body => body,
    };
    if !message.is_empty() {
        doc.extend_from_slice(b",\"message\":");
        write_str(doc, message);
        written.insert(Cow::Borrowed("message"));
    }
    for attr in &r.attributes {
        if matches!(attr.value, Value::Null) {
            continue;
        }
        let (key, as_label) = if keep_attributes || is_ecs(&attr.key) {
            (Cow::Borrowed(attr.key.as_str()), false)
        } else {
            (Cow::Owned(label_key(&attr.key)), true)
        };
        if written.contains(&key) {
            continue;
        }
        doc.push(b',');
        write_str(doc, &key);
        doc.push(b':');
        if as_label {
            write_label_text(doc, &attr.value);
        } else {
            write_value(doc, &attr.value);
        }
        written.insert(key);
    }
    doc.push(b'}');
}

/// The keys of one document so far: a short list scanned in place (most records have a
/// dozen fields), a hash set once there are many, so no record costs quadratic time.
struct WrittenKeys<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> WrittenKeys<'a> {
    const SCAN_UP_TO: usize = 32;

    fn new(attributes: usize) -> Self {
        WrittenKeys {
            few: Vec::with_capacity((attributes + 5).min(Self::SCAN_UP_TO)),
            many: None,
        }
    }

    fn contains(&self, key: &str) -> bool {
        match &self.many {
            Some(set) => set.contains(key),
            None => self.few.iter().any(|k| k == key),
        }
    }

    fn insert(&mut self, key: Cow<'a, str>) {
        if let Some(set) = &mut self.many {
            set.insert(key);
        } else if self.few.len() < Self::SCAN_UP_TO {
            self.few.push(key);
        } else {
            let mut set: HashSet<Cow<'a, str>> = self.few.drain(..).collect();
            set.insert(key);
            self.many = Some(set);
        }
    }
}

/// `labels.<key with dots replaced by _>`; a key already under `labels.` keeps its name.
pub fn label_key(key: &str) -> String {
    let rest = key.strip_prefix("labels.").unwrap_or(key);
    format!("labels.{}", rest.replace('.', "_"))
}

/// A label's value as a JSON string: text as it is, anything else as its JSON text.
fn write_label_text(doc: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(s) => write_str(doc, s),
        other => {
            let mut out = Vec::new();
            write_value(&mut out, other);
            write_str(doc, std::str::from_utf8(&out).unwrap_or_default());
        }
    }
}

/// An id the engines accept: natural when short enough, else a 128-bit hash of it.
fn bounded_id(id: String) -> String {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    let hash = |seed: u64| {
        id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "h:{:016x}{:016x}",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x84222325_cbf29ce4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    fn record(offset: i64) -> Record {
        let mut r = Record::new(Origin {
            topic: "raw-logs".into(),
            partition: 1,
            offset,
        });
        r.timestamp = 1_764_064_800_123_000_000;
        r
    }

    fn naming() -> IndexNaming {
        IndexNaming::DataStream {
            dataset: "sluice".into(),
            namespace: "prod".into(),
        }
    }

    fn json(item: &BulkItem) -> serde_json::Value {
        serde_json::from_slice(item.source()).unwrap()
    }

    #[test]
    fn each_document_goes_to_the_index_of_its_own_day_within_a_batch() {
        let hour = 3_600_000_000_000;
        let naming = IndexNaming::Daily {
            prefix: "logs".into(),
        };
        // 10:00, the next day, the same, back to the first day, the day before.
        let records: Vec<Record> = [0, 24 * hour, 24 * hour + 1, 0, -11 * hour]
            .iter()
            .enumerate()
            .map(|(i, shift)| {
                let mut r = record(i as i64);
                r.timestamp += shift;
                r
            })
            .collect();
        let items = Encoder {
            naming: &naming,
            route: &RouteName::Cleaned,
        }
        .logs(&records);
        let indices: Vec<String> = items
            .iter()
            .map(|item| {
                let action: serde_json::Value =
                    serde_json::from_slice(&item.lines[..item.source_start - 1]).unwrap();
                action["create"]["_index"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            indices,
            [
                "logs-2025.11.25",
                "logs-2025.11.26",
                "logs-2025.11.26",
                "logs-2025.11.25",
                "logs-2025.11.24"
            ]
        );
    }

    #[test]
    fn logs_become_ecs_with_other_attributes_under_labels() {
        let mut r = record(7);
        r.severity_text = "error".into();
        r.body = "payment failed".into();
        r.set("service.name", "checkout");
        r.set("host.name", "web-1");
        r.set("trace.id", "abc");
        r.set("http.response.status_code", 502i64);
        r.set("customer.tier", "gold");
        r.set("retries", 3i64);
        r.set("labels.team", "pay");
        r.set("labels.team", "pay");
        r.set("log.level", "shadowed");
        r.set("nothing", Value::Null);
        let items = Encoder {
            naming: &naming(),
            route: &RouteName::Cleaned,
        }
        .logs(&[r]);
        let doc = json(&items[0]);
        assert_eq!(doc["@timestamp"], "2025-11-25T10:00:00.123Z");
        assert_eq!(doc["message"], "payment failed");
        assert_eq!(doc["log.level"], "error");
        assert_eq!(doc["service.name"], "checkout");
        assert_eq!(doc["host.name"], "web-1");
        assert_eq!(doc["trace.id"], "abc");
        assert_eq!(doc["http.response.status_code"], 502);
        assert_eq!(doc["event.dataset"], "sluice");
        assert_eq!(doc["ecs.version"], ECS_VERSION);
        assert_eq!(doc["labels.customer_tier"], "gold");
        assert_eq!(doc["labels.retries"], "3");
        assert_eq!(doc["labels.team"], "pay");
        assert!(doc.get("nothing").is_none() && doc.get("labels.nothing").is_none());
        let action: serde_json::Value =
            serde_json::from_slice(&items[0].lines[..items[0].source_start]).unwrap();
        assert_eq!(action["create"]["_index"], "logs-sluice-prod");
        assert_eq!(action["create"]["_id"], "raw-logs:1:7:0");
        assert!(items[0].lines.ends_with(b"}\n"));
    }

    #[test]
    fn thousands_of_attributes_each_key_once() {
        let mut r = record(1);
        for i in 0..5_000 {
            // `k.i` and `k_i` both become `labels.k_i`: the second is dropped.
            r.set(format!("k.{i}"), i as i64);
            r.set(format!("k_{i}"), -1i64);
        }
        r.set("service.name", "checkout");
        let items = Encoder {
            naming: &naming(),
            route: &RouteName::Cleaned,
        }
        .logs(&[r]);
        let doc = json(&items[0]);
        let fields = doc.as_object().unwrap();
        assert_eq!(fields.len(), 5_000 + 4, "{} fields", fields.len());
        assert_eq!(doc["labels.k_4999"], "4999");
        assert_eq!(doc["service.name"], "checkout");
        // serde_json keeps the last of duplicate keys; count them in the text instead.
        let text = String::from_utf8_lossy(items[0].source()).into_owned();
        assert_eq!(text.matches("\"labels.k_17\":").count(), 1);
    }

    #[test]
    fn ids_count_outputs_per_origin_and_are_stable() {
        let records = vec![record(5), record(5), record(6), record(5)];
        let enc = Encoder {
            naming: &naming(),
            route: &RouteName::Cleaned,
        };
        let ids: Vec<String> = enc.logs(&records).into_iter().map(|i| i.id).collect();
        assert_eq!(
            ids,
            [
                "raw-logs:1:5:0",
                "raw-logs:1:5:1",
                "raw-logs:1:6:0",
                "raw-logs:1:5:2"
            ]
        );
        let again: Vec<String> = enc.logs(&records).into_iter().map(|i| i.id).collect();
        assert_eq!(ids, again);
    }

    #[test]
    fn dead_letters_of_one_origin_from_different_batches_keep_their_own_ids() {
        // A record a plugin split in two: one half dead-lettered by the chain, the other
        // refused later by a sink. Written in separate batches, the second must not be
        // taken for a replay of the first (`create` answers 409 and it would be gone).
        let letter = |reason: &str, payload: &[u8]| DeadLetter {
            origin: Origin {
                topic: "raw-logs".into(),
                partition: 1,
                offset: 5,
            },
            reason: reason.into(),
            payload: payload.to_vec(),
            timestamp: 1_764_064_800_000_000_000,
        };
        let enc = Encoder {
            naming: &naming(),
            route: &RouteName::Dlq,
        };
        let id = |l: &DeadLetter| enc.dead_letters(std::slice::from_ref(l))[0].id.clone();
        let by_plugin = letter("plugin `split`: bad half", b"{\"half\":1}");
        let by_sink = letter("sink `kafka`: message too large", b"{\"half\":2}");
        assert_ne!(id(&by_plugin), id(&by_sink));
        assert_eq!(
            id(&by_plugin),
            id(&by_plugin.clone()),
            "a replay writes the same id"
        );
        let twice = enc.dead_letters(&[by_plugin.clone(), by_plugin]);
        assert_ne!(
            twice[0].id, twice[1].id,
            "two copies in one batch are two letters"
        );
    }

    #[test]
    fn metrics_and_alerts_keep_their_attributes_and_natural_ids() {
        let mut m = record(9);
        m.set("service.name", "checkout");
        m.set("metric.window.start", 1_764_064_800_000_000_000i64);
        m.set("error_rate", 0.25f64);
        m.set("latency.p99_ms", 120.5f64);
        let items = Encoder {
            naming: &naming(),
            route: &RouteName::Metrics,
        }
        .logs(&[m]);
        let doc = json(&items[0]);
        assert_eq!(doc["error_rate"], 0.25);
        assert_eq!(doc["latency.p99_ms"], 120.5);
        assert_eq!(
            items[0].id,
            "metric:checkout:1764064800000000000:raw-logs:1:9:0"
        );
        assert!(String::from_utf8_lossy(&items[0].lines).contains("\"metrics-sluice-prod\""));

        let mut a = record(9);
        a.set("alert.id", "00ff00ff00ff00ff");
        let items = Encoder {
            naming: &naming(),
            route: &RouteName::Alerts,
        }
        .logs(&[a]);
        assert_eq!(items[0].id, "alert:00ff00ff00ff00ff");
        assert!(String::from_utf8_lossy(&items[0].lines).contains("\"logs-sluice.alerts-prod\""));
    }

    #[test]
    fn daily_indices_follow_event_time() {
        let daily = IndexNaming::Daily {
            prefix: "sluice-logs".into(),
        };
        assert_eq!(
            daily.index(&RouteName::Cleaned, 1_764_064_800_123_000_000),
            "sluice-logs-2025.11.25"
        );
        assert_eq!(
            daily.index(&RouteName::Alerts, 1_764_064_800_123_000_000),
            "sluice-logs-alerts-2025.11.25"
        );
    }

    #[test]
    fn long_ids_are_hashed_deterministically() {
        let long = "x".repeat(600);
        let a = bounded_id(long.clone());
        assert_eq!(a, bounded_id(long));
        assert!(a.len() < 64);
        assert_ne!(a, bounded_id("y".repeat(600)));
    }

    #[test]
    fn no_ecs_field_is_the_prefix_of_another() {
        // `a` and `a.b` in one mapping would make `a` both a value and an object.
        let all: Vec<&str> = ECS_FIELDS
            .iter()
            .chain(SLUICE_FIELDS)
            .map(|(n, _)| *n)
            .collect();
        for a in &all {
            for b in &all {
                assert!(!b.starts_with(&format!("{a}.")), "{a} vs {b}");
            }
        }
    }
}
