//! The bundled plugins run through the host as real wasm components and give exactly what
//! their logic gives natively, on the normalize corpus and on generated traffic.

mod common;

use sluice::batch::Batch;
use sluice::chain::{Chain, ChainOutput, Stage};
use sluice::codec::{self, DecodeOptions, InvalidJson};
use sluice::config::PluginConfig;
use sluice::generator::{Burst, GenOptions, Generator};
use sluice::plugin::NativeStage;
use sluice::plugin::{PluginRuntime, WasmStage};
use sluice::{Origin, Record};
use std::sync::Arc;
use std::time::Duration;

fn wasm(runtime: &PluginRuntime, name: &str, config: &str) -> Box<dyn Stage> {
    let plugin = PluginConfig {
        config: serde_json::from_str(config).unwrap(),
        ..common::plugin_config(name)
    };
    Box::new(WasmStage::new(Arc::new(
        runtime.load(&plugin, &plugin.path).unwrap(),
    )))
}

fn native_chain(config: &str) -> Chain {
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(NativeStage::<sluice_normalize::Normalize>::new("normalize", config).unwrap()),
        Box::new(NativeStage::<sluice_dedup::Dedup>::new("dedup", config).unwrap()),
        Box::new(NativeStage::<sluice_metrics::Metrics>::new("metrics", config).unwrap()),
    ];
    Chain::new(stages, Duration::from_secs(3600))
}

fn wasm_chain(runtime: &PluginRuntime, config: &str) -> Chain {
    let stages = vec![
        wasm(runtime, "normalize", config),
        wasm(runtime, "dedup", config),
        wasm(runtime, "metrics", config),
    ];
    Chain::new(stages, Duration::from_secs(3600))
}

/// Decode lines as the host does and run them through `chain` in batches of 500, then
/// close every window. Returns every output as (route, JSON) in order.
fn run(chain: &mut Chain, lines: &[String], observed: i64) -> Vec<(String, String)> {
    let options = DecodeOptions {
        max_message_bytes: 1 << 20,
        invalid_json: InvalidJson::AsText,
    };
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let origin = Origin {
                topic: "raw-logs".into(),
                partition: (i % 3) as i32,
                offset: i as i64,
            };
            codec::decode(line.as_bytes(), origin, observed, observed, &options).unwrap()
        })
        .collect();
    let mut out = ChainOutput::default();
    for batch in records.chunks(500) {
        chain.process(Batch::Records(batch.to_vec()), &mut out);
    }
    chain.tick(true, &mut out);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let mut result: Vec<(String, String)> = out
        .records()
        .iter()
        .map(|r| {
            (
                r.route.name().to_owned(),
                String::from_utf8(codec::record_to_json(r)).unwrap(),
            )
        })
        .collect();
    result.extend(out.dead.iter().map(|(r, reason)| {
        (
            format!("dlq: {reason}"),
            String::from_utf8(codec::record_to_json(r)).unwrap(),
        )
    }));
    result
}

#[test]
fn wasm_chain_matches_native_on_generated_traffic() {
    let start = sluice::generator::parse_start("2026-11-25T10:00:00Z").unwrap();
    let lines: Vec<String> = Generator::new(GenOptions {
        seed: 9,
        start_ns: start,
        events_per_second: 20.0,
        duplicate_ratio: 0.03,
        bursts: vec![Burst {
            service: "payments".into(),
            start_s: 900.0,
            duration_s: 120.0,
            error_ratio: 0.6,
        }],
        ..GenOptions::default()
    })
    .take(30_000)
    .map(|l| l.text)
    .collect();
    let observed = start + 3 * 3600 * 1_000_000_000;
    let runtime = PluginRuntime::new(16, 64).unwrap();
    let native = run(&mut native_chain("{}"), &lines, observed);
    let wasm = run(&mut wasm_chain(&runtime, "{}"), &lines, observed);
    assert_eq!(native.len(), wasm.len());
    for (i, (n, w)) in native.iter().zip(&wasm).enumerate() {
        assert_eq!(n, w, "output {i} differs");
    }
    // The chain did its job: duplicates dropped, metrics and the burst's alerts emitted.
    let count = |route: &str| native.iter().filter(|(r, _)| r == route).count();
    assert!(
        count("cleaned") < 30_000 && count("cleaned") > 28_000,
        "{}",
        count("cleaned")
    );
    assert!(count("metrics") > 100, "{}", count("metrics"));
    let alerts: Vec<&String> = native
        .iter()
        .filter(|(r, _)| r == "alerts")
        .map(|(_, j)| j)
        .collect();
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("\"service.name\":\"payments\"")),
        "no alert for the payments burst: {alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.contains("\"service.name\":\"payments\"")),
        "false alerts: {alerts:?}"
    );
}

#[test]
fn normalize_corpus_gives_the_same_records_as_wasm() {
    let dir = common::workspace_root().join("plugins/normalize/testdata/input");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    assert!(lines.len() > 40);
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let observed = sluice::generator::parse_start("2026-11-25T10:00:00Z").unwrap();
    let native_stage: Vec<Box<dyn Stage>> = vec![Box::new(
        NativeStage::<sluice_normalize::Normalize>::new("normalize", "{}").unwrap(),
    )];
    let native = run(
        &mut Chain::new(native_stage, Duration::from_secs(60)),
        &lines,
        observed,
    );
    let wasm_stage = vec![wasm(&runtime, "normalize", "{}")];
    let wasm = run(
        &mut Chain::new(wasm_stage, Duration::from_secs(60)),
        &lines,
        observed,
    );
    assert_eq!(native, wasm);
    assert_eq!(native.len(), lines.len());
}
