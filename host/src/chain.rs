//! The plugin chain: stages in order; `cleaned` records flow on, every other route leaves
//! the chain for the sinks; a failing stage dead-letters its input and the rest continues.

use crate::Record;
use crate::Route;
use crate::batch::Batch;
use crate::config::{OnFailure, Role};
use crate::role;
use crate::source::PartitionProgress;
use std::time::Duration;

/// One step of the chain. Plugins are stages (`crate::plugin::stage`): wasm components
/// and, for tests and benchmarks, plugin logic compiled natively.
pub trait Stage: Send {
    fn name(&self) -> &str;
    /// What to do with the input when a call fails.
    fn on_failure(&self) -> OnFailure {
        OnFailure::DeadLetter
    }
    /// Its declared part beyond transforming records (see [`crate::role`]).
    fn role(&self) -> Option<Role> {
        None
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError>;
    fn tick(&mut self, watermark: i64) -> Result<Batch, StageError>;

    /// Whether the stage keeps durable state per source partition (contract 0.2.0).
    fn keeps_state(&self) -> bool {
        false
    }

    /// The stage's durable state for one source partition (`wit/README.md`, "Durable
    /// state"); `None` when it holds none. A stage without state has none.
    fn snapshot(&mut self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>, StageError> {
        let _ = (topic, partition);
        Ok(None)
    }

    /// Hand back a snapshot of one partition, before any of its records; the host resumes
    /// the partition at offset `resume_at`. On an error the caller releases the partition,
    /// so it starts empty.
    fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        resume_at: i64,
        state: &[u8],
    ) -> Result<(), StageError> {
        let _ = (topic, partition, resume_at, state);
        Ok(())
    }

    /// The host no longer consumes the partition: the stage drops its state for it.
    fn release(&mut self, topic: &str, partition: i32) -> Result<(), StageError> {
        let _ = (topic, partition);
        Ok(())
    }

    /// At a tick, event time cannot be given to this stage: `held` when a partition that is
    /// behind has not been read yet (event time must wait for it), else the stage has seen
    /// no event time. Only a stage several pipeline workers share needs to know (see
    /// `workers::SharedStage`): one worker's silence must not hold the others back.
    fn no_watermark(&mut self, held: bool) {
        let _ = held;
    }

    /// Another instance of the same plugin, with no state yet, for another pipeline worker;
    /// `None` when the caller must build it as it built this one.
    fn another_instance(&self) -> Option<Box<dyn Stage>> {
        None
    }

    /// Whether a call by another worker sharing this stage emitted records (windows closed,
    /// so the state of this worker's partitions moved too) since this worker last asked.
    fn moved_by_others(&mut self) -> bool {
        false
    }

    /// Whether several pipeline workers share this stage: one of them replaces it at a
    /// reload, for all.
    fn is_shared(&self) -> bool {
        false
    }

    /// Put `replacement` in service for every worker sharing this stage and hand back the
    /// stage it replaces; a stage nobody shares gives `replacement` back.
    fn replace_shared(
        &mut self,
        replacement: Box<dyn Stage>,
    ) -> Result<Box<dyn Stage>, Box<dyn Stage>> {
        Err(replacement)
    }
}

/// Why a stage failed a call. Its input is dead-lettered with this as the reason (or passed
/// on unchanged, for a stage whose `on_failure` says so).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct StageError {
    /// The stage that failed.
    pub stage: String,
    /// What happened, naming the stage.
    pub reason: String,
}

/// A stage taken out of service (its plugin file was removed): records pass unchanged.
pub struct Bypass {
    pub name: String,
}

impl Stage for Bypass {
    fn name(&self) -> &str {
        &self.name
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
        Ok(Batch::Records(batch.records().into_owned()))
    }
    fn tick(&mut self, _watermark: i64) -> Result<Batch, StageError> {
        Ok(Batch::Records(Vec::new()))
    }
}

/// What came out of the chain for one batch (or tick).
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Records that left the chain on a route other than `cleaned` (`dlq` excluded).
    pub routed: Vec<Record>,
    /// What came out of the last stage, all on the `cleaned` route: kept as the stages
    /// passed it on, packed as a rule, so the sinks can read it in place.
    pub cleaned: Vec<Batch>,
    /// Records to dead-letter, with the reason.
    pub dead: Vec<(Record, String)>,
    /// Stage failures, for health and counters.
    pub failures: Vec<StageError>,
    /// Records a stage emitted against its role, now among `dead`.
    pub breaches: Vec<Breach>,
    /// Stages that completed a call, for health.
    pub succeeded: Vec<String>,
}

