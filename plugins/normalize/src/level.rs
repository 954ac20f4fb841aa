//! Severity: level words and numbers of many conventions mapped onto the OpenTelemetry
//! severity number and one of six lowercase names (`trace`, `debug`, `info`, `warn`,
//! `error`, `fatal`), which is what `log.level` and `severity_text` carry.

use sluice_plugin_sdk::{ValueRef, severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub number: u8,
    pub text: &'static str,
}

const fn lvl(number: u8, text: &'static str) -> Level {
    Level { number, text }
}

pub const TRACE: Level = lvl(severity::TRACE, "trace");
pub const DEBUG: Level = lvl(severity::DEBUG, "debug");
pub const INFO: Level = lvl(severity::INFO, "info");
pub const WARN: Level = lvl(severity::WARN, "warn");
pub const ERROR: Level = lvl(severity::ERROR, "error");
pub const FATAL: Level = lvl(severity::FATAL, "fatal");

/// Words, matched case-insensitively. Anything above "error" is `fatal`; the number keeps
/// the finer grade (OpenTelemetry's syslog mapping: notice = INFO2, alert = FATAL3, …).
const WORDS: &[(&str, Level)] = &[
    ("info", INFO),
    ("error", ERROR),
    ("warn", WARN),
    ("warning", WARN),
    ("debug", DEBUG),
    ("trace", TRACE),
    ("fatal", FATAL),
    ("err", ERROR),
    ("inf", INFO),
    ("information", INFO),
    ("informational", INFO),
    ("notice", lvl(10, "info")),
    ("wrn", WARN),
    ("dbg", DEBUG),
    ("trc", TRACE),
    ("verbose", TRACE),
    ("fine", DEBUG),
    ("finer", lvl(3, "trace")),
    ("finest", TRACE),
    ("severe", ERROR),
    ("eror", ERROR),
    ("dbug", DEBUG),
    ("crit", FATAL),
    ("critical", FATAL),
    ("alert", lvl(23, "fatal")),
    ("emerg", lvl(24, "fatal")),
    ("emergency", lvl(24, "fatal")),
    ("panic", lvl(24, "fatal")),
    ("dpanic", lvl(22, "fatal")),
];

/// A level word (`WARNING`, `err`, `Critical`).
pub fn from_word(word: &str) -> Option<Level> {
    if word.len() > 13 {
        return None;
    }
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, l)| l)
}

/// The name of an OpenTelemetry severity number's range.
pub fn from_otel(n: u8) -> Option<Level> {
    let text = match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    };
    Some(lvl(n, text))
}

/// A syslog severity code, 0 (emergency) .. 7 (debug).
pub fn from_syslog(code: u8) -> Option<Level> {
    Some(match code {
        0 => lvl(24, "fatal"),
        1 => lvl(23, "fatal"),
        2 => FATAL,
        3 => ERROR,
        4 => WARN,
        5 => lvl(10, "info"),
        6 => INFO,
        7 => DEBUG,
        _ => return None,
    })
}

/// A number from a level field. `otel_field` is set for fields that by name carry
/// OpenTelemetry numbers (`severity_number`). Otherwise 0–7 are syslog codes, the
/// multiples of ten 10–60 are bunyan/pino levels, and other values up to 24 are
/// OpenTelemetry numbers.
pub fn from_number(n: i64, otel_field: bool) -> Option<Level> {
    if otel_field {
        return u8::try_from(n).ok().and_then(from_otel);
    }
    match n {
        0..=7 => from_syslog(n as u8),
        10 => Some(TRACE),
        20 => Some(DEBUG),
        30 => Some(INFO),
        40 => Some(WARN),
        50 => Some(ERROR),
        60 => Some(FATAL),
        8..=24 => from_otel(n as u8),
        _ => None,
    }
}

/// A level attribute's value, whatever its type.
pub fn from_value(value: ValueRef<'_>, otel_field: bool) -> Option<Level> {
    match value {
        ValueRef::Int(n) => from_number(n, otel_field),
        ValueRef::Float(f) if f.fract() == 0.0 => from_number(f as i64, otel_field),
        ValueRef::Str(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(n) => from_number(n, otel_field),
                Err(_) => from_word(s),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(from_word("WARNING"), Some(WARN));
        assert_eq!(from_word("Err"), Some(ERROR));
        assert_eq!(from_word("critical").unwrap().text, "fatal");
        assert_eq!(from_word("notice"), Some(lvl(10, "info")));
        assert_eq!(from_word("banana"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(from_number(3, false), Some(ERROR)); // syslog err
        assert_eq!(from_number(7, false), Some(DEBUG)); // syslog debug
        assert_eq!(from_number(50, false), Some(ERROR)); // pino
        assert_eq!(from_number(17, false), Some(ERROR)); // OpenTelemetry
        assert_eq!(from_number(3, true).unwrap().text, "trace"); // OpenTelemetry TRACE3
        assert_eq!(from_number(99, false), None);
        assert_eq!(from_value(ValueRef::Str("4"), false), Some(WARN));
        assert_eq!(from_value(ValueRef::Str(" Info "), false), Some(INFO));
    }
}
