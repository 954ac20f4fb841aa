//! Ruby's `Logger` default format:
//! `E, [2026-11-25T10:00:00.123456 #4242] ERROR -- progname: message`
//! (severity letter, local time without zone — taken as UTC —, pid, severity label,
//! the optional program name, the message).

use crate::level;
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

/// Parse `record.body` as a Ruby Logger line; on success set time, level (none for
/// `ANY`) and body, and append `process.pid` and `service.name` (the program name).
pub fn parse(record: &mut Record) -> bool {
    let line = record.body.as_str();
    let Some(inner) = line
        .get(1..)
        .filter(|_| matches!(line.as_bytes()[0], b'D' | b'I' | b'W' | b'E' | b'F' | b'A'))
        .and_then(|s| s.strip_prefix(", ["))
    else {
        return false;
    };
    let Some((ts, used)) = time::parse_prefix(inner, record.timestamp) else {
        return false;
    };
    let Some((pid, rest)) = inner[used..]
        .strip_prefix(" #")
        .and_then(|s| s.split_once("] "))
    else {
        return false;
    };
    let Some((label, rest)) = rest.trim_start().split_once(" -- ") else {
        return false;
    };
    let Some((progname, msg)) = rest
        .split_once(": ")
        .or_else(|| rest.strip_suffix(':').map(|p| (p, "")))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<i64>() else {
        return false;
    };
    let mut push = |key: &str, value| {
        record.attributes.push(Attribute {
            key: key.to_string(),
            value,
        })
    };
    push("process.pid", Value::Int(pid));
    if !progname.is_empty() {
        push("service.name", Value::from(progname));
    }
    if let Some(l) = level::from_word(label) {
        record.severity_number = l.number;
        record.severity_text = l.text.to_string();
    }
    record.timestamp = ts;
    record.body = msg.to_string();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Origin;

    fn run(line: &str) -> Option<Record> {
        let mut r = Record::new(Origin::default());
        r.body = line.into();
        parse(&mut r).then_some(r)
    }

    #[test]
    fn ruby_logger_lines() {
        let r = run("W, [2026-11-25T10:00:00.123456 #4242]  WARN -- billing: retry 2").unwrap();
        assert_eq!(r.timestamp, 1_795_600_800_123_456_000);
        assert_eq!(r.severity_text, "warn");
        assert_eq!(r.body, "retry 2");
        assert_eq!(r.get("process.pid"), Some(&Value::Int(4242)));
        assert_eq!(r.get_str("service.name"), Some("billing"));
        let r = run("I, [2026-11-25T10:00:00.000001 #1]  INFO -- : Started GET \"/\"").unwrap();
        assert_eq!(
            (r.body.as_str(), r.get("service.name")),
            ("Started GET \"/\"", None)
        );
        assert!(run("E, something else").is_none());
    }
}
