//! Rendering a [`Notification`] as an SNS message: a subject, a short human text, and the
//! structured JSON, per subscription protocol (`MessageStructure = json`):
//!
//! - `email` / `default`: the human text, then the JSON — what a person reads in a mail;
//! - `https`: the AWS Chatbot custom-notification format, which Slack and Teams render;
//! - `sqs`, `lambda`, `email-json`: the structured JSON alone, for programs.

use super::config::Severity;
use super::policy::{DataAlert, Notification};
use crate::health::Condition;
use crate::time;
use serde_json::{Value, json};

/// SNS limits a subject to 100 printable ASCII characters.
pub const MAX_SUBJECT_CHARS: usize = 100;
/// Version of the structured JSON, so consumers can tell shapes apart.
pub const SCHEMA: &str = "sluice.alert/1";

/// Where the "look here" hints point.
#[derive(Debug, Clone, Default)]
pub struct QueryHints {
    pub kibana_url: Option<String>,
    pub kibana_index: String,
    pub athena_table: Option<String>,
}

/// One message ready for `PublishBatch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    /// The per-protocol JSON document (`MessageStructure = json`).
    pub message: String,
    /// Stable across replays: the FIFO `MessageDeduplicationId`.
    pub dedup_id: String,
    /// `firing` | `resolved`, for subscription filter policies.
    pub status: &'static str,
    pub severity: Severity,
    /// Alert kind or fail state name, for filter policies.
    pub kind: String,
    /// Services (data alerts) or the fail state's subject.
    pub about: Vec<String>,
    /// The structured JSON (also inside `message`).
    pub json: Value,
}

impl Rendered {
    /// Bytes this entry counts against the 256 KiB `PublishBatch` limit.
    pub fn size(&self) -> usize {
        self.message.len()
            + self.subject.len()
            + self.dedup_id.len()
            + self.kind.len()
            + self.about.iter().map(String::len).sum::<usize>()
            + 64
    }
}

/// Render `notification`; `now` (wall clock, ns) dates reminders.
pub fn render(notification: &Notification, hints: &QueryHints, now: i64) -> Rendered {
    let parts = match notification {
        Notification::Firing {
            alerts,
            rate_limited_before,
        } => firing(alerts, *rate_limited_before, hints),
        Notification::Resolved {
            last,
            first_window_start,
            cleared_at,
        } => resolved(last, *first_window_start, *cleared_at, hints),
        Notification::FailRaised {
            condition,
            severity,
            reminder,
            rate_limited_before,
        } => fail_raised(condition, *severity, *reminder, *rate_limited_before, now),
        Notification::FailCleared {
            condition,
            severity,
            cleared_at,
        } => fail_cleared(condition, *severity, *cleared_at),
    };
    let subject = clean_subject(&parts.subject);
    let message = per_protocol(
        &subject,
        &parts.text,
        &parts.json,
        &parts.dedup_id,
        parts.status,
    );
    Rendered {
        subject,
        message,
        dedup_id: clean_dedup_id(&parts.dedup_id),
        status: parts.status,
        severity: parts.severity,
        kind: parts.kind,
        about: parts.about,
        json: parts.json,
    }
}

/// What a notification says, before it is cut to SNS's limits and laid out per protocol.
struct Parts {
    subject: String,
    text: String,
    json: Value,
    dedup_id: String,
    status: &'static str,
    severity: Severity,
    kind: String,
    about: Vec<String>,
}

/// One or more data alerts of the same group window.
fn firing(alerts: &[DataAlert], rate_limited_before: u64, hints: &QueryHints) -> Parts {
    let severity = alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Warning);
    let about = services(alerts);
    let kind = common_kind(alerts);
    let subject = firing_subject(alerts, &about, severity);
    let mut text = String::new();
    if alerts.len() > 1 {
        text.push_str(&format!(
            "{} anomalies in the same window, {} service(s).\n\n",
            alerts.len(),
            about.len()
        ));
    }
    for a in alerts {
        text.push_str(&alert_text(a, hints));
        text.push('\n');
    }
    if rate_limited_before > 0 {
        text.push_str(&format!(
            "Note: {rate_limited_before} earlier message(s) were dropped by the rate limit (policy.max_messages_per_minute); the lake and search index have every alert.\n"
        ));
    }
    let dedup_id = match alerts {
        [a] => a.id.clone(),
        many => {
            let mut ids: Vec<&str> = many.iter().map(|a| a.id.as_str()).collect();
            ids.sort_unstable();
            format!("group-{:016x}", fnv1a(ids.join(",").as_bytes()))
        }
    };
    let json = json!({
        "schema": SCHEMA,
        "status": "firing",
        "severity": severity.name(),
        "alerts": alerts.iter().map(|a| alert_json(a, hints)).collect::<Vec<_>>(),
        "rate_limited_before": rate_limited_before,
    });
    Parts {
        subject,
        text,
        json,
        dedup_id,
        status: "firing",
        severity,
        kind,
        about,
    }
}

