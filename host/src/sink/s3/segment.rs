//! Cutting a source partition's records into objects — deterministically.
//!
//! Per source (topic, partition) there is one open *segment*: the records this sink got from
//! that partition since the last cut, in arrival (offset) order. A segment is cut before the
//! record that would take it past `max_records`, `max_bytes` or `max_event_time_span_s` —
//! decisions that depend only on the records since the segment's first one, never on
//! batching or the clock — or when the partition has been idle for `idle_flush_ms`. It is
//! never cut between records of the same input offset (a plugin's fan-out): the marker
//! speaks of whole inputs, so an input's outputs are written together or not at all. A cut
//! segment becomes one object per (dt, hour) partition of its records, each named by the
//! first offset among its records.
//!
//! Why this is exactly-once (see docs/lake.md): after a segment is written the sink records
//! the segment's last offset in a marker object; after a crash the replay skips what the
//! marker covers, so the next segment starts at the same first record as before and —
//! being cut by the same rules — yields the same keys, which overwrite what a crash may
//! have left half-acknowledged.

use crate::ack::AckHandle;
use crate::event::{Events, RawMessage};
use crate::lake::columns::{self, ColumnsBuilder, EncodeError};
use crate::lake::layout::Partition;
use crate::lake::{Table, raw};
use crate::{Record, time};
use arrow_array::{RecordBatch, UInt32Array};
use std::collections::BTreeMap;
use std::time::Instant;

/// When a segment is cut.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_span_ns: i64,
}

/// One event of a shared batch, by index: read while it is appended, never kept.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub events: &'a Events,
    pub index: usize,
}

impl<'a> Item<'a> {
    pub fn record(&self) -> Option<&'a Record> {
        match self.events {
            Events::Logs(logs) => logs.records().get(self.index),
            _ => None,
        }
    }

    pub fn raw(&self) -> Option<&'a RawMessage> {
        match self.events {
            Events::Raw(m) => m.get(self.index),
            _ => None,
        }
    }

    /// (offset, lake time, size estimate).
    pub fn facts(&self) -> Option<(i64, i64, usize)> {
        match self.events {
            Events::Logs(logs) => logs.records().get(self.index).map(|r| {
                (
                    r.origin().offset,
                    columns::event_time(r),
                    columns::estimated_size(r),
                )
            }),
            Events::Raw(m) => m.get(self.index).map(|m| {
                let ts = if m.timestamp > 0 {
                    m.timestamp
                } else {
                    time::now_ns()
                };
                (m.origin.offset, ts, 96 + m.payload.len())
            }),
            Events::DeadLetters(_) => None,
        }
    }
}

/// The body of one object, filled as its records arrive.
enum Body {
    /// `cleaned`, `metrics`: the Parquet columns.
    Columns(ColumnsBuilder),
    /// The columns finished by a first attempt at writing, kept for another.
    Batch(RecordBatch),
    /// `raw`: the NDJSON lines, uncompressed, and where each ends.
    Lines { text: Vec<u8>, ends: Vec<usize> },
}

/// One object of a segment: one (dt, hour) partition of its records.
pub struct Object {
    /// The smallest input offset among its records: the key names it.
    pub first_offset: i64,
    /// The input offset of each row, in row order (what a rebase filters by).
    offsets: Vec<i64>,
    body: Body,
}

impl Object {
    fn new(table: Table, first_offset: i64) -> Object {
        let body = match table {
            Table::Raw => Body::Lines {
                text: Vec::new(),
                ends: Vec::new(),
            },
            Table::Cleaned | Table::Metrics => Body::Columns(ColumnsBuilder::new(table)),
        };
        Object {
            first_offset,
            offsets: Vec::new(),
            body,
        }
    }

    /// Add the item as the next row, if it is of the table's kind (the sink's config
    /// check lets only records into Parquet tables and only messages into `raw`).
    fn append(&mut self, item: &Item<'_>, offset: i64) -> Result<(), EncodeError> {
        match &mut self.body {
            Body::Columns(columns) => {
                let Some(r) = item.record() else {
                    return Ok(());
                };
                columns.append(r);
            }
            Body::Lines { text, ends } => {
                let Some(m) = item.raw() else {
                    return Ok(());
                };
                raw::encode_line(m, text);
                ends.push(text.len());
            }
            // Only a segment being written is finished, and it is no longer open.
            Body::Batch(_) => return Err(EncodeError::Finished),
        }
        self.offsets.push(offset);
        Ok(())
    }

