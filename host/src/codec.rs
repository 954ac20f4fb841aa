//! Decoding source messages into records and encoding records as JSON lines for sinks.
//! On the fast path a message is decoded straight into a packed batch
//! ([`decode_packed`]) and encoded from it read in place ([`encode_view`]); [`decode`] and
//! [`encode_record`] make and take the same records as owned `Record`s.
//!
//! A JSON object becomes a record whose attributes are its fields flattened to dotted keys
//! (`{"http":{"status":500}}` → `http.status` = 500); arrays are kept as JSON text. Any other
//! text becomes a record whose body is the text: recognising log formats is the normalize
//! plugin's job. The encoded form is ECS-style JSON with dotted keys, the shape ECS logging
//! libraries emit and Elasticsearch accepts as is.

use crate::{Attribute, Origin, Record, Value, time};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sluice_plugin_sdk::{
    OriginRef, Output, RecordHead, RecordView, RecordWriter, RouteRef, ValueRef,
};
use std::fmt;

/// What to do with a message that looks like JSON (starts with `{`) but does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidJson {
    /// Dead-letter it with the parser's error.
    #[default]
    Dlq,
    /// Pass it on as text, like any other non-JSON line.
    AsText,
}

/// How messages are decoded.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub max_message_bytes: usize,
    pub invalid_json: InvalidJson,
}

/// Decode one message. `Err` carries the dead-letter reason.
pub fn decode(
    payload: &[u8],
    origin: Origin,
    timestamp: i64,
    observed: i64,
    options: &DecodeOptions,
) -> Result<Record, String> {
    let text = message_text(payload, options)?;
    let mut record = Record::new(origin);
    record.timestamp = timestamp;
    record.observed_timestamp = observed;
    if text.starts_with('{') {
        match flatten_json(text, &mut record.attributes) {
            Ok(()) => return Ok(record),
            Err(e) if options.invalid_json == InvalidJson::Dlq => {
                return Err(format!("invalid JSON: {e}"));
            }
            Err(_) => record.attributes.clear(),
        }
    }
    record.body = text.to_owned();
    Ok(record)
}

/// Decode one message straight into the packed batch `out`: the record [`decode`] makes,
/// written without owning a string of it. On `Err` (the dead-letter reason) `out` is as
/// it was.
pub fn decode_packed(
    payload: &[u8],
    origin: OriginRef<'_>,
    timestamp: i64,
    observed: i64,
    options: &DecodeOptions,
    out: &mut Output,
) -> Result<(), String> {
    let text = message_text(payload, options)?;
    let mut head = RecordHead {
        timestamp,
        observed_timestamp: observed,
        severity_number: 0,
        severity_text: "",
        body: "",
        origin,
        route: RouteRef::Cleaned,
    };
    if text.starts_with('{') {
        let mut writer = out.record(&head);
        match flatten_json(text, &mut writer) {
            Ok(()) => return Ok(()),
            Err(e) if options.invalid_json == InvalidJson::Dlq => {
                writer.discard();
                return Err(format!("invalid JSON: {e}"));
            }
            Err(_) => writer.discard(),
        }
    }
    head.body = text;
    drop(out.record(&head));
    Ok(())
}

/// The message as trimmed text, or why it cannot be a record.
fn message_text<'a>(payload: &'a [u8], options: &DecodeOptions) -> Result<&'a str, String> {
    if payload.is_empty() {
        return Err("empty message".into());
    }
    if payload.len() > options.max_message_bytes {
        return Err(format!(
            "message of {} bytes exceeds max_message_bytes ({})",
            payload.len(),
            options.max_message_bytes
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        format!(
            "not valid UTF-8 (invalid byte at position {})",
            e.valid_up_to()
        )
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("message is only whitespace".into());
    }
    Ok(trimmed)
}

/// Where flattened fields go: a record's attribute list, or a packed record being written.
pub trait Fields {
    fn field(&mut self, key: &str, value: ValueRef<'_>);
}

impl Fields for Vec<Attribute> {
    fn field(&mut self, key: &str, value: ValueRef<'_>) {
        self.push(Attribute {
            key: key.to_owned(),
            value: value.to_value(),
        });
    }
}

impl Fields for RecordWriter<'_> {
    fn field(&mut self, key: &str, value: ValueRef<'_>) {
        self.attribute(key, value);
    }
}

/// Parse a JSON object, adding its fields flattened to dotted keys.
pub fn flatten_json(text: &str, out: &mut impl Fields) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut prefix = String::new();
    de.deserialize_map(Flatten {
        prefix: &mut prefix,
        out,
        top: true,
    })?;
    de.end()
}

