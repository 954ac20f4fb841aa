//! The sandbox holds against a hostile plugin: every misbehaviour is interrupted, reported
//! with the right reason, and the next batch runs on a fresh instance.

mod common;

use sluice::batch::Batch;
use sluice::chain::{Chain, ChainOutput, Stage};
use sluice::config::PluginConfig;
use sluice::plugin::{CallFailure, PluginRuntime, WasmStage};
use sluice::{Origin, Record};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn hostile(runtime: &PluginRuntime, timeout_ms: u64, memory_limit_mb: u64) -> WasmStage {
    let config = PluginConfig {
        timeout_ms,
        memory_limit_mb,
        ..common::plugin_config("fixtures/hostile")
    };
    let loaded = runtime.load(&config, &config.path).expect("load hostile");
    WasmStage::new(Arc::new(loaded))
}

fn batch(bodies: &[&str]) -> Vec<Record> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut r = Record::new(Origin {
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
            });
            r.body = (*body).into();
            r
        })
        .collect()
}

fn assert_recovers(stage: &mut WasmStage) {
    let out = stage
        .process(&batch(&["after", "the", "storm"]))
        .expect("a fresh instance handles the next batch");
    let bodies: Vec<&str> = out.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, ["after", "the", "storm"]);
}

#[test]
fn infinite_loop_is_interrupted_at_the_deadline() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 200, 64);
    let started = Instant::now();
    let failure = stage.process(&batch(&["ok", "hostile:loop"])).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            failure,
            CallFailure::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{failure:?}"
    );
    assert!(took < Duration::from_secs(5), "interrupted after {took:?}");
    assert_eq!(stage.plugin().stats.timeouts.load(Ordering::Relaxed), 1);
    assert_recovers(&mut stage);
}

#[test]
fn memory_bomb_hits_the_limit() {
    let runtime = PluginRuntime::new(4, 32).unwrap();
    let mut stage = hostile(&runtime, 5_000, 32);
    let failure = stage.process(&batch(&["hostile:memory"])).unwrap_err();
    assert!(
        matches!(failure, CallFailure::OutOfMemory { limit_mb: 32, .. }),
        "{failure:?}"
    );
    assert_recovers(&mut stage);
}

#[test]
fn deep_recursion_traps_without_overflowing_the_host_stack() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 5_000, 64);
    let failure = stage.process(&batch(&["hostile:recursion"])).unwrap_err();
    match &failure {
        CallFailure::Trap { message, .. } => assert!(message.contains("stack"), "{message}"),
        other => panic!("expected a stack-overflow trap, got {other:?}"),
    }
    assert_recovers(&mut stage);
    // Big frames exhaust the guest's own stack in linear memory first: still just a trap.
    let failure = stage
        .process(&batch(&["hostile:shadow-stack"]))
        .unwrap_err();
    assert!(matches!(failure, CallFailure::Trap { .. }), "{failure:?}");
    assert_recovers(&mut stage);
}

#[test]
fn trap_is_reported_and_the_instance_replaced() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 1_000, 64);
    let failure = stage.process(&batch(&["hostile:trap"])).unwrap_err();
    assert!(matches!(failure, CallFailure::Trap { .. }), "{failure:?}");
    assert_recovers(&mut stage);
    assert_eq!(
        stage.plugin().stats.instantiations.load(Ordering::Relaxed),
        3
    );
}

#[test]
fn huge_output_fails_the_call_not_the_host() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 10_000, 64);
    let failure = stage.process(&batch(&["hostile:huge"])).unwrap_err();
    assert!(
        matches!(
            failure,
            CallFailure::OutOfMemory { .. } | CallFailure::TooManyOutputs { .. }
        ),
        "{failure:?}"
    );
    assert_recovers(&mut stage);
}

#[test]
fn plugin_error_keeps_the_instance() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 1_000, 64);
    let failure = stage.process(&batch(&["hostile:error"])).unwrap_err();
    assert_eq!(
        failure,
        CallFailure::Error {
            plugin: "hostile".into(),
            message: "asked to fail".into()
        }
    );
    assert_recovers(&mut stage);
    assert_eq!(
        stage.plugin().stats.instantiations.load(Ordering::Relaxed),
        2
    );
}

