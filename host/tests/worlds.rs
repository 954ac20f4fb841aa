//! The host runs components of both worlds of the contract: `transform` (typed records, for
//! any language) and `transform-packed` (what the Rust SDK builds), with the same meaning.

mod common;

use sluice::batch::Batch;
use sluice::chain::{Chain, ChainOutput, Stage};
use sluice::config::PluginConfig;
use sluice::plugin::{CallFailure, PluginRuntime, WasmStage, World};
use sluice::{Origin, Record, Route, Value};
use std::sync::Arc;
use std::time::Duration;

fn stage(runtime: &PluginRuntime, name: &str) -> WasmStage {
    let config = PluginConfig {
        timeout_ms: 5_000,
        ..common::plugin_config(name)
    };
    let loaded = runtime.load(&config, &config.path).expect("load plugin");
    WasmStage::new(Arc::new(loaded))
}

/// Run one batch through a chain of `stages`.
fn run_chain(stages: Vec<Box<dyn Stage>>, input: Vec<Record>) -> ChainOutput {
    let mut chain = Chain::new(stages, Duration::from_secs(10));
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(input), &mut out);
    out
}

/// Records with every kind of value, so both encodings carry each one across.
fn batch() -> Vec<Record> {
    ["payment failed", "typed:dlq", "ünïcode ok"]
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut r = Record::new(Origin {
                topic: "raw-logs".into(),
                partition: 1,
                offset: 100 + i as i64,
            });
            r.timestamp = 1_764_064_800_000_000_000 + i as i64;
            r.severity_number = 17;
            r.severity_text = "error".into();
            r.body = (*body).into();
            r.set("service.name", "checkout");
            r.set("http.response.status_code", 502i64);
            r.set("latency", 12.5f64);
            r.set("ok", false);
            r.attributes.push(sluice::Attribute {
                key: "raw".into(),
                value: Value::Bytes(vec![0, 255]),
            });
            r
        })
        .collect()
}

#[test]
fn a_typed_world_plugin_runs_with_the_same_meaning() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut typed = stage(&runtime, "fixtures/typed");
    assert_eq!(typed.plugin().world, World::Typed);

    let input = batch();
    let out = typed.process(&input).expect("typed plugin processes");
    assert_eq!(out.len(), 3);
    // Every field of an input survives the trip, apart from what the plugin changed.
    let mut expected = input[0].clone();
    expected.body = "PAYMENT FAILED".into();
    expected.set("typed.attributes", 5i64);
    assert_eq!(out[0], expected);
    assert_eq!(out[1].route, Route::Dlq("asked to dead-letter".into()));
    assert_eq!(out[1].origin(), input[1].origin());
    assert_eq!(out[2].body, "ÜNÏCODE OK");

    let ticked = typed.tick(42).expect("typed plugin ticks");
    assert_eq!(ticked.len(), 1);
    assert_eq!(
        (ticked[0].route.clone(), ticked[0].timestamp),
        (Route::Metrics, 42)
    );

    // In a chain, its dead letter is routed like any other plugin's.
    let out = run_chain(vec![Box::new(typed)], batch());
    assert_eq!(out.records().len(), 2);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(
        out.dead[0].1, "plugin `typed`: asked to dead-letter",
        "the reason names the plugin"
    );
}

#[test]
fn sdk_plugins_use_the_packed_world_and_keep_every_field() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    // The hostile fixture passes ordinary records through unchanged.
    let mut packed = stage(&runtime, "fixtures/hostile");
    assert_eq!(packed.plugin().world, World::Packed);
    let input = batch();
    assert_eq!(
        packed.process(&input).expect("packed plugin processes"),
        input
    );
}

#[test]
fn a_malformed_packed_batch_fails_the_call_with_where_and_keeps_the_host() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut malformed = stage(&runtime, "fixtures/malformed");
    assert_eq!(malformed.plugin().world, World::Packed);

    let instantiations = |stage: &WasmStage| {
        stage
            .plugin()
            .stats
            .instantiations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let failure = malformed.process(&batch()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        CallFailure::Error {
            plugin: "malformed".into(),
            message: "the plugin returned malformed packed batch at byte 4: record count exceeds the batch size".into(),
        }
        .to_string()
    );
    let after_first_call = instantiations(&malformed);
    let failure = malformed.tick(7).unwrap_err();
    assert!(
        failure
            .to_string()
            .ends_with("malformed packed batch at byte 25: truncated"),
        "{failure}"
    );
    // A bad answer is the plugin's error, not a trap: the instance stays.
    assert_eq!(instantiations(&malformed), after_first_call);

    // In a chain, the whole input is dead-lettered with that reason.
    let out = run_chain(vec![Box::new(malformed)], batch());
    assert!(out.records().is_empty());
    assert_eq!(out.dead.len(), 3);
    assert!(
        out.dead[0].1.contains("record count exceeds"),
        "{}",
        out.dead[0].1
    );
}

