//! Anomaly detection on closed windows, per service: error-rate and p99-latency spikes.
//!
//! Each metric keeps an exponentially weighted moving average of its value and of its
//! absolute deviation from that average. A window is scored twice:
//!
//! - against history: `z_hist = (x - mean) / scale`, where `scale` is the larger of
//!   `1.2533 · deviation` (the normal-equivalent standard deviation of a mean absolute
//!   deviation) and a floor;
//! - against counting noise: the number of events behind the spike (errors; requests
//!   slower than the baseline p99) is compared with the number the baseline predicts,
//!   on the Anscombe scale `z_count = 2(√(k+3/8) − √(λ+3/8))`, where a Poisson count is
//!   nearly standard normal even for small `λ`. This is what keeps services with few
//!   records per window quiet: two slow requests out of sixty are a large p99 change but
//!   no evidence of anything.
//!
//! The alert's z-score is the smaller of the two; it must reach the threshold, the
//! absolute floors must hold, and the warm-up must be over. Anomalous windows are folded
//! into the baseline at a reduced weight, so a long incident does not become normal at
//! once but a lasting shift is eventually learnt.

use crate::sketch::DdSketch;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub enabled: bool,
    /// Windows a service must have before it can alert.
    pub warmup_windows: u32,
    /// EWMA weight of a normal window.
    pub ewma_alpha: f64,
    /// Weight of an anomalous window, relative to `ewma_alpha`.
    pub anomaly_weight: f64,
    pub zscore_threshold: f64,
    /// At or above this z-score the alert is `critical`, else `warning`.
    pub critical_zscore: f64,
    /// Error-rate spikes also need this rate and this many errors in the window.
    pub min_error_rate: f64,
    pub min_errors: u64,
    /// p99 spikes also need p99 this far above the baseline, and enough samples.
    pub min_p99_increase_ms: f64,
    pub min_latency_samples: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            warmup_windows: 5,
            ewma_alpha: 0.1,
            anomaly_weight: 0.1,
            zscore_threshold: 4.0,
            critical_zscore: 8.0,
            min_error_rate: 0.05,
            min_errors: 5,
            min_p99_increase_ms: 50.0,
            min_latency_samples: 20,
        }
    }
}

/// Normal-equivalent standard deviation per unit of mean absolute deviation (√(π/2)).
const MAD_TO_SIGMA: f64 = 1.2533;

/// EWMA of a value and of its absolute deviation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub deviation: f64,
    pub windows: u32,
}

impl Baseline {
    pub fn scale(&self) -> f64 {
        MAD_TO_SIGMA * self.deviation
    }

    /// Fold in `x` with weight `alpha`; during the first windows the weight is `1/n` so
    /// the baseline starts as a plain average rather than the first value.
    fn update(&mut self, x: f64, alpha: f64) {
        self.windows += 1;
        if self.windows == 1 {
            self.mean = x;
            self.deviation = 0.0;
            return;
        }
        let w = alpha.max(1.0 / f64::from(self.windows)).min(1.0);
        let d = (x - self.mean).abs();
        self.mean += w * (x - self.mean);
        self.deviation += w * (d - self.deviation);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ErrorRate,
    LatencyP99,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ErrorRate => "error_rate_spike",
            Kind::LatencyP99 => "latency_p99_spike",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anomaly {
    pub kind: Kind,
    pub observed: f64,
    pub baseline: f64,
    pub zscore: f64,
    pub critical: bool,
}

/// What the detector needs from one closed window of one service.
#[derive(Debug, Clone, Copy)]
pub struct WindowStats<'a> {
    pub count: u64,
    pub errors: u64,
    pub latency: &'a DdSketch,
}

/// A Poisson count `k` against its expectation `lambda`, on the Anscombe scale.
pub fn count_z(k: u64, lambda: f64) -> f64 {
    2.0 * ((k as f64 + 0.375).sqrt() - (lambda.max(0.0) + 0.375).sqrt())
}

/// One service's baselines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceDetector {
    pub error_rate: Baseline,
    pub p99: Baseline,
}

