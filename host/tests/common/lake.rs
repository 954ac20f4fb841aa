//! Helpers for tests of the S3 lake against the local stack's AWS emulator: the lake sink
//! config, listing and reading objects, and reading Parquet back with pyarrow.

use super::{create_topic, kafka_sink_toml, kafka_source_toml, plugin, unique};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    let mut c = kafka_source_toml(source, &unique("sluice-lake"), "");
    c.push_str(&format!(
        "\n[[plugins]]\nname = \"normalize\"\npath = \"{}\"\n",
        plugin("normalize").display()
    ));
    c.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    for table in tables {
        c.push_str(&lake_sink_toml(
            table,
            prefix,
            s3_endpoint,
            &format!("max_records = 300\nidle_flush_ms = 1000\n{extra}"),
        ));
    }
    c
}

/// An S3 sink `lake_<table>` taking the route `table` into the test bucket under `prefix`,
/// with `settings` (more keys of the sink) appended.
pub fn lake_sink_toml(table: &str, prefix: &str, s3_endpoint: &str, settings: &str) -> String {
    format!(
        r#"
[sinks.lake_{table}]
type = "s3"
routes = ["{table}"]
bucket = "{bucket}"
prefix = "{prefix}"
endpoint = "{s3_endpoint}"
region = "us-east-1"
{settings}
"#,
        bucket = bucket(),
    )
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

/// A TCP proxy to the S3 endpoint that can refuse service: stopping it is an S3 outage
/// for the host alone, not for other tests sharing the endpoint.
pub struct S3Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    requests: Requests,
}

/// The requests a proxy passed on, in order: when (UTC, as the host's log writes it) and
/// the request line (`PUT /bucket/key`).
type Requests = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// Now in UTC with microseconds, like the host's log lines: `2026-11-25T09:30:00.123456Z`.
/// Such strings compare in time order.
pub fn utc_now() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let (y, mo, d, h, mi, s, nanos) = sluice::time::utc_parts(ns);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
        nanos / 1000
    )
}

impl S3Proxy {
    pub fn start(target: &str) -> S3Proxy {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let requests = Requests::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let flag = flag.clone();
                pipe(client, server, flag, seen.clone());
            }
        });
        S3Proxy { port, up, requests }
    }

    /// Every request passed on so far: when, and `METHOD /path` (query strings cut off).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Copy both ways until either side closes or the proxy goes down.
/// What goes from the client to the server is scanned for request lines.
fn pipe(a: TcpStream, b: TcpStream, up: Arc<AtomicBool>, requests: Requests) {
    let client_side = (
        a.try_clone().unwrap(),
        b.try_clone().unwrap(),
        Some(requests),
    );
    for (mut from, mut to, record) in [client_side, (b, a, None)] {
        let up = up.clone();
        std::thread::spawn(move || {
            from.set_read_timeout(Some(Duration::from_millis(200))).ok();
            let mut buf = [0u8; 16 * 1024];
            let mut scan = RequestScan::default();
            loop {
                if !up.load(Ordering::SeqCst) {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    return;
                }
                match from.read(&mut buf) {
                    Ok(0) => {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    Ok(k) => {
                        if let Some(requests) = &record {
                            scan.feed(&buf[..k], requests);
                        }
                        if to.write_all(&buf[..k]).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// Finds HTTP request lines in a byte stream read in chunks of any size: the tail of the
/// previous chunk is kept, so a line cut across two reads is still found (once).
#[derive(Default)]
struct RequestScan {
    tail: Vec<u8>,
}

impl RequestScan {
    const KEEP: usize = 2048;

    fn feed(&mut self, chunk: &[u8], requests: &Requests) {
        const END: &[u8] = b" HTTP/1.1\r\n";
        let old = self.tail.len();
        self.tail.extend_from_slice(chunk);
        let t = &self.tail;
        let find = |what: &[u8], from: usize| {
            t[from..]
                .windows(what.len())
                .position(|w| w == what)
                .map(|i| i + from)
        };
        for method in [&b"PUT /"[..], b"GET /", b"POST /", b"DELETE /", b"HEAD /"] {
            let mut from = 0;
            while let Some(at) = find(method, from) {
                from = at + 1;
                let Some(end) = find(END, at) else { break };
                // At a line's start, and not complete before this chunk (found then).
                if (at > 0 && t[at - 1] != b'\n') || end + END.len() <= old {
                    continue;
                }
                let line = String::from_utf8_lossy(&t[at..end]);
                let line = line.split('?').next().unwrap_or(&line).to_owned();
                requests.lock().unwrap().push((utc_now(), line));
            }
        }
        let cut = self.tail.len().saturating_sub(Self::KEEP);
        self.tail.drain(..cut);
    }
}

/// How many times each `seq` is in the cleaned table under `prefix`.
pub fn cleaned_seqs(prefix: &str) -> std::collections::BTreeMap<i64, usize> {
    let mut count = std::collections::BTreeMap::new();
    for o in read_parquet(&format!("{prefix}/cleaned/")) {
        for r in &o.rows {
            *count.entry(seq_of(r)).or_default() += 1;
        }
    }
    count
}

/// How many times each (source partition, offset) is in the raw table under `prefix`.
pub fn raw_offsets(prefix: &str) -> std::collections::BTreeMap<(i32, i64), usize> {
    let mut count = std::collections::BTreeMap::new();
    for (key, _) in list(&format!("{prefix}/raw/")) {
        let name = sluice::lake::ObjectName::parse(&key).unwrap_or_else(|| panic!("bad key {key}"));
        let origin = sluice::Origin {
            topic: name.topic.clone(),
            partition: name.source_partition,
            offset: name.first_offset,
        };
        for m in sluice::lake::raw::decode_object(&get(&key), &origin).unwrap() {
            *count
                .entry((m.origin.partition, m.origin.offset))
                .or_default() += 1;
        }
    }
    count
}

/// Describe what is missing from or doubled in `count` (keys expected: `expected`).
pub fn exactly_once_report<K: Ord + Copy + std::fmt::Debug>(
    count: &std::collections::BTreeMap<K, usize>,
    expected: impl IntoIterator<Item = K>,
) -> Option<String> {
    let expected: Vec<K> = expected.into_iter().collect();
    let missing: Vec<K> = expected
        .iter()
        .filter(|k| !count.contains_key(k))
        .copied()
        .collect();
    let doubled: Vec<(K, usize)> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, c)| (*k, *c))
        .collect();
    (!missing.is_empty() || !doubled.is_empty() || count.len() != expected.len()).then(|| {
        format!(
            "{} expected, {} distinct in the lake; {} missing (e.g. {:?}); {} more than once (e.g. {:?})",
            expected.len(),
            count.len(),
            missing.len(),
            &missing[..missing.len().min(10)],
            doubled.len(),
            &doubled[..doubled.len().min(10)],
        )
    })
}
