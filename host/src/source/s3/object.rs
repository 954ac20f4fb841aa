//! Reading one object as source messages, streaming: the body is pulled chunk by chunk,
//! gunzipped when it starts with gzip's magic bytes, and cut into lines of bounded length:
//! a message longer than `max_message_bytes` is cut one byte past it, so the pipeline
//! dead-letters it as too large without the host holding all of it. (A raw envelope line
//! may be longer than the message it holds: up to twice the limit plus 64 KiB is read.)
//!
//! Origins are deterministic, so a replay writes the same lake keys and search ids: an NDJSON
//! line gets topic [`origin_topic`], partition 0 and its line number as offset, and the
//! object's last-modified time as timestamp; a line of the lake's raw envelope keeps the
//! origin, key and timestamp it carries.

use super::config::ObjectFormat;
use crate::Origin;
use crate::event::RawMessage;
use crate::lake::raw;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use bytes::{Buf, Bytes};

use std::io::{BufRead, BufReader, Read};
use tokio::runtime::Handle;

/// The topic an NDJSON line of `s3://bucket/key` carries: one path segment (the lake puts
/// the topic in its object names and reads it back), reversible, `s3.<bucket>.<key>` with
/// every byte outside `[A-Za-z0-9._-]` of the key written `%XX`.
pub fn origin_topic(bucket: &str, key: &str) -> String {
    let mut topic = String::with_capacity(4 + bucket.len() + key.len() + 8);
    topic.push_str("s3.");
    topic.push_str(bucket);
    topic.push('.');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            topic.push(b as char);
        } else {
            topic.push_str(&format!("%{b:02X}"));
        }
    }
    topic
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The object is not there (deleted, or not yet visible).
    #[error("the object does not exist")]
    Missing,
    #[error("cannot read the object: {0}")]
    Failed(String),
}

/// An object being read.
pub struct ObjectReader {
    lines: Box<dyn BufRead + Send>,
    /// Index of the next line.
    next_line: i64,
    /// Longest line read (the rest is skipped).
    line_cap: usize,
    /// Longest message passed on: one byte past the limit.
    message_cap: usize,
    format: ObjectFormat,
    topic: String,
    /// Last-modified, ns since the epoch.
    timestamp: i64,
}

/// One line of an object.
pub enum Line {
    Message(RawMessage),
    /// An empty line: nothing to send.
    Empty,
}

impl ObjectReader {
    /// Open `s3://bucket/key` for reading, on `handle`'s runtime (called off it).
    pub fn open(
        handle: &Handle,
        client: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        format: ObjectFormat,
        max_message_bytes: usize,
    ) -> Result<ObjectReader, ReadError> {
        let output = handle
            .block_on(client.get_object().bucket(bucket).key(key).send())
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    ReadError::Missing
                } else {
                    ReadError::Failed(DisplayErrorContext(e).to_string())
                }
            })?;
        let timestamp = output
            .last_modified()
            .and_then(|t| t.to_millis().ok())
            .map_or(0, |ms| ms.saturating_mul(1_000_000));
        let body = Body {
            handle: handle.clone(),
            stream: output.body,
            chunk: Bytes::new(),
        };
        Self::from_reader(
            body,
            origin_topic(bucket, key),
            timestamp,
            format,
            max_message_bytes,
        )
    }

    /// Read `input` (gzip or not) as the object `topic` names.
    pub fn from_reader(
        input: impl Read + Send + 'static,
        topic: String,
        timestamp: i64,
        format: ObjectFormat,
        max_message_bytes: usize,
    ) -> Result<ObjectReader, ReadError> {
        let mut raw = BufReader::with_capacity(64 * 1024, input);
        let head = raw
            .fill_buf()
            .map_err(|e| ReadError::Failed(e.to_string()))?;
        let lines: Box<dyn BufRead + Send> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(BufReader::with_capacity(
                64 * 1024,
                flate2::read::MultiGzDecoder::new(raw),
            ))
        } else {
            Box::new(raw)
        };
        Ok(ObjectReader {
            lines,
            next_line: 0,
            line_cap: max_message_bytes.saturating_mul(2).saturating_add(64 << 10),
            message_cap: max_message_bytes.saturating_add(1),
            format,
            topic,
            timestamp,
        })
    }

    /// The next line, or `None` at the end of the object.
    pub fn next_line(&mut self) -> Result<Option<Line>, ReadError> {
        let mut payload = Vec::new();
        if !read_line_capped(&mut self.lines, self.line_cap, &mut payload)
            .map_err(|e| ReadError::Failed(e.to_string()))?
        {
            return Ok(None);
        }
        let index = self.next_line;
        self.next_line += 1;
        if payload.last() == Some(&b'\r') {
            payload.pop();
        }
        if payload.is_empty() {
            return Ok(Some(Line::Empty));
        }
        if self.format == ObjectFormat::Auto {
            // The first line decides for the whole object.
            self.format = if raw::decode_line(&payload).is_some() {
                ObjectFormat::RawEnvelope
            } else {
                ObjectFormat::Ndjson
            };
        }
        if self.format == ObjectFormat::RawEnvelope
            && let Some(message) = raw::decode_line(&payload)
        {
            return Ok(Some(Line::Message(message)));
        }
        // NDJSON, or a line of an envelope object that is not one: the object's origin.
        payload.truncate(self.message_cap);
        Ok(Some(Line::Message(RawMessage {
            origin: Origin {
                topic: self.topic.clone(),
                partition: 0,
                offset: index,
            },
            key: None,
            payload,
            timestamp: self.timestamp,
        })))
    }
}

