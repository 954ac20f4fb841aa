//! Several pipeline workers on one host. Each worker is a [`crate::pipeline::Pipeline`] on a
//! thread of its own with its own plugin instances; the source's partitions are spread over
//! them (`partition mod workers`), so a partition's records are always processed by the
//! same worker, in order, with that worker's plugin state. Acks and commits stay per batch
//! and per partition as with one worker: a batch split over workers completes when every
//! worker's share of it does.
//!
//! The [`Dispatcher`] stands between the source and the workers: it splits each batch by
//! worker, gives each worker the news of its own partitions, and turns the source's
//! transaction barrier into one barrier across every worker. A stage whose state merges
//! partitions (the metrics windows) runs as one instance all workers call
//! ([`SharedStage`]), so a service's windows and alerts see every partition the host reads.

mod shared;

pub use shared::SharedStage;

use crate::event::RawMessage;
use crate::source::{Barrier, PartitionProgress, PipelineInput, Resume, SourceBatch};
use std::cell::Cell;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// How many workers `pipeline.workers` asks for: 0 means one per available core.
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The worker that processes `partition`.
pub fn worker_of(partition: i32, workers: usize) -> usize {
    partition.rem_euclid(workers.max(1) as i32) as usize
}

/// Forwards what the source sends to the worker (or workers) it concerns.
pub struct Dispatcher {
    workers: Vec<SyncSender<PipelineInput>>,
    /// Per worker, whether it has been sent a batch or news of its partitions: until
    /// then its event time holds a shared stage back (see [`SharedStage`]).
    told: Vec<Cell<bool>>,
}

impl Dispatcher {
    pub fn new(workers: Vec<SyncSender<PipelineInput>>) -> Dispatcher {
        let told = workers.iter().map(|_| Cell::new(false)).collect();
        Dispatcher { workers, told }
    }

    /// Dispatch until the source ends (or goes away, or a worker does). Blocking on a full
    /// worker lets the source's channel fill: backpressure reaches the source as with one
    /// worker.
    pub fn run(self, input: Receiver<PipelineInput>) {
        while let Ok(item) = input.recv() {
            if !self.dispatch(item) {
                break;
            }
        }
    }

    /// Returns false when dispatching is over: the input ended or a worker is gone.
    fn dispatch(&self, input: PipelineInput) -> bool {
        match input {
            PipelineInput::Batch(batch) => self.batch(batch),
            PipelineInput::Progress(progress) => (0..self.workers.len())
                .all(|w| self.send(w, PipelineInput::Progress(self.mine(&progress, w)))),
            PipelineInput::Lost(lost) => (0..self.workers.len()).all(|w| {
                let mine = self.mine_of(&lost, w);
                mine.is_empty() || self.send(w, PipelineInput::Lost(mine))
            }),
            PipelineInput::Restore(snapshot) => {
                let w = worker_of(snapshot.partition, self.workers.len());
                self.send(w, PipelineInput::Restore(snapshot))
            }
            PipelineInput::Flush => {
                (0..self.workers.len()).all(|w| self.send(w, PipelineInput::Flush))
            }
            PipelineInput::Barrier(barrier) => self.barrier(barrier),
            PipelineInput::End { complete } => {
                for w in 0..self.workers.len() {
                    self.send(w, PipelineInput::End { complete });
                }
                false
            }
        }
    }

    /// Each worker gets its partitions' messages under a share of the batch's handle, and
    /// the news of its own partitions.
    fn batch(&self, batch: SourceBatch) -> bool {
        let n = self.workers.len();
        let SourceBatch {
            messages,
            ack,
            progress,
        } = batch;
        let mut parts: Vec<Vec<RawMessage>> = (0..n).map(|_| Vec::new()).collect();
        let whole = messages
            .first()
            .map(|m| worker_of(m.origin.partition, n))
            .filter(|&w| (messages.iter()).all(|m| worker_of(m.origin.partition, n) == w));
        match whole {
            // The common case: a batch of one partition moves as it is.
            Some(w) => parts[w] = messages,
            None => {
                for m in messages {
                    parts[worker_of(m.origin.partition, n)].push(m);
                }
            }
        }
        for (w, messages) in parts.into_iter().enumerate() {
            let progress = progress.as_ref().map(|p| self.mine(p, w));
            let sent = match (messages.is_empty(), progress) {
                // A source that reports no partitions (stdin, the backfill): a worker it
                // gives nothing is told once that it owns nothing, and holds nobody back.
                (true, None) if !self.told[w].get() => {
                    self.send(w, PipelineInput::Progress(Vec::new()))
                }
                (true, None) => true,
                (true, Some(progress)) => self.send(w, PipelineInput::Progress(progress)),
                (false, progress) => self.send(
                    w,
                    PipelineInput::Batch(SourceBatch {
                        messages,
                        ack: ack.clone(),
                        progress,
                    }),
                ),
            };
            if !sent {
                return false;
            }
        }
        // Every worker holds its share now; the batch completes when they are done.
        ack.ack();
        true
    }

    /// Every worker stops between two batches, releases and flushes what it routed and
    /// snapshots its partitions; then the source commits, and every worker goes on as the
    /// source says.
    fn barrier(&self, barrier: Barrier) -> bool {
        let mut reached = Vec::with_capacity(self.workers.len());
        let mut resumes = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            let (reached_tx, reached_rx) = sync_channel(1);
            let (resume_tx, resume_rx) = sync_channel(1);
            let sub = Barrier {
                reached: reached_tx,
                resume: resume_rx,
            };
            if !self.send(w, PipelineInput::Barrier(sub)) {
                return false;
            }
            reached.push(reached_rx);
            resumes.push(resume_tx);
        }
        if reached.iter().any(|r| r.recv().is_err()) {
            return false;
        }
        if barrier.reached.send(()).is_err() {
            // The source gave the transaction up: dropping `resumes` lets the workers go on.
            return true;
        }
        if let Ok(resume) = barrier.resume.recv() {
            for (w, to) in resumes.into_iter().enumerate() {
                let theirs = match &resume {
                    Resume::Committed => Resume::Committed,
                    Resume::Rewind(partitions) => match self.mine_of(partitions, w) {
                        // None of its partitions went past the last commit.
                        mine if mine.is_empty() => Resume::Committed,
                        mine => Resume::Rewind(mine),
                    },
                };
                let _ = to.send(theirs);
            }
        }
        true
    }

    fn mine(&self, progress: &[PartitionProgress], worker: usize) -> Vec<PartitionProgress> {
        let n = self.workers.len();
        (progress.iter())
            .filter(|p| worker_of(p.partition, n) == worker)
            .cloned()
            .collect()
    }

    fn mine_of(&self, partitions: &[(String, i32)], worker: usize) -> Vec<(String, i32)> {
        let n = self.workers.len();
        (partitions.iter())
            .filter(|(_, p)| worker_of(*p, n) == worker)
            .cloned()
            .collect()
    }

    fn send(&self, worker: usize, input: PipelineInput) -> bool {
        if matches!(input, PipelineInput::Batch(_) | PipelineInput::Progress(_)) {
            self.told[worker].set(true);
        }
        self.workers[worker].send(input).is_ok()
    }
}

#[cfg(test)]
mod tests;
