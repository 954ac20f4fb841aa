//! The `merge` mode's state: partial windows from every source partition, held until
//! each partition that is not idle has marked the window complete, then merged into one
//! window per service (exactly: counts sum, sketches merge bucket by bucket).
//!
//! Partials are idempotent: a partial is kept under (source partition, window, service,
//! offset of its first record), so a host replaying a window after a restart replaces its
//! earlier copy, while the two halves of a window split by a hot reload both count.

use crate::partial::Source;
use crate::window::{Accumulator, AccumulatorState, OVERFLOW_SERVICE};
use serde::{Deserialize, Serialize};
use sluice_plugin_sdk::SourcePartition;
use std::collections::BTreeMap;

/// Where a partial comes from: its source partition and its first record's offset.
type PartKey = (Source, i64);

/// The partials of one window, per service.
type Pending = BTreeMap<String, BTreeMap<PartKey, Accumulator>>;

/// What a partial did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Held,
    /// Its window was already merged and emitted: a closed window's metrics never change.
    Late,
}

#[derive(Debug, Default)]
pub struct Merge {
    /// Open windows by start.
    pending: BTreeMap<i64, Pending>,
    /// Per source partition, the end of the last window it has marked complete.
    marks: BTreeMap<Source, i64>,
    /// Windows ending at or before this were emitted.
    emitted_until: i64,
    /// The first mark taken: an expected partition not heard from yet counts as marked
    /// here, so it holds windows back for `wait` from the start, then no longer.
    first_mark: Option<i64>,
}

impl Merge {
    pub fn take_window(
        &mut self,
        key: PartKey,
        service: String,
        start: i64,
        size: i64,
        acc: Accumulator,
    ) -> Taken {
        if start.saturating_add(size) <= self.emitted_until {
            return Taken::Late;
        }
        let parts = self
            .pending
            .entry(start)
            .or_default()
            .entry(service)
            .or_default();
        parts.insert(key, acc);
        Taken::Held
    }

    pub fn take_mark(&mut self, source: Source, closed_until: i64) {
        let mark = self.marks.entry(source).or_insert(i64::MIN);
        *mark = (*mark).max(closed_until);
        self.first_mark.get_or_insert(closed_until);
    }

    /// The end of the windows every partition has marked: those heard from and, of every
    /// source topic seen, partitions `0..expected` (the topic's partition count, when the
    /// config gives it). A partition whose mark is more than `wait` behind the most
    /// advanced one is left out (idle, gone, or far behind: waiting for it would stop
    /// every window).
    pub fn complete_until(&self, wait: i64, expected: u32) -> Option<i64> {
        let newest = *self.marks.values().max()?;
        // (its mark, the event time it was last heard of) per partition; one not heard
        // from has marked nothing, and counts as silent since the first mark.
        let heard = self.marks.values().map(|&m| (m, m));
        let since = self.first_mark.unwrap_or(newest);
        let mut topics: Vec<&str> = self.marks.keys().map(|s| s.topic.as_str()).collect();
        topics.dedup();
        let unheard = topics.into_iter().flat_map(|topic| {
            (0..expected as i32)
                .filter(move |&partition| {
                    let source = Source {
                        topic: topic.to_owned(),
                        partition,
                    };
                    !self.marks.contains_key(&source)
                })
                .map(move |_| (i64::MIN, since))
        });
        heard
            .chain(unheard)
            .filter(|&(_, last)| newest.saturating_sub(last) <= wait)
            .map(|(mark, _)| mark)
            .min()
    }

    /// Take every window ending at or before `until`, oldest first, each service's partials
    /// merged (services by name, at most `max_services`, the rest merged as `_other`).
    pub fn close_until(
        &mut self,
        until: i64,
        size: i64,
        max_services: usize,
    ) -> Vec<(i64, Vec<(String, Accumulator)>)> {
        let mut closed = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().saturating_add(size) > until {
                break;
            }
            let (start, services) = entry.remove_entry();
            let mut merged: Vec<(String, Accumulator)> = Vec::with_capacity(services.len());
            for (service, parts) in services {
                let Some(acc) = parts.into_values().reduce(|mut a, b| {
                    a.merge(b);
                    a
                }) else {
                    continue;
                };
                if merged.len() < max_services {
                    merged.push((service, acc));
                    continue;
                }
                match merged.iter_mut().find(|(name, _)| name == OVERFLOW_SERVICE) {
                    Some((_, into)) => into.merge(acc),
                    None => merged.push((OVERFLOW_SERVICE.to_owned(), acc)),
                }
            }
            merged.sort_by(|a, b| a.0.cmp(&b.0));
            closed.push((start, merged));
        }
        self.emitted_until = self.emitted_until.max(until);
        closed
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.marks.is_empty()
    }

    pub fn to_state(&self) -> MergeState {
        let pending = self
            .pending
            .iter()
            .map(|(&start, services)| {
                let services = services
                    .iter()
                    .map(|(service, parts)| {
                        let parts = parts
                            .iter()
                            .map(|((source, first_offset), acc)| PartState {
                                source: source.clone(),
                                first_offset: *first_offset,
                                window: acc.to_state(),
                            })
                            .collect();
                        (service.clone(), parts)
                    })
                    .collect();
                (start, services)
            })
            .collect();
        MergeState {
            pending,
            marks: self.marks.iter().map(|(s, &m)| (s.clone(), m)).collect(),
            emitted_until: self.emitted_until,
            first_mark: self.first_mark,
        }
    }

    /// The state of `partials`, the partition of the partials topic it was stored for.
    pub fn from_state(
        state: MergeState,
        partials: &SourcePartition,
        alpha: f64,
        max_bins: usize,
    ) -> Result<Merge, String> {
        let mut merge = Merge {
            pending: BTreeMap::new(),
            marks: state.marks.into_iter().collect(),
            emitted_until: state.emitted_until,
            first_mark: state.first_mark,
        };
        for (start, services) in state.pending {
            let window = merge.pending.entry(start).or_default();
            for (service, parts) in services {
                let kept = window.entry(service).or_default();
                for part in parts {
                    let acc = Accumulator::from_state(part.window, partials, alpha, max_bins)?;
                    kept.insert((part.source, part.first_offset), acc);
                }
            }
        }
        Ok(merge)
    }
}

/// One held partial, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartState {
    pub source: Source,
    pub first_offset: i64,
    /// Its counts; `offset` is the partial record's own (the merged metric derives from
    /// the lowest).
    pub window: AccumulatorState,
}

/// Held partials as stored: (window start, (service, partials)).
pub type PendingState = Vec<(i64, Vec<(String, Vec<PartState>)>)>;

/// The merge state of one partition of the partials topic, as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MergeState {
    pub pending: PendingState,
    pub marks: Vec<(Source, i64)>,
    pub emitted_until: i64,
    #[serde(default)]
    pub first_mark: Option<i64>,
}
