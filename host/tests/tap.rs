//! `sluice tap` against a running host: a sample of the records at a route, the dead
//! letters and a plugin's input, filtered and limited, and the admin token it may ask for.

mod common;

use common::admin::{admin_address, get, sample};
use common::{Host, create_topic, kafka_config, plugin, produce, unique};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Produces lines of two services, and a line that looks like JSON and is not, until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(topic: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, topic) = (stop.clone(), topic.to_owned());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !flag.load(Ordering::SeqCst) {
                let mut lines: Vec<(Option<String>, Vec<u8>)> = (i..i + 20)
                    .map(|n| {
                        let service = if n % 2 == 0 { "api" } else { "billing" };
                        let line = format!(
                            r#"{{"seq":{n},"service":"{service}","level":"info","msg":"line {n}"}}"#
                        );
                        (Some(service.to_owned()), line.into_bytes())
                    })
                    .collect();
                lines.push((None, b"{not json".to_vec()));
                produce(&topic, &lines);
                i += 20;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.take().unwrap().join();
    }
}

/// `sluice tap` with `args`, killed after 30 s (a tap that never ends fails the test).
fn tap(admin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["tap", "--admin", admin])
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice tap");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sluice tap {args:?} did not end within 30 s; it wrote:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "sluice tap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn start(extra_admin: &str) -> (Host, String, Traffic) {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 2);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("normalize", plugin("normalize"))],
    )
    .replace(
        "listen = \"\"",
        &format!("listen = \"127.0.0.1:0\"\n{extra_admin}"),
    );
    let host = Host::start(&config);
    let admin = admin_address(&host);
    let traffic = Traffic::start(&source);
    (host, admin, traffic)
}

#[test]
fn tap_streams_filtered_records_from_a_route_the_dead_letters_and_a_plugins_input() {
    let (mut host, admin, traffic) = start("");

    let cleaned = lines(&tap(
        &admin,
        &[
            "route:cleaned",
            "--filter",
            "service.name=api",
            "--limit",
            "5",
        ],
    ));
    assert_eq!(cleaned.len(), 5, "{}", host.log());
    assert!(
        cleaned.iter().all(|r| r["service.name"] == "api"),
        "{cleaned:?}"
    );

    let dead = tap(&admin, &["dlq", "--limit", "2"]);
    let summary = String::from_utf8_lossy(&dead.stderr);
    assert!(summary.contains("tap: 2 records from dlq in "), "{summary}");
    let dead = lines(&dead);
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d["payload"] == "{not json"), "{dead:?}");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("decode"),
        "{dead:?}"
    );

    let input = lines(&tap(
        &admin,
        &[
            "plugin:normalize:in",
            "--filter",
            "service!=api && service~bill",
            "--limit",
            "3",
        ],
    ));
    assert_eq!(input.len(), 3);
    // normalize's input: the decoded line, before it names the service `service.name`.
    assert!(input.iter().all(|r| r["service"] == "billing"), "{input:?}");

    // A rate of 2 a second: 6 records take at least two seconds of refills.
    let started = Instant::now();
    let slow = lines(&tap(
        &admin,
        &["route:cleaned", "--rate", "2", "--limit", "6"],
    ));
    assert_eq!(slow.len(), 6);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Each tap detached when its stream ended.
    let (_, metrics) = get(&admin, "/metrics");
    assert_eq!(
        sample(&metrics, "sluice_tap_attached"),
        Some(0.0),
        "{metrics}"
    );
    let bad = tap(&admin, &["plugin:normalize"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown tap point"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    drop(traffic);
    assert!(host.terminate().success(), "{}", host.log());
}

#[test]
fn a_tap_stopped_by_a_signal_ends_with_its_summary() {
    let (mut host, admin, traffic) = start("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "tap",
            "--admin",
            &admin,
            "route:cleaned",
            "--limit",
            "1000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice tap");
    // Some records first, so the summary has something to count.
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains("records from route:cleaned in ") && stderr.contains("(stopped)"),
        "{stderr}"
    );
    drop(traffic);
    assert!(host.terminate().success(), "{}", host.log());
}

#[test]
fn with_an_admin_token_tap_and_metrics_ask_for_it_and_health_does_not() {
    let (mut host, admin, traffic) = start("token = \"s3cret\"");
    let refused = tap(&admin, &["route:cleaned", "--limit", "1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(get(&admin, "/metrics").0, 401);
    assert_eq!(get(&admin, "/healthz").0, 200);
    let allowed = lines(&tap(
        &admin,
        &["route:cleaned", "--limit", "1", "--token", "s3cret"],
    ));
    assert_eq!(allowed.len(), 1);
    drop(traffic);
    assert!(host.terminate().success(), "{}", host.log());
}