/// The subject of firing data alerts: the one alert, or how many and where.
fn firing_subject(alerts: &[DataAlert], about: &[String], severity: Severity) -> String {
    match (alerts, about.len()) {
        ([a], _) => format!(
            "[{}] {}: {} ({} vs baseline {})",
            severity.name().to_uppercase(),
            a.service,
            kind_title(&a.kind),
            value(&a.kind, a.observed),
            value(&a.kind, a.baseline)
        ),
        (_, 1) => format!(
            "[{}] {}: {} anomalies",
            severity.name().to_uppercase(),
            about[0],
            alerts.len()
        ),
        (_, n) => format!(
            "[{}] {n} services anomalous: {}",
            severity.name().to_uppercase(),
            about.join(", ")
        ),
    }
}

/// A data incident that was announced has cleared.
fn resolved(
    last: &DataAlert,
    first_window_start: i64,
    cleared_at: i64,
    hints: &QueryHints,
) -> Parts {
    let subject = format!("[RESOLVED] {}: {}", last.service, kind_title(&last.kind));
    let text = format!(
        "Resolved: {service} {kind} has cleared.\n\
         Service: {service}\n\
         Incident: from {from} to {to} (event time); last observed {obs} vs baseline {base}.\n\
         {hints}\
         Last alert id: {id}\n",
        service = last.service,
        kind = kind_title(&last.kind),
        from = time::rfc3339_millis(first_window_start),
        to = time::rfc3339_millis(cleared_at),
        obs = value(&last.kind, last.observed),
        base = value(&last.kind, last.baseline),
        hints = hint_lines(
            &last.service,
            &last.kind,
            first_window_start,
            cleared_at,
            hints
        ),
        id = last.id,
    );
    let json = json!({
        "schema": SCHEMA,
        "status": "resolved",
        "severity": last.severity.name(),
        "service": last.service,
        "kind": last.kind,
        "incident_start": time::rfc3339_millis(first_window_start),
        "resolved_at": time::rfc3339_millis(cleared_at),
        "last_alert": alert_json(last, hints),
    });
    Parts {
        subject,
        text,
        json,
        dedup_id: format!("{}-resolved", last.id),
        status: "resolved",
        severity: last.severity,
        kind: last.kind.clone(),
        about: vec![last.service.clone()],
    }
}

/// A fail state was raised, or is still active after a cooldown (a reminder, which `now`
/// keeps apart from the first message).
fn fail_raised(
    condition: &Condition,
    severity: Severity,
    reminder: bool,
    rate_limited_before: u64,
    now: i64,
) -> Parts {
    let state = condition.state.name();
    let subject = format!(
        "[{}] Sluice {state}{}: {}",
        severity.name().to_uppercase(),
        if reminder { " (still active)" } else { "" },
        condition.subject
    );
    let mut text = format!(
        "{state} on {host}: {context}\n\
         Subject: {subject}\n\
         Since: {since}\n\
         What to try: {advice}\n\
         Readiness: GET /readyz on the host's admin endpoint lists active conditions.\n",
        host = host_name(),
        context = condition.context,
        subject = condition.subject,
        since = time::rfc3339_millis(condition.since),
        advice = advice(condition.state),
    );
    if rate_limited_before > 0 {
        text.push_str(&format!(
            "Note: {rate_limited_before} earlier message(s) were dropped by the rate limit.\n"
        ));
    }
    let json = json!({
        "schema": SCHEMA,
        "status": "firing",
        "severity": severity.name(),
        "fail_state": {
            "state": state,
            "subject": condition.subject,
            "context": condition.context,
            "since": time::rfc3339_millis(condition.since),
            "host": host_name(),
            "reminder": reminder,
        },
        "rate_limited_before": rate_limited_before,
    });
    let base = fail_id(condition);
    let dedup_id = if reminder {
        format!("{base}-{}", now / 1_000_000_000)
    } else {
        base
    };
    Parts {
        subject,
        text,
        json,
        dedup_id,
        status: "firing",
        severity,
        kind: state.to_owned(),
        about: vec![condition.subject.clone()],
    }
}

