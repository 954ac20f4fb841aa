//! Lines from standard input: run the chain over a file without Kafka
//! (`cat app.log | sluice run --config …`). Offsets are line numbers; at end of input the
//! source waits until every line is delivered, then the host exits.

use super::kafka::defaults;
use super::{DecodingConfig, PipelineInput, SourceBatch, SourceError, SourceKind, SourceLinks};
use crate::ack::{AckIssuer, BatchOffsets};
use crate::codec::InvalidJson;
use crate::event::RawMessage;
use crate::{Origin, time};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// The topic name records carry in their origin.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "defaults::batch_max_records")]
    pub batch_max_records: usize,
    #[serde(default = "defaults::batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub invalid_json: InvalidJson,
}

fn default_topic() -> String {
    "stdin".into()
}

impl SourceKind for StdinSourceConfig {
    fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    fn decoding(&self) -> DecodingConfig {
        super::decoding_keys!(self)
    }

    fn describe(&self) -> String {
        "stdin".into()
    }

    fn run(&self, links: SourceLinks) -> Result<(), SourceError> {
        run(
            self,
            std::io::stdin(),
            links.pipeline,
            links.stop,
            links.stats,
        )
    }
}

/// Lines read ahead of the batch being filled.
const LINES_AHEAD: usize = 1024;

/// How often an idle source looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Read `input` to the end (or until `stop`), sending a batch when it is full or its first
/// line has waited `batch_max_wait_ms`; then wait for delivery. Lines are read on a thread
/// of their own, so a quiet input (`tail -f | sluice run`) neither holds a partial batch
/// back nor keeps the host from stopping.
pub fn run(
    config: &StdinSourceConfig,
    input: impl Read + Send + 'static,
    tx: SyncSender<PipelineInput>,
    stop: Arc<AtomicBool>,
    stats: Arc<super::SourceStats>,
) -> Result<(), SourceError> {
    let (lines_tx, lines) = std::sync::mpsc::sync_channel(LINES_AHEAD);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(input, lines_tx))
        .map_err(|e| SourceError::Stdin(e.to_string()))?;
    let (mut issuer, mut completions) = AckIssuer::new();
    let batch_size = config.batch_max_records;
    let max_wait = Duration::from_millis(config.batch_max_wait_ms);
    let mut messages = Vec::with_capacity(batch_size);
    let mut offsets = BatchOffsets::default();
    let mut issued = 0usize;
    let mut send = |messages: &mut Vec<RawMessage>, offsets: &mut BatchOffsets| {
        let ack = issuer.issue(std::mem::take(offsets));
        issued += 1;
        let batch = SourceBatch {
            messages: std::mem::take(messages),
            ack,
            progress: None,
        };
        tx.send(PipelineInput::Batch(batch)).is_ok()
    };
    let mut complete = true;
    let mut line_no = 0i64;
    let mut started = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        let wait = if messages.is_empty() {
            STOP_POLL
        } else {
            max_wait.saturating_sub(started.elapsed()).min(STOP_POLL)
        };
        let due = match lines.recv_timeout(wait) {
            Ok(line) => {
                let mut payload = line.map_err(|e| SourceError::Stdin(e.to_string()))?;
                if payload.last() == Some(&b'\r') {
                    payload.pop();
                }
                let origin = Origin {
                    topic: config.topic.clone(),
                    partition: 0,
                    offset: line_no,
                };
                line_no += 1;
                offsets.record(&origin.topic, 0, origin.offset);
                stats.consumed.fetch_add(1, Ordering::Relaxed);
                if messages.is_empty() {
                    started = Instant::now();
                }
                messages.push(RawMessage {
                    origin,
                    key: None,
                    payload,
                    timestamp: time::now_ns(),
                });
                messages.len() >= batch_size
            }
            Err(RecvTimeoutError::Timeout) => !messages.is_empty() && started.elapsed() >= max_wait,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if due && !send(&mut messages, &mut offsets) {
            break;
        }
    }
    if !messages.is_empty() {
        send(&mut messages, &mut offsets);
    }
    let _ = tx.send(PipelineInput::End { complete });
    drop(tx);
    let mut failed = false;
    for _ in 0..issued {
        match completions.blocking_recv() {
            Some(c) => failed |= !c.delivered,
            None => break,
        }
    }
    if failed {
        return Err(SourceError::BatchFailed);
    }
    Ok(())
}

/// Send each line of `input` (without its `\n`) until its end, a read error, or the
/// source no longer listening.
fn read_lines(input: impl Read, lines: SyncSender<std::io::Result<Vec<u8>>>) {
    let mut input = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if lines.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = lines.send(Err(e));
                return;
            }
        }
    }
}