struct Flatten<'a, F> {
    prefix: &'a mut String,
    out: &'a mut F,
    top: bool,
}

impl<F: Fields> Flatten<'_, F> {
    fn push(self, value: ValueRef<'_>) {
        self.out.field(self.prefix, value);
    }
}

impl<'de, F: Fields> DeserializeSeed<'de> for Flatten<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: Fields> Visitor<'de> for Flatten<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.top {
            "a JSON object"
        } else {
            "a JSON value"
        })
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(ValueRef::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(ValueRef::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(i64::try_from(v).map_or(ValueRef::Float(v as f64), ValueRef::Int));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.push(ValueRef::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(ValueRef::Str(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.push(ValueRef::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // Arrays have no natural flat form: keep them as JSON text.
        let array: serde_json::Value =
            serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.push(ValueRef::Str(&array.to_string()));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.prefix.len();
        let mut empty = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            empty = false;
            if base > 0 {
                self.prefix.push('.');
            }
            self.prefix.push_str(&key);
            map.next_value_seed(Flatten {
                prefix: self.prefix,
                out: self.out,
                top: false,
            })?;
            self.prefix.truncate(base);
        }
        if empty && !self.top {
            self.out.field(self.prefix, ValueRef::Str("{}"));
        }
        Ok(())
    }
}

/// Encode a record as one JSON object (no trailing newline), appended to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let attributes = record.attributes.iter().map(|a| (&*a.key, a.value.view()));
    encode_parts(&record.head(), attributes, out);
}

/// [`encode_record`] for a record read in place from a packed batch: the same bytes.
pub fn encode_view(record: &RecordView<'_>, out: &mut Vec<u8>) {
    let attributes = record.attributes.iter().map(|a| (a.key, a.value));
    encode_parts(&record.head(), attributes, out);
}

fn encode_parts<'a>(
    head: &RecordHead<'_>,
    attributes: impl Iterator<Item = (&'a str, ValueRef<'a>)>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"@timestamp\":\"");
    time::push_rfc3339_nanos(head.timestamp, out);
    out.push(b'"');
    let level = level_name(head.severity_text, head.severity_number);
    if !level.is_empty() {
        out.extend_from_slice(b",\"log.level\":");
        write_str(out, level);
    }
    if !head.body.is_empty() {
        out.extend_from_slice(b",\"message\":");
        write_str(out, head.body);
    }
    // The record's own fields win over attributes of their names; an attribute is dropped
    // only where a field was written (a raw JSON line's `message` before normalize is kept).
    let written = |key: &str| match key {
        "@timestamp" => true,
        "log.level" => !level.is_empty(),
        "message" => !head.body.is_empty(),
        _ => false,
    };
    for (key, value) in attributes {
        if written(key) {
            continue;
        }
        out.push(b',');
        write_str(out, key);
        out.push(b':');
        write_value_ref(out, value);
    }
    out.push(b'}');
}

/// The level text of a record: its severity text, else one derived from the number.
pub fn level_text(record: &Record) -> &str {
    level_name(&record.severity_text, record.severity_number)
}

fn level_name(severity_text: &str, severity_number: u8) -> &str {
    if !severity_text.is_empty() {
        return severity_text;
    }
    match severity_number {
        0 => "",
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        _ => "fatal",
    }
}

