//! Reading a packed batch in place, and writing one: the fast path of
//! [`crate::PackedPlugin`].
//!
//! A [`BatchView`] checks the whole batch once and borrows every string from it; no string
//! is copied. [`Output::keep`] forwards a record by copying its bytes as they are, so a
//! record a plugin only reads is never decoded into a [`Record`] or encoded again;
//! [`Output::record`] writes a rewritten one from borrowed parts.

use crate::packed::{PackedError, Reader, encode_record, patch_u32, put_attribute, put_head};
use crate::{Attribute, Origin, Record, RouteRef, ValueRef, severity};
use std::ops::Range;

/// An attribute borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttributeRef<'a> {
    pub key: &'a str,
    pub value: ValueRef<'a>,
}

/// An [`Origin`] borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl OriginRef<'_> {
    /// An owned copy, for records the plugin creates from this one (a metric, an alert).
    pub fn to_origin(self) -> Origin {
        Origin {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A record's fields other than its attributes, borrowed: what [`Output::record`] starts
/// a record with. Take it from the input ([`RecordView::head`]) and change what differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead<'a> {
    /// Event time, ns since the Unix epoch; 0 when unknown.
    pub timestamp: i64,
    /// When the host first saw the record, ns since the Unix epoch.
    pub observed_timestamp: i64,
    /// OpenTelemetry severity number (see [`severity`]); 0 when unspecified.
    pub severity_number: u8,
    pub severity_text: &'a str,
    pub body: &'a str,
    pub origin: OriginRef<'a>,
    pub route: RouteRef<'a>,
}

/// A record read in place: the fields of [`Record`], borrowed from the batch. Its head's
/// fields read as its own (`record.timestamp`).
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    head: RecordHead<'a>,
    pub attributes: &'a [AttributeRef<'a>],
    /// The record's own bytes in the batch, forwarded as they are by [`Output::keep`].
    raw: &'a [u8],
}

impl<'a> std::ops::Deref for RecordView<'a> {
    type Target = RecordHead<'a>;

    fn deref(&self) -> &RecordHead<'a> {
        &self.head
    }
}

impl<'a> RecordView<'a> {
    /// Every field but the attributes.
    pub fn head(&self) -> RecordHead<'a> {
        self.head
    }

    /// The attribute `key`, if present.
    pub fn get(&self, key: &str) -> Option<ValueRef<'a>> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value)
    }

    /// The attribute `key` as text, if present and text.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(ValueRef::as_str)
    }

    /// Whether the record is on the `cleaned` route (the one that continues down the chain).
    pub fn is_cleaned(&self) -> bool {
        self.route == RouteRef::Cleaned
    }

    /// Whether the record is an error or worse (severity ERROR and above).
    pub fn is_error(&self) -> bool {
        self.severity_number >= severity::ERROR
    }

    /// An owned copy, to change and emit with [`Output::push`].
    pub fn to_record(&self) -> Record {
        Record {
            timestamp: self.timestamp,
            observed_timestamp: self.observed_timestamp,
            severity_number: self.severity_number,
            severity_text: self.severity_text.to_owned(),
            body: self.body.to_owned(),
            attributes: self
                .attributes
                .iter()
                .map(|a| Attribute {
                    key: a.key.to_owned(),
                    value: a.value.to_value(),
                })
                .collect(),
            origin: self.origin.to_origin(),
            route: self.route.to_route(),
        }
    }
}

/// A packed batch, checked once and read in place.
pub struct BatchView<'a> {
    records: Vec<Entry<'a>>,
    /// Every record's attributes, one after the other: two allocations per batch, none
    /// per record.
    attributes: Vec<AttributeRef<'a>>,
}

