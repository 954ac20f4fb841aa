//! A batch between chain stages: packed, or records.
//!
//! The pipeline decodes messages straight into a packed batch, and a packed-world plugin
//! returns its batch as one byte string. Decoding that string into records and encoding
//! them again for the next stage would cost more than most plugins' own work; instead the
//! host checks it once ([`packed::scan`], which rejects everything `decode` would) and
//! hands the bytes on as they are, to the next stage and in the end to the sinks.

use crate::Record;
use sluice_plugin_sdk::BatchView;
use sluice_plugin_sdk::packed::{self, PackedError};
use std::borrow::Cow;
use std::ops::Range;

pub enum Batch {
    Records(Vec<Record>),
    Packed(PackedBatch),
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Batch::Records(_) => "Records",
            Batch::Packed(_) => "Packed",
        };
        write!(f, "Batch::{kind}({} records)", self.len())
    }
}

/// A checked packed batch and, per record, what the chain routes and keeps time by.
pub struct PackedBatch {
    bytes: Vec<u8>,
    records: Vec<Summary>,
    /// The distinct origin topics, in order of first appearance.
    topics: Vec<String>,
}

struct Summary {
    span: Range<usize>,
    timestamp: i64,
    partition: i32,
    offset: i64,
    topic: usize,
    cleaned: bool,
}

