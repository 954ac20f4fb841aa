//! `sluice backfill` against the local stack: raw objects written by the streaming path are
//! run through the chain again and reproduce its cleaned output; reruns are idempotent,
//! the state file resumes, and a missing object is reported without stopping the rest.

mod common;

use common::{Host, brokers, create_topic, plugin, produce, unique};
use serde_json::Value;
use sluice::backfill::{self, BackfillOptions};
use sluice::config::Config;
use sluice::health::{self, FailState};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

// The lake helpers of s3_lake.rs (test files cannot share modules beyond common/).

pub fn endpoint() -> String {
    std::env::var("SLUICE_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub fn bucket() -> String {
    std::env::var("SLUICE_S3_BUCKET").unwrap_or_else(|_| "sluice-lake".into())
}

/// 2026-11-25T09:30:00Z in seconds.
const BASE_SECS: i64 = 1_795_599_000;

/// `n` JSON lines, `seq` numbered, 4 s of event time apart (so they span hours), keyed
/// by service.
pub fn lines(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let service = ["checkout", "payments", "search"][i % 3];
            let secs = BASE_SECS + 4 * i as i64;
            let (y, mo, d, h, mi, s, _) = sluice::time::utc_parts(secs * 1_000_000_000);
            let line = format!(
                r#"{{"@timestamp":"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.250Z","service":"{service}","level":"{lvl}","msg":"request {i}","seq":{i},"status":{st},"latency_ms":{lat}}}"#,
                lvl = if i % 10 == 0 { "error" } else { "info" },
                st = if i % 10 == 0 { 503 } else { 200 },
                lat = 5 + i % 50,
            );
            (Some(service.to_owned()), line.into_bytes())
        })
        .collect()
}

/// A host config: Kafka source → normalize → S3 sinks for `tables`, dead letters to Kafka.
pub fn lake_config(
    source: &str,
    prefix: &str,
    tables: &[&str],
    s3_endpoint: &str,
    extra: &str,
) -> String {
    let dlq = unique("dlq");
    create_topic(&dlq, 1);
    let mut c = format!(
        r#"
[source]
type = "kafka"
brokers = "{b}"
topics = ["{source}"]
group_id = "{group}"
batch_max_records = 200
batch_max_wait_ms = 20

[pipeline]
tick_interval_ms = 200

[admin]
listen = ""

[[plugins]]
name = "normalize"
path = "{normalize}"

[sinks.dlq]
type = "kafka"
brokers = "{b}"
topic = "{dlq}"
routes = ["dlq"]
"#,
        b = brokers(),
        group = unique("sluice-lake"),
        normalize = plugin("normalize").display(),
    );
    for table in tables {
        c.push_str(&format!(
            r#"
[sinks.lake_{table}]
type = "s3"
routes = ["{table}"]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint = "{s3_endpoint}"
region = "us-east-1"
max_records = 300
idle_flush_ms = 1000
{extra}
"#,
            bucket = bucket(),
        ));
    }
    c
}

pub fn s3() -> aws_sdk_s3::Client {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .load(),
    );
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Keys under `prefix` with their sizes.
pub fn list(prefix: &str) -> Vec<(String, i64)> {
    let client = s3();
    block_on(async {
        let mut out = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket())
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.expect("list objects").contents() {
                out.push((o.key().unwrap().to_owned(), o.size().unwrap_or(0)));
            }
        }
        out
    })
}

pub fn get(key: &str) -> Vec<u8> {
    let client = s3();
    block_on(async {
        let out = client
            .get_object()
            .bucket(bucket())
            .key(key)
            .send()
            .await
            .expect("get object");
        out.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

/// Read every Parquet object under `prefix` with pyarrow (an independent reader): per
/// object its key, schema and rows.
const READ_PARQUET: &str = r#"
import sys, json, io, boto3, pyarrow.parquet as pq
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
out = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):
    for o in page.get("Contents", []):
        if not o["Key"].endswith(".parquet"):
            continue
        body = s3.get_object(Bucket=sys.argv[2], Key=o["Key"])["Body"].read()
        f = pq.ParquetFile(io.BytesIO(body))
        t = f.read()
        rows = []
        for r in t.to_pylist():
            rows.append({k: (v.isoformat() if hasattr(v, "isoformat") else (dict(v) if k == "attributes" else v)) for k, v in r.items()})
        out.append({
            "key": o["Key"],
            "schema": [[fld.name, str(fld.type)] for fld in t.schema],
            "parquet_timestamp": str(f.schema.column(0).logical_type),
            "compression": f.metadata.row_group(0).column(0).compression,
            "rows": rows,
        })
print(json.dumps(out))
"#;

#[derive(Debug)]
pub struct ParquetObject {
    pub key: String,
    pub schema: Vec<(String, String)>,
    pub timestamp_type: String,
    pub compression: String,
    pub rows: Vec<Value>,
}

pub fn read_parquet(prefix: &str) -> Vec<ParquetObject> {
    let python = std::env::var("SLUICE_PYTHON").expect("SLUICE_PYTHON (eval \"$(dev/stack env)\")");
    let out = Command::new(python)
        .args(["-c", READ_PARQUET, &endpoint(), &bucket(), prefix])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyarrow reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|o| ParquetObject {
            key: o["key"].as_str().unwrap().to_owned(),
            schema: o["schema"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap().to_owned(),
                        f[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            timestamp_type: o["parquet_timestamp"].as_str().unwrap().to_owned(),
            compression: o["compression"].as_str().unwrap().to_owned(),
            rows: o["rows"].as_array().unwrap().clone(),
        })
        .collect()
}

/// `seq` of a cleaned row (normalize keeps unknown fields under `labels.`).
pub fn seq_of(row: &Value) -> i64 {
    row["attributes"]["labels.seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("row without labels.seq: {row}"))
}

/// Poll the cleaned table until `n` distinct seqs are there (or time out); return objects.
pub fn wait_for_rows(prefix: &str, n: usize, timeout: Duration) -> Vec<ParquetObject> {
    let started = Instant::now();
    loop {
        let objects = read_parquet(&format!("{prefix}/cleaned/"));
        let rows: usize = objects.iter().map(|o| o.rows.len()).sum();
        if rows >= n || started.elapsed() > timeout {
            return objects;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

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

[sinks.lake_raw]
type = "s3"
routes = ["raw"]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"

[sinks.lake_cleaned]
type = "s3"
routes = ["cleaned"]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"
max_records = 300
"#,
        normalize = plugin("normalize").display(),
        dlq = dir.join("dlq.ndjson").display(),
        bucket = bucket(),
        endpoint = endpoint(),
    );
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
