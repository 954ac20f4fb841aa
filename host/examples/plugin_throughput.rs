//! Records per second of each bundled plugin, natively and as a wasm component through the
//! host, on the same generated batch. Run with
//! `cargo run --release -p sluice --example plugin_throughput [PLUGIN_DIR…]` after
//! `dev/build-plugins`.
//!
//! Each plugin gets its realistic input: normalize the decoded lines, dedup and metrics the
//! normalized records. As in the pipeline, every batch is packed before timing starts and
//! each call's output stays packed (checked by the host, not decoded). Wasm time includes
//! moving the batch across the component boundary both ways.
//! With several plugin directories (builds of the same plugins, say for the typed and the
//! packed world), each gets a column, measured in the same run.

use sluice::batch::{Batch, PackedBatch};
use sluice::chain::Stage;
use sluice::codec::{self, DecodeOptions, InvalidJson};
use sluice::config::PluginConfig;
use sluice::generator::{GenOptions, Generator};
use sluice::plugin::NativeStage;
use sluice::plugin::{PluginRuntime, WasmStage};
use sluice::{Origin, Record};
use std::sync::Arc;
use std::time::Instant;

// The daemon's allocator, set up as it does, so the numbers match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 200_000;
const BATCH: usize = 1_000;

fn main() {
    sluice::memory::configure_allocators();
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
    .take(RECORDS)
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
    let normalized: Vec<Record> = decoded
        .chunks(BATCH)
        .flat_map(|b| {
            normalize
                .process(&Batch::Records(b.to_vec()))
                .unwrap()
                .into_records()
        })
        .collect();

    let default_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let mut dirs: Vec<std::path::PathBuf> = std::env::args()
        .skip(1)
        .map(std::path::PathBuf::from)
        .collect();
    if dirs.is_empty() {
        dirs.push(default_dir);
    }
    let runtime = PluginRuntime::new(8, 64).unwrap();
    let wasm = |dir: &std::path::Path, name: &str| -> WasmStage {
        let config = PluginConfig {
            name: name.into(),
            path: dir.join(format!("{name}.wasm")),
            timeout_ms: 60_000,
            memory_limit_mb: 64,
            max_output_factor: 16,
            on_failure: Default::default(),
            role: None,
            instances: None,
            config: toml::Table::new(),
        };
        let loaded = runtime
            .load(&config, &config.path)
            .expect("run dev/build-plugins first");
        WasmStage::new(Arc::new(loaded))
    };

    let mut header = String::from("| plugin | native records/s |");
    let mut rule = String::from("|---|---:|");
    for dir in &dirs {
        let world = wasm(dir, "dedup").plugin().world;
        header.push_str(&format!(
            " wasm records/s ({world}, {}) | / native |",
            dir.display()
        ));
        rule.push_str("---:|---:|");
    }
    println!("{header}\n{rule}");
    let cases: [(&str, Box<dyn Stage>, &[Record]); 3] = [
        (
            "normalize",
            Box::new(NativeStage::<sluice_normalize::Normalize>::new("n", "{}").unwrap()),
            &decoded,
        ),
        (
            "dedup",
            Box::new(NativeStage::<sluice_dedup::Dedup>::new("d", "{}").unwrap()),
            &normalized,
        ),
        (
            "metrics",
            Box::new(NativeStage::<sluice_metrics::Metrics>::new("m", "{}").unwrap()),
            &normalized,
        ),
    ];
    for (name, native, input) in cases {
        let native_rate = rate(native, input);
        let mut row = format!("| {name} | {:.0}k |", native_rate / 1e3);
        for dir in &dirs {
            let wasm_rate = rate(Box::new(wasm(dir, name)), input);
            row.push_str(&format!(
                " {:.0}k | {:.2} |",
                wasm_rate / 1e3,
                wasm_rate / native_rate
            ));
        }
        println!("{row}");
    }
}

/// Median of three passes over `input` in packed batches. The stage keeps its state from
/// pass to pass, as a running plugin does.
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