impl PackedBatch {
    /// Check a plugin's output. The error says where and why it is malformed.
    pub fn new(bytes: Vec<u8>) -> Result<PackedBatch, PackedError> {
        let mut records = Vec::new();
        let mut topics: Vec<String> = Vec::new();
        packed::scan(&bytes, |s| {
            // Batches rarely mix topics: compare with the last one first.
            let topic = match topics.iter().rposition(|t| t == s.topic) {
                Some(index) => index,
                None => {
                    topics.push(s.topic.to_owned());
                    topics.len() - 1
                }
            };
            records.push(Summary {
                span: s.span,
                timestamp: s.timestamp,
                partition: s.partition,
                offset: s.offset,
                topic,
                cleaned: s.cleaned,
            });
        })?;
        Ok(PackedBatch {
            bytes,
            records,
            topics,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn decode(&self) -> Vec<Record> {
        // SAFETY: `new` accepted the bytes only after `packed::scan` checked every string.
        unsafe { packed::decode_scanned(&self.bytes) }.expect("a scanned batch decodes")
    }

    /// The records read in place.
    pub fn view(&self) -> BatchView<'_> {
        // SAFETY: `new` accepted the bytes only after `packed::scan` checked every string.
        unsafe { BatchView::trusting_utf8(&self.bytes) }.expect("a scanned batch reads")
    }

    /// A batch of the records at `indices`, copied by span.
    fn select(&self, indices: impl Iterator<Item = usize>) -> Vec<u8> {
        let spans: Vec<Range<usize>> = indices.map(|i| self.records[i].span.clone()).collect();
        let mut out = Vec::new();
        packed::select(&self.bytes, &spans, &mut out);
        out
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Records(records) => records.len(),
            Batch::Packed(batch) => batch.records.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, decoded if packed.
    pub fn records(&self) -> Cow<'_, [Record]> {
        match self {
            Batch::Records(records) => Cow::Borrowed(records),
            Batch::Packed(batch) => Cow::Owned(batch.decode()),
        }
    }

    pub fn into_records(self) -> Vec<Record> {
        match self {
            Batch::Records(records) => records,
            Batch::Packed(batch) => batch.decode(),
        }
    }

    /// The packed bytes, encoded if these are records. Every string in them is UTF-8: they
    /// were encoded from records, or passed `packed::scan` in [`PackedBatch::new`]. A `Vec`,
    /// as the packed world's bindings take a `packed-batch`.
    pub fn packed(&self) -> Cow<'_, Vec<u8>> {
        match self {
            Batch::Records(records) => {
                let mut bytes = Vec::new();
                packed::encode(records, &mut bytes);
                Cow::Owned(bytes)
            }
            Batch::Packed(batch) => Cow::Borrowed(&batch.bytes),
        }
    }

    /// Each record's origin topic, partition and event time, in order.
    pub fn for_each_origin(&self, mut each: impl FnMut(&str, i32, i64)) {
        match self {
            Batch::Records(records) => {
                for r in records {
                    let origin = r.origin();
                    each(&origin.topic, origin.partition, r.timestamp);
                }
            }
            Batch::Packed(batch) => {
                for s in &batch.records {
                    each(&batch.topics[s.topic], s.partition, s.timestamp);
                }
            }
        }
    }

    /// Each record's origin topic, partition and offset, in order.
    pub fn for_each_source(&self, mut each: impl FnMut(&str, i32, i64)) {
        match self {
            Batch::Records(records) => {
                for r in records {
                    let origin = r.origin();
                    each(&origin.topic, origin.partition, origin.offset);
                }
            }
            Batch::Packed(batch) => {
                for s in &batch.records {
                    each(&batch.topics[s.topic], s.partition, s.offset);
                }
            }
        }
    }

    /// Split into the records that stay on the `cleaned` route and the ones that leave the
    /// chain here. A packed batch stays packed, and when every record stays (the common
    /// case) it is passed on untouched.
    pub fn split_cleaned(self) -> (Batch, Vec<Record>) {
        match self {
            Batch::Records(records) => {
                let (cleaned, leaving) = records
                    .into_iter()
                    .partition(|r| r.route == crate::Route::Cleaned);
                (Batch::Records(cleaned), leaving)
            }
            Batch::Packed(batch) => {
                if batch.records.iter().all(|s| s.cleaned) {
                    return (Batch::Packed(batch), Vec::new());
                }
                let indices = |cleaned: bool| {
                    let records = &batch.records;
                    (0..records.len()).filter(move |&i| records[i].cleaned == cleaned)
                };
                let leaving = packed::decode(&batch.select(indices(false)))
                    .expect("records of a scanned batch decode");
                let cleaned = PackedBatch::new(batch.select(indices(true)))
                    .expect("records of a scanned batch scan");
                (Batch::Packed(cleaned), leaving)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Origin, Route};

    fn record(topic: &str, partition: i32, timestamp: i64, route: Route) -> Record {
        let mut r = Record::new(Origin {
            topic: topic.into(),
            partition,
            offset: timestamp,
        });
        r.timestamp = timestamp;
        r.body = format!("line {timestamp}");
        r.route = route;
        r
    }

    fn packed(records: &[Record]) -> Batch {
        let mut bytes = Vec::new();
        packed::encode(records, &mut bytes);
        Batch::Packed(PackedBatch::new(bytes).unwrap())
    }

    #[test]
    fn a_packed_batch_reads_like_the_records_it_holds() {
        let records = vec![
            record("a", 0, 10, Route::Cleaned),
            record("b", 1, 20, Route::Metrics),
            record("a", 2, 30, Route::Cleaned),
        ];
        let batch = packed(&records);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.records().into_owned(), records);
        let mut origins = Vec::new();
        batch.for_each_origin(|t, p, ts| origins.push((t.to_owned(), p, ts)));
        let mut expected = Vec::new();
        Batch::Records(records.clone())
            .for_each_origin(|t, p, ts| expected.push((t.to_owned(), p, ts)));
        assert_eq!(origins, expected);
        let mut sources = Vec::new();
        batch.for_each_source(|t, p, o| sources.push((t.to_owned(), p, o)));
        let mut expected = Vec::new();
        Batch::Records(records.clone())
            .for_each_source(|t, p, o| expected.push((t.to_owned(), p, o)));
        assert_eq!(sources, expected);
        assert_eq!(sources[1], ("b".to_owned(), 1, 20));
        assert_eq!(batch.into_records(), records);
    }

    #[test]
    fn splitting_keeps_cleaned_records_packed_and_in_order() {
        let records = vec![
            record("t", 0, 1, Route::Cleaned),
            record("t", 0, 2, Route::Dlq("bad".into())),
            record("t", 0, 3, Route::Cleaned),
            record("t", 0, 4, Route::Metrics),
        ];
        let (cleaned, leaving) = packed(&records).split_cleaned();
        assert!(matches!(cleaned, Batch::Packed(_)));
        assert_eq!(
            cleaned.into_records(),
            vec![records[0].clone(), records[2].clone()]
        );
        assert_eq!(leaving, vec![records[1].clone(), records[3].clone()]);

        let (cleaned, leaving) = Batch::Records(records.clone()).split_cleaned();
        assert_eq!(cleaned.len(), 2);
        assert_eq!(leaving.len(), 2);

        // All cleaned: the very same bytes go on.
        let all = vec![records[0].clone(), records[2].clone()];
        let batch = packed(&all);
        let before = batch.packed().into_owned();
        let (cleaned, leaving) = batch.split_cleaned();
        assert!(leaving.is_empty());
        assert_eq!(cleaned.packed().into_owned(), before);
    }

    #[test]
    fn a_malformed_batch_is_refused_with_where() {
        let mut bytes = Vec::new();
        packed::encode(&[record("t", 0, 1, Route::Cleaned)], &mut bytes);
        bytes.truncate(bytes.len() - 1);
        let err = PackedBatch::new(bytes)
            .err()
            .expect("truncated batch refused");
        assert_eq!(err.what, "truncated");
    }
}
