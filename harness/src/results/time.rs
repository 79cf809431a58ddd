//! UTC timestamps for results without a date-time dependency: RFC 3339 strings and run ids
//! from `SystemTime`, through the proleptic Gregorian calendar (days since 1970-01-01 to a
//! civil date, the era-based method of Howard Hinnant's "chrono-Compatible Low-Level Date
//! Algorithms").

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-25T15:31:33.123Z` (UTC, milliseconds). Times before 1970 clamp to the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, (h, m, s)) = split(d.as_secs());
    format!("{date}T{h:02}:{m:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// A run id that sorts by time and is safe in paths: `20261125T153133Z`.
pub fn run_id(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (date, (h, m, s)) = split(secs);
    format!("{}T{h:02}{m:02}{s:02}Z", date.replace('-', ""))
}

fn split(secs: u64) -> (String, (u64, u64, u64)) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    (
        format!("{y:04}-{mo:02}-{d:02}"),
        (rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Days since 1970-01-01 to (year, month, day). Eras are 400-year cycles of 146097 days;
/// the year is counted from March so that February's leap day falls at its end.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, the start of an era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59.000Z");
        assert_eq!(
            rfc3339(at(1_709_251_199) + Duration::from_millis(7)),
            "2024-02-29T23:59:59.007Z"
        );
        assert_eq!(run_id(at(1_700_000_000)), "20231114T221320Z");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        let mut prev = civil_from_days(0);
        for day in 1..200_000 {
            let next = civil_from_days(day);
            let (y, m, d) = prev;
            let ok = next == (y, m, d + 1) || next == (y, m + 1, 1) || next == (y + 1, 1, 1);
            assert!(ok, "{prev:?} -> {next:?}");
            prev = next;
        }
    }
}
