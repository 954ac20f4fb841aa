//! Shared helpers for integration tests: the real Kafka of the local stack (`dev/stack up`),
//! the built plugins (`dev/build-plugins`), and the `sluice` binary as a child process.
#![allow(dead_code)]

pub mod admin;
pub mod group;
pub mod lake;
pub mod metrics;
pub mod proxy;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn brokers() -> String {
    std::env::var("SLUICE_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    // Tests of one binary run on parallel threads and can read the same clock value: the
    // counter keeps their names apart.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A `[[plugins]]` entry for the built plugin `name` (see [`plugin`]) with the defaults a
/// test starts from: a 10 s deadline, 64 MiB, no config.
pub fn plugin_config(name: &str) -> sluice::config::PluginConfig {
    sluice::config::PluginConfig {
        name: name.rsplit('/').next().unwrap().into(),
        path: plugin(name),
        timeout_ms: 10_000,
        memory_limit_mb: 64,
        max_output_factor: 16,
        on_failure: Default::default(),
        role: None,
        instances: None,
        config: toml::Table::new(),
    }
}

/// A built plugin: `target/plugins/<name>.wasm` (or `fixtures/<name>.wasm`).
pub fn plugin(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run dev/build-plugins first",
        path.display()
    );
    path
}

pub fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]);
}

/// An admin client of the local broker, and a runtime to wait on its requests.
pub fn admin() -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime) {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (admin, rt)
}

/// Create a topic with topic-level settings (`max.message.bytes`, say).
pub fn create_topic_with(name: &str, partitions: i32, settings: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in settings {
        topic = topic.set(key, value);
    }
    let (admin, rt) = admin();
    let results = rt
        .block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("Kafka is not reachable: start it with dev/stack up");
    for r in results {
        r.expect("create topic");
    }
}

