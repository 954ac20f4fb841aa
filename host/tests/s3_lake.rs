//! The S3 lake sink end to end against the local stack: Kafka → normalize → S3 (moto) with
//! the real AWS SDK, Parquet read back by pyarrow, Athena partition registration, SIGKILL
//! and an S3 outage.

mod common;

use common::lake::*;
use common::{Host, create_topic, produce, unique};
use serde_json::Value;
use sluice::lake::{ObjectName, Table, raw};
use sluice::sink::s3::athena;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Athena type of a pyarrow type, to compare the files with the DDL.
fn athena_type(arrow: &str) -> &str {
    match arrow {
        "timestamp[us, tz=UTC]" => "timestamp",
        "string" | "large_string" => "string",
        "int32" => "int",
        "int64" => "bigint",
        "double" => "double",
        // pyarrow adds the field name: `map<string, string ('attributes')>`.
        map if map.starts_with("map<string, string") => "map<string,string>",
        other => other,
    }
}

#[test]
fn objects_land_under_partition_keys_and_parquet_matches_the_ddl() {
    let source = unique("lake-src");
    let prefix = unique("lake");
    create_topic(&source, 2);
    let n = 2_000;
    let messages = lines(n);
    produce(&source, &messages);
    let config = lake_config(
        &source,
        &prefix,
        &["raw", "cleaned"],
        &endpoint(),
        "[sinks.lake_{T}.athena]\npartition_projection = false\ndatabase = \"sluice_test\"\noutput_location = \"s3://sluice-lake/athena-results/\"",
    );
    // Each sink's athena table under its own name.
    let config = config
        .replacen("lake_{T}", "lake_raw", 1)
        .replacen("lake_{T}", "lake_cleaned", 1);
    let mut host = Host::start(&config);
    let objects = wait_for_rows(&prefix, n, Duration::from_secs(120));
    // Raw objects are written in the same flushes; give the idle flush a moment.
    std::thread::sleep(Duration::from_secs(2));
    assert!(host.is_running(), "host died:\n{}", host.log());
    assert!(host.terminate().success(), "{}", host.log());

    // Cleaned: exact row count, every seq once, declared schema, right partition per row.
    let rows: Vec<&Value> = objects.iter().flat_map(|o| o.rows.iter()).collect();
    assert_eq!(rows.len(), n, "rows in the lake:\n{}", host.log());
    let mut seqs: Vec<i64> = rows.iter().map(|r| seq_of(r)).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n);
    let ddl_columns = athena::table_columns(Table::Cleaned);
    for o in &objects {
        let name = ObjectName::parse(&o.key).unwrap_or_else(|| panic!("bad key {}", o.key));
        assert!(
            o.key.starts_with(&format!("{prefix}/cleaned/dt=")),
            "{}",
            o.key
        );
        assert_eq!(name.topic, source);
        let file_columns: Vec<(&str, &str)> = o
            .schema
            .iter()
            .map(|(n, t)| (n.as_str(), athena_type(t)))
            .collect();
        assert_eq!(file_columns, ddl_columns, "schema of {}", o.key);
        assert_eq!(o.compression, "ZSTD");
        assert!(
            o.timestamp_type.contains("timeUnit=microseconds"),
            "{}",
            o.timestamp_type
        );
        let min_offset = o
            .rows
            .iter()
            .map(|r| r["source_offset"].as_i64().unwrap())
            .min();
        assert_eq!(
            min_offset,
            Some(name.first_offset),
            "key names the first offset"
        );
        for r in &o.rows {
            // 2026-11-25T09:30:04.250000+00:00 → dt and hour of the key.
            let ts = r["timestamp"].as_str().unwrap();
            assert_eq!(&ts[..10], name.partition.dt(), "{}", o.key);
            assert_eq!(&ts[11..13], name.partition.hour(), "{}", o.key);
            assert_eq!(
                r["source_partition"].as_i64(),
                Some(name.source_partition as i64)
            );
        }
    }
    let first = rows.iter().find(|r| seq_of(r) == 30).unwrap();
    assert_eq!(first["service_name"], "checkout");
    assert_eq!(first["message"], "request 30");
    assert_eq!(first["log_level"], "error");
    assert_eq!(first["http_response_status_code"], 503);
    assert_eq!(first["timestamp"], "2026-11-25T09:32:00.250000+00:00");
    let hours: std::collections::BTreeSet<String> = objects
        .iter()
        .map(|o| ObjectName::parse(&o.key).unwrap().partition.path())
        .collect();
    assert_eq!(
        hours.into_iter().collect::<Vec<_>>(),
        vec![
            "dt=2026-11-25/hour=09",
            "dt=2026-11-25/hour=10",
            "dt=2026-11-25/hour=11"
        ]
    );

    // Raw: NDJSON gzip with the original bytes, every message once.
    let raw_keys: Vec<String> = list(&format!("{prefix}/raw/"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!raw_keys.is_empty());
    let mut payloads = HashMap::new();
    for key in &raw_keys {
        let name = ObjectName::parse(key).unwrap();
        assert_eq!(name.table, Table::Raw);
        assert!(key.ends_with(".ndjson.gz"));
        let origin = sluice::Origin {
            topic: name.topic.clone(),
            partition: name.source_partition,
            offset: name.first_offset,
        };
        for m in raw::decode_object(&get(key), &origin).unwrap() {
            let before = payloads.insert((m.origin.partition, m.origin.offset), m.payload);
            assert!(before.is_none(), "message twice in raw");
        }
    }
    assert_eq!(payloads.len(), n);
    let mut originals: Vec<&Vec<u8>> = messages.iter().map(|(_, p)| p).collect();
    let mut stored: Vec<&Vec<u8>> = payloads.values().collect();
    originals.sort();
    stored.sort();
    assert_eq!(originals, stored, "raw holds the original bytes");

    // Athena: one ALTER TABLE … ADD IF NOT EXISTS PARTITION per table and partition, sent
    // through the API and succeeded.
    let statements = athena_statements();
    // Cleaned is partitioned by event time, raw by Kafka message time (now): every
    // partition an object was written to is registered.
    let written: std::collections::BTreeSet<(&str, String, String)> = raw_keys
        .iter()
        .chain(objects.iter().map(|o| &o.key))
        .map(|k| {
            let name = ObjectName::parse(k).unwrap();
            (
                name.table.name(),
                name.partition.dt(),
                name.partition.hour(),
            )
        })
        .collect();
    assert!(written.len() >= 4, "{written:?}");
    for (table, dt, hour) in &written {
        let location = format!("s3://{}/{prefix}/{table}/dt={dt}/hour={hour}/", bucket());
        let registered: Vec<&(String, String)> = statements
            .iter()
            .filter(|(q, _)| q.contains(&location))
            .collect();
        assert_eq!(
            registered.len(),
            1,
            "registrations of {location}: {registered:#?}"
        );
        let (query, state) = registered[0];
        assert_eq!(
            query,
            &format!(
                "ALTER TABLE `{table}` ADD IF NOT EXISTS PARTITION (dt='{dt}', hour='{hour}') LOCATION '{location}'"
            )
        );
        assert_eq!(state, "SUCCEEDED");
    }
}