/// Append a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct and fast; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Append a JSON value.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    write_value_ref(out, value.view());
}

fn write_value_ref(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Bool(true) => out.extend_from_slice(b"true"),
        ValueRef::Bool(false) => out.extend_from_slice(b"false"),
        ValueRef::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        ValueRef::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes())
        }
        ValueRef::Float(_) => out.extend_from_slice(b"null"),
        ValueRef::Str(s) => write_str(out, s),
        ValueRef::Bytes(b) => {
            // Bytes are rare in logs; hex keeps them readable and lossless.
            out.push(b'"');
            for byte in b {
                out.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            out.push(b'"');
        }
    }
}

/// A record as JSON bytes.
pub fn record_to_json(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_record(record, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::BatchView;

    const OPTS: DecodeOptions = DecodeOptions {
        max_message_bytes: 1024,
        invalid_json: InvalidJson::Dlq,
    };

    fn origin() -> Origin {
        Origin {
            topic: "raw-logs".into(),
            partition: 2,
            offset: 41,
        }
    }

    #[test]
    fn json_is_flattened_to_dotted_keys() {
        let r = decode(
            br#"{"msg":"hi","http":{"status":500,"req":{"method":"GET"}},"tags":["a",1],"ok":true,"n":null,"big":18446744073709551615,"lat":1.5,"e":{}}"#,
            origin(),
            7,
            8,
            &OPTS,
        )
        .unwrap();
        assert_eq!(r.body, "");
        assert_eq!(r.timestamp, 7);
        assert_eq!(r.observed_timestamp, 8);
        assert_eq!(r.origin(), &origin());
        assert_eq!(r.get("msg"), Some(&Value::Str("hi".into())));
        assert_eq!(r.get("http.status"), Some(&Value::Int(500)));
        assert_eq!(r.get("http.req.method"), Some(&Value::Str("GET".into())));
        assert_eq!(r.get("tags"), Some(&Value::Str(r#"["a",1]"#.into())));
        assert_eq!(r.get("ok"), Some(&Value::Bool(true)));
        assert_eq!(r.get("n"), Some(&Value::Null));
        assert_eq!(r.get("big"), Some(&Value::Float(18446744073709551615.0)));
        assert_eq!(r.get("lat"), Some(&Value::Float(1.5)));
        assert_eq!(r.get("e"), Some(&Value::Str("{}".into())));
    }

    #[test]
    fn text_becomes_the_body() {
        let r = decode(b"level=info msg=started\n", origin(), 1, 2, &OPTS).unwrap();
        assert_eq!(r.body, "level=info msg=started");
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn poison_messages_are_rejected_with_reasons() {
        let reason = |p: &[u8]| decode(p, origin(), 0, 0, &OPTS).unwrap_err();
        assert_eq!(reason(b""), "empty message");
        assert!(reason(b"\xff\xfe oops").contains("not valid UTF-8"));
        assert!(reason(&[b'a'; 2000]).contains("exceeds max_message_bytes"));
        assert!(reason(br#"{"a": "#).starts_with("invalid JSON"));
        assert!(reason(br#"{"a": 1} trailing"#).starts_with("invalid JSON"));
        let as_text = DecodeOptions {
            invalid_json: InvalidJson::AsText,
            ..OPTS
        };
        let r = decode(br#"{"a": "#, origin(), 0, 0, &as_text).unwrap();
        assert_eq!(r.body, r#"{"a":"#);
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let mut r = Record::new(origin());
        r.timestamp = 1_764_064_800_123_000_000;
        r.severity_text = "error".into();
        r.body = "payment \"failed\"\n".into();
        r.set("service.name", "checkout");
        r.set("http.response.status_code", 502i64);
        r.set("latency_ms", 12.5f64);
        r.set("message", "shadowed");
        let json = record_to_json(&r);
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["@timestamp"], "2025-11-25T10:00:00.123000000Z");
        assert_eq!(back["log.level"], "error");
        assert_eq!(back["message"], "payment \"failed\"\n");
        assert_eq!(back["service.name"], "checkout");
        assert_eq!(back["http.response.status_code"], 502);
        assert_eq!(back["latency_ms"], 12.5);
        assert_eq!(back.as_object().unwrap().len(), 6);
    }

    #[test]
    fn an_attribute_named_like_an_unwritten_field_is_kept() {
        // A raw JSON line before normalize: its message is an attribute, the body empty.
        let mut r = Record::new(origin());
        r.set("message", "payment failed");
        r.set("log.level", "warn");
        let back: serde_json::Value = serde_json::from_slice(&record_to_json(&r)).unwrap();
        assert_eq!(back["message"], "payment failed");
        assert_eq!(back["log.level"], "warn");
    }

    /// Messages of every shape decoding meets.
    const CORPUS: &[&[u8]] = &[
        br#"{"msg":"hi","http":{"status":500,"req":{"method":"GET"}},"tags":["a",1],"ok":true,"n":null,"big":18446744073709551615,"neg":-7,"lat":1.5,"e":{}}"#,
        br#"  {"message":"quote \" and \\ and \u00e9 and \n","log":{"level":"WARN"}}  "#,
        "{\"service.name\":\"caf\u{e9}\",\"emoji\":\"\u{1f600}\"}".as_bytes(),
        b"{}",
        b"level=info msg=started\n",
        b"{not json at all",
        br#"{"a": 1} trailing"#,
        br#"{"a": {"b": [1, {"c": 2}]}, "d": "#,
        b"",
        b"   \n\t ",
        b"\xff\xfe oops",
    ];

    #[test]
    fn packed_decoding_writes_the_record_decode_makes() {
        let long = vec![b'a'; 2000];
        let as_text = DecodeOptions {
            invalid_json: InvalidJson::AsText,
            ..OPTS
        };
        let mut before = Record::new(origin());
        before.body = "already in the batch".into();
        let origin = origin();
        for options in [OPTS, as_text] {
            for payload in CORPUS.iter().copied().chain([&long[..]]) {
                let expected = decode(payload, origin.clone(), 7, 8, &options);
                let mut out = Output::new();
                out.push(&before);
                let got = decode_packed(payload, origin.view(), 7, 8, &options, &mut out);
                let records = sluice_plugin_sdk::packed::decode(&out.into_bytes()).unwrap();
                let shown = String::from_utf8_lossy(payload);
                match expected {
                    Ok(record) => {
                        assert_eq!(got, Ok(()), "{shown}");
                        assert_eq!(records, vec![before.clone(), record], "{shown}");
                    }
                    Err(reason) => {
                        assert_eq!(got, Err(reason), "{shown}");
                        assert_eq!(records, vec![before.clone()], "{shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_record_read_in_place_encodes_as_the_record_does() {
        let mut records: Vec<Record> = CORPUS
            .iter()
            .filter_map(|p| decode(p, origin(), 1_764_064_800_123_000_000, 0, &OPTS).ok())
            .collect();
        let mut r = Record::new(origin());
        r.timestamp = -1;
        r.severity_number = 18;
        r.body = "payment \"failed\"\n".into();
        r.set("message", "shadowed");
        r.set("log.level", "shadowed too");
        r.set("bytes", Value::Bytes(vec![0, 15, 255]));
        r.set("nan", f64::NAN);
        r.set("inf", f64::INFINITY);
        r.set("tiny", 5e-324);
        r.set("min", i64::MIN);
        records.push(r.clone());
        r.severity_text = "notice".into();
        records.push(r);
        assert!(records.len() >= 7);

        let mut bytes = Vec::new();
        sluice_plugin_sdk::packed::encode(&records, &mut bytes);
        let view = BatchView::new(&bytes).unwrap();
        for (record, viewed) in records.iter().zip(view.iter()) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode_record(record, &mut a);
            encode_view(&viewed, &mut b);
            assert_eq!(String::from_utf8(b).unwrap(), String::from_utf8(a).unwrap());
        }
    }
}
