use super::*;
use crate::Origin;
use crate::ack::{AckIssuer, BatchOffsets};
use crate::batch::Batch;
use crate::chain::{Stage, StageError};
use std::sync::{Arc, Mutex};

fn progress(partitions: &[i32]) -> Vec<PartitionProgress> {
    (partitions.iter())
        .map(|&partition| PartitionProgress {
            topic: "t".into(),
            partition,
            caught_up: true,
        })
        .collect()
}

fn dispatcher(workers: usize) -> (Dispatcher, Vec<Receiver<PipelineInput>>) {
    let (senders, receivers) = (0..workers).map(|_| sync_channel(16)).unzip();
    (Dispatcher::new(senders), receivers)
}

fn partitions_of(input: PipelineInput) -> (Vec<i32>, Option<Vec<i32>>) {
    match input {
        PipelineInput::Batch(b) => {
            let parts = b.messages.iter().map(|m| m.origin.partition).collect();
            let progress = b.progress.map(|p| p.iter().map(|p| p.partition).collect());
            b.ack.ack();
            (parts, progress)
        }
        other => panic!("not a batch: {other:?}"),
    }
}

#[test]
fn a_batch_is_split_by_partition_and_completes_when_every_worker_is_done() {
    let (dispatcher, workers) = dispatcher(2);
    let (mut issuer, mut completions) = AckIssuer::new();
    let messages = vec![
        RawMessage::at(0, 1),
        RawMessage::at(1, 1),
        RawMessage::at(2, 1),
        RawMessage::at(0, 2),
    ];
    let mut offsets = BatchOffsets::default();
    for m in &messages {
        offsets.record(&m.origin.topic, m.origin.partition, m.origin.offset);
    }
    let batch = SourceBatch {
        messages,
        ack: issuer.issue(offsets),
        progress: Some(progress(&[0, 1, 2])),
    };
    assert!(dispatcher.dispatch(PipelineInput::Batch(batch)));

    let first = workers[0].try_recv().unwrap();
    let PipelineInput::Batch(held) = workers[1].try_recv().unwrap() else {
        panic!("worker 1 got no batch");
    };
    assert_eq!(partitions_of(first), (vec![0, 2, 0], Some(vec![0, 2])));
    // Worker 0 is done; the batch is not, while worker 1 holds its share.
    assert!(completions.try_recv().is_err());
    assert_eq!(held.messages.len(), 1);
    assert_eq!(held.messages[0].origin.partition, 1);
    held.ack.ack();
    let done = completions.try_recv().expect("complete once both are done");
    assert!(done.delivered);
}

#[test]
fn news_of_partitions_reaches_each_worker_about_its_own() {
    let (dispatcher, workers) = dispatcher(2);
    assert!(dispatcher.dispatch(PipelineInput::Progress(progress(&[0, 1, 3]))));
    let mine = |w: usize| match workers[w].try_recv().unwrap() {
        PipelineInput::Progress(p) => p.iter().map(|p| p.partition).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(mine(0), vec![0]);
    assert_eq!(mine(1), vec![1, 3]);
    // Lost partitions go only to the worker that had them.
    assert!(dispatcher.dispatch(PipelineInput::Lost(vec![("t".into(), 3)])));
    assert!(workers[0].try_recv().is_err());
    assert!(
        matches!(workers[1].try_recv(), Ok(PipelineInput::Lost(l)) if l == vec![("t".to_owned(), 3)])
    );
}

#[test]
fn a_barrier_is_reached_when_every_worker_reached_it_and_resumes_each() {
    let (dispatcher, workers) = dispatcher(2);
    let (reached_tx, reached_rx) = sync_channel(1);
    let (resume_tx, resume_rx) = sync_channel(1);
    let barrier = Barrier {
        reached: reached_tx,
        resume: resume_rx,
    };
    let source = std::thread::spawn(move || {
        let reached = reached_rx.recv().is_ok();
        resume_tx
            .send(Resume::Rewind(vec![("t".into(), 0), ("t".into(), 1)]))
            .unwrap();
        reached
    });
    let workers: Vec<_> = workers
        .into_iter()
        .map(|input| {
            std::thread::spawn(move || match input.recv().unwrap() {
                PipelineInput::Barrier(b) => {
                    b.reached.send(()).unwrap();
                    match b.resume.recv().unwrap() {
                        Resume::Rewind(p) => p,
                        Resume::Committed => Vec::new(),
                    }
                }
                other => panic!("{other:?}"),
            })
        })
        .collect();
    assert!(dispatcher.dispatch(PipelineInput::Barrier(barrier)));
    assert!(source.join().unwrap());
    let rewound: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(rewound, vec![vec![("t".into(), 0)], vec![("t".into(), 1)]]);
}

/// A stage that records the watermarks it is ticked with.
struct Ticks(Arc<Mutex<Vec<i64>>>);

impl Stage for Ticks {
    fn name(&self) -> &str {
        "ticks"
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, StageError> {
        Ok(Batch::Records(batch.records().into_owned()))
    }
    fn tick(&mut self, watermark: i64) -> Result<Batch, StageError> {
        self.0.lock().unwrap().push(watermark);
        // From 1,000 on, a window closes at every tick.
        let closed = (watermark >= 1_000).then(|| crate::Record::new(Origin::default()));
        Ok(Batch::Records(closed.into_iter().collect()))
    }
}

#[test]
fn a_window_another_worker_closed_moves_this_workers_state_too() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut handles = SharedStage::handles(Box::new(Ticks(seen.clone())), 2);
    let mut second = handles.pop().unwrap();
    let mut first = handles.pop().unwrap();
    second.tick(2_000).unwrap();
    assert!(!first.tick(1_500).unwrap().is_empty());
    // The first delivered what closed: it knows. The second learns it once.
    assert!(!first.moved_by_others());
    assert!(second.moved_by_others());
    assert!(!second.moved_by_others());
    // A worker at a barrier holds event time: nobody closes windows meanwhile.
    first.no_watermark(true);
    assert!(second.tick(3_000).unwrap().is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![1_500]);
}

#[test]
fn a_shared_stage_is_ticked_with_the_least_advanced_workers_event_time() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut handles = SharedStage::handles(Box::new(Ticks(seen.clone())), 3);
    let mut third = handles.pop().unwrap();
    let mut second = handles.pop().unwrap();
    let mut first = handles.pop().unwrap();
    // Until every worker has said where it stands, nothing moves.
    first.tick(500).unwrap();
    second.tick(300).unwrap();
    assert!(seen.lock().unwrap().is_empty());
    // The third has no partition behind: it has seen nothing, and holds nobody back.
    third.no_watermark(false);
    first.tick(500).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300]);
    // One worker's partition is behind and unread: event time waits for it.
    third.no_watermark(true);
    second.tick(900).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300]);
    third.tick(400).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300, 400]);
    // Nothing new when the least has not moved; the end of input closes all when all end.
    first.tick(500).unwrap();
    third.tick(i64::MAX).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300, 400, 500]);
    first.tick(i64::MAX).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300, 400, 500, 900]);
    second.tick(i64::MAX).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300, 400, 500, 900, i64::MAX]);
}

