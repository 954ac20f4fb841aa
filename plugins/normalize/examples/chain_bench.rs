//! Native micro-benchmark of the default chain (normalize → dedup → metrics) on generated
//! ~300-byte log lines, without wasm and without Kafka: the ceiling the plugin logic
//! itself sets. Host decoding (JSON → attributes) and packing each batch happen before the
//! clock starts; each stage then takes and returns packed batches, as the host's calls do.
//!
//! `cargo run --release -p sluice-normalize --example chain_bench [records] [runs]`

use sluice_dedup::Dedup;
use sluice_metrics::Metrics;
use sluice_normalize::Normalize;
use sluice_normalize::testing::host_record;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{PackedPlugin, Record, packed};
use std::time::Instant;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_795_600_800 * S;
const BATCH: usize = 500;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The traffic mix of the host's generator: mostly JSON, some logfmt and plain text,
/// ~5 % exact duplicates.
fn lines(n: usize, seed: u64) -> (Vec<String>, usize) {
    const SERVICES: [&str; 6] = [
        "checkout",
        "search",
        "auth",
        "billing",
        "inventory",
        "gateway",
    ];
    const LEVELS: [&str; 5] = ["info", "info", "info", "warn", "error"];
    let mut rng = Rng(seed);
    let mut out: Vec<String> = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        let ms = i as i64 * 3;
        let (s, m) = ((ms / 1000) % 60, ms % 1000);
        let svc = SERVICES[rng.below(6) as usize];
        let lvl = LEVELS[rng.below(5) as usize];
        let line = match rng.below(100) {
            0..5 if !out.is_empty() => {
                out[out.len() - 1 - rng.below(out.len().min(50) as u64) as usize].clone()
            }
            5..10 => format!(
                "ts=2026-11-25T10:{:02}:{s:02}.{m:03}Z level={lvl} service={svc} host=web-{} msg=\"cache refresh done\" duration={}ms",
                (ms / 60_000) % 60,
                rng.below(8),
                rng.below(900)
            ),
            10..15 => format!(
                "2026-11-25 10:{:02}:{s:02},{m:03} {} [worker-{}] com.example.{svc}.Job - batch {} finished",
                (ms / 60_000) % 60,
                lvl.to_uppercase(),
                rng.below(16),
                rng.next() % 100_000
            ),
            _ => format!(
                r#"{{"ts":"2026-11-25T10:{:02}:{s:02}.{m:03}Z","level":"{lvl}","service":"{svc}","host":"web-{}","msg":"payment failed","trace_id":"{:032x}","span_id":"{:016x}","http":{{"method":"POST","path":"/pay","status":{}}},"duration_ms":{}.{},"event_id":"{:016x}"}}"#,
                (ms / 60_000) % 60,
                rng.below(8),
                u128::from(rng.next()) << 64 | u128::from(rng.next()),
                rng.next(),
                [200, 200, 201, 404, 502][rng.below(5) as usize],
                rng.below(2000),
                rng.below(10),
                rng.next()
            ),
        };
        bytes += line.len();
        out.push(line);
    }
    (out, bytes)
}

fn batches(lines: &[String]) -> Vec<Vec<Record>> {
    lines
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let offset = (b * BATCH + i) as i64;
                    host_record(
                        l,
                        "logs",
                        offset,
                        T0 + offset * 1_000_000,
                        T0 + offset * 1_000_000,
                    )
                })
                .collect()
        })
        .collect()
}

fn packed(batches: Vec<Vec<Record>>) -> Vec<Vec<u8>> {
    batches
        .iter()
        .map(|b| {
            let mut bytes = Vec::new();
            packed::encode(b, &mut bytes);
            bytes
        })
        .collect()
}

fn run<P: PackedPlugin>(config: &str, input: &[Vec<u8>]) -> (f64, Vec<Vec<u8>>) {
    let mut p = NativePlugin::<P>::new(config).unwrap();
    let start = Instant::now();
    let out: Vec<Vec<u8>> = input.iter().map(|b| p.process_packed(b).unwrap()).collect();
    (start.elapsed().as_secs_f64(), out)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200_000);
    let runs = args.get(1).copied().unwrap_or(7);
    let (lines, bytes) = lines(n, 1);
    println!(
        "{n} records, {:.0} bytes/record on average, {runs} runs (first discarded)",
        bytes as f64 / n as f64
    );
    let mut stages: [Vec<f64>; 4] = Default::default();
    for r in 0..=runs {
        let input = packed(batches(&lines));
        let (t_norm, normalized) = run::<Normalize>("{}", &input);
        let (t_dedup, deduped) = run::<Dedup>("{}", &normalized);
        let (t_metrics, _) = run::<Metrics>("{}", &deduped);
        // The chain, one batch through all three stages at a time.
        let mut chain = (
            NativePlugin::<Normalize>::new("{}").unwrap(),
            NativePlugin::<Dedup>::new("{}").unwrap(),
            NativePlugin::<Metrics>::new("{}").unwrap(),
        );
        let start = Instant::now();
        let mut emitted_bytes = 0;
        for b in &input {
            let b = chain.0.process_packed(b).unwrap();
            let b = chain.1.process_packed(&b).unwrap();
            emitted_bytes += chain.2.process_packed(&b).unwrap().len();
        }
        let t_chain = start.elapsed().as_secs_f64();
        std::hint::black_box(emitted_bytes);
        take_recorded();
        if r > 0 {
            for (s, t) in stages.iter_mut().zip([t_norm, t_dedup, t_metrics, t_chain]) {
                s.push(n as f64 / t);
            }
        }
    }
    for (name, rates) in ["normalize", "dedup", "metrics", "chain"]
        .iter()
        .zip(stages)
    {
        let (med, lo, hi) = median(rates);
        println!(
            "{name:>10}: {:>9.0} records/s (min {:.0}, max {:.0}), {:.1} MB/s of input",
            med,
            lo,
            hi,
            med * bytes as f64 / n as f64 / 1e6
        );
    }
}
