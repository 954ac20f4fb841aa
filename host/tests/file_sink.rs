//! The file sink against the real filesystem.

use std::process::{Command, Stdio};

/// Run `sluice run` on `lines` (stdin source, batches of two) writing to a file, under
/// strace; returns how many fdatasync calls it made and the file's lines.
fn run_traced(fsync: bool, lines: &[&str]) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"stdin\"\nbatch_max_records = 2\n[admin]\nlisten = \"\"\n\
             [sinks.out]\ntype = \"file\"\npath = \"{}\"\nroutes = [\"cleaned\", \"dlq\"]\nfsync = {fsync}\n",
            out.display()
        ),
    )
    .unwrap();
    let trace = dir.path().join("trace");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is needed for this test (Debian package strace)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(lines.join("\n").as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success());
    let syncs = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("fdatasync(") || l.contains("fsync("))
        .count();
    let written = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (syncs, written)
}

#[test]
fn fsync_makes_every_batch_durable_before_it_is_acknowledged() {
    let lines = [
        "{\"msg\":\"a\"}",
        "{\"msg\":\"b\"}",
        "{\"msg\":\"c\"}",
        "plain d",
        "e",
        "f",
    ];
    let (syncs, written) = run_traced(true, &lines);
    assert_eq!(written.len(), 6);
    assert!(syncs >= 3, "3 batches written, {syncs} fdatasync calls");
    let (syncs, written) = run_traced(false, &lines);
    assert_eq!(written.len(), 6);
    assert_eq!(syncs, 0, "fsync = false must not sync");
}
