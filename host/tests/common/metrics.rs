//! Metric windows and alerts as the tests read them back from Kafka, and generated input
//! that spreads every service over every partition.

use super::{Consumed, consume};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

pub const WINDOW_NS: i64 = 60_000_000_000;
/// Where generated event time starts: 2026-11-25T10:00:00Z.
pub const START_NS: i64 = 1_795_600_800_000_000_000;

/// `count` `sluice gen` lines at 9 per second of event time from [`START_NS`], with an
/// error burst in checkout from 600 s to 780 s.
pub fn generated(count: usize) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["gen", "--output", "-", "--log-level", "warn", "--seed", "7"])
        .args([
            "--start",
            "2026-11-25T10:00:00Z",
            "--events-per-second",
            "9",
        ])
        .args(["--duplicates", "0", "--burst", "checkout@600+180:0.6"])
        .args(["--count", &count.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// [`generated`] lines sent round robin over `partitions`: every service comes through
/// every partition (a producer that does not key by service).
pub fn generate_round_robin(topic: &str, partitions: i32, count: usize) {
    let partitions: Vec<i32> = (0..partitions).collect();
    super::send_round_robin(topic, &generated(count), &partitions);
}

/// The start of the last window that event time alone has closed once [`generate_round_robin`]'s
/// `lines` are read (30 s of lateness, a minute of margin): windows before it are final.
pub fn closed_before(lines: usize) -> i64 {
    let end = START_NS + (lines as i64 / 9) * 1_000_000_000;
    end - end.rem_euclid(WINDOW_NS) - 2 * WINDOW_NS
}

/// (service, window start).
pub type WindowKey = (String, i64);
/// Every metric record's (count, errors) of one window.
pub type Rows = Vec<(u64, u64)>;
/// Per (service, window start), every metric record's (count, errors).
pub type Windows = BTreeMap<WindowKey, Rows>;
/// (service, kind, window start) of every alert.
pub type Alerts = BTreeSet<(String, String, String)>;

/// The windows starting before `before`.
pub fn windows(metrics: &[Consumed], before: i64) -> Windows {
    let mut out = Windows::new();
    for m in metrics {
        let v: Value = m.json();
        let start = v["metric.window.start"].as_i64().unwrap();
        if start < before {
            let service = v["service.name"].as_str().unwrap().to_owned();
            let counts = (
                v["count"].as_u64().unwrap(),
                v["error_count"].as_u64().unwrap(),
            );
            out.entry((service, start)).or_default().push(counts);
        }
    }
    out
}

/// Every alert on `topic`.
pub fn alerts(topic: &str) -> Alerts {
    consume(topic, 1, Duration::from_secs(20), Duration::from_secs(3))
        .iter()
        .map(Consumed::json)
        .map(|a: Value| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            let window = a["alert.window.start"].to_string();
            (field("service.name"), field("alert.kind"), window)
        })
        .collect()
}

/// Windows that came out as more than one record.
pub fn split(windows: &Windows) -> Vec<(&WindowKey, &Rows)> {
    windows.iter().filter(|(_, rows)| rows.len() != 1).collect()
}

/// The windows in which `left` and `right` differ, with both sides' rows.
pub fn differences<'a>(
    left: &'a Windows,
    right: &'a Windows,
) -> Vec<(&'a WindowKey, Option<&'a Rows>, Option<&'a Rows>)> {
    let keys: BTreeSet<&WindowKey> = left.keys().chain(right.keys()).collect();
    keys.into_iter()
        .filter(|k| left.get(*k) != right.get(*k))
        .map(|k| (k, left.get(k), right.get(k)))
        .collect()
}

/// The bundled chain as plugins tables: normalize → dedup → metrics (role metrics, logs
/// flow on if it fails), with `metrics_extra` (more keys of the metrics table, then
/// perhaps its `[plugins.config]`) after it.
pub fn chain_toml(metrics_extra: &str) -> String {
    let mut c = String::new();
    for name in ["normalize", "dedup", "metrics"] {
        c.push_str(&format!(
            "\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n",
            super::plugin(name).display()
        ));
    }
    c.push_str("role = \"metrics\"\non_failure = \"pass_through\"\n");
    c.push_str(metrics_extra);
    c
}