/// A fail state that was announced has cleared.
fn fail_cleared(condition: &Condition, severity: Severity, cleared_at: i64) -> Parts {
    let state = condition.state.name();
    let subject = format!("[RESOLVED] Sluice {state}: {}", condition.subject);
    let text = format!(
        "Resolved: {state} on {host} has cleared.\n\
         Subject: {subject}\n\
         Active from {since} to {to}.\n\
         It was: {context}\n",
        host = host_name(),
        subject = condition.subject,
        since = time::rfc3339_millis(condition.since),
        to = time::rfc3339_millis(cleared_at),
        context = condition.context,
    );
    let json = json!({
        "schema": SCHEMA,
        "status": "resolved",
        "severity": severity.name(),
        "fail_state": {
            "state": state,
            "subject": condition.subject,
            "context": condition.context,
            "since": time::rfc3339_millis(condition.since),
            "cleared_at": time::rfc3339_millis(cleared_at),
            "host": host_name(),
        },
    });
    Parts {
        subject,
        text,
        json,
        dedup_id: format!("{}-cleared", fail_id(condition)),
        status: "resolved",
        severity,
        kind: state.to_owned(),
        about: vec![condition.subject.clone()],
    }
}

/// The `MessageStructure = json` document.
fn per_protocol(subject: &str, text: &str, json: &Value, id: &str, status: &str) -> String {
    let structured = json.to_string();
    let pretty = serde_json::to_string_pretty(json).unwrap_or_else(|_| structured.clone());
    let human = format!("{text}\n--- structured ---\n{pretty}\n");
    // AWS Chatbot custom notifications (Slack, Microsoft Teams).
    let chat = json!({
        "version": "1.0",
        "source": "custom",
        "id": id,
        "content": {
            "textType": "client-markdown",
            "title": format!("{} {subject}", if status == "resolved" { ":white_check_mark:" } else { ":rotating_light:" }),
            "description": text,
        },
        "metadata": { "enableCustomActions": false, "additionalContext": json },
    });
    json!({
        "default": human,
        "email": human,
        "email-json": structured,
        "sqs": structured,
        "lambda": structured,
        "https": chat.to_string(),
    })
    .to_string()
}

fn alert_text(a: &DataAlert, hints: &QueryHints) -> String {
    format!(
        "{sev}: {service} {kind}\n\
         What happened: {desc}\n\
         Service: {service}\n\
         Observed: {obs} vs baseline {base} (z-score {z:.1})\n\
         Window: {from} to {to} ({secs} s, event time)\n\
         {hints}\
         Alert id: {id}\n",
        sev = a.severity.name().to_uppercase(),
        service = a.service,
        kind = kind_title(&a.kind),
        desc = a.description,
        obs = value(&a.kind, a.observed),
        base = value(&a.kind, a.baseline),
        z = a.zscore,
        from = time::rfc3339_millis(a.window_start),
        to = time::rfc3339_millis(a.window_end),
        secs = (a.window_end - a.window_start) / 1_000_000_000,
        hints = hint_lines(&a.service, &a.kind, a.window_start, a.window_end, hints),
        id = a.id,
    )
}

fn alert_json(a: &DataAlert, hints: &QueryHints) -> Value {
    let mut v = json!({
        "id": a.id,
        "service": a.service,
        "kind": a.kind,
        "severity": a.severity.name(),
        "observed": a.observed,
        "baseline": a.baseline,
        "zscore": a.zscore,
        "window_start": time::rfc3339_millis(a.window_start),
        "window_end": time::rfc3339_millis(a.window_end),
        "description": a.description,
    });
    if let Some(url) = kibana_link(&a.service, &a.kind, a.window_start, a.window_end, hints) {
        v["kibana_url"] = url.into();
    }
    if let Some(sql) = athena_query(&a.service, &a.kind, a.window_start, a.window_end, hints) {
        v["athena_query"] = sql.into();
    }
    v
}

