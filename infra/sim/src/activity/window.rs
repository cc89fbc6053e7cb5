//! The `startTime`/`endTime` window of `/subscriptions/content` ("List available content" in
//! <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

use super::config::{MAX_CONTENT_WINDOW, MAX_START_AGE};

/// Why a window is refused, with the documented code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WindowError {
    /// AF20002: a time that is none of the documented formats.
    InvalidType(&'static str),
    /// AF20030: only one bound, more than 24 hours apart, or a start more than 7 days ago.
    Invalid,
    /// AF20055: the start is after the end.
    StartAfterEnd,
}

/// A resolved window: `start <= contentCreated < end`, plus the bounds as the request gave them
/// (a `NextPageUri` repeats them verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) start_text: String,
    pub(crate) end_text: String,
}

/// Parses a time in one of the three documented formats, UTC: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`,
/// `YYYY-MM-DDTHH:MM:SS`. Nothing else (no offset, no fraction) is accepted.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let naive = match s.len() {
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?,
        16 => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").ok()?,
        19 => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok()?,
        _ => return None,
    };
    Some(naive.and_utc())
}

/// Resolves the request's bounds at `now`. Neither given: the 24 hours before `now` (the API
/// reference; the FAQ's "from 12:00 AM UTC" disagrees,
/// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>),
/// rendered `YYYY-MM-DDTHH:MM:SS` for `NextPageUri` as the reference's pagination section says.
pub(crate) fn resolve(start: Option<&str>, end: Option<&str>, now: DateTime<Utc>) -> Result<Window, WindowError> {
    let max_window = TimeDelta::from_std(MAX_CONTENT_WINDOW).unwrap_or(TimeDelta::hours(24));
    let max_age = TimeDelta::from_std(MAX_START_AGE).unwrap_or(TimeDelta::days(7));
    match (start, end) {
        (None, None) => {
            let start = now - max_window;
            let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
            Ok(Window {
                start,
                end: now,
                start_text: fmt(start),
                end_text: fmt(now),
            })
        }
        (Some(s), Some(e)) => {
            let start = parse_time(s).ok_or(WindowError::InvalidType("startTime"))?;
            let end = parse_time(e).ok_or(WindowError::InvalidType("endTime"))?;
            if start > end {
                return Err(WindowError::StartAfterEnd);
            }
            if end - start > max_window || start < now - max_age {
                return Err(WindowError::Invalid);
            }
            Ok(Window {
                start,
                end,
                start_text: s.to_owned(),
                end_text: e.to_owned(),
            })
        }
        _ => Err(WindowError::Invalid),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_three_documented_formats_parse_and_nothing_else() {
        assert_eq!(parse_time("2026-11-30"), Some(at("2026-11-30T00:00:00Z")));
        assert_eq!(parse_time("2026-11-30T05:06"), Some(at("2026-11-30T05:06:00Z")));
        assert_eq!(parse_time("2026-11-30T05:06:07"), Some(at("2026-11-30T05:06:07Z")));
        for bad in [
            "2026-11-30T05:06:07Z",
            "2026-11-30T05:06:07.123",
            "30/11/2026",
            "",
            "2026-13-01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_follow_the_documented_rules() {
        let now = at("2026-11-30T12:00:00Z");
        let w = resolve(Some("2026-11-30T00:00"), Some("2026-11-30T12:00"), now).unwrap();
        assert_eq!((w.start, w.end), (at("2026-11-30T00:00:00Z"), now));
        assert_eq!(
            resolve(Some("2026-11-29"), Some("2026-11-30T00:00:01"), now),
            Err(WindowError::Invalid),
            "over 24 h"
        );
        assert!(
            resolve(Some("2026-11-29"), Some("2026-11-30"), now).is_ok(),
            "exactly 24 h"
        );
        assert_eq!(
            resolve(Some("2026-11-23"), Some("2026-11-23T01:00"), now),
            Err(WindowError::Invalid)
        );
        assert_eq!(resolve(Some("2026-11-30"), None, now), Err(WindowError::Invalid));
        assert_eq!(resolve(None, Some("2026-11-30"), now), Err(WindowError::Invalid));
        assert_eq!(
            resolve(Some("2026-11-30T10:00"), Some("2026-11-30T09:00"), now),
            Err(WindowError::StartAfterEnd)
        );
        assert_eq!(
            resolve(Some("yesterday"), Some("2026-11-30"), now),
            Err(WindowError::InvalidType("startTime"))
        );
        let d = resolve(None, None, now).unwrap();
        assert_eq!(d.start_text, "2026-11-29T12:00:00");
        assert_eq!(d.end, now);
    }
}
