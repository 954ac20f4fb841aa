//! `sluice plugin new` for each language: the generated project builds and passes its own
//! spec unchanged. The Python and JavaScript toolchains are those dev/plugin-toolchains
//! installs (dev/build-plugins runs it); without them these tests fail, never skip.

mod common;

use std::path::Path;
use std::process::Command;

fn sluice(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sluice {args:?}: {text}");
    text
}

fn new_builds_and_passes_its_spec(lang: &str) {
    let root = common::workspace_root();
    let tools = root.join("target/toolchains");
    let (py, js) = (
        tools.join("py/bin/componentize-py"),
        tools.join("js/node_modules/.bin/componentize-js"),
    );
    for tool in [&py, &js] {
        assert!(
            tool.exists(),
            "{} is missing: run dev/plugin-toolchains",
            tool.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hello-{lang}");
    sluice(&["plugin", "new", &name, "--lang", lang], dir.path());
    let project = dir.path().join(&name);
    let build = Command::new(project.join("build.sh"))
        .env("COMPONENTIZE_PY", &py)
        .env("COMPONENTIZE_JS", &js)
        // Rust: the generated project's dependencies, compiled once for every run.
        .env("CARGO_TARGET_DIR", root.join("target/plugin-new"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{name}/build.sh: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let report = sluice(&["plugin", "test", "--spec", "test.toml"], &project);
    assert!(report.contains("4 passed, 0 failed"), "{report}");
}

#[test]
fn a_new_rust_plugin_passes_its_spec() {
    new_builds_and_passes_its_spec("rust");
}

#[test]
fn a_new_python_plugin_passes_its_spec() {
    new_builds_and_passes_its_spec("python");
}

#[test]
fn a_new_js_plugin_passes_its_spec() {
    new_builds_and_passes_its_spec("js");
}
