use super::draw::{self, Screen};
use super::*;
use crate::admin::{AdminState, render};
use crate::pipeline::PipelineStats;
use crate::plugin::PluginStats;
use crate::sink::SinkStats;
use crate::source::SourceStats;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A host's counters, rendered by the admin endpoint's own code.
struct Host {
    source: Arc<SourceStats>,
    plugin: Arc<PluginStats>,
    pipeline: Arc<PipelineStats>,
    sink: Arc<SinkStats>,
}

impl Host {
    fn new() -> Host {
        Host {
            source: Arc::default(),
            plugin: Arc::default(),
            pipeline: Arc::default(),
            sink: Arc::default(),
        }
    }

    fn snapshot(&self, at: Instant) -> Snapshot {
        let state = AdminState {
            source: self.source.clone(),
            plugins: vec![("normalize".into(), self.plugin.clone())],
            pipeline: self.pipeline.clone(),
            sinks: vec![("cleaned".into(), self.sink.clone())],
        };
        Snapshot::from_scrape(&Scrape::parse(&render(&state)), Vec::new(), at)
    }

    /// `n` records through every counter, each plugin call taking `call`.
    fn flow(&self, n: u64, call: Duration) {
        self.source.consumed.fetch_add(n, Ordering::Relaxed);
        self.pipeline.records_in.fetch_add(n, Ordering::Relaxed);
        self.pipeline.records_routed.fetch_add(n, Ordering::Relaxed);
        self.plugin.records_in.fetch_add(n, Ordering::Relaxed);
        self.plugin.records_out.fetch_add(n, Ordering::Relaxed);
        for _ in 0..n / 100 {
            self.plugin.observe_call(call.as_nanos() as u64);
        }
        self.sink.sent.fetch_add(n, Ordering::Relaxed);
        self.sink.acknowledged.fetch_add(n, Ordering::Relaxed);
    }
}

#[test]
fn labels_with_escapes_are_read_back() {
    let scrape = Scrape::parse(
        "# HELP x y\nsluice_x{plugin=\"a \\\"b\\\"\\\\c\\nd\",le=\"+Inf\"} 3\nsluice_y 1.5e3\nbroken{\n",
    );
    assert_eq!(scrape.0.len(), 2);
    assert_eq!(scrape.0[0].label("plugin"), Some("a \"b\"\\c\nd"));
    assert_eq!(scrape.0[0].label("le"), Some("+Inf"));
    assert_eq!(scrape.0[1].value, 1500.0);
}

#[test]
fn the_hosts_own_metrics_give_stages_sinks_and_partitions() {
    let host = Host::new();
    host.flow(1000, Duration::from_micros(300));
    host.plugin.traps.fetch_add(2, Ordering::Relaxed);
    host.plugin.timeouts.fetch_add(1, Ordering::Relaxed);
    host.plugin.memory_bytes.store(3 << 20, Ordering::Relaxed);
    host.sink.in_flight_bytes.store(4096, Ordering::Relaxed);
    host.sink.dead_lettered.store(5, Ordering::Relaxed);
    host.pipeline.decode_rejected.store(7, Ordering::Relaxed);
    (host.source.lag.lock().unwrap()).insert(("raw".into(), 1), 42);
    (host.source.committed.lock().unwrap()).insert(("raw".into(), 1), 900);
    (host.source.lag.lock().unwrap()).insert(("raw".into(), 0), 3);

    let s = host.snapshot(Instant::now());
    assert_eq!(s.consumed, 1000.0);
    assert_eq!(s.stages.len(), 1);
    let stage = &s.stages[0];
    assert_eq!(
        (stage.name.as_str(), stage.records_in, stage.failed_calls),
        ("normalize", 1000.0, 3.0)
    );
    assert_eq!(stage.memory_bytes, 3145728.0);
    assert_eq!(stage.buckets.last(), Some(&(f64::INFINITY, 10.0)));
    assert_eq!(s.sinks[0].in_flight_bytes, 4096.0);
    assert_eq!(s.dead_letters(), 12.0);
    assert_eq!(
        s.partitions,
        [
            PartitionRow {
                topic: "raw".into(),
                partition: 0,
                lag: Some(3),
                committed: None
            },
            PartitionRow {
                topic: "raw".into(),
                partition: 1,
                lag: Some(42),
                committed: Some(900)
            },
        ]
    );
}

