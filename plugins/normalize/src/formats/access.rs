//! NCSA common / combined access logs (Apache, nginx):
//! `127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://ref/" "Mozilla/4.08"`
//! with optional trailing `key=value` extras (nginx `rt=0.123`).
//!
//! The line stays the body (as Filebeat does); the fields become attributes. The level is
//! derived from the status: 5xx error, 4xx warn, else info.

use super::logfmt;
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(' ')?;
    Some((&s[..end], &s[end..]))
}

/// A `"…"` field with `\"` escapes: the raw inside and what follows.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn push(out: &mut Vec<Attribute>, key: &str, value: Value) {
    out.push(Attribute {
        key: key.to_string(),
        value,
    });
}

fn dash_or(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// Parse `record.body` as an access log line; on success set the timestamp and append
/// the attributes.
pub fn parse(record: &mut Record) -> bool {
    let line = record.body.as_str();
    let mut out = Vec::with_capacity(12);
    let Some(ts) = fields(line, record.timestamp, &mut out) else {
        return false;
    };
    record.timestamp = ts;
    record.attributes.append(&mut out);
    true
}

fn fields(line: &str, reference: i64, out: &mut Vec<Attribute>) -> Option<i64> {
    let (client, rest) = token(line)?;
    let (_ident, rest) = token(rest)?;
    let (user, rest) = token(rest)?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let close = rest.find(']')?;
    let ts = time::parse_text(&rest[..close], reference)?;
    let (request, rest) = quoted(&rest[close + 1..])?;
    let (status, rest) = token(rest).unwrap_or((rest.trim(), ""));
    let status: i64 = status.parse().ok().filter(|s| (100..=599).contains(s))?;
    let (bytes, mut rest) = token(rest).unwrap_or((rest.trim(), ""));

    push(out, "source.ip", Value::from(client));
    if let Some(user) = dash_or(user) {
        push(out, "user.name", Value::from(user));
    }
    let mut parts = request.splitn(3, ' ');
    if let (Some(method), Some(target)) = (parts.next(), parts.next()) {
        push(out, "http.request.method", Value::from(method));
        push(out, "url", Value::from(target));
        if let Some(version) = parts.next().and_then(|p| p.strip_prefix("HTTP/")) {
            push(out, "http.version", Value::from(version));
        }
    } else {
        // A malformed request (a TLS handshake on a plain port, a scanner's junk).
        push(out, "labels.http.request.line", Value::from(request));
    }
    push(out, "http.response.status_code", Value::Int(status));
    if let Some(bytes) = dash_or(bytes).and_then(|b| b.parse::<i64>().ok()) {
        push(out, "http.response.body.bytes", Value::Int(bytes));
    }
    // Combined format: referrer and user agent.
    if let Some((referrer, tail)) = quoted(rest) {
        if let Some(referrer) = dash_or(referrer) {
            push(out, "http.request.referrer", Value::from(referrer));
        }
        rest = tail;
        if let Some((agent, tail)) = quoted(rest) {
            if let Some(agent) = dash_or(agent) {
                push(out, "user_agent.original", Value::from(agent));
            }
            rest = tail;
        }
    }
    // nginx extras: `key=value` pairs, or anything else kept as one label.
    let mut extras = rest.trim();
    while !extras.is_empty() {
        match logfmt::pair(extras) {
            Some((k, v, tail)) => {
                push(out, k, Value::Str(v));
                extras = tail.trim_start();
            }
            None => {
                push(out, "labels.access.extra", Value::from(extras));
                break;
            }
        }
    }
    let level = match status {
        500.. => "error",
        400.. => "warn",
        _ => "info",
    };
    push(out, "log.level", Value::from(level));
    Some(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Origin;

    #[test]
    fn combined() {
        let mut r = Record::new(Origin::default());
        r.body = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0" 503 2326 "http://ref/" "Mozilla/4.08 [en]" rt=0.123"#.into();
        assert!(parse(&mut r));
        assert_eq!(r.timestamp, 971_211_336_000_000_000);
        assert_eq!(r.get_str("source.ip"), Some("127.0.0.1"));
        assert_eq!(r.get_str("user.name"), Some("frank"));
        assert_eq!(r.get_str("url"), Some("/a.gif?x=1"));
        assert_eq!(r.get("http.response.status_code"), Some(&Value::Int(503)));
        assert_eq!(r.get_str("user_agent.original"), Some("Mozilla/4.08 [en]"));
        assert_eq!(r.get_str("rt"), Some("0.123"));
        assert_eq!(r.get_str("log.level"), Some("error"));
    }

    #[test]
    fn common_and_broken() {
        let mut r = Record::new(Origin::default());
        r.body = r#"10.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 -"#.into();
        assert!(parse(&mut r));
        assert!(r.get("http.response.body.bytes").is_none());
        let mut bad = Record::new(Origin::default());
        bad.body = r#"10.0.0.1 - - [not a date] "GET / HTTP/1.1" 200 5"#.into();
        assert!(!parse(&mut bad));
        assert!(bad.attributes.is_empty());
    }
}
