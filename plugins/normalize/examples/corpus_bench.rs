//! Native micro-benchmark of normalize alone on the golden corpus (`testdata/input/*`),
//! each file's lines repeated to `records` records: the cost per format, without wasm.
//! Host decoding and packing happen before the clock starts.
//!
//! `cargo run --release -p sluice-normalize --example corpus_bench [records] [runs]`

use sluice_normalize::Normalize;
use sluice_normalize::testing::host_record;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::packed;
use std::path::Path;
use std::time::Instant;

const T0: i64 = 1_795_600_800_000_000_000;
const BATCH: usize = 500;

/// `lines` repeated to `n` records, decoded as the host does and packed per batch.
fn packed_batches(lines: &[&str], n: usize) -> Vec<Vec<u8>> {
    let records: Vec<_> = (0..n)
        .map(|i| host_record(lines[i % lines.len()], "logs", i as i64, T0, T0))
        .collect();
    records
        .chunks(BATCH)
        .map(|b| {
            let mut bytes = Vec::new();
            packed::encode(b, &mut bytes);
            bytes
        })
        .collect()
}

/// Median records/s of `runs` timed passes (one untimed pass first).
fn rate(input: &[Vec<u8>], n: usize, runs: usize) -> f64 {
    let mut rates: Vec<f64> = (0..=runs)
        .map(|_| {
            let mut p = NativePlugin::<Normalize>::new("{}").unwrap();
            let start = Instant::now();
            for b in input {
                std::hint::black_box(p.process_packed(b).unwrap());
            }
            let t = start.elapsed().as_secs_f64();
            take_recorded();
            n as f64 / t
        })
        .skip(1)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let runs = args.get(1).copied().unwrap_or(7);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/input");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(f).unwrap())
        })
        .collect();
    let mut all = Vec::new();
    println!("{n} records per file, {runs} runs (median)");
    for (name, text) in &texts {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
            .collect();
        all.extend(lines.iter().copied());
        let r = rate(&packed_batches(&lines, n), n, runs);
        println!("{name:>12}: {r:>9.0} records/s");
    }
    let r = rate(&packed_batches(&all, n), n, runs);
    println!("{:>12}: {r:>9.0} records/s", "all");
}
