//! Event-time parsing: epoch numbers in any unit and the textual formats logs use.
//!
//! Written by hand (no date crate) to keep the wasm binary small. Every result is
//! nanoseconds since the Unix epoch, UTC. A time without a zone is taken as UTC.

const NS_PER_SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (month as i64, day as i64);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil year of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn year_from_days(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_is_jan_or_feb = mp >= 10;
    yoe + era * 400 + i64::from(month_is_jan_or_feb)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An epoch number whose unit is decided by magnitude: below 1e11 seconds (good until the
/// year 5138), below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
/// Zero and negative values are not times.
pub fn from_epoch_int(v: i64) -> Option<i64> {
    if v <= 0 {
        None
    } else if v < 100_000_000_000 {
        Some(v * NS_PER_SEC)
    } else if v < 100_000_000_000_000 {
        Some(v * 1_000_000)
    } else if v < 100_000_000_000_000_000 {
        Some(v * 1_000)
    } else {
        Some(v)
    }
}

/// As [`from_epoch_int`], for a number with a fraction (`1732528800.123`). Whole and
/// fractional parts are scaled apart: an f64 of nanoseconds would lose ~256 ns.
pub fn from_epoch_float(v: f64) -> Option<i64> {
    if !(1.0..9.2e18).contains(&v) {
        return None;
    }
    let whole = v.trunc() as i64;
    let ns = from_epoch_int(whole)?;
    let unit = ns / whole;
    // An f64 of epoch seconds resolves ~0.24 µs today: digits below the µs are noise
    // (zap's `1795600802.1234567` would read as …123456717).
    let step = if unit == NS_PER_SEC { 1_000 } else { 1 };
    Some(ns + (v.fract() * (unit / step) as f64).round() as i64 * step)
}

/// Numeric text (`"1732528800"`, `"1732528800.123"`): exact, without going through floats.
fn from_epoch_text(s: &str) -> Option<i64> {
    // Digits, then optionally a dot and more digits. Dated text fails at its first `-`.
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let (int, frac) = match s.as_bytes().get(digits) {
        None => (s, ""),
        Some(b'.') => (&s[..digits], &s[digits + 1..]),
        Some(_) => return None,
    };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let ns = from_epoch_int(whole)?;
    if frac.is_empty() {
        return Some(ns);
    }
    // Unit of the integer part, in ns, so that the fraction scales to it.
    let unit = ns / whole;
    let mut scale = unit;
    let mut extra = 0i64;
    for b in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        extra += i64::from(b - b'0') * scale;
    }
    Some(ns + extra)
}

/// A byte cursor for the fixed-layout formats below.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    /// Exactly `n` ASCII digits.
    fn num(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }

    /// 1 or 2 digits, optionally preceded by a padding space (syslog's `Oct  1`).
    fn num_1_2(&mut self) -> Option<u32> {
        if self.peek() == Some(b' ') {
            self.i += 1;
            return self.num(1);
        }
        match self.b.get(self.i + 1) {
            Some(c) if c.is_ascii_digit() => self.num(2),
            _ => self.num(1),
        }
    }

    /// A fraction after `.` or `,`: its value in ns (digits beyond 9 are ignored).
    fn fraction(&mut self) -> i64 {
        if !matches!(self.peek(), Some(b'.' | b',')) {
            return 0;
        }
        match self.b.get(self.i + 1) {
            Some(c) if c.is_ascii_digit() => self.i += 1,
            _ => return 0,
        }
        let mut ns = 0i64;
        let mut scale = 100_000_000i64;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            ns += i64::from(c - b'0') * scale;
            scale /= 10;
            self.i += 1;
        }
        ns
    }

    fn month_name(&mut self) -> Option<u32> {
        const MONTHS: [&[u8; 3]; 12] = [
            b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
            b"dec",
        ];
        let s = self.b.get(self.i..self.i + 3)?;
        let m = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(s))?;
        self.i += 3;
        Some(m as u32 + 1)
    }

    /// `Z`, `+HH:MM`, `+HHMM` or `+HH`: the offset east of UTC in seconds; 0 when absent.
    fn zone(&mut self) -> Option<i64> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(0);
        }
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some(0),
        };
        self.i += 1;
        let h = self.num(2)?;
        self.eat(b':');
        let m = self.num(2).unwrap_or(0);
        (h <= 23 && m <= 59).then_some(sign * (i64::from(h) * 3600 + i64::from(m) * 60))
    }
}