impl ChainOutput {
    /// No record came out (failures and successes aside).
    pub fn has_no_records(&self) -> bool {
        self.routed.is_empty() && self.dead.is_empty() && self.cleaned.iter().all(Batch::is_empty)
    }
}

/// A stage emitted records its role forbids (see [`crate::role`]) in one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub stage: String,
    pub role: Option<Role>,
    /// How many records, and why they break the role.
    pub records: usize,
    pub reason: &'static str,
}

impl ChainOutput {
    /// Every record for the sinks, `cleaned` ones decoded: those that left the chain
    /// early, then those that went through it.
    pub fn records(&self) -> Vec<Record> {
        let mut records = self.routed.clone();
        for batch in &self.cleaned {
            records.extend(batch.records().iter().cloned());
        }
        records
    }
}

/// Records further ahead of the wall clock than this do not move event time: one line
/// from a host with a broken clock must not close every window.
const MAX_FUTURE_NS: i64 = 300 * 1_000_000_000;

/// Event time as one stage has seen it, per source partition: partitions are consumed at
/// different speeds, so event time has reached only the *least* advanced of them.
///
/// A partition stops holding the others back only when it is idle: caught up with its log
/// (as the source reports, see [`PartitionProgress`]) and quiet while the pipeline waited
/// for input for `idle_after` (Flink's idle sources). Quiet time is counted in *starved*
/// time — time the pipeline spent waiting for input — never in wall time: while a slow
/// sink blocks the pipeline every partition looks quiet, yet none is idle.
#[derive(Debug, Clone, Default)]
struct Clock {
    partitions: Vec<PartitionClock>,
}

#[derive(Debug, Clone)]
struct PartitionClock {
    topic: String,
    partition: i32,
    /// Highest event time this stage saw from the partition; `None` while the partition's
    /// records have all been dropped or dead-lettered before this stage.
    highest: Option<i64>,
    /// The pipeline's starved time when the partition last had input (or was assigned).
    last_input: Duration,
    /// Whether a source batch has held messages of it (else it is only assigned).
    had_input: bool,
}

impl Clock {
    fn entry(&mut self, topic: &str, partition: i32, starved: Duration) -> &mut PartitionClock {
        let index = match self
            .partitions
            .iter()
            .position(|c| c.partition == partition && c.topic == topic)
        {
            Some(index) => index,
            None => {
                self.partitions.push(PartitionClock {
                    topic: topic.to_owned(),
                    partition,
                    highest: None,
                    last_input: starved,
                    had_input: false,
                });
                self.partitions.len() - 1
            }
        };
        &mut self.partitions[index]
    }

    /// The partitions of a source batch had input, whether or not their records reach
    /// this stage.
    fn had_input(&mut self, partitions: &[(String, i32)], starved: Duration) {
        for (topic, partition) in partitions {
            let entry = self.entry(topic, *partition, starved);
            entry.last_input = starved;
            entry.had_input = true;
        }
    }

    fn observe(&mut self, batch: &Batch, starved: Duration, now_ns: i64) {
        let horizon = now_ns.saturating_add(MAX_FUTURE_NS);
        batch.for_each_origin(|topic, partition, timestamp| {
            let entry = self.entry(topic, partition, starved);
            entry.last_input = starved;
            entry.had_input = true;
            if timestamp > 0 && timestamp <= horizon {
                entry.highest = Some(entry.highest.map_or(timestamp, |h| h.max(timestamp)));
            }
        });
    }

    /// Follow the source's partitions: forget revoked ones, start tracking assigned ones.
    fn follow(&mut self, source: &SourcePartitions, starved: Duration) {
        let Some(owned) = &source.owned else { return };
        self.partitions.retain(|c| {
            owned
                .iter()
                .any(|p| p.partition == c.partition && p.topic == c.topic)
        });
        for p in owned {
            self.entry(&p.topic, p.partition, starved);
        }
    }

