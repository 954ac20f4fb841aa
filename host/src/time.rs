//! Calendar arithmetic for timestamps in nanoseconds since the Unix epoch, without a
//! date-time dependency on the hot path.

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The broken-down UTC time of `ns`: (year, month, day, hour, minute, second, nanos).
pub fn utc_parts(ns: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, mo, d) = civil_from_days(days);
    (y, mo, d, sod / 3600, sod / 60 % 60, sod % 60, nanos)
}

/// RFC 3339 with millisecond precision in UTC, e.g. `2026-11-25T10:00:00.123Z`. Millisecond
/// precision is what Elasticsearch's `date` type and Kibana show.
pub fn rfc3339_millis(ns: i64) -> String {
    let (y, mo, d, h, mi, s, nanos) = utc_parts(ns);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        nanos / 1_000_000
    )
}

/// Append `ns` as RFC 3339 with nanosecond precision in UTC to `out`, digit by digit:
/// every record the host encodes carries one, and `format!` was ~1 % of the host's CPU.
/// Nanoseconds in an `i64` span the years 1677–2262, so the year always has four digits.
pub fn push_rfc3339_nanos(ns: i64, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, nanos) = utc_parts(ns);
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut text[0..4], y as u32);
    put_digits(&mut text[5..7], mo);
    put_digits(&mut text[8..10], d);
    put_digits(&mut text[11..13], h);
    put_digits(&mut text[14..16], mi);
    put_digits(&mut text[17..19], s);
    put_digits(&mut text[20..29], nanos);
    out.extend_from_slice(&text);
}

/// Write the last `digits.len()` decimal digits of `n` into `digits`, zero-padded.
fn put_digits(digits: &mut [u8], mut n: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339_nanos(ns: i64) -> String {
        let mut out = Vec::new();
        push_rfc3339_nanos(ns, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-200_000..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-25T10:00:00.123456789Z
        let ns = days_from_civil(2026, 11, 25) * 86_400_000_000_000
            + 10 * 3_600_000_000_000
            + 123_456_789;
        assert_eq!(rfc3339_nanos(ns), "2026-11-25T10:00:00.123456789Z");
        assert_eq!(rfc3339_millis(ns), "2026-11-25T10:00:00.123Z");
        // leap day
        let leap = days_from_civil(2024, 2, 29) * 86_400_000_000_000;
        assert_eq!(rfc3339_millis(leap), "2024-02-29T00:00:00.000Z");
    }

    /// The digit-by-digit writer against `format!`, over the whole range of an `i64`.
    #[test]
    fn nanos_match_the_formatted_text() {
        let formatted = |ns: i64| {
            let (y, mo, d, h, mi, s, nanos) = utc_parts(ns);
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
        };
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut samples = vec![0, -1, 1, i64::MIN, i64::MAX];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            samples.push(state as i64);
            // And an instant in 1900–2100.
            samples.push((state % 6_311_433_600_000_000_000) as i64 - 2_208_988_800_000_000_000);
        }
        for ns in samples {
            assert_eq!(rfc3339_nanos(ns), formatted(ns), "{ns}");
        }
    }
}
