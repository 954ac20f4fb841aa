//! `sluice backfill`: run raw objects of the lake through the chain and sinks again.
//!
//! Raw objects under an `s3://bucket/prefix/raw/…` URL are listed (optionally up to an
//! `--until` partition), read in key order, and each line becomes the source message it was
//! — same topic, partition and offset (kept in the raw envelope) — so everything derived
//! from it gets the same S3 keys and search ids as on the streaming path.
//!
//! Idempotent and resumable: after each raw object the sinks are flushed, so no lake object
//! spans two raw objects; once every record of an object is acknowledged its key is
//! appended to the state file, and a rerun skips the keys listed there. Running an object
//! again (no state file, or interrupted before its key was saved) rewrites the same keys.
//! The `raw` route is not written: its objects are the input.
//!
//! A listed object that is gone when read (or a named object that does not exist) raises
//! `S3MissingFile`, is counted, and the backfill goes on with the others.

use crate::Origin;
use crate::ack::{AckIssuer, BatchOffsets};
use crate::config::Config;
use crate::health::{self, FailState};
use crate::lake::layout::parse_s3_url;
use crate::lake::{ObjectName, Table, raw};
use crate::route::RouteName;
use crate::runner::{self, RunPlan};
use crate::sink::SinkConfig;
use crate::sink::s3;
use crate::source::{
    DecodingConfig, PipelineInput, SourceBatch, SourceError, SourceKind, SourceLinks,
};
use crate::topology::Overrides;
use aws_sdk_s3::error::DisplayErrorContext;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// `s3://bucket/prefix/raw/dt=…/` (a prefix) or one raw object's URL.
    pub from: String,
    /// Last partition to include: `2026-11-25` (the whole day) or `2026-11-25T07`
    /// (`dt=2026-11-25/hour=07` is accepted too).
    pub until: Option<String>,
    /// Keys of completed objects, one per line; appended to as objects complete.
    pub state: PathBuf,
    /// Progress on stderr: a bar on a terminal, a line every 10 s otherwise.
    pub progress: bool,
}

impl BackfillOptions {
    pub fn default_state_file() -> PathBuf {
        PathBuf::from("sluice-backfill.state")
    }
}

/// What a backfill did.
#[derive(Debug, Default, Clone)]
pub struct BackfillSummary {
    /// Objects listed (after `--until`).
    pub listed: u64,
    /// Objects processed in this run.
    pub objects: u64,
    /// Objects skipped because the state file lists them.
    pub already_done: u64,
    pub records: u64,
    pub bytes: u64,
    /// Objects that were not there when read (`S3MissingFile`).
    pub missing: Vec<String>,
    /// Stopped by a signal before the end.
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("--from `{0}` is not an s3:// URL; give e.g. s3://my-bucket/sluice/raw/dt=2026-11-25/")]
    BadFrom(String),
    #[error(
        "--until `{0}` is not a partition; give a day (2026-11-25) or a day and hour (2026-11-25T07)"
    )]
    BadUntil(String),
    #[error(
        "cannot list s3://{bucket}/{prefix}: {message}. Check the bucket, the credentials and the endpoint."
    )]
    List {
        bucket: String,
        prefix: String,
        message: String,
    },
    #[error("cannot read s3://{bucket}/{key}: {message}")]
    Read {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("cannot use the state file {path}: {source}. Check the path given to --state.")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "records of s3://{bucket}/{key} were not delivered by every sink (see the errors above); it is not marked done, so a rerun processes it again"
    )]
    Undelivered { bucket: String, key: String },
    #[error(transparent)]
    Run(#[from] runner::RunError),
}

/// One raw object to read.
#[derive(Debug, Clone)]
struct Listed {
    key: String,
    size: u64,
    name: ObjectName,
}

