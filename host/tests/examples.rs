//! The example plugins in other languages (plugins/examples/: Python built with
//! componentize-py, JavaScript with componentize-js) pass their own specs through the real
//! host, after normalize. They are built by dev/build-plugins; a missing one fails here,
//! never skips.

mod common;

use std::process::Command;

fn spec_passes(example: &str) {
    common::plugin("normalize");
    common::plugin(&format!("examples/{example}"));
    let spec = common::workspace_root().join(format!("plugins/examples/{example}/test.toml"));
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
