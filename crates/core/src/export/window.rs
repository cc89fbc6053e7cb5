//! Window and key maths: the insertion hours an export works in, which of them are settled or
//! may have been exported, and where a window's objects go.

use chrono::{DateTime, Duration, DurationRound as _, NaiveDate, SecondsFormat, Timelike as _, Utc};

use super::{EXPORT_PREFIX, SETTLE_MARGIN};
use crate::events::EventRecord;

/// The start of the hour `t` falls in.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

/// One insertion hour of one connection: the unit an export writes and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExportWindow {
    start: DateTime<Utc>,
}

impl ExportWindow {
    /// The window `t` falls in.
    pub fn containing(t: DateTime<Utc>) -> Self {
        Self { start: floor_hour(t) }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Exclusive.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + Duration::hours(1)
    }

    pub fn next(&self) -> Self {
        Self { start: self.end() }
    }

    /// `20261122T10`: the window in object names.
    pub fn id(&self) -> String {
        self.start.format("%Y%m%dT%H").to_string()
    }

    /// Whether the window closed at least `settle` before `now`.
    pub fn is_settled(&self, now: DateTime<Utc>, settle: Duration) -> bool {
        self.end() + settle <= now
    }
}

impl std::fmt::Display for ExportWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.start.format("%Y-%m-%d %H:00 UTC"))
    }
}

/// How far the clocks of two functions may disagree (Lambda hosts keep NTP time; two minutes
/// is generous).
pub const CLOCK_SLACK: Duration = Duration::minutes(2);

/// Whether the scheduled export may have written `window` by `now`: it writes only windows
/// settled by [`SETTLE_MARGIN`] on its own clock, so a change to an event of a window that is
/// not settled yet (with [`CLOCK_SLACK`]) will be in the window when it is written.
pub fn may_be_exported(window: ExportWindow, now: DateTime<Utc>) -> bool {
    window.is_settled(now + CLOCK_SLACK, SETTLE_MARGIN)
}

/// A window whose events changed after it may have been exported (a hash recorded after the
/// export wrote the window): the next scheduled export writes it again, to the same keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWindow {
    pub window: ExportWindow,
    /// When it was last marked. Clearing is conditional on it, so a mark renewed while the
    /// window is being written again survives for the next run.
    pub marked_at: DateTime<Utc>,
}

/// The end (exclusive) of the last window that may be exported at `now`.
pub fn settled_until(now: DateTime<Utc>, settle: Duration) -> DateTime<Utc> {
    floor_hour(now - settle)
}

/// The windows from the one containing `from` up to (excluding) the one starting at or after
/// `until`, oldest first.
pub fn windows_between(from: DateTime<Utc>, until: DateTime<Utc>) -> impl Iterator<Item = ExportWindow> {
    let mut next = ExportWindow::containing(from);
    std::iter::from_fn(move || {
        (next.start() < until).then(|| {
            let w = next;
            next = next.next();
            w
        })
    })
}

/// The windows among `windows` whose day holds recorded events (`days`).
pub fn windows_on_days(
    windows: impl IntoIterator<Item = ExportWindow>,
    days: &std::collections::BTreeSet<NaiveDate>,
) -> Vec<ExportWindow> {
    windows
        .into_iter()
        .filter(|w| days.contains(&w.start().date_naive()))
        .collect()
}

/// The windows an on-demand export of `[since, until)` covers: the insertion hours that
/// overlap it and are settled at `now`. Hours not settled yet are left to the schedule (an
/// export of a still-open hour would miss its later events).
pub fn range_windows(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
    settle: Duration,
) -> Vec<ExportWindow> {
    windows_between(since, until.min(settled_until(now, settle))).collect()
}

/// The partition prefix of an observed hour: `exports/events/dt=2026-11-22/hour=09/`.
pub fn partition_prefix(observed_hour: DateTime<Utc>) -> String {
    format!(
        "{EXPORT_PREFIX}dt={}/hour={:02}/",
        observed_hour.format("%Y-%m-%d"),
        observed_hour.hour()
    )
}

/// The key of part `part` of `window`'s events that happened in `observed_hour`.
pub fn object_key(connection: &str, window: &ExportWindow, observed_hour: DateTime<Utc>, part: u32) -> String {
    format!(
        "{}{connection}-{}-{part:04}.json.gz",
        partition_prefix(observed_hour),
        window.id()
    )
}

/// A time as analysts read it: RFC 3339, UTC, milliseconds (`2026-11-22T10:11:12.123Z`).
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The order an export merges a window in: the insertion index's sort key (`inserted_at` to
/// the millisecond, then the record id), which is also each shard's own order.
pub fn merge_key(record: &EventRecord) -> (String, String) {
    (rfc3339(&record.event.inserted_at), record.event.id.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::export::test_support::t;

    #[test]
    fn keys_name_the_observed_partition_the_connection_and_the_insertion_window() {
        let w = ExportWindow::containing(t("2026-11-22T10:59:59.999Z"));
        assert_eq!(w.id(), "20261122T10");
        assert_eq!(
            object_key("contoso", &w, t("2026-11-21T23:00:00Z"), 3),
            "exports/events/dt=2026-11-21/hour=23/contoso-20261122T10-0003.json.gz"
        );
    }

    #[test]
    fn an_hour_is_exported_only_once_the_settle_margin_has_passed() {
        let w = ExportWindow::containing(t("2026-11-22T10:30:00Z"));
        assert!(!w.is_settled(t("2026-11-22T11:19:59Z"), SETTLE_MARGIN));
        assert!(w.is_settled(t("2026-11-22T11:20:00Z"), SETTLE_MARGIN));
        assert_eq!(
            settled_until(t("2026-11-22T11:19:59Z"), SETTLE_MARGIN),
            t("2026-11-22T10:00:00Z")
        );
        let windows: Vec<String> = windows_between(t("2026-11-22T08:15:00Z"), t("2026-11-22T11:00:00Z"))
            .map(|w| w.id())
            .collect();
        assert_eq!(windows, ["20261122T08", "20261122T09", "20261122T10"]);
    }

    #[test]
    fn on_demand_ranges_cover_whole_settled_insertion_hours() {
        let windows = range_windows(
            t("2026-11-22T08:30:00Z"),
            t("2026-11-22T12:00:00Z"),
            t("2026-11-22T11:10:00Z"),
            SETTLE_MARGIN,
        );
        let ids: Vec<String> = windows.iter().map(ExportWindow::id).collect();
        assert_eq!(ids, ["20261122T08", "20261122T09"]);
    }
}
