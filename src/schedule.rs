//! Cron schedules, evaluated in a time zone. Pure: a schedule is parsed
//! once (by the plan) and asked for occurrences around instants it is given.
//!
//! Occurrences are computed with `croner` 4 (chrono + chrono-tz), not the
//! `cron` crate: `cron` 0.17 walks local time naively, so across a daylight
//! saving change a job at 02:30 is skipped on the spring-forward day or run
//! twice on the fall-back day. croner follows the Open Cron Pattern
//! Specification: a fixed-time job whose wall-clock time falls into a gap runs
//! at the first instant after the gap, and a wall-clock time that occurs twice
//! runs once; an interval job (hourly) runs on every real hour, the repeated
//! one included. The tests pin both change days for Australia/Sydney.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A cron expression that can't be used.
#[derive(Debug, thiserror::Error)]
#[error("{expr:?} is not a cron schedule: {message} (five fields \"min hour day month weekday\", or six with seconds first)")]
pub struct ScheduleError {
    /// The expression as written.
    pub expr: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed 5-field (minute first) or 6-field (seconds first) cron schedule
/// in a time zone.
#[derive(Clone)]
pub struct Schedule {
    /// The parsed pattern.
    cron: Cron,
    /// The zone its wall-clock times are read in.
    tz: Tz,
    /// The expression as written (trimmed), for messages and comparison.
    text: String,
}

/// Two schedules are the same when they have the same expression in the
/// same zone (they then fire at the same instants).
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.text, self.tz)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.tz)
    }
}

/// Read an IANA time zone name (`Australia/Sydney`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim()).map_err(|_| {
        format!("{name:?} is not a known IANA time zone (e.g. \"Australia/Sydney\", \"UTC\")")
    })
}

impl Schedule {
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            expr: expr.to_string(),
            message,
        };
        let fields = expr.split_whitespace().count();
        // croner would also take a seventh (year) field and @nicknames;
        // only the two common forms are documented, so only they are accepted.
        if !(5..=6).contains(&fields) || expr.contains('@') {
            return Err(err(format!("it has {fields} fields")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| err(e.to_string()))?;
        // A pattern that never matches (31 February) would make every search
        // fail; refuse it here rather than silently never checking.
        let probe = Utc::now().with_timezone(&tz);
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| err(format!("it never occurs ({e})")))?;
        Ok(Schedule {
            cron,
            tz,
            text: expr.trim().to_string(),
        })
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `t`, or None if there is none
    /// (only for patterns that stop matching, which `parse` refuses).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest occurrence at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sydney() -> Tz {
        parse_time_zone("Australia/Sydney").unwrap()
    }

    /// Every run between two UTC instants.
    fn runs(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(n) = s.next_after(t) {
            if n > to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    fn local_strings(v: &[DateTime<Utc>], tz: Tz) -> Vec<String> {
        v.iter()
            .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
            .collect()
    }

    #[test]
    fn sydney_spring_forward_runs_0230_job_once_on_every_day() {
        // 2025-10-05 02:00 AEST jumps to 03:00 AEDT: 02:30 doesn't exist.
        let tz = sydney();
        let s = Schedule::parse("30 2 * * *", tz).unwrap();
        let from = tz
            .with_ymd_and_hms(2025, 10, 3, 12, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let to = tz
            .with_ymd_and_hms(2025, 10, 7, 12, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let got = local_strings(&runs(&s, from, to), tz);
        assert_eq!(
            got,
            [
                "2025-10-04 02:30 AEST",
                "2025-10-05 03:00 AEDT",
                "2025-10-06 02:30 AEDT",
                "2025-10-07 02:30 AEDT"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn sydney_fall_back_runs_0230_job_once() {
        // 2025-04-06 03:00 AEDT falls back to 02:00 AEST: 02:30 happens twice.
        let tz = sydney();
        let s = Schedule::parse("30 2 * * *", tz).unwrap();
        let from = tz
            .with_ymd_and_hms(2025, 4, 4, 12, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let to = tz
            .with_ymd_and_hms(2025, 4, 8, 12, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let got = local_strings(&runs(&s, from, to), tz);
        assert_eq!(
            got,
            [
                "2025-04-05 02:30 AEDT",
                "2025-04-06 02:30 AEDT",
                "2025-04-07 02:30 AEST",
                "2025-04-08 02:30 AEST"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn hourly_job_runs_every_real_hour_across_fall_back() {
        // An interval job is about elapsed time: the repeated hour is run.
        let tz = sydney();
        let s = Schedule::parse("0 * * * *", tz).unwrap();
        let from = Utc.with_ymd_and_hms(2025, 4, 5, 12, 30, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2025, 4, 5, 19, 30, 0).unwrap();
        let got = runs(&s, from, to);
        assert_eq!(got.len(), 7, "{:?}", local_strings(&got, tz));
        for w in got.windows(2) {
            assert_eq!(w[1] - w[0], chrono::Duration::hours(1));
        }
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("15 */10 * * * *", Tz::UTC).unwrap();
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 15).unwrap())
        );
        assert_eq!(
            s.latest_at_or_before(Utc.with_ymd_and_hms(2025, 1, 1, 0, 12, 0).unwrap()),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 10, 15).unwrap())
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 0 31 2 *",
            "@hourly",
            "0 0 0 1 1 * 2030",
            "x * * * *",
        ] {
            assert!(Schedule::parse(bad, Tz::UTC).is_err(), "{bad:?} accepted");
        }
        assert!(parse_time_zone("Mars/Olympus").is_err());
        assert_eq!(parse_time_zone("Australia/Sydney").unwrap(), sydney());
    }
}
