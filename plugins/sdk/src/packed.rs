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

use crate::{Attribute, OriginRef, Record, RecordHead, RouteRef, ValueRef};

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
        encode_record(r, out);
    }
}

/// Append one record's bytes (a batch is the count followed by its records).
pub(crate) fn encode_record(r: &Record, out: &mut Vec<u8>) {
    put_head(out, &r.head());
    put_u32(out, r.attributes.len());
    for a in &r.attributes {
        put_attribute(out, "", &a.key, a.value.view());
    }
}

/// Append a record's fields before its attributes.
pub(crate) fn put_head(out: &mut Vec<u8>, head: &RecordHead<'_>) {
    out.extend_from_slice(&head.timestamp.to_le_bytes());
    out.extend_from_slice(&head.observed_timestamp.to_le_bytes());
    out.push(head.severity_number);
    put_str(out, head.severity_text);
    put_str(out, head.body);
    put_str(out, head.origin.topic);
    out.extend_from_slice(&head.origin.partition.to_le_bytes());
    out.extend_from_slice(&head.origin.offset.to_le_bytes());
    match head.route {
        RouteRef::Cleaned => out.push(0),
        RouteRef::Metrics => out.push(1),
        RouteRef::Alerts => out.push(2),
        RouteRef::Dlq(reason) => {
            out.push(3);
            put_str(out, reason);
        }
        RouteRef::Named(name) => {
            out.push(4);
            put_str(out, name);
        }
    }
}

/// Append one attribute whose key is `prefix` followed by `key`.
pub(crate) fn put_attribute(out: &mut Vec<u8>, prefix: &str, key: &str, value: ValueRef<'_>) {
    put_u32(out, prefix.len() + key.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(key.as_bytes());
    match value {
        ValueRef::Null => out.push(0),
        ValueRef::Bool(b) => out.extend_from_slice(&[1, u8::from(b)]),
        ValueRef::Int(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_le_bytes());
        }
        ValueRef::Str(s) => {
            out.push(4);
            put_str(out, s);
        }
        ValueRef::Bytes(b) => {
            out.push(5);
            put_bytes(out, b);
        }
    }
}

/// Overwrite the u32 count at `at` (written as a placeholder before its items).
pub(crate) fn patch_u32(out: &mut [u8], at: usize, n: usize) {
    // Counts are bounded far below 4 Gi by the plugin's memory limit.
    out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
}

/// Read a packed batch. Every length and count is checked against the bytes present, so a
/// hostile or broken encoder gets an error, never a panic or an outsized allocation.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, PackedError> {
    decode_from(Reader::new(bytes))
}

/// [`decode`] for a batch that has passed [`scan`], without checking every string for
/// UTF-8 a second time.
///
/// # Safety
/// Every string in `bytes` must be valid UTF-8: `bytes` passed [`scan`] (or [`decode`]),
/// or were written by [`encode`].
pub unsafe fn decode_scanned(bytes: &[u8]) -> Result<Vec<Record>, PackedError> {
    // SAFETY: passed on from the caller.
    decode_from(unsafe { Reader::trusting_utf8(bytes) })
}

fn decode_from(mut r: Reader<'_>) -> Result<Vec<Record>, PackedError> {
    let count = r.count()?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let head = r.head()?;
        let attribute_count = r.attribute_count()?;
        let mut attributes = Vec::with_capacity(attribute_count);
        for _ in 0..attribute_count {
            let (key, value) = r.attribute()?;
            attributes.push(Attribute {
                key: key.to_owned(),
                value: value.to_value(),
            });
        }
        records.push(Record {
            timestamp: head.timestamp,
            observed_timestamp: head.observed_timestamp,
            severity_number: head.severity_number,
            severity_text: head.severity_text.to_owned(),
            body: head.body.to_owned(),
            attributes,
            origin: head.origin.to_origin(),
            route: head.route.to_route(),
        });
    }
    r.finish()?;
    Ok(records)
}