#[test]
fn failing_init_is_a_load_error_naming_the_plugin() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut table = toml::Table::new();
    table.insert("fail_init".into(), toml::Value::Boolean(true));
    let config = PluginConfig {
        name: "picky".into(),
        path: common::plugin("fixtures/hostile"),
        timeout_ms: 1_000,
        memory_limit_mb: 64,
        max_output_factor: 16,
        on_failure: Default::default(),
        role: None,
        instances: None,
        config: table,
    };
    let err = runtime
        .load(&config, &config.path)
        .err()
        .expect("init fails");
    let msg = err.to_string();
    assert!(msg.contains("picky") && msg.contains("fail_init"), "{msg}");
}

#[test]
fn a_failing_stage_dead_letters_its_input_and_the_chain_goes_on() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let stages: Vec<Box<dyn Stage>> = vec![Box::new(hostile(&runtime, 1_000, 64))];
    let mut chain = Chain::new(stages, Duration::from_secs(60));
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(batch(&["a", "hostile:trap", "c"])), &mut out);
    assert!(out.records().is_empty());
    assert_eq!(out.dead.len(), 3);
    assert!(
        out.dead
            .iter()
            .all(|(_, reason)| reason.contains("trapped"))
    );
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(batch(&["d", "e"])), &mut out);
    assert_eq!(out.records().len(), 2);
    assert!(out.dead.is_empty());
}

#[test]
fn a_pass_through_stage_lets_its_input_continue_when_it_fails() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut config = PluginConfig {
        name: "observer".into(),
        path: common::plugin("fixtures/hostile"),
        timeout_ms: 1_000,
        memory_limit_mb: 64,
        max_output_factor: 16,
        on_failure: sluice::config::OnFailure::PassThrough,
        role: None,
        instances: None,
        config: toml::Table::new(),
    };
    let observer = runtime.load(&config, &config.path.clone()).unwrap();
    config.name = "after".into();
    config.on_failure = sluice::config::OnFailure::DeadLetter;
    let after = runtime.load(&config, &config.path.clone()).unwrap();
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(WasmStage::new(Arc::new(observer))),
        Box::new(WasmStage::new(Arc::new(after))),
    ];
    let mut chain = Chain::new(stages, Duration::from_secs(60));
    let mut out = ChainOutput::default();
    // "hostile:error" fails the observer; the batch goes on to `after`, which passes
    // everything but that trigger on… and fails too, dead-lettering the batch there.
    chain.process(Batch::Records(batch(&["a", "b"])), &mut out);
    assert_eq!(out.records().len(), 2);
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(batch(&["a", "hostile:error"])), &mut out);
    assert_eq!(out.failures.len(), 2, "{:?}", out.failures);
    assert_eq!(out.failures[0].stage, "observer");
    assert!(
        out.dead
            .iter()
            .all(|(_, reason)| reason.contains("`after`"))
    );
}

#[test]
fn sleeping_past_the_deadline_times_out_and_the_batch_is_dead_lettered() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let stage = hostile(&runtime, 200, 64);
    let stats = stage.plugin().stats.clone();
    let mut chain = Chain::new(vec![Box::new(stage)], Duration::from_secs(60));
    let mut out = ChainOutput::default();
    let started = Instant::now();
    // The guest's std::thread::sleep(60 s) waits on a WASI clock, in the host.
    chain.process(
        Batch::Records(batch(&["a", "hostile:sleep", "c"])),
        &mut out,
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a 200 ms call ran for {took:?}"
    );
    assert!(
        matches!(
            out.failures.as_slice(),
            [failure] if failure.reason == "plugin `hostile` timed out after 200 ms"
        ),
        "{:?}",
        out.failures
    );
    assert_eq!(out.dead.len(), 3);
    assert!(
        out.dead
            .iter()
            .all(|(_, reason)| reason == "plugin `hostile` timed out after 200 ms"),
        "{:?}",
        out.dead
    );
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 1);

    // A fresh instance takes the next batch.
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(batch(&["d", "e"])), &mut out);
    assert_eq!(out.records().len(), 2, "{:?}", out.failures);
    assert_eq!(stats.instantiations.load(Ordering::Relaxed), 3);
}

#[test]
fn a_short_sleep_within_the_deadline_sleeps_and_the_clock_advances() {
    let runtime = PluginRuntime::new(4, 64).unwrap();
    let mut stage = hostile(&runtime, 5_000, 64);
    let out = stage
        .process(&batch(&["hostile:nap"]))
        .expect("a nap is fine");
    let napped: u64 = out[0]
        .body
        .strip_prefix("napped ")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {:?}", out[0].body));
    assert!(
        napped >= 20,
        "the guest measured {napped} ms for a 20 ms nap"
    );
    assert_eq!(stage.plugin().stats.timeouts.load(Ordering::Relaxed), 0);
}