/// Every Athena query moto has seen: (statement, state).
fn athena_statements() -> Vec<(String, String)> {
    block_on(async {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let client = aws_sdk_athena::Client::new(&sdk);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .list_query_executions()
                .set_next_token(token)
                .send()
                .await
                .expect("list Athena queries");
            for id in page.query_execution_ids() {
                let q = client
                    .get_query_execution()
                    .query_execution_id(id)
                    .send()
                    .await
                    .unwrap();
                let q = q.query_execution().unwrap();
                out.push((
                    q.query().unwrap_or_default().to_owned(),
                    q.status()
                        .and_then(|s| s.state())
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                ));
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out
    })
}

#[test]
fn sigkill_mid_stream_and_restart_leaves_every_record_in_the_lake_exactly_once() {
    let source = unique("lake-kill");
    let prefix = unique("lake-kill");
    create_topic(&source, 3);
    let n = 20_000;
    produce(&source, &lines(n));
    let config = lake_config(&source, &prefix, &["cleaned"], &endpoint(), "");
    let mut first = Host::start(&config);
    // Kill it once part of the stream is in the lake.
    let started = Instant::now();
    loop {
        let written: usize = list(&format!("{prefix}/cleaned/")).len();
        if written >= 10 || started.elapsed() > Duration::from_secs(90) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill();
    let before = read_parquet(&format!("{prefix}/cleaned/"));
    let rows_before: usize = before.iter().map(|o| o.rows.len()).sum();
    assert!(
        rows_before > 0 && rows_before < n,
        "killed at {rows_before} rows"
    );

    let mut second = Host::start(&config);
    let objects = wait_for_rows(&prefix, n, Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(3));
    assert!(second.terminate().success(), "{}", second.log());
    let objects = if objects.iter().map(|o| o.rows.len()).sum::<usize>() > n {
        objects
    } else {
        read_parquet(&format!("{prefix}/cleaned/"))
    };
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    for o in &objects {
        for r in &o.rows {
            *count.entry(seq_of(r)).or_default() += 1;
        }
    }
    let missing: Vec<i64> = (0..n as i64)
        .filter(|s| !count.contains_key(s))
        .take(10)
        .collect();
    let duplicated: Vec<(i64, usize)> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, c)| (*s, *c))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {missing:?} (killed at {rows_before} rows)",
        n - count.len()
    );
    assert!(
        duplicated.is_empty(),
        "duplicates after the restart, e.g. {duplicated:?} (killed at {rows_before} rows)\n{}",
        second.log()
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn s3_outage_pauses_the_consumer_bounds_memory_and_loses_nothing() {
    let source = unique("lake-outage");
    let prefix = unique("lake-outage");
    create_topic(&source, 2);
    let proxy = S3Proxy::start(&endpoint());
    let config = lake_config(&source, &prefix, &["cleaned"], &proxy.url(), "");
    let mut host = Host::start(&config);
    let first = 2_000;
    let all = lines(60_000);
    produce(&source, &all[..first]);
    let objects = wait_for_rows(&prefix, first, Duration::from_secs(90));
    assert_eq!(
        objects.iter().map(|o| o.rows.len()).sum::<usize>(),
        first,
        "{}",
        host.log()
    );

    // Outage: S3 refuses connections while 58,000 more records arrive.
    proxy.set_up(false);
    let rss_before = rss_kib(host.child.id());
    produce(&source, &all[first..]);
    let mut rss_peak = rss_before;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        rss_peak = rss_peak.max(rss_kib(host.child.id()));
    }
    assert!(
        host.is_running(),
        "host died during the outage:\n{}",
        host.log()
    );
    let during: usize = read_parquet(&format!("{prefix}/cleaned/"))
        .iter()
        .map(|o| o.rows.len())
        .sum();
    assert_eq!(during, first, "nothing can be written while S3 is down");
    eprintln!("RSS during the outage: {rss_before} KiB before, {rss_peak} KiB at most");
    // Bounded: the consumer paused; the host did not take in 58,000 records (≈ 20 MB of
    // records decoded) on top of what it had.
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_peak} KiB during the outage"
    );
    assert!(
        host.log().contains("retrying"),
        "the sink should be retrying:\n{}",
        host.log()
    );

    proxy.set_up(true);
    let objects = wait_for_rows(&prefix, all.len(), Duration::from_secs(240));
    assert!(host.terminate().success(), "{}", host.log());
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for o in &objects {
        for r in &o.rows {
            *seen.entry(seq_of(r)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), all.len(), "records lost across the outage");
    assert!(
        seen.values().all(|c| *c == 1),
        "duplicates across the outage"
    );
}

