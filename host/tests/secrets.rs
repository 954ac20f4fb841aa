//! Credentials never reach the log: not from a config that fails validation, and not from
//! a sink that keeps failing, even at the most verbose log level. Secrets read from AWS
//! Secrets Manager and SSM (the local stack's emulator) authenticate the host, and their
//! values show nowhere: log, `/metrics`, `sluice validate`, dead letters; a reload names
//! the secrets and keys that changed, not the values.

mod common;

use base64::Engine;
use std::io::{BufRead, Read, Write};
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

/// Clients of the local AWS emulator's Secrets Manager and SSM, and a runtime to drive them.
struct Aws {
    rt: tokio::runtime::Runtime,
    secrets: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Aws {
    fn new() -> Aws {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sdk = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(common::lake::endpoint())
                .region(aws_config::Region::new("us-east-1"))
                .load(),
        );
        Aws {
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
            rt,
        }
    }

    fn create_secret(&self, name: &str, value: &str) {
        let call = self.secrets.create_secret().name(name).secret_string(value);
        self.rt.block_on(call.send()).unwrap();
    }

    fn put_secret(&self, name: &str, value: &str) {
        let call = (self.secrets.put_secret_value())
            .secret_id(name)
            .secret_string(value);
        self.rt.block_on(call.send()).unwrap();
    }

    fn delete_secret(&self, name: &str) {
        let call =
            (self.secrets.delete_secret().secret_id(name)).force_delete_without_recovery(true);
        self.rt.block_on(call.send()).unwrap();
    }

    fn put_parameter(&self, name: &str, value: &str) {
        let call = (self.ssm.put_parameter().name(name).value(value))
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString);
        self.rt.block_on(call.send()).unwrap();
    }
}

/// The environment a host needs to reach the emulator as it would reach AWS.
fn aws_env(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ENDPOINT_URL", common::lake::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
}

/// A search engine that answers only requests carrying `authorization` (others get 401,
/// which stops the sink's start-up). Returns its port and how many requests it authorized.
fn guarded_engine(authorization: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let authorized = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = authorized.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (authorization, count) = (authorization.clone(), count.clone());
            std::thread::spawn(move || serve_engine(stream, &authorization, &count));
        }
    });
    (port, authorized)
}

