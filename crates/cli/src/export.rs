//! `filetrail export CONNECTION --since … [--until …]`: the export function's code on demand.
//!
//! It exports the whole insertion hours that overlap the range and are settled (see
//! [`filetrail_core::export`]), to the same keys the hourly schedule writes, so running it over
//! hours the schedule already exported (or will) rewrites those objects and never duplicates an
//! event. It leaves the schedule's checkpoint alone. Hours not settled yet are left to the
//! schedule and said so.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveDate, Utc};
use filetrail_aws::config::AwsResources;
use filetrail_aws::export_store::{DynamoInsertedEvents, S3ExportSink};
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::{BucketObjects, s3_client};
use filetrail_core::export::{
    ExportPorts, ExportSettings, ExportSink as _, ExportWindow, InsertedEvents as _, WindowExport, export_window,
    range_windows, rfc3339, settled_until, windows_on_days,
};
use filetrail_core::ports::ConnectionStore as _;
use filetrail_core::time_arg::parse_time_arg;
use indicatif::{ProgressBar, ProgressStyle};

/// What `filetrail export` was asked for, as typed.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub connection: String,
    pub since: String,
    pub until: Option<String>,
    /// Also export the hours not settled yet. Safe for exactly-once: a window's objects are
    /// cut from its events in insertion order, so a later export of the same window writes the
    /// same names again with every event, and later ones only add to the last parts.
    pub include_open_hours: bool,
}

/// What an on-demand export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub connection: String,
    /// Insertion hours exported.
    pub windows: u64,
    pub events: u64,
    /// Every key written, in order.
    pub objects: Vec<String>,
    /// `s3://bucket/exports/events/`.
    pub location: String,
    /// The range asked for reached past the last settled hour: hours from here on were left
    /// to the schedule.
    pub unsettled_from: Option<DateTime<Utc>>,
}

impl ExportSummary {
    /// The final line the command prints.
    pub fn line(&self) -> String {
        let count = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut line = format!(
            "Exported {} of {:?} ({}, {}) to {}",
            count(self.events, "event", "events"),
            self.connection,
            count(self.windows, "hour", "hours"),
            count(self.objects.len() as u64, "object", "objects"),
            self.location
        );
        if let Some(from) = self.unsettled_from {
            line.push_str(&format!(
                "; hours recorded from {} on are not settled yet and the hourly export writes them",
                rfc3339(&from)
            ));
        }
        line
    }
}

/// The export's clients for one deployment: the events table's insertion index and the bucket.
/// Also what the benchmark drives.
pub struct Exporter {
    pub events: DynamoInsertedEvents,
    pub sink: S3ExportSink,
    pub settings: ExportSettings,
}

impl Exporter {
    /// Clients over the events table and bucket `resources` name. Fails naming the missing
    /// setting (`FILETRAIL_BUCKET`, `FILETRAIL_EVENTS_TABLE`).
    pub fn new(sdk: &aws_config::SdkConfig, resources: &AwsResources) -> anyhow::Result<Self> {
        let bucket = resources
            .require_bucket()
            .context("no bucket configured: exports are written to the deployment bucket")?;
        let table = resources.require_events_table()?;
        Ok(Self {
            events: DynamoInsertedEvents::new(aws_sdk_dynamodb::Client::new(sdk), table),
            sink: S3ExportSink::new(BucketObjects::new(s3_client(sdk), bucket)),
            settings: ExportSettings::default(),
        })
    }