    /// Bytes held in memory for this object.
    fn held_bytes(&mut self) -> usize {
        8 * self.offsets.capacity()
            + match &mut self.body {
                Body::Columns(columns) => columns.allocated_bytes(),
                Body::Batch(batch) => batch.get_array_memory_size(),
                Body::Lines { text, ends } => text.capacity() + 8 * ends.capacity(),
            }
    }

    /// The finished columns of a Parquet object.
    fn batch(&mut self) -> Result<&RecordBatch, EncodeError> {
        if let Body::Columns(columns) = &mut self.body {
            self.body = Body::Batch(columns.finish()?);
        }
        match &self.body {
            Body::Batch(batch) => Ok(batch),
            _ => Err(EncodeError::Finished),
        }
    }

    /// The object's content and content type.
    pub fn encode(&mut self) -> Result<(Vec<u8>, &'static str), EncodeError> {
        if let Body::Lines { text, .. } = &self.body {
            return Ok((raw::gzip(text), "application/x-ndjson"));
        }
        Ok((
            columns::write_parquet(self.batch()?)?,
            "application/vnd.apache.parquet",
        ))
    }

    /// Keep only the rows of offsets after `written`, in offset order (stable), and name
    /// the object by the first of them. Returns how many remain.
    fn retain_after(&mut self, written: i64) -> Result<usize, EncodeError> {
        let mut keep: Vec<u32> = (0..self.offsets.len() as u32)
            .filter(|&i| self.offsets[i as usize] > written)
            .collect();
        keep.sort_by_key(|&i| self.offsets[i as usize]);
        if keep.iter().copied().eq(0..self.offsets.len() as u32) {
            return Ok(keep.len());
        }
        if let Body::Lines { text, ends } = &mut self.body {
            let (mut kept_text, mut kept_ends) = (Vec::new(), Vec::new());
            for &i in &keep {
                let start = if i == 0 { 0 } else { ends[i as usize - 1] };
                kept_text.extend_from_slice(&text[start..ends[i as usize]]);
                kept_ends.push(kept_text.len());
            }
            (*text, *ends) = (kept_text, kept_ends);
        } else {
            let taken = arrow_select::take::take_record_batch(
                self.batch()?,
                &UInt32Array::from(keep.clone()),
            )?;
            self.body = Body::Batch(taken);
        }
        self.offsets = keep.iter().map(|&i| self.offsets[i as usize]).collect();
        self.first_offset = self.offsets.first().copied().unwrap_or(-1);
        Ok(keep.len())
    }
}

/// The records of one source partition since the last cut.
pub struct Segment {
    pub topic: String,
    pub partition: i32,
    table: Table,
    pub records: usize,
    /// The records' estimated size, for `max_bytes` (not their size in memory).
    pub bytes: usize,
    min_time: i64,
    max_time: i64,
    /// The smallest and largest input offsets here (-1 while empty).
    pub first_offset: i64,
    pub last_offset: i64,
    /// Per lake partition, the object being filled.
    pub objects: BTreeMap<Partition, Object>,
    /// Handles of the batches with records here; acknowledged once the segment is written.
    pub acks: Vec<AckHandle>,
    /// The batch whose handle was pushed last, to clone each batch's handle once.
    last_batch: Option<u64>,
    pub last_append: Instant,
}

impl Segment {
    pub fn new(topic: &str, partition: i32, table: Table) -> Segment {
        Segment {
            topic: topic.to_owned(),
            partition,
            table,
            records: 0,
            bytes: 0,
            min_time: i64::MAX,
            max_time: i64::MIN,
            first_offset: -1,
            last_offset: -1,
            objects: BTreeMap::new(),
            acks: Vec::new(),
            last_batch: None,
            last_append: Instant::now(),
        }
    }

    /// Whether adding a record of input `offset`, `time` and `size` must start a new
    /// segment first. Never between outputs of one input: the object may then exceed the
    /// limits by that input's fan-out.
    pub fn must_cut_before(&self, offset: i64, time: i64, size: usize, limits: &Limits) -> bool {
        if self.records == 0 || offset == self.last_offset {
            return false;
        }
        self.records + 1 > limits.max_records
            || self.bytes + size > limits.max_bytes
            || time.saturating_sub(self.min_time) > limits.max_span_ns
            || self.max_time.saturating_sub(time) > limits.max_span_ns
    }