fn serve_engine(
    stream: std::net::TcpStream,
    authorization: &str,
    authorized: &std::sync::atomic::AtomicUsize,
) {
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let header = |name: &str| {
            head.iter().find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let (status, reply) = if header("authorization").as_deref() == Some(authorization) {
            authorized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (
                "200 OK",
                r#"{"version":{"number":"8.15.0"},"tagline":"You Know, for Search"}"#,
            )
        } else {
            ("401 Unauthorized", "{}")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A GET with a bearer token: (status, body).
fn get_with_token(address: &str, path: &str, token: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn secrets_from_aws_authenticate_the_host_and_show_nowhere() {
    const SEARCH_PASSWORD: &str = "Pw-from-secrets-manager-91c2";
    const ROTATED: &str = "Pw-rotated-in-secrets-manager-5e0d";
    const ADMIN_TOKEN: &str = "admin-token-from-ssm-77ab";
    let aws = Aws::new();
    let secret = common::unique("sluice-search");
    let parameter = format!("/{}/admin-token", common::unique("sluice"));
    let json = |password: &str| format!(r#"{{"user":"sluice","password":"{password}"}}"#);
    aws.create_secret(&secret, &json(SEARCH_PASSWORD));
    aws.put_parameter(&parameter, ADMIN_TOKEN);
    let basic = |password: &str| {
        let pair = format!("sluice:{password}");
        base64::engine::general_purpose::STANDARD.encode(pair)
    };
    let (port, authorized) = guarded_engine(format!("Basic {}", basic(SEARCH_PASSWORD)));

    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.ndjson");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "stdin"
batch_max_records = 1

[admin]
listen = "127.0.0.1:0"
token = "${{ssm:{parameter}}}"

# A plugin that quotes a secret of its config in its errors: each record is dead-lettered
# with a reason holding the search password.
[[plugins]]
name = "remap"
path = "{remap}"
[plugins.config]
source = "assert!(false, \"cannot call the api with ${{secret:{secret}#password}}\")"

[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "http://127.0.0.1:{port}"
install_templates = false
retry_max_backoff_ms = 200
auth = {{ type = "basic", user = "${{secret:{secret}#user}}", password = "${{secret:{secret}#password}}" }}

[sinks.dlq]
type = "file"
path = "{dlq}"
routes = ["dlq"]
"#,
            dlq = dlq.display(),
            remap = common::plugin("remap").display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("host.log");
    let mut child = aws_env(Command::new(env!("CARGO_BIN_EXE_sluice")).args(["run", "--config"]))
        .arg(&config)
        .env("SLUICE_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"msg\":\"hello\"}\n").unwrap();
    stdin.flush().unwrap();

    // The engine authorized the sink with the password; the plugin quoted it in a dead letter.
    let read_dlq = || std::fs::read_to_string(&dlq).unwrap_or_default();
    wait_for(
        "no dead letter from the plugin",
        Duration::from_secs(60),
        || read_dlq().contains("cannot call the api"),
        read_log,
    );
    assert!(authorized.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let letters = read_dlq();
    assert!(letters.contains("<redacted>"), "{letters}");

    // /metrics asks for the token from SSM, and shows no secret.
    let admin = (read_log().split("admin endpoint listening").nth(1))
        .and_then(|rest| rest.split("address=").nth(1))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .expect("the admin address in the log");
    assert_eq!(common::admin::get(&admin, "/metrics").0, 401);
    let (status, metrics) = get_with_token(&admin, "/metrics", ADMIN_TOKEN);
    assert_eq!(status, 200, "{metrics}");

    // `sluice validate` names the secrets it read, not their values.
    let validated =
        aws_env(Command::new(env!("CARGO_BIN_EXE_sluice")).args(["validate", "--config"]))
            .arg(&config)
            .output()
            .unwrap();
    let validate = common::output_text(&validated);
    assert!(validated.status.success(), "{validate}");
    assert!(
        validate.contains(&format!("${{secret:{secret}#password}}")),
        "{validate}"
    );

    // Rotated: SIGHUP reads it again and says which secret and keys changed: the search
    // sink takes it at a restart, the plugin's config at once.
    aws.put_secret(&secret, &json(ROTATED));
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    assert!(hup.unwrap().success());
    wait_for(
        "the reload did not name the changed key",
        Duration::from_secs(30),
        || read_log().contains("apply only after a restart"),
        read_log,
    );
    let text = read_log();
    assert!(
        text.contains(&format!("secrets=secret:{secret}#password")),
        "the changed secret is named:\n{text}"
    );
    assert!(
        text.contains("keys=sinks.search.auth.password"),
        "the key needing a restart is named:\n{text}"
    );
    assert!(
        text.contains("keys=plugins[0].config.source"),
        "the key applied live is named:\n{text}"
    );

    // Gone: the reload is refused naming the line and the secret, and the host keeps running.
    aws.delete_secret(&secret);
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    assert!(hup.unwrap().success());
    wait_for(
        "the reload of a deleted secret was not refused",
        Duration::from_secs(30),
        || read_log().contains("config reload rejected"),
        read_log,
    );
    let text = read_log();
    let refused = text
        .lines()
        .find(|l| l.contains("config reload rejected"))
        .unwrap();
    assert!(
        refused.contains("line 16") && refused.contains(&format!("no secret `{secret}`")),
        "{refused}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the host stopped:\n{text}"
    );

    drop(stdin);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let text = read_log();
    assert!(text.contains(" TRACE "), "the host logged at trace level");
    for (place, shown) in [
        ("log", &text),
        ("metrics", &metrics),
        ("validate", &validate),
        ("dead letters", &read_dlq()),
    ] {
        for value in [
            SEARCH_PASSWORD,
            ROTATED,
            ADMIN_TOKEN,
            &basic(SEARCH_PASSWORD),
        ] {
            assert!(
                !shown.contains(value),
                "{place} shows a secret value:\n{shown}"
            );
        }
    }
}

#[test]
fn an_unreadable_secret_names_the_line_and_the_secret_and_what_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let missing = common::unique("sluice-missing");
    let path = dir.path().join("sluice.toml");
    let text = format!(
        "[source]\ntype = \"stdin\"\n\n[sinks.dlq]\ntype = \"file\"\npath = \"${{secret:{missing}#path}}\"\nroutes = [\"dlq\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = aws_env(Command::new(env!("CARGO_BIN_EXE_sluice")).args(["validate", "--config"]))
        .arg(&path)
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("line 6")
            && text.contains(&format!("no secret `{missing}`"))
            && text.contains("check the name (or ARN) and the region"),
        "{text}"
    );
}