    fn ports(&self) -> ExportPorts<'_> {
        ExportPorts {
            events: &self.events,
            sink: &self.sink,
        }
    }

    /// The settled insertion hours overlapping `[since, until)` on days that recorded events of
    /// `connection`: a range of years costs what its events cost.
    ///
    /// # Errors
    /// When reading the day markers fails.
    pub async fn windows_with_events(
        &self,
        connection: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<ExportWindow>> {
        let days: BTreeSet<NaiveDate> = self
            .events
            .days_with_events(connection, since.date_naive(), until.date_naive())
            .await?
            .into_iter()
            .collect();
        Ok(windows_on_days(
            range_windows(since, until, now, self.settings.settle_margin),
            &days,
        ))
    }

    /// Exports the insertion hour starting at (or containing) `window_start` of `connection`,
    /// settled or not, and returns how many events it wrote. Same keys as the schedule.
    ///
    /// # Errors
    /// When reading the events table or writing the bucket fails.
    pub async fn export_window(&self, connection: &str, window_start: DateTime<Utc>) -> anyhow::Result<u64> {
        let done = export_window(
            &self.ports(),
            connection,
            ExportWindow::containing(window_start),
            &self.settings,
        )
        .await?;
        Ok(done.events)
    }

    /// Exports the settled insertion hours overlapping `[since, until)`, oldest first, calling
    /// `progress` after each hour.
    ///
    /// # Errors
    /// When reading or writing fails; hours exported before stay written (and exporting them
    /// again rewrites the same objects).
    pub async fn export_range(
        &self,
        connection: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        mut progress: impl FnMut(&ExportWindow, &WindowExport) + Send,
    ) -> anyhow::Result<ExportSummary> {
        let settled = settled_until(now, self.settings.settle_margin);
        let windows = self.windows_with_events(connection, since, until, now).await?;
        let mut summary = ExportSummary {
            connection: connection.to_owned(),
            windows: 0,
            events: 0,
            objects: Vec::new(),
            location: self.sink.location(),
            unsettled_from: (until > settled).then_some(settled.max(since)),
        };
        for window in windows {
            let done = export_window(&self.ports(), connection, window, &self.settings)
                .await
                .with_context(|| format!("exporting the events recorded {window}"))?;
            progress(&window, &done);
            summary.windows += 1;
            summary.events += done.events;
            summary.objects.extend(done.objects);
        }
        Ok(summary)
    }
}

/// `filetrail export`: reads the arguments (failing on a bad time with the value and the
/// accepted forms), checks the connection exists, and exports the range with a progress bar on
/// stderr when `show_progress`.
///
/// # Errors
/// A bad `--since`/`--until`, an empty range, an unknown connection, no bucket configured, or a
/// failed read or write.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    resources: &AwsResources,
    args: &ExportArgs,
    now: DateTime<Utc>,
    show_progress: bool,
) -> anyhow::Result<ExportSummary> {
    let since = parse_time_arg("--since", &args.since, now)?;
    let until = match &args.until {
        Some(v) => parse_time_arg("--until", v, now)?,
        None => now,
    };
    if since >= until {
        bail!(
            "--since {} is not before --until {}: give an earlier --since or a later --until",
            rfc3339(&since),
            rfc3339(&until)
        );
    }
    let exporter = Exporter::new(sdk, resources)?;
    let state = DynamoStateStore::new(aws_sdk_dynamodb::Client::new(sdk), resources.require_state_table()?);
    if state.connection(&args.connection).await?.is_none() {
        bail!(
            "no connection named {:?}; `filetrail status` lists them all",
            args.connection
        );
    }
    // Hours count as settled up to `settled_now`: with --include-open-hours, the one under way.
    let settled_now = if args.include_open_hours {
        now + exporter.settings.settle_margin + chrono::Duration::hours(1)
    } else {
        now
    };
    let hours = exporter
        .windows_with_events(&args.connection, since, until, settled_now)
        .await?
        .len() as u64;
    eprintln!(
        "Exporting {hours} hour{} of the days that recorded events of {:?} between {} and {}…",
        if hours == 1 { "" } else { "s" },
        args.connection,
        rfc3339(&since),
        rfc3339(&until.min(settled_now))
    );
    let bar = if show_progress {
        let bar = ProgressBar::new(hours);
        bar.set_style(
            ProgressStyle::with_template("{spinner} exporting {pos}/{len} hours [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut events = 0u64;
    let summary = exporter
        .export_range(&args.connection, since, until, settled_now, |window, done| {
            events += done.events;
            bar.set_message(format!("{events} events, last hour {window}"));
            bar.inc(1);
        })
        .await;
    bar.finish_and_clear();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_says_one_object_and_many_hours() {
        let mut summary = ExportSummary {
            connection: "demo".into(),
            windows: 3,
            events: 475,
            objects: vec!["exports/events/dt=2026-11-30/hour=13/demo-20261130T13-0000.json.gz".into()],
            location: "s3://bucket/exports/events/".into(),
            unsettled_from: None,
        };
        assert_eq!(
            summary.line(),
            "Exported 475 events of \"demo\" (3 hours, 1 object) to s3://bucket/exports/events/"
        );
        summary.events = 1;
        summary.windows = 1;
        summary.objects.push("second".into());
        assert!(
            summary
                .line()
                .starts_with("Exported 1 event of \"demo\" (1 hour, 2 objects)")
        );
    }
}
