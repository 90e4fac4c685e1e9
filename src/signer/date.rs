//! The `X-Sdk-Date` timestamp: UTC, `YYYYMMDDTHHMMSSZ`, whole seconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, shown in the SDK's basic ISO 8601 form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SdkDate(u64);

impl SdkDate {
    #[cfg(test)]
    pub(crate) fn from_unix(secs: u64) -> Self {
        SdkDate(secs)
    }

    /// The `X-Sdk-Date` of a moment (whole seconds, UTC).
    pub fn from_system_time(t: SystemTime) -> Self {
        SdkDate(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs())
    }

    pub(crate) fn unix(self) -> u64 {
        self.0
    }

    /// Parses `YYYYMMDDTHHMMSSZ` strictly (the only form the gateway and Huawei's servers accept).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u64> {
            let part = s.get(range)?;
            part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
        };
        let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hour, min, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
        let valid = (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour < 24
            && min < 60
            && sec < 60;
        if !valid || year < 1970 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(SdkDate(days * 86_400 + hour * 3_600 + min * 60 + sec))
    }

    /// `YYYYMMDD`, the day part used in the V11 derived-key scope.
    pub(crate) fn day(self) -> String {
        let (y, m, d) = civil_from_days(self.0 / 86_400);
        format!("{y:04}{m:02}{d:02}")
    }
}

/// Parses an RFC 3339 UTC timestamp as IAM writes them (`2024-01-03T03:04:05.000000Z`);
/// fractions of a second are dropped.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let time = time.strip_suffix(['Z', 'z']).or_else(|| time.strip_suffix("+00:00"))?;
    let time = time.split_once('.').map_or(time, |(whole, _)| whole);
    let compact = format!("{}T{}Z", date.replace('-', ""), time.replace(':', ""));
    SdkDate::parse(&compact).map(|d| UNIX_EPOCH + Duration::from_secs(d.unix()))
}

impl fmt::Display for SdkDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0 / 86_400);
        let s = self.0 % 86_400;
        write!(f, "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", s / 3_600, s / 60 % 60, s % 60)
    }
}

fn is_leap(y: u64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Civil-date conversions after Howard Hinnant's public-domain `days_from_civil` /
// `civil_from_days` algorithms, restricted to dates from 1970 on.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let d = SdkDate::parse("20240102T030405Z").map(SdkDate::unix);
        assert_eq!(d, Some(1_704_164_645));
        assert_eq!(SdkDate::from_unix(1_704_164_645).to_string(), "20240102T030405Z");
        assert_eq!(SdkDate::from_unix(951_782_400).to_string(), "20000229T000000Z");
        assert_eq!(SdkDate::from_unix(0).day(), "19700101");
    }

    #[test]
    fn parses_iam_expiry_times() {
        let t = parse_rfc3339("2024-01-03T03:04:05.000000Z").map(SdkDate::from_system_time);
        assert_eq!(t.map(|d| d.to_string()), Some("20240103T030405Z".to_owned()));
        assert!(parse_rfc3339("2024-01-03T03:04:05+08:00").is_none(), "only UTC is accepted, never guessed");
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn rejects_anything_but_the_basic_form() {
        for bad in
            ["2024-01-02T03:04:05Z", "20240102T030405", "20240230T000000Z", "20240102T240000Z", "2024010aT030405Z"]
        {
            assert_eq!(SdkDate::parse(bad), None, "{bad}");
        }
    }
}
