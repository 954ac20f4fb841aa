//! Container runtime wrappers around an application's line, unwrapped before the line
//! is parsed with the usual rules:
//!
//! - CRI (containerd, CRI-O; the files under `/var/log/pods`):
//!   `2026-11-25T10:00:00.123456789Z stdout F <line>`. `P` marks a partial line (the
//!   runtime split a long one); each part is read on its own, parts are not joined.
//! - Docker's `json-file` driver: `{"log":"<line>\n","stream":"stderr","time":"…"}`,
//!   which the host decodes into the attributes `log`, `stream`, `time` (and `attrs.*`
//!   with `--log-opt labels=…`).
//!
//! The wrapper's time is the record's time unless the line carries its own; the stream
//! is kept as `log.iostream` (the OpenTelemetry name).

use crate::time;
use sluice_plugin_sdk::{Attribute, AttributeRef, Record, RecordView, Value, ValueRef};

fn iostream(stream: &str) -> Attribute {
    Attribute {
        key: "log.iostream".into(),
        value: Value::from(stream),
    }
}

/// Unwrap a CRI line in place: the body becomes the inner line. The check before any
/// parsing is a search for ` stdout ` / ` stderr ` right after the first token.
pub fn cri(record: &mut Record) -> bool {
    let line = record.body.as_str();
    if !line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    // An RFC 3339 time with ns and a zone is at most 35 bytes.
    let Some(space) = line.bytes().take(36).position(|b| b == b' ') else {
        return false;
    };
    let after = &line[space + 1..];
    let stream = match after.get(..7) {
        Some(s @ ("stdout " | "stderr ")) => &s[..6],
        _ => return false,
    };
    let tag = &after[7..];
    let inner = match tag.as_bytes() {
        [b'F' | b'P'] => tag.len(),
        [b'F' | b'P', b' ', ..] => 2,
        _ => return false,
    };
    let Some(ts) = time::parse_text(&line[..space], record.timestamp) else {
        return false;
    };
    let start = space + 1 + 7 + inner;
    let attribute = iostream(stream);
    record.body.drain(..start);
    record.timestamp = ts;
    record.attributes.push(attribute);
    true
}

/// Whether every attribute is one of a `json-file` record's: most records fail at their
/// first attribute, without a call.
#[inline]
pub fn looks_like_docker(attributes: &[AttributeRef<'_>]) -> bool {
    attributes
        .iter()
        .all(|a| matches!(a.key, "log" | "stream" | "time") || a.key.starts_with("attrs."))
}

/// A Docker `json-file` record (exactly `log`, `stream`, `time`, and any `attrs.*`) as
/// an owned record whose body is the inner line; `None` for any other record.
pub fn docker(record: &RecordView<'_>) -> Option<Record> {
    let (mut log, mut stream, mut time) = (None, None, None);
    for a in record.attributes {
        match (a.key, a.value) {
            ("log", ValueRef::Str(s)) => log = Some(s),
            ("stream", ValueRef::Str(s)) => stream = Some(s),
            ("time", ValueRef::Str(s)) => time = Some(s),
            (key, _) if key.starts_with("attrs.") => {}
            _ => return None,
        }
    }
    let (log, stream, time) = (log?, stream?, time?);
    let ts = time::parse_text(time, record.timestamp)?;
    let mut attributes = Vec::with_capacity(record.attributes.len() - 2);
    attributes.push(iostream(stream));
    attributes.extend(
        record
            .attributes
            .iter()
            .filter(|a| a.key.starts_with("attrs."))
            .map(|a| Attribute {
                key: format!("labels.{}", a.key),
                value: a.value.to_value(),
            }),
    );
    let mut out = Record::new(record.origin.to_origin());
    out.timestamp = ts;
    out.observed_timestamp = record.observed_timestamp;
    out.severity_number = record.severity_number;
    out.severity_text = record.severity_text.to_owned();
    out.body = log.trim_end_matches(['\n', '\r']).to_string();
    out.attributes = attributes;
    out.route = record.route.to_route();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Origin;

    fn cri_of(line: &str) -> Option<Record> {
        let mut r = Record::new(Origin::default());
        r.body = line.into();
        cri(&mut r).then_some(r)
    }

    #[test]
    fn cri_lines() {
        let r = cri_of("2026-11-25T10:00:00.123456789Z stderr F boom: x").unwrap();
        assert_eq!(r.body, "boom: x");
        assert_eq!(r.timestamp, 1_795_600_800_123_456_789);
        assert_eq!(r.get_str("log.iostream"), Some("stderr"));
        assert_eq!(cri_of("2026-11-25T10:00:00Z stdout P").unwrap().body, "");
        assert!(cri_of("2026-11-25T10:00:00Z stdout X y").is_none());
        assert!(cri_of("2026-11-25T10:00:00Z stdoutish F y").is_none());
        assert!(cri_of("not-a-time stdout F y").is_none());
        assert!(cri_of("2026-11-25 10:00:00 INFO stdout F").is_none());
    }
}
