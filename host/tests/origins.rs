//! Through the real pipeline: a plugin's records reach the sinks only with an origin the
//! host gave it; the others are dead-lettered with a reason for the plugin's author.

mod common;

use common::{Host, consume, create_topic, kafka_config, plugin, produce, unique};
use std::time::Duration;

#[test]
fn records_with_a_forged_or_default_origin_are_dead_lettered_and_the_rest_delivered() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let mut messages: Vec<(Option<String>, Vec<u8>)> = (0..20)
        .map(|i| (None, format!("line {i}").into_bytes()))
        .collect();
    messages.insert(5, (None, b"typed:forge".to_vec()));
    messages.insert(12, (None, b"typed:no-origin".to_vec()));
    produce(&source, &messages);

    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("typed", plugin("fixtures/typed"))],
    );
    let mut host = Host::start(&config);
    let out = consume(
        &cleaned,
        20,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let dead = consume(&dlq, 2, Duration::from_secs(30), Duration::from_secs(1));
    assert!(host.is_running(), "host died:\n{}", host.log());
    let status = host.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", host.log());

    let bodies: Vec<String> = out
        .iter()
        .map(|m| m.json()["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("LINE {i}")).collect();
    assert_eq!(bodies, expected, "every genuine record delivered once");

    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|m| m.header("sluice.dlq.reason").expect("reason header"))
        .collect();
    reasons.sort();
    let never_given = "was never given to it: copy the origin of the input record it derives from";
    assert_eq!(
        reasons,
        [
            format!("plugin `typed`: emitted a record whose origin (/0/0) {never_given}"),
            format!(
                "plugin `typed`: emitted a record whose origin ({source}/0/{}) {never_given}",
                i64::MAX
            ),
        ],
        "{}",
        host.log()
    );
    // The dead letters point at real input, not at the origin the plugin wrote.
    for m in &dead {
        assert_eq!(m.header("sluice.origin.topic"), Some(source.as_str()));
        let offset: i64 = m.header("sluice.origin.offset").unwrap().parse().unwrap();
        assert!((0..22).contains(&offset), "offset {offset}");
    }
}
