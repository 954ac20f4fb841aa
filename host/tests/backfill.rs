//! `sluice backfill` against the local stack: raw objects written by the streaming path are
//! run through the chain again and reproduce its cleaned output; reruns are idempotent,
//! the state file resumes, and a missing object is reported without stopping the rest.

mod common;

use common::lake::*;
use common::{Host, create_topic, plugin, produce, unique};
use serde_json::Value;
use sluice::backfill::{self, BackfillOptions};
use sluice::config::Config;
use sluice::health::{self, FailState};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// A backfill config: the same chain, the lake sinks under `prefix`.
fn backfill_config(prefix: &str, dir: &Path) -> Config {
    let text = format!(
        r#"
[source]
type = "stdin"

[admin]
listen = ""

[[plugins]]
name = "normalize"
path = "{normalize}"

[sinks.dlq]
type = "file"
path = "{dlq}"
routes = ["dlq"]
"#,
        normalize = plugin("normalize").display(),
        dlq = dir.join("dlq.ndjson").display(),
    ) + &lake_sink_toml("raw", prefix, &endpoint(), "")
        + &lake_sink_toml("cleaned", prefix, &endpoint(), "max_records = 300");
    Config::from_toml(&text, &dir.join("backfill.toml")).expect("backfill config")
}

fn run(config: &Config, from: &str, state: &Path) -> backfill::BackfillSummary {
    block_on(backfill::run(
        config.clone(),
        BackfillOptions {
            from: from.to_owned(),
            until: None,
            state: state.to_owned(),
            progress: false,
        },
    ))
    .expect("backfill")
}

/// A cleaned row without what legitimately differs between runs (when the host saw it).
fn comparable(row: &Value) -> String {
    let mut row = row.clone();
    row.as_object_mut().unwrap().remove("observed_timestamp");
    row.to_string()
}

fn rows(prefix: &str) -> Vec<String> {
    let mut rows: Vec<String> = read_parquet(&format!("{prefix}/cleaned/"))
        .iter()
        .flat_map(|o| o.rows.iter().map(comparable))
        .collect();
    rows.sort();
    rows
}

fn keys(prefix: &str) -> BTreeSet<String> {
    list(prefix).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn backfill_of_raw_reproduces_the_streaming_cleaned_output_idempotently() {
    // The streaming path writes raw and cleaned.
    let source = unique("backfill-src");
    let streamed = unique("streamed");
    create_topic(&source, 2);
    let n = 1_500;
    produce(&source, &lines(n));
    let mut host = Host::start(&lake_config(
        &source,
        &streamed,
        &["raw", "cleaned"],
        &endpoint(),
        "",
    ));
    wait_for_rows(&streamed, n, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    assert!(host.terminate().success(), "{}", host.log());
    let expected = rows(&streamed);
    assert_eq!(expected.len(), n);

    // Backfill those raw objects into another prefix.
    let dir = tempfile::tempdir().unwrap();
    let refilled = unique("refilled");
    let config = backfill_config(&refilled, dir.path());
    let from = format!("s3://{}/{streamed}/raw/", bucket());
    let state = dir.path().join("state");
    let first = run(&config, &from, &state);
    assert!(first.listed > 0);
    assert_eq!(first.objects, first.listed);
    assert_eq!(first.records, n as u64);
    assert!(first.missing.is_empty());
    assert_eq!(rows(&refilled), expected, "backfill differs from streaming");
    assert!(
        keys(&format!("{refilled}/raw/")).is_empty(),
        "the raw route is the input; it is not written again"
    );
    let written = keys(&format!("{refilled}/cleaned/"));

    // Resume: everything is in the state file, nothing to do.
    let resumed = run(&config, &from, &state);
    assert_eq!(resumed.objects, 0);
    assert_eq!(resumed.already_done, first.listed);

    // A second full run (no state) rewrites the same objects: no duplicates.
    let again = run(&config, &from, &dir.path().join("state-2"));
    assert_eq!(again.objects, first.listed);
    assert_eq!(keys(&format!("{refilled}/cleaned/")), written);
    assert_eq!(rows(&refilled), expected);
}

#[test]
fn a_missing_object_is_reported_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("missing");
    let config = backfill_config(&prefix, dir.path());
    let before = health::global()
        .counts()
        .get(&FailState::S3MissingFile)
        .copied()
        .unwrap_or(0);
    let from = format!(
        "s3://{}/{prefix}/raw/dt=2026-11-25/hour=07/raw-logs+0+00000000000000000000.ndjson.gz",
        bucket()
    );
    let summary = run(&config, &from, &dir.path().join("state"));
    assert_eq!(summary.missing, vec![from.clone()]);
    assert_eq!(summary.objects, 0);
    assert_eq!(
        health::global().counts()[&FailState::S3MissingFile],
        before + 1
    );
    assert!(
        health::global()
            .conditions()
            .iter()
            .any(|c| c.state == FailState::S3MissingFile && c.subject == from)
    );
}