    /// Append one item to its object's body, holding a clone of its batch's handle (not
    /// the batch).
    pub fn push(
        &mut self,
        item: &Item<'_>,
        (offset, time, size): (i64, i64, usize),
        ack: &AckHandle,
    ) -> Result<(), EncodeError> {
        let table = self.table;
        let object = self
            .objects
            .entry(Partition::of(time))
            .or_insert_with(|| Object::new(table, offset));
        object.append(item, offset)?;
        object.first_offset = object.first_offset.min(offset);
        self.records += 1;
        self.bytes += size;
        self.min_time = self.min_time.min(time);
        self.max_time = self.max_time.max(time);
        if self.records == 1 {
            self.first_offset = offset;
        }
        self.last_offset = self.last_offset.max(offset);
        if self.last_batch != Some(ack.seq()) {
            // Writing this segment settles only this partition's share of the batch.
            self.acks.push(ack.narrow(&self.topic, self.partition));
            self.last_batch = Some(ack.seq());
        }
        self.last_append = Instant::now();
        Ok(())
    }

    /// Bytes the segment's objects hold in memory.
    pub fn held_bytes(&mut self) -> usize {
        self.objects.values_mut().map(Object::held_bytes).sum()
    }

    /// Drop the records of offsets up to `written` (another writer put them in the lake),
    /// keeping every batch handle: those records are durably written. The objects are
    /// named by the first offsets that remain, as a replay from `written` would name them.
    pub fn rebase(&mut self, written: i64) -> Result<(), EncodeError> {
        let mut records = 0;
        for object in self.objects.values_mut() {
            records += object.retain_after(written)?;
        }
        self.objects.retain(|_, o| !o.offsets.is_empty());
        self.records = records;
        self.first_offset = (self.objects.values())
            .map(|o| o.first_offset)
            .min()
            .unwrap_or(-1);
        self.last_offset = (self.objects.values())
            .filter_map(|o| o.offsets.iter().max().copied())
            .max()
            .unwrap_or(-1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use crate::ack::{AckIssuer, BatchOffsets};
    use std::sync::Arc;

    fn records(times: &[i64]) -> Arc<Events> {
        Arc::new(Events::Logs(
            times
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut r = Record::new(Origin {
                        topic: "t".into(),
                        partition: 0,
                        offset: 10 + i as i64,
                    });
                    r.timestamp = *t;
                    r
                })
                .collect::<Vec<_>>()
                .into(),
        ))
    }