/// What the host routes a record by, read in place by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<'a> {
    /// Where the record's bytes are in the batch: a batch of some of its records is the
    /// count followed by their spans.
    pub span: std::ops::Range<usize>,
    pub timestamp: i64,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Whether the record stays on the `cleaned` route (continues down the chain).
    pub cleaned: bool,
}

/// Check a packed batch as thoroughly as [`decode`] does, without decoding it: `each` gets
/// every record's [`Summary`] in order. Returns the record count.
pub fn scan<'a>(bytes: &'a [u8], mut each: impl FnMut(Summary<'a>)) -> Result<usize, PackedError> {
    let mut r = Reader::new(bytes);
    let count = r.count()?;
    for _ in 0..count {
        let start = r.at;
        let head = r.head()?;
        for _ in 0..r.attribute_count()? {
            r.attribute()?;
        }
        each(Summary {
            span: start..r.at,
            timestamp: head.timestamp,
            topic: head.origin.topic,
            partition: head.origin.partition,
            offset: head.origin.offset,
            cleaned: head.route == RouteRef::Cleaned,
        });
    }
    r.finish()?;
    Ok(count)
}

/// Append a packed batch of some records of `batch` to `out`, given their spans (from
/// [`scan`]), by copying their bytes: nothing is decoded or encoded again.
pub fn select(batch: &[u8], spans: &[std::ops::Range<usize>], out: &mut Vec<u8>) {
    out.reserve(4 + spans.iter().map(|s| s.len()).sum::<usize>());
    put_u32(out, spans.len());
    for span in spans {
        out.extend_from_slice(&batch[span.clone()]);
    }
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

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pub at: usize,
    /// Whether strings are checked for UTF-8 (see [`Reader::trusting_utf8`]).
    check_utf8: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            at: 0,
            check_utf8: true,
        }
    }

    /// A reader that takes every string as UTF-8 without checking it; lengths, counts and
    /// tags are still checked, so a bad batch is still an error, never a panic.
    ///
    /// # Safety
    /// Every string in `bytes` must be valid UTF-8: the bytes were written by [`encode`]
    /// or the SDK's `Output` from Rust strings, or have passed [`scan`].
    pub unsafe fn trusting_utf8(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            at: 0,
            check_utf8: false,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn error(&self, what: &'static str) -> PackedError {
        PackedError { at: self.at, what }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackedError> {
        // `at + n` could overflow a 32-bit usize (wasm) for a hostile length; the rest of
        // the bytes, cut at `n`, cannot.
        let Some(slice) = self.bytes[self.at..].get(..n) else {
            return Err(self.error("truncated"));
        };
        self.at += n;
        Ok(slice)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackedError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, PackedError> {
        Ok(self.take(1)?[0])
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, PackedError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn i32(&mut self) -> Result<i32, PackedError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn i64(&mut self) -> Result<i64, PackedError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn slice(&mut self) -> Result<&'a [u8], PackedError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    #[inline(always)]
    fn str(&mut self) -> Result<&'a str, PackedError> {
        let start = self.at;
        let bytes = self.slice()?;
        // Log text is nearly all ASCII, which a word-at-a-time check clears faster than
        // full UTF-8 validation does for short strings.
        if !self.check_utf8 || bytes.is_ascii() {
            // SAFETY: whoever built this reader with `trusting_utf8` vouched for every
            // string in the batch; otherwise these bytes are ASCII, which is UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| PackedError {
            at: start,
            what: "string is not valid UTF-8",
        })
    }

    pub fn count(&mut self) -> Result<usize, PackedError> {
        let count = self.u32()? as usize;
        if count > self.remaining() / MIN_RECORD_BYTES {
            return Err(self.error("record count exceeds the batch size"));
        }
        Ok(count)
    }

    #[inline(always)]
    pub fn head(&mut self) -> Result<RecordHead<'a>, PackedError> {
        Ok(RecordHead {
            timestamp: self.i64()?,
            observed_timestamp: self.i64()?,
            severity_number: self.u8()?,
            severity_text: self.str()?,
            body: self.str()?,
            origin: OriginRef {
                topic: self.str()?,
                partition: self.i32()?,
                offset: self.i64()?,
            },
            route: match self.u8()? {
                0 => RouteRef::Cleaned,
                1 => RouteRef::Metrics,
                2 => RouteRef::Alerts,
                3 => RouteRef::Dlq(self.str()?),
                4 => RouteRef::Named(self.str()?),
                _ => return Err(self.error("unknown route tag")),
            },
        })
    }

    #[inline(always)]
    pub fn attribute_count(&mut self) -> Result<usize, PackedError> {
        let count = self.u32()? as usize;
        // An attribute is at least a key length and a value tag.
        if count > self.remaining() / 5 {
            return Err(self.error("attribute count exceeds the batch size"));
        }
        Ok(count)
    }

    #[inline(always)]
    pub fn attribute(&mut self) -> Result<(&'a str, ValueRef<'a>), PackedError> {
        let key = self.str()?;
        let value = match self.u8()? {
            0 => ValueRef::Null,
            1 => ValueRef::Bool(self.u8()? != 0),
            2 => ValueRef::Int(self.i64()?),
            3 => ValueRef::Float(f64::from_le_bytes(self.array()?)),
            4 => ValueRef::Str(self.str()?),
            5 => ValueRef::Bytes(self.slice()?),
            _ => return Err(self.error("unknown value tag")),
        };
        Ok((key, value))
    }

    pub fn finish(&self) -> Result<(), PackedError> {
        if self.remaining() != 0 {
            return Err(self.error("trailing bytes after the last record"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Origin, Route, Value};

    /// One record with every value type, and one on each other route.
    pub(crate) fn sample() -> Vec<Record> {
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
        // SAFETY: `encode` wrote every string from a Rust string.
        assert_eq!(unsafe { decode_scanned(&bytes) }.unwrap(), records);
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
    fn scan_reads_what_the_host_routes_by_and_selects_records_by_span() {
        let records = sample();
        let mut bytes = Vec::new();
        encode(&records, &mut bytes);
        let mut summaries = Vec::new();
        assert_eq!(scan(&bytes, |s| summaries.push(s)), Ok(records.len()));
        for (summary, record) in summaries.iter().zip(&records) {
            assert_eq!(summary.timestamp, record.timestamp);
            assert_eq!(summary.topic, record.origin.topic);
            assert_eq!(summary.partition, record.origin.partition);
            assert_eq!(summary.cleaned, record.route == Route::Cleaned);
        }
        assert_eq!(summaries.iter().filter(|s| s.cleaned).count(), 1);

        // Records 0, 2 and 4, copied by span, decode to the same three records.
        let spans: Vec<_> = [0, 2, 4].map(|i| summaries[i].span.clone()).into();
        let mut subset = Vec::new();
        select(&bytes, &spans, &mut subset);
        let expected = vec![records[0].clone(), records[2].clone(), records[4].clone()];
        assert_eq!(decode(&subset).unwrap(), expected);
    }

    #[test]
    fn scan_rejects_exactly_what_decode_rejects() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            assert_eq!(
                scan(truncated, |_| {}).unwrap_err(),
                decode(truncated).unwrap_err(),
                "truncated to {len} bytes"
            );
        }
        let mut bad_tag = Vec::new();
        encode(&sample()[1..2], &mut bad_tag);
        // The route tag of a record with empty strings: after count, timestamps, severity,
        // three empty strings, partition and offset.
        bad_tag[4 + 8 + 8 + 1 + 4 + 4 + 4 + 4 + 8] = 9;
        assert_eq!(
            scan(&bad_tag, |_| {}).unwrap_err().what,
            "unknown route tag"
        );
        assert_eq!(decode(&bad_tag).unwrap_err().what, "unknown route tag");
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
