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
use crate::lake::columns;
use crate::lake::layout::Partition;
use crate::{Record, time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// When a segment is cut.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_span_ns: i64,
}

/// One event of a shared batch, by index, so buffering copies nothing.
#[derive(Debug, Clone)]
pub struct Item {
    pub events: Arc<Events>,
    pub index: usize,
}

impl Item {
    pub fn record(&self) -> Option<&Record> {
        match &*self.events {
            Events::Logs(logs) => logs.records().get(self.index),
            _ => None,
        }
    }

    pub fn raw(&self) -> Option<&RawMessage> {
        match &*self.events {
            Events::Raw(m) => m.get(self.index),
            _ => None,
        }
    }

    /// (offset, lake time, size estimate).
    pub fn facts(&self) -> Option<(i64, i64, usize)> {
        match &*self.events {
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

/// The records of one source partition since the last cut.
pub struct Segment {
    pub topic: String,
    pub partition: i32,
    pub records: usize,
    pub bytes: usize,
    min_time: i64,
    max_time: i64,
    /// The smallest and largest input offsets here (-1 while empty).
    pub first_offset: i64,
    pub last_offset: i64,
    /// Per lake partition: the items, and the smallest offset among them (the key).
    pub objects: BTreeMap<Partition, (i64, Vec<Item>)>,
    /// Handles of the batches with records here; acknowledged once the segment is written.
    pub acks: Vec<AckHandle>,
    /// The batch whose handle was pushed last, to clone each batch's handle once.
    last_batch: Option<u64>,
    pub last_append: Instant,
}

impl Segment {
    pub fn new(topic: &str, partition: i32) -> Segment {
        Segment {
            topic: topic.to_owned(),
            partition,
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

    /// Add one item, holding a clone of its batch's handle.
    pub fn push(&mut self, item: Item, offset: i64, time: i64, size: usize, ack: &AckHandle) {
        self.add(item, offset, time, size);
        if self.last_batch != Some(ack.seq()) {
            // Writing this segment settles only this partition's share of the batch.
            self.acks.push(ack.narrow(&self.topic, self.partition));
            self.last_batch = Some(ack.seq());
        }
        self.last_append = Instant::now();
    }

    fn add(&mut self, item: Item, offset: i64, time: i64, size: usize) {
        self.records += 1;
        self.bytes += size;
        self.min_time = self.min_time.min(time);
        self.max_time = self.max_time.max(time);
        if self.records == 1 {
            self.first_offset = offset;
        }
        self.last_offset = self.last_offset.max(offset);
        let entry = self
            .objects
            .entry(Partition::of(time))
            .or_insert((offset, Vec::new()));
        entry.0 = entry.0.min(offset);
        entry.1.push(item);
    }

    /// Drop the records of offsets up to `written` (another writer put them in the lake),
    /// keeping every batch handle: those records are durably written. The objects are
    /// named by the first offsets that remain, as a replay from `written` would name them.
    pub fn rebase(&mut self, written: i64) {
        let items: Vec<Item> = std::mem::take(&mut self.objects)
            .into_values()
            .flat_map(|(_, items)| items)
            .collect();
        let mut kept: Vec<(Item, i64, i64, usize)> = items
            .into_iter()
            .filter_map(|item| {
                let (offset, time, size) = item.facts()?;
                (offset > written).then_some((item, offset, time, size))
            })
            .collect();
        kept.sort_by_key(|k| k.1);
        *self = Segment {
            acks: std::mem::take(&mut self.acks),
            last_batch: self.last_batch,
            last_append: self.last_append,
            ..Segment::new(&self.topic, self.partition)
        };
        for (item, offset, time, size) in kept {
            self.add(item, offset, time, size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use crate::ack::{AckIssuer, BatchOffsets};

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
        let mut seg = Segment::new("t", 0);
        let mut cuts = Vec::new();
        for index in 0..5 {
            let item = Item {
                events: events.clone(),
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            if seg.must_cut_before(offset, time, size, &limits) {
                cuts.push(offset);
                seg = Segment::new("t", 0);
            }
            seg.push(item, offset, time, size, &ack);
        }
        // Offset 12 is almost an hour after 10: past the span, so a new segment starts
        // there, and 13 and 14 join it (3 records, the limit, is not exceeded).
        assert_eq!(cuts, vec![12]);
        assert_eq!(seg.records, 3);
        assert_eq!(seg.objects.len(), 2, "hour 1 and hour 2");
        assert_eq!(seg.objects.values().next().unwrap().0, 12);
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
        let mut seg = Segment::new("t", 0);
        let mut segments = Vec::new();
        for index in 0..6 {
            let item = Item {
                events: events.clone(),
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            if seg.must_cut_before(offset, time, size, &limits) {
                segments.push((seg.first_offset, seg.last_offset, seg.records));
                seg = Segment::new("t", 0);
            }
            seg.push(item, offset, time, size, &ack);
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
        let mut seg = Segment::new("t", 0);
        for index in 0..4 {
            let item = Item {
                events: events.clone(),
                index,
            };
            let (offset, time, size) = item.facts().unwrap();
            seg.push(item, offset, time, size, &ack);
        }
        seg.rebase(11);
        assert_eq!(
            (seg.records, seg.first_offset, seg.last_offset),
            (2, 12, 13)
        );
        let keys: Vec<i64> = seg.objects.values().map(|(first, _)| *first).collect();
        assert_eq!(keys, vec![12, 13], "hour 1 from 12, hour 2 from 13");
        assert_eq!(seg.acks.len(), 1, "the handles stay");
        seg.rebase(13);
        assert_eq!(seg.records, 0);
        assert!(seg.objects.is_empty());
        ack.ack();
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
    use crate::lake::Table;
    use sha2::{Digest, Sha256};

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
        let mut segments: Vec<Segment> = (0..3).map(|p| Segment::new("raw-logs", p)).collect();
        let start = Instant::now();
        for events in batches {
            let ack = issuer.issue(BatchOffsets::default());
            for index in 0..events.len() {
                let item = Item {
                    events: events.clone(),
                    index,
                };
                let (offset, time, size) = item.facts().unwrap();
                let p = item.record().unwrap().origin().partition as usize;
                assert!(!segments[p].must_cut_before(offset, time, size, &limits));
                segments[p].push(item, offset, time, size, &ack);
            }
            ack.ack();
        }
        let appended = start.elapsed();
        let held = heap_in_use().saturating_sub(base);
        let reported: usize = segments.iter().map(|s| s.bytes).sum();
        let start = Instant::now();
        let mut digest = Sha256::new();
        let mut written = 0;
        for segment in &segments {
            for (_, items) in segment.objects.values() {
                let records: Vec<&Record> = items.iter().filter_map(Item::record).collect();
                let body = columns::to_parquet(Table::Cleaned, &records).unwrap();
                written += body.len();
                digest.update(&body);
            }
        }
        let encoded = start.elapsed();
        let ns = |d: std::time::Duration| d.as_nanos() as f64 / RECORDS as f64;
        println!(
            "segment_cost: append {:.0} ns/record, encode {:.0} ns/record, total {:.0} ns/record; \
             records {} B each; held {} B/record once the batches are dropped \
             ({} B/record reported in flight); {} B of Parquet, sha256 {:x}",
            ns(appended),
            ns(encoded),
            ns(appended + encoded),
            generated / RECORDS,
            held / RECORDS,
            reported / RECORDS,
            written,
            digest.finalize()
        );
    }
}