impl ServiceDetector {
    /// Score a closed window against the baselines, then fold it in. Windows must come
    /// in event-time order.
    pub fn observe(&mut self, cfg: &DetectConfig, w: WindowStats, out: &mut Vec<Anomaly>) {
        if w.count == 0 {
            return;
        }
        let rate = w.errors as f64 / w.count as f64;
        let b = self.error_rate;
        let z_hist = (rate - b.mean) / b.scale().max(1e-3);
        let z = z_hist.min(count_z(w.errors, b.mean * w.count as f64));
        let spike = b.windows >= cfg.warmup_windows
            && z >= cfg.zscore_threshold
            && rate >= cfg.min_error_rate
            && w.errors >= cfg.min_errors;
        if spike {
            out.push(self.anomaly(cfg, Kind::ErrorRate, rate, b.mean, z));
        }
        self.error_rate.update(rate, weight(cfg, spike));

        let samples = w.latency.count();
        let Some(p99) = w
            .latency
            .quantile(0.99)
            .filter(|_| samples >= cfg.min_latency_samples)
        else {
            return;
        };
        let b = self.p99;
        // Floor: 1 ms or 5 % of the baseline, whichever is larger.
        let z_hist = (p99 - b.mean) / b.scale().max(0.05 * b.mean).max(1.0);
        // About 1 % of requests (at least one) exceed the baseline p99 in a normal window.
        let expected_slow = (0.01 * samples as f64).max(1.0);
        let z = z_hist.min(count_z(w.latency.count_above(b.mean), expected_slow));
        let spike = b.windows >= cfg.warmup_windows
            && z >= cfg.zscore_threshold
            && p99 - b.mean >= cfg.min_p99_increase_ms;
        if spike {
            out.push(self.anomaly(cfg, Kind::LatencyP99, p99, b.mean, z));
        }
        self.p99.update(p99, weight(cfg, spike));
    }

    fn anomaly(
        &self,
        cfg: &DetectConfig,
        kind: Kind,
        observed: f64,
        baseline: f64,
        z: f64,
    ) -> Anomaly {
        Anomaly {
            kind,
            observed,
            baseline,
            zscore: z,
            critical: z >= cfg.critical_zscore,
        }
    }
}

fn weight(cfg: &DetectConfig, anomalous: bool) -> f64 {
    if anomalous {
        cfg.ewma_alpha * cfg.anomaly_weight
    } else {
        cfg.ewma_alpha
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of `count` records, `errors` of them errors, latencies 1..=count ms
    /// scaled so that the p99 is about `p99` ms.
    fn window(count: u64, errors: u64, p99: f64, sketch: &mut DdSketch) -> WindowStats<'_> {
        *sketch = DdSketch::new(0.01, 2048);
        for i in 1..=count {
            sketch.add(i as f64 * p99 / (0.99 * count as f64));
        }
        WindowStats {
            count,
            errors,
            latency: sketch,
        }
    }

    #[test]
    fn count_significance() {
        assert!(count_z(10, 10.0).abs() < 1e-12);
        assert!(count_z(7, 1.14) < 4.0); // 7 errors where ~1 is usual: not enough alone
        assert!(count_z(90, 3.0) > 8.0);
    }

    #[test]
    fn warmup_then_spikes() {
        let cfg = DetectConfig::default();
        let mut d = ServiceDetector::default();
        let mut out = Vec::new();
        // A spike during warm-up is not reported.
        let s = &mut DdSketch::new(0.01, 1);
        let mut young = ServiceDetector::default();
        for _ in 0..4 {
            young.observe(&cfg, window(1000, 10, 100.0, s), &mut out);
        }
        young.observe(&cfg, window(1000, 500, 900.0, s), &mut out);
        assert!(out.is_empty());
        for i in 0..20 {
            d.observe(
                &cfg,
                window(1000, 10 + i % 3, 100.0 + (i % 5) as f64, s),
                &mut out,
            );
        }
        assert!(out.is_empty());
        d.observe(&cfg, window(1000, 200, 400.0, s), &mut out);
        let kinds: Vec<Kind> = out.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [Kind::ErrorRate, Kind::LatencyP99]);
        assert!(out.iter().all(|a| a.critical));
        // The anomaly barely moved the baseline.
        assert!(d.error_rate.mean < 0.03, "{}", d.error_rate.mean);
    }

    #[test]
    fn floors_suppress_small_absolute_changes() {
        let cfg = DetectConfig::default();
        let mut d = ServiceDetector::default();
        let mut out = Vec::new();
        let s = &mut DdSketch::new(0.01, 1);
        for _ in 0..10 {
            d.observe(&cfg, window(1000, 0, 10.0, s), &mut out);
        }
        // 4 errors (0.4 %) and +40 ms are large z-scores but below the floors.
        d.observe(&cfg, window(1000, 4, 50.0, s), &mut out);
        d.observe(&cfg, window(20, 4, 12.0, s), &mut out); // 20 % but only 4 errors
        assert!(out.is_empty(), "{out:?}");
    }
}