/// Read up to and without the next `\n` into `out`, keeping at most `cap` bytes of it (the
/// rest of a longer line is skipped). False at the end of the input.
pub fn read_line_capped(
    input: &mut dyn BufRead,
    cap: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any);
        }
        any = true;
        let (part, found) = match memchr(available) {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&part[..part.len().min(room)]);
        let used = found.map_or(available.len(), |i| i + 1);
        input.consume(used);
        if found.is_some() {
            return Ok(true);
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// An S3 body as a blocking reader: each chunk is awaited on the runtime.
struct Body {
    handle: Handle,
    stream: ByteStream,
    chunk: Bytes,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::raw;

    fn read_all(input: Vec<u8>, format: ObjectFormat, max: usize) -> Vec<RawMessage> {
        let mut reader = ObjectReader::from_reader(
            std::io::Cursor::new(input),
            origin_topic("logs", "in/a b.gz"),
            7,
            format,
            max,
        )
        .unwrap();
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            if let Line::Message(m) = line {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn topics_are_one_reversible_path_segment() {
        assert_eq!(
            origin_topic("logs", "in/a b+c.gz"),
            "s3.logs.in%2Fa%20b%2Bc.gz"
        );
    }

    #[test]
    fn plain_and_gzip_lines_get_line_numbers() {
        let text = b"{\"a\":1}\r\n\n{\"a\":2}\nlast".to_vec();
        for input in [text.clone(), raw::gzip(&text)] {
            let got = read_all(input, ObjectFormat::Auto, 100);
            let offsets: Vec<i64> = got.iter().map(|m| m.origin.offset).collect();
            assert_eq!(offsets, [0, 2, 3]);
            assert_eq!(got[0].payload, b"{\"a\":1}");
            assert_eq!(got[2].payload, b"last");
            assert_eq!(got[0].origin.topic, "s3.logs.in%2Fa%20b.gz");
            assert_eq!(got[0].timestamp, 7);
        }
    }

    #[test]
    fn a_long_line_is_cut_one_byte_past_the_limit() {
        let mut text = vec![b'x'; 10_000];
        text.extend_from_slice(b"\nshort\n");
        let got = read_all(text, ObjectFormat::Ndjson, 100);
        assert_eq!(
            got[0].payload.len(),
            101,
            "longer than the limit: dead-lettered"
        );
        assert_eq!(got[1].payload, b"short");
        assert_eq!(got[1].origin.offset, 1);
    }

    #[test]
    fn raw_envelopes_keep_their_origin() {
        let message = RawMessage {
            origin: Origin {
                topic: "app".into(),
                partition: 3,
                offset: 42,
            },
            key: Some(b"k".to_vec()),
            payload: b"{\"msg\":\"hi\"}".to_vec(),
            timestamp: 1_764_064_800_123_000_000,
        };
        let mut lines = Vec::new();
        raw::encode_line(&message, &mut lines);
        let auto = read_all(raw::gzip(&lines), ObjectFormat::Auto, 100);
        assert_eq!(auto[0].origin, message.origin);
        assert_eq!(auto[0].payload, message.payload);
        assert_eq!(auto[0].timestamp, message.timestamp);
        let plain = read_all(lines, ObjectFormat::Ndjson, 1000);
        assert_eq!(
            plain[0].origin.offset, 0,
            "ndjson: the envelope is the message"
        );
    }
}
