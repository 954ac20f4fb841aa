//! Plain text lines: an optional leading timestamp (`2026-11-25 10:00:00,123`,
//! `[10/Oct/2000:13:55:36 -0700]`, `Oct 11 22:14:15`), then a level word among the
//! first tokens (`ERROR`, `[warn]`, `WARNING:`, Python's `ERROR:root:…`).
//! The rest of the line is the message.

use crate::level::{self, Level};
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

/// How many leading tokens may precede the level word (`[main] ERROR …`).
const LEVEL_SEARCH_TOKENS: usize = 3;

/// A level word inside a token such as `[ERROR]`, `<warn>`, `INFO:`, `ERROR:root:x` or
/// logrus's `INFO[0000]`.
fn level_of_token(token: &str) -> Option<Level> {
    let t = token.trim_start_matches(['[', '<', '(']);
    let end = t.find([']', '>', ')', ':', ',', '[']).unwrap_or(t.len());
    level::from_word(&t[..end])
}

/// A timestamp at the start of `s` (bare or in `[…]`) followed by a separator: its
/// value and what follows the separators.
fn leading_time(s: &str, reference: i64) -> Option<(i64, &str)> {
    let bracketed = s.strip_prefix('[');
    let inner = bracketed.unwrap_or(s);
    let (ns, used) = time::parse_prefix(inner, reference)?;
    let after = &inner[used..];
    let after = match bracketed {
        Some(_) => after.strip_prefix(']')?,
        None => after,
    };
    // A timestamp must be followed by a separator, not glued to a word.
    if !(after.is_empty() || after.starts_with([' ', '\t', '|'])) {
        return None;
    }
    let after = after.trim_start_matches([' ', '\t', '|']);
    // Python's `%(asctime)s - %(name)s - …`.
    Some((ns, after.strip_prefix("- ").unwrap_or(after)))
}

/// Spring Boot's default after the level: `4242 --- [app] [  thread] logger  : message`
/// (the `[app]` since 3.2, when the application has a name).
fn spring(s: &str, out: &mut Vec<Attribute>) -> Option<usize> {
    let (pid, rest) = s.split_once(" --- [")?;
    let pid: i64 = pid.parse().ok()?;
    let (first, rest) = rest.split_once("] ")?;
    let (app, thread, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (thread, r) = r.split_once("] ")?;
            (Some(first), thread, r)
        }
        None => (None, first, rest),
    };
    let (logger, msg) = rest.split_once(" : ")?;
    let mut push = |key: &str, value| {
        out.push(Attribute {
            key: key.to_string(),
            value,
        })
    };
    push("process.pid", Value::Int(pid));
    if let Some(app) = app.filter(|a| !a.is_empty()) {
        push("service.name", Value::from(app));
    }
    push("process.thread.name", Value::from(thread.trim()));
    push("log.logger", Value::from(logger.trim()));
    Some(s.len() - msg.len())
}

