//! `sluice topics ensure` against the real broker: missing topics are created (the state
//! topic compacted, as wide as the source), present ones checked, drift named.

mod common;

use common::{brokers, create_topic, create_topic_with, kafka_sink_toml, plugin, unique};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use std::process::Command;

/// Run `sluice topics ensure` on `config` with `args`: (success, stdout, stderr).
fn ensure(config: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topics", "ensure", "--config"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line `sluice topics ensure` printed for `topic`.
fn line<'a>(stdout: &'a str, topic: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{topic}\t")))
        .unwrap_or_else(|| panic!("no line for {topic} in:\n{stdout}"))
}

/// Whether the cluster lists `topic` (asking for it by name would auto-create it).
fn exists(topic: &str) -> bool {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    sluice::topics::partitions_of(&admin, topic)
        .unwrap()
        .is_some()
}

/// (partitions, cleanup.policy) of `topic`.
fn described(topic: &str) -> (usize, String) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let partitions = sluice::topics::partitions_of(&admin, topic)
        .unwrap()
        .unwrap_or(0);
    let policy = common::topic_setting(topic, "cleanup.policy").unwrap_or_default();
    (partitions, policy)
}

struct Topics {
    source: String,
    cleaned: String,
    dlq: String,
    group: String,
}

impl Topics {
    fn new() -> Topics {
        Topics {
            source: unique("topics-raw"),
            cleaned: unique("topics-cleaned"),
            dlq: unique("topics-dlq"),
            group: unique("topics-g"),
        }
    }

    /// Kafka source → dedup (which keeps state) → Kafka sinks for cleaned and dlq.
    fn config(&self) -> String {
        common::kafka_source_toml(&self.source, &self.group, "")
            + &format!(
                "\n[[plugins]]\nname = \"dedup\"\npath = \"{}\"\n",
                plugin("dedup").display()
            )
            + &kafka_sink_toml("cleaned", &self.cleaned, "cleaned")
            + &kafka_sink_toml("dlq", &self.dlq, "dlq")
    }

    fn state(&self) -> String {
        format!("{}.sluice-state", self.group)
    }
}

#[test]
fn missing_topics_are_created_and_the_state_topic_is_compacted_as_wide_as_the_source() {
    let t = Topics::new();
    create_topic(&t.source, 3);
    create_topic(&t.dlq, 1);
    let (ok, stdout, stderr) = ensure(&t.config(), &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        line(&stdout, &t.source).contains("ok (3 partitions)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("topics: 4 checked, 2 created, 0 missing or drifted in "),
        "{stderr}"
    );
    assert!(line(&stdout, &t.cleaned).contains("created"), "{stdout}");
    assert!(line(&stdout, &t.dlq).contains("ok"), "{stdout}");
    assert!(
        line(&stdout, &t.state()).contains("created (3 partitions)"),
        "{stdout}"
    );
    assert_eq!(described(&t.state()), (3, "compact".to_owned()));

    // A second run finds everything in place.
    let (ok, stdout, stderr) = ensure(&t.config(), &["--check"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(!stdout.contains("created"), "{stdout}");
}

#[test]
fn check_creates_nothing_and_drift_is_named() {
    let t = Topics::new();
    create_topic(&t.source, 2);
    // A dead-letter topic the broker would refuse the sink's largest messages on, and a
    // state topic retention would empty.
    create_topic_with(&t.dlq, 1, &[("max.message.bytes", "1000")]);
    create_topic_with(&t.state(), 2, &[("cleanup.policy", "delete")]);
    let (ok, stdout, stderr) = ensure(&t.config(), &["--check"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("do not fit the config"), "{stderr}");
    assert!(
        stderr.contains("topics: 4 checked, 0 created, 3 missing or drifted in "),
        "{stderr}"
    );
    assert!(line(&stdout, &t.cleaned).contains("MISSING"), "{stdout}");
    let dlq = line(&stdout, &t.dlq);
    assert!(
        dlq.contains("DRIFT") && dlq.contains("max.message.bytes is 1000"),
        "{dlq}"
    );
    let state = line(&stdout, &t.state());
    assert!(
        state.contains("DRIFT") && state.contains("compact"),
        "{state}"
    );
    assert!(!exists(&t.cleaned), "--check created {}", t.cleaned);
}
