//! The `raw` table: one JSON object per source message, gzip-compressed.
//!
//! ```json
//! {"source_topic":"raw-logs","source_partition":0,"source_offset":17,
//!  "kafka_timestamp_ms":1764064800123,"key":"checkout","message":"…"}
//! ```
//!
//! `message` holds the original bytes when they are UTF-8; otherwise it is absent and
//! `message_base64` holds them. The envelope keeps the origin, so a backfill gives every
//! message back the topic, partition and offset it had, and everything derived from it
//! gets the same object keys and ids as on the streaming path.

use crate::Origin;
use crate::event::RawMessage;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// The Athena columns of the raw table, in order, with their types.
pub const COLUMNS: &[(&str, &str)] = &[
    ("source_topic", "string"),
    ("source_partition", "int"),
    ("source_offset", "bigint"),
    ("kafka_timestamp_ms", "bigint"),
    ("key", "string"),
    ("message", "string"),
    ("message_base64", "string"),
];

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    kafka_timestamp_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_base64: Option<String>,
}

/// Append one message as a JSON line (uncompressed).
pub fn encode_line(message: &RawMessage, out: &mut Vec<u8>) {
    let text = std::str::from_utf8(&message.payload).ok();
    let envelope = Envelope {
        source_topic: message.origin.topic.clone(),
        source_partition: message.origin.partition,
        source_offset: message.origin.offset,
        kafka_timestamp_ms: message.timestamp.div_euclid(1_000_000),
        key: message
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        message: text.map(str::to_owned),
        message_base64: text.is_none().then(|| BASE64.encode(&message.payload)),
    };
    // Serialising plain strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &envelope);
    out.push(b'\n');
}

/// Gzip NDJSON lines.
pub fn gzip(lines: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(lines.len() / 4), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(lines);
    encoder.finish().unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum RawReadError {
    #[error("not a gzip stream, or it is truncated: {0}")]
    Gzip(std::io::Error),
}

/// The message one line of a raw object holds, if it is an envelope.
pub fn decode_line(line: &[u8]) -> Option<RawMessage> {
    let envelope: Envelope = serde_json::from_slice(line).ok()?;
    let payload = match (envelope.message, envelope.message_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(b64)) => BASE64.decode(b64.as_bytes()).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    Some(RawMessage {
        origin: Origin {
            topic: envelope.source_topic,
            partition: envelope.source_partition,
            offset: envelope.source_offset,
        },
        key: envelope.key.map(String::into_bytes),
        payload,
        timestamp: envelope.kafka_timestamp_ms.saturating_mul(1_000_000),
    })
}

/// Read a raw object back into messages. Lines that are not envelopes (objects written by
/// another tool, e.g. a Firehose delivery) become messages from `fallback` — the topic and
/// partition of the object's name, with offset = first offset + line index.
pub fn decode_object(gzipped: &[u8], fallback: &Origin) -> Result<Vec<RawMessage>, RawReadError> {
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(gzipped));
    let mut messages = Vec::new();
    for (index, line) in reader.split(b'\n').enumerate() {
        let mut line = line.map_err(RawReadError::Gzip)?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        match decode_line(&line) {
            Some(message) => messages.push(message),
            None => messages.push(RawMessage {
                origin: Origin {
                    topic: fallback.topic.clone(),
                    partition: fallback.partition,
                    offset: fallback.offset + index as i64,
                },
                key: None,
                payload: line,
                timestamp: 0,
            }),
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, payload: &[u8]) -> RawMessage {
        RawMessage {
            origin: Origin {
                topic: "raw-logs".into(),
                partition: 2,
                offset,
            },
            key: Some(b"checkout".to_vec()),
            payload: payload.to_vec(),
            timestamp: 1_764_064_800_123_000_000,
        }
    }

    #[test]
    fn envelopes_round_trip_text_and_binary() {
        let mut lines = Vec::new();
        encode_line(&message(7, br#"{"msg":"hi"}"#), &mut lines);
        encode_line(&message(9, b"\xff\xfe binary"), &mut lines);
        let back = decode_object(&gzip(&lines), &message(0, b"").origin).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].payload, br#"{"msg":"hi"}"#);
        assert_eq!(back[0].origin.offset, 7);
        assert_eq!(back[0].key.as_deref(), Some(&b"checkout"[..]));
        assert_eq!(back[0].timestamp, 1_764_064_800_123_000_000);
        assert_eq!(back[1].payload, b"\xff\xfe binary");
        let first: serde_json::Value =
            serde_json::from_slice(lines.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["source_offset"], 7);
        assert!(first.get("message_base64").is_none());
    }

    #[test]
    fn foreign_lines_take_the_origin_of_the_object_name() {
        let origin = Origin {
            topic: "legacy".into(),
            partition: 1,
            offset: 100,
        };
        let back = decode_object(&gzip(b"plain line one\nplain line two\n"), &origin).unwrap();
        assert_eq!(back[1].payload, b"plain line two");
        assert_eq!(back[1].origin.offset, 101);
        assert!(decode_object(b"not gzip", &origin).is_err());
    }
}