/// Run the backfill with the chain and sinks of `config`: the lake is its source.
pub async fn run(
    config: Config,
    options: BackfillOptions,
) -> Result<BackfillSummary, BackfillError> {
    let (bucket, prefix) =
        parse_s3_url(&options.from).ok_or_else(|| BackfillError::BadFrom(options.from.clone()))?;
    let until = options
        .until
        .as_deref()
        .map(|u| parse_until(u).ok_or_else(|| BackfillError::BadUntil(u.to_owned())))
        .transpose()?;
    let s3_config = lake_config(&config, &bucket);
    let client = s3::client(s3_config.as_ref()).await;

    let mut objects = list(&client, &bucket, &prefix).await?;
    if let Some(until) = &until {
        objects.retain(|o| (o.name.partition.dt(), o.name.partition.hour) <= *until);
    }
    let done = read_state(&options.state)?;
    let mut summary = BackfillSummary {
        listed: objects.len() as u64,
        ..BackfillSummary::default()
    };
    let before = objects.len();
    objects.retain(|o| !done.contains(&url(&bucket, &o.key)));
    summary.already_done = (before - objects.len()) as u64;

    let outcome = Arc::new(Mutex::new((summary, None)));
    let lake = LakeSource {
        bar: progress_bar(&objects, options.progress),
        plain: options.progress && !std::io::stderr().is_terminal(),
        objects,
        bucket,
        client,
        runtime: tokio::runtime::Handle::current(),
        state: options.state.clone(),
        batch_size: config.source.decoding().batch_max_records.max(1),
        outcome: outcome.clone(),
    };
    let plan = RunPlan {
        source: Some(Box::new(lake)),
        overrides: Overrides {
            skip_routes: vec![RouteName::Raw],
        },
        daemon: false,
    };
    let ran = runner::run_plan(config, plan, Arc::new(AtomicBool::new(false))).await;
    let (summary, error) = std::mem::take(&mut *lock(&outcome));
    match (error, ran) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e.into()),
        (None, Ok(())) => Ok(summary),
    }
}

