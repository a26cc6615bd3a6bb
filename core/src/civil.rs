//! UTC calendar dates from seconds since the Unix epoch, for the texts
//! 3.21 prints with a date in them (`ctime()`, cf-key's listings).
//!
//! Pure: the caller reads the clock and hands in the seconds.

/// Three-letter weekday names, starting with Thursday: 1970-01-01 was one,
/// so `days since the epoch mod 7` indexes this table.
const WEEKDAYS_FROM_EPOCH: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Three-letter month names, January first.
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The proleptic Gregorian (year, month 1..=12, day 1..=31) of `days`
/// since 1970-01-01, negative days before it (Howard Hinnant's
/// `civil_from_days`). Total for any `days` whose year fits an `i64`,
/// i.e. every day a seconds-since-the-epoch count can name.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // m is 1..=12 and d 1..=31 by construction
    (y, m as u32, d as u32)
}

/// C's `ctime()` layout for `secs` since the epoch in UTC, without its
/// trailing newline: `Sat Dec  6 05:46:40 2025`. 3.21 prints dates this
/// way (cf-key `-s`, the `sys.date` variable, copy backups), and on a UTC
/// host its local time is this.
pub fn ctime_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS_FROM_EPOCH[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, ctime_utc};

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(ctime_utc(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime_utc(1_765_000_000), "Sat Dec  6 05:46:40 2025");
        assert_eq!(ctime_utc(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(ctime_utc(1_796_616_365), "Mon Dec  7 04:06:05 2026");
        assert_eq!(ctime_utc(-1), "Wed Dec 31 23:59:59 1969");
    }

    quickcheck::quickcheck! {
        /// The day after any day is the next day of its month, or the first
        /// of the next month (of the next year after December).
        fn days_follow_each_other(days: i32) -> bool {
            let days = i64::from(days);
            let (y, m, d) = civil_from_days(days);
            let next = civil_from_days(days + 1);
            (1..=12).contains(&m)
                && (1..=31).contains(&d)
                && (next == (y, m, d + 1)
                    || next == (y, m + 1, 1)
                    || (m == 12 && next == (y + 1, 1, 1)))
        }
    }
}
