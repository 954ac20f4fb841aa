//! The delivery loop of the sinks that write each batch as it comes (Kafka, search): the
//! [`crate::ack`] contract, kept once. A sink brings its [`Protocol`] — how to hand a
//! batch's items to its destination and how to read the answer — and the [`Driver`] does
//! the rest:
//!
//! - up to `max_in_flight` batches outstanding; the next one is handed over only after
//!   the previous one was (the order a destination sees is the order of the batches);
//! - items the destination cannot take now are sent again, in batch order, once every
//!   batch in flight has answered, after a backoff with jitter and without a deadline;
//!   meanwhile no input is read, so backpressure pauses the source (see [`super::retry`]);
//! - items refused for good go to the dead-letter route with the destination's reason
//!   (written by this sink itself, within the batch, when it takes `dlq` too); a dead
//!   letter refused for good fails its batch — a dead letter is never dead-lettered;
//! - a batch is acknowledged once every item is written or dead-lettered.

use super::retry::{Backoff, Retry};
use super::{DeadLettered, Router, SinkContext, SinkInput, SinkStats};
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::route::RouteName;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why an item was not written.
#[derive(Debug)]
pub enum Failure {
    /// The destination cannot take it now (unreachable, throttled, not authorized, …): it
    /// is sent again. The text says why, for the operator.
    Retry(String),
    /// The destination refused it for good (its own fault: too large, a mapping conflict):
    /// it goes to the dead-letter route as this letter.
    Refused(DeadLetter),
}

/// The items of one hand-over that were not written, by place in the batch. Every item
/// handed over and not listed was written.
pub type Failures = Vec<(usize, Failure)>;

/// The destination's answer to one hand-over, awaited alongside other batches'.
pub struct Answer(BoxFuture<'static, Failures>);

impl Answer {
    pub fn new(answer: impl Future<Output = Failures> + Send + 'static) -> Answer {
        Answer(Box::pin(answer))
    }
}

/// What a sink knows about its destination; the [`Driver`] knows the rest.
pub trait Protocol: Send + Sync + 'static {
    /// Hand items of `batch` to the destination: every item (`only` is `None`), or those
    /// listed, ascending. Awaited before the next batch is handed over, so what must keep
    /// the order of batches happens here (the Kafka producer's queue); the answer it
    /// returns is awaited alongside other batches'.
    fn send<'a>(&'a self, batch: &'a SinkBatch, only: Option<&'a [usize]>)
    -> BoxFuture<'a, Answer>;

    /// What failed, for the operator: "sending 12 messages to topic `t`".
    fn describe(&self, items: usize) -> String;

    /// Before sending again after a wait (the Kafka sink replaces a producer that failed
    /// fatally). Everything handed over before has been answered.
    fn before_retry(&mut self) {}
}

/// How a driven sink runs.
#[derive(Debug, Clone, Copy)]
pub struct DriverSettings {
    /// Batches whose answers may be outstanding at once.
    pub max_in_flight: usize,
    pub backoff: Backoff,
    /// What to check while the destination does not take writes, for `SinkUnavailable`.
    pub hint: &'static str,
}

/// Runs one sink: reads its input, hands batches to its [`Protocol`], settles them.
pub struct Driver<P: Protocol> {
    name: String,
    router: Arc<Router>,
    stats: Arc<SinkStats>,
    protocol: P,
    max_in_flight: usize,
    retry: Retry,
    /// The order batches came in, kept when they are sent again.
    next_seq: u64,
    /// Batches with items to send again once every batch in flight has answered.
    stalled: Vec<Stalled>,
}

/// A batch handed over (whole or in part) and its answer.
struct Answered {
    seq: u64,
    batch: SinkBatch,
    /// How many items were handed over.
    sent: usize,
    failures: Failures,
}

/// A batch with items the destination could not take yet.
struct Stalled {
    seq: u64,
    batch: SinkBatch,
    /// Places in the batch, ascending.
    pending: Vec<usize>,
    /// The last reason one was not taken.
    error: String,
}

type InFlight = FuturesUnordered<BoxFuture<'static, Answered>>;