/// A civil date and time of day, at `offset_s` east of UTC, to ns since the epoch.
fn to_ns(
    (y, mo, d): (i64, u32, u32),
    (h, mi, s): (u32, u32, u32),
    frac_ns: i64,
    offset_s: i64,
) -> Option<i64> {
    let valid_date = (1..=12).contains(&mo) && d >= 1 && d <= days_in_month(y, mo);
    if !valid_date || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset_s;
    secs.checked_mul(NS_PER_SEC)?.checked_add(frac_ns)
}

/// ISO 8601 / RFC 3339 and the common variants: `2026-11-25T10:00:00.123Z`,
/// `2026-11-25 10:00:00,123`, `2026/11/25 10:00:00`, with or without zone, or a bare date.
fn iso(c: &mut Cursor) -> Option<i64> {
    let y = c.num(4)?;
    let sep = c.peek().filter(|&b| b == b'-' || b == b'/')?;
    c.i += 1;
    let mo = c.num(2)?;
    if !c.eat(sep) {
        return None;
    }
    let d = c.num(2)?;
    let has_time = matches!(c.peek(), Some(b'T' | b't' | b' '))
        && c.b.get(c.i + 1).is_some_and(u8::is_ascii_digit);
    if !has_time {
        return to_ns((i64::from(y), mo, d), (0, 0, 0), 0, 0);
    }
    c.i += 1;
    let h = c.num(2)?;
    if !c.eat(b':') {
        return None;
    }
    let mi = c.num(2)?;
    let s = if c.eat(b':') { c.num(2)? } else { 0 };
    let frac = c.fraction();
    let offset = c.zone()?;
    to_ns((i64::from(y), mo, d), (h, mi, s), frac, offset)
}

/// Apache/nginx `10/Oct/2000:13:55:36 -0700`.
fn apache(c: &mut Cursor) -> Option<i64> {
    let d = c.num(2)?;
    let ok = c.eat(b'/');
    let mo = c.month_name().filter(|_| ok)?;
    if !c.eat(b'/') {
        return None;
    }
    let y = c.num(4)?;
    if !c.eat(b':') {
        return None;
    }
    let h = c.num(2)?;
    c.eat(b':').then_some(())?;
    let mi = c.num(2)?;
    c.eat(b':').then_some(())?;
    let s = c.num(2)?;
    let frac = c.fraction();
    let offset = if c.peek() == Some(b' ') && matches!(c.b.get(c.i + 1), Some(b'+' | b'-')) {
        c.i += 1;
        c.zone()?
    } else {
        0
    };
    to_ns((i64::from(y), mo, d), (h, mi, s), frac, offset)
}

/// Syslog (RFC 3164) `Oct 11 22:14:15`, which has no year: the year is the one of
/// `reference` (the record's fallback time), or the one before when that would put the
/// event more than a month in the future (December lines read in January).
fn syslog(c: &mut Cursor, reference: i64) -> Option<i64> {
    let mo = c.month_name()?;
    c.eat(b' ').then_some(())?;
    let d = c.num_1_2()?;
    c.eat(b' ').then_some(())?;
    let h = c.num(2)?;
    c.eat(b':').then_some(())?;
    let mi = c.num(2)?;
    c.eat(b':').then_some(())?;
    let s = c.num(2)?;
    let frac = c.fraction();
    in_year_of(reference, (mo, d), (h, mi, s), frac)
}

/// A UTC date without a year (syslog, klog): in the year of `reference`, or the one
/// before when that would put it more than a month after `reference`.
pub fn in_year_of(
    reference: i64,
    (mo, d): (u32, u32),
    (h, mi, s): (u32, u32, u32),
    frac_ns: i64,
) -> Option<i64> {
    let year = year_from_days(reference.div_euclid(NS_PER_SEC * 86_400));
    let t = to_ns((year, mo, d), (h, mi, s), frac_ns, 0)?;
    if t > reference + 31 * 86_400 * NS_PER_SEC {
        to_ns((year - 1, mo, d), (h, mi, s), frac_ns, 0)
    } else {
        Some(t)
    }
}

/// A timestamp at the start of `s`: its value and the number of bytes it took.
/// `reference` supplies the year for formats without one.
pub fn parse_prefix(s: &str, reference: i64) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let first = *b.first()?;
    let mut c = Cursor { b, i: 0 };
    let ns = if first.is_ascii_digit() {
        iso(&mut c).or_else(|| {
            c.i = 0;
            apache(&mut c)
        })?
    } else {
        syslog(&mut c, reference)?
    };
    Some((ns, c.i))
}

