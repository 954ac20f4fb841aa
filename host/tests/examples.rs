//! The example plugins in other languages (plugins/examples/: Python built with
//! componentize-py, JavaScript with componentize-js) pass their own specs through the real
//! host, after normalize, and so do their Rust twins (rust-redact, rust-filter), which
//! implement the same rules. They are built by dev/build-plugins; a missing one fails
//! here, never skips.

mod common;

use std::process::Command;

fn spec_passes(example: &str) {
    spec_passes_with(example, example);
}

/// `example`'s spec run with the plugin `plugin` in its place.
fn spec_passes_with(example: &str, plugin: &str) {
    common::plugin("normalize");
    common::plugin(&format!("examples/{plugin}"));
    let root = common::workspace_root();
    let text = std::fs::read_to_string(root.join(format!("plugins/examples/{example}/test.toml")))
        .unwrap()
        .replace("../../../target/", &format!("{}/target/", root.display()))
        .replace(
            &format!("examples/{example}.wasm"),
            &format!("examples/{plugin}.wasm"),
        );
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("test.toml");
    std::fs::write(&spec, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "test", "--spec"])
        .arg(&spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn python_redact_passes_its_spec() {
    spec_passes("python-redact");
}

#[test]
fn js_filter_passes_its_spec() {
    spec_passes("js-filter");
}

#[test]
fn rust_redact_passes_python_redacts_spec() {
    spec_passes_with("python-redact", "rust-redact");
}

#[test]
fn rust_filter_passes_js_filters_spec() {
    spec_passes_with("js-filter", "rust-filter");
}
