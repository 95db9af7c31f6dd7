//! UTC calendar months: the billing period. A month is one small integer so that the hot
//! path can key counters by it; it prints and parses as `YYYY-MM`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar month, `year * 12 + (month - 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(pub u32);

impl Month {
    pub fn new(year: u32, month: u32) -> Option<Month> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year)).then(|| Month(year * 12 + month - 1))
    }

    pub fn year(self) -> u32 {
        self.0 / 12
    }

    /// 1..=12.
    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }

    /// The month containing `secs` seconds after the Unix epoch (UTC).
    pub fn from_unix(secs: u64) -> Month {
        let (y, m) = civil_from_days(secs / 86_400);
        Month(y * 12 + m - 1)
    }

    /// The current month by the wall clock (a clock before 1970 counts as 1970-01).
    pub fn now() -> Month {
        Month::from_unix(unix_now())
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        Month::new(y.parse().ok()?, m.parse().ok()?)
    }

    pub fn prev(self) -> Month {
        Month(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// Seconds since the Unix epoch by the wall clock; 0 if the clock is before it.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (year, month) of a day count since 1970-01-01: Howard Hinnant's `civil_from_days`,
/// restricted to non-negative days.
fn civil_from_days(days: u64) -> (u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y as u32, m as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn month_boundaries_in_utc() {
        assert_eq!(Month::from_unix(0).to_string(), "1970-01");
        // 2024-02-29T23:59:59Z and one second later
        assert_eq!(Month::from_unix(1_709_251_199).to_string(), "2024-02");
        assert_eq!(Month::from_unix(1_709_251_200).to_string(), "2024-03");
        // 2025-12-31T23:59:59Z and 2026-01-01T00:00:00Z
        assert_eq!(Month::from_unix(1_767_225_599).to_string(), "2025-12");
        assert_eq!(Month::from_unix(1_767_225_600).to_string(), "2026-01");
        // 2100 is not a leap year: 2100-03-01T00:00:00Z
        assert_eq!(Month::from_unix(4_107_542_400).to_string(), "2100-03");
        assert_eq!(Month::from_unix(4_107_542_399).to_string(), "2100-02");
    }

    #[test]
    fn every_day_of_400_years_agrees_with_a_naive_calendar() {
        let leap = |y: u32| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u32, 1u32, 1u32);
        for day in 0..146_097u64 {
            assert_eq!(civil_from_days(day), (y, m), "day {day}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn parse_and_print() {
        let m = Month::parse("2026-11").unwrap();
        assert_eq!((m.year(), m.month()), (2026, 11));
        assert_eq!(m.to_string(), "2026-11");
        assert_eq!(m.prev().to_string(), "2026-10");
        assert_eq!(Month::parse("2026-01").unwrap().prev().to_string(), "2025-12");
        for bad in ["2026-13", "2026-00", "26-01", "2026-1", "2026/01", "abcd-ef", ""] {
            assert!(Month::parse(bad).is_none(), "{bad}");
        }
    }
}