#[test]
fn rates_are_counter_deltas_over_the_time_between_looks() {
    let host = Host::new();
    host.flow(5000, Duration::from_micros(300));
    let t0 = Instant::now();
    let first = host.snapshot(t0);
    let view = View::new(None, &first);
    assert_eq!(view.consumed_per_s, None, "one look has no rate");
    assert_eq!(view.stages[0].in_per_s, None);

    host.flow(1000, Duration::from_millis(30));
    let second = host.snapshot(t0 + Duration::from_secs(2));
    let view = View::new(Some(&first), &second);
    assert_eq!(view.interval, Some(2.0));
    assert_eq!(view.consumed_per_s, Some(500.0));
    assert_eq!(view.stages[0].in_per_s, Some(500.0));
    assert_eq!(view.sinks[0].acked_per_s, Some(500.0));
    // The interval's calls all took 30 ms (bucket 10..50 ms), whatever came before.
    let p99 = view.stages[0].p99_seconds.unwrap();
    assert!((0.01..=0.05).contains(&p99), "{p99}");
}

#[test]
fn a_host_that_restarted_does_not_show_negative_rates() {
    let before = Host::new();
    before.flow(9000, Duration::from_micros(300));
    let t0 = Instant::now();
    let first = before.snapshot(t0);
    let after = Host::new();
    after.flow(400, Duration::from_micros(300));
    let view = View::new(Some(&first), &after.snapshot(t0 + Duration::from_secs(1)));
    assert_eq!(view.consumed_per_s, Some(400.0));
    assert!(view.stages[0].p99_seconds.is_some());
}

#[test]
fn p99_interpolates_within_its_bucket_and_stops_at_the_last_finite_bound() {
    let buckets = [(1.0, 0.0), (3.0, 100.0), (f64::INFINITY, 100.0)];
    assert_eq!(quantile(0.5, &buckets), Some(2.0));
    assert_eq!(
        quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 10.0)]),
        Some(0.1)
    );
    assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
    // No calls in the interval: no p99, not the one from before.
    let delta = bucket_delta(Some(&buckets.to_vec()), &buckets);
    assert_eq!(quantile(0.99, &delta), None);
}

#[test]
fn a_frame_names_every_stage_sink_partition_and_fail_state() {
    let host = Host::new();
    host.flow(1000, Duration::from_micros(300));
    (host.source.lag.lock().unwrap()).insert(("raw-logs".into(), 3), 17);
    (host.source.committed.lock().unwrap()).insert(("raw-logs".into(), 3), 12345);
    let t0 = Instant::now();
    let first = host.snapshot(t0);
    host.flow(2000, Duration::from_micros(300));
    let mut second = host.snapshot(t0 + Duration::from_secs(1));
    second.conditions.push(Condition {
        state: "SinkUnavailable".into(),
        subject: "cleaned".into(),
        context: "broker down".into(),
    });
    let view = View::new(Some(&first), &second);
    let text = draw::to_text(
        &Screen {
            admin: "127.0.0.1:9898",
            every: Duration::from_secs(1),
            view: Some(&view),
            error: None,
            failures: 0,
        },
        120,
    );
    let row = |start: &str| {
        (text.lines())
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("normalize")[..3],
        ["normalize", "2000", "2000"],
        "{text}"
    );
    assert_eq!(row("cleaned")[..3], ["cleaned", "2000", "2000"], "{text}");
    assert_eq!(row("raw-logs/3"), ["raw-logs/3", "17", "12345"], "{text}");
    assert!(row("SinkUnavailable").contains(&"down"), "{text}");
    assert!(text.contains("consumed 2000/s"), "{text}");
}

#[test]
fn an_unreachable_host_is_named_with_what_to_try() {
    let error = FetchError::Unreachable {
        admin: "127.0.0.1:1".into(),
        reason: "Connection refused (os error 111)".into(),
    }
    .to_string();
    let text = draw::to_text(
        &Screen {
            admin: "127.0.0.1:1",
            every: Duration::from_secs(2),
            view: None,
            error: Some(&error),
            failures: 3,
        },
        80,
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert!(text.contains("--admin"), "{text}");
    assert!(
        text.contains("retrying every 2.0 s (3 failed in a row)"),
        "{text}"
    );
}

#[test]
fn numbers_read_as_people_write_them() {
    assert_eq!(draw::rate(Some(1234.4)), "1234");
    assert_eq!(draw::rate(Some(2.25)), "2.2");
    assert_eq!(draw::rate(None), "-");
    assert_eq!(draw::bytes(512), "512 B");
    assert_eq!(draw::bytes(3 << 20), "3.0 MiB");
    assert_eq!(draw::seconds(Some(0.0042)), "4.2 ms");
    assert_eq!(draw::seconds(Some(0.00025)), "250 µs");
}
