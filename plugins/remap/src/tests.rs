use super::*;
use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
use sluice_plugin_sdk::{Origin, Record, Route, Value, severity};

fn plugin(source: &str) -> NativePlugin<Remap> {
    let config = serde_json::json!({ "source": source }).to_string();
    NativePlugin::new(&config).unwrap()
}

fn init_error(config: serde_json::Value) -> String {
    match NativePlugin::<Remap>::new(&config.to_string()) {
        Ok(_) => panic!("{config} should fail init"),
        Err(e) => e.message,
    }
}

fn record(offset: i64, level: (u8, &str), body: &str, attrs: &[(&str, Value)]) -> Record {
    let mut r = Record::new(Origin {
        topic: "logs".into(),
        partition: 0,
        offset,
    });
    r.timestamp = 1_795_600_800_000_000_000;
    r.observed_timestamp = r.timestamp + 5;
    (r.severity_number, r.severity_text) = (level.0, level.1.into());
    r.body = body.into();
    for (k, v) in attrs {
        r.set(*k, v.clone());
    }
    r
}

const INFO: (u8, &str) = (severity::INFO, "info");

#[test]
fn renames_and_drops_fields() {
    let mut p = plugin(r#"."user.name" = del(.user); del(.debug_blob)"#);
    let input = record(
        1,
        INFO,
        "hi",
        &[
            ("user", "ann".into()),
            ("debug_blob", "xxx".into()),
            ("status", 200i64.into()),
        ],
    );
    let out = p.process(vec![input.clone()]).unwrap();
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.get_str("user.name"), Some("ann"));
    assert_eq!(r.get("user"), None);
    assert_eq!(r.get("debug_blob"), None);
    assert_eq!(r.get("status"), Some(&Value::Int(200)));
    // Everything the program did not touch is as it came.
    assert_eq!(r.body, "hi");
    assert_eq!(r.timestamp, input.timestamp);
    assert_eq!(r.observed_timestamp, input.observed_timestamp);
    assert_eq!((r.severity_number, r.severity_text.as_str()), INFO);
    assert_eq!(r.origin(), input.origin());
    assert_eq!(r.route, Route::Cleaned);
}

#[test]
fn abort_and_the_drop_marker_drop_records() {
    let mut p = plugin(
        r#"
        if %severity_number > 0 && %severity_number < 9 { abort }
        if .noise == true { %drop = true }
        "#,
    );
    let out = p
        .process(vec![
            record(1, (severity::DEBUG, "debug"), "d", &[]),
            record(2, INFO, "kept", &[]),
            record(3, INFO, "n", &[("noise", true.into())]),
        ])
        .unwrap();
    let bodies: Vec<_> = out.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, ["kept"]);
    assert_eq!(take_recorded().counters.get("dropped"), Some(&2));
}

#[test]
fn routes_to_named_and_builtin_routes() {
    let mut p = plugin(
        r#"
        if %severity_text == "error" { %route = "errors" }
        if .kind == "metric" { %route = "metrics" }
        "#,
    );
    let out = p
        .process(vec![
            record(1, (severity::ERROR, "error"), "boom", &[]),
            record(2, INFO, "m", &[("kind", "metric".into())]),
            record(3, INFO, "ok", &[]),
        ])
        .unwrap();
    let routes: Vec<_> = out.iter().map(|r| r.route.clone()).collect();
    assert_eq!(
        routes,
        [
            Route::Named("errors".into()),
            Route::Metrics,
            Route::Cleaned
        ]
    );
}

