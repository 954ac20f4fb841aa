//! The origin rule: a plugin's records must come from inputs the host gave it.
//!
//! Sinks name what they write after a record's origin — S3 keys and markers from the
//! source topic, partition and first offset, search `_id`s from topic/partition/offset —
//! and the origin is a field the plugin writes. So the host checks it: per stage, per source
//! (topic, partition), it keeps the lowest and the highest offset it has given the stage in
//! `process`. Every record the stage emits, from `process` or `tick`, must claim a
//! (topic, partition) it was given, at an offset within that range. The current input
//! counts as given, and so does every earlier one: a metrics window emits from the origin
//! of its first record, which may have come in an earlier batch.
//!
//! A record outside the rule is dead-lettered, never delivered: an offset past what was
//! given (`i64::MAX`) would poison the lake's markers, and an origin left at its default
//! would make keys and `_id`s of unrelated records collide (a conflict the search sink
//! counts as delivered). Its dead letter is attributed to the last origin the stage was
//! given, since its own cannot be trusted; the reason names the origin it claimed.
//!
//! The range is a bound, not a set: a plugin can still attribute a record to another
//! offset it was given, which points at real input and collides with nothing new.
//!
//! Cost: one pass over each call's input and one over its output, a comparison per record
//! and no allocation; only a call that breaks the rule has its output decoded.

use crate::batch::Batch;
use crate::{Origin, Record, Route};

/// The offsets the host has given one stage, per source partition.
#[derive(Debug, Default)]
pub struct GivenOrigins {
    partitions: Vec<Given>,
    /// The last origin given (index into `partitions`, offset).
    last: Option<(usize, i64)>,
}

#[derive(Debug)]
struct Given {
    topic: String,
    partition: i32,
    lowest: i64,
    highest: i64,
}

impl GivenOrigins {
    /// Note the origins of a batch about to be given to the stage.
    pub fn give(&mut self, batch: &Batch) {
        let mut hint = 0;
        batch.for_each_source(|topic, partition, offset| {
            self.give_one(topic, partition, offset, &mut hint)
        });
    }

    /// [`GivenOrigins::give`] for records.
    pub fn give_records(&mut self, records: &[Record]) {
        let mut hint = 0;
        for r in records {
            let o = r.origin();
            self.give_one(&o.topic, o.partition, o.offset, &mut hint);
        }
    }

    /// A restored state vouches for the partition's offsets before `resume_at`, where the
    /// host resumes it: a window opened before the snapshot emits from the origin of its
    /// first record, which this stage was never given.
    pub fn vouch_below(&mut self, topic: &str, partition: i32, resume_at: i64) {
        let mut hint = 0;
        let highest = resume_at.saturating_sub(1);
        match self.find(topic, partition, &mut hint) {
            Some(index) => {
                let given = &mut self.partitions[index];
                given.lowest = 0;
                given.highest = given.highest.max(highest);
            }
            None => self.partitions.push(Given {
                topic: topic.to_owned(),
                partition,
                lowest: 0,
                highest,
            }),
        }
    }

    fn give_one(&mut self, topic: &str, partition: i32, offset: i64, hint: &mut usize) {
        let index = match self.find(topic, partition, hint) {
            Some(index) => {
                let given = &mut self.partitions[index];
                given.lowest = given.lowest.min(offset);
                given.highest = given.highest.max(offset);
                index
            }
            None => {
                self.partitions.push(Given {
                    topic: topic.to_owned(),
                    partition,
                    lowest: offset,
                    highest: offset,
                });
                self.partitions.len() - 1
            }
        };
        *hint = index;
        self.last = Some((index, offset));
    }

    /// The entry for (topic, partition); `hint` is where the previous record's was
    /// (batches rarely mix partitions).
    fn find(&self, topic: &str, partition: i32, hint: &mut usize) -> Option<usize> {
        let matches = |g: &Given| g.partition == partition && g.topic == topic;
        if self.partitions.get(*hint).is_some_and(matches) {
            return Some(*hint);
        }
        let index = self.partitions.iter().position(matches)?;
        *hint = index;
        Some(index)
    }

    fn holds(&self, topic: &str, partition: i32, offset: i64, hint: &mut usize) -> bool {
        self.find(topic, partition, hint).is_some_and(|i| {
            let given = &self.partitions[i];
            (given.lowest..=given.highest).contains(&offset)
        })
    }

    fn last(&self) -> Option<Origin> {
        self.last.map(|(index, offset)| Origin {
            topic: self.partitions[index].topic.clone(),
            partition: self.partitions[index].partition,
            offset,
        })
    }

    /// Hold `output` to the rule: every record whose origin the stage was not given is
    /// turned into a dead letter saying so. Returns the batch and how many were turned.
    pub fn enforce(&self, output: Batch, plugin: &str) -> (Batch, usize) {
        let mut outside = 0;
        let mut hint = 0;
        output.for_each_source(|topic, partition, offset| {
            outside += usize::from(!self.holds(topic, partition, offset, &mut hint));
        });
        if outside == 0 {
            return (output, 0);
        }
        let last = self.last();
        let records = output
            .into_records()
            .into_iter()
            .map(|r| {
                let o = r.origin();
                if self.holds(&o.topic, o.partition, o.offset, &mut hint) {
                    return r;
                }
                let reason = format!(
                    "emitted a record whose origin ({}/{}/{}) was never given to it: copy the origin of the input record it derives from",
                    o.topic, o.partition, o.offset
                );
                let reason = match &r.route {
                    Route::Dlq(own) => format!("{reason} (it dead-lettered the record: {own})"),
                    _ => reason,
                };
                let origin = last.clone().unwrap_or_else(|| o.clone());
                rehome(r, origin, Route::Dlq(reason))
            })
            .collect();
        // Once per call, not per record: a plugin that forgets origins forgets them all.
        tracing::warn!(
            plugin,
            records = outside,
            "emitted records whose origin it was never given; they are dead-lettered"
        );
        (Batch::Records(records), outside)
    }
}

