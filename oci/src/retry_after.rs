//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. All three date formats a
//! recipient must accept (§5.6.7) are parsed: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
//! obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//! A date in the past means "now" (zero delay). Anything else is `None` (the caller backs off
//! on its own schedule).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The delay a `Retry-After` value asks for, relative to `now`.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds is "very long": saturate rather than ignore.
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// Seconds since the Unix epoch of an HTTP-date, or `None`.
pub fn http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') && y.len() == 4 => {
            (d.parse().ok()?, month(m)?, y.parse().ok()?, *t)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years: RFC 9110 says a date
        // appearing more than 50 years in the future is in the past century).
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() || y.len() != 2 {
                return None;
            }
            let y: i64 = y.parse().ok()?;
            (
                d.parse().ok()?,
                month(m)?,
                if y < 70 { 2000 + y } else { 1900 + y },
                *t,
            )
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_wd, m, d, t, y] if y.len() == 4 => (d.parse().ok()?, month(m)?, y.parse().ok()?, *t),
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if hms.next().is_some() || h > 23 || mi > 59 || se > 60 || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se)
}

fn month(m: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|x| *x == m).map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06 08:49:37 UTC, RFC 9110's example date.
    const EXAMPLE: i64 = 784_111_777;

    #[test]
    fn http_dates_in_all_three_formats() {
        let cases: &[(&str, Option<i64>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(EXAMPLE)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(EXAMPLE)),
            ("Sun Nov  6 08:49:37 1994", Some(EXAMPLE)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
            ("Wed, 25 Nov 2026 21:00:00 GMT", Some(1_795_640_400)),
            ("Tue, 29 Feb 2028 12:00:00 GMT", Some(1_835_438_400)),
            ("Friday, 01-Jan-21 00:00:00 GMT", Some(1_609_459_200)),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None), // only GMT is allowed
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 24:49:37 GMT", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
            ("Sun, 06 Nov 94 08:49:37 GMT", None),
            ("Sunday, 06-Nov-1994 08:49:37 GMT", None),
            ("soon", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(http_date(s), *want, "{s:?}");
        }
    }

    #[test]
    fn retry_after_values() {
        let now = UNIX_EPOCH + Duration::from_secs(EXAMPLE as u64);
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1", Some(1)),
            (" 120 ", Some(120)),
            ("99999999999999999999999", Some(u64::MAX)),
            ("Sun, 06 Nov 1994 08:50:07 GMT", Some(30)),
            ("Sunday, 06-Nov-94 08:51:37 GMT", Some(120)),
            ("Sun Nov  6 08:49:47 1994", Some(10)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(0)),
            ("Sat, 05 Nov 1994 08:49:37 GMT", Some(0)), // in the past: now
            ("-5", None),
            ("1.5", None),
            ("tomorrow", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s, now), want.map(Duration::from_secs), "{s:?}");
        }
    }
}
