//! The search sink against the real Elasticsearch (or OpenSearch) of the local stack
//! (`dev/stack up`): Kafka → passthrough plugin → `_bulk` → queries Kibana Discover sends,
//! idempotent replays, mapping conflicts dead-lettered, an engine outage survived; and the
//! Kibana saved objects and their import request.

mod common;

use common::{
    Host, brokers, committed, consume, create_topic, kafka_sink_toml, kafka_source_toml, plugin,
    unique, workspace_root,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn search_url() -> String {
    std::env::var("SLUICE_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// One request to the engine: (status, JSON body).
fn es(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", search_url());
        let mut request = client.request(method.parse().unwrap(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .expect("the search engine is not reachable: start it with dev/stack up");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

/// Hits of `query` on `index`, after a refresh.
fn count(index: &str, query: Value) -> u64 {
    // A data stream's first backing index answers 503 (`no_shard_available_action_exception`)
    // until its shard has started, which can take a few seconds on a busy machine.
    let started = Instant::now();
    loop {
        es("POST", &format!("/{index}/_refresh"), None);
        let (status, body) = es(
            "POST",
            &format!("/{index}/_search"),
            Some(json!({"query": query, "size": 0, "track_total_hits": true})),
        );
        match status {
            404 => return 0,
            503 if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => {
                assert_eq!(status, 200, "{body}");
                return body["hits"]["total"]["value"].as_u64().unwrap();
            }
        }
    }
}

fn total(index: &str) -> u64 {
    count(index, json!({"match_all": {}}))
}

/// Distinct `labels.seq` values in `index`, counted exactly (composite aggregation pages).
fn distinct_seqs(index: &str) -> u64 {
    let mut distinct = 0;
    let mut after: Option<Value> = None;
    loop {
        let mut composite =
            json!({"size": 10000, "sources": [{"seq": {"terms": {"field": "labels.seq"}}}]});
        if let Some(after) = after.take() {
            composite["after"] = after;
        }
        let (status, body) = es(
            "POST",
            &format!("/{index}/_search"),
            Some(json!({"size": 0, "aggs": {"seqs": {"composite": composite}}})),
        );
        assert_eq!(status, 200, "{body}");
        let buckets = body["aggregations"]["seqs"]["buckets"].as_array().unwrap();
        if buckets.is_empty() {
            return distinct;
        }
        distinct += buckets.len() as u64;
        after = Some(body["aggregations"]["seqs"]["after_key"].clone());
    }
}

/// Wait until `index` holds `n` documents (or `timeout`); returns the last count.
fn wait_for_count(index: &str, n: u64, timeout: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let got = total(index);
        if got >= n || started.elapsed() > timeout {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A namespace no other run uses (data stream parts may not contain `-`).
fn namespace() -> String {
    unique("t").replace('-', "")
}

/// Event time of the test records: the start of the hour a day ago, so range queries are
/// exact, the broker's retention (by message time, 7 days) keeps the records, and even the
/// 60,000th record (one second apart) is not in the future — Kafka 4 rejects messages more
/// than an hour ahead (`log.message.timestamp.after.max.ms`).
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (sluice::time::now_ns() / 1_000_000 / 3_600_000 - 24) * 3_600_000)
}

fn rfc3339(ms: i64) -> String {
    sluice::time::rfc3339_millis(ms * 1_000_000)
}

/// Produce JSON lines with explicit Kafka timestamps (the records' event time).
fn produce_at(topic: &str, lines: &[(i64, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (ts, line) in lines {
        let mut record = BaseRecord::<(), String>::to(topic)
            .payload(line)
            .timestamp(*ts);
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
    // The threaded producer drops refused messages silently: count what the topic holds.
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let held: i64 = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum();
    assert_eq!(
        held,
        lines.len() as i64,
        "the broker refused some test records"
    );
}

/// Record `i`: one of four services, every tenth an error, one second apart.
fn log_line(i: usize) -> (i64, String) {
    let service = ["checkout", "payments", "search", "auth"][i % 4];
    let (level, message) = if i.is_multiple_of(10) {
        ("error", format!("payment failed for order {i}"))
    } else {
        ("info", format!("request {i} done"))
    };
    let line = json!({
        "message": message,
        "log.level": level,
        "service.name": service,
        "host.name": format!("web-{}", i % 3),
        "trace.id": format!("trace{i:06}"),
        "http": {"response": {"status_code": 200}},
        "customer": {"tier": "gold"},
        "seq": i,
    });
    (base_ms() + i as i64 * 1000, line.to_string())
}

/// A host config: Kafka source, a passthrough plugin, the search sink for `cleaned`, and a
/// Kafka topic for dead letters.
fn config(source: &str, dlq: &str, group: &str, search_url: &str, namespace: &str) -> String {
    config_with_admin(source, dlq, group, search_url, namespace, "")
}

/// [`config`] with the admin endpoint (`/metrics`) on `admin`.
fn config_with_admin(
    source: &str,
    dlq: &str,
    group: &str,
    search_url: &str,
    namespace: &str,
    admin: &str,
) -> String {
    kafka_source_toml(source, group, admin)
        + &format!(
            r#"
[[plugins]]
name = "passthrough"
path = "{plugin}"

[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "{search_url}"
index = {{ mode = "data_stream", dataset = "sluice", namespace = "{namespace}" }}
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 1000
compression = true
"#,
            plugin = plugin("fixtures/hostile").display(),
        )
        + &kafka_sink_toml("dlq", dlq, "dlq")
}

/// A free loopback address for a host's admin endpoint.
fn admin_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A sample from the host's `/metrics`: the first line starting with `series`.
fn metric(admin: &str, series: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(async {
        match reqwest::get(format!("http://{admin}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    });
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn wait_for_metric(admin: &str, series: &str, n: u64, timeout: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let got = metric(admin, series);
        if got >= n || started.elapsed() > timeout {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const ACKNOWLEDGED: &str = "sluice_sink_acknowledged_total{sink=\"search\"}";
const CONSUMED: &str = "sluice_source_consumed_total";

#[test]
fn documents_are_found_by_the_queries_kibana_discover_sends() {
    let (source, dlq, ns) = (unique("raw"), unique("dlq"), namespace());
    create_topic(&source, 3);
    create_topic(&dlq, 1);
    let n = 400;
    produce_at(&source, &(0..n).map(log_line).collect::<Vec<_>>());
    let mut host = Host::start(&config(&source, &dlq, &unique("g"), &search_url(), &ns));
    let stream = format!("logs-sluice-{ns}");
    let got = wait_for_count(&stream, n as u64, Duration::from_secs(60));
    assert_eq!(got, n as u64, "{}", host.log());
    assert!(host.terminate().success(), "{}", host.log());

    // Discover's search bar (KQL/Lucene → query_string on message).
    assert_eq!(
        count(
            &stream,
            json!({"query_string": {"query": "message:\"payment failed\""}})
        ),
        (n / 10) as u64
    );
    // Filters: term on keywords.
    assert_eq!(
        count(&stream, json!({"term": {"service.name": "checkout"}})),
        (n / 4) as u64
    );
    assert_eq!(
        count(&stream, json!({"term": {"log.level": "error"}})),
        (n / 10) as u64
    );
    assert_eq!(
        count(
            &stream,
            json!({"bool": {"filter": [{"term": {"service.name": "checkout"}}, {"term": {"log.level": "error"}}]}})
        ),
        (n / 20) as u64
    );
    // The time picker: range on @timestamp (records 100..=199, one second apart).
    assert_eq!(
        count(
            &stream,
            json!({"range": {"@timestamp": {"gte": rfc3339(base_ms() + 100_000), "lte": rfc3339(base_ms() + 199_000), "format": "strict_date_optional_time"}}})
        ),
        100
    );
    assert_eq!(
        count(&stream, json!({"term": {"trace.id": "trace000042"}})),
        1
    );
    assert_eq!(
        count(&stream, json!({"term": {"labels.customer_tier": "gold"}})),
        n as u64
    );

    // One document, as Discover shows it.
    let (_, hit) = es(
        "POST",
        &format!("/{stream}/_search"),
        Some(json!({"query": {"term": {"trace.id": "trace000010"}}})),
    );
    let doc = &hit["hits"]["hits"][0];
    assert_eq!(
        doc["_id"].as_str().unwrap().split(':').next(),
        Some(source.as_str())
    );
    let s = &doc["_source"];
    assert_eq!(s["@timestamp"], rfc3339(base_ms() + 10_000));
    assert_eq!(s["log.level"], "error");
    assert_eq!(s["event.dataset"], "sluice");
    assert_eq!(s["ecs.version"], "8.11.0");
    assert_eq!(s["labels.seq"], "10");
    assert_eq!(s["http.response.status_code"], 200);

    // The template made the fields the right types.
    let (_, mapping) = es("GET", &format!("/{stream}/_mapping"), None);
    let props = &mapping.as_object().unwrap().values().next().unwrap()["mappings"]["properties"];
    assert_eq!(props["@timestamp"]["type"], "date");
    assert!(matches!(
        props["message"]["type"].as_str(),
        Some("match_only_text" | "text")
    ));
    assert_eq!(props["service"]["properties"]["name"]["type"], "keyword");
    assert_eq!(props["labels"]["properties"]["seq"]["type"], "keyword");
    let (status, _) = es("GET", "/_index_template/sluice-logs-sluice", None);
    assert_eq!(status, 200);
}

#[test]
fn replaying_the_same_offsets_creates_no_duplicates() {
    let (source, dlq, ns) = (unique("raw"), unique("dlq"), namespace());
    create_topic(&source, 3);
    create_topic(&dlq, 1);
    let n = 3_000;
    produce_at(&source, &(0..n).map(log_line).collect::<Vec<_>>());
    let stream = format!("logs-sluice-{ns}");

    let first_group = unique("g");
    let mut first = Host::start(&config(&source, &dlq, &first_group, &search_url(), &ns));
    assert_eq!(
        wait_for_count(&stream, n as u64, Duration::from_secs(90)),
        n as u64,
        "{}",
        first.log()
    );
    assert!(first.terminate().success(), "{}", first.log());

    // A new consumer group reads every offset again, as a restart without commits would.
    let admin = admin_address();
    let mut replay = Host::start(&config_with_admin(
        &source,
        &dlq,
        &unique("g"),
        &search_url(),
        &ns,
        &admin,
    ));
    let done = wait_for_metric(&admin, ACKNOWLEDGED, n as u64, Duration::from_secs(90));
    assert_eq!(
        done,
        n as u64,
        "the replay did not finish:\n{}",
        replay.log()
    );
    assert!(replay.terminate().success(), "{}", replay.log());

    assert_eq!(total(&stream), n as u64, "replay duplicated documents");
    assert_eq!(distinct_seqs(&stream), n as u64);
    assert!(consume(&dlq, 0, Duration::from_secs(3), Duration::from_secs(1)).is_empty());
}

#[test]
fn a_mapping_conflict_dead_letters_that_record_while_the_rest_lands() {
    let (source, dlq, ns) = (unique("raw"), unique("dlq"), namespace());
    create_topic(&source, 1);
    create_topic(&dlq, 1);
    let n = 300;
    let bad = [7usize, 150, 299];
    let lines: Vec<(i64, String)> = (0..n)
        .map(|i| {
            let (ts, line) = log_line(i);
            if bad.contains(&i) {
                (
                    ts,
                    line.replace("\"status_code\":200", "\"status_code\":\"teapot\""),
                )
            } else {
                (ts, line)
            }
        })
        .collect();
    assert!(lines[7].1.contains("teapot"));
    produce_at(&source, &lines);
    let stream = format!("logs-sluice-{ns}");
    let mut host = Host::start(&config(&source, &dlq, &unique("g"), &search_url(), &ns));
    let dead = consume(
        &dlq,
        bad.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let indexed = wait_for_count(&stream, (n - bad.len()) as u64, Duration::from_secs(30));
    assert!(host.terminate().success(), "{}", host.log());

    assert_eq!(indexed, (n - bad.len()) as u64, "{}", host.log());
    assert_eq!(distinct_seqs(&stream), (n - bad.len()) as u64);
    assert_eq!(dead.len(), bad.len(), "{}", host.log());
    let mut dead_seqs: Vec<u64> = Vec::new();
    for m in &dead {
        let reason = m.header("sluice.dlq.reason").expect("reason");
        assert!(reason.starts_with("sink `search`: "), "{reason}");
        assert!(reason.contains("parsing_exception"), "{reason}");
        assert!(reason.contains("http.response.status_code"), "{reason}");
        assert_eq!(m.header("sluice.origin.topic"), Some(source.as_str()));
        // The payload is the document as it was sent.
        let doc = m.json();
        assert_eq!(doc["http.response.status_code"], "teapot");
        dead_seqs.push(doc["labels.seq"].as_str().unwrap().parse().unwrap());
    }
    dead_seqs.sort();
    assert_eq!(dead_seqs, bad.iter().map(|&b| b as u64).collect::<Vec<_>>());
}

/// A TCP proxy in front of the engine that the test can take down and bring back, so an
/// outage disturbs no one else using the shared engine.
struct Proxy {
    port: u16,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            target,
            up: Arc::new(AtomicBool::new(true)),
            connections: Arc::new(Mutex::new(Vec::new())),
            acceptor: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (up, connections, target) = (self.up.clone(), self.connections.clone(), self.target);
        self.acceptor = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let mut held = connections.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(upstream.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
            // Dropping the listener closes the port: new connections are refused.
        }));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuse new connections and cut the open ones.
    fn stop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            t.join().unwrap();
        }
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn resume(&mut self) {
        self.up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn engine_outage_pauses_the_consumer_and_loses_nothing() {
    let (source, dlq, ns) = (unique("raw"), unique("dlq"), namespace());
    create_topic(&source, 3);
    create_topic(&dlq, 1);
    let n = 60_000;
    produce_at(&source, &(0..n).map(log_line).collect::<Vec<_>>());
    let stream = format!("logs-sluice-{ns}");
    let target: SocketAddr = search_url().trim_start_matches("http://").parse().unwrap();
    let mut proxy = Proxy::start(target);
    let admin = admin_address();
    let mut host = Host::start(&config_with_admin(
        &source,
        &dlq,
        &unique("g"),
        &proxy.url(),
        &ns,
        &admin,
    ));

    // Let part of the stream through, then take the engine away.
    let before = wait_for_count(&stream, 2_000, Duration::from_secs(60));
    assert!(before >= 2_000, "no progress:\n{}", host.log());
    proxy.stop();
    let at_stop = total(&stream);
    std::thread::sleep(Duration::from_secs(4));
    let (consumed_early, rss_early) = (metric(&admin, CONSUMED), rss_kib(host.child.id()));
    std::thread::sleep(Duration::from_secs(6));
    let (consumed_late, rss_late) = (metric(&admin, CONSUMED), rss_kib(host.child.id()));
    let during = total(&stream);
    assert!(
        host.is_running(),
        "host died during the outage:\n{}",
        host.log()
    );
    eprintln!(
        "outage: indexed {at_stop} at stop, {during} after 10 s; consumed {consumed_early} → {consumed_late} of {n}; RSS {rss_early} → {rss_late} KiB"
    );
    // Paused: nothing more is consumed while the engine is away, and the backlog stays in
    // Kafka rather than in the host's memory.
    assert!(consumed_late > 0, "no source metrics from {admin}");
    assert_eq!(
        consumed_early, consumed_late,
        "the source kept consuming while the engine was down"
    );
    assert!(
        consumed_late < n as u64 / 2,
        "consumed {consumed_late} of {n} while down"
    );
    assert!(during < n as u64 / 2);
    assert!(
        rss_late < rss_early + 32 * 1024,
        "memory grew from {rss_early} to {rss_late} KiB while paused"
    );
    assert!(host.log().contains("SinkUnavailable"), "{}", host.log());

    proxy.resume();
    let got = wait_for_count(&stream, n as u64, Duration::from_secs(180));
    let acknowledged = wait_for_metric(&admin, ACKNOWLEDGED, n as u64, Duration::from_secs(30));
    eprintln!(
        "after the outage: indexed {got}, acknowledged {acknowledged}, consumed {}, in flight {} bytes",
        metric(&admin, CONSUMED),
        metric(&admin, "sluice_sink_in_flight_bytes{sink=\"search\"}")
    );
    assert!(host.terminate().success(), "{}", host.log());
    assert_eq!(
        got,
        n as u64,
        "documents missing after the engine returned:\n{}",
        host.log()
    );
    assert_eq!(total(&stream), n as u64, "duplicates after the outage");
    assert_eq!(distinct_seqs(&stream), n as u64);
    assert_eq!(acknowledged, n as u64);
    assert!(host.log().contains("fail state cleared"), "{}", host.log());
}

// ---- Dead letters written by the sink that takes `dlq`, strict `_bulk` replies, blocks ----

/// Wait until the host's log contains `text`.
fn wait_for_log(host: &Host, text: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if host.log().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Records `0..n`, those in `bad` with a string where the template maps a long.
fn lines_with_conflicts(n: usize, bad: &[usize]) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| {
            let (ts, line) = log_line(i);
            if bad.contains(&i) {
                let line = line.replace("\"status_code\":200", "\"status_code\":\"teapot\"");
                assert!(line.contains("teapot"));
                (ts, line)
            } else {
                (ts, line)
            }
        })
        .collect()
}

#[test]
fn a_search_sink_taking_dlq_writes_its_own_dead_letters_without_deadlocking() {
    let (source, ns, group) = (unique("raw"), namespace(), unique("g"));
    create_topic(&source, 1);
    let n = 2_000;
    let bad: Vec<usize> = (0..n).filter(|i| i % 37 == 5).collect();
    produce_at(&source, &lines_with_conflicts(n, &bad));
    // One batch in flight and room for one more in the channel: the sink's dead letters
    // can only be written if the sink does not wait on its own full channel for them.
    let config = kafka_source_toml(&source, &group, "")
        .replace("[pipeline]\n", "[pipeline]\nchannel_capacity = 1\n")
        + &format!(
            r#"
[[plugins]]
name = "passthrough"
path = "{plugin}"

[sinks.search]
type = "elasticsearch"
routes = ["cleaned", "dlq"]
url = "{url}"
index = {{ mode = "data_stream", dataset = "sluice", namespace = "{ns}" }}
max_in_flight_batches = 1
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 1000
"#,
            plugin = plugin("fixtures/hostile").display(),
            url = search_url(),
        );
    let mut host = Host::start(&config);
    let (stream, dead) = (format!("logs-sluice-{ns}"), format!("logs-sluice.dlq-{ns}"));
    let good = (n - bad.len()) as u64;
    let indexed = wait_for_count(&stream, good, Duration::from_secs(60));
    let lettered = wait_for_count(&dead, bad.len() as u64, Duration::from_secs(30));
    assert_eq!(indexed, good, "{}", host.log());
    assert_eq!(lettered, bad.len() as u64, "{}", host.log());
    assert!(host.terminate().success(), "{}", host.log());
    assert_eq!(committed(&group, &source), n as i64);
    assert_eq!(total(&stream), good);
    assert_eq!(distinct_seqs(&stream), good);

    let (status, body) = es(
        "POST",
        &format!("/{dead}/_search"),
        Some(json!({"size": 1000})),
    );
    assert_eq!(status, 200, "{body}");
    let mut offsets: Vec<usize> = Vec::new();
    for hit in body["hits"]["hits"].as_array().unwrap() {
        let s = &hit["_source"];
        let reason = s["error.message"].as_str().unwrap();
        assert!(reason.starts_with("sink `search`: "), "{reason}");
        assert!(reason.contains("http.response.status_code"), "{reason}");
        assert_eq!(s["labels.origin_topic"], source.as_str());
        assert!(s["message"].as_str().unwrap().contains("teapot"), "{s}");
        offsets.push(s["labels.origin_offset"].as_str().unwrap().parse().unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, bad);
}

/// An HTTP front for the engine that answers every `_bulk` with `{"took":1}` — a `200`
/// without `errors` or `items`, as a misconfigured proxy or a truncated body would — while
/// `lying` is set, and passes everything else through. One request per connection.
struct LyingFront {
    port: u16,
    lying: Arc<AtomicBool>,
    lies: Arc<std::sync::atomic::AtomicU64>,
}

impl LyingFront {
    fn start(target: SocketAddr) -> LyingFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let front = LyingFront {
            port: listener.local_addr().unwrap().port(),
            lying: Arc::new(AtomicBool::new(true)),
            lies: Arc::default(),
        };
        let (lying, lies) = (front.lying.clone(), front.lies.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (lying, lies) = (lying.clone(), lies.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(client, target, &lying, &lies);
                });
            }
        });
        front
    }

    fn serve(
        mut client: TcpStream,
        target: SocketAddr,
        lying: &AtomicBool,
        lies: &std::sync::atomic::AtomicU64,
    ) -> std::io::Result<()> {
        let (head, body) = read_http(&mut client)?;
        if head.starts_with("POST /_bulk") && lying.load(Ordering::SeqCst) {
            lies.fetch_add(1, Ordering::SeqCst);
            let lie = "{\"took\":1}";
            return client.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{lie}",
                    lie.len()
                )
                .as_bytes(),
            );
        }
        let mut upstream = TcpStream::connect(target)?;
        upstream.write_all(with_connection_close(&head).as_bytes())?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        client.write_all(with_connection_close(&head).as_bytes())?;
        client.write_all(&response[(split + 4).min(response.len())..])
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An HTTP head (without its blank line) with `connection: close` in place of any
/// connection header, followed by the blank line.
fn with_connection_close(head: &str) -> String {
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("connection: close\r\n\r\n");
    out
}

/// One HTTP request: its head (without the blank line) and its body (by content-length).
fn read_http(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = data[end + 4..].to_vec();
            while body.len() < length {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            return Ok((head, body));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_bulk_reply_without_errors_and_items_is_not_taken_for_success() {
    let (source, dlq, ns, group) = (unique("raw"), unique("dlq"), namespace(), unique("g"));
    create_topic(&source, 1);
    create_topic(&dlq, 1);
    let n = 500;
    produce_at(&source, &(0..n).map(log_line).collect::<Vec<_>>());
    let stream = format!("logs-sluice-{ns}");
    let target: SocketAddr = search_url().trim_start_matches("http://").parse().unwrap();
    let front = LyingFront::start(target);
    let admin = admin_address();
    let mut host = Host::start(&config_with_admin(
        &source,
        &dlq,
        &group,
        &front.url(),
        &ns,
        &admin,
    ));

    // Several `_bulk` requests answered with the lie, and time for commits (every second).
    let started = Instant::now();
    while front.lies.load(Ordering::SeqCst) < 2 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        front.lies.load(Ordering::SeqCst) >= 2,
        "no _bulk request reached the front:\n{}",
        host.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric(&admin, ACKNOWLEDGED),
        0,
        "documents counted as indexed on a reply without `errors`:\n{}",
        host.log()
    );
    assert_eq!(committed(&group, &source), 0, "{}", host.log());
    assert_eq!(total(&stream), 0);
    assert!(host.log().contains("SinkUnavailable"), "{}", host.log());
    assert!(
        host.log().contains("{\"took\":1}"),
        "the reply is not logged:\n{}",
        host.log()
    );

    front.lying.store(false, Ordering::SeqCst);
    let got = wait_for_count(&stream, n as u64, Duration::from_secs(60));
    let acknowledged = wait_for_metric(&admin, ACKNOWLEDGED, n as u64, Duration::from_secs(30));
    assert!(host.terminate().success(), "{}", host.log());
    assert_eq!(got, n as u64, "{}", host.log());
    assert_eq!(acknowledged, n as u64);
    assert_eq!(distinct_seqs(&stream), n as u64);
    assert_eq!(committed(&group, &source), n as i64);
    assert!(consume(&dlq, 0, Duration::from_secs(3), Duration::from_secs(1)).is_empty());
}

/// A host writing `cleaned` into daily indices under a prefix of its own, with its admin
/// endpoint: every record falls in one day, so a test can act on that day's index before
/// any document reaches it.
struct DailyIndexRun {
    source: String,
    dlq: String,
    group: String,
    index: String,
    admin: String,
    host: Host,
}

impl DailyIndexRun {
    fn start(prefix: &str) -> Self {
        let (source, dlq, group) = (unique("raw"), unique("dlq"), unique("g"));
        create_topic(&source, 1);
        create_topic(&dlq, 1);
        let index = sluice::sink::elasticsearch::document::IndexNaming::Daily {
            prefix: prefix.to_owned(),
        }
        .index(&sluice::route::RouteName::Cleaned, base_ms() * 1_000_000);
        let admin = admin_address();
        let config = config_with_admin(&source, &dlq, &group, &search_url(), "unused", &admin)
            .replace(
                "index = { mode = \"data_stream\", dataset = \"sluice\", namespace = \"unused\" }",
                &format!("index = {{ mode = \"daily\", prefix = \"{prefix}\" }}"),
            );
        assert!(config.contains("mode = \"daily\""));
        let host = Host::start(&config);
        assert!(
            wait_for_log(&host, "search sink ready", Duration::from_secs(60)),
            "{}",
            host.log()
        );
        DailyIndexRun {
            source,
            dlq,
            group,
            index,
            admin,
            host,
        }
    }

    /// While the cluster refuses every item with `error_type`: each is retried, none is
    /// dead-lettered, acknowledged or committed.
    fn assert_held_back(&self, n: usize, error_type: &str) {
        let retried = wait_for_metric(
            &self.admin,
            "sluice_sink_retried_total{sink=\"search\"}",
            2 * n as u64,
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_secs(2));
        let dead_lettered = metric(
            &self.admin,
            "sluice_sink_dead_lettered_total{sink=\"search\"}",
        );
        let acknowledged = metric(&self.admin, ACKNOWLEDGED);
        let log = self.host.log();
        assert_eq!(dead_lettered, 0, "{log}");
        assert_eq!(acknowledged, 0, "{log}");
        assert_eq!(committed(&self.group, &self.source), 0, "{log}");
        assert!(retried >= 2 * n as u64, "{retried} retries\n{log}");
        assert!(log.contains(error_type), "{log}");
    }

    /// Once the cause is lifted: every record in the index once, committed, none dead-lettered.
    fn assert_all_land(mut self, n: usize) {
        let got = wait_for_count(&self.index, n as u64, Duration::from_secs(60));
        let acknowledged =
            wait_for_metric(&self.admin, ACKNOWLEDGED, n as u64, Duration::from_secs(30));
        assert!(self.host.terminate().success(), "{}", self.host.log());
        assert_eq!(got, n as u64, "{}", self.host.log());
        assert_eq!(acknowledged, n as u64);
        assert_eq!(
            total(&self.index),
            n as u64,
            "duplicates after the cause was lifted"
        );
        assert_eq!(distinct_seqs(&self.index), n as u64);
        assert_eq!(committed(&self.group, &self.source), n as i64);
        assert!(consume(&self.dlq, 0, Duration::from_secs(3), Duration::from_secs(1)).is_empty());
    }
}

#[test]
fn a_write_blocked_index_is_retried_not_dead_lettered() {
    let run = DailyIndexRun::start(&unique("blocked"));
    let (status, body) = es("PUT", &format!("/{}", run.index), None);
    assert_eq!(status, 200, "{body}");
    let block = |on: bool| {
        let (status, body) = es(
            "PUT",
            &format!("/{}/_settings", run.index),
            Some(json!({"index.blocks.write": on})),
        );
        assert_eq!(status, 200, "{body}");
    };
    block(true);
    let n = 300;
    produce_at(&run.source, &(0..n).map(log_line).collect::<Vec<_>>());

    // Every item answers 403 cluster_block_exception while the block is on.
    run.assert_held_back(n, "cluster_block_exception");
    block(false);
    run.assert_all_land(n);
}

/// Turns automatic index creation off for indices starting with `prefix` (the engine answers
/// each item `404 index_not_found_exception`), and back to the default when dropped. Only
/// this prefix is touched, so tests running beside it write as before.
struct NoAutoCreate;

impl NoAutoCreate {
    fn for_prefix(prefix: &str) -> Self {
        let (status, body) = es(
            "PUT",
            "/_cluster/settings",
            Some(json!({"persistent": {"action.auto_create_index": format!("-{prefix}*,+*")}})),
        );
        assert_eq!(status, 200, "{body}");
        NoAutoCreate
    }
}

impl Drop for NoAutoCreate {
    fn drop(&mut self) {
        es(
            "PUT",
            "/_cluster/settings",
            Some(json!({"persistent": {"action.auto_create_index": null}})),
        );
    }
}

#[test]
fn a_missing_index_the_engine_will_not_create_is_retried_not_dead_lettered() {
    let prefix = unique("noauto");
    let no_auto_create = NoAutoCreate::for_prefix(&prefix);
    let run = DailyIndexRun::start(&prefix);
    let n = 200;
    produce_at(&run.source, &(0..n).map(log_line).collect::<Vec<_>>());

    // An operator who turned auto-create off creates indices ahead: until then every item
    // answers 404, and the records wait rather than go to the dead-letter topic.
    run.assert_held_back(n, "index_not_found_exception");
    let (status, body) = es("PUT", &format!("/{}", run.index), None);
    assert_eq!(status, 200, "{body}");
    drop(no_auto_create);
    run.assert_all_land(n);
}

// ---- Kibana saved objects ----

fn saved_objects() -> (std::path::PathBuf, String) {
    let path = workspace_root().join("kibana/sluice.ndjson");
    let text = std::fs::read_to_string(&path).expect("kibana/sluice.ndjson");
    (path, text)
}

#[test]
fn saved_objects_parse_and_their_references_resolve() {
    use sluice::sink::elasticsearch::kibana::validate;
    let (path, text) = saved_objects();
    let objects = validate(&path.display().to_string(), &text).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_type = |t: &str| lines.iter().filter(|o| o["type"] == t).collect::<Vec<_>>();
    let views = of_type("index-pattern");
    assert!(
        views
            .iter()
            .any(|v| v["attributes"]["title"] == "logs-sluice-*"
                && v["attributes"]["timeFieldName"] == "@timestamp")
    );
    assert!(
        views
            .iter()
            .any(|v| v["attributes"]["title"] == "metrics-sluice-*")
    );
    let searches = of_type("search");
    let errors = searches
        .iter()
        .find(|s| {
            s["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
                .as_str()
                .unwrap()
                .contains("log.level:error")
        })
        .expect("a saved search for errors");
    assert_eq!(
        errors["attributes"]["columns"],
        json!(["service.name", "message"])
    );
    let dashboards = of_type("dashboard");
    assert_eq!(dashboards.len(), 1);
    let panels: Vec<Value> =
        serde_json::from_str(dashboards[0]["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
    assert!(panels.len() >= 2);
    // Every panel's reference is in the file (checked by validate) and names a panel.
    for r in dashboards[0]["references"].as_array().unwrap() {
        assert!(panels.iter().any(|p| p["panelRefName"] == r["name"]), "{r}");
    }
    let visualisations = of_type("visualization");
    let vis_text = serde_json::to_string(&visualisations).unwrap();
    assert!(vis_text.contains("error_count") && vis_text.contains("latency.p99_ms"));
    assert_eq!(objects.len(), lines.len());
}

/// A one-shot HTTP server: records the request, answers `response`.
fn record_one_request(response: &'static str) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{response}",
            response.len()
        );
        stream.write_all(reply.as_bytes()).unwrap();
        request
    });
    (url, handle)
}

#[test]
fn kibana_import_sends_the_saved_objects_as_multipart() {
    use sluice::sink::elasticsearch::kibana::{Dashboards, ImportOptions, import_file};
    let (path, text) = saved_objects();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (url, server) = record_one_request(r#"{"success":true,"successCount":6}"#);
    let options = ImportOptions {
        url,
        overwrite: true,
        authorization: Some("ApiKey abc".into()),
        ..ImportOptions::default()
    };
    let summary = rt.block_on(import_file(&options, &path)).unwrap();
    assert_eq!(summary.success_count, 6);
    let request = String::from_utf8(server.join().unwrap()).unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("POST /api/saved_objects/_import?overwrite=true HTTP/1.1"),
        "{head}"
    );
    assert!(head_lower.contains("\r\nkbn-xsrf: true"), "{head}");
    assert!(
        head_lower.contains("\r\nauthorization: apikey abc"),
        "{head}"
    );
    let boundary = head_lower
        .lines()
        .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
        .expect("multipart content type")
        .to_owned();
    assert!(body.starts_with(&format!("--{boundary}\r\n")));
    assert!(
        body.contains("Content-Disposition: form-data; name=\"file\"; filename=\"sluice.ndjson\"")
    );
    assert!(
        body.contains(&format!("\r\n\r\n{text}\r\n--{boundary}--")),
        "the file is sent as is"
    );

    // OpenSearch Dashboards: its own header; a space goes in the path.
    let (url, server) = record_one_request(r#"{"success":true,"successCount":6}"#);
    let options = ImportOptions {
        url,
        space: Some("ops".into()),
        overwrite: true,
        flavor: Dashboards::OpenSearchDashboards,
        ..ImportOptions::default()
    };
    rt.block_on(import_file(&options, &path)).unwrap();
    let request = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(request.starts_with("POST /s/ops/api/saved_objects/_import?overwrite=true "));
    assert!(request.to_ascii_lowercase().contains("\r\nosd-xsrf: true"));

    // A refused import says what the server answered.
    let (url, server) = record_one_request(
        r#"{"success":false,"errors":[{"id":"x","error":{"type":"missing_references"}}]}"#,
    );
    let options = ImportOptions {
        url,
        ..ImportOptions::default()
    };
    let err = rt.block_on(import_file(&options, &path)).unwrap_err();
    server.join().unwrap();
    assert!(err.to_string().contains("missing_references"), "{err}");
}
