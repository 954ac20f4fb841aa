//! `sluice plugin new NAME --lang rust|python|js`: a plugin project that builds and passes
//! its own spec as generated. It carries a copy of the contract's WIT (the version this host
//! implements), a build script, the plugin, a spec (`test.toml`) and a README saying how to
//! run it in a pipeline. The plugin measures each record's message and dead-letters records
//! without one: small, but it reads the body and the attributes, adds an attribute, sets a
//! route and keeps origins, which is most of what a real plugin does.

use std::path::{Path, PathBuf};

/// The languages a project can be generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a plugin name: use lowercase letters, digits and dashes, starting with a letter (e.g. `redact-emails`)"
    )]
    Name(String),
    #[error("{0} already exists: choose another name or directory")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

const WIT: &str = include_str!("../../wit/0.2.0/plugin.wit");
const TEST: &str = include_str!("scaffold/test.toml");
const PYTHON: &str = include_str!("scaffold/app.py");
const JS: &str = include_str!("scaffold/plugin.js");
const RUST: &str = include_str!("scaffold/lib.rs");
/// The toolchain versions the generated projects are known to build with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";
const RUST_CHANNEL: &str = "1.95.0";

/// Write the project `NAME/` inside `parent`; returns its directory.
pub fn generate(parent: &Path, name: &str, lang: Lang) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let fill = |text: &str| text.replace("{{name}}", name);
    // Interpreters (CPython, StarlingMonkey) live in the plugin's memory: 64 MiB is tight.
    let limits = match lang {
        Lang::Rust => "",
        Lang::Python | Lang::Js => "memory_limit_mb = 128\ntimeout_ms = 5000\n",
    };
    let mut files = vec![
        ("wit/plugin.wit", WIT.to_owned()),
        ("test.toml", fill(TEST).replace("{{limits}}", limits)),
        ("README.md", fill(&readme(lang, limits))),
        (
            ".gitignore",
            "plugin.wasm\ntarget/\nnode_modules/\n__pycache__/\n".into(),
        ),
    ];
    match lang {
        Lang::Python => {
            files.push(("app.py", fill(PYTHON)));
            files.push(("build.sh", python_build()));
        }
        Lang::Js => {
            files.push(("plugin.js", fill(JS)));
            files.push(("package.json", fill(&package_json())));
            files.push(("build.sh", js_build()));
        }
        Lang::Rust => {
            files.push(("src/lib.rs", fill(RUST)));
            files.push(("Cargo.toml", fill(CARGO_TOML)));
            files.push(("rust-toolchain.toml", rust_toolchain()));
            files.push(("build.sh", fill(&rust_build(name))));
        }
    }
    for (file, text) in files {
        write(&dir.join(file), &text)?;
    }
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let err = |source| ScaffoldError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)?;
    if path.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(())
}

fn python_build() -> String {
    format!(
        r#"#!/bin/sh
# Build plugin.wasm with componentize-py {COMPONENTIZE_PY} (pip install componentize-py=={COMPONENTIZE_PY}),
# or the one $COMPONENTIZE_PY names.
set -eu
cd "$(dirname "$0")"
"${{COMPONENTIZE_PY:-componentize-py}}" -d wit -w transform componentize app -o plugin.wasm
"#
    )
}

fn js_build() -> String {
    r#"#!/bin/sh
# Build plugin.wasm with componentize-js (package.json pins it; `npm install` fetches it),
# or the one $COMPONENTIZE_JS names.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPONENTIZE_JS:-}" ]; then
  [ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund
  COMPONENTIZE_JS=node_modules/.bin/componentize-js
fi
# -d http fetch-event: without it the component imports wasi:http, which Sluice does not give.
"$COMPONENTIZE_JS" plugin.js --wit wit --world-name transform -d http fetch-event -o plugin.wasm
"#
    .into()
}

fn package_json() -> String {
    format!(
        r#"{{
  "name": "{{{{name}}}}",
  "private": true,
  "type": "module",
  "scripts": {{ "build": "./build.sh" }},
  "devDependencies": {{ "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}" }}
}}
"#
    )
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }

[profile.release]
lto = true
codegen-units = 1
strip = true

# A project of its own, also when generated inside another Cargo workspace.
[workspace]
"#;

fn rust_toolchain() -> String {
    format!("[toolchain]\nchannel = \"{RUST_CHANNEL}\"\ntargets = [\"wasm32-wasip2\"]\n")
}

fn rust_build(name: &str) -> String {
    let file = name.replace('-', "_");
    format!(
        r#"#!/bin/sh
# Build plugin.wasm: a component for the wasm32-wasip2 target.
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{file}.wasm" plugin.wasm
"#
    )
}

fn readme(lang: Lang, limits: &str) -> String {
    let (source, build_note) = match lang {
        Lang::Python => (
            "app.py",
            format!(
                "needs componentize-py {COMPONENTIZE_PY}: `pip install componentize-py=={COMPONENTIZE_PY}`"
            ),
        ),
        Lang::Js => (
            "plugin.js",
            format!("needs Node.js and npm; it installs componentize-js {COMPONENTIZE_JS}"),
        ),
        Lang::Rust => (
            "src/lib.rs",
            "needs rustup; the target wasm32-wasip2 comes with rust-toolchain.toml".into(),
        ),
    };
    let limits = limits.replace('\n', "\n    ").trim_end().to_owned();
    format!(
        r#"# {{{{name}}}}

A Sluice transform plugin: it adds `{{{{name}}}}.length` (the length of each record's message)
and dead-letters records without a message. Change `{source}` to make it yours.

    ./build.sh                               # plugin.wasm; {build_note}
    sluice plugin test --spec test.toml      # its tests: exits non-zero on a failure

`test.toml` holds the test cases: inputs, expected fields and routes. Add a case for each
behaviour you add. `wit/plugin.wit` is the contract (sluice:plugin@0.2.0) this plugin is
built against; the record model, routes, errors, origins and state are explained in
Sluice's `docs/plugin-model.md`.

## In a pipeline

Add it to the host config, after normalize if it expects normalized records (the message in
the body, fields renamed), before it if it wants the raw shapes:

    [[plugins]]
    name = "{{{{name}}}}"
    path = "/path/to/{{{{name}}}}/plugin.wasm"
    {limits}

Restart `sluice run` once to add it to the chain. After that, a rebuilt plugin is hot-loaded
while the pipeline runs: build elsewhere and move the file into place
(`cp plugin.wasm plugin.wasm.new && mv plugin.wasm.new /path/to/plugin.wasm`). A broken
build is refused with a log line and the running version keeps serving.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_projects_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["Upper", "1st", "a_b", "a-", "", "a/b"] {
            assert!(matches!(
                generate(dir.path(), bad, Lang::Rust),
                Err(ScaffoldError::Name(_))
            ));
        }
        let made = generate(dir.path(), "my-plugin", Lang::Python).unwrap();
        let spec = std::fs::read_to_string(made.join("test.toml")).unwrap();
        assert!(
            spec.contains("attributes.\"my-plugin.length\" = 5"),
            "{spec}"
        );
        assert!(spec.contains("memory_limit_mb = 128"), "{spec}");
        assert!(!spec.contains("{{"), "{spec}");
        assert!(matches!(
            generate(dir.path(), "my-plugin", Lang::Js),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
