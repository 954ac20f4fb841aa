//! DDSketch (Masson, Rim, Lee — VLDB 2019): a quantile sketch with relative-error
//! guarantees that merges exactly, so partial results from several hosts combine into
//! the sketch of the union.
//!
//! A positive value `x` falls in bucket `i = ceil(log_γ x)` with `γ = (1+α)/(1-α)`;
//! bucket `i` covers `(γ^(i-1), γ^i]` and is represented by `2γ^i/(γ+1)`, which is
//! within relative error `α` of every value in it. Values at or below
//! [`MIN_INDEXABLE`] (zero latencies) are counted apart. Buckets are a dense vector
//! from the lowest used index; beyond `max_bins` the lowest buckets are collapsed
//! (only the lowest quantiles lose accuracy, never p50..p99 of a sane distribution).

use serde::{Deserialize, Serialize};

/// Values at or below this count as zero.
pub const MIN_INDEXABLE: f64 = 1e-9;

#[derive(Debug, Clone, PartialEq)]
pub struct DdSketch {
    alpha: f64,
    ln_gamma: f64,
    max_bins: usize,
    zero: u64,
    /// Index of `bins[0]`.
    offset: i32,
    bins: Vec<u64>,
    count: u64,
}

/// The serialized form: `{"alpha":0.01,"zero":0,"offset":215,"bins":[1,0,3]}` where
/// `bins[j]` counts values in bucket `offset + j`. Also how a sketch is kept in the
/// plugin's state snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire {
    pub alpha: f64,
    pub zero: u64,
    pub offset: i32,
    pub bins: Vec<u64>,
}

impl DdSketch {
    /// A sketch with relative accuracy `alpha` (0 < alpha < 1), at most `max_bins` buckets.
    pub fn new(alpha: f64, max_bins: usize) -> DdSketch {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        DdSketch {
            alpha,
            ln_gamma: gamma.ln(),
            max_bins: max_bins.max(1),
            zero: 0,
            offset: 0,
            bins: Vec::new(),
            count: 0,
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn index(&self, x: f64) -> i32 {
        (x.ln() / self.ln_gamma).ceil() as i32
    }

    fn bucket_value(&self, i: i32) -> f64 {
        let gamma = self.ln_gamma.exp();
        (f64::from(i) * self.ln_gamma).exp() * 2.0 / (gamma + 1.0)
    }

    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    fn add_n(&mut self, x: f64, n: u64) {
        if !x.is_finite() || n == 0 {
            return;
        }
        self.count += n;
        if x <= MIN_INDEXABLE {
            self.zero += n;
            return;
        }
        let i = self.index(x);
        self.add_to_index(i, n);
    }

    fn add_to_index(&mut self, i: i32, n: u64) {
        if self.bins.is_empty() {
            self.offset = i;
            self.bins.push(n);
            return;
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            if self.bins.len() + grow > self.max_bins {
                // Collapsed: the lowest kept bucket absorbs what is below it.
                self.bins[0] += n;
                return;
            }
            self.bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        }
        let j = (i - self.offset) as usize;
        if j >= self.bins.len() {
            self.bins.resize(j + 1, 0);
        }
        self.bins[j] += n;
        self.collapse();
    }

    /// Keep at most `max_bins` buckets by folding the lowest into the first kept one.
    fn collapse(&mut self) {
        if self.bins.len() <= self.max_bins {
            return;
        }
        let excess = self.bins.len() - self.max_bins;
        let folded: u64 = self.bins.drain(..excess).sum();
        self.bins[0] += folded;
        self.offset += excess as i32;
    }

    /// The `q`-quantile (0 ≤ q ≤ 1): within relative error `alpha` of the value of rank
    /// `floor(q·(n-1))` in the sorted input. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        let mut seen = self.zero;
        if rank < seen {
            return Some(0.0);
        }
        for (j, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(self.bucket_value(self.offset + j as i32));
            }
        }
        Some(self.bucket_value(self.offset + self.bins.len() as i32 - 1))
    }

