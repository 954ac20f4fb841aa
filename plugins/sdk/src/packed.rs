//! The packed batch: a whole batch of records as one byte string, for the
//! `transform-packed` world.
//!
//! The canonical ABI copies a `list<log-record>` string by string, with one call into the
//! guest's allocator for each; a 1,000-record batch of ~25 strings each crosses the boundary
//! as ~25,000 allocations one way and as many copies back. A `list<u8>` crosses as a single
//! copy. Host and guest both use this module, so there is one encoder and one decoder.
//!
//! Layout (all integers little-endian; the layout is specified in `wit/README.md`):
//!
//! ```text
//! batch     = count:u32 record{count}
//! record    = timestamp:i64 observed-timestamp:i64 severity-number:u8
//!             severity-text:str body:str
//!             origin-topic:str origin-partition:i32 origin-offset:i64
//!             route attribute-count:u32 attribute{attribute-count}
//! route     = 0 (cleaned) | 1 (metrics) | 2 (alerts) | 3 reason:str (dlq) | 4 name:str (named)
//! attribute = key:str value
//! value     = 0 (null) | 1 b:u8 (boolean) | 2 i:i64 (integer) | 3 f:f64 (double)
//!           | 4 s:str (text) | 5 b:bytes (bytes)
//! str       = len:u32 utf-8 bytes; bytes = len:u32 bytes
//! ```

use crate::{Attribute, Origin, Record, Route, Value};

/// Why a packed batch could not be read. Only a broken plugin (or SDK) produces one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedError {
    /// Byte offset where reading failed.
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for PackedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed packed batch at byte {}: {}",
            self.at, self.what
        )
    }
}

impl std::error::Error for PackedError {}

/// The smallest encoded record, to bound a claimed count by the bytes present.
const MIN_RECORD_BYTES: usize = 8 + 8 + 1 + 4 + 4 + 4 + 4 + 8 + 1 + 4;