#[test]
fn a_missing_bucket_is_a_clear_start_up_error() {
    let source = unique("lake-nobucket");
    create_topic(&source, 1);
    let config = lake_config(&source, "x", &["cleaned"], &endpoint(), "").replace(
        &format!("bucket = \"{}\"", bucket()),
        "bucket = \"no-such-bucket-here\"",
    );
    let mut host = Host::start(&config);
    let started = Instant::now();
    while host.is_running() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!host.is_running(), "host should stop at start-up");
    let status = host.child.wait().unwrap();
    assert!(!status.success());
    let log = host.log();
    assert!(
        log.contains("sinks.lake_cleaned.bucket") && log.contains("does not exist"),
        "{log}"
    );
}

/// A plugin that turns each input into several records, with objects of 300 records: cuts
/// fall between outputs of one input. The marker names input offsets, so a crash after such
/// a cut must not skip the input's outputs that were not written yet.
#[test]
fn a_cut_inside_one_inputs_outputs_loses_none_of_them_across_a_sigkill() {
    let source = unique("lake-fanout");
    let prefix = unique("lake-fanout");
    create_topic(&source, 2);
    let (n, copies) = (3_000usize, 7usize);
    produce(&source, &lines(n));
    let mut config = lake_config(&source, &prefix, &["cleaned"], &endpoint(), "");
    config.push_str(&format!(
        "\n[[plugins]]\nname = \"fanout\"\npath = \"{}\"\n[plugins.config]\nfan_out = {copies}\n",
        common::plugin("fixtures/hostile").display()
    ));
    let mut first = Host::start(&config);
    // Kill once a first segment is complete (its marker written): the next one, which
    // starts inside an input's outputs, is not written yet.
    let started = Instant::now();
    while list(&format!("{prefix}/_sluice/")).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();

    let mut second = Host::start(&config);
    wait_for_rows(&prefix, n * copies, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    assert!(second.terminate().success(), "{}", second.log());
    let mut count: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for o in &read_parquet(&format!("{prefix}/cleaned/")) {
        assert!(
            o.rows.len() <= 300 + copies,
            "{} has {} rows",
            o.key,
            o.rows.len()
        );
        for r in &o.rows {
            let copy = r["attributes"]["labels.copy"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("row without labels.copy: {r}"));
            *count.entry((seq_of(r), copy)).or_default() += 1;
        }
    }
    let expected = (0..n as i64).flat_map(|s| (0..copies as i64).map(move |c| (s, c)));
    if let Some(report) = exactly_once_report(&count, expected) {
        panic!("{report}\n{}", second.log());
    }
}

/// A replay of records the lake already holds (a new group, or a restart after the lake
/// was written but before the commit) skips them by the partition's offset marker: one
/// read of the marker, not one per record.
#[test]
fn a_replay_of_what_the_lake_holds_reads_the_marker_once_not_per_record() {
    let source = unique("lake-replay");
    let prefix = unique("lake-replay");
    create_topic(&source, 1);
    let n = 1_500;
    produce(&source, &lines(n));
    let dlq = unique("lake-replay-dlq");
    create_topic(&dlq, 1);
    let config = |group: &str, s3_endpoint: &str| {
        let mut c = common::kafka_source_toml(&source, group, "");
        c.push_str(&common::kafka_sink_toml("dlq", &dlq, "dlq"));
        c.push_str(&format!(
            "\n[[plugins]]\nname = \"normalize\"\npath = \"{}\"\n",
            common::plugin("normalize").display()
        ));
        c.push_str(&lake_sink_toml(
            "cleaned",
            &prefix,
            s3_endpoint,
            "max_records = 300\nidle_flush_ms = 1000\n",
        ));
        c
    };
    let mut first = Host::start(&config(&unique("lake-replay-a"), &endpoint()));
    let rows: usize = wait_for_rows(&prefix, n, Duration::from_secs(90))
        .iter()
        .map(|o| o.rows.len())
        .sum();
    assert_eq!(rows, n, "{}", first.log());
    assert!(first.terminate().success(), "{}", first.log());

    // Another group reads the whole topic again, through a proxy that counts requests.
    let proxy = S3Proxy::start(&endpoint());
    let group = unique("lake-replay-b");
    let mut second = Host::start(&config(&group, &proxy.url()));
    let started = Instant::now();
    while common::committed(&group, &source) < n as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the replay was not committed\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(second.terminate().success(), "{}", second.log());
    let marker_reads = proxy
        .requests()
        .iter()
        .filter(|(_, line)| line.starts_with("GET ") && line.contains("_sluice/offsets/"))
        .count();
    assert!(
        (1..=3).contains(&marker_reads),
        "{marker_reads} reads of the offset marker to skip {n} records the lake holds"
    );
    let rows: usize = read_parquet(&format!("{prefix}/cleaned/"))
        .iter()
        .map(|o| o.rows.len())
        .sum();
    assert_eq!(rows, n, "the replay wrote rows again");
}

#[test]
fn athena_apply_runs_the_ddl_of_every_table_through_athena() {
    let prefix = unique("lake-apply");
    let database = unique("apply").replace('-', "_");
    let source = unique("lake-apply-raw");
    let mut config = common::kafka_source_toml(&source, &unique("g"), "")
        + &common::kafka_sink_toml("dlq", &unique("lake-apply-dlq"), "dlq");
    for table in ["raw", "cleaned", "metrics"] {
        config.push_str(&lake_sink_toml(
            table,
            &prefix,
            &endpoint(),
            &format!(
                "[sinks.lake_{table}.athena]\ndatabase = \"{database}\"\noutput_location = \"s3://{}/athena-results/\"",
                bucket()
            ),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["athena", "apply", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What `athena ddl` prints, one statement per query, each run to success.
    let ddl = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["athena", "ddl", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let expected: Vec<String> = String::from_utf8_lossy(&ddl.stdout)
        .split(";\n")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(expected.len(), 4, "a database and three tables");
    let ran = athena_statements();
    for statement in &expected {
        assert!(
            ran.iter()
                .any(|(q, state)| q.trim() == statement && state == "SUCCEEDED"),
            "not run through Athena: {statement}\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("athena: 4 statements for 3 table(s) succeeded in "),
        "{stderr}"
    );
}
