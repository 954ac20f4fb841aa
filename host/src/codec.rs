//! Decoding source messages into records (once, on the fast path) and encoding records as
//! JSON lines for sinks.
//!
//! A JSON object becomes a record whose attributes are its fields flattened to dotted keys
//! (`{"http":{"status":500}}` → `http.status` = 500); arrays are kept as JSON text. Any other
//! text becomes a record whose body is the text: recognising log formats is the normalize
//! plugin's job. The encoded form is ECS-style JSON with dotted keys, the shape ECS logging
//! libraries emit and Elasticsearch accepts as is.

use crate::{Attribute, Origin, Record, Value, time};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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
    let mut record = Record::new(origin);
    record.timestamp = timestamp;
    record.observed_timestamp = observed;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("message is only whitespace".into());
    }
    if trimmed.starts_with('{') {
        match flatten_json(trimmed, &mut record.attributes) {
            Ok(()) => return Ok(record),
            Err(e) if options.invalid_json == InvalidJson::Dlq => {
                return Err(format!("invalid JSON: {e}"));
            }
            Err(_) => record.attributes.clear(),
        }
    }
    record.body = trimmed.to_owned();
    Ok(record)
}

/// Parse a JSON object, appending its fields flattened to dotted keys.
pub fn flatten_json(text: &str, out: &mut Vec<Attribute>) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut prefix = String::new();
    de.deserialize_map(Flatten {
        prefix: &mut prefix,
        out,
        top: true,
    })?;
    de.end()
}

struct Flatten<'a> {
    prefix: &'a mut String,
    out: &'a mut Vec<Attribute>,
    top: bool,
}

impl Flatten<'_> {
    fn push(self, value: Value) {
        self.out.push(Attribute {
            key: self.prefix.clone(),
            value,
        });
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.top {
            "a JSON object"
        } else {
            "a JSON value"
        })
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(Value::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(Value::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.push(Value::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(Value::Str(v.to_owned()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.push(Value::Str(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.push(Value::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // Arrays have no natural flat form: keep them as JSON text.
        let array: serde_json::Value =
            serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.push(Value::Str(array.to_string()));
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
            self.out.push(Attribute {
                key: self.prefix.clone(),
                value: Value::Str("{}".into()),
            });
        }
        Ok(())
    }
}

/// Field names the record's own fields take in the encoded form; attributes with these
/// names are skipped so the record's fields win.
const RESERVED: &[&str] = &["@timestamp", "message", "log.level"];

/// Encode a record as one JSON object (no trailing newline), appended to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"@timestamp\":\"");
    time::push_rfc3339_nanos(record.timestamp, out);
    out.push(b'"');
    let level = level_text(record);
    if !level.is_empty() {
        out.extend_from_slice(b",\"log.level\":");
        write_str(out, level);
    }
    if !record.body.is_empty() {
        out.extend_from_slice(b",\"message\":");
        write_str(out, &record.body);
    }
    for attr in &record.attributes {
        if RESERVED.contains(&attr.key.as_str()) {
            continue;
        }
        out.push(b',');
        write_str(out, &attr.key);
        out.push(b':');
        write_value(out, &attr.value);
    }
    out.push(b'}');
}

/// The level text of a record: its severity text, else one derived from the number.
pub fn level_text(record: &Record) -> &str {
    if !record.severity_text.is_empty() {
        return &record.severity_text;
    }
    match record.severity_number {
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
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => {
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
}