fn hint_lines(service: &str, kind: &str, from: i64, to: i64, hints: &QueryHints) -> String {
    let mut out = format!("Kibana (KQL): {}\n", kql(service, kind));
    if let Some(url) = kibana_link(service, kind, from, to, hints) {
        out.push_str(&format!("Kibana: {url}\n"));
    }
    if let Some(sql) = athena_query(service, kind, from, to, hints) {
        out.push_str(&format!("Athena: {sql}\n"));
    }
    out
}

/// The KQL query that shows the records behind an alert.
pub fn kql(service: &str, kind: &str) -> String {
    let service = service.replace('\\', "\\\\").replace('"', "\\\"");
    if kind == "error_rate_spike" {
        format!(
            r#"service.name:"{service}" and (log.level:(error or fatal or critical) or http.response.status_code >= 500)"#
        )
    } else {
        format!(r#"service.name:"{service}" and event.duration:*"#)
    }
}

/// A Discover link over the window, or `None` without `kibana_url`.
pub fn kibana_link(
    service: &str,
    kind: &str,
    from: i64,
    to: i64,
    hints: &QueryHints,
) -> Option<String> {
    let base = hints.kibana_url.as_deref()?.trim_end_matches('/');
    // Rison strings are single-quoted; `'` and `!` are escaped with `!`.
    let rison = |s: &str| s.replace('!', "!!").replace('\'', "!'");
    let query = rison(&kql(service, kind));
    let url = format!(
        "{base}/app/discover#/?_g=(time:(from:'{}',to:'{}'))&_a=(index:'{}',query:(language:kuery,query:'{}'))",
        time::rfc3339_millis(from),
        time::rfc3339_millis(to),
        rison(&hints.kibana_index),
        query
    );
    Some(percent_encode_unsafe(&url))
}

/// Records behind an alert in the lake, or `None` without `athena_table`. Filters on the
/// `dt` partition first, so Athena reads only the day(s) concerned.
pub fn athena_query(
    service: &str,
    kind: &str,
    from: i64,
    to: i64,
    hints: &QueryHints,
) -> Option<String> {
    let table = hints.athena_table.as_deref()?;
    let day = |ns: i64| time::rfc3339_millis(ns)[..10].to_owned();
    let ts = |ns: i64| time::rfc3339_millis(ns).replace('T', " ").replace('Z', "");
    let service = service.replace('\'', "''");
    let errors = if kind == "error_rate_spike" {
        " AND (severity_number >= 17 OR http_response_status_code >= 500)"
    } else {
        ""
    };
    Some(format!(
        "SELECT * FROM {table} WHERE dt BETWEEN '{}' AND '{}' AND service_name = '{service}' AND \"timestamp\" BETWEEN TIMESTAMP '{}' AND TIMESTAMP '{}'{errors} LIMIT 100",
        day(from),
        day(to),
        ts(from),
        ts(to),
    ))
}

fn percent_encode_unsafe(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '"' => out.push_str("%22"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

fn kind_title(kind: &str) -> String {
    match kind {
        "error_rate_spike" => "error rate spike".into(),
        "latency_p99_spike" => "p99 latency spike".into(),
        other => other.replace('_', " "),
    }
}

/// Observed/baseline values: ratios as percentages, latencies in ms.
fn value(kind: &str, v: f64) -> String {
    if kind == "error_rate_spike" {
        format!("{:.1}%", v * 100.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn services(alerts: &[DataAlert]) -> Vec<String> {
    let mut out: Vec<String> = alerts.iter().map(|a| a.service.clone()).collect();
    out.sort();
    out.dedup();
    out
}

fn common_kind(alerts: &[DataAlert]) -> String {
    match alerts.first() {
        Some(first) if alerts.iter().all(|a| a.kind == first.kind) => first.kind.clone(),
        _ => "mixed".into(),
    }
}

fn advice(state: crate::health::FailState) -> &'static str {
    use crate::health::FailState::*;
    match state {
        KafkaUnavailable => {
            "check that the brokers are up and reachable from this host (network, security groups, TLS/SASL settings); consumption resumes by itself"
        }
        S3MissingFile => {
            "the object was listed for backfill but is gone; check lifecycle rules and the backfill's prefix"
        }
        MetricsGenerationFailed => {
            "cleaned logs keep flowing but metrics and alerts are missing; check the metrics plugin's log lines and the dead-letter topic"
        }
        PluginFailing => {
            "the plugin's input is being dead-lettered; check its log lines and the dead-letter topic, and roll back a recent plugin change"
        }
        SinkUnavailable => {
            "the destination is refusing or unreachable; the source is paused, nothing is lost; check the endpoint and credentials"
        }
    }
}

fn fail_id(condition: &crate::health::Condition) -> String {
    format!(
        "{}-{:016x}-{}",
        condition.state.name(),
        fnv1a(condition.subject.as_bytes()),
        condition.since
    )
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "this host".into())
}

/// Printable ASCII, one line, at most 100 characters.
fn clean_subject(subject: &str) -> String {
    let mut out: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > MAX_SUBJECT_CHARS {
        out.truncate(MAX_SUBJECT_CHARS - 3);
        out.push_str("...");
    }
    out
}

fn clean_dedup_id(id: &str) -> String {
    let mut out: String = id
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    out.truncate(128);
    out
}

/// 64-bit FNV-1a: short stable ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Condition, FailState};

    const T0: i64 = 1_795_600_800_000_000_000;
    const MIN: i64 = 60_000_000_000;

    fn alert(service: &str, kind: &str) -> DataAlert {
        DataAlert {
            id: "00c0ffee00c0ffee".into(),
            service: service.into(),
            kind: kind.into(),
            severity: Severity::Critical,
            observed: 0.312,
            baseline: 0.011,
            zscore: 14.6,
            window_start: T0,
            window_end: T0 + MIN,
            description: "critical: checkout error rate 31.2% (94 of 301) vs baseline 1.1%".into(),
        }
    }

    fn hints() -> QueryHints {
        QueryHints {
            kibana_url: Some("https://kibana.example:5601/".into()),
            kibana_index: "logs-*".into(),
            athena_table: Some("sluice.logs".into()),
        }
    }

    fn protocols(r: &Rendered) -> Value {
        serde_json::from_str(&r.message).unwrap()
    }

    #[test]
    fn a_single_alert_reads_well_in_every_protocol() {
        let n = Notification::Firing {
            alerts: vec![alert("checkout", "error_rate_spike")],
            rate_limited_before: 0,
        };
        let r = render(&n, &hints(), 0);
        assert_eq!(
            r.subject,
            "[CRITICAL] checkout: error rate spike (31.2% vs baseline 1.1%)"
        );
        assert_eq!(r.dedup_id, "00c0ffee00c0ffee");
        let p = protocols(&r);
        let email = p["email"].as_str().unwrap();
        for needle in [
            "What happened: critical: checkout error rate 31.2%",
            "Service: checkout",
            "Observed: 31.2% vs baseline 1.1% (z-score 14.6)",
            "Window: 2026-11-25T10:00:00.000Z to 2026-11-25T10:01:00.000Z (60 s",
            "Kibana (KQL): service.name:\"checkout\"",
            "Kibana: https://kibana.example:5601/app/discover#/?_g=(time:(from:'2026-11-25T10:00:00.000Z'",
            "Athena: SELECT * FROM sluice.logs WHERE dt BETWEEN '2026-11-25' AND '2026-11-25' AND service_name = 'checkout'",
            "--- structured ---",
        ] {
            assert!(email.contains(needle), "missing {needle:?} in:\n{email}");
        }
        let sqs: Value = serde_json::from_str(p["sqs"].as_str().unwrap()).unwrap();
        assert_eq!(sqs["schema"], SCHEMA);
        assert_eq!(sqs["status"], "firing");
        assert_eq!(sqs["alerts"][0]["service"], "checkout");
        assert_eq!(sqs["alerts"][0]["window_start"], "2026-11-25T10:00:00.000Z");
        let chat: Value = serde_json::from_str(p["https"].as_str().unwrap()).unwrap();
        assert_eq!(chat["version"], "1.0");
        assert_eq!(chat["source"], "custom");
        assert!(
            chat["content"]["description"]
                .as_str()
                .unwrap()
                .contains("Service: checkout")
        );
    }

    #[test]
    fn grouped_alerts_name_every_service_and_get_a_stable_id() {
        let mut b = alert("cart", "latency_p99_spike");
        b.id = "1111111111111111".into();
        b.observed = 900.0;
        b.baseline = 120.0;
        let a = alert("checkout", "error_rate_spike");
        let n1 = Notification::Firing {
            alerts: vec![a.clone(), b.clone()],
            rate_limited_before: 3,
        };
        let n2 = Notification::Firing {
            alerts: vec![b, a],
            rate_limited_before: 3,
        };
        let (r1, r2) = (render(&n1, &hints(), 0), render(&n2, &hints(), 0));
        assert_eq!(
            r1.subject,
            "[CRITICAL] 2 services anomalous: cart, checkout"
        );
        assert_eq!(r1.dedup_id, r2.dedup_id);
        assert!(r1.dedup_id.starts_with("group-"));
        let email = protocols(&r1)["email"].as_str().unwrap().to_owned();
        assert!(email.contains("900 ms vs baseline 120 ms"), "{email}");
        assert!(
            email.contains("3 earlier message(s) were dropped"),
            "{email}"
        );
        assert_eq!(r1.json["alerts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn resolved_and_fail_state_messages() {
        let resolved = Notification::Resolved {
            last: alert("checkout", "error_rate_spike"),
            first_window_start: T0 - 2 * MIN,
            cleared_at: T0 + 2 * MIN,
        };
        let r = render(&resolved, &hints(), 0);
        assert_eq!(r.subject, "[RESOLVED] checkout: error rate spike");
        assert_eq!(r.dedup_id, "00c0ffee00c0ffee-resolved");
        assert_eq!(r.status, "resolved");
        assert_eq!(r.json["resolved_at"], "2026-11-25T10:02:00.000Z");

        let condition = Condition {
            state: FailState::KafkaUnavailable,
            subject: "10.0.0.1:9092".into(),
            context: "no broker answered for 30 s".into(),
            since: T0,
        };
        let raised = Notification::FailRaised {
            condition: condition.clone(),
            severity: Severity::Critical,
            reminder: false,
            rate_limited_before: 0,
        };
        let r = render(&raised, &hints(), T0);
        assert_eq!(
            r.subject,
            "[CRITICAL] Sluice KafkaUnavailable: 10.0.0.1:9092"
        );
        assert_eq!(r.kind, "KafkaUnavailable");
        assert_eq!(r.json["fail_state"]["state"], "KafkaUnavailable");
        let reminder = Notification::FailRaised {
            condition: condition.clone(),
            severity: Severity::Critical,
            reminder: true,
            rate_limited_before: 0,
        };
        assert_ne!(render(&reminder, &hints(), T0 + MIN).dedup_id, r.dedup_id);
        let cleared = Notification::FailCleared {
            condition,
            severity: Severity::Critical,
            cleared_at: T0 + MIN,
        };
        let c = render(&cleared, &hints(), T0 + MIN);
        assert_eq!(
            c.subject,
            "[RESOLVED] Sluice KafkaUnavailable: 10.0.0.1:9092"
        );
        assert_eq!(c.status, "resolved");
    }

    #[test]
    fn subjects_are_short_printable_ascii() {
        let mut a = alert(&"ü".repeat(200), "error_rate_spike");
        a.service.push('\n');
        let r = render(
            &Notification::Firing {
                alerts: vec![a],
                rate_limited_before: 0,
            },
            &QueryHints::default(),
            0,
        );
        assert!(r.subject.len() <= MAX_SUBJECT_CHARS);
        assert!(r.subject.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        assert!(super::super::config::valid_dedup_text(&r.dedup_id));
    }

    #[test]
    fn hints_escape_quotes() {
        let sql = athena_query("o'brien", "error_rate_spike", T0, T0 + MIN, &hints()).unwrap();
        assert!(sql.contains("service_name = 'o''brien'"), "{sql}");
        let link = kibana_link("it's", "latency_p99_spike", T0, T0 + MIN, &hints()).unwrap();
        assert!(link.contains("it!'s"), "{link}");
        assert!(!link.contains(' ') && !link.contains('"'), "{link}");
    }
}
