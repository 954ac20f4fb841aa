//! Syslog lines: RFC 5424 (`<165>1 2026-11-25T10:00:00Z host app 123 ID47 [sd k="v"] msg`)
//! and RFC 3164 / BSD (`<34>Oct 11 22:14:15 host su[123]: msg`, also without `<PRI>` as
//! written to files). Fields get ECS names (`log.syslog.*`, `process.pid`); the level
//! comes from the PRI's severity.

use crate::level;
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

pub enum Kind {
    Rfc3164,
    Rfc5424,
}

fn push(out: &mut Vec<Attribute>, key: impl Into<String>, value: Value) {
    out.push(Attribute {
        key: key.into(),
        value,
    });
}

/// `<PRI>`: its value and the rest of the line.
fn pri(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix('<')?;
    let end = rest.find('>').filter(|&e| (1..=3).contains(&e))?;
    let pri: u8 = rest[..end].parse().ok().filter(|&p| p <= 191)?;
    Some((pri, &rest[end + 1..]))
}

fn word(s: &str) -> Option<(&str, &str)> {
    let end = s.find(' ').unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], s[end..].strip_prefix(' ').unwrap_or("")))
}

fn nil(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

/// Parse `record.body` as syslog; on success set the timestamp, body (the MSG part) and
/// append the attributes.
pub fn parse(record: &mut Record) -> Option<Kind> {
    // Allocated once the line looks like syslog: many lines are tried and are not.
    let mut out = Vec::new();
    let line = record.body.as_str();
    let (pri, rest) = match pri(line) {
        Some((p, rest)) => (Some(p), rest),
        None => (None, line),
    };
    let (kind, ts, msg_start) = match rest.strip_prefix("1 ").filter(|_| pri.is_some()) {
        Some(rest) => {
            let (ts, msg) = rfc5424(rest, record.timestamp, &mut out)?;
            (Kind::Rfc5424, ts, msg)
        }
        None => {
            let (ts, msg) = rfc3164(rest, record.timestamp, &mut out)?;
            (Kind::Rfc3164, ts, msg)
        }
    };
    if let Some(pri) = pri {
        push(&mut out, "log.syslog.priority", Value::Int(pri.into()));
        push(
            &mut out,
            "log.syslog.facility.code",
            Value::Int((pri >> 3).into()),
        );
        push(
            &mut out,
            "log.syslog.severity.code",
            Value::Int((pri & 7).into()),
        );
        if let Some(l) = level::from_syslog(pri & 7) {
            record.severity_number = l.number;
            record.severity_text = l.text.to_string();
        }
    }
    let msg = msg_start.strip_prefix('\u{feff}').unwrap_or(msg_start);
    record.body = msg.to_string();
    record.timestamp = ts;
    record.attributes.append(&mut out);
    Some(kind)
}

/// After `<PRI>1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG].
fn rfc5424<'a>(s: &'a str, reference: i64, out: &mut Vec<Attribute>) -> Option<(i64, &'a str)> {
    out.reserve(10);
    let (ts, s) = word(s)?;
    let ts = match nil(ts) {
        Some(ts) => time::parse_text(ts, reference)?,
        None => reference,
    };
    let (host, s) = word(s)?;
    let (app, s) = word(s)?;
    let (procid, s) = word(s)?;
    let (msgid, s) = word(s)?;
    if let Some(host) = nil(host) {
        push(out, "host.name", Value::from(host));
    }
    if let Some(app) = nil(app) {
        push(out, "service.name", Value::from(app));
    }
    if let Some(pid) = nil(procid) {
        push(
            out,
            "process.pid",
            pid.parse::<i64>().map_or(Value::from(pid), Value::Int),
        );
    }
    if let Some(msgid) = nil(msgid) {
        push(out, "log.syslog.msgid", Value::from(msgid));
    }
    let msg = if let Some(rest) = s.strip_prefix('-') {
        rest
    } else {
        structured_data(s, out)?
    };
    Some((ts, msg.strip_prefix(' ').unwrap_or(msg)))
}