impl<P: Protocol> Driver<P> {
    /// Run `protocol` for the sink of `ctx` on a task of its own.
    pub fn spawn(
        ctx: &SinkContext,
        protocol: P,
        settings: DriverSettings,
        input: mpsc::Receiver<SinkInput>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Driver::new(ctx, protocol, settings).run(input))
    }

    pub fn new(ctx: &SinkContext, protocol: P, settings: DriverSettings) -> Self {
        Driver {
            name: ctx.name.clone(),
            router: ctx.router.clone(),
            stats: ctx.stats.clone(),
            protocol,
            max_in_flight: settings.max_in_flight.max(1),
            retry: Retry::new(
                &ctx.name,
                ctx.stats.clone(),
                settings.backoff,
                settings.hint,
            ),
            next_seq: 0,
            stalled: Vec::new(),
        }
    }

    /// Run until the input closes, then settle everything in flight.
    pub async fn run(mut self, mut rx: mpsc::Receiver<SinkInput>) {
        let mut in_flight = InFlight::new();
        loop {
            // Once everything in flight has answered, send the stalled batches again; no
            // input is read until they are written.
            if in_flight.is_empty() && !self.stalled.is_empty() {
                self.retry(&mut in_flight).await;
            }
            tokio::select! {
                Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(answered).await;
                }
                input = rx.recv(),
                    if in_flight.len() < self.max_in_flight && self.stalled.is_empty() =>
                {
                    let Some(input) = input else { break };
                    match input {
                        SinkInput::Flush(done) => {
                            self.drain(&mut in_flight).await;
                            let _ = done.send(());
                        }
                        // Batches in flight complete on their own: nothing held per partition.
                        SinkInput::Revoked(_) | SinkInput::Lost(_) => {}
                        SinkInput::Batch(batch) => {
                            self.next_seq += 1;
                            self.send(self.next_seq, batch, None, &mut in_flight).await;
                        }
                    }
                }
            }
        }
        self.drain(&mut in_flight).await;
    }

    /// Hand a batch's items (all, or `only`) over and queue its answer.
    async fn send(
        &self,
        seq: u64,
        batch: SinkBatch,
        only: Option<Vec<usize>>,
        in_flight: &mut InFlight,
    ) {
        let sent = only.as_ref().map_or(batch.events.len(), Vec::len);
        SinkStats::add(&self.stats.sent, sent as u64);
        let answer = self.protocol.send(&batch, only.as_deref()).await;
        in_flight.push(Box::pin(async move {
            Answered {
                seq,
                batch,
                sent,
                failures: answer.0.await,
            }
        }));
    }

    /// Settle what an answer settled: acknowledge, dead-letter, or hold back to send again.
    async fn settle(&mut self, answered: Answered) {
        let Answered {
            seq,
            batch,
            sent,
            mut failures,
        } = answered;
        SinkStats::add(&self.stats.acknowledged, (sent - failures.len()) as u64);
        // Answers arrive in any order; what follows keeps the batch's order.
        failures.sort_unstable_by_key(|&(index, _)| index);
        let mut pending = Vec::new();
        let mut error = String::new();
        let mut refused = Vec::new();
        for (index, failure) in failures {
            match failure {
                Failure::Retry(why) => {
                    pending.push(index);
                    error = why;
                }
                Failure::Refused(letter) => refused.push(letter),
            }
        }
        if !refused.is_empty() && !self.dead_letter(&batch, refused).await {
            return; // the handle is dropped: the batch fails and is replayed
        }
        if pending.is_empty() {
            if self.stalled.is_empty() {
                self.retry.succeeded();
            }
            batch.ack.ack();
            return;
        }
        self.stalled.push(Stalled {
            seq,
            batch,
            pending,
            error,
        });
    }

    /// Send refused items to the dead-letter route; whether the batch may be acknowledged.
    async fn dead_letter(&mut self, batch: &SinkBatch, letters: Vec<DeadLetter>) -> bool {
        if batch.route == RouteName::Dlq {
            tracing::error!(sink = %self.name, count = letters.len(), error = %letters[0].reason,
                "dead letters were refused for good; the batch fails and will be replayed. Check the dead-letter destination's limits and mappings");
            return false;
        }
        tracing::warn!(sink = %self.name, count = letters.len(), error = %letters[0].reason,
            "the destination refused records for good; dead-lettering them");
        SinkStats::add(&self.stats.dead_lettered, letters.len() as u64);
        match self
            .router
            .dead_letter(&self.name, letters, &batch.ack)
            .await
        {
            DeadLettered::Own(letters) => self.write_own_dead_letters(batch, letters).await,
            other => other.sent(&self.name),
        }
    }

    /// This sink takes `dlq` too: write the batch's dead letters now, within the batch
    /// (through its own channel they would wait behind input this loop is not reading).
    async fn write_own_dead_letters(
        &mut self,
        batch: &SinkBatch,
        letters: Vec<DeadLetter>,
    ) -> bool {
        let letters = SinkBatch {
            route: RouteName::Dlq,
            events: Arc::new(Events::DeadLetters(letters)),
            ack: batch.ack.clone(),
        };
        let mut only: Option<Vec<usize>> = None;
        loop {
            let sent = only.as_ref().map_or(letters.events.len(), Vec::len);
            SinkStats::add(&self.stats.sent, sent as u64);
            let failures = self.protocol.send(&letters, only.as_deref()).await.0.await;
            SinkStats::add(&self.stats.acknowledged, (sent - failures.len()) as u64);
            if failures.is_empty() {
                letters.ack.ack();
                return true;
            }
            let mut pending = Vec::new();
            let mut error = String::new();
            for (index, failure) in failures {
                match failure {
                    Failure::Retry(why) => {
                        pending.push(index);
                        error = why;
                    }
                    Failure::Refused(letter) => {
                        tracing::error!(sink = %self.name, error = %letter.reason,
                            "a dead letter was refused for good; the batch fails and will be replayed");
                        return false;
                    }
                }
            }
            pending.sort_unstable();
            let what = self.protocol.describe(pending.len());
            self.retry
                .failed(pending.len() as u64, &what, &error, None)
                .await;
            self.protocol.before_retry();
            only = Some(pending);
        }
    }

    /// Settle everything in flight, sending again what must be, until nothing is left.
    async fn drain(&mut self, in_flight: &mut InFlight) {
        loop {
            while let Some(answered) = in_flight.next().await {
                self.settle(answered).await;
            }
            if self.stalled.is_empty() {
                return;
            }
            self.retry(in_flight).await;
        }
    }

    /// Wait (backoff with jitter), then send the stalled batches again in their order.
    async fn retry(&mut self, in_flight: &mut InFlight) {
        let count: usize = self.stalled.iter().map(|s| s.pending.len()).sum();
        let error = self
            .stalled
            .iter()
            .max_by_key(|s| s.seq)
            .map(|s| s.error.clone())
            .unwrap_or_default();
        let what = self.protocol.describe(count);
        self.retry.failed(count as u64, &what, &error, None).await;
        self.protocol.before_retry();
        let mut stalled = std::mem::take(&mut self.stalled);
        stalled.sort_unstable_by_key(|s| s.seq);
        for s in stalled {
            self.send(s.seq, s.batch, Some(s.pending), in_flight).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckIssuer, BatchOffsets, Completion};
    use crate::event::RawMessage;
    use crate::sink::tests::letter;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What a scripted destination answers to each hand-over, in turn: per item handed
    /// over, `None` written, `Some(true)` refused for good, `Some(false)` not now.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Vec<Option<bool>>>>,
        /// Each hand-over: (route, items handed over).
        calls: Mutex<Vec<(String, Vec<usize>)>>,
    }

    struct Scripted(Arc<Script>);

    impl Protocol for Scripted {
        fn send<'a>(
            &'a self,
            batch: &'a SinkBatch,
            only: Option<&'a [usize]>,
        ) -> BoxFuture<'a, Answer> {
            let items: Vec<usize> =
                only.map_or_else(|| (0..batch.events.len()).collect(), <[usize]>::to_vec);
            let script = self.0.clone();
            script
                .calls
                .lock()
                .unwrap()
                .push((batch.route.to_string(), items.clone()));
            let answer = script
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_default();
            let failures: Failures = items
                .into_iter()
                .zip(answer.into_iter().chain(std::iter::repeat(None)))
                .filter_map(|(index, outcome)| {
                    outcome.map(|refused| {
                        let failure = if refused {
                            Failure::Refused(letter(index as i64))
                        } else {
                            Failure::Retry("not now".into())
                        };
                        (index, failure)
                    })
                })
                .collect();
            Box::pin(async move { Answer::new(async move { failures }) })
        }

        fn describe(&self, items: usize) -> String {
            format!("writing {items} items")
        }
    }

    fn raw(count: usize) -> Arc<Events> {
        let message = RawMessage {
            origin: crate::Origin::default(),
            key: None,
            payload: b"{}".to_vec(),
            timestamp: 0,
        };
        Arc::new(Events::Raw(vec![message; count]))
    }

    /// A driven sink named `name` taking `routes`, beside a plain sink taking `dlq` when
    /// `dlq_elsewhere`; returns its input, the other sink's input and the script.
    fn driven(
        routes: &[&str],
        dlq_elsewhere: bool,
        answers: Vec<Vec<Option<bool>>>,
    ) -> (
        mpsc::Sender<SinkInput>,
        Option<mpsc::Receiver<SinkInput>>,
        Arc<Script>,
    ) {
        let router = Router::new();
        let script = Arc::new(Script {
            answers: Mutex::new(answers.into()),
            ..Script::default()
        });
        let ctx = SinkContext::new("driven", router.clone());
        let settings = DriverSettings {
            max_in_flight: 4,
            backoff: Backoff::from_millis(1, 5),
            hint: "",
        };
        let (tx, rx) = mpsc::channel(4);
        let task = Driver::spawn(&ctx, Scripted(script.clone()), settings, rx);
        let mut handles = vec![super::super::SinkHandle {
            name: "driven".into(),
            routes: routes.iter().map(|r| RouteName::from(*r)).collect(),
            reads_packed: false,
            tx: tx.clone(),
            task,
            stats: ctx.stats.clone(),
        }];
        let mut other = None;
        if dlq_elsewhere {
            let (dlq_tx, dlq_rx) = mpsc::channel(4);
            handles.push(super::super::SinkHandle {
                name: "archive".into(),
                routes: vec!["dlq".into()],
                reads_packed: false,
                tx: dlq_tx,
                task: tokio::spawn(async {}),
                stats: Arc::default(),
            });
            other = Some(dlq_rx);
        }
        router.install(&handles);
        (tx, other, script)
    }

    /// Send `events` on `route` as one batch; its completion arrives on the receiver.
    async fn send(
        tx: &mpsc::Sender<SinkInput>,
        route: &str,
        events: Arc<Events>,
    ) -> mpsc::UnboundedReceiver<Completion> {
        let (mut issuer, completions) = AckIssuer::new();
        let batch = SinkBatch {
            route: route.into(),
            events,
            ack: issuer.issue(BatchOffsets::default()),
        };
        tx.send(SinkInput::Batch(batch)).await.unwrap();
        completions
    }

    async fn completed(completions: &mut mpsc::UnboundedReceiver<Completion>) -> Completion {
        tokio::time::timeout(Duration::from_secs(10), completions.recv())
            .await
            .expect("the batch settles")
            .unwrap()
    }

    #[tokio::test]
    async fn items_not_taken_now_are_sent_again_alone_and_the_batch_acknowledged() {
        let (tx, _, script) = driven(
            &["raw"],
            false,
            vec![vec![None, Some(false), None, Some(false)]],
        );
        let mut completions = send(&tx, "raw", raw(4)).await;
        assert!(completed(&mut completions).await.delivered);
        let calls = script.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![("raw".into(), vec![0, 1, 2, 3]), ("raw".into(), vec![1, 3])]
        );
    }

    #[tokio::test]
    async fn refused_items_go_to_the_dead_letter_sink_with_the_batch_handle() {
        let (tx, dlq, _) = driven(&["raw"], true, vec![vec![None, Some(true)]]);
        let mut dlq = dlq.unwrap();
        let mut completions = send(&tx, "raw", raw(2)).await;
        let Some(SinkInput::Batch(letters)) = dlq.recv().await else {
            panic!("no dead letters")
        };
        assert_eq!(letters.events.len(), 1);
        // The batch waits for its dead letters to be written.
        assert!(completions.try_recv().is_err());
        letters.ack.ack();
        assert!(completed(&mut completions).await.delivered);
    }

    #[tokio::test]
    async fn a_sink_taking_dlq_writes_its_own_dead_letters_within_the_batch() {
        // The refused item, then its dead letter: not taken once, then written.
        let answers = vec![vec![Some(true), None], vec![Some(false)], vec![None]];
        let (tx, _, script) = driven(&["raw", "dlq"], false, answers);
        let mut completions = send(&tx, "raw", raw(2)).await;
        assert!(completed(&mut completions).await.delivered);
        let calls = script.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                ("raw".into(), vec![0, 1]),
                ("dlq".into(), vec![0]),
                ("dlq".into(), vec![0])
            ]
        );
    }

    #[tokio::test]
    async fn a_dead_letter_refused_for_good_fails_its_batch() {
        let (tx, _, _) = driven(&["dlq"], false, vec![vec![Some(true)]]);
        let letters = Arc::new(Events::DeadLetters(vec![letter(7)]));
        let mut completions = send(&tx, "dlq", letters).await;
        assert!(!completed(&mut completions).await.delivered);
    }
}