#[test]
fn batches_pass_between_plugins_of_either_world_unchanged() {
    let runtime = PluginRuntime::new(8, 64).unwrap();
    // Packed to packed (handed over as bytes), packed to typed, typed to packed.
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(stage(&runtime, "fixtures/hostile")),
        Box::new(stage(&runtime, "fixtures/hostile")),
        Box::new(stage(&runtime, "fixtures/typed")),
        Box::new(stage(&runtime, "fixtures/hostile")),
    ];
    let input = batch();
    let out = run_chain(stages, input.clone());
    assert!(out.failures.is_empty(), "{:?}", out.failures);

    // The hostile fixture passes ordinary records through, so the chain's output is the
    // typed plugin's alone.
    let (expected_dead, expected_routed): (Vec<Record>, Vec<Record>) =
        stage(&runtime, "fixtures/typed")
            .process(&input)
            .unwrap()
            .into_iter()
            .partition(|r| matches!(r.route, Route::Dlq(_)));
    assert_eq!(out.records(), expected_routed);
    assert_eq!(out.records().len(), 2);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0].0.body, expected_dead[0].body);
    assert_eq!(out.dead[0].1, "plugin `typed`: asked to dead-letter");
}

#[test]
fn a_malformed_batch_never_reaches_the_next_plugin() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let next = stage(&runtime, "fixtures/hostile");
    let next_stats = next.plugin().stats.clone();
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(stage(&runtime, "fixtures/malformed")),
        Box::new(next),
    ];
    let out = run_chain(stages, batch());
    assert_eq!(out.dead.len(), 3);
    assert!(
        out.dead[0].1.starts_with("plugin `malformed`"),
        "the failure is the malformed plugin's: {}",
        out.dead[0].1
    );
    let calls_to_next = next_stats
        .records_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls_to_next, 0, "the next plugin was never called");
}

fn input(bodies: &[&str]) -> Vec<Record> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut r = Record::new(Origin {
                topic: "raw-logs".into(),
                partition: 1,
                offset: 100 + i as i64,
            });
            r.timestamp = 1_764_064_800_000_000_000 + i as i64;
            r.body = (*body).into();
            r
        })
        .collect()
}

const NEVER_GIVEN: &str =
    "was never given to it: copy the origin of the input record it derives from";

#[test]
fn a_typed_plugin_cannot_forge_or_forget_an_origin() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let typed = stage(&runtime, "fixtures/typed");
    let stats = typed.plugin().stats.clone();
    let mut chain = Chain::new(vec![Box::new(typed)], Duration::from_secs(10));
    let mut out = ChainOutput::default();
    let batch = input(&["ok", "typed:forge", "typed:no-origin", "fine"]);
    chain.process(Batch::Records(batch.clone()), &mut out);

    let delivered: Vec<String> = out.records().into_iter().map(|r| r.body).collect();
    assert_eq!(delivered, ["OK", "FINE"]);
    let reasons: Vec<&str> = out.dead.iter().map(|(_, reason)| reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            format!(
                "plugin `typed`: emitted a record whose origin (raw-logs/1/{}) {NEVER_GIVEN}",
                i64::MAX
            ),
            format!("plugin `typed`: emitted a record whose origin (/0/0) {NEVER_GIVEN}"),
        ]
    );
    // The dead letters point at real input, never at the origin the plugin claimed.
    for (record, _) in &out.dead {
        assert_eq!(record.origin(), batch[3].origin());
    }
    assert_eq!(
        stats
            .foreign_origins
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // Its tick emits from an origin it was given: delivered.
    let mut out = ChainOutput::default();
    chain.tick(true, &mut out);
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    assert_eq!(out.routed.len(), 1);
    assert_eq!(out.routed[0].route, Route::Metrics);
}

#[test]
fn a_packed_plugin_cannot_forge_an_origin_in_process_or_tick() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut chain = Chain::new(
        vec![Box::new(stage(&runtime, "fixtures/hostile"))],
        Duration::from_secs(10),
    );
    let mut out = ChainOutput::default();
    let first = input(&["a", "hostile:forge", "c"]);
    chain.process(Batch::Records(first.clone()), &mut out);
    let delivered: Vec<String> = out.records().into_iter().map(|r| r.body).collect();
    assert_eq!(delivered, ["a", "c"]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(
        out.dead[0].1,
        format!(
            "plugin `hostile`: emitted a record whose origin (raw-logs/1/{}) {NEVER_GIVEN}",
            i64::MAX
        )
    );
    assert_eq!(out.dead[0].0.body, "forged from hostile:forge");

    // A later batch, then a tick emitting from the earlier batch's origin (accepted: it
    // was given to this stage before) and from a forged one (dead-lettered).
    let mut out = ChainOutput::default();
    let mut second = input(&["d"]);
    second[0] = Record::new(Origin {
        offset: 200,
        ..first[0].origin().clone()
    });
    chain.process(Batch::Records(second), &mut out);
    assert_eq!(out.records().len(), 1);
    let mut out = ChainOutput::default();
    chain.tick(true, &mut out);
    let delivered = out.records();
    assert_eq!(delivered.len(), 1, "{:?}", out.dead);
    assert_eq!(delivered[0].body, "tick, genuine origin");
    assert_eq!(delivered[0].origin(), first[1].origin());
    assert_eq!(out.dead.len(), 1);
    assert!(out.dead[0].1.contains(NEVER_GIVEN), "{}", out.dead[0].1);
    assert_eq!(out.dead[0].0.origin().offset, 200, "the last origin given");
}
