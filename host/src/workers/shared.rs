//! One stage instance several pipeline workers call in turn: a stage whose state spans
//! partitions (the metrics windows merge every partition's share of a service) must see
//! every partition the host reads, whichever worker reads it.
//!
//! Event time for it is the least advanced of the workers': each worker reports its own at
//! its ticks, and the stage is ticked only when the least of them moves on. A worker whose
//! owned partition is behind and unread holds it back, as one partition does within a
//! worker, and so does one the source has told nothing yet (its partitions are unknown);
//! a worker that has seen no event time because it owns no partition does not.

use crate::batch::Batch;
use crate::chain::{Stage, StageError};
use crate::config::{OnFailure, Role};
use std::sync::{Arc, Mutex, MutexGuard};

/// One worker's handle on the shared stage.
pub struct SharedStage {
    worker: usize,
    name: String,
    on_failure: OnFailure,
    role: Option<Role>,
    keeps_state: bool,
    /// The shared `emissions` this worker has accounted for.
    seen_emissions: u64,
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    stage: Box<dyn Stage>,
    /// Per worker, event time as it last reported it.
    marks: Vec<Mark>,
    /// The watermark the stage was last ticked with.
    ticked: Option<i64>,
    /// Ticks that emitted records: each closed windows of every worker's partitions.
    emissions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    At(i64),
    /// It owns a partition that is behind and unread: event time waits for it.
    Held,
    /// It has seen no event time: it does not hold the others back.
    Unseen,
}

impl Shared {
    /// The least advanced worker's event time; `None` while one holds it back or none has
    /// seen any.
    fn watermark(&self) -> Option<i64> {
        if self.marks.contains(&Mark::Held) {
            return None;
        }
        (self.marks.iter())
            .filter_map(|m| match m {
                Mark::At(t) => Some(*t),
                _ => None,
            })
            .min()
    }
}

impl SharedStage {
    /// `stage`, shared by `workers` workers: one handle each, in worker order.
    pub fn handles(stage: Box<dyn Stage>, workers: usize) -> Vec<SharedStage> {
        let (name, on_failure, role) = (stage.name().to_owned(), stage.on_failure(), stage.role());
        let keeps_state = stage.keeps_state();
        let shared = Arc::new(Mutex::new(Shared {
            stage,
            // Until a worker's first tick says otherwise, its partitions may hold the oldest
            // records.
            marks: vec![Mark::Held; workers],
            ticked: None,
            emissions: 0,
        }));
        (0..workers)
            .map(|worker| SharedStage {
                worker,
                name: name.clone(),
                on_failure,
                role,
                keeps_state,
                seen_emissions: 0,
                shared: shared.clone(),
            })
            .collect()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A worker that panicked holding it left no call half done that matters more than the
    // host going on: the stage's own state is whole between calls.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stage for SharedStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn on_failure(&self) -> OnFailure {
        self.on_failure
    }
    fn role(&self) -> Option<Role> {
        self.role
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
        lock(&self.shared).stage.process(batch)
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, StageError> {
        let mut shared = lock(&self.shared);
        shared.marks[self.worker] = Mark::At(watermark);
        let Some(least) = shared.watermark() else {
            return Ok(Batch::Records(Vec::new()));
        };
        if shared.ticked.is_some_and(|t| t >= least) {
            return Ok(Batch::Records(Vec::new()));
        }
        shared.ticked = Some(least);
        let emitted = shared.stage.tick(least)?;
        if !emitted.is_empty() {
            shared.emissions += 1;
            // This worker delivers them and sees its own partitions' state move.
            self.seen_emissions = shared.emissions;
        }
        Ok(emitted)
    }
    fn moved_by_others(&mut self) -> bool {
        let emissions = lock(&self.shared).emissions;
        let moved = emissions != self.seen_emissions;
        self.seen_emissions = emissions;
        moved
    }
    fn no_watermark(&mut self, held: bool) {
        lock(&self.shared).marks[self.worker] = if held { Mark::Held } else { Mark::Unseen };
    }
    fn keeps_state(&self) -> bool {
        self.keeps_state
    }
    fn snapshot(&mut self, topic: &str, partition: i32) -> Result<Option<Vec<u8>>, StageError> {
        lock(&self.shared).stage.snapshot(topic, partition)
    }
    fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        resume_at: i64,
        state: &[u8],
    ) -> Result<(), StageError> {
        (lock(&self.shared).stage).restore(topic, partition, resume_at, state)
    }
    fn release(&mut self, topic: &str, partition: i32) -> Result<(), StageError> {
        lock(&self.shared).stage.release(topic, partition)
    }
    fn is_shared(&self) -> bool {
        true
    }
    fn replace_shared(
        &mut self,
        replacement: Box<dyn Stage>,
    ) -> Result<Box<dyn Stage>, Box<dyn Stage>> {
        Ok(std::mem::replace(
            &mut lock(&self.shared).stage,
            replacement,
        ))
    }
}