/// A whole string as a timestamp: epoch digits or any format of [`parse_prefix`].
pub fn parse_text(s: &str, reference: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(ns) = from_epoch_text(s) {
        return Some(ns);
    }
    match parse_prefix(s, reference) {
        Some((ns, used)) if used == s.len() => Some(ns),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: i64 = 1_795_867_200 * NS_PER_SEC; // 2026-11-28T12:00:00Z

    fn t(s: &str) -> Option<i64> {
        parse_text(s, REF)
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-800_000, -1, 0, 59, 60, 11_016, 20_000, 2_000_000] {
            let y = year_from_days(days);
            assert!(days_from_civil(y, 1, 1) <= days && days < days_from_civil(y + 1, 1, 1));
        }
    }

    #[test]
    fn rfc3339_variants() {
        let base = 1_795_600_800 * NS_PER_SEC; // 2026-11-25T10:00:00Z
        assert_eq!(t("2026-11-25T10:00:00Z"), Some(base));
        assert_eq!(t("2026-11-25T10:00:00.123Z"), Some(base + 123_000_000));
        assert_eq!(
            t("2026-11-25T10:00:00.123456789Z"),
            Some(base + 123_456_789)
        );
        assert_eq!(t("2026-11-25T11:00:00+01:00"), Some(base));
        assert_eq!(t("2026-11-25T05:00:00-0500"), Some(base));
        assert_eq!(t("2026-11-25T10:00:00"), Some(base));
        assert_eq!(t("2026-11-25 10:00:00,123"), Some(base + 123_000_000));
        assert_eq!(t("2026/11/25 10:00:00"), Some(base));
        assert_eq!(t("2026-11-25T10:00Z"), Some(base));
        assert_eq!(t("2026-11-25"), Some(base - 10 * 3600 * NS_PER_SEC));
        assert_eq!(t("2026-02-30T10:00:00Z"), None);
        assert_eq!(t("2026-11-25T25:00:00Z"), None);
        assert_eq!(t("2026-11-25T10:00:00Zjunk"), None);
    }

    #[test]
    fn epochs_by_magnitude() {
        let s = 1_795_600_800i64;
        assert_eq!(t("1795600800"), Some(s * NS_PER_SEC));
        assert_eq!(t("1795600800123"), Some(s * NS_PER_SEC + 123_000_000));
        assert_eq!(t("1795600800123456"), Some(s * NS_PER_SEC + 123_456_000));
        assert_eq!(t("1795600800123456789"), Some(s * NS_PER_SEC + 123_456_789));
        assert_eq!(t("1795600800.5"), Some(s * NS_PER_SEC + 500_000_000));
        assert_eq!(
            from_epoch_float(1_795_600_800.25),
            Some(s * NS_PER_SEC + 250_000_000)
        );
        assert_eq!(
            from_epoch_float(1_795_600_802.123_456_7),
            Some(1_795_600_802 * NS_PER_SEC + 123_457_000)
        );
        assert_eq!(from_epoch_int(0), None);
    }

    #[test]
    fn log_line_formats() {
        assert_eq!(
            t("10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336 * NS_PER_SEC)
        );
        assert_eq!(
            t("10/Oct/2000:13:55:36"),
            Some((971_211_336 - 7 * 3600) * NS_PER_SEC)
        );
        // Syslog takes the reference's year, or the one before for far-future dates.
        let oct = days_from_civil(2026, 10, 11) * 86_400 + 22 * 3600 + 14 * 60 + 15;
        assert_eq!(t("Oct 11 22:14:15"), Some(oct * NS_PER_SEC));
        let dec = days_from_civil(2025, 12, 31) * 86_400 + 23 * 3600;
        let jan_ref = days_from_civil(2026, 1, 1) * 86_400 * NS_PER_SEC;
        assert_eq!(
            parse_text("Dec 31 23:00:00", jan_ref),
            Some(dec * NS_PER_SEC)
        );
        let feb = days_from_civil(2026, 2, 1) * 86_400 + 10 * 3600;
        assert_eq!(t("Feb  1 10:00:00"), Some(feb * NS_PER_SEC));
    }

    #[test]
    fn prefix_reports_length() {
        let (_, used) = parse_prefix("2026-11-25 10:00:00,123 ERROR boom", REF).unwrap();
        assert_eq!(used, 23);
        assert!(parse_prefix("hello", REF).is_none());
    }
}