/// On success (a timestamp or a level was found) set them and the body, and return true.
pub fn parse(record: &mut Record) -> bool {
    let line = record.body.trim();
    let mut rest = line;
    let mut ts = None;
    if let Some((ns, after)) = leading_time(rest, record.timestamp) {
        ts = Some(ns);
        rest = after;
    }
    let mut found = None;
    let mut cursor = rest;
    let mut extracted = Vec::new();
    for i in 0..LEVEL_SEARCH_TOKENS {
        let end = (cursor.as_bytes().iter())
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(cursor.len());
        if end == 0 {
            break;
        }
        let token = &cursor[..end];
        if let Some(l) = level_of_token(token) {
            // A leading level word is dropped from the message; a later one stays.
            if i == 0 {
                let skip = match token.find(':') {
                    // `ERROR:root:msg` keeps what follows the level's colon.
                    Some(colon) if colon + 1 < token.len() => colon + 1,
                    _ => end,
                };
                rest = cursor[skip..].trim_start_matches([' ', '\t', '-', ':']);
                // AWS Lambda (Python): `[ERROR]\t<time>\t<request id>\t<message>`; only
                // there does a time follow the level.
                let lambda =
                    ts.is_none() && token.starts_with('[') && cursor[end..].starts_with('\t');
                if let Some((ns, after)) = lambda
                    .then(|| leading_time(rest, record.timestamp))
                    .flatten()
                {
                    ts = Some(ns);
                    rest = after;
                }
                if let Some(used) = spring(rest, &mut extracted) {
                    rest = &rest[used..];
                }
            }
            found = Some(l);
            break;
        }
        cursor = cursor[end..].trim_start();
    }
    if ts.is_none() && found.is_none() {
        return false;
    }
    if let Some(l) = found {
        record.severity_number = l.number;
        record.severity_text = l.text.to_string();
    }
    if let Some(ns) = ts {
        record.timestamp = ns;
    }
    if rest.len() != record.body.len() {
        record.body = rest.to_string();
    }
    record.attributes.append(&mut extracted);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::Origin;

    fn run(line: &str) -> Option<Record> {
        let mut r = Record::new(Origin::default());
        r.body = line.into();
        r.timestamp = 1_795_867_200_000_000_000;
        parse(&mut r).then_some(r)
    }

    #[test]
    fn java_style() {
        let r = run("2026-11-25 10:00:00,123 ERROR [main] c.e.Pay - payment failed").unwrap();
        assert_eq!(r.timestamp, 1_795_600_800_123_000_000);
        assert_eq!(r.severity_text, "error");
        assert_eq!(r.body, "[main] c.e.Pay - payment failed");
    }

    #[test]
    fn variants() {
        let r = run("[2026-11-25T10:00:00Z] [warn] disk at 91%").unwrap();
        assert_eq!(
            (r.severity_text.as_str(), r.body.as_str()),
            ("warn", "disk at 91%")
        );
        let r = run("ERROR:root:connection refused").unwrap();
        assert_eq!(
            (r.severity_text.as_str(), r.body.as_str()),
            ("error", "root:connection refused")
        );
        let r = run("[main] WARNING slow query").unwrap();
        assert_eq!(
            (r.severity_text.as_str(), r.body.as_str()),
            ("warn", "[main] WARNING slow query")
        );
        let r = run("Oct 11 22:14:15 something happened").unwrap();
        assert_eq!(r.body, "something happened");
        assert!(run("hello world, nothing to see").is_none());
        assert!(run("2026-11-25Tgarbage").is_none());
        let r = run("INFO[0003] logrus on a terminal  animal=walrus").unwrap();
        assert_eq!(
            (r.severity_text.as_str(), r.body.as_str()),
            ("info", "logrus on a terminal  animal=walrus")
        );
        let r = run("2026-11-25 10:00:00,123 - billing - ERROR - card declined").unwrap();
        assert_eq!(r.severity_text, "error");
        assert_eq!(r.body, "billing - ERROR - card declined");
    }

    #[test]
    fn spring_boot() {
        let r = run("2026-11-25T10:00:00.123Z  INFO 4242 --- [shop] [           main] c.e.shop.ShopApplication                 : Started ShopApplication in 2.1 seconds").unwrap();
        assert_eq!(r.timestamp, 1_795_600_800_123_000_000);
        assert_eq!(r.body, "Started ShopApplication in 2.1 seconds");
        assert_eq!(r.get("process.pid"), Some(&Value::Int(4242)));
        assert_eq!(r.get_str("service.name"), Some("shop"));
        assert_eq!(r.get_str("process.thread.name"), Some("main"));
        assert_eq!(r.get_str("log.logger"), Some("c.e.shop.ShopApplication"));
    }

    #[test]
    fn lambda() {
        let r =
            run("[ERROR]\t2026-11-25T10:00:00.123Z\t79b4f56e-95b1-4643-9700-2807f4e68189\tboom")
                .unwrap();
        assert_eq!(r.timestamp, 1_795_600_800_123_000_000);
        assert_eq!(r.body, "79b4f56e-95b1-4643-9700-2807f4e68189\tboom");
    }
}
