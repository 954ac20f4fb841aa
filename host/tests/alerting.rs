//! Alerting end to end against the local stack's SNS and SQS (moto) and Kafka: each test
//! creates its own topic and an SQS queue subscribed to it, and reads what was published.

mod common;

use aws_sdk_sqs::types::QueueAttributeName;
use common::{create_topic, plugin, unique};
use serde_json::Value;
use sluice::health::{self, FailState};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn endpoint() -> String {
    std::env::var("SLUICE_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Test credentials for moto unless the environment has some.
fn aws_env() {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var(k).is_err() {
            // SAFETY: set before any thread of this test reads the environment.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

async fn shared_config() -> aws_config::SdkConfig {
    aws_env();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .load()
        .await
}

/// A topic of our own with an SQS queue subscribed to it.
struct Tap {
    topic_arn: String,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

async fn tap(fifo: bool) -> Tap {
    let config = shared_config().await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let suffix = if fifo { ".fifo" } else { "" };
    let name = unique("alerts");
    let mut topic = sns.create_topic().name(format!("{name}{suffix}"));
    let mut queue = sqs.create_queue().queue_name(format!("{name}-tap{suffix}"));
    if fifo {
        topic = topic.attributes("FifoTopic", "true");
        queue = queue.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let topic_arn = topic.send().await.unwrap().topic_arn().unwrap().to_owned();
    let queue_url = queue.send().await.unwrap().queue_url().unwrap().to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .unwrap();
    Tap {
        topic_arn,
        queue_url,
        sqs,
    }
}

/// A message as the SQS subscription received it.
#[derive(Debug, Clone)]
struct Received {
    subject: String,
    /// The `sqs` protocol's message: the structured JSON.
    json: Value,
    dedup_id: Option<String>,
    attributes: BTreeMap<String, String>,
}

impl Tap {
    /// Everything delivered, once the queue has been empty for `settle`.
    async fn drain(&self, settle: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < settle {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            let messages = got.messages();
            if messages.is_empty() {
                continue;
            }
            quiet_since = Instant::now();
            for m in messages {
                let envelope: Value = serde_json::from_str(m.body().unwrap()).unwrap();
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v["Value"].as_str().unwrap_or("").to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Received {
                    subject: envelope["Subject"].as_str().unwrap_or("").to_owned(),
                    json: serde_json::from_str(envelope["Message"].as_str().unwrap())
                        .expect("the sqs protocol gets the structured JSON"),
                    dedup_id: m
                        .attributes()
                        .and_then(|a| {
                            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId)
                        })
                        .cloned(),
                    attributes,
                });
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        out
    }
}

/// `sluice gen` lines into a file.
fn generate(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let path = dir.join("input.ndjson");
    let out = std::fs::File::create(&path).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gen", "--output", "-", "--start", "2026-11-25T10:00:00Z"])
        .args(args)
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// The real chain normalize → dedup → metrics on a stdin source; cleaned and dead letters
/// to Kafka; the SNS sink on alerts and metrics.
fn chain_config(topic_arn: &str, extra_sns: &str) -> String {
    let (cleaned, dlq) = (unique("alerting-cleaned"), unique("alerting-dlq"));
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    format!(
        r#"
[source]
type = "stdin"
batch_max_records = 2000

[admin]
listen = ""

[[plugins]]
name = "normalize"
path = "{normalize}"
[[plugins]]
name = "dedup"
path = "{dedup}"
[[plugins]]
name = "metrics"
path = "{metrics}"

[sinks.cleaned]
type = "kafka"
brokers = "{brokers}"
topic = "{cleaned}"
routes = ["cleaned"]

[sinks.dlq]
type = "kafka"
brokers = "{brokers}"
topic = "{dlq}"
routes = ["dlq"]

[sinks.alerting]
type = "sns"
routes = ["alerts", "metrics"]
topic_arn = "{topic_arn}"
endpoint = "{endpoint}"
kibana_url = "http://kibana.example:5601"
athena_table = "sluice.logs"
{extra_sns}
"#,
        normalize = plugin("normalize").display(),
        dedup = plugin("dedup").display(),
        metrics = plugin("metrics").display(),
        brokers = common::brokers(),
        endpoint = endpoint(),
    )
}

/// `sluice run` with `input` on stdin, to the end of the input.
fn run_to_end(config: &str, input: &Path, dir: &Path) -> (std::process::ExitStatus, String) {
    aws_env();
    let config_path = dir.join("sluice.toml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.join("host.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("SLUICE_LOG", "info")
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!(
                "sluice did not finish:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

fn alerts_of(messages: &[Received]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for m in messages {
        match m.json["status"].as_str() {
            Some("firing") => {
                for a in m.json["alerts"].as_array().into_iter().flatten() {
                    out.push((
                        "firing".into(),
                        a["service"].as_str().unwrap().into(),
                        a["kind"].as_str().unwrap().into(),
                    ));
                }
            }
            Some("resolved") => out.push((
                "resolved".into(),
                m.json["service"].as_str().unwrap_or_default().into(),
                m.json["kind"].as_str().unwrap_or_default().into(),
            )),
            other => panic!("unexpected status {other:?}: {m:?}"),
        }
    }
    out
}

#[test]
fn an_error_burst_alerts_once_per_service_and_kind_then_resolves_once() {
    let rt = runtime();
    let tap = rt.block_on(tap(false));
    let dir = tempfile::tempdir().unwrap();
    // 20 minutes of event time at 100 lines/s; checkout at 60 % errors for 3 minutes
    // from minute 10, far longer than one window but shorter than the cooldown.
    let input = generate(
        dir.path(),
        &[
            "--events-per-second",
            "100",
            "--count",
            "120000",
            "--burst",
            "checkout@600+180:0.6",
        ],
    );
    let (status, log) = run_to_end(&chain_config(&tap.topic_arn, ""), &input, dir.path());
    assert!(status.success(), "exit {status:?}:\n{log}");
    let messages = rt.block_on(tap.drain(Duration::from_secs(3)));
    let events = alerts_of(&messages);
    let checkout_errors: Vec<&(String, String, String)> = events
        .iter()
        .filter(|(_, s, k)| s == "checkout" && k == "error_rate_spike")
        .collect();
    assert_eq!(
        checkout_errors,
        vec![
            &(
                "firing".to_string(),
                "checkout".to_string(),
                "error_rate_spike".to_string()
            ),
            &(
                "resolved".to_string(),
                "checkout".to_string(),
                "error_rate_spike".to_string()
            ),
        ],
        "all messages: {messages:#?}\n{log}"
    );
    // No (service, kind) fired more than once in the cooldown, and each resolved once.
    let mut per_key: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for e in &events {
        *per_key.entry(e.clone()).or_default() += 1;
    }
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");

    // Other services may fire in the same window (lines the generator writes without a
    // service count as `unknown`); they share one grouped message.
    let firing = messages
        .iter()
        .find(|m| m.json["status"] == "firing" && m.subject.contains("checkout"))
        .unwrap();
    assert!(
        firing.subject.starts_with("[CRITICAL] ") || firing.subject.starts_with("[WARNING] "),
        "{}",
        firing.subject
    );
    let alert = firing.json["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["service"] == "checkout" && a["kind"] == "error_rate_spike")
        .unwrap();
    assert!(alert["observed"].as_f64().unwrap() > 0.3, "{alert}");
    assert!(alert["baseline"].as_f64().unwrap() < 0.1, "{alert}");
    assert!(
        alert["window_start"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-25T10:1")
    );
    assert!(
        alert["kibana_url"]
            .as_str()
            .unwrap()
            .starts_with("http://kibana.example:5601/app/discover")
    );
    assert!(
        alert["athena_query"]
            .as_str()
            .unwrap()
            .contains("service_name = 'checkout'")
    );
    assert_eq!(
        firing.attributes.get("status").map(String::as_str),
        Some("firing")
    );
    let resolved = messages
        .iter()
        .find(|m| m.json["status"] == "resolved" && m.json["service"] == "checkout")
        .unwrap();
    assert_eq!(resolved.subject, "[RESOLVED] checkout: error rate spike");
}

#[test]
fn a_steady_stream_sends_nothing() {
    let rt = runtime();
    let tap = rt.block_on(tap(false));
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        &["--events-per-second", "100", "--count", "90000"],
    );
    let (status, log) = run_to_end(&chain_config(&tap.topic_arn, ""), &input, dir.path());
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(log.contains("SNS alerting sink ready"), "{log}");
    let messages = rt.block_on(tap.drain(Duration::from_secs(3)));
    assert!(messages.is_empty(), "{messages:#?}");
}

#[test]
fn a_fifo_topic_gets_the_alert_id_as_deduplication_id() {
    let rt = runtime();
    let tap = rt.block_on(tap(true));
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        &[
            "--events-per-second",
            "100",
            "--count",
            "90000",
            "--burst",
            "payments@600+120:0.7",
        ],
    );
    let (status, log) = run_to_end(&chain_config(&tap.topic_arn, ""), &input, dir.path());
    assert!(status.success(), "exit {status:?}:\n{log}");
    let messages = rt.block_on(tap.drain(Duration::from_secs(3)));
    assert!(
        messages.iter().any(|m| m.json["status"] == "firing"
            && m.json["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["service"] == "payments")),
        "no payments alert: {messages:#?}\n{log}"
    );
    assert!(
        messages.iter().any(|m| m.json["status"] == "resolved"),
        "{messages:#?}"
    );
    for m in &messages {
        let dedup = m
            .dedup_id
            .as_deref()
            .expect("FIFO delivery carries the deduplication id");
        match (m.json["status"].as_str(), m.json["alerts"].as_array()) {
            (Some("firing"), Some(alerts)) if alerts.len() == 1 => {
                let id = alerts[0]["id"].as_str().unwrap();
                assert_eq!(id.len(), 16);
                assert_eq!(dedup, id);
            }
            // Several services in one window: a stable id derived from all alert ids.
            (Some("firing"), Some(_)) => assert!(dedup.starts_with("group-"), "{dedup}"),
            (Some("resolved"), _) => assert_eq!(
                dedup,
                format!("{}-resolved", m.json["last_alert"]["id"].as_str().unwrap())
            ),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[test]
fn a_missing_topic_fails_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.ndjson");
    std::fs::write(&input, "").unwrap();
    let missing = format!(
        "arn:aws:sns:us-east-1:123456789012:{}",
        unique("no-such-topic")
    );
    let (status, log) = run_to_end(&chain_config(&missing, ""), &input, dir.path());
    assert!(!status.success(), "{log}");
    assert!(log.contains("sinks.alerting.topic_arn"), "{log}");
    assert!(log.contains("does not exist"), "{log}");

    // A standard topic configured as FIFO.
    let rt = runtime();
    let tap = rt.block_on(tap(false));
    let config = chain_config(&tap.topic_arn, "").replace(
        &format!("topic_arn = \"{}\"", tap.topic_arn),
        &format!(
            "topic_arn = \"{}\"",
            tap.topic_arn.replace("arn:aws:sns", "arn:aws:sqs")
        ),
    );
    let (status, log) = run_to_end(&config, &input, dir.path());
    assert!(!status.success(), "{log}");
    assert!(log.contains("sinks.alerting.topic_arn"), "{log}");
    assert!(log.contains("not an SNS topic ARN"), "{log}");

    // Unreachable endpoint: says where it tried.
    let config = chain_config(&tap.topic_arn, "").replace(&endpoint(), "http://127.0.0.1:9");
    let (status, log) = run_to_end(&config, &input, dir.path());
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("cannot reach SNS at http://127.0.0.1:9"),
        "{log}"
    );
}

/// The sink in-process, to drive fail states through the health registry and to publish
/// more than one `PublishBatch` can carry.
mod in_process {
    use super::*;
    use sluice::sink::sns::SnsSinkConfig;
    use sluice::sink::sns::config::Severity;
    use sluice::sink::sns::message::{QueryHints, render};
    use sluice::sink::sns::policy::{DataAlert, Notification};
    use sluice::sink::sns::publish::{self, Publisher};
    use sluice::sink::{InputTraits, Router, SinkConfig, SinkStats};
    use std::sync::Arc;

    fn sns_config(topic_arn: &str) -> SnsSinkConfig {
        toml::from_str(&format!(
            "routes = [\"alerts\", \"metrics\"]\ntopic_arn = \"{topic_arn}\"\nendpoint = \"{}\"\npolicy = {{ cooldown_s = 2 }}",
            endpoint()
        ))
        .unwrap()
    }

    #[test]
    fn fail_states_raise_and_clear_one_message_each() {
        let rt = runtime();
        let tap = rt.block_on(tap(false));
        let config = sns_config(&tap.topic_arn);
        let name = unique("fail-alerts");
        let subject = unique("127.0.0.1:19092");
        let messages = rt.block_on(async {
            let config = SinkConfig::Sns(config);
            let sink = sluice::sink::start(
                &name,
                &config,
                config.routes().to_vec(),
                Router::new(),
                InputTraits::default(),
                4,
                None,
            )
            .await
            .unwrap();
            let h = health::global();
            h.raise(
                FailState::KafkaUnavailable,
                &subject,
                "no broker answered for 30 s",
            );
            // Raised again while active: no second message.
            h.raise(FailState::KafkaUnavailable, &subject, "still down");
            tokio::time::sleep(Duration::from_millis(500)).await;
            h.clear(FailState::KafkaUnavailable, &subject);
            let messages = tap.drain(Duration::from_secs(3)).await;
            sink.task.abort();
            messages
        });
        let mine: Vec<&Received> = messages
            .iter()
            .filter(|m| m.json["fail_state"]["subject"] == subject.as_str())
            .collect();
        assert_eq!(mine.len(), 2, "{messages:#?}");
        assert_eq!(mine[0].json["status"], "firing");
        assert_eq!(mine[0].json["fail_state"]["state"], "KafkaUnavailable");
        assert_eq!(
            mine[0].json["fail_state"]["context"],
            "no broker answered for 30 s"
        );
        assert_eq!(
            mine[0].subject,
            format!("[CRITICAL] Sluice KafkaUnavailable: {subject}")
        );
        assert_eq!(mine[1].json["status"], "resolved");
        assert_eq!(
            mine[1].subject,
            format!("[RESOLVED] Sluice KafkaUnavailable: {subject}")
        );
    }

    #[test]
    fn more_messages_than_one_batch_holds_all_arrive() {
        let rt = runtime();
        let tap = rt.block_on(tap(false));
        let config = sns_config(&tap.topic_arn);
        // 23 messages of ~40 KiB each: more than 10 entries and more than 256 KiB, so
        // several PublishBatch calls.
        let rendered: Vec<_> = (0..23)
            .map(|i| {
                let alert = DataAlert {
                    id: format!("{i:016x}"),
                    service: format!("svc{i:02}"),
                    kind: "error_rate_spike".into(),
                    severity: Severity::Critical,
                    observed: 0.5,
                    baseline: 0.01,
                    zscore: 20.0,
                    window_start: 1_795_600_800_000_000_000,
                    window_end: 1_795_600_860_000_000_000,
                    description: "x".repeat(6_000),
                };
                render(
                    &Notification::Firing {
                        alerts: vec![alert],
                        rate_limited_before: 0,
                    },
                    &QueryHints::default(),
                    0,
                )
            })
            .collect();
        let total: usize = rendered.iter().map(|r| r.size()).sum();
        assert!(total > publish::MAX_BATCH_BYTES, "{total}");
        let refused = rt.block_on(async {
            let client = publish::connect(&config).await.unwrap();
            let publisher = Publisher {
                client,
                sink: "batch-test".into(),
                topic_arn: tap.topic_arn.clone(),
                fifo: false,
                message_group_id: String::new(),
                stats: Arc::new(SinkStats::default()),
            };
            publisher.publish(rendered).await
        });
        assert!(
            refused.is_empty(),
            "{:?}",
            refused.iter().map(|r| &r.1).collect::<Vec<_>>()
        );
        let messages = rt.block_on(tap.drain(Duration::from_secs(3)));
        let mut services: Vec<String> = messages
            .iter()
            .map(|m| m.json["alerts"][0]["service"].as_str().unwrap().to_owned())
            .collect();
        services.sort();
        let expected: Vec<String> = (0..23).map(|i| format!("svc{i:02}")).collect();
        assert_eq!(services, expected);
    }
}
