//! The bundled `remap` plugin through the host: its spec (fields renamed, debug lines
//! dropped, errors routed to a named route, a runtime error dead-lettered), a program
//! that does not compile refused at load with VRL's diagnostic, and a running host
//! taking Kafka in to the named route's own topic.

mod common;

use common::{output_text as text, plugin_test};

use common::{
    Host, committed, consume, create_topic, kafka_sink_toml, kafka_source_toml, plugin, produce,
    unique,
};
use std::time::{Duration, Instant};

#[test]
fn the_remap_spec_passes() {
    plugin("normalize");
    plugin("remap");
    let spec = common::workspace_root().join("host/tests/specs/remap.toml");
    let out = plugin_test(&["--spec", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 passed, 0 failed"), "{}", text(&out));
}

#[test]
fn a_program_that_does_not_compile_fails_the_load_with_the_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[[plugins]]\nname = \"remap\"\npath = \"{}\"\n[plugins.config]\nsource = '.n = parse_int(.s)'\n\
             [[test]]\nname = \"x\"\ninput = ['{{\"s\":\"1\"}}']\n",
            plugin("remap").display()
        ),
    )
    .unwrap();
    let out = plugin_test(&["--spec", spec.to_str().unwrap()]);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("remap"), "{text}");
    assert!(text.contains("`source`"), "{text}");
    assert!(text.contains("unhandled fallible assignment"), "{text}");
    assert!(text.contains(".n = parse_int(.s)"), "{text}");
}

const PROGRAM: &str = r#"
if .level == "debug" { abort }
if exists(.user_id) { ."user.id" = del(.user_id) }
if exists(.retries) { .retries = to_int!(.retries) }
if .level == "error" { %route = "errors" }
"#;

/// Kafka in → remap → cleaned, `errors` and dlq each on its own topic; dropped records are
/// committed like delivered ones.
#[test]
fn a_running_host_routes_errors_to_their_own_topic() {
    let (source, cleaned, errors, dlq) = (
        unique("raw"),
        unique("cleaned"),
        unique("errors"),
        unique("dlq"),
    );
    for t in [&source, &cleaned, &errors, &dlq] {
        create_topic(t, 1);
    }
    let mut lines = Vec::new();
    for i in 0..40 {
        let level = ["info", "debug", "error", "warn"][i % 4];
        let retries = if i == 4 { "\"many\"" } else { "1" };
        lines.push(format!(
            r#"{{"seq":{i},"level":"{level}","msg":"m{i}","user_id":"u{i}","retries":{retries}}}"#
        ));
    }
    produce(
        &source,
        &lines
            .iter()
            .map(|l| (None, l.clone().into_bytes()))
            .collect::<Vec<_>>(),
    );

    let group = unique("sluice-test");
    let mut config = kafka_source_toml(&source, &group, "");
    config.push_str(&kafka_sink_toml("cleaned", &cleaned, "cleaned"));
    config.push_str(&kafka_sink_toml("errors", &errors, "errors"));
    config.push_str(&kafka_sink_toml("dlq", &dlq, "dlq"));
    config.push_str(&format!(
        "\n[[plugins]]\nname = \"remap\"\npath = \"{}\"\n[plugins.config]\nsource = '''{PROGRAM}'''\n",
        plugin("remap").display()
    ));
    let mut host = Host::start(&config);
    let kept = consume(
        &cleaned,
        20,
        Duration::from_secs(180),
        Duration::from_secs(2),
    );
    let routed = consume(&errors, 10, Duration::from_secs(30), Duration::from_secs(1));
    let dead = consume(&dlq, 1, Duration::from_secs(30), Duration::from_secs(1));
    let started = Instant::now();
    while committed(&group, &source) < 40 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(host.is_running(), "host died:\n{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());

    let seqs = |ms: &[common::Consumed]| -> Vec<i64> {
        ms.iter()
            .map(|m| m.json()["seq"].as_i64().unwrap())
            .collect()
    };
    // info (0, 8, …) and warn (3, 7, …); debug (1, 5, …) dropped; 4 failed.
    let expected: Vec<i64> = (0..40)
        .filter(|i| (i % 4 == 0 || i % 4 == 3) && *i != 4)
        .collect();
    assert_eq!(seqs(&kept), expected, "{}", host.log());
    assert_eq!(kept[0].json()["user.id"], "u0");
    assert!(kept[0].json().get("user_id").is_none());
    assert_eq!(kept[0].json()["retries"], 1);
    let expected: Vec<i64> = (0..40).filter(|i| i % 4 == 2).collect();
    assert_eq!(seqs(&routed), expected);
    assert_eq!(routed[0].json()["user.id"], "u2");
    // Seq 4's retries are not a number: dead-lettered as it came, with VRL's reason.
    assert_eq!(seqs(&dead), [4]);
    assert_eq!(dead[0].json()["user_id"], "u4");
    let reason = dead[0].header("sluice.dlq.reason").expect("reason header");
    assert!(reason.contains("to_int"), "{reason}");
    assert_eq!(committed(&group, &source), 40, "every offset committed");
}
