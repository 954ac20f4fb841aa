//! Watching a consumer group from outside while hosts join, leave and stall: its committed
//! offsets over time, the topic's ends, and what the hosts' logs say.

use super::lake::lake_sink_toml;
use super::{Host, brokers, create_topic, kafka_sink_toml, kafka_source_toml, plugin, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The last committed offset seen per partition, and every move backwards.
pub type Watched = (BTreeMap<i32, i64>, Vec<String>);

/// Samples the group's committed offsets from a thread and remembers any that moved back.
pub struct OffsetWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Watched>>,
}

impl OffsetWatch {
    pub fn start(topic: &str, group: &str, partitions: i32) -> OffsetWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (consumer, tpl) = super::group_reader(group, topic, partitions);
        let thread = std::thread::spawn(move || {
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            let mut backwards = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                if let Ok(committed) =
                    consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))
                {
                    for e in committed.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let before = last.insert(e.partition(), o);
                            if before.is_some_and(|b| o < b) {
                                backwards.push(format!(
                                    "partition {}: {} then {o}",
                                    e.partition(),
                                    before.unwrap()
                                ));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (last, backwards)
        });
        OffsetWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop; the last offsets seen and every backwards move.
    pub fn stop(mut self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Per partition `0..partitions`, the topic's high watermark.
pub fn high_watermarks(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, high)
        })
        .collect()
}

/// How many partitions a host's log says it was assigned, in all.
pub fn assigned(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("partitions assigned count=").nth(1))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .sum()
}

/// The `<seq>` of "request <seq>" in a payload.
pub fn request_number(payload: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = &text[text.find("request ")? + "request ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub fn wait_for_log(host: &Host, text: &str, timeout: Duration) {
    let started = Instant::now();
    while !host.log().contains(text) {
        assert!(
            started.elapsed() < timeout,
            "no `{text}` in the log within {timeout:?}:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One consumer group of hosts over a source topic: normalize; raw and cleaned to the lake
/// (its own prefix) at the default rotation and idle settings; cleaned and dead letters to
/// Kafka.
pub struct LakeGroup {
    pub source: String,
    pub group: String,
    pub cleaned: String,
    pub prefix: String,
}

impl LakeGroup {
    pub fn new(name: &str, partitions: i32) -> LakeGroup {
        let setup = LakeGroup {
            source: unique(&format!("{name}-src")),
            group: unique(name),
            cleaned: unique(&format!("{name}-cleaned")),
            prefix: unique(name),
        };
        create_topic(&setup.source, partitions);
        create_topic(&setup.cleaned, partitions);
        setup
    }

    /// A host's config, writing the lake through `s3_endpoint`; `options` are librdkafka
    /// consumer properties (`key = "value"` lines), or empty.
    pub fn config(&self, s3_endpoint: &str, options: &str) -> String {
        let dlq = unique(&format!("{}-dlq", self.group));
        create_topic(&dlq, 1);
        let mut c = kafka_source_toml(&self.source, &self.group, "");
        if !options.is_empty() {
            // `[source.options]` must follow the source's own keys, before `[pipeline]`.
            c = c.replacen(
                "\n[pipeline]",
                &format!("\n[source.options]\n{options}\n\n[pipeline]"),
                1,
            );
        }
        c.push_str(&format!(
            "\n[[plugins]]\nname = \"normalize\"\npath = \"{}\"\n",
            plugin("normalize").display()
        ));
        c.push_str(&kafka_sink_toml("cleaned", &self.cleaned, "cleaned"));
        c.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
        for table in ["raw", "cleaned"] {
            c.push_str(&lake_sink_toml(table, &self.prefix, s3_endpoint, ""));
        }
        c
    }
}
