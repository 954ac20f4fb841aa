//! Event time under backpressure: the metrics (and the alerts that hang on them) must not
//! depend on how fast the sinks are. A slow sink beside Kafka makes the pipeline block, the
//! source pause and partitions arrive unevenly; none of that may make records count as late.

mod common;

use common::proxy::DelayProxy;
use common::{brokers, consume, create_topic, kafka_sink_toml, plugin, unique};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::process::Command;
use std::time::{Duration, Instant};

const WINDOW_NS: i64 = 60_000_000_000;

fn search_addr() -> std::net::SocketAddr {
    let url = std::env::var("SLUICE_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into());
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport.to_socket_addrs().unwrap().next().unwrap()
}

/// `sluice gen` straight into `topic` (keyed by service, so spread over its partitions).
fn generate(topic: &str, args: &[&str]) {
    generate_from(topic, "2026-11-25T10:00:00Z", args);
}

/// [`generate`], the first line's event time `start`.
fn generate_from(topic: &str, start: &str, args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gen", "--brokers", &brokers(), "--topic", topic])
        .args(["--start", start, "--log-level", "warn"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Per (service, window start), how many cleaned records fall in the window.
fn cleaned_per_window(cleaned: &[common::Consumed]) -> BTreeMap<(String, i64), u64> {
    let mut out = BTreeMap::new();
    for m in cleaned {
        let v = m.json();
        let service = v["service.name"].as_str().unwrap_or("unknown").to_owned();
        let ts = v["@timestamp"]
            .as_str()
            .expect("cleaned record has @timestamp");
        let ns = parse_rfc3339_ns(ts);
        *out.entry((service, ns - ns.rem_euclid(WINDOW_NS)))
            .or_default() += 1;
    }
    out
}

/// `2026-11-25T10:00:00.010000000Z` → ns since the epoch (UTC, the day is enough here).
fn parse_rfc3339_ns(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let frac_ns: i64 = format!("{frac:0<9}")[..9].parse().unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000) + frac_ns
}

/// `[[plugins]]` entries for the bundled plugins `names`, in chain order.
fn plugins_toml(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n",
                plugin(name).display()
            )
        })
        .collect()
}