/// Append `records` to `out` as one packed batch.
pub fn encode(records: &[Record], out: &mut Vec<u8>) {
    out.reserve(records.len() * 320);
    put_u32(out, records.len());
    for r in records {
        out.extend_from_slice(&r.timestamp.to_le_bytes());
        out.extend_from_slice(&r.observed_timestamp.to_le_bytes());
        out.push(r.severity_number);
        put_str(out, &r.severity_text);
        put_str(out, &r.body);
        put_str(out, &r.origin.topic);
        out.extend_from_slice(&r.origin.partition.to_le_bytes());
        out.extend_from_slice(&r.origin.offset.to_le_bytes());
        match &r.route {
            Route::Cleaned => out.push(0),
            Route::Metrics => out.push(1),
            Route::Alerts => out.push(2),
            Route::Dlq(reason) => {
                out.push(3);
                put_str(out, reason);
            }
            Route::Named(name) => {
                out.push(4);
                put_str(out, name);
            }
        }
        put_u32(out, r.attributes.len());
        for a in &r.attributes {
            put_str(out, &a.key);
            match &a.value {
                Value::Null => out.push(0),
                Value::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
                Value::Int(i) => {
                    out.push(2);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Value::Float(f) => {
                    out.push(3);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                Value::Str(s) => {
                    out.push(4);
                    put_str(out, s);
                }
                Value::Bytes(b) => {
                    out.push(5);
                    put_bytes(out, b);
                }
            }
        }
    }
}

/// Read a packed batch. Every length and count is checked against the bytes present, so a
/// hostile or broken encoder gets an error, never a panic or an outsized allocation.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, PackedError> {
    let mut r = Reader { bytes, at: 0 };
    let count = r.u32()? as usize;
    if count > r.remaining() / MIN_RECORD_BYTES {
        return Err(r.error("record count exceeds the batch size"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let timestamp = r.i64()?;
        let observed_timestamp = r.i64()?;
        let severity_number = r.u8()?;
        let severity_text = r.string()?;
        let body = r.string()?;
        let origin = Origin {
            topic: r.string()?,
            partition: r.i32()?,
            offset: r.i64()?,
        };
        let route = match r.u8()? {
            0 => Route::Cleaned,
            1 => Route::Metrics,
            2 => Route::Alerts,
            3 => Route::Dlq(r.string()?),
            4 => Route::Named(r.string()?),
            _ => return Err(r.error("unknown route tag")),
        };
        let attribute_count = r.u32()? as usize;
        // An attribute is at least a key length and a value tag.
        if attribute_count > r.remaining() / 5 {
            return Err(r.error("attribute count exceeds the batch size"));
        }
        let mut attributes = Vec::with_capacity(attribute_count);
        for _ in 0..attribute_count {
            let key = r.string()?;
            let value = match r.u8()? {
                0 => Value::Null,
                1 => Value::Bool(r.u8()? != 0),
                2 => Value::Int(r.i64()?),
                3 => Value::Float(f64::from_le_bytes(r.array()?)),
                4 => Value::Str(r.string()?),
                5 => Value::Bytes(r.slice()?.to_vec()),
                _ => return Err(r.error("unknown value tag")),
            };
            attributes.push(Attribute { key, value });
        }
        records.push(Record {
            timestamp,
            observed_timestamp,
            severity_number,
            severity_text,
            body,
            attributes,
            origin,
            route,
        });
    }
    if r.remaining() != 0 {
        return Err(r.error("trailing bytes after the last record"));
    }
    Ok(records)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Batches are bounded far below 4 GiB by the plugin's memory limit.
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn error(&self, what: &'static str) -> PackedError {
        PackedError { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PackedError> {
        if n > self.remaining() {
            return Err(self.error("truncated"));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackedError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, PackedError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PackedError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, PackedError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, PackedError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn slice(&mut self) -> Result<&'a [u8], PackedError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, PackedError> {
        let start = self.at;
        let bytes = self.slice()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(PackedError {
                at: start,
                what: "string is not valid UTF-8",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut a = Record::new(Origin {
            topic: "raw-logs".into(),
            partition: 2,
            offset: 41,
        });
        a.timestamp = 1_764_064_800_123_000_000;
        a.observed_timestamp = -5;
        a.severity_number = 17;
        a.severity_text = "error".into();
        a.body = "payment \"failed\" — ünïcode".into();
        a.set("service.name", "checkout");
        a.set("http.response.status_code", 502i64);
        a.set("latency", 12.5f64);
        a.set("ok", false);
        a.attributes.push(Attribute {
            key: "none".into(),
            value: Value::Null,
        });
        a.attributes.push(Attribute {
            key: "raw".into(),
            value: Value::Bytes(vec![0, 255, 7]),
        });
        let mut b = Record::new(Origin::default());
        b.route = Route::Dlq("bad line".into());
        let mut c = b.clone();
        c.route = Route::Named("audit".into());
        let mut d = b.clone();
        d.route = Route::Metrics;
        let mut e = b.clone();
        e.route = Route::Alerts;
        vec![a, b, c, d, e]
    }

    #[test]
    fn every_field_and_variant_round_trips() {
        let records = sample();
        let mut bytes = Vec::new();
        encode(&records, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), records);
        let mut empty = Vec::new();
        encode(&[], &mut empty);
        assert_eq!(decode(&empty).unwrap(), Vec::<Record>::new());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
    }

    #[test]
    fn malformed_batches_are_rejected_with_where_and_why() {
        // A count no batch of this size can hold: refused before allocating for it.
        let err = decode(&u32::MAX.to_le_bytes()).unwrap_err();
        assert_eq!(err.what, "record count exceeds the batch size");

        let mut bytes = Vec::new();
        encode(&sample()[..1], &mut bytes);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing).unwrap_err().what,
            "trailing bytes after the last record"
        );

        // The severity text "error" starts after count, two timestamps and severity:
        // corrupt its first byte into invalid UTF-8.
        let mut bad_utf8 = bytes.clone();
        bad_utf8[4 + 8 + 8 + 1 + 4] = 0xff;
        let err = decode(&bad_utf8).unwrap_err();
        assert_eq!(err.what, "string is not valid UTF-8");
        assert_eq!(err.at, 4 + 8 + 8 + 1);
        assert!(err.to_string().contains("byte 21"));
    }
}
