//! Deterministic traffic for the metrics tests.
#![allow(dead_code)]

use sluice_plugin_sdk::{Origin, Record, Value, severity};

pub const S: i64 = 1_000_000_000;
pub const T0: i64 = 1_795_600_800 * S; // 2026-11-25T10:00:00Z, a window boundary

/// SplitMix64: a tiny seeded PRNG, the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    pub fn exp(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
    /// Log-normal latency in ms with the given median.
    pub fn latency_ms(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// A record as normalize emits it.
pub fn record(service: &str, t: i64, error: bool, latency_ms: Option<f64>) -> Record {
    let mut r = Record::new(Origin {
        topic: "logs".into(),
        partition: 0,
        offset: t / 1000,
    });
    r.timestamp = t;
    r.observed_timestamp = t;
    (r.severity_number, r.severity_text) = if error {
        (severity::ERROR, "error".into())
    } else {
        (severity::INFO, "info".into())
    };
    r.set("log.level", r.severity_text.clone());
    r.set("service.name", service);
    if let Some(ms) = latency_ms {
        r.set("event.duration", Value::Int((ms * 1e6).round() as i64));
        r.set("latency_ms", Value::Float(ms));
    }
    r
}

/// Steady Poisson traffic for one service: `rate` records/s from `from` for `secs`
/// seconds, error probability `p_err`, log-normal latency.
pub fn steady(
    rng: &mut Rng,
    service: &str,
    from: i64,
    secs: i64,
    rate: f64,
    p_err: f64,
    median_ms: f64,
) -> Vec<Record> {
    let mut out = Vec::new();
    let mut t = from as f64;
    let end = (from + secs * S) as f64;
    loop {
        t += rng.exp(rate) * S as f64;
        if t >= end {
            return out;
        }
        let error = rng.unit() < p_err;
        let ms = rng.latency_ms(median_ms, 0.5);
        out.push(record(service, t as i64, error, Some(ms)));
    }
}

pub fn get_i(r: &Record, k: &str) -> i64 {
    r.get(k)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{k} missing"))
}

pub fn get_f(r: &Record, k: &str) -> f64 {
    r.get(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{k} missing"))
}
