//! Which input field feeds which output field: the alias table.
//!
//! Every known input key maps to a [`Rule`]: the output [`Slot`] it fills and a priority
//! (lower wins when a record carries several aliases of one slot, e.g. both `service` and
//! `app`). Looking a key up is one hash of the key as it is, with no string built.

use crate::duration::{self, Unit};

/// An output field of the normalized schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Timestamp,
    Message,
    Level,
    Service,
    Host,
    EventId,
    TraceId,
    SpanId,
    Method,
    Url,
    Status,
    Bytes,
    Referrer,
    UserAgent,
    SourceIp,
    ClientIp,
    Duration,
    /// A field already in the output schema that passes unchanged (`url.query`, `tags`).
    Keep,
}

/// Slots in output order, with the attribute name each writes (none for the ones that
/// set record fields rather than attributes).
pub const SLOTS: [(Slot, &str); 17] = [
    (Slot::Timestamp, ""),
    (Slot::Message, ""),
    (Slot::Level, "log.level"),
    (Slot::Service, "service.name"),
    (Slot::Host, "host.name"),
    (Slot::EventId, "event.id"),
    (Slot::TraceId, "trace.id"),
    (Slot::SpanId, "span.id"),
    (Slot::Method, "http.request.method"),
    (Slot::Url, "url.path"),
    (Slot::Status, "http.response.status_code"),
    (Slot::Bytes, "http.response.body.bytes"),
    (Slot::Referrer, "http.request.referrer"),
    (Slot::UserAgent, "user_agent.original"),
    (Slot::SourceIp, "source.ip"),
    (Slot::ClientIp, "client.ip"),
    (Slot::Duration, "event.duration"),
];

pub const SLOT_COUNT: usize = SLOTS.len();

impl Slot {
    /// The slot's position in [`SLOTS`]; `Keep`, which has no position, is `SLOT_COUNT`.
    pub fn index(self) -> usize {
        // The variants are declared in `SLOTS` order (checked by a test).
        self as usize
    }