/// One record of a [`BatchView`]: everything but its attributes, and where they are.
struct Entry<'a> {
    head: RecordHead<'a>,
    attributes: Range<usize>,
    raw: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Check `bytes` as thoroughly as [`crate::packed::decode`] does, and index them.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PackedError> {
        Self::index(bytes, Reader::new(bytes))
    }

    /// [`BatchView::new`] for a batch whose strings are known to be UTF-8, without checking
    /// them again: in wasm, that check is a fifth to a quarter of what a plugin that reads
    /// in place spends per record. Lengths, counts and tags are still checked.
    ///
    /// # Safety
    /// Every string in `bytes` must be valid UTF-8. A batch the host sends is: it encodes
    /// it from Rust strings, or has checked it with [`crate::packed::scan`], and the
    /// contract (`wit/README.md`) requires it.
    pub unsafe fn trusting_utf8(bytes: &'a [u8]) -> Result<Self, PackedError> {
        // SAFETY: passed on from the caller.
        Self::index(bytes, unsafe { Reader::trusting_utf8(bytes) })
    }

    fn index(bytes: &'a [u8], mut r: Reader<'a>) -> Result<Self, PackedError> {
        let count = r.count()?;
        let mut records = Vec::with_capacity(count);
        let mut attributes = Vec::with_capacity(count * 8);
        for _ in 0..count {
            let start = r.at;
            let head = r.head()?;
            let first = attributes.len();
            for _ in 0..r.attribute_count()? {
                let (key, value) = r.attribute()?;
                attributes.push(AttributeRef { key, value });
            }
            records.push(Entry {
                head,
                attributes: first..attributes.len(),
                raw: &bytes[start..r.at],
            });
        }
        r.finish()?;
        Ok(BatchView {
            records,
            attributes,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record at `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds, as slice indexing does.
    pub fn get(&self, index: usize) -> RecordView<'_> {
        self.view(&self.records[index])
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordView<'_>> {
        self.records.iter().map(|entry| self.view(entry))
    }

    /// Owned copies of every record, for logic written against [`Record`].
    pub fn to_records(&self) -> Vec<Record> {
        self.iter().map(|r| r.to_record()).collect()
    }

    fn view(&self, entry: &Entry<'a>) -> RecordView<'_> {
        RecordView {
            head: entry.head,
            attributes: &self.attributes[entry.attributes.clone()],
            raw: entry.raw,
        }
    }
}

/// A plugin's output, written packed as it is produced.
pub struct Output {
    /// The count (patched in by [`Output::into_bytes`]) and the records.
    bytes: Vec<u8>,
    count: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output::with_capacity(0)
    }
}

impl Output {
    pub fn new() -> Self {
        Output::default()
    }

    /// An output with room for `bytes` bytes of records before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buffer = Vec::with_capacity(4 + bytes);
        buffer.extend_from_slice(&[0; 4]);
        Output {
            bytes: buffer,
            count: 0,
        }
    }

    /// Emit `record` exactly as it came in, route included, by copying its bytes.
    pub fn keep(&mut self, record: &RecordView<'_>) {
        self.bytes.extend_from_slice(record.raw);
        self.count += 1;
    }

    /// Emit an owned record: a changed copy of an input, or a new one.
    pub fn push(&mut self, record: &Record) {
        encode_record(record, &mut self.bytes);
        self.count += 1;
    }

    /// Emit a record written field by field: `head`, then each attribute added to the
    /// returned writer, with nothing owned in between. For a plugin that rewrites records
    /// from borrowed parts (renamed keys, values kept as they came).
    pub fn record(&mut self, head: &RecordHead<'_>) -> RecordWriter<'_> {
        let start = self.bytes.len();
        put_head(&mut self.bytes, head);
        let count_at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        self.count += 1;
        RecordWriter {
            output: self,
            start,
            count_at,
            attributes: 0,
        }
    }

    /// Records emitted so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packed batch.
    pub fn into_bytes(mut self) -> Vec<u8> {
        patch_u32(&mut self.bytes, 0, self.count);
        self.bytes
    }
}

/// The attributes of a record being emitted by [`Output::record`]. The record is complete
/// when the writer is dropped.
pub struct RecordWriter<'o> {
    output: &'o mut Output,
    /// Where the record begins, to take it back out.
    start: usize,
    /// Where the attribute count goes, patched in on drop.
    count_at: usize,
    attributes: usize,
}

impl RecordWriter<'_> {
    /// Add the attribute `key`.
    pub fn attribute(&mut self, key: &str, value: ValueRef<'_>) {
        self.attribute_with_prefix("", key, value);
    }

    /// Add the attribute whose key is `prefix` followed by `key` (say `labels.` and an
    /// input key), without building the key as a string.
    pub fn attribute_with_prefix(&mut self, prefix: &str, key: &str, value: ValueRef<'_>) {
        put_attribute(&mut self.output.bytes, prefix, key, value);
        self.attributes += 1;
    }

    /// Take the record back out of the output, as if it had never been begun: for input
    /// found to be malformed halfway through writing it.
    pub fn discard(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        let start = this.start;
        this.output.bytes.truncate(start);
        this.output.count -= 1;
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        patch_u32(&mut self.output.bytes, self.count_at, self.attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed::{decode, encode, tests::sample};
    use crate::{Route, Value};

    fn packed(records: &[Record]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode(records, &mut bytes);
        bytes
    }

    #[test]
    fn a_view_reads_every_record_as_decode_does() {
        let records = sample();
        let bytes = packed(&records);
        let view = BatchView::new(&bytes).unwrap();
        assert_eq!(view.len(), records.len());
        assert_eq!(view.to_records(), records);
        let first = view.get(0);
        assert_eq!(first.get_str("service.name"), Some("checkout"));
        assert_eq!(first.get("latency"), Some(ValueRef::Float(12.5)));
        assert_eq!(first.get("missing"), None);
        assert_eq!(first.origin.to_origin(), *records[0].origin());
        assert!(first.is_cleaned() && first.is_error());
        let routes: Vec<Route> = view.iter().map(|r| r.route.to_route()).collect();
        let expected: Vec<Route> = records.iter().map(|r| r.route.clone()).collect();
        assert_eq!(routes, expected);
    }

    #[test]
    fn kept_records_are_their_input_bytes_and_pushed_ones_are_encoded() {
        let records = sample();
        let bytes = packed(&records);
        let view = BatchView::new(&bytes).unwrap();

        let mut kept = Output::new();
        view.iter().for_each(|r| kept.keep(&r));
        assert_eq!(kept.len(), records.len());
        assert_eq!(kept.into_bytes(), bytes);

        let mut changed = view.get(0).to_record();
        changed.body = "changed".into();
        changed.set("service.name", Value::Int(7));
        let mut out = Output::with_capacity(bytes.len());
        out.keep(&view.get(2));
        out.push(&changed);
        out.keep(&view.get(4));
        let expected = vec![records[2].clone(), changed, records[4].clone()];
        assert_eq!(decode(&out.into_bytes()).unwrap(), expected);

        assert_eq!(decode(&Output::new().into_bytes()).unwrap(), Vec::new());
    }

    #[test]
    fn a_record_written_field_by_field_decodes_as_the_record_it_describes() {
        let records = sample();
        let bytes = packed(&records);
        let view = BatchView::new(&bytes).unwrap();
        let input = view.get(0);

        let mut out = Output::new();
        let mut head = input.head();
        head.body = "rewritten";
        head.severity_number = severity::WARN;
        {
            let mut w = out.record(&head);
            w.attribute("service.name", ValueRef::Str("checkout"));
            w.attribute_with_prefix("labels.", "zone", ValueRef::Int(3));
        }
        // No attributes at all, from an owned record's head.
        drop(out.record(&records[1].head()));
        assert_eq!(out.len(), 2);

        let mut expected = records[0].clone();
        expected.body = "rewritten".into();
        expected.severity_number = severity::WARN;
        expected.attributes.clear();
        expected.set("service.name", "checkout");
        expected.set("labels.zone", 3i64);
        let mut bare = records[1].clone();
        bare.attributes.clear();
        assert_eq!(decode(&out.into_bytes()).unwrap(), vec![expected, bare]);
    }

    #[test]
    fn a_discarded_record_leaves_no_trace_in_the_output() {
        let records = sample();
        let mut out = Output::new();
        out.push(&records[0]);
        let before = out.len();
        {
            let mut w = out.record(&records[1].head());
            w.attribute("half", ValueRef::Str("written"));
            w.discard();
        }
        assert_eq!(out.len(), before);
        drop(out.record(&records[2].head()));

        let mut bare = records[2].clone();
        bare.attributes.clear();
        let mut expected = Output::new();
        expected.push(&records[0]);
        drop(expected.record(&bare.head()));
        let bytes = out.into_bytes();
        assert_eq!(bytes, expected.into_bytes());
        assert_eq!(decode(&bytes).unwrap(), vec![records[0].clone(), bare]);
    }

    #[test]
    fn a_batch_from_the_host_reads_the_same_and_still_has_its_lengths_checked() {
        let records = sample();
        let bytes = packed(&records);
        // SAFETY: `encode` wrote every string from a Rust string.
        let view = unsafe { BatchView::trusting_utf8(&bytes) }.unwrap();
        assert_eq!(view.to_records(), records);
        for len in 0..bytes.len() {
            // SAFETY: a prefix of valid strings, cut anywhere, is caught as truncated
            // before any string is taken.
            let trusted = unsafe { BatchView::trusting_utf8(&bytes[..len]) };
            assert_eq!(
                trusted.err(),
                decode(&bytes[..len]).err(),
                "truncated to {len} bytes"
            );
        }
    }

    #[test]
    fn a_view_rejects_exactly_what_decode_rejects() {
        let bytes = packed(&sample());
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            assert_eq!(
                BatchView::new(truncated).err(),
                decode(truncated).err(),
                "truncated to {len} bytes"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            BatchView::new(&trailing).err().map(|e| e.what),
            Some("trailing bytes after the last record")
        );
    }
}