/// `record` with another origin and route (the SDK keeps a record's origin read-only).
fn rehome(record: Record, origin: Origin, route: Route) -> Record {
    let mut out = Record::new(origin);
    out.timestamp = record.timestamp;
    out.observed_timestamp = record.observed_timestamp;
    out.severity_number = record.severity_number;
    out.severity_text = record.severity_text;
    out.body = record.body;
    out.attributes = record.attributes;
    out.route = route;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::PackedBatch;

    fn record(topic: &str, partition: i32, offset: i64, body: &str) -> Record {
        let mut r = Record::new(Origin {
            topic: topic.into(),
            partition,
            offset,
        });
        r.body = body.into();
        r
    }

    fn packed(records: &[Record]) -> Batch {
        let mut bytes = Vec::new();
        sluice_plugin_sdk::packed::encode(records, &mut bytes);
        Batch::Packed(PackedBatch::new(bytes).unwrap())
    }

    fn given() -> GivenOrigins {
        let mut given = GivenOrigins::default();
        given.give(&packed(&[
            record("t", 0, 10, "a"),
            record("t", 1, 5, "b"),
            record("t", 0, 12, "c"),
        ]));
        given.give_records(&[record("t", 0, 20, "d")]);
        given
    }

    #[test]
    fn output_within_what_was_given_passes_untouched() {
        let given = given();
        // Offsets between the lowest and highest given, this batch's or earlier ones'.
        let output = packed(&[
            record("t", 0, 10, "x"),
            record("t", 0, 15, "y"),
            record("t", 1, 5, "z"),
            record("t", 0, 20, "w"),
        ]);
        let before = output.packed().into_owned();
        let (after, outside) = given.enforce(output, "p");
        assert_eq!(outside, 0);
        assert!(matches!(after, Batch::Packed(_)), "kept packed");
        assert_eq!(after.packed().into_owned(), before);
    }

    #[test]
    fn records_claiming_origins_never_given_are_dead_lettered() {
        let given = given();
        let mut own_dead = record("t", 0, i64::MAX, "own");
        own_dead.route = Route::Dlq("bad input".into());
        let output = vec![
            record("t", 0, 11, "fine"),
            record("t", 0, i64::MAX, "forged"),
            record("", 0, 0, "default"),
            record("t", 0, 9, "below"),
            record("t", 2, 10, "other partition"),
            own_dead,
        ];
        for batch in [packed(&output), Batch::Records(output.clone())] {
            let (after, outside) = given.enforce(batch, "p");
            assert_eq!(outside, 5);
            let after = after.into_records();
            assert_eq!(after[0], output[0]);
            for (r, claimed) in after[1..].iter().zip([
                "t/0/9223372036854775807",
                "/0/0",
                "t/0/9",
                "t/2/10",
                "t/0/9223372036854775807",
            ]) {
                let Route::Dlq(reason) = &r.route else {
                    panic!("{:?} not dead-lettered", r.body)
                };
                assert!(
                    reason.starts_with(&format!("emitted a record whose origin ({claimed}) was never given to it: copy the origin")),
                    "{reason}"
                );
                // Attributed to the last origin given, never to the claimed one.
                assert_eq!(r.origin(), &record("t", 0, 20, "").origin().clone());
            }
            let Route::Dlq(reason) = &after[5].route else {
                unreachable!()
            };
            assert!(reason.ends_with("(it dead-lettered the record: bad input)"));
            assert_eq!(after[2].body, "default", "the record's content is kept");
        }
    }

    #[test]
    fn a_stage_given_nothing_can_claim_nothing() {
        let (after, outside) =
            GivenOrigins::default().enforce(Batch::Records(vec![record("t", 0, 0, "x")]), "p");
        assert_eq!(outside, 1);
        assert!(matches!(after.into_records()[0].route, Route::Dlq(_)));
    }

    #[test]
    fn a_restored_partition_vouches_for_offsets_below_where_it_resumes() {
        let mut given = GivenOrigins::default();
        given.vouch_below("t", 3, 100);
        let claims = |given: &GivenOrigins, offsets: &[i64]| {
            let output = offsets.iter().map(|&o| record("t", 3, o, "")).collect();
            given.enforce(Batch::Records(output), "p").1
        };
        assert_eq!(claims(&given, &[0, 42, 99]), 0);
        assert_eq!(claims(&given, &[100]), 1, "not yet given");
        given.give_records(&[record("t", 3, 100, ""), record("t", 3, 130, "")]);
        assert_eq!(claims(&given, &[7, 100, 120, 130]), 0);
        assert_eq!(claims(&given, &[131, i64::MAX],), 2);
        let other = Batch::Records(vec![record("t", 4, 7, "")]);
        assert_eq!(
            given.enforce(other, "p").1,
            1,
            "only the restored partition"
        );
    }
}
