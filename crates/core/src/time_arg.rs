//! The time arguments of the CLI (`--since`, `--until` of `filetrail export` and `filetrail
//! search`): RFC 3339, a date, or a time ago.

use chrono::{DateTime, Duration, NaiveDate, TimeZone as _, Utc};

/// A `--since`/`--until` value that is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{flag} {value:?} is not a time: give RFC 3339 (2026-11-30T08:00:00Z), a date (2026-11-30, \
     midnight UTC) or a time ago (90m, 36h, 7d, 2w)"
)]
pub struct TimeArgError {
    pub flag: &'static str,
    pub value: String,
}

/// Reads a time argument: RFC 3339 (any offset, converted to UTC), a date (midnight UTC), or
/// a time before `now` as a number and a unit (`m`, `h`, `d`, `w`), read by
/// [`humantime::parse_duration`], which also takes its other spellings and units (`1h 30m`,
/// `2weeks`: <https://docs.rs/humantime/2/humantime/fn.parse_duration.html>) but for months and
/// years.
///
/// # Errors
/// [`TimeArgError`] naming the flag, the value and the accepted forms.
pub fn parse_time_arg(flag: &'static str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeArgError> {
    let bad = || TimeArgError {
        flag,
        value: value.to_owned(),
    };
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| Utc.from_utc_datetime(&t))
            .ok_or_else(bad);
    }
    if !of_fixed_length(v) {
        return Err(bad());
    }
    let ago = humantime::parse_duration(v)
        .ok()
        .and_then(|d| Duration::from_std(d).ok())
        .ok_or_else(bad)?;
    now.checked_sub_signed(ago).ok_or_else(bad)
}

/// Whether a duration names no month or year: humantime reads them as 30.44 and 365.25 days
/// (<https://docs.rs/humantime/2/humantime/fn.parse_duration.html>), neither a calendar month nor
/// year, so `7y` stays an error rather than a time that is not what was meant.
fn of_fixed_length(duration: &str) -> bool {
    duration
        .split(|c: char| !c.is_alphabetic())
        .all(|unit| !matches!(unit, "months" | "month" | "M" | "years" | "year" | "yr" | "yrs" | "y"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn time_arguments_accept_rfc3339_dates_and_times_ago() {
        let now = t("2026-11-30T12:00:00Z");
        assert_eq!(
            parse_time_arg("--since", "2026-11-29T08:00:00+01:00", now).unwrap(),
            t("2026-11-29T07:00:00Z")
        );
        assert_eq!(
            parse_time_arg("--since", "2026-11-29", now).unwrap(),
            t("2026-11-29T00:00:00Z")
        );
        assert_eq!(parse_time_arg("--since", "7d", now).unwrap(), t("2026-11-23T12:00:00Z"));
        assert_eq!(
            parse_time_arg("--since", "36h", now).unwrap(),
            t("2026-11-29T00:00:00Z")
        );
        assert_eq!(
            parse_time_arg("--since", "90m", now).unwrap(),
            t("2026-11-30T10:30:00Z")
        );
        let err = parse_time_arg("--since", "yesterday", now).unwrap_err().to_string();
        assert!(err.contains("--since \"yesterday\""), "{err}");
        assert!(err.contains("RFC 3339") && err.contains("7d"), "{err}");
        assert!(parse_time_arg("--until", "7x", now).is_err());
        assert!(parse_time_arg("--until", "d", now).is_err());
    }

    #[test]
    fn times_ago_take_weeks_and_combined_units() {
        let now = t("2026-11-30T12:00:00Z");
        assert_eq!(parse_time_arg("--since", "2w", now).unwrap(), t("2026-11-16T12:00:00Z"));
        assert_eq!(
            parse_time_arg("--since", " 1h 30m ", now).unwrap(),
            t("2026-11-30T10:30:00Z")
        );
        assert!(parse_time_arg("--since", "7", now).is_err());
        assert!(parse_time_arg("--since", "7y", now).is_err());
        assert!(parse_time_arg("--since", "1M", now).is_err());
        assert!(parse_time_arg("--since", "2 months", now).is_err());
        assert!(parse_time_arg("--since", "-7d", now).is_err());
        assert!(parse_time_arg("--since", "", now).is_err());
        assert!(parse_time_arg("--since", "99999999999999w", now).is_err());
    }
}
