//! Points in time on the command line: Unix microseconds, `now`, `-15m`-style offsets from
//! now, or RFC 3339 in UTC (`2026-11-26T14:00:00Z`, with optional fractional seconds).

use std::time::{SystemTime, UNIX_EPOCH};

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Parses a point in time into Unix microseconds.
pub fn parse(s: &str) -> Result<u64, String> {
    parse_at(s, now_us())
}

fn parse_at(s: &str, now: u64) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!("{s:?} is not a time: give Unix microseconds, `now`, an offset like -15m / -2h / -7d, or RFC 3339 UTC like 2026-11-26T14:00:00Z")
    };
    if s == "now" {
        return Ok(now);
    }
    if let Ok(us) = s.parse::<u64>() {
        return Ok(us);
    }
    if let Some(offset) = s.strip_prefix('-') {
        let (n, unit) = offset.split_at(offset.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let unit_us: u64 = match unit {
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(n.saturating_mul(unit_us)));
    }
    rfc3339_utc(s).ok_or_else(bad)
}

fn rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) || y < 1970 {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, se): (u64, u64, u64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if frac.is_empty() { 0 } else { format!("{frac:0<6}")[..6].parse::<u64>().ok()? };
    let days = days_from_civil(y, mo, da);
    Some(((days as u64 * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000) + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix microseconds as RFC 3339 UTC with microseconds.
pub fn format(us: u64) -> String {
    let secs = us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        us % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        let now = 1_764_165_600_000_000; // 2025-11-26T14:00:00Z
        assert_eq!(parse_at("now", now), Ok(now));
        assert_eq!(parse_at("123", now), Ok(123));
        assert_eq!(parse_at("-15m", now), Ok(now - 900_000_000));
        assert_eq!(parse_at("-2d", now), Ok(now - 172_800_000_000));
        assert_eq!(parse_at("2025-11-26T14:00:00Z", now), Ok(now));
        assert_eq!(parse_at("2025-11-26T14:00:00.25Z", now), Ok(now + 250_000));
        assert_eq!(parse_at("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(parse_at("2024-02-29T23:59:59Z", now), Ok(1_709_251_199_000_000));
        for bad in ["", "yesterday", "-5w", "-m", "2025-13-01T00:00:00Z", "2025-11-26T14:00:00", "2025-11-26T25:00:00Z"] {
            let err = parse_at(bad, now).unwrap_err();
            assert!(err.contains("is not a time"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn format_inverts_parse() {
        for s in ["1970-01-01T00:00:00.000000Z", "2024-02-29T23:59:59.123456Z", "2025-11-26T14:00:00.000001Z", "2100-03-01T00:00:00.000000Z"] {
            assert_eq!(format(parse_at(s, 0).unwrap()), s);
        }
    }
}