#[test]
fn a_worker_not_yet_told_its_partitions_holds_the_shared_event_time() {
    // A host starting on a backlog: worker 1 ticks before the source has said anything
    // (the group is still joining), then worker 0 gets the first batch and races through
    // its partitions' backlog. Until worker 1 hears which partitions it owns, they may hold
    // the oldest records: no window may close on worker 0's event time alone.
    use crate::chain::{Chain, ChainOutput};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut handles = SharedStage::handles(Box::new(Ticks(seen.clone())), 2);
    let idle = std::time::Duration::from_secs(10);
    let mut second = Chain::new(vec![Box::new(handles.pop().unwrap())], idle);
    let mut first = Chain::new(vec![Box::new(handles.pop().unwrap())], idle);
    let at = |partition: i32, timestamp: i64| {
        let mut r = crate::Record::new(Origin {
            topic: "t".into(),
            partition,
            offset: 0,
        });
        r.timestamp = timestamp;
        r
    };
    let behind = |partition: i32| PartitionProgress {
        topic: "t".into(),
        partition,
        caught_up: false,
    };
    second.tick(false, &mut ChainOutput::default());
    first.set_progress(vec![behind(0)]);
    first.process(
        Batch::Records(vec![at(0, 5_000)]),
        &mut ChainOutput::default(),
    );
    first.tick(false, &mut ChainOutput::default());
    assert!(
        seen.lock().unwrap().is_empty(),
        "ticked before worker 1 heard: {seen:?}"
    );

    // Told, with its partition behind and unread: it still holds.
    second.set_progress(vec![behind(1)]);
    second.tick(false, &mut ChainOutput::default());
    first.tick(false, &mut ChainOutput::default());
    assert!(seen.lock().unwrap().is_empty());
    // Its records come: event time is the least of both.
    second.process(
        Batch::Records(vec![at(1, 3_000)]),
        &mut ChainOutput::default(),
    );
    second.tick(false, &mut ChainOutput::default());
    assert_eq!(*seen.lock().unwrap(), vec![3_000]);
}

#[test]
fn every_worker_hears_from_the_first_batch_even_from_a_source_that_reports_no_partitions() {
    // stdin and the backfill report no partitions: a worker that gets none of a batch's
    // messages is told it owns nothing, so it does not hold the others back for ever.
    let (dispatcher, workers) = dispatcher(2);
    let (mut issuer, _completions) = AckIssuer::new();
    // A batch of one message of partition 0, with no news of partitions.
    let mut stdin_batch = |offset: i64| {
        let mut offsets = BatchOffsets::default();
        offsets.record("t", 0, offset);
        PipelineInput::Batch(SourceBatch {
            ack: issuer.issue(offsets),
            messages: vec![RawMessage::at(0, offset)],
            progress: None,
        })
    };
    assert!(dispatcher.dispatch(stdin_batch(1)));
    assert_eq!(
        partitions_of(workers[0].try_recv().unwrap()),
        (vec![0], None)
    );
    match workers[1].try_recv() {
        Ok(PipelineInput::Progress(p)) => assert!(p.is_empty(), "{p:?}"),
        other => panic!("worker 1 was told nothing: {other:?}"),
    }
    // Once is enough.
    assert!(dispatcher.dispatch(stdin_batch(2)));
    assert!(workers[1].try_recv().is_err());
}
