//! Credentials never reach the log: not from a config that fails validation, and not from
//! a sink that keeps failing, even at the most verbose log level.

use base64::Engine;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cr3t-Pa55word-4a7f";

/// Every form the password could leak in: as is, and inside a basic-auth header.
fn leaks(text: &str) -> Vec<&'static str> {
    let header = base64::engine::general_purpose::STANDARD.encode(format!("sluice:{PASSWORD}"));
    let mut found = Vec::new();
    if text.contains(PASSWORD) {
        found.push("the password");
    }
    if text.contains(&header) {
        found.push("the basic-auth header");
    }
    found
}

/// An engine that reads each request and answers 503. Returns its port and every
/// request's head (request line and headers).
fn failing_engine() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = vec![0u8; 64 * 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
            seen.lock().unwrap().push(head);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, heads)
}

fn config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[source]
type = "stdin"

[admin]
listen = ""

[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "http://127.0.0.1:{port}"
auth = {{ type = "basic", user = "sluice", password = "${{SEARCH_PASSWORD}}" }}
{extra}

[sinks.dlq]
type = "file"
path = "{dlq}"
routes = ["dlq"]
"#,
        dlq = dir.join("dlq.ndjson").display(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_rejected_config_does_not_echo_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A misspelt key next to the credentials: validation fails and explains why.
    let path = config(dir.path(), 9, "bulk_max_actionz = 10");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "--config"])
        .arg(&path)
        .env("SEARCH_PASSWORD", PASSWORD)
        .env("SLUICE_LOG", "trace")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "validate accepted a misspelt key:\n{text}"
    );
    assert!(
        text.contains("bulk_max_actionz"),
        "the error names the key:\n{text}"
    );
    assert_eq!(leaks(&text), Vec::<&str>::new(), "{text}");
}

#[test]
fn a_failing_sink_at_trace_level_does_not_log_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (port, heads) = failing_engine();
    let path = config(dir.path(), port, "");
    let log = dir.path().join("host.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&path)
        .env("SEARCH_PASSWORD", PASSWORD)
        .env("SLUICE_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Stdin stays open: the host runs until start-up gives up on the engine (it answers
    // 503 to the engine detection) or until enough requests were made.
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"msg\":\"hello\"}\n").unwrap();
    let started = Instant::now();
    while heads.lock().unwrap().len() < 3
        && child.try_wait().unwrap().is_none()
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let text = std::fs::read_to_string(&log).unwrap_or_default();

    // The credentials were really sent while the host logged at trace level.
    let heads = heads.lock().unwrap();
    assert!(!heads.is_empty(), "the host sent no request:\n{text}");
    let header = base64::engine::general_purpose::STANDARD.encode(format!("sluice:{PASSWORD}"));
    assert!(
        heads.iter().all(|h| h.contains(&header)),
        "every request carried the basic-auth header: {heads:?}"
    );
    assert!(text.contains(" TRACE "), "the host logged at trace level");
    assert!(
        text.contains("503"),
        "the engine's answer was logged:\n{text}"
    );
    assert_eq!(leaks(&text), Vec::<&str>::new());
}
