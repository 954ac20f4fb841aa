//! The stdin source on a quiet input: what `tail -f app.log | sluice run` relies on.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sluice run` reading stdin in batches of up to 1000 lines or 100 ms, into a file.
fn start(dir: &Path) -> (Child, std::path::PathBuf) {
    let out = dir.join("out.ndjson");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\ntype = \"stdin\"\nbatch_max_records = 1000\nbatch_max_wait_ms = 100\n\
             [admin]\nlisten = \"\"\n\
             [sinks.out]\ntype = \"file\"\npath = \"{}\"\nroutes = [\"cleaned\", \"dlq\"]\n",
            out.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, out)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_partial_batch_goes_out_after_batch_max_wait_ms_while_the_input_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, out) = start(dir.path());
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"msg\":\"a\"}\n{\"msg\":\"b\"}\nplain c\n")
        .unwrap();
    stdin.flush().unwrap();

    // Three lines of a batch of 1000: they must reach the file while stdin stays open.
    let until = Instant::now() + Duration::from_secs(20);
    while lines_in(&out) < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let written = lines_in(&out);
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    if status.is_none() {
        child.kill().unwrap();
    }
    assert_eq!(
        written, 3,
        "3 lines written, the input open and quiet: they must not wait for more"
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn sigterm_stops_the_host_while_the_input_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, out) = start(dir.path());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"msg\":\"a\"}\n").unwrap();
    stdin.flush().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while lines_in(&out) < 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    if status.is_none() {
        child.kill().unwrap();
    }
    drop(stdin);
    assert!(
        status.is_some(),
        "the host did not stop within 30 s of SIGTERM with its input open"
    );
    assert_eq!(lines_in(&out), 1);
}
