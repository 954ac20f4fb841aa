//! Per-record cost of wasm plugins through the host, one row per plugin and config: the
//! bundled normalize and remap, and the examples in JavaScript, Python and Rust next to
//! each other on the same input. Run with
//! `cargo run --release -p sluice --example plugin_cost [RECORDS]` after
//! `dev/build-plugins` (default 50,000 records: the Python example runs ~10k/s).
//!
//! Input as `plugin_throughput` makes it: generated lines, decoded as the host does;
//! normalize gets them decoded, every other plugin normalized (where they sit in a chain).
//! Every batch (1,000 records) is packed before timing starts; each call's output stays
//! packed. Median of three passes; the stage keeps its state between passes.

use sluice::batch::{Batch, PackedBatch};
use sluice::chain::Stage;
use sluice::codec::{self, DecodeOptions, InvalidJson};
use sluice::config::PluginConfig;
use sluice::generator::{GenOptions, Generator};
use sluice::plugin::NativeStage;
use sluice::plugin::{PluginRuntime, WasmStage};
use sluice::{Origin, Record};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

// The daemon's allocator, set up as it does, so the numbers match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1_000;

/// js-filter's rules (plugins/examples/js-filter/filter.js) in VRL.
const VRL_FILTER: &str = r#"
path = ."url.path"
if includes(["/health", "/healthz", "/readyz", "/livez"], path) ||
   (%severity_number > 0 && %severity_number < 9) { abort }
msg = if %body != "" { %body } else { string(.message) ?? string(.msg) ?? "" }
if includes([401, 403], ."http.response.status_code") ||
   match(msg, r'(?i)\b(login failed|authentication failed|invalid password|access denied)\b') {
  %route = "security"
}
"#;

/// What the remap spec does: a rename, a drop, a route (host/tests/specs/remap.toml).
const VRL_SPEC: &str = r#"
if %severity_number > 0 && %severity_number < 9 { abort }
if exists(."labels.user_id") { ."user.id" = del(."labels.user_id") }
if %severity_number >= 17 { %route = "errors" }
"#;

/// A program that does nothing: the cost of the mapping alone.
const VRL_EMPTY: &str = "null";

struct Case {
    label: &'static str,
    file: &'static str,
    config: String,
    memory_mb: u64,
    normalized: bool,
}

fn case(label: &'static str, file: &'static str, config: String, normalized: bool) -> Case {
    let memory_mb = if file.contains("python") || file.contains("js-") {
        128
    } else {
        64
    };
    Case {
        label,
        file,
        config,
        memory_mb,
        normalized,
    }
}

fn remap(source: &str) -> String {
    format!("source = '''{source}'''")
}

fn main() {
    sluice::memory::configure_allocators();
    let records: usize = std::env::args()
        .nth(1)
        .map_or(50_000, |n| n.parse().expect("RECORDS is a number"));
    let (decoded, normalized) = input(records);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let runtime = PluginRuntime::new(8, 128).unwrap();
    let cases = [
        case("normalize", "normalize.wasm", String::new(), false),
        case("remap: empty program", "remap.wasm", remap(VRL_EMPTY), true),
        case(
            "remap: rename, drop, route",
            "remap.wasm",
            remap(VRL_SPEC),
            true,
        ),
        case(
            "remap: js-filter's rules",
            "remap.wasm",
            remap(VRL_FILTER),
            true,
        ),
        case(
            "filter, Rust",
            "examples/rust-filter.wasm",
            String::new(),
            true,
        ),
        case(
            "filter, JavaScript",
            "examples/js-filter.wasm",
            String::new(),
            true,
        ),
        case(
            "redact, Rust",
            "examples/rust-redact.wasm",
            String::new(),
            true,
        ),
        case(
            "redact, Python",
            "examples/python-redact.wasm",
            String::new(),
            true,
        ),
    ];
    println!("{records} records, batches of {BATCH}\n");
    println!("| plugin | records/s | ns/record |\n|---|---:|---:|");
    for c in cases {
        let path = dir.join(c.file);
        if !path.is_file() {
            println!("| {} | {} missing | |", c.label, c.file);
            continue;
        }
        let config = PluginConfig {
            name: c.file.trim_end_matches(".wasm").replace('/', "-"),
            path: path.clone(),
            timeout_ms: 600_000,
            memory_limit_mb: c.memory_mb,
            max_output_factor: 16,
            on_failure: Default::default(),
            role: None,
            instances: None,
            config: toml::from_str(&c.config).unwrap(),
        };
        let loaded = runtime.load(&config, &path).expect("the plugin loads");
        let stage = Box::new(WasmStage::new(Arc::new(loaded)));
        let rate = rate(stage, if c.normalized { &normalized } else { &decoded });
        println!("| {} | {:.0}k | {:.0} |", c.label, rate / 1e3, 1e9 / rate);
    }
}

/// Generated lines decoded as the host does, and the same after native normalize.
fn input(records: usize) -> (Vec<Record>, Vec<Record>) {
    let start = sluice::generator::parse_start("2026-11-25T10:00:00Z").unwrap();
    let options = DecodeOptions {
        max_message_bytes: 1 << 20,
        invalid_json: InvalidJson::AsText,
    };
    let decoded: Vec<Record> = Generator::new(GenOptions {
        seed: 3,
        start_ns: start,
        events_per_second: 1_000.0,
        duplicate_ratio: 0.02,
        ..GenOptions::default()
    })
    .take(records)
    .enumerate()
    .map(|(i, line)| {
        let origin = Origin {
            topic: "raw-logs".into(),
            partition: 0,
            offset: i as i64,
        };
        codec::decode(line.text.as_bytes(), origin, start, start, &options).unwrap()
    })
    .collect();
    let mut normalize = NativeStage::<sluice_normalize::Normalize>::new("normalize", "{}").unwrap();
    let normalized = decoded
        .chunks(BATCH)
        .flat_map(|b| {
            normalize
                .process(&Batch::Records(b.to_vec()))
                .unwrap()
                .into_records()
        })
        .collect();
    (decoded, normalized)
}

/// Median of three passes over `input` in packed batches.
fn rate(mut stage: Box<dyn Stage>, input: &[Record]) -> f64 {
    let batches: Vec<Batch> = input
        .chunks(BATCH)
        .map(|b| {
            let packed = Batch::Records(b.to_vec()).packed().into_owned();
            Batch::Packed(PackedBatch::new(packed).expect("the host's own batch scans"))
        })
        .collect();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        for batch in &batches {
            std::hint::black_box(stage.process(batch).unwrap());
        }
        rates.push(input.len() as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[1]
}