    /// The slot an output name (as used in the `aliases` config) stands for.
    pub fn from_output_name(name: &str) -> Option<Slot> {
        match name {
            "@timestamp" => Some(Slot::Timestamp),
            "message" => Some(Slot::Message),
            _ => SLOTS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub slot: Slot,
    pub priority: u16,
    /// For durations: the unit of a bare number.
    pub unit: Unit,
    /// For levels: the field carries OpenTelemetry severity numbers.
    pub otel: bool,
}

/// Default aliases, best first. The output name itself comes first so that already
/// normalized records pass unchanged.
const DEFAULTS: &[(Slot, &[&str])] = &[
    (
        Slot::Timestamp,
        &[
            "@timestamp",
            "timestamp",
            "ts",
            "time",
            "datetime",
            "date",
            "event_time",
            "eventTime",
            "time_local",
            "time_iso8601",
            "asctime",
            "log_time",
            "Timestamp",
            "t",
            // OpenTelemetry's JSON encoding of a log record.
            "timeUnixNano",
            // log4j2 JsonLayout: whole seconds (its `nanoOfSecond` stays a label) or ms.
            "timeMillis",
            "instant.epochSecond",
            "observedTimeUnixNano",
        ],
    ),
    (
        Slot::Message,
        &[
            "message",
            "msg",
            "@message",
            "log",
            "text",
            "short_message",
            "full_message",
            "body",
            "Body",
            // OpenTelemetry (JSON), structlog, GCP LogEntry.
            "body.stringValue",
            "event",
            "textPayload",
            "jsonPayload.message",
            // Azure resource logs.
            "resultDescription",
        ],
    ),
    (
        Slot::Level,
        &[
            "log.level",
            "level",
            "lvl",
            "severity",
            "severity_text",
            "loglevel",
            "log_level",
            "levelname",
            "level_name",
            "severity_number",
            "severityNumber",
            "severityText",
            "SeverityText",
            "SeverityNumber",
        ],
    ),
    (
        Slot::Service,
        &[
            "service.name",
            "service",
            "svc",
            "service_name",
            "serviceName",
            "app",
            "application",
            "app_name",
            "appname",
            "component",
            "program",
            "logger",
            "logger_name",
            // log4j2 JsonLayout.
            "loggerName",
        ],
    ),
    (
        Slot::Host,
        &[
            "host.name",
            "host",
            "hostname",
            "host_name",
            "server",
            "nodename",
            "node_name",
        ],
    ),
    (
        Slot::EventId,
        &["event.id", "event_id", "eventId", "eventID"],
    ),
    (
        Slot::TraceId,
        &[
            "trace.id",
            "trace_id",
            "traceId",
            "traceID",
            "traceid",
            "dd.trace_id",
            "otel.trace_id",
            // GCP structured logging: `projects/<p>/traces/<id>`, the id is kept.
            "logging.googleapis.com/trace",
        ],
    ),
    (
        Slot::SpanId,
        &[
            "span.id",
            "span_id",
            "spanId",
            "spanID",
            "spanid",
            "dd.span_id",
            "otel.span_id",
            "logging.googleapis.com/spanId",
        ],
    ),
    (
        Slot::Method,
        &[
            "http.request.method",
            "http.method",
            "method",
            "request_method",
            "http_method",
            "verb",
            "httpRequest.requestMethod",
        ],
    ),
    (
        Slot::Url,
        &[
            "url.path",
            "http.path",
            "path",
            "request_path",
            "url",
            "uri",
            "request_uri",
            "http.url",
            "http.target",
            "httpRequest.requestUrl",
        ],
    ),
    (
        Slot::Status,
        &[
            "http.response.status_code",
            "http.status",
            "http.status_code",
            "status",
            "status_code",
            "statusCode",
            "http_status",
            "response_status",
            "response_code",
            "httpRequest.status",
        ],
    ),
    (
        Slot::Bytes,
        &[
            "http.response.body.bytes",
            "bytes",
            "body_bytes_sent",
            "bytes_sent",
            "response_size",
            "httpRequest.responseSize",
        ],
    ),
    (
        Slot::Referrer,
        &[
            "http.request.referrer",
            "referrer",
            "referer",
            "http_referer",
            "http.referer",
            "httpRequest.referer",
        ],
    ),
    (
        Slot::UserAgent,
        &[
            "user_agent.original",
            "user_agent",
            "userAgent",
            "http_user_agent",
            "http.user_agent",
            "ua",
            "agent",
            "httpRequest.userAgent",
        ],
    ),
    (
        Slot::SourceIp,
        &[
            "source.ip",
            "remote_addr",
            "remote_ip",
            "src_ip",
            "source_ip",
            "ip",
        ],
    ),
    (
        Slot::ClientIp,
        &[
            "client.ip",
            "client_ip",
            "clientip",
            "client_addr",
            "x_forwarded_for",
            "http_x_forwarded_for",
            "httpRequest.remoteIp",
            "callerIpAddress",
        ],
    ),
    (
        Slot::Duration,
        &[
            "event.duration",
            "latency_ms",
            "duration_ms",
            "duration",
            "elapsed",
            "elapsed_ms",
            "response_time",
            "response_time_ms",
            "responseTime",
            "latency",
            "latency_us",
            "took",
            "took_ms",
            "duration_us",
            "duration_ns",
            "duration_s",
            "elapsed_us",
            "elapsed_ns",
            "elapsed_s",
            "request_time",
            "time_taken",
            "rt",
            // GCP: `"0.123s"`.
            "httpRequest.latency",
            "durationMs",
        ],
    ),
    (
        Slot::Keep,
        &[
            "url.query",
            "url.full",
            "http.version",
            "process.pid",
            "user.name",
            "tags",
            "event.original",
            // Set by the text parsers (containers, klog, Spring Boot).
            "log.iostream",
            "log.logger",
            "process.thread.id",
            "process.thread.name",
        ],
    ),
];

/// Unit of a default duration alias that has no unit suffix.
fn default_unit(key: &str, fallback: Unit) -> Unit {
    match key {
        "event.duration" => Unit::Ns,
        // nginx `$request_time` and `$upstream_response_time` are seconds.
        "request_time" | "rt" => Unit::S,
        _ => duration::unit_from_key(key).unwrap_or(fallback),
    }
}

/// The alias table: input key → rule.
pub struct FieldTable {
    rules: KeyMap,
    /// Prefixes whose keys pass unchanged (`labels.`, `log.syslog.`).
    keep_prefixes: Vec<String>,
}

impl FieldTable {
    /// Defaults plus the operator's extra aliases (output name → input keys), which rank
    /// right after the output name itself, ahead of the built-in aliases.
    pub fn new(extra: &[(Slot, Vec<String>)], keep: &[String], duration_unit: Unit) -> FieldTable {
        let mut t = FieldTable {
            rules: KeyMap::default(),
            keep_prefixes: vec!["labels.".into(), "log.syslog.".into(), "log.origin.".into()],
        };
        for (slot, keys) in extra {
            for (i, key) in keys.iter().enumerate() {
                t.add(key, *slot, 1 + i as u16, duration_unit);
            }
        }
        for (slot, keys) in DEFAULTS {
            for (i, key) in keys.iter().enumerate() {
                let priority = if i == 0 { 0 } else { 1000 + i as u16 };
                t.add(key, *slot, priority, duration_unit);
            }
        }
        for key in keep {
            match key.strip_suffix('*') {
                Some(prefix) => t.keep_prefixes.push(prefix.to_string()),
                None => t.add(key, Slot::Keep, 0, duration_unit),
            }
        }
        t
    }

    fn add(&mut self, key: &str, slot: Slot, priority: u16, fallback: Unit) {
        let rule = Rule {
            slot,
            priority,
            unit: default_unit(key, fallback),
            otel: matches!(key, "severity_number" | "severityNumber" | "SeverityNumber"),
        };
        // The first entry for a key wins: operator aliases are added before defaults.
        self.rules.insert_first(key, rule);
    }

    pub fn lookup(&self, key: &str) -> Option<Rule> {
        if let Some(rule) = self.rules.get(key) {
            return Some(rule);
        }
        self.keep_prefixes
            .iter()
            .any(|p| key.starts_with(p.as_str()))
            .then_some(Rule {
                slot: Slot::Keep,
                priority: 0,
                unit: Unit::Ms,
                otel: false,
            })
    }
}

/// A string-keyed map built for this table's lookups, which run for every attribute of
/// every record: open addressing over a power-of-two table, keys hashed and compared eight
/// bytes at a time. (A general-purpose map hashes byte by byte and compares with `memcmp`,
/// both of which are slow loops inside the wasm sandbox.) No seed is needed: the keys come
/// from the config, not from the records.
#[derive(Default)]
struct KeyMap {
    entries: Vec<(Box<str>, Rule)>,
    /// `(hash, entry index + 1)`, 0 for an empty bucket; never more than half full.
    buckets: Vec<(u64, u32)>,
}

impl KeyMap {
    /// Insert `key` unless it is already present.
    fn insert_first(&mut self, key: &str, rule: Rule) {
        if self.get(key).is_some() {
            return;
        }
        self.entries.push((key.into(), rule));
        if self.entries.len() * 2 > self.buckets.len() {
            self.rebuild((self.entries.len() * 4).next_power_of_two());
        } else {
            self.place(self.entries.len() - 1);
        }
    }

    fn rebuild(&mut self, size: usize) {
        self.buckets = vec![(0, 0); size];
        for entry in 0..self.entries.len() {
            self.place(entry);
        }
    }

    fn place(&mut self, entry: usize) {
        let hash = key_hash(self.entries[entry].0.as_bytes());
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        while self.buckets[at].1 != 0 {
            at = (at + 1) & mask;
        }
        self.buckets[at] = (hash, entry as u32 + 1);
    }

    fn get(&self, key: &str) -> Option<Rule> {
        if self.buckets.is_empty() {
            return None;
        }
        let key = key.as_bytes();
        let hash = key_hash(key);
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let (bucket_hash, entry) = self.buckets[at];
            if entry == 0 {
                return None;
            }
            if bucket_hash == hash {
                let (candidate, rule) = &self.entries[entry as usize - 1];
                if same_bytes(candidate.as_bytes(), key) {
                    return Some(*rule);
                }
            }
            at = (at + 1) & mask;
        }
    }
}

/// Eight bytes of `b` from `at` (zero-padded past the end), little-endian.
fn word(b: &[u8], at: usize) -> u64 {
    if let Some(chunk) = b.get(at..at + 8) {
        return u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
    }
    // The tail, byte by byte: a variable-length copy would be a call to `memcpy`.
    b[at..]
        .iter()
        .enumerate()
        .fold(0, |w, (i, &byte)| w | u64::from(byte) << (8 * i))
}

fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut at = 0;
    while at < key.len() {
        h = (h ^ word(key, at)).wrapping_mul(K).rotate_left(31);
        at += 8;
    }
    h ^= h >> 29;
    h = h.wrapping_mul(K);
    h ^ (h >> 32)
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while at < a.len() {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_extras() {
        let t = FieldTable::new(
            &[(Slot::Service, vec!["team_app".into(), "app".into()])],
            &["k8s.*".into()],
            Unit::Ms,
        );
        assert_eq!(t.lookup("svc").unwrap().slot, Slot::Service);
        assert_eq!(t.lookup("team_app").unwrap().priority, 1);
        // An operator alias outranks the same key's default position.
        assert_eq!(t.lookup("app").unwrap().priority, 2);
        assert_eq!(t.lookup("request_time").unwrap().unit, Unit::S);
        assert_eq!(t.lookup("duration_us").unwrap().unit, Unit::Us);
        assert_eq!(t.lookup("k8s.pod").unwrap().slot, Slot::Keep);
        assert!(t.lookup("severity_number").unwrap().otel);
        assert!(t.lookup("customer").is_none());
        assert_eq!(Slot::from_output_name("service.name"), Some(Slot::Service));
        assert_eq!(Slot::Duration.index(), SLOT_COUNT - 1);
        assert_eq!(Slot::Keep.index(), SLOT_COUNT);
        for (i, (slot, _)) in SLOTS.iter().enumerate() {
            assert_eq!(slot.index(), i, "{slot:?} is declared out of SLOTS order");
        }
    }

    #[test]
    fn same_bytes_sees_every_byte() {
        // Lookups reach this only on equal hashes, so test it directly.
        for len in 0..24usize {
            let a: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            assert!(!same_bytes(&a, &a[..len.saturating_sub(1)]) || len == 0);
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same_bytes(&a, &b), "length {len}, byte {at}");
            }
        }
    }

    #[test]
    fn key_map_finds_every_key_and_nothing_else() {
        let mut map = KeyMap::default();
        let keys: Vec<String> = (0..500)
            .map(|i| format!("key.{i}.{}", "x".repeat(i % 19)))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let rule = Rule {
                slot: Slot::Keep,
                priority: i as u16,
                unit: Unit::Ms,
                otel: false,
            };
            map.insert_first(key, rule);
        }
        // The first insert of a key wins.
        map.insert_first(
            &keys[7],
            Rule {
                slot: Slot::Host,
                priority: 9999,
                unit: Unit::Ms,
                otel: false,
            },
        );
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.get(key).map(|r| r.priority), Some(i as u16), "{key}");
        }
        for missing in [
            "",
            "key",
            "key.1.",
            "key.1.xx",
            "key.499.xxxxxxxxxxxxxxxxxxx",
            "key.7.xxxxxxx!",
        ] {
            assert!(map.get(missing).is_none(), "{missing}");
        }
        // Keys differing only past the first eight bytes, or only in length.
        let mut map = KeyMap::default();
        let rule = |priority| Rule {
            slot: Slot::Keep,
            priority,
            unit: Unit::Ms,
            otel: false,
        };
        map.insert_first("http.request.a", rule(1));
        map.insert_first("http.request.b", rule(2));
        map.insert_first("http.req", rule(3));
        assert_eq!(map.get("http.request.b").map(|r| r.priority), Some(2));
        assert_eq!(map.get("http.req").map(|r| r.priority), Some(3));
        assert!(map.get("http.request.").is_none());
        assert!(map.get("http.re").is_none());
    }
}