    /// The watermark to tick with, when event time can be known (see [`Watermark`]).
    fn watermark(
        &self,
        source: &SourcePartitions,
        idle_after: Duration,
        starved: Duration,
    ) -> Watermark {
        let mut least: Option<i64> = None;
        for c in &self.partitions {
            let quiet = starved.saturating_sub(c.last_input) >= idle_after;
            let behind = !source.caught_up(&c.topic, c.partition);
            match c.highest {
                Some(highest) if behind || !quiet => {
                    least = Some(least.map_or(highest, |l| l.min(highest)));
                }
                // Assigned with messages waiting, none read yet: they may be the oldest.
                // Waiting is bounded by `idle_after` of starved time, as for a quiet one.
                None if behind && !quiet && !c.had_input => return Watermark::Held,
                _ => {}
            }
        }
        if let Some(least) = least {
            return Watermark::At(least);
        }
        // Every partition is caught up and quiet: event time follows the time the pipeline
        // has waited since the newest record, so windows close on a quiet stream.
        let Some(newest) = self
            .partitions
            .iter()
            .filter_map(|c| c.highest.map(|h| (h, c.last_input)))
            .max_by_key(|&(h, _)| h)
        else {
            return Watermark::Unseen;
        };
        let idle = starved
            .saturating_sub(newest.1)
            .as_nanos()
            .min(i64::MAX as u128) as i64;
        Watermark::At(newest.0.saturating_add(idle))
    }
}

/// How far event time has come for one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watermark {
    At(i64),
    /// An owned partition that is behind has not been read yet: its records may be the
    /// oldest, so event time waits for it.
    Held,
    /// No event time seen (no input, or none of it reached the stage).
    Unseen,
}

/// What the source has said about its partitions.
#[derive(Debug, Default)]
struct SourcePartitions {
    /// The partitions it owns, once it has reported them; `None` for sources that do not
    /// track partitions (every partition they deliver counts as caught up).
    owned: Option<Vec<PartitionProgress>>,
}

impl SourcePartitions {
    fn caught_up(&self, topic: &str, partition: i32) -> bool {
        match &self.owned {
            None => true,
            Some(owned) => owned
                .iter()
                .find(|p| p.partition == partition && p.topic == topic)
                .is_none_or(|p| p.caught_up),
        }
    }
}

pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
    clocks: Vec<Clock>,
    idle_after: Duration,
    source: SourcePartitions,
    /// Whether the source has said anything yet (a batch, or news of its partitions).
    /// Before that, this chain's partitions are unknown and may hold the oldest records:
    /// a stage shared with other workers must not be ticked without them.
    heard: bool,
    /// How long, in all, the pipeline has waited for input (see [`Clock`]).
    starved: Duration,
}

impl Chain {
    pub fn new(stages: Vec<Box<dyn Stage>>, idle_after: Duration) -> Chain {
        let clocks = vec![Clock::default(); stages.len()];
        Chain {
            stages,
            clocks,
            idle_after,
            source: SourcePartitions::default(),
            heard: false,
            starved: Duration::ZERO,
        }
    }

    /// The pipeline waited `waited` for input.
    pub fn starved_for(&mut self, waited: Duration) {
        self.starved += waited;
    }

    /// The source's report on its partitions (see [`PartitionProgress`]). Returns the
    /// partitions it no longer owns.
    pub fn set_progress(&mut self, progress: Vec<PartitionProgress>) -> Vec<(String, i32)> {
        let revoked = match &self.source.owned {
            Some(before) => before
                .iter()
                .filter(|b| {
                    !progress
                        .iter()
                        .any(|p| p.partition == b.partition && p.topic == b.topic)
                })
                .map(|b| (b.topic.clone(), b.partition))
                .collect(),
            None => Vec::new(),
        };
        self.source.owned = Some(progress);
        self.heard = true;
        for clock in &mut self.clocks {
            clock.follow(&self.source, self.starved);
        }
        revoked
    }

    /// The source lost these partitions: they no longer hold event time back, and a later
    /// report without them revokes nothing more.
    pub fn lose(&mut self, lost: &[(String, i32)]) {
        let Some(owned) = &self.source.owned else {
            return;
        };
        let remaining = owned
            .iter()
            .filter(|p| !lost.iter().any(|(t, q)| *q == p.partition && *t == p.topic))
            .cloned()
            .collect();
        self.set_progress(remaining);
    }

