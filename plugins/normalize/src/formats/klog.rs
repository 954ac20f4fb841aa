//! klog / glog, the text format of Kubernetes components and Go programs using glog:
//! `I1125 10:00:03.000123    1 main.go:12] message` (level letter, month and day,
//! time of day with µs, thread id padded to 7, `file:line]`). The year comes from the
//! record's fallback time, as for RFC 3164 syslog.

use crate::level::{self, Level};
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

fn letter(b: u8) -> Option<Level> {
    match b {
        b'I' => Some(level::INFO),
        b'W' => Some(level::WARN),
        b'E' => Some(level::ERROR),
        b'F' => Some(level::FATAL),
        _ => None,
    }
}

/// `n` ASCII digits at `b[at..]`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
    })
}

/// The fixed-width head `Lmmdd hh:mm:ss`: level, (month, day), (h, m, s).
type Head = (Level, (u32, u32), (u32, u32, u32));

fn head(b: &[u8]) -> Option<Head> {
    let l = letter(*b.first()?)?;
    let date = (digits(b, 1, 2)?, digits(b, 3, 2)?);
    let seps = (b.get(5), b.get(8), b.get(11));
    if seps != (Some(&b' '), Some(&b':'), Some(&b':')) {
        return None;
    }
    Some((
        l,
        date,
        (digits(b, 6, 2)?, digits(b, 9, 2)?, digits(b, 12, 2)?),
    ))
}

/// Parse `record.body` as a klog line; on success set time, level and body (the
/// message), and append `process.thread.id`, `log.origin.file.name` and `.line`.
pub fn parse(record: &mut Record) -> bool {
    let line = record.body.as_str();
    let b = line.as_bytes();
    let Some((l, date, tod)) = head(b) else {
        return false;
    };
    // `.uuuuuu`, then the padded thread id.
    let mut at = 14;
    let mut frac = 0i64;
    if b.get(at) == Some(&b'.') {
        let mut scale = 100_000_000i64;
        at += 1;
        while let Some(d) = b.get(at).filter(|c| c.is_ascii_digit()) {
            frac += i64::from(d - b'0') * scale;
            scale /= 10;
            at += 1;
        }
    }
    let rest = line[at..].trim_start_matches(' ');
    let Some((thread, rest)) = rest.split_once(' ') else {
        return false;
    };
    let Some((origin, msg)) = rest
        .split_once("] ")
        .or_else(|| rest.strip_suffix(']').map(|o| (o, "")))
    else {
        return false;
    };
    let Some((file, line_no)) = origin.rsplit_once(':') else {
        return false;
    };
    let (Ok(thread), Ok(line_no)) = (thread.parse::<i64>(), line_no.parse::<i64>()) else {
        return false;
    };
    let Some(ts) = time::in_year_of(record.timestamp, date, tod, frac) else {
        return false;
    };
    let attrs = [
        ("process.thread.id", Value::Int(thread)),
        ("log.origin.file.name", Value::from(file)),
        ("log.origin.file.line", Value::Int(line_no)),
    ];
    record
        .attributes
        .extend(attrs.into_iter().map(|(k, value)| Attribute {
            key: k.to_string(),
            value,
        }));
    record.timestamp = ts;
    record.severity_number = l.number;
    record.severity_text = l.text.to_string();
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
        r.timestamp = 1_795_867_200_000_000_000; // 2026-11-28T12:00:00Z
        parse(&mut r).then_some(r)
    }

    #[test]
    fn klog_lines() {
        let r = run("E1125 10:00:03.000123    1 reflector.go:138] watch failed").unwrap();
        assert_eq!(r.timestamp, 1_795_600_803_000_123_000);
        assert_eq!(r.severity_text, "error");
        assert_eq!(r.body, "watch failed");
        assert_eq!(r.get("process.thread.id"), Some(&Value::Int(1)));
        assert_eq!(r.get_str("log.origin.file.name"), Some("reflector.go"));
        assert_eq!(r.get("log.origin.file.line"), Some(&Value::Int(138)));
        assert!(run("I1125 10:00:03.000000 main.go:12] no thread").is_none());
        assert!(run("I1325 10:00:03.000000    1 main.go:12] month 13").is_none());
        assert!(run("Info: not klog").is_none());
    }
}