/// The lake's raw objects as a source: each object's lines become the messages they were,
/// batch by batch; after an object the sinks write out what they hold (so no lake object
/// spans two raw objects), and once all of it is delivered its key is saved as done.
struct LakeSource {
    objects: Vec<Listed>,
    bucket: String,
    client: aws_sdk_s3::Client,
    /// For the S3 reads, from the source's own thread.
    runtime: tokio::runtime::Handle,
    state: PathBuf,
    batch_size: usize,
    bar: ProgressBar,
    /// Progress lines instead of the bar, which draws only on a terminal.
    plain: bool,
    /// What it did, and the error it stopped on, for the command to report.
    outcome: Arc<Mutex<(BackfillSummary, Option<BackfillError>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceKind for LakeSource {
    fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    fn decoding(&self) -> DecodingConfig {
        DecodingConfig::default()
    }

    fn describe(&self) -> String {
        format!("{} raw objects in s3://{}", self.objects.len(), self.bucket)
    }

    fn run(&self, links: SourceLinks) -> Result<(), SourceError> {
        let (complete, result) = self.read_all(&links);
        self.bar.finish();
        // Close the chain's windows (metrics) when every object was read.
        let _ = links.pipeline.send(PipelineInput::End { complete });
        result.map_err(|e| {
            let message = e.to_string();
            lock(&self.outcome).1 = Some(e);
            SourceError::Failed {
                kind: "lake",
                message,
            }
        })
    }
}

impl LakeSource {
    /// Read every object until one fails or `links.stop`; whether all were read.
    fn read_all(&self, links: &SourceLinks) -> (bool, Result<(), BackfillError>) {
        let started = Instant::now();
        let mut plain = self
            .plain
            .then(|| crate::progress::Progress::new("backfill"));
        let total = self.objects.len();
        for (i, object) in self.objects.iter().enumerate() {
            if let Some(plain) = &mut plain {
                plain.tick(|| {
                    let summary = &lock(&self.outcome).0;
                    format!(
                        "{i}/{total} objects read ({} missing), {} records",
                        summary.missing.len(),
                        summary.records
                    )
                });
            }
            if links.stop.load(Ordering::Relaxed) {
                lock(&self.outcome).0.interrupted = true;
                return (false, Ok(()));
            }
            let subject = url(&self.bucket, &object.key);
            let read = self
                .runtime
                .block_on(read_object(&self.client, &self.bucket, object));
            let messages = match read {
                Ok(Some(messages)) => messages,
                Ok(None) => {
                    health::global().raise(
                        FailState::S3MissingFile,
                        &subject,
                        "the object was listed (or named) but is not there; it is skipped. If it was moved, backfill its new location.",
                    );
                    lock(&self.outcome).0.missing.push(subject);
                    self.bar.inc(object.size);
                    continue;
                }
                Err(e) => return (false, Err(e)),
            };
            let count = messages.len() as u64;
            links.stats.consumed.fetch_add(count, Ordering::Relaxed);
            if !feed(messages, self.batch_size, &links.pipeline) {
                let e = BackfillError::Undelivered {
                    bucket: self.bucket.clone(),
                    key: object.key.clone(),
                };
                return (false, Err(e));
            }
            if let Err(e) = append_state(&self.state, &subject) {
                return (false, Err(e));
            }
            let mut outcome = lock(&self.outcome);
            let summary = &mut outcome.0;
            summary.objects += 1;
            summary.records += count;
            summary.bytes += object.size;
            self.bar.inc(object.size);
            let rate = summary.records as f64 / started.elapsed().as_secs_f64().max(0.001);
            self.bar.set_message(format!(
                "objects {}/{} · {} records · {:.0} records/s",
                summary.objects + summary.already_done,
                summary.listed,
                summary.records,
                rate
            ));
        }
        (true, Ok(()))
    }
}

/// Send one object's messages through the pipeline, have the sinks write out what they
/// hold, and wait until every batch is complete. True if all were delivered.
fn feed(
    messages: Vec<crate::event::RawMessage>,
    batch_size: usize,
    tx: &std::sync::mpsc::SyncSender<PipelineInput>,
) -> bool {
    let (mut issuer, mut completions) = AckIssuer::new();
    let mut issued = 0usize;
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let batch: Vec<_> = messages.by_ref().take(batch_size).collect();
        let mut offsets = BatchOffsets::default();
        for m in &batch {
            offsets.record(&m.origin.topic, m.origin.partition, m.origin.offset);
        }
        let ack = issuer.issue(offsets);
        issued += 1;
        let batch = SourceBatch {
            messages: batch,
            ack,
            progress: None,
        };
        if tx.send(PipelineInput::Batch(batch)).is_err() {
            return false;
        }
    }
    if tx.send(PipelineInput::Flush).is_err() {
        return false;
    }
    let mut delivered = true;
    for _ in 0..issued {
        match completions.blocking_recv() {
            Some(c) => delivered &= c.delivered,
            None => return false,
        }
    }
    delivered
}

/// The S3 sink settings (endpoint, region) to read `bucket` with: a sink writing to it,
/// else any S3 sink.
fn lake_config(config: &Config, bucket: &str) -> Option<s3::S3SinkConfig> {
    let s3_sinks: Vec<&s3::S3SinkConfig> = config
        .sinks
        .values()
        .filter_map(|s| match s {
            SinkConfig::S3(c) => Some(c),
            _ => None,
        })
        .collect();
    s3_sinks
        .iter()
        .find(|c| c.bucket == bucket && c.table() == Table::Raw)
        .or_else(|| s3_sinks.iter().find(|c| c.bucket == bucket))
        .or_else(|| s3_sinks.first())
        .map(|c| (*c).clone())
}

fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// `(dt, hour)` of an `--until` value; the whole day when no hour is given.
fn parse_until(until: &str) -> Option<(String, u32)> {
    let text = until.trim().trim_end_matches('/');
    let (day, hour) = if let Some(rest) = text.strip_prefix("dt=") {
        match rest.split_once("/hour=") {
            Some((d, h)) => (d, Some(h)),
            None => (rest, None),
        }
    } else {
        match text.split_once('T') {
            Some((d, h)) => (d, Some(h)),
            None => (text, None),
        }
    };
    let valid_day = day.len() == 10
        && day.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !valid_day {
        return None;
    }
    let hour = match hour {
        Some(h) => h.parse::<u32>().ok().filter(|h| *h < 24)?,
        None => 23,
    };
    Some((day.to_owned(), hour))
}

/// The raw objects under `prefix` (or the one object it names), in key order.
async fn list(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Listed>, BackfillError> {
    if let Some(name) = ObjectName::parse(prefix).filter(|n| n.table == Table::Raw) {
        // One named object: no listing; a missing one is reported when read.
        return Ok(vec![Listed {
            key: prefix.to_owned(),
            size: 0,
            name,
        }]);
    }
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| BackfillError::List {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            message: DisplayErrorContext(e).to_string(),
        })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            match ObjectName::parse(key) {
                Some(name) if name.table == Table::Raw => out.push(Listed {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    name,
                }),
                _ => tracing::debug!(key, "not a raw lake object; skipped"),
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The object's messages, or `None` if it is not there.
async fn read_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    object: &Listed,
) -> Result<Option<Vec<crate::event::RawMessage>>, BackfillError> {
    let read_error = |message: String| BackfillError::Read {
        bucket: bucket.to_owned(),
        key: object.key.clone(),
        message,
    };
    let mut attempt = 0;
    let body = loop {
        match client
            .get_object()
            .bucket(bucket)
            .key(&object.key)
            .send()
            .await
        {
            Ok(out) => match out.body.collect().await {
                Ok(data) => break data.into_bytes(),
                Err(e) if attempt < 5 => {
                    tracing::warn!(error = %e, "reading the object failed; retrying")
                }
                Err(e) => return Err(read_error(e.to_string())),
            },
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %DisplayErrorContext(&e), "reading the object failed; retrying")
            }
            Err(e) => return Err(read_error(DisplayErrorContext(e).to_string())),
        }
        attempt += 1;
        tokio::time::sleep(crate::sink::backoff(
            attempt,
            Duration::from_millis(200),
            Duration::from_secs(10),
        ))
        .await;
    };
    let fallback = Origin {
        topic: object.name.topic.clone(),
        partition: object.name.source_partition,
        offset: object.name.first_offset,
    };
    raw::decode_object(&body, &fallback)
        .map(Some)
        .map_err(|e| read_error(e.to_string()))
}

fn read_state(path: &PathBuf) -> Result<HashSet<String>, BackfillError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(source) => Err(BackfillError::State {
            path: path.clone(),
            source,
        }),
    }
}

/// Record a completed object durably, so an interruption right after still skips it.
fn append_state(path: &PathBuf, object: &str) -> Result<(), BackfillError> {
    let state_error = |source| BackfillError::State {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(state_error)?;
    writeln!(file, "{object}").map_err(state_error)?;
    file.sync_data().map_err(state_error)
}

fn progress_bar(objects: &[Listed], visible: bool) -> ProgressBar {
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("objects 0/{}", objects.len()));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_accepts_days_hours_and_partition_paths() {
        assert_eq!(parse_until("2026-11-25"), Some(("2026-11-25".into(), 23)));
        assert_eq!(parse_until("2026-11-25T07"), Some(("2026-11-25".into(), 7)));
        assert_eq!(
            parse_until("dt=2026-11-25/hour=07/"),
            Some(("2026-11-25".into(), 7))
        );
        assert_eq!(parse_until("yesterday"), None);
        assert_eq!(parse_until("2026-11-25T24"), None);
    }
}