    #[test]
    fn cuts_depend_only_on_the_records() {
        let limits = Limits {
            max_records: 3,
            max_bytes: 1 << 20,
            max_span_ns: 600_000_000_000,
        };
        let hour = 3_600_000_000_000;
        let events = records(&[hour, hour + 1, 2 * hour - 1, 2 * hour + 5, 2 * hour + 6]);
        let (mut issuer, _rx) = AckIssuer::new();
        let ack = issuer.issue(BatchOffsets::default());
        let mut seg = Segment::new("t", 0, Table::Cleaned);
        let mut cuts = Vec::new();
        for index in 0..5 {
            let item = Item {
                events: &events,
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            if seg.must_cut_before(offset, time, size, &limits) {
                cuts.push(offset);
                seg = Segment::new("t", 0, Table::Cleaned);
            }
            seg.push(&item, (offset, time, size), &ack).unwrap();
        }
        // Offset 12 is almost an hour after 10: past the span, so a new segment starts
        // there, and 13 and 14 join it (3 records, the limit, is not exceeded).
        assert_eq!(cuts, vec![12]);
        assert_eq!(seg.records, 3);
        assert_eq!(seg.objects.len(), 2, "hour 1 and hour 2");
        assert_eq!(seg.objects.values().next().unwrap().first_offset, 12);
        assert_eq!(seg.acks.len(), 1, "one handle per batch");
        ack.ack();
    }

    /// Records of `(offset, time)`, as a plugin's fan-out gives them.
    fn fanned(records: &[(i64, i64)]) -> Arc<Events> {
        Arc::new(Events::Logs(
            records
                .iter()
                .map(|&(offset, t)| {
                    let mut r = Record::new(Origin {
                        topic: "t".into(),
                        partition: 0,
                        offset,
                    });
                    r.timestamp = t;
                    r
                })
                .collect::<Vec<_>>()
                .into(),
        ))
    }

    #[test]
    fn never_cuts_between_outputs_of_one_input() {
        let limits = Limits {
            max_records: 2,
            max_bytes: 1 << 20,
            max_span_ns: 600_000_000_000,
        };
        // Offset 10 gave three records, 11 one, 12 two.
        let events = fanned(&[(10, 1), (10, 1), (10, 1), (11, 1), (12, 1), (12, 1)]);
        let (mut issuer, _rx) = AckIssuer::new();
        let ack = issuer.issue(BatchOffsets::default());
        let mut seg = Segment::new("t", 0, Table::Cleaned);
        let mut segments = Vec::new();
        for index in 0..6 {
            let item = Item {
                events: &events,
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            if seg.must_cut_before(offset, time, size, &limits) {
                segments.push((seg.first_offset, seg.last_offset, seg.records));
                seg = Segment::new("t", 0, Table::Cleaned);
            }
            seg.push(&item, (offset, time, size), &ack).unwrap();
        }
        segments.push((seg.first_offset, seg.last_offset, seg.records));
        assert_eq!(segments, vec![(10, 10, 3), (11, 12, 3)]);
        ack.ack();
    }

    #[test]
    fn rebase_drops_what_another_writer_wrote_and_renames_the_objects() {
        let hour = 3_600_000_000_000;
        let events = fanned(&[(10, hour), (11, 2 * hour), (12, hour + 5), (13, 2 * hour)]);
        let (mut issuer, _rx) = AckIssuer::new();
        let ack = issuer.issue(BatchOffsets::default());
        let mut seg = Segment::new("t", 0, Table::Cleaned);
        for index in 0..4 {
            let item = Item {
                events: &events,
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            seg.push(&item, (offset, time, size), &ack).unwrap();
        }
        seg.rebase(11).unwrap();
        assert_eq!(
            (seg.records, seg.first_offset, seg.last_offset),
            (2, 12, 13)
        );
        let keys: Vec<i64> = seg.objects.values().map(|o| o.first_offset).collect();
        assert_eq!(keys, vec![12, 13], "hour 1 from 12, hour 2 from 13");
        assert_eq!(seg.acks.len(), 1, "the handles stay");
        seg.rebase(13).unwrap();
        assert_eq!(seg.records, 0);
        assert!(seg.objects.is_empty());
        ack.ack();
    }

    /// Records of `(offset, hour)` with some attributes, and raw messages of the same.
    fn mixed(records: &[(i64, i64)]) -> (Events, Events) {
        let hour = 3_600_000_000_000;
        let logs = records
            .iter()
            .map(|&(offset, h)| {
                let mut r = Record::new(Origin {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                });
                r.timestamp = h * hour + offset;
                r.body = format!("line {offset}");
                r.set("service.name", "checkout");
                r.set("retry", offset);
                r
            })
            .collect::<Vec<_>>();
        let raw = records
            .iter()
            .map(|&(offset, h)| RawMessage {
                origin: Origin {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                },
                key: None,
                payload: format!("{{\"n\":{offset}}}").into_bytes(),
                timestamp: h * hour + offset,
            })
            .collect();
        (Events::Logs(logs.into()), Events::Raw(raw))
    }

    fn objects(
        events: &Events,
        table: Table,
        from: i64,
        rebase: Option<i64>,
    ) -> Vec<(i64, Vec<u8>)> {
        let (mut issuer, _rx) = AckIssuer::new();
        let ack = issuer.issue(BatchOffsets::default());
        let mut seg = Segment::new("t", 0, table);
        for index in 0..events.len() {
            let item = Item { events, index };
            let facts = item.facts().unwrap();
            if facts.0 >= from {
                seg.push(&item, facts, &ack).unwrap();
            }
        }
        if let Some(written) = rebase {
            seg.rebase(written).unwrap();
        }
        ack.ack();
        seg.objects
            .values_mut()
            .map(|o| (o.first_offset, o.encode().unwrap().0))
            .collect()
    }

    #[test]
    fn a_rebased_segment_writes_what_one_of_the_remaining_records_writes() {
        // Offset 12 gave two records; hours alternate so each object loses some rows.
        let input = [
            (10, 1),
            (11, 2),
            (12, 1),
            (12, 2),
            (13, 1),
            (14, 2),
            (15, 1),
        ];
        let (logs, raw) = mixed(&input);
        for (events, table) in [(&logs, Table::Cleaned), (&raw, Table::Raw)] {
            for written in [9, 11, 12, 14, 15] {
                let rebased = objects(events, table, 0, Some(written));
                let fresh = objects(events, table, written + 1, None);
                assert_eq!(rebased.len(), fresh.len(), "{table} after {written}");
                for ((k1, b1), (k2, b2)) in rebased.iter().zip(&fresh) {
                    assert_eq!(k1, k2, "{table} after {written}: the object's name");
                    assert!(b1 == b2, "{table} after {written}: the object's bytes");
                }
            }
        }
    }
}

/// What the segment costs per record: `cargo test -p sluice --lib segment_cost -- --ignored
/// --nocapture` pushes 100k cleaned-like records (batches of 1,000, three source
/// partitions) through segments and writes each object, printing the time per record and
/// the bytes the open segments hold per record once the batches are dropped.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod cost {
    use super::*;
    use crate::Origin;
    use crate::ack::{AckIssuer, BatchOffsets};
    use sha2::{Digest, Sha256};
    use std::sync::Arc;

    /// Bytes allocated, small blocks and large (mapped) ones.
    fn heap_in_use() -> usize {
        // SAFETY: reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }

    fn record(partition: i32, offset: i64, i: usize) -> Record {
        let mut r = Record::new(Origin {
            topic: "raw-logs".into(),
            partition,
            offset,
        });
        r.timestamp = 1_764_064_800_000_000_000 + i as i64 * 1_000_000;
        r.observed_timestamp = r.timestamp + 5_000_000;
        let error = i.is_multiple_of(17);
        r.severity_number = if error { 17 } else { 9 };
        r.severity_text = if error { "error" } else { "info" }.into();
        r.body = format!(
            "GET /api/v1/orders/{} completed in {} ms for user u{}",
            i % 9973,
            i % 250,
            i % 4099
        );
        let services = ["checkout", "payments", "search", "auth", "inventory"];
        r.set("service.name", services[i % services.len()]);
        r.set(
            "host.name",
            format!("ip-10-0-{}-{}", i % 7, i % 200).as_str(),
        );
        r.set(
            "trace.id",
            format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15).as_str(),
        );
        r.set(
            "span.id",
            format!("{:016x}", i as u64 * 0x2545_f491).as_str(),
        );
        r.set("http.request.method", "GET");
        r.set(
            "http.response.status_code",
            if error { 502i64 } else { 200 },
        );
        r.set("url.path", format!("/api/v1/orders/{}", i % 9973).as_str());
        r.set("event.duration", (i % 250) as i64 * 1_000_000);
        r.set("event.dataset", "app");
        r.set("event.id", format!("e-{i:012}").as_str());
        r.set("user.id", format!("u{}", i % 4099).as_str());
        r.set("log.level", if error { "error" } else { "info" });
        r
    }

    #[test]
    #[ignore = "a measurement, not a check: run it by name with --nocapture"]
    fn segment_cost() {
        const RECORDS: usize = 100_000;
        const BATCH: usize = 1_000;
        let limits = Limits {
            max_records: RECORDS,
            max_bytes: usize::MAX,
            max_span_ns: i64::MAX,
        };
        let (mut issuer, _rx) = AckIssuer::new();
        let base = heap_in_use();
        let batches: Vec<Arc<Events>> = (0..RECORDS / BATCH)
            .map(|b| {
                let records: Vec<Record> = (0..BATCH)
                    .map(|j| {
                        let i = b * BATCH + j;
                        record((i % 3) as i32, (i / 3) as i64, i)
                    })
                    .collect();
                Arc::new(Events::Logs(records.into()))
            })
            .collect();
        let generated = heap_in_use().saturating_sub(base);
        let mut segments: Vec<Segment> = (0..3)
            .map(|p| Segment::new("raw-logs", p, Table::Cleaned))
            .collect();
        let start = Instant::now();
        for events in batches {
            let ack = issuer.issue(BatchOffsets::default());
            for index in 0..events.len() {
                let item = Item {
                    events: &events,
                    index,
                };
                let (offset, time, size) = item.facts().unwrap();
                let p = item.record().unwrap().origin().partition as usize;
                assert!(!segments[p].must_cut_before(offset, time, size, &limits));
                segments[p].push(&item, (offset, time, size), &ack).unwrap();
            }
            ack.ack();
        }
        let appended = start.elapsed();
        let held = heap_in_use().saturating_sub(base);
        let reported: usize = segments.iter_mut().map(Segment::held_bytes).sum();
        let start = Instant::now();
        let mut digest = Sha256::new();
        let mut written = 0;
        for segment in &mut segments {
            for object in segment.objects.values_mut() {
                let (body, _) = object.encode().unwrap();
                written += body.len();
                digest.update(&body);
            }
        }
        let encoded = start.elapsed();
        // What the records cost to free is paid here or, once a batch is appended, above.
        let start = Instant::now();
        drop(segments);
        let dropped = start.elapsed();
        let ns = |d: std::time::Duration| d.as_nanos() as f64 / RECORDS as f64;
        println!(
            "segment_cost: append {:.0} ns/record, encode {:.0} ns/record, drop {:.0} ns/record, \
             total {:.0} ns/record; \
             records {} B each; held {} B/record once the batches are dropped \
             ({} B/record reported in flight); {} B of Parquet, sha256 {:x}",
            ns(appended),
            ns(encoded),
            ns(dropped),
            ns(appended + encoded + dropped),
            generated / RECORDS,
            held / RECORDS,
            reported / RECORDS,
            written,
            digest.finalize()
        );
    }
}
