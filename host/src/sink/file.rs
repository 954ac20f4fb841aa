//! NDJSON to a file or stdout: for running the chain without Kafka
//! (`cat app.log | sluice run --config …`), and for demos.
//!
//! It never dead-letters: a write that fails stops the sink and fails the batch. So it may
//! take `dlq` along with other routes without ever waiting on its own channel.

use super::{SinkContext, SinkError, SinkInput, SinkInputs, SinkKind, SinkStats, Starting};
use crate::codec;
use crate::event::{Events, SinkBatch};
use crate::route::RouteName;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub routes: Vec<RouteName>,
    /// A file to append to, or `-` for stdout.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Add a `sluice.route` field naming the route of each line.
    #[serde(default)]
    pub include_route: bool,
    /// fsync after every batch (slower; survives power loss).
    #[serde(default)]
    pub fsync: bool,
}

fn default_path() -> PathBuf {
    PathBuf::from("-")
}

impl FileSinkConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.path.as_os_str().is_empty() {
            return Err((
                "path".into(),
                "must be a file path or `-` for stdout".into(),
            ));
        }
        Ok(())
    }
}

impl SinkKind for FileSinkConfig {
    fn routes(&self) -> &[RouteName] {
        &self.routes
    }

    fn check(&self) -> Result<(), (String, String)> {
        FileSinkConfig::check(self)
    }

    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_> {
        Box::pin(start(ctx, self, input))
    }
}

pub async fn start(
    ctx: SinkContext,
    config: &FileSinkConfig,
    mut rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let name = ctx.name.as_str();
    let mut out = if config.path.as_os_str() == "-" {
        Output::Stdout(std::io::stdout())
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .map_err(|e| SinkError::Start {
                sink: name.to_owned(),
                message: format!(
                    "cannot open {} for appending: {e}. Check the directory exists and is writable.",
                    config.path.display()
                ),
            })?;
        Output::File(file)
    };
    let name = name.to_owned();
    let config = config.clone();
    let stats = ctx.stats.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(input) = rx.blocking_recv() {
            match input {
                SinkInput::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
                // Each batch is written as it comes: nothing held per partition.
                SinkInput::Revoked(_) | SinkInput::Lost(_) => {}
                SinkInput::Batch(batch) => {
                    buf.clear();
                    encode(&batch, config.include_route, &mut buf);
                    let written = out
                        .write_all(&buf)
                        .and_then(|()| out.flush())
                        .and_then(|()| out.sync(config.fsync));
                    match written {
                        Ok(()) => {
                            let n = batch.events.len() as u64;
                            SinkStats::add(&stats.sent, n);
                            SinkStats::add(&stats.acknowledged, n);
                            batch.ack.ack()
                        }
                        Err(e) => {
                            // The handle is dropped unacknowledged: the batch fails and is
                            // replayed after a restart.
                            tracing::error!(sink = %name, error = %e, "write failed; stopping");
                            return;
                        }
                    }
                }
            }
        }
    }))
}

/// Where the lines go.
enum Output {
    Stdout(std::io::Stdout),
    File(std::fs::File),
}

impl Output {
    /// With `fsync`, wait until a file's data is on disk (a batch is acknowledged after).
    fn sync(&self, fsync: bool) -> std::io::Result<()> {
        match self {
            Output::File(file) if fsync => file.sync_data(),
            _ => Ok(()),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(out) => out.write(buf),
            Output::File(out) => out.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(out) => out.flush(),
            Output::File(out) => out.flush(),
        }
    }
}

fn encode(batch: &SinkBatch, include_route: bool, buf: &mut Vec<u8>) {
    let route_field = |buf: &mut Vec<u8>| {
        if include_route {
            buf.extend_from_slice(b"\"sluice.route\":");
            codec::write_str(buf, batch.route.as_str());
            buf.push(b',');
        }
    };
    match &*batch.events {
        Events::Logs(logs) => {
            for record in logs.records() {
                let start = buf.len();
                codec::encode_record(record, buf);
                if include_route {
                    // Insert the route as the first field.
                    let mut head = Vec::new();
                    route_field(&mut head);
                    buf.splice(start + 1..start + 1, head);
                }
                buf.push(b'\n');
            }
        }
        Events::Raw(messages) => {
            for m in messages {
                buf.push(b'{');
                route_field(buf);
                buf.extend_from_slice(b"\"raw\":");
                codec::write_str(buf, &String::from_utf8_lossy(&m.payload));
                buf.extend_from_slice(b"}\n");
            }
        }
        Events::DeadLetters(letters) => {
            for d in letters {
                buf.push(b'{');
                route_field(buf);
                buf.extend_from_slice(b"\"reason\":");
                codec::write_str(buf, &d.reason);
                buf.extend_from_slice(b",\"origin.topic\":");
                codec::write_str(buf, &d.origin.topic);
                buf.extend_from_slice(
                    format!(
                        ",\"origin.partition\":{},\"origin.offset\":{},\"payload\":",
                        d.origin.partition, d.origin.offset
                    )
                    .as_bytes(),
                );
                codec::write_str(buf, &String::from_utf8_lossy(&d.payload));
                buf.extend_from_slice(b"}\n");
            }
        }
    }
}