/// `[id k="v" …][id2 …]` → `log.syslog.structured_data.<id>.<k>`; returns what follows.
fn structured_data<'a>(mut s: &'a str, out: &mut Vec<Attribute>) -> Option<&'a str> {
    while let Some(element) = s.strip_prefix('[') {
        let (id, mut rest) = element
            .find([' ', ']'])
            .map(|i| (&element[..i], &element[i..]))?;
        loop {
            rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(']') {
                s = after;
                break;
            }
            let eq = rest.find('=')?;
            let name = &rest[..eq];
            let value = rest[eq + 1..].strip_prefix('"')?;
            let mut text = String::new();
            let mut end = None;
            let mut chars = value.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => text.push(chars.next()?.1),
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => text.push(c),
                }
            }
            let end = end?;
            push(
                out,
                format!("log.syslog.structured_data.{id}.{name}"),
                Value::Str(text),
            );
            rest = &value[end + 1..];
        }
    }
    Some(s)
}

/// After the optional `<PRI>`: `Mmm dd hh:mm:ss HOST TAG[PID]: MSG`.
fn rfc3164<'a>(s: &'a str, reference: i64, out: &mut Vec<Attribute>) -> Option<(i64, &'a str)> {
    let (ts, used) = time::parse_prefix(s, reference)?;
    let s = s[used..].strip_prefix(' ')?;
    let (host, s) = word(s)?;
    // The tag ends at `[`, `:` or space; without a `:` after it, it is not a tag.
    let tag_end = s.find(['[', ':', ' ']).unwrap_or(s.len());
    let (tag, mut rest) = s.split_at(tag_end);
    let mut pid = None;
    if let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        pid = Some(&inner[..close]);
        rest = &inner[close + 1..];
    }
    let msg = rest.strip_prefix(':')?;
    // A level word where the host goes is a plain line (`<time> INFO main: started`).
    if tag.is_empty() || host.contains(':') || level::from_word(host).is_some() {
        return None;
    }
    out.reserve(10);
    push(out, "host.name", Value::from(host));
    push(out, "service.name", Value::from(tag));
    if let Some(pid) = pid {
        push(
            out,
            "process.pid",
            pid.parse::<i64>().map_or(Value::from(pid), Value::Int),
        );
    }
    Some((ts, msg.strip_prefix(' ').unwrap_or(msg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Origin;

    fn rec(line: &str) -> Record {
        let mut r = Record::new(Origin::default());
        r.body = line.into();
        r.timestamp = 1_795_867_200_000_000_000;
        r
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let mut r = rec(
            r#"<165>1 2026-11-25T10:00:00.003Z mymachine.example.com evntslog 42 ID47 [exampleSDID@32473 iut="3" eventSource="App\"x\""][meta a="b"] BOMAn application event"#,
        );
        assert!(matches!(parse(&mut r), Some(Kind::Rfc5424)));
        assert_eq!(r.body, "BOMAn application event");
        assert_eq!(r.timestamp, 1_795_600_800_003_000_000);
        assert_eq!(r.severity_text, "info"); // 165 & 7 = 5 notice
        assert_eq!(r.get_str("service.name"), Some("evntslog"));
        assert_eq!(r.get("process.pid"), Some(&Value::Int(42)));
        assert_eq!(
            r.get_str("log.syslog.structured_data.exampleSDID@32473.eventSource"),
            Some("App\"x\"")
        );
        assert_eq!(r.get_str("log.syslog.structured_data.meta.a"), Some("b"));
        assert_eq!(r.get("log.syslog.facility.code"), Some(&Value::Int(20)));
    }

    #[test]
    fn rfc5424_nil_fields() {
        let mut r = rec("<11>1 - - - - - - disk full");
        assert!(matches!(parse(&mut r), Some(Kind::Rfc5424)));
        assert_eq!(r.body, "disk full");
        assert_eq!(r.severity_text, "error");
        assert!(r.get("host.name").is_none());
    }

    #[test]
    fn rfc3164_with_and_without_pri() {
        let mut r = rec(
            "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8",
        );
        assert!(matches!(parse(&mut r), Some(Kind::Rfc3164)));
        assert_eq!(r.body, "'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(r.severity_text, "fatal"); // 34 & 7 = 2 crit
        assert_eq!(r.get_str("host.name"), Some("mymachine"));
        assert_eq!(r.get_str("service.name"), Some("su"));
        let mut f = rec("Nov 25 09:59:01 web-3 CRON: (root) CMD (run-parts /etc/cron.hourly)");
        assert!(matches!(parse(&mut f), Some(Kind::Rfc3164)));
        assert_eq!(f.severity_number, 0);
        assert!(parse(&mut rec("Nov 25 09:59:01 just some words")).is_none());
    }
}
