//! Durations to nanoseconds. The unit comes from the value when it has one (`"1.5s"`,
//! `"250us"`, `"1m30s"`), else from the field name's suffix (`_ms`, `_us`, `_ns`, `_s`),
//! else from the field's configured default.

use sluice_plugin_sdk::ValueRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Ns,
    Us,
    Ms,
    S,
}

impl Unit {
    pub fn ns(self) -> f64 {
        match self {
            Unit::Ns => 1.0,
            Unit::Us => 1e3,
            Unit::Ms => 1e6,
            Unit::S => 1e9,
        }
    }
}

/// The unit a field name announces by its suffix, if any.
pub fn unit_from_key(key: &str) -> Option<Unit> {
    const SUFFIXES: &[(&str, Unit)] = &[
        ("_ms", Unit::Ms),
        ("_millis", Unit::Ms),
        ("Ms", Unit::Ms),
        ("Millis", Unit::Ms),
        ("_us", Unit::Us),
        ("_micros", Unit::Us),
        ("Us", Unit::Us),
        ("_ns", Unit::Ns),
        ("_nanos", Unit::Ns),
        ("Ns", Unit::Ns),
        ("_s", Unit::S),
        ("_sec", Unit::S),
        ("_secs", Unit::S),
        ("_seconds", Unit::S),
        ("Seconds", Unit::S),
    ];
    SUFFIXES
        .iter()
        .find(|(suffix, _)| key.ends_with(suffix))
        .map(|&(_, unit)| unit)
}

fn suffix_unit(s: &str) -> Option<f64> {
    Some(match s {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" | "sec" | "secs" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// Text like `123`, `12.5ms`, `1.5s`, `1m30s`: ns, with `default` for a bare number.
fn text_to_ns(s: &str, default: Unit) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some(v * default.ns());
    }
    // A sequence of <number><unit> parts (Go's time.Duration format).
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let unit_end = rest[num_end..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| num_end + i);
        let v: f64 = rest[..num_end].parse().ok()?;
        total += v * suffix_unit(rest[num_end..unit_end].trim())?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// A duration attribute as whole nanoseconds. Negative, non-finite or non-numeric values
/// are not durations.
pub fn to_ns(value: ValueRef<'_>, default: Unit) -> Option<i64> {
    let ns = match value {
        ValueRef::Int(v) => v as f64 * default.ns(),
        ValueRef::Float(v) => v * default.ns(),
        ValueRef::Str(s) => text_to_ns(s, default)?,
        _ => return None,
    };
    (ns.is_finite() && (0.0..9.2e18).contains(&ns)).then(|| ns.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_names() {
        assert_eq!(unit_from_key("duration_ms"), Some(Unit::Ms));
        assert_eq!(unit_from_key("latencyMs"), Some(Unit::Ms));
        assert_eq!(unit_from_key("elapsed_us"), Some(Unit::Us));
        assert_eq!(unit_from_key("took_ns"), Some(Unit::Ns));
        assert_eq!(unit_from_key("request_time_s"), Some(Unit::S));
        assert_eq!(unit_from_key("duration"), None);
    }

    #[test]
    fn values() {
        assert_eq!(to_ns(ValueRef::Float(123.4), Unit::Ms), Some(123_400_000));
        assert_eq!(to_ns(ValueRef::Int(5), Unit::S), Some(5_000_000_000));
        assert_eq!(to_ns(ValueRef::Str("123ms"), Unit::S), Some(123_000_000));
        assert_eq!(to_ns(ValueRef::Str("1.5s"), Unit::Ms), Some(1_500_000_000));
        assert_eq!(to_ns(ValueRef::Str("250µs"), Unit::Ms), Some(250_000));
        assert_eq!(
            to_ns(ValueRef::Str("1m30s"), Unit::Ms),
            Some(90_000_000_000)
        );
        assert_eq!(to_ns(ValueRef::Str("0.25"), Unit::S), Some(250_000_000));
        assert_eq!(to_ns(ValueRef::Str("fast"), Unit::Ms), None);
        assert_eq!(to_ns(ValueRef::Str("12 parsecs"), Unit::Ms), None);
        assert_eq!(to_ns(ValueRef::Int(-3), Unit::Ms), None);
    }
}
