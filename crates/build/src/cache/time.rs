//! Times and durations of the cache: RFC 3339 `created` values and Go-style `--cache-ttl`.

use super::CacheError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kaniko's default `--cache-ttl`: 336h (two weeks).
pub const DEFAULT_TTL: Duration = Duration::from_secs(336 * 3600);

/// Parses a Go `time.ParseDuration` value as Kaniko's flags take it: a sequence of
/// `<number><unit>` with units `ns us µs ms s m h` (e.g. `336h`, `1h30m`, `1.5h`, `90s`).
/// A bare `0` is zero.
pub fn parse_ttl(value: &str) -> Result<Duration, CacheError> {
    let bad = |reason| CacheError::BadTtl {
        value: value.to_string(),
        reason,
    };
    let s = value.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.starts_with('-') {
        return Err(bad("negative"));
    }
    let mut total = 0f64;
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit (use e.g. 336h, 30m, 90s)"))?;
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad("invalid number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad("unknown unit (use ns, us, ms, s, m or h)")),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad("out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A TTL the way `--cache-ttl` takes it: `336h`, `90m`, `45s` (the largest whole unit).
pub fn format_ttl(ttl: Duration) -> String {
    let s = ttl.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Formats a time as RFC 3339 in UTC with second precision (`2026-11-22T21:21:47Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an RFC 3339 date-time (`Z` or `±hh:mm` offset, optional fraction). `None` when it
/// is not one (a cache entry without a valid `created` is treated as expired).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 9)];
        let padded = format!("{frac:0<9}");
        nanos = padded.parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return Some(UNIX_EPOCH);
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

/// Howard Hinnant's `civil_from_days` (proleptic Gregorian, UTC).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// True when an entry created at `created` is older than `ttl` at `now`. A zero TTL disables
/// the age check (Kaniko's `created + ttl < now` would make every entry expired, which turns
/// the cache off; kiln reads 0 as "no limit", see docs/cache.md).
pub fn expired(created: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    if ttl.is_zero() {
        return false;
    }
    match now.duration_since(created) {
        Ok(age) => age > ttl,
        // Created in the future: not expired (clock skew between builders).
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_ttl("336h").unwrap(), Duration::from_secs(336 * 3600));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "h", "-1h", "5d", "1x"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789123Z"),
            Some(t + Duration::from_nanos(123_456_789))
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20",
            "x023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let now = SystemTime::now();
        let back = parse_rfc3339(&format_rfc3339(now)).unwrap();
        assert!(now.duration_since(back).unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let created = UNIX_EPOCH + Duration::from_secs(5_000);
        assert!(expired(created, Duration::from_secs(4_000), now));
        assert_eq!(format_ttl(DEFAULT_TTL), "336h");
        assert_eq!(format_ttl(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(format_ttl(Duration::from_secs(61)), "61s");
        assert!(!expired(created, Duration::from_secs(6_000), now));
        assert!(!expired(created, Duration::ZERO, now));
        assert!(!expired(
            now + Duration::from_secs(5),
            Duration::from_secs(1),
            now
        ));
    }
}
