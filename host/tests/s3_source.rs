//! The S3 source against the local AWS emulator, with real bucket notifications: a bucket
//! and a queue per test, a `QueueConfigurations` notification on the bucket for `in/`,
//! objects put, and the `sluice` binary reading them.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use common::lake::{S3Proxy, block_on, endpoint};
use common::{Host, unique};
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};

/// A bucket whose `in/` objects are announced on a queue of its own.
struct Bucket {
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    name: String,
    queue_url: String,
}

fn sdk() -> aws_config::SdkConfig {
    block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .load(),
    )
}

impl Bucket {
    /// A new bucket and queue; `redrive`: with a dead-letter queue taking a message after
    /// `maxReceiveCount` receives (its URL is returned).
    fn new(redrive: Option<u32>) -> (Bucket, Option<String>) {
        let sdk = sdk();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let name = unique("s3src");
        let queue_arn = |url: &str| {
            block_on(
                sqs.get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send(),
            )
            .unwrap()
            .attributes()
            .unwrap()[&QueueAttributeName::QueueArn]
                .clone()
        };
        let dlq_url = redrive.map(|_| {
            block_on(sqs.create_queue().queue_name(format!("{name}-dlq")).send())
                .unwrap()
                .queue_url()
                .unwrap()
                .to_owned()
        });
        let mut create = sqs.create_queue().queue_name(&name);
        if let (Some(max), Some(dlq)) = (redrive, &dlq_url) {
            let policy = serde_json::json!({
                "deadLetterTargetArn": queue_arn(dlq),
                "maxReceiveCount": max.to_string(),
            });
            create = create.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let queue_url = block_on(create.send())
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        block_on(s3.create_bucket().bucket(&name).send()).unwrap();
        let notification = aws_sdk_s3::types::NotificationConfiguration::builder()
            .queue_configurations(
                aws_sdk_s3::types::QueueConfiguration::builder()
                    .queue_arn(queue_arn(&queue_url))
                    .events(aws_sdk_s3::types::Event::from("s3:ObjectCreated:*"))
                    .filter(
                        aws_sdk_s3::types::NotificationConfigurationFilter::builder()
                            .key(
                                aws_sdk_s3::types::S3KeyFilter::builder()
                                    .filter_rules(
                                        aws_sdk_s3::types::FilterRule::builder()
                                            .name(aws_sdk_s3::types::FilterRuleName::Prefix)
                                            .value("in/")
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .build();
        block_on(
            s3.put_bucket_notification_configuration()
                .bucket(&name)
                .notification_configuration(notification)
                .send(),
        )
        .unwrap();
        (
            Bucket {
                s3,
                sqs,
                name,
                queue_url,
            },
            dlq_url,
        )
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        block_on(
            self.s3
                .put_object()
                .bucket(&self.name)
                .key(key)
                .body(ByteStream::from(body))
                .send(),
        )
        .unwrap();
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .ok()?;
            Some(out.body.collect().await.unwrap().into_bytes().to_vec())
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = block_on(
            self.s3
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// Messages in `queue`: (visible, in flight).
    fn counts(&self, queue: &str) -> (u64, u64) {
        let out = block_on(
            self.sqs
                .get_queue_attributes()
                .queue_url(queue)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send(),
        )
        .unwrap();
        let attributes = out.attributes().unwrap();
        let number = |name: QueueAttributeName| -> u64 {
            attributes.get(&name).map_or(0, |v| v.parse().unwrap_or(0))
        };
        (
            number(QueueAttributeName::ApproximateNumberOfMessages),
            number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    fn send(&self, body: &str) {
        block_on(
            self.sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send(),
        )
        .unwrap();
    }

    /// The bodies of the messages now in the queue, left visible again.
    fn peek(&self) -> Vec<String> {
        let out = block_on(
            self.sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send(),
        )
        .unwrap();
        out.messages()
            .iter()
            .filter_map(|m| m.body().map(str::to_owned))
            .collect()
    }

    /// The `[source]` of a host reading this bucket's queue.
    fn source_toml(&self, extra: &str) -> String {
        format!(
            r#"
[source]
type = "s3"
queue_url = "{queue}"
endpoint = "{endpoint}"
region = "us-east-1"
batch_max_records = 50
batch_max_wait_ms = 20
{extra}

[pipeline]
tick_interval_ms = 100

[admin]
listen = ""
"#,
            queue = self.queue_url,
            endpoint = endpoint(),
        )
    }
}

/// A file sink `out` taking cleaned records and dead letters.
fn file_sink(host_dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let path = host_dir.join("out.ndjson");
    let toml = format!(
        "\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\nroutes = [\"cleaned\", \"dlq\"]\ninclude_route = true\n",
        path.display()
    );
    (toml, path)
}

/// An S3 sink writing the raw table under `lake/` of `bucket` through `endpoint`.
fn raw_lake_sink(bucket: &str, endpoint: &str) -> String {
    format!(
        r#"
[sinks.lake]
type = "s3"
routes = ["raw"]
bucket = "{bucket}"
prefix = "lake"
endpoint = "{endpoint}"
region = "us-east-1"
idle_flush_ms = 600000
"#
    )
}

fn output(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_until(what: &str, host: &Host, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ndjson(first: usize, n: usize) -> Vec<u8> {
    (first..first + n)
        .map(|i| format!("{{\"msg\":\"line {i}\",\"seq\":{i}}}\n"))
        .collect::<String>()
        .into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    sluice::lake::raw::gzip(bytes)
}

/// The raw lake's envelopes under `lake/raw/`.
fn raw_envelopes(bucket: &Bucket) -> Vec<Value> {
    let mut out = Vec::new();
    for key in bucket.keys("lake/raw/") {
        let body = bucket.get(&key).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

#[test]
fn plain_gzip_and_raw_envelope_objects_are_read_with_their_origins() {
    let (bucket, _) = Bucket::new(None);
    let dir = tempfile::tempdir().unwrap();
    let (sink, out) = file_sink(dir.path());
    let mut config = bucket.source_toml("max_message_bytes = 2000");
    config.push_str(&sink);
    config.push_str(&raw_lake_sink(&bucket.name, &endpoint()));
    let host = Host::start(&config);

    // Plain NDJSON with an empty line, a line too long and one that is not JSON.
    let mut plain = ndjson(0, 3);
    plain.extend_from_slice(b"\n");
    plain.extend(std::iter::repeat_n(b'x', 5000));
    plain.extend_from_slice(b"\n{not json\n");
    bucket.put("in/plain file.ndjson", plain);
    bucket.put("in/2026/zipped.gz", gzip(&ndjson(100, 120)));
    // The lake's raw envelope: each line keeps the origin it carries.
    let mut envelopes = Vec::new();
    for i in 0..5i64 {
        sluice::lake::raw::encode_line(
            &sluice::event::RawMessage {
                origin: sluice::Origin {
                    topic: "app-logs".into(),
                    partition: 2,
                    offset: 1000 + i,
                },
                key: Some(b"checkout".to_vec()),
                payload: format!("{{\"msg\":\"kept {i}\",\"seq\":{}}}", 500 + i).into_bytes(),
                timestamp: 1_764_064_800_000_000_000,
            },
            &mut envelopes,
        );
    }
    bucket.put("in/raw.gz", gzip(&envelopes));

    // Every message deleted (the test event too): every sink acknowledged every record.
    // The raw lake sink's idle flush is 10 minutes: it wrote each object out at its end.
    wait_until("queue emptied", &host, Duration::from_secs(30), || {
        bucket.counts(&bucket.queue_url) == (0, 0)
    });
    let lines = output(&out);
    let cleaned: Vec<&Value> = lines
        .iter()
        .filter(|l| l["sluice.route"] == "cleaned")
        .collect();
    let dlq: Vec<&Value> = lines
        .iter()
        .filter(|l| l["sluice.route"] == "dlq")
        .collect();
    assert_eq!(cleaned.len(), 3 + 120 + 5, "{lines:#?}");
    assert_eq!(dlq.len(), 2, "the long line and the invalid JSON: {dlq:#?}");
    let topic = "s3.".to_owned() + &bucket.name + ".in%2Fplain%20file.ndjson";
    assert_eq!(dlq[0]["origin.topic"], topic.as_str());
    assert_eq!(dlq[0]["origin.offset"], 4, "offsets are line numbers");
    assert!(
        dlq[0]["reason"]
            .as_str()
            .unwrap()
            .contains("max_message_bytes")
    );
    assert_eq!(dlq[1]["origin.offset"], 5);
    for key in ["in/plain file.ndjson", "in/2026/zipped.gz", "in/raw.gz"] {
        let marker = format!("_sluice/done/{}/{key}", bucket.name);
        assert!(bucket.get(&marker).is_some(), "{marker} is written");
    }

    let raw = raw_envelopes(&bucket);
    assert_eq!(raw.len(), 3 + 2 + 120 + 5);
    let kept: Vec<&Value> = raw
        .iter()
        .filter(|e| e["source_topic"] == "app-logs")
        .collect();
    assert_eq!(kept.len(), 5);
    assert!(
        kept.iter()
            .all(|e| e["source_partition"] == 2 && e["key"] == "checkout")
    );
    let mut offsets: Vec<i64> = kept
        .iter()
        .map(|e| e["source_offset"].as_i64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, [1000, 1001, 1002, 1003, 1004]);
    let zipped = "s3.".to_owned() + &bucket.name + ".in%2F2026%2Fzipped.gz";
    let mut zipped_offsets: Vec<i64> = raw
        .iter()
        .filter(|e| e["source_topic"] == zipped.as_str())
        .map(|e| e["source_offset"].as_i64().unwrap())
        .collect();
    zipped_offsets.sort();
    assert_eq!(zipped_offsets, (0..120).collect::<Vec<i64>>());
    assert!(host.log().contains("S3 test event"), "{}", host.log());
}

#[test]
fn a_notification_delivered_twice_writes_the_object_once() {
    let (bucket, _) = Bucket::new(None);
    bucket.put("in/once.ndjson", ndjson(0, 40));
    // S3 may deliver a notification more than once: the same message body twice.
    let bodies = bucket.peek();
    let created: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("ObjectCreated"))
        .collect();
    assert_eq!(created.len(), 1, "{bodies:?}");
    bucket.send(created[0]);

    let dir = tempfile::tempdir().unwrap();
    let (sink, out) = file_sink(dir.path());
    let mut config = bucket.source_toml("");
    config.push_str(&sink);
    let host = Host::start(&config);
    wait_until("queue emptied", &host, Duration::from_secs(30), || {
        bucket.counts(&bucket.queue_url) == (0, 0)
    });
    assert_eq!(output(&out).len(), 40);

    // Redelivered after it was processed: deleted unread.
    bucket.send(created[0]);
    wait_until(
        "queue emptied again",
        &host,
        Duration::from_secs(30),
        || bucket.counts(&bucket.queue_url) == (0, 0),
    );
    assert_eq!(output(&out).len(), 40, "the object is written once");
    assert!(host.log().contains("already processed"), "{}", host.log());
}

#[test]
fn a_message_is_deleted_only_after_every_sink_acknowledged() {
    let (bucket, _) = Bucket::new(None);
    let proxy = S3Proxy::start(&endpoint());
    let dir = tempfile::tempdir().unwrap();
    let (sink, out) = file_sink(dir.path());
    // One message at a time, kept invisible by the heartbeat (every 1 s).
    let mut config = bucket.source_toml("visibility_timeout_s = 3\nmax_messages_in_flight = 1");
    config.push_str(&sink);
    config.push_str(&raw_lake_sink(&bucket.name, &proxy.url()));
    let host = Host::start(&config);
    wait_until("test event deleted", &host, Duration::from_secs(30), || {
        bucket.counts(&bucket.queue_url) == (0, 0)
    });

    // The lake is down: the file sink gets the records, the lake cannot take them.
    proxy.set_up(false);
    bucket.put("in/held.ndjson", ndjson(0, 30));
    wait_until("file sink wrote", &host, Duration::from_secs(30), || {
        output(&out).len() == 30
    });
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        bucket.counts(&bucket.queue_url),
        (0, 1),
        "the message is neither deleted nor visible again while the lake cannot write"
    );
    let marker = format!("_sluice/done/{}/in/held.ndjson", bucket.name);
    assert!(bucket.get(&marker).is_none(), "not marked done");

    proxy.set_up(true);
    wait_until("queue emptied", &host, Duration::from_secs(60), || {
        bucket.counts(&bucket.queue_url) == (0, 0)
    });
    assert!(bucket.get(&marker).is_some());
    assert_eq!(raw_envelopes(&bucket).len(), 30);
}

#[test]
fn missing_objects_and_foreign_messages_are_left_for_the_dead_letter_queue() {
    let (bucket, dlq) = Bucket::new(Some(2));
    let dlq = dlq.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sink, out) = file_sink(dir.path());
    let mut config = bucket.source_toml("visibility_timeout_s = 3");
    config.push_str(&sink);
    let host = Host::start(&config);

    // A notification in S3's exact format for an object that is not there.
    let missing = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-05T21:29:52.027Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
               "bucket": {"name": bucket.name, "arn": format!("arn:aws:s3:::{}", bucket.name)},
               "object": {"key": "in/gone.ndjson", "size": 8, "eTag": "abc", "sequencer": "01"}}}]});
    bucket.send(&missing.to_string());
    bucket.send("not a notification");
    bucket.put("in/fine.ndjson", ndjson(0, 5));

    wait_until(
        "both in the dead-letter queue",
        &host,
        Duration::from_secs(45),
        || bucket.counts(&dlq).0 == 2,
    );
    assert_eq!(bucket.counts(&bucket.queue_url), (0, 0));
    assert_eq!(output(&out).len(), 5, "the other object is processed");
    let log = host.log();
    assert!(
        log.contains("S3MissingFile") && log.contains("in/gone.ndjson"),
        "{log}"
    );
    assert!(log.contains("not an S3 event notification"), "{log}");
}

#[test]
fn a_queue_that_cannot_be_read_stops_the_host_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = file_sink(dir.path());
    let (bucket, _) = Bucket::new(None);
    let mut config = Bucket {
        queue_url: format!("{}/123456789012/{}", endpoint(), unique("no-such-queue")),
        ..bucket
    }
    .source_toml("");
    config.push_str(&sink);
    let mut host = Host::start(&config);
    let started = Instant::now();
    while host.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!host.child.wait().unwrap().success());
    assert!(host.log().contains("source.queue_url"), "{}", host.log());
}