    /// These source partitions had input (a source batch held messages of them).
    pub fn had_input(&mut self, partitions: &[(String, i32)]) {
        for clock in &mut self.clocks {
            clock.had_input(partitions, self.starved);
        }
    }

    /// Swap the stage at `index` (between batches); its event-time clock is kept. The
    /// stage going out of service is told input has ended, so what it holds (open metric
    /// windows) comes out — through the stages after it — instead of being dropped.
    pub fn replace(&mut self, index: usize, stage: Box<dyn Stage>, out: &mut ChainOutput) {
        let Some(slot) = self.stages.get_mut(index) else {
            return;
        };
        let mut retired = match slot.replace_shared(stage) {
            Ok(retired) => retired,
            Err(stage) => std::mem::replace(slot, stage),
        };
        match retired.tick(i64::MAX) {
            Ok(emitted) => {
                out.succeeded.push(retired.name().to_owned());
                let next = split(emitted, &*retired, out);
                self.run_from(index + 1, next, out);
            }
            Err(failure) => out.failures.push(failure),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Whether another worker's call into a stage they share moved its state (see
    /// [`Stage::moved_by_others`]).
    pub fn moved_by_others(&mut self) -> bool {
        // Every stage is asked, so each forgets what it reported.
        (self.stages.iter_mut()).fold(false, |moved, s| s.moved_by_others() | moved)
    }

    /// Hold event time back for the stages this worker shares with others until its next
    /// tick: no other worker closes windows while this one snapshots its partitions.
    pub fn hold_event_time(&mut self) {
        for stage in &mut self.stages {
            stage.no_watermark(true);
        }
    }

    /// Whether the stage at `index` is shared by several pipeline workers.
    pub fn is_shared(&self, index: usize) -> bool {
        self.stages.get(index).is_some_and(|s| s.is_shared())
    }

    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// The role of the stage called `name`.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.stages
            .iter()
            .find(|s| s.name() == name)
            .and_then(|s| s.role())
    }

    /// Whether a stage keeps durable state per source partition.
    pub fn keeps_state(&self) -> bool {
        self.stages.iter().any(|s| s.keeps_state())
    }

    /// Every stage's durable state for one source partition, by stage name; stages that
    /// hold none are left out. Where the caller stores these is its own: keyed by stage,
    /// topic and partition, next to the partition's committed offsets — in the same
    /// transaction as them when offsets are written transactionally.
    pub fn snapshot(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<(String, Vec<u8>)>, StageError> {
        let mut states = Vec::new();
        for stage in &mut self.stages {
            if let Some(state) = stage.snapshot(topic, partition)? {
                states.push((stage.name().to_owned(), state));
            }
        }
        Ok(states)
    }

    /// Hand each stage its state of a partition the host starts consuming at
    /// `resume_at`, before any of its records. A stage that refuses its state (corrupt,
    /// too large, from an incompatible version) starts the partition empty, and the
    /// failure is returned to be reported; the other stages keep theirs. A state for a
    /// stage no longer in the chain is ignored.
    pub fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        resume_at: i64,
        states: &[(String, Vec<u8>)],
    ) -> Vec<StageError> {
        let mut refused = Vec::new();
        for (name, state) in states {
            let Some(stage) = self.stages.iter_mut().find(|s| s.name() == name) else {
                continue;
            };
            if let Err(failure) = stage.restore(topic, partition, resume_at, state) {
                tracing::warn!(
                    stage = %name, topic, partition, reason = %failure,
                    "the stage's state of this partition was not restored; it starts the partition empty"
                );
                // Whatever the stage made of the state, it holds none of it now.
                let _ = stage.release(topic, partition);
                refused.push(failure);
            }
        }
        refused
    }

    /// The host no longer consumes a partition: every stage drops its state of it.
    pub fn release(&mut self, topic: &str, partition: i32) -> Vec<StageError> {
        self.stages
            .iter_mut()
            .filter_map(|s| s.release(topic, partition).err())
            .collect()
    }

    /// Run a batch through every stage.
    pub fn process(&mut self, batch: Batch, out: &mut ChainOutput) {
        self.heard = true;
        self.run_from(0, batch, out);
    }

    /// Tell every stage how far event time has come; what a stage emits runs through the
    /// stages after it. With `end_of_input`, the watermark is the end of time so every
    /// window closes.
    pub fn tick(&mut self, end_of_input: bool, out: &mut ChainOutput) {
        for index in 0..self.stages.len() {
            let watermark = if end_of_input {
                i64::MAX
            } else {
                match self.clocks[index].watermark(&self.source, self.idle_after, self.starved) {
                    Watermark::At(watermark) => watermark,
                    Watermark::Held => {
                        self.stages[index].no_watermark(true);
                        continue;
                    }
                    Watermark::Unseen => {
                        self.stages[index].no_watermark(!self.heard);
                        continue;
                    }
                }
            };
            match self.stages[index].tick(watermark) {
                Ok(emitted) => {
                    out.succeeded.push(self.stages[index].name().to_owned());
                    let next = split(emitted, &*self.stages[index], out);
                    self.run_from(index + 1, next, out);
                }
                Err(failure) => out.failures.push(failure),
            }
        }
    }

    fn run_from(&mut self, start: usize, mut current: Batch, out: &mut ChainOutput) {
        for index in start..self.stages.len() {
            if current.is_empty() {
                return;
            }
            self.clocks[index].observe(&current, self.starved, crate::time::now_ns());
            let stage = &mut self.stages[index];
            let taps = crate::tap::global();
            if taps.active() {
                taps.stage(stage.name(), false, &current);
            }
            match stage.process(&current) {
                Ok(emitted) => {
                    if taps.active() {
                        taps.stage(stage.name(), true, &emitted);
                    }
                    out.succeeded.push(stage.name().to_owned());
                    current = split(emitted, &**stage, out)
                }
                Err(failure) => {
                    let pass_through = stage.on_failure() == OnFailure::PassThrough;
                    out.failures.push(failure);
                    if pass_through {
                        continue;
                    }
                    let reason = out
                        .failures
                        .last()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    out.dead.extend(
                        current
                            .into_records()
                            .into_iter()
                            .map(|r| (r, reason.clone())),
                    );
                    return;
                }
            }
        }
        if !current.is_empty() {
            out.cleaned.push(current);
        }
    }
}

/// Keep `cleaned` records for the next stage; move the rest to the output. A record its
/// stage's role forbids is dead-lettered.
fn split(emitted: Batch, stage: &dyn Stage, out: &mut ChainOutput) -> Batch {
    let (next, leaving) = emitted.split_cleaned();
    let (name, role) = (stage.name(), stage.role());
    let mut breach: Option<Breach> = None;
    for record in leaving {
        if let Some(why) = role::breach(role, &record) {
            let entry = breach.get_or_insert_with(|| Breach {
                stage: name.to_owned(),
                role,
                records: 0,
                reason: why,
            });
            entry.records += 1;
            out.dead.push((record, format!("plugin `{name}`: {why}")));
            continue;
        }
        match &record.route {
            Route::Dlq(reason) => {
                let reason = format!("plugin `{name}`: {reason}");
                out.dead.push((record, reason));
            }
            _ => out.routed.push(record),
        }
    }
    out.breaches.extend(breach);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    fn at(partition: i32, timestamp: i64) -> Record {
        let mut r = Record::new(Origin {
            topic: "t".into(),
            partition,
            offset: 0,
        });
        r.timestamp = timestamp;
        r
    }

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn owned(parts: &[(i32, bool)]) -> SourcePartitions {
        SourcePartitions {
            owned: Some(
                parts
                    .iter()
                    .map(|&(partition, caught_up)| PartitionProgress {
                        topic: "t".into(),
                        partition,
                        caught_up,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn watermark_is_the_least_advanced_partition_until_one_is_idle() {
        let idle = secs(10);
        let untracked = SourcePartitions::default();
        let mut clock = Clock::default();
        assert_eq!(
            clock.watermark(&untracked, idle, secs(0)),
            Watermark::Unseen
        );
        clock.observe(
            &Batch::Records(vec![at(0, 5_000), at(1, 100), at(0, 7_000)]),
            secs(0),
            NOW,
        );
        assert_eq!(
            clock.watermark(&untracked, idle, secs(0)),
            Watermark::At(100)
        );
        // Partition 1 goes quiet while the pipeline waits for input; partition 0 keeps
        // going and no longer waits for it.
        clock.observe(&Batch::Records(vec![at(0, 9_000)]), secs(11), NOW);
        assert_eq!(
            clock.watermark(&untracked, idle, secs(12)),
            Watermark::At(9_000)
        );
        // Everything quiet: event time follows the time spent waiting for input.
        assert_eq!(
            clock.watermark(&untracked, idle, secs(30)),
            Watermark::At(9_000 + 19_000_000_000)
        );
    }

    #[test]
    fn a_partition_behind_its_log_is_never_idle() {
        let idle = secs(10);
        let mut clock = Clock::default();
        clock.observe(
            &Batch::Records(vec![at(0, 9_000), at(1, 100)]),
            secs(0),
            NOW,
        );
        // Partition 1 still has messages in the log (its consumer is paused by a slow
        // sink): however long it is quiet, event time waits for it.
        let source = owned(&[(0, true), (1, false)]);
        assert_eq!(
            clock.watermark(&source, idle, secs(100)),
            Watermark::At(100)
        );
        // Caught up and quiet: it no longer holds partition 0 back.
        let source = owned(&[(0, false), (1, true)]);
        assert_eq!(
            clock.watermark(&source, idle, secs(100)),
            Watermark::At(9_000)
        );
    }

    #[test]
    fn an_assigned_partition_behind_and_not_yet_read_holds_event_time() {
        let idle = secs(10);
        let mut clock = Clock::default();
        let source = owned(&[(0, false), (2, false)]);
        clock.follow(&source, secs(0));
        clock.observe(&Batch::Records(vec![at(0, 9_000)]), secs(0), NOW);
        assert_eq!(
            clock.watermark(&source, idle, secs(1)),
            Watermark::Held,
            "partition 2's first fetch has not been answered"
        );
        // An empty (caught-up) partition does not hold it.
        let source = owned(&[(0, false), (2, true)]);
        assert_eq!(
            clock.watermark(&source, idle, secs(1)),
            Watermark::At(9_000)
        );
        // Nor one whose records never reach this stage (all dropped before it).
        let source = owned(&[(0, false), (2, false)]);
        clock.had_input(&[("t".into(), 2)], secs(1));
        assert_eq!(
            clock.watermark(&source, idle, secs(1)),
            Watermark::At(9_000)
        );
    }

    #[test]
    fn waiting_for_an_unread_partition_is_bounded_by_starved_time() {
        let mut clock = Clock::default();
        let source = owned(&[(0, false), (2, false)]);
        clock.follow(&source, secs(0));
        clock.observe(&Batch::Records(vec![at(0, 9_000)]), secs(0), NOW);
        assert_eq!(clock.watermark(&source, secs(10), secs(9)), Watermark::Held);
        assert_eq!(
            clock.watermark(&source, secs(10), secs(10)),
            Watermark::At(9_000)
        );
    }

    #[test]
    fn a_slow_pipeline_is_not_an_idle_input() {
        let idle = secs(10);
        let source = owned(&[(0, true), (1, true)]);
        let mut clock = Clock::default();
        clock.observe(
            &Batch::Records(vec![at(0, 9_000), at(1, 100)]),
            secs(5),
            NOW,
        );
        // However long the pipeline was blocked on sinks, starved time did not move.
        assert_eq!(clock.watermark(&source, idle, secs(5)), Watermark::At(100));
    }

    #[test]
    fn a_record_from_a_broken_clock_does_not_move_event_time() {
        let untracked = SourcePartitions::default();
        let mut clock = Clock::default();
        clock.observe(
            &Batch::Records(vec![at(0, NOW - 1_000), at(0, NOW + 3_600_000_000_000)]),
            secs(0),
            NOW,
        );
        assert_eq!(
            clock.watermark(&untracked, secs(10), secs(0)),
            Watermark::At(NOW - 1_000)
        );
    }

    /// Emits on the `metrics` route one record with a service and one without.
    struct Emitter {
        role: Option<Role>,
    }

    impl Stage for Emitter {
        fn name(&self) -> &str {
            "m"
        }
        fn role(&self) -> Option<Role> {
            self.role
        }
        fn process(&mut self, _batch: &Batch) -> Result<Batch, StageError> {
            Ok(Batch::Records(Vec::new()))
        }
        fn tick(&mut self, watermark: i64) -> Result<Batch, StageError> {
            let mut good = at(0, watermark);
            good.set("service.name", "api");
            let bad = at(0, watermark);
            Ok(Batch::Records(
                [good, bad]
                    .into_iter()
                    .map(|mut r| {
                        r.route = Route::Metrics;
                        r
                    })
                    .collect(),
            ))
        }
    }

    #[test]
    fn records_a_stage_emits_against_its_role_are_dead_lettered() {
        let stage = Emitter {
            role: Some(Role::Metrics),
        };
        let mut chain = Chain::new(vec![Box::new(stage)], secs(10));
        let mut out = ChainOutput::default();
        chain.tick(true, &mut out);
        assert_eq!(out.routed.len(), 1);
        assert_eq!(out.dead.len(), 1);
        assert!(
            out.dead[0]
                .1
                .starts_with("plugin `m`: invalid metric record")
        );
        assert_eq!(out.breaches.len(), 1);
        assert_eq!(out.breaches[0].records, 1);
        assert_eq!(chain.role_of("m"), Some(Role::Metrics));

        // Without the role, the same output is delivered as it is.
        let mut chain = Chain::new(vec![Box::new(Emitter { role: None })], secs(10));
        let mut out = ChainOutput::default();
        chain.tick(true, &mut out);
        assert_eq!((out.routed.len(), out.dead.len()), (2, 0));
        assert!(out.breaches.is_empty());
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut clock = Clock::default();
        clock.observe(
            &Batch::Records(vec![at(0, 9_000), at(1, 100)]),
            secs(0),
            NOW,
        );
        let source = owned(&[(0, false)]);
        clock.follow(&source, secs(0));
        assert_eq!(
            clock.watermark(&source, secs(10), secs(0)),
            Watermark::At(9_000)
        );
    }

    /// A stage whose state of a partition is bytes it accepts unless they are `bad`.
    #[derive(Default)]
    struct Keeper {
        name: &'static str,
        held: Vec<((String, i32), Vec<u8>)>,
    }

    impl Stage for Keeper {
        fn name(&self) -> &str {
            self.name
        }
        fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
            Ok(Batch::Records(batch.records().into_owned()))
        }
        fn tick(&mut self, _watermark: i64) -> Result<Batch, StageError> {
            Ok(Batch::Records(Vec::new()))
        }
        fn snapshot(&mut self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>, StageError> {
            let key = (topic.to_owned(), partition);
            Ok(self
                .held
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s.clone()))
        }
        fn restore(
            &mut self,
            topic: &str,
            partition: i32,
            _: i64,
            state: &[u8],
        ) -> Result<(), StageError> {
            // Takes it in before judging it, as a plugin may.
            self.held
                .push(((topic.to_owned(), partition), state.to_vec()));
            match state {
                b"bad" => Err(StageError {
                    stage: self.name.into(),
                    reason: "unreadable".into(),
                }),
                _ => Ok(()),
            }
        }
        fn release(&mut self, topic: &str, partition: i32) -> Result<(), StageError> {
            self.held
                .retain(|((t, p), _)| !(t == topic && *p == partition));
            Ok(())
        }
    }

    #[test]
    fn a_stage_refusing_its_state_starts_the_partition_empty_and_the_others_keep_theirs() {
        let stages: Vec<Box<dyn Stage>> = vec![
            Box::new(Keeper {
                name: "a",
                ..Keeper::default()
            }),
            Box::new(Keeper {
                name: "b",
                ..Keeper::default()
            }),
            Box::new(Bypass {
                name: "stateless".into(),
            }),
        ];
        let mut chain = Chain::new(stages, secs(10));
        let states = vec![
            ("a".to_owned(), b"bad".to_vec()),
            ("b".to_owned(), b"good".to_vec()),
            ("gone".to_owned(), b"of a stage since removed".to_vec()),
        ];
        let refused = chain.restore("t", 3, 100, &states);
        assert_eq!(
            refused.iter().map(|e| e.stage.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            chain.snapshot("t", 3).unwrap(),
            [("b".to_owned(), b"good".to_vec())]
        );
        assert!(chain.release("t", 3).is_empty());
        assert!(chain.snapshot("t", 3).unwrap().is_empty());
    }
}