#[test]
fn runtime_errors_dead_letter_the_input_unchanged() {
    let mut p = plugin(r#".n = parse_int!(.s); .touched = true; %body = "changed""#);
    let bad = record(1, INFO, "b", &[("s", "twelve".into())]);
    let out = p
        .process(vec![
            bad.clone(),
            record(2, INFO, "g", &[("s", "12".into())]),
        ])
        .unwrap();
    assert_eq!(out.len(), 2);
    let Route::Dlq(reason) = &out[0].route else {
        panic!("expected dlq, got {:?}", out[0].route)
    };
    assert!(reason.contains("parse_int"), "{reason}");
    assert_eq!(out[0].attributes, bad.attributes);
    assert_eq!(out[0].body, "b");
    assert_eq!(out[1].get("n"), Some(&Value::Int(12)));
    assert_eq!(out[1].body, "changed");
}

#[test]
fn unusable_metadata_dead_letters_with_the_reason() {
    let mut p = plugin(
        r#"
        if .case == 1 { %route = 5 }
        if .case == 2 { %severity_number = 99 }
        if .case == 3 { %route = "" }
        "#,
    );
    let out = p
        .process(
            (1..=3)
                .map(|i| record(i, INFO, "x", &[("case", i.into())]))
                .collect(),
        )
        .unwrap();
    let reasons: Vec<_> = out
        .iter()
        .map(|r| match &r.route {
            Route::Dlq(reason) => reason.as_str(),
            other => panic!("expected dlq, got {other:?}"),
        })
        .collect();
    assert!(
        reasons[0].contains("`%route` must be a string"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("`%severity_number`"), "{}", reasons[1]);
    assert!(reasons[2].contains("`%route` is empty"), "{}", reasons[2]);
}

#[test]
fn compile_error_fails_init_with_the_diagnostic() {
    let message = init_error(serde_json::json!({ "source": ".x = parse_json(.y)" }));
    assert!(message.contains("`source`"), "{message}");
    assert!(message.contains("unhandled fallible"), "{message}");
    assert!(message.contains("parse_json(.y)"), "{message}");

    let message = init_error(serde_json::json!({ "source": ".", "typo": 1 }));
    assert!(message.contains("unknown field `typo`"), "{message}");
    let message = init_error(serde_json::json!({}));
    assert!(message.contains("missing field `source`"), "{message}");
    let message = init_error(serde_json::json!({ "source": ".", "timezone": "Mars/Olympus" }));
    assert!(message.contains("Mars/Olympus"), "{message}");
}

#[test]
fn metadata_maps_to_record_fields() {
    let mut p = plugin(
        r#"
        %timestamp = parse_timestamp!(.ts, "%+")
        del(.ts)
        %severity_text = "warn"
        %severity_number = 13
        %body = upcase(%body)
        .seen = %observed_timestamp
        "#,
    );
    let out = p
        .process(vec![record(
            1,
            INFO,
            "hi",
            &[("ts", "2026-11-25T10:00:01.5Z".into())],
        )])
        .unwrap();
    let r = &out[0];
    assert_eq!(r.timestamp, 1_795_600_801_500_000_000);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "warn"));
    assert_eq!(r.body, "HI");
    assert_eq!(r.get_str("seen"), Some("2026-11-25T10:00:00.000000005Z"));
    assert_eq!(r.get("ts"), None);
}

#[test]
fn objects_are_flattened_and_arrays_are_json_text() {
    let mut p = plugin(
        r#"
        .http = {"status": 500, "request": {"method": "GET"}, "empty": {}}
        ."http.status" = 501
        .tags = ["a", "b"]
        %body = {"not": "text"}
        "#,
    );
    let out = p.process(vec![record(1, INFO, "x", &[])]).unwrap();
    let r = &out[0];
    assert_eq!(r.get("http.status"), Some(&Value::Int(501)));
    assert_eq!(r.get_str("http.request.method"), Some("GET"));
    assert_eq!(r.get_str("http.empty"), Some("{}"));
    assert_eq!(r.get_str("tags"), Some(r#"["a","b"]"#));
    assert_eq!(r.body, r#"{"not":"text"}"#);
    let keys: Vec<_> = r.attributes.iter().map(|a| a.key.as_str()).collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(keys, unique, "attribute keys are unique");
}

#[test]
fn nothing_of_one_record_leaks_into_the_next() {
    let mut p = plugin(
        r#"
        if exists(%mark) { .leaked = true }
        %mark = .n
        "#,
    );
    let out = p
        .process(vec![
            record(1, INFO, "a", &[("n", 1i64.into())]),
            record(2, INFO, "b", &[("n", 2i64.into())]),
        ])
        .unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|r| r.get("leaked").is_none()));
}

#[test]
fn records_off_the_cleaned_route_pass_untouched() {
    let mut p = plugin("abort");
    let mut routed = record(1, INFO, "x", &[]);
    routed.route = Route::Named("elsewhere".into());
    let out = p.process(vec![routed.clone()]).unwrap();
    assert_eq!(out, [routed]);
}

#[test]
fn functions_the_sandbox_cannot_run_fail_the_load() {
    for call in [
        r#"log("x")"#,
        "get_hostname!()",
        r#"parse_grok!(.m, "%{WORD:w}")"#,
    ] {
        let message = init_error(serde_json::json!({ "source": call }));
        assert!(message.contains("undefined function"), "{call}: {message}");
    }
    assert!(functions().len() > 150, "the stdlib is in");
}