/// The documented chain (normalize → dedup → metrics) from a 3-partition topic to the
/// whole fan-out: Kafka topics, the S3 lake (raw and cleaned, default rotation), SNS on
/// alerts and metrics, and a search sink on `cleaned` behind `search_url`.
fn fan_out_config(source: &str, topics: &Topics, search_url: &str, namespace: &str) -> String {
    let mut c = common::kafka_source_toml(source, &unique("event-time"), "");
    c.push_str(&plugins_toml(&["normalize", "dedup", "metrics"]));
    c.push_str("on_failure = \"pass_through\"\n");
    c.push_str(&kafka_sink_toml("cleaned", &topics.cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("metrics", &topics.metrics, "metrics"));
    c.push_str(&kafka_sink_toml("alerts", &topics.alerts, "alerts"));
    c.push_str(&kafka_sink_toml("dlq", &topics.dlq, "dlq"));
    c.push_str(&format!(
        r#"
[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "{search_url}"
index = {{ mode = "data_stream", dataset = "sluice", namespace = "{namespace}" }}
"#
    ));
    let prefix = unique("et-lake");
    for table in ["raw", "cleaned"] {
        c.push_str(&common::lake::lake_sink_toml(
            table,
            &prefix,
            &common::lake::endpoint(),
            "",
        ));
    }
    let topic_arn = std::env::var("SLUICE_SNS_TOPIC_ARN")
        .unwrap_or_else(|_| "arn:aws:sns:us-east-1:123456789012:sluice-alerts".into());
    c.push_str(&format!(
        r#"
[sinks.alerting]
type = "sns"
routes = ["alerts", "metrics"]
topic_arn = "{topic_arn}"
endpoint = "{endpoint}"
kibana_url = "http://kibana.example:5601"
athena_table = "sluice.logs"
"#,
        endpoint = common::lake::endpoint(),
    ));
    c
}

struct Topics {
    cleaned: String,
    metrics: String,
    alerts: String,
    dlq: String,
}

#[test]
fn a_slow_search_sink_in_the_full_fan_out_changes_no_metric_and_silences_no_alert() {
    let source = unique("et-raw");
    create_topic(&source, 3);
    let topics = Topics {
        cleaned: unique("et-cleaned"),
        metrics: unique("et-metrics"),
        alerts: unique("et-alerts"),
        dlq: unique("et-dlq"),
    };
    for t in [
        &topics.cleaned,
        &topics.metrics,
        &topics.alerts,
        &topics.dlq,
    ] {
        create_topic(t, 1);
    }
    // 10,000 lines at 9 per second of event time: ~18 one-minute windows, an error burst
    // in checkout from minute 10 to 13 after the detector's warm-up.
    generate(
        &source,
        &[
            "--seed",
            "11",
            "--count",
            "10000",
            "--events-per-second",
            "9",
            "--duplicates",
            "0.02",
            "--burst",
            "checkout@600+180:0.6",
        ],
    );
    // Every request to the search engine waits 0.3 s: the engine is busy.
    let proxy = DelayProxy::start(search_addr(), Duration::from_millis(300));
    let namespace = unique("et").replace('-', "");
    let mut host = common::Host::start(&fan_out_config(&source, &topics, &proxy.url(), &namespace));

    let cleaned = consume(
        &topics.cleaned,
        9_000,
        Duration::from_secs(400),
        Duration::from_secs(10),
    );
    assert!(host.is_running(), "host stopped:\n{}", host.log());
    assert!(
        cleaned.len() >= 9_000,
        "only {} cleaned records",
        cleaned.len()
    );
    let truth = cleaned_per_window(&cleaned);
    let last_window = truth.keys().map(|&(_, w)| w).max().unwrap();

    // Windows two minutes before the end are closed by event time alone (lateness 30 s).
    let complete_before = last_window - 2 * WINDOW_NS;
    let started = Instant::now();
    let (counted, expected, metrics) = loop {
        let metrics = consume(
            &topics.metrics,
            1,
            Duration::from_secs(20),
            Duration::from_secs(2),
        );
        let mut counted = 0u64;
        let mut windows = 0usize;
        for m in &metrics {
            let v: Value = m.json();
            let start = v["metric.window.start"].as_i64().unwrap();
            if start < complete_before {
                counted += v["count"].as_u64().unwrap();
                windows += 1;
            }
        }
        let expected: u64 = truth
            .iter()
            .filter(|((_, w), _)| *w < complete_before)
            .map(|(_, n)| n)
            .sum();
        let want_windows = truth.keys().filter(|(_, w)| *w < complete_before).count();
        if windows >= want_windows || started.elapsed() > Duration::from_secs(120) {
            break (counted, expected, metrics);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    // Every cleaned record of a closed window is counted, up to the few the generator
    // really writes late (out of order by more than the allowed lateness: none here).
    assert!(
        counted as f64 >= expected as f64 * 0.99,
        "metrics counted {counted} of {expected} records in closed windows ({} metric records)\n{}",
        metrics.len(),
        host.log()
    );
    let alerts = consume(
        &topics.alerts,
        1,
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    let checkout: Vec<Value> = alerts
        .iter()
        .map(common::Consumed::json)
        .filter(|a| a["service.name"] == "checkout")
        .collect();
    assert!(
        !checkout.is_empty(),
        "the checkout error burst raised no alert ({} alerts in all)",
        alerts.len()
    );
    assert!(host.terminate().success(), "{}", host.log());
}

/// Metrics and alerts come from ticks, not from one source batch; a sink that cannot write
/// them must stop the host before the records they count are committed, as it would for
/// any other output, instead of the metrics vanishing behind a log line.
#[test]
fn metrics_a_sink_cannot_write_stop_the_host_before_commit() {
    let (source, cleaned, dlq) = (unique("et-raw"), unique("et-cleaned"), unique("et-dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    generate(
        &source,
        &["--seed", "5", "--count", "3000", "--events-per-second", "9"],
    );
    let group = unique("et-fail");
    let mut c = common::kafka_source_toml(&source, &group, "");
    c.push_str(&plugins_toml(&["normalize", "metrics"]));
    c.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    // Every write fails: the device is full.
    c.push_str(
        "\n[sinks.metrics]\ntype = \"file\"\npath = \"/dev/full\"\nroutes = [\"metrics\"]\n",
    );
    let mut host = common::Host::start(&c);
    let started = Instant::now();
    while host.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the host went on without its metrics being written (committed {} of 3000)\n{}",
            common::committed(&group, &source),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = host.child.wait().unwrap();
    assert!(!status.success(), "{}", host.log());
    assert!(
        common::committed(&group, &source) < 3000,
        "records whose metrics were never written were committed"
    );
}

#[test]
fn a_clean_stop_without_plugin_state_emits_the_open_windows_before_it_commits() {
    // A stop commits what the sinks wrote; the metric windows still open hold counts of
    // those records. Without the state topic to keep them, unless they are emitted (as
    // partial windows) before the commit, no host ever counts those records again.
    let (source, cleaned, metrics, dlq) = (
        unique("et-stop-raw"),
        unique("et-stop-cleaned"),
        unique("et-stop-metrics"),
        unique("et-stop-dlq"),
    );
    for topic in [&source, &cleaned, &metrics, &dlq] {
        create_topic(topic, 1);
    }
    // Two minutes of event time: the second window is still open at the end of the input.
    generate(
        &source,
        &[
            "--seed",
            "9",
            "--count",
            "1200",
            "--events-per-second",
            "10",
        ],
    );
    let group = unique("et-stop");
    let mut c = common::kafka_source_toml(&source, &group, "")
        .replace("[pipeline]", "plugin_state = false\n\n[pipeline]");
    c.push_str(&plugins_toml(&["normalize", "metrics"]));
    c.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("metrics", &metrics, "metrics"));
    c.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    let mut host = common::Host::start(&c);
    let got = consume(
        &cleaned,
        1200,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );
    assert_eq!(got.len(), 1200, "{}", host.log());
    let expected: u64 = cleaned_per_window(&got).values().sum();
    wait_committed(&group, &source, 1200, &host);
    assert!(host.terminate().success(), "{}", host.log());

    let rows = consume(
        &metrics,
        usize::MAX,
        Duration::from_secs(10),
        Duration::from_secs(3),
    );
    let counted: u64 = rows
        .iter()
        .map(|m| m.json()["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        counted,
        expected,
        "the metric rows count every record committed ({} rows)\n{}",
        rows.len(),
        host.log()
    );
}

fn wait_committed(group: &str, source: &str, n: i64, host: &common::Host) {
    let started = Instant::now();
    while common::committed(group, source) < n {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "committed {} of {n}\n{}",
            common::committed(group, source),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ten quiet minutes of event time on 3 partitions, then an error burst in the first
/// windows of the next host: too few records for a detector starting cold.
struct Handover {
    source: String,
    cleaned: String,
    metrics: String,
    alerts: String,
    group: String,
    config: String,
}

impl Handover {
    /// normalize → metrics, every output to Kafka; `source_keys` added to `[source]`.
    fn new(name: &str, source_keys: &str) -> Handover {
        let [source, cleaned, metrics, alerts, dlq] =
            ["raw", "cleaned", "metrics", "alerts", "dlq"].map(|t| unique(&format!("{name}-{t}")));
        create_topic(&source, 3);
        for topic in [&cleaned, &metrics, &alerts, &dlq] {
            create_topic(topic, 1);
        }
        let group = unique(name);
        let mut config = common::kafka_source_toml(&source, &group, "")
            .replace("[pipeline]", &format!("{source_keys}\n[pipeline]"));
        config.push_str(&plugins_toml(&["normalize", "metrics"]));
        config.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
        config.push_str(&kafka_sink_toml("metrics", &metrics, "metrics"));
        config.push_str(&kafka_sink_toml("alerts", &alerts, "alerts"));
        config.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
        Handover {
            source,
            cleaned,
            metrics,
            alerts,
            group,
            config,
        }
    }

    fn quiet(&self) {
        generate(
            &self.source,
            &["--seed", "5", "--count", "3000", "--events-per-second", "5"],
        );
    }

    fn burst(&self) {
        let burst = [
            "--seed",
            "6",
            "--count",
            "1200",
            "--events-per-second",
            "5",
            "--burst",
            "checkout@0+120:0.6",
        ];
        generate_from(&self.source, "2026-11-25T10:10:00Z", &burst);
    }

    /// The burst alerted, and every window event time closed (before 10:13, lateness 30 s)
    /// was emitted once, counting each of its cleaned records.
    fn assert_burst_alerted_and_windows_whole(&self, logs: &str) {
        let raised = consume(
            &self.alerts,
            1,
            Duration::from_secs(30),
            Duration::from_secs(2),
        );
        let checkout = raised
            .iter()
            .map(common::Consumed::json)
            .filter(|a| a["service.name"] == "checkout")
            .count();
        assert!(
            checkout > 0,
            "the burst after the handover raised no alert ({} in all)\n{logs}",
            raised.len()
        );
        let truth = cleaned_per_window(&consume(
            &self.cleaned,
            4200,
            Duration::from_secs(60),
            Duration::from_secs(3),
        ));
        let closed_before = parse_rfc3339_ns("2026-11-25T10:13:00Z");
        let mut emitted: BTreeMap<(String, i64), Vec<u64>> = BTreeMap::new();
        for row in consume(
            &self.metrics,
            1,
            Duration::from_secs(30),
            Duration::from_secs(3),
        ) {
            let v = row.json();
            let key = (
                v["service.name"].as_str().unwrap_or("unknown").to_owned(),
                v["metric.window.start"].as_i64().unwrap(),
            );
            emitted
                .entry(key)
                .or_default()
                .push(v["count"].as_u64().unwrap());
        }
        for (key, count) in truth.iter().filter(|((_, w), _)| *w < closed_before) {
            assert_eq!(
                emitted.get(key),
                Some(&vec![*count]),
                "window {key:?}: emitted once with every record\n{logs}"
            );
        }
    }
}

#[test]
fn a_restart_goes_on_with_the_open_windows_and_the_alert_baselines() {
    // The host stops in order after the quiet minutes; the next host starts into the
    // burst. Kept in the state topic, the baselines and the window open at the stop carry
    // over: the burst alerts, and every window is emitted once, whole.
    let case = Handover::new("et-restart", "");
    case.quiet();
    let mut host = common::Host::start(&case.config);
    wait_committed(&case.group, &case.source, 3000, &host);
    assert!(host.terminate().success(), "{}", host.log());
    let before = host.log();

    case.burst();
    let mut host = common::Host::start(&case.config);
    wait_committed(&case.group, &case.source, 4200, &host);
    let logs = format!("before the restart:\n{before}\nafter:\n{}", host.log());
    case.assert_burst_alerted_and_windows_whole(&logs);
    assert!(host.terminate().success(), "{}", host.log());
}

#[test]
fn exactly_once_partitions_moving_to_another_host_keep_windows_and_baselines() {
    // Host A reads the quiet minutes exactly once; host B joins, A leaves in order, and
    // every partition moves to B, with its state as of A's last transaction. B reads the
    // burst: it alerts, and every window is committed once, whole.
    let case = Handover::new(
        "et-move",
        "exactly_once = true\ntransaction_interval_ms = 300",
    );
    case.quiet();
    let with_id = |id: &str| {
        case.config.replace(
            "exactly_once = true",
            &format!("exactly_once = true\ntransactional_id = \"{id}\""),
        )
    };
    let mut a = common::Host::start(&with_id(&unique("et-move-a")));
    wait_committed(&case.group, &case.source, 3000, &a);
    let mut b = common::Host::start(&with_id(&unique("et-move-b")));
    common::group::wait_for_log(&b, "partitions assigned", Duration::from_secs(60));
    assert!(a.terminate().success(), "{}", a.log());

    case.burst();
    wait_committed(&case.group, &case.source, 4200, &b);
    let logs = format!("A:\n{}\nB:\n{}", a.log(), b.log());
    let rewinds = logs.matches("goes back to the last committed").count();
    eprintln!("transactions aborted and gone back from: {rewinds}");
    case.assert_burst_alerted_and_windows_whole(&logs);
    assert!(b.terminate().success(), "{logs}");
    assert!(b.log().contains("plugin state restored"), "{logs}");
}

/// `count` generated lines (one per second of event time from 10:00), sent alternately to
/// `partitions` of `topic`.
fn generate_into_partitions(topic: &str, partitions: &[i32], count: usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gen", "--output", "-", "--log-level", "warn"])
        .args([
            "--start",
            "2026-11-25T10:00:00Z",
            "--events-per-second",
            "1",
        ])
        .args(["--count", &count.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    common::send_round_robin(topic, &out.stdout, partitions);
}

#[test]
fn an_empty_partition_holds_no_window_open() {
    // A partition with nothing in it has nothing to wait for: event time follows the
    // others at once, not only once the empty one has been quiet for `idle_watermark_ms`.
    let (source, cleaned, metrics, dlq) = (
        unique("et-empty-raw"),
        unique("et-empty-cleaned"),
        unique("et-empty-metrics"),
        unique("et-empty-dlq"),
    );
    create_topic(&source, 3);
    for topic in [&cleaned, &metrics, &dlq] {
        create_topic(topic, 1);
    }
    generate_into_partitions(&source, &[0, 1], 600);
    let mut c = common::kafka_source_toml(&source, &unique("et-empty"), "").replace(
        "tick_interval_ms = 200",
        "tick_interval_ms = 200\nidle_watermark_ms = 600000",
    );
    assert!(c.contains("idle_watermark_ms"));
    c.push_str(&plugins_toml(&["normalize", "metrics"]));
    c.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    c.push_str(&kafka_sink_toml("metrics", &metrics, "metrics"));
    c.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    let mut host = common::Host::start(&c);
    let rows = consume(&metrics, 1, Duration::from_secs(60), Duration::from_secs(1));
    assert!(host.is_running(), "{}", host.log());
    assert!(
        !rows.is_empty(),
        "no window closed while partition 2, empty, held event time\n{}",
        host.log()
    );
    assert!(host.terminate().success(), "{}", host.log());
}
