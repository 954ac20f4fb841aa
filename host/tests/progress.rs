//! Long commands report progress on stderr while they run (a line every
//! `SLUICE_PROGRESS_INTERVAL_MS` when stderr is not a terminal, as here) and end with a
//! one-line summary: counts, time, errors. `topics ensure`, `athena apply` and `tap` are
//! checked in their own tests.

mod common;

use common::lake::bucket;
use common::{brokers, create_topic, plugin, unique};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `sluice ARGS` with `stdin`, progress due at every chance.
fn sluice(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_PROGRESS_INTERVAL_MS", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of stderr, after checking it starts with `start`.
fn summary(out: &Output, start: &str) -> String {
    let err = stderr(out);
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with(start), "no `{start}` summary last:\n{err}");
    last
}

#[test]
fn plugin_test_reports_progress_and_sums_up_what_it_emitted() {
    let mut input = String::new();
    for n in 0..2500 {
        input.push_str(&format!("{{\"msg\":\"line {n}\",\"service\":\"api\"}}\n"));
    }
    input.push_str("{not json\n");
    let normalize = plugin("normalize");
    let out = sluice(
        &["plugin", "test", normalize.to_str().unwrap()],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("plugin test: 1000 lines, 1000 records out"),
        "{err}"
    );
    let last = summary(
        &out,
        "plugin test: 2501 lines, 2500 records out, 1 dead letters, 0 plugin failures in ",
    );
    assert!(last.ends_with(" s"), "{last}");
}

#[test]
fn gen_reports_progress_and_sums_up_what_it_sent() {
    let topic = unique("gen-progress");
    create_topic(&topic, 1);
    let out = sluice(
        &[
            "gen",
            "--brokers",
            &brokers(),
            "--topic",
            &topic,
            "--count",
            "3000",
            "--log-level",
            "warn",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("gen: 2000 of 3000 lines sent to {topic}")),
        "{}",
        stderr(&out)
    );
    summary(&out, &format!("sent 3000 lines to {topic} in "));
}

#[test]
fn backfill_sums_up_the_objects_it_read_and_names_those_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backfill.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"stdin\"\n\n[admin]\nlisten = \"\"\n\n[sinks.dlq]\ntype = \"file\"\npath = \"{}\"\nroutes = [\"dlq\"]\n{}",
            dir.path().join("dlq.ndjson").display(),
            common::lake::lake_sink_toml("cleaned", &unique("progress"), &common::lake::endpoint(), "")
        ),
    )
    .unwrap();
    let from = format!(
        "s3://{}/{}/raw/dt=2026-11-25/hour=07/raw-logs+0+00000000000000000000.ndjson.gz",
        bucket(),
        unique("absent")
    );
    let out = sluice(
        &[
            "backfill",
            "--config",
            config.to_str().unwrap(),
            "--from",
            &from,
            "--state",
            dir.path().join("state").to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success(), "a missing object fails the run");
    let err = stderr(&out);
    assert!(
        err.contains("backfill: 0/1 objects read (0 missing), 0 records"),
        "{err}"
    );
    assert!(
        err.contains("backfill: 0 objects (0 already done, 1 missing), 0 records, 0 bytes in "),
        "{err}"
    );
    assert!(err.contains("object(s) missing (S3MissingFile)"), "{err}");
}
