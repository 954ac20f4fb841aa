//! `sluice plugin test --spec`: specs of inputs and expected outputs run through the real
//! host, passing and failing, for one plugin and for a config's chain.

mod common;

use common::{output_text as text, plugin_test};

use std::path::PathBuf;

fn spec(name: &str) -> PathBuf {
    // The bundled plugins the specs name must be built.
    common::plugin("normalize");
    common::workspace_root()
        .join("host/tests/specs")
        .join(format!("{name}.toml"))
}

#[test]
fn a_spec_that_holds_passes() {
    let spec = spec("normalize");
    let out = plugin_test(&["--spec", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 passed, 0 failed"), "{}", text(&out));
}

#[test]
fn a_chain_from_a_host_config_runs() {
    common::plugin("dedup");
    common::plugin("metrics");
    let spec = spec("chain");
    let out = plugin_test(&["--spec", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_failing_spec_exits_non_zero_with_a_diff() {
    let spec = spec("failing");
    let out = plugin_test(&["--spec", spec.to_str().unwrap()]);
    let text = text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ok    holds"), "{text}");
    // Counts per route, the nearest output field by field, and what came out.
    assert!(
        text.contains("route `cleaned`: expected 3 outputs, got 2"),
        "{text}"
    );
    assert!(text.contains("- body = \"payment declined\""), "{text}");
    assert!(text.contains("+ body is \"payment failed\""), "{text}");
    assert!(
        text.contains("+ attributes.\"user.id\" is (absent)"),
        "{text}"
    );
    assert!(
        !text.contains("- severity_text"),
        "a field that matched is no diff: {text}"
    );
    // A dead letter the spec did not expect fails its case.
    assert!(text.contains("FAIL  an unexpected dead letter"), "{text}");
    assert!(text.contains("1 passed, 2 failed"), "{text}");
}

#[test]
fn the_command_line_plugin_replaces_the_specs() {
    // The failing spec's own plugin is normalize; the typed fixture upper-cases bodies and
    // so fails `holds` too.
    let typed = common::plugin("fixtures/typed");
    let spec = spec("failing");
    let out = plugin_test(&["--spec", spec.to_str().unwrap(), typed.to_str().unwrap()]);
    let text = text(&out);
    assert!(text.contains("FAIL  holds"), "{text}");
    assert!(
        text.contains("+ body is \"OK\"") || text.contains("body is (absent)"),
        "{text}"
    );
}

#[test]
fn a_misspelt_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(
        &path,
        "[[test]]\nname = \"x\"\ninput = [\"a\"]\n[[test.expect]]\nbdoy = \"a\"\n",
    )
    .unwrap();
    let out = plugin_test(&["--spec", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("bdoy"), "{}", text(&out));
}