    /// How many values are above `x`, excluding `x`'s own bucket (so an undercount by at
    /// most that bucket: values within relative error `alpha` of `x`).
    pub fn count_above(&self, x: f64) -> u64 {
        if x.is_nan() || x <= MIN_INDEXABLE {
            return self.count - self.zero;
        }
        let i = self.index(x);
        let from = (i64::from(i) - i64::from(self.offset) + 1).max(0) as usize;
        self.bins.iter().skip(from).sum()
    }

    /// Add `other`'s counts to this sketch. Both must have the same `alpha`.
    pub fn merge(&mut self, other: &DdSketch) -> Result<(), String> {
        if (self.alpha - other.alpha).abs() > 1e-12 {
            return Err(format!(
                "cannot merge sketches of accuracy {} and {}",
                self.alpha, other.alpha
            ));
        }
        self.zero += other.zero;
        self.count += other.zero;
        for (j, &c) in other.bins.iter().enumerate() {
            if c > 0 {
                self.count += c;
                self.add_to_index(other.offset + j as i32, c);
            }
        }
        Ok(())
    }

    /// Compact JSON text (see [`Wire`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_wire()).unwrap_or_default()
    }

    pub fn from_json(text: &str, max_bins: usize) -> Result<DdSketch, String> {
        let w: Wire = serde_json::from_str(text).map_err(|e| e.to_string())?;
        DdSketch::from_wire(w, max_bins)
    }

    pub fn to_wire(&self) -> Wire {
        Wire {
            alpha: self.alpha,
            zero: self.zero,
            offset: self.offset,
            bins: self.bins.clone(),
        }
    }

    pub fn from_wire(w: Wire, max_bins: usize) -> Result<DdSketch, String> {
        if !(w.alpha > 0.0 && w.alpha < 1.0) {
            return Err(format!("invalid sketch accuracy {}", w.alpha));
        }
        let mut s = DdSketch::new(w.alpha, max_bins);
        s.zero = w.zero;
        s.count = w.zero + w.bins.iter().sum::<u64>();
        s.offset = w.offset;
        s.bins = w.bins;
        s.collapse();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_within_relative_error() {
        let mut s = DdSketch::new(0.01, 2048);
        let mut v: Vec<f64> = (1..=10_000).map(|i| (i as f64 * 0.37).powf(1.7)).collect();
        for &x in &v {
            s.add(x);
        }
        v.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let (got, want) = (s.quantile(q).unwrap(), exact(&v, q));
            assert!(
                (got - want).abs() <= 0.01 * want + 1e-12,
                "q={q} got={got} want={want}"
            );
        }
    }

    #[test]
    fn zeros_merge_and_round_trip() {
        let mut a = DdSketch::new(0.01, 2048);
        let mut b = DdSketch::new(0.01, 2048);
        let mut both = DdSketch::new(0.01, 2048);
        for i in 0..1000 {
            let x = if i % 10 == 0 { 0.0 } else { i as f64 };
            both.add(x);
            if i % 2 == 0 { a.add(x) } else { b.add(x) }
        }
        a.merge(&DdSketch::from_json(&b.to_json(), 2048).unwrap())
            .unwrap();
        assert_eq!(a, both);
        assert_eq!(a.quantile(0.05), Some(0.0));
        assert_eq!(a.count_above(0.0), 900);
        // 90 values above 899, less those sharing its bucket (899 .. 899·1.02).
        assert!((72..=90).contains(&a.count_above(899.0)));
        assert_eq!(a.count_above(1e9), 0);
        assert!(a.merge(&DdSketch::new(0.02, 10)).is_err());
        assert!(DdSketch::from_json(r#"{"alpha":2,"zero":0,"offset":0,"bins":[]}"#, 9).is_err());
        assert_eq!(DdSketch::new(0.01, 9).quantile(0.5), None);
    }

    #[test]
    fn collapsing_keeps_high_quantiles() {
        let mut s = DdSketch::new(0.01, 64);
        for i in 0..10_000 {
            s.add(1e-6 * 1.5f64.powi(i % 60));
        }
        assert_eq!(s.bins.len(), 64);
        let top = 1e-6 * 1.5f64.powi(59);
        assert!((s.quantile(1.0).unwrap() - top).abs() <= 0.01 * top);
    }
}
