//! Plain text lines: an optional leading timestamp (`2026-11-25 10:00:00,123`,
//! `[10/Oct/2000:13:55:36 -0700]`, `Oct 11 22:14:15`), then a level word among the
//! first tokens (`ERROR`, `[warn]`, `WARNING:`, Python's `ERROR:root:…`).
//! The rest of the line is the message.

use crate::level::{self, Level};
use crate::time;
use sluice_plugin_sdk::Record;

/// How many leading tokens may precede the level word (`[main] ERROR …`).
const LEVEL_SEARCH_TOKENS: usize = 3;

/// A level word inside a token such as `[ERROR]`, `<warn>`, `INFO:` or `ERROR:root:x`.
fn level_of_token(token: &str) -> Option<Level> {
    let t = token.trim_start_matches(['[', '<', '(']);
    let end = t.find([']', '>', ')', ':', ',']).unwrap_or(t.len());
    level::from_word(&t[..end])
}

/// On success (a timestamp or a level was found) set them and the body, and return true.
pub fn parse(record: &mut Record) -> bool {
    let line = record.body.trim();
    let mut rest = line;
    let mut ts = None;
    let bracketed = rest.strip_prefix('[');
    if let Some((ns, used)) = time::parse_prefix(bracketed.unwrap_or(rest), record.timestamp) {
        let after = &bracketed.unwrap_or(rest)[used..];
        let after = match bracketed {
            Some(_) => after.strip_prefix(']'),
            None => Some(after),
        };
        // A timestamp must be followed by a separator, not glued to a word.
        if let Some(after) = after.filter(|a| a.is_empty() || a.starts_with([' ', '\t', '|'])) {
            ts = Some(ns);
            rest = after.trim_start_matches([' ', '\t', '|']);
        }
    }
    let mut found = None;
    let mut cursor = rest;
    for i in 0..LEVEL_SEARCH_TOKENS {
        let end = cursor.find(' ').unwrap_or(cursor.len());
        if end == 0 {
            break;
        }
        if let Some(l) = level_of_token(&cursor[..end]) {
            // A leading level word is dropped from the message; a later one stays.
            if i == 0 {
                let token = &cursor[..end];
                let skip = match token.find(':') {
                    // `ERROR:root:msg` keeps what follows the level's colon.
                    Some(colon) if colon + 1 < token.len() => colon + 1,
                    _ => end,
                };
                rest = cursor[skip..].trim_start_matches([' ', '-', ':']);
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
    }
}
