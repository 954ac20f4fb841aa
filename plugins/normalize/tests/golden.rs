//! Golden-file tests: every file in `testdata/input/` is decoded line by line as the host
//! would (lines starting with `# ` are comments: where a sample's format comes from), run
//! through the plugin as one batch, and compared with `testdata/golden/<file>.json`.
//! Run with `UPDATE_GOLDEN=1` to rewrite the goldens after an intended change, then review
//! the diff.

use serde_json::{Map, Value as Json, json};
use sluice_normalize::Normalize;
use sluice_normalize::testing::host_record;
use sluice_plugin_sdk::Value;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use std::path::Path;

/// Kafka message time used as the fallback event time (2026-11-25T12:00:00Z).
const KAFKA_TS: i64 = 1_795_608_000_000_000_000;

fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        // Floats are tagged so that 12 and 12.0 differ in the golden.
        Value::Float(f) => json!({ "float": f }),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({ "bytes": b }),
    }
}

fn run_file(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
        .collect();
    let batch = lines
        .iter()
        .enumerate()
        .map(|(i, l)| host_record(l, "logs", i as i64, KAFKA_TS, KAFKA_TS + 1_000_000_000))
        .collect();
    take_recorded();
    let mut plugin = NativePlugin::<Normalize>::new("{}").unwrap();
    let out = plugin.process(batch).unwrap();
    assert_eq!(out.len(), lines.len(), "normalize must never drop a record");
    let records: Vec<Json> = lines
        .iter()
        .zip(&out)
        .map(|(line, r)| {
            assert_eq!(r.route.name(), "cleaned");
            let attributes: Map<String, Json> = r
                .attributes
                .iter()
                .map(|a| (a.key.clone(), value_json(&a.value)))
                .collect();
            assert_eq!(
                attributes.len(),
                r.attributes.len(),
                "duplicate attribute keys in {line}"
            );
            json!({
                "input": line,
                "timestamp": r.timestamp,
                "severity_number": r.severity_number,
                "severity_text": r.severity_text,
                "body": r.body,
                "attributes": attributes,
            })
        })
        .collect();
    json!({ "counters": take_recorded().counters, "records": records })
}

#[test]
fn golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut inputs: Vec<_> = std::fs::read_dir(root.join("input"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty());
    let mut mismatched = Vec::new();
    for input in inputs {
        let name = input.file_stem().unwrap().to_string_lossy().into_owned();
        let golden = root.join("golden").join(format!("{name}.json"));
        let actual = run_file(&input);
        if update {
            let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
            std::fs::write(&golden, text).unwrap();
            continue;
        }
        let expected: Json = serde_json::from_str(
            &std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("missing {golden:?}; run with UPDATE_GOLDEN=1")),
        )
        .unwrap();
        if expected != actual {
            let actual_path = golden.with_extension("actual.json");
            std::fs::write(&actual_path, serde_json::to_string_pretty(&actual).unwrap()).unwrap();
            mismatched.push(format!("{name} (actual output in {actual_path:?})"));
        }
    }
    assert!(mismatched.is_empty(), "golden mismatch: {mismatched:?}");
}
