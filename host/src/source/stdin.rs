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
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

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
            std::io::stdin().lock(),
            links.pipeline,
            links.stop,
            links.stats,
        )
    }
}

/// Read `input` to the end (or until `stop`), sending batches; then wait for delivery.
pub fn run(
    config: &StdinSourceConfig,
    input: impl BufRead,
    tx: SyncSender<PipelineInput>,
    stop: Arc<AtomicBool>,
    stats: Arc<super::SourceStats>,
) -> Result<(), SourceError> {
    let (mut issuer, mut completions) = AckIssuer::new();
    let batch_size = config.batch_max_records;
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
    for (line_no, line) in input.split(b'\n').enumerate() {
        if stop.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        let mut payload = line.map_err(|e| SourceError::Stdin(e.to_string()))?;
        if payload.last() == Some(&b'\r') {
            payload.pop();
        }
        let origin = Origin {
            topic: config.topic.clone(),
            partition: 0,
            offset: line_no as i64,
        };
        offsets.record(&origin.topic, 0, origin.offset);
        stats.consumed.fetch_add(1, Ordering::Relaxed);
        messages.push(RawMessage {
            origin,
            key: None,
            payload,
            timestamp: time::now_ns(),
        });
        if messages.len() >= batch_size && !send(&mut messages, &mut offsets) {
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