/// Produce `(key, payload)` pairs and wait for every acknowledgement.
pub fn produce(topic: &str, messages: &[(Option<String>, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for (key, payload) in messages {
        let mut record = BaseRecord::<String, Vec<u8>>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Consumed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read a topic from the beginning until `at_least` messages arrived and the topic has been
/// quiet for `settle`, or `timeout` passes.
pub fn consume(topic: &str, at_least: usize, timeout: Duration, settle: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                last = Instant::now();
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {
                if out.len() >= at_least && last.elapsed() >= settle {
                    break;
                }
            }
        }
    }
    out
}

/// A `sluice run` child process with its config in a temporary directory.
pub struct Host {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Host {
    pub fn start(config_toml: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, config_toml).unwrap();
        let log = std::fs::File::create(dir.path().join("host.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(&config)
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        Host { child, dir, config }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no chance to drain or commit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send `signal` (`STOP`, `CONT`, …) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sluice did not stop within 60 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[source]`, `[pipeline]` and `[admin]` tables every Kafka-sourced test config
/// shares: small batches and fast ticks so tests finish quickly. `admin` is the listen
/// address of the admin endpoint, "" for none. Tests run several hosts of one group on this
/// one machine, where the default static member id would fence all but one: they join as
/// dynamic members (`group_membership.rs` tests the static id).
pub fn kafka_source_toml(source: &str, group: &str, admin: &str) -> String {
    format!(
        r#"
[source]
type = "kafka"
brokers = "{b}"
topics = ["{source}"]
group_id = "{group}"
batch_max_records = 200
batch_max_wait_ms = 20
group_instance_id = ""

[pipeline]
tick_interval_ms = 200

[admin]
listen = "{admin}"
"#,
        b = brokers(),
    )
}

/// A Kafka sink `name` writing `route` to `topic`.
pub fn kafka_sink_toml(name: &str, topic: &str, route: &str) -> String {
    format!(
        "\n[sinks.{name}]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\nroutes = [\"{route}\"]\n",
        brokers()
    )
}

/// A config with a Kafka source and Kafka sinks for cleaned and dlq.
pub fn kafka_config(source: &str, cleaned: &str, dlq: &str, plugins: &[(&str, PathBuf)]) -> String {
    let mut c = kafka_source_toml(source, &unique("sluice-test"), "");
    c.push_str(&kafka_sink_toml("cleaned", cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("dlq", dlq, "dlq"));
    for (name, path) in plugins {
        c.push_str(&format!(
            "\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n",
            path.display()
        ));
    }
    c
}

/// Offsets committed by `group` on `topic`, summed over its partitions (none counts 0).
pub fn committed(group: &str, topic: &str) -> i64 {
    try_committed(group, topic).expect("committed offsets")
}

/// [`committed`], or the error: while a transaction holding offsets of the group is open,
/// the broker answers that its offsets are unstable until it ends.
pub fn try_committed(group: &str, topic: &str) -> rdkafka::error::KafkaResult<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let (consumer, tpl) = group_reader(group, topic, partitions);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((committed.elements().iter())
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// Delete a topic and wait until the broker no longer lists it.
pub fn delete_topic(name: &str) {
    let (admin, rt) = admin();
    let results = rt
        .block_on(admin.delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("Kafka is not reachable: start it with dev/stack up");
    for r in results {
        r.expect("delete topic");
    }
    let started = Instant::now();
    while admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap()
        .topics()
        .iter()
        .any(|t| t.name() == name)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} still listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client that reads what `group` committed (it joins nothing), and partitions
/// `0..partitions` of `topic` to ask about.
pub fn group_reader(
    group: &str,
    topic: &str,
    partitions: i32,
) -> (BaseConsumer, TopicPartitionList) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    (consumer, tpl)
}

/// The offsets `group` has committed on partitions `0..partitions` of `topic` (-1: none).
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let (consumer, tpl) = group_reader(group, topic, partitions);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

/// A topic's setting `key` as the broker describes it.
pub fn topic_setting(topic: &str, key: &str) -> Option<String> {
    let (admin, rt) = admin();
    let described = rt
        .block_on(admin.describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(topic)],
            &AdminOptions::new(),
        ))
        .expect("Kafka is not reachable: start it with dev/stack up");
    described
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .find(|e| e.name == key)
        .and_then(|e| e.value)
}

/// Per event id (`"e-<n>"` in the message), how many messages carry it, and how many
/// messages are copies (`"kind":"copy"`): the duplicate checks of the state and
/// exactly-once tests.
pub fn count_event_ids(
    messages: &[Consumed],
) -> (std::collections::BTreeMap<String, usize>, usize) {
    let mut ids = std::collections::BTreeMap::new();
    let mut copies = 0;
    for m in messages {
        let text = String::from_utf8_lossy(&m.payload);
        if text.contains(r#""kind":"copy""#) {
            copies += 1;
        }
        let id = text
            .split("\"e-")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    (ids, copies)
}

/// Wait until `group` has committed `n` offsets of `topic` while `host` runs.
pub fn wait_committed_while_running(
    group: &str,
    topic: &str,
    n: usize,
    host: &mut Host,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let now = try_committed(group, topic);
        if now.as_ref().is_ok_and(|c| *c >= n as i64) {
            return;
        }
        assert!(host.is_running(), "the host stopped:\n{}", host.log());
        assert!(
            started.elapsed() < within,
            "{now:?} of {n} committed\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sluice plugin test ARGS`, run to its end.
pub fn plugin_test(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "test"])
        .args(args)
        .output()
        .unwrap()
}

/// A finished command's standard output and error, as text.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Send each line of `lines` (newline-separated) to `topic`, round robin over `partitions`:
/// every service comes through every partition, as from a producer that does not key.
pub fn send_round_robin(topic: &str, lines: &[u8], partitions: &[i32]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let lines = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    for (i, line) in lines.enumerate() {
        let record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partitions[i % partitions.len()])
            .payload(line);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}
