//! Exports of file events to S3 for Athena: which events go in which object, what a line looks
//! like, and when a connection's export checkpoint moves. No I/O: the events are read through
//! [`InsertedEvents`], objects written through [`ExportSink`] and the checkpoint kept through
//! [`ExportCheckpoints`].
//!
//! # Exactly once per event
//! An export works in *windows*: whole hours of **insertion** time (`inserted_at`, when
//! filetrail recorded the event), read from the events table's insertion index. A window is
//! exported only once it closed at least [`SETTLE_MARGIN`] ago, so no event can still arrive in
//! it. Its events are merged across the index's shards in one fixed order (insertion sort key,
//! then record id) and cut into objects by a deterministic rule (counts only, never bytes or
//! time), so exporting the same window again writes the same keys with the same events: a
//! retry after a crash, the CLI exporting a range the schedule already did, or the schedule
//! doing a range the CLI did, overwrite objects and never add a second copy of an event.
//! The checkpoint moves past a window only after all of its objects are written.
//!
//! # Written again when its events change
//! hash-file records digests after the fact; when it changes events of a window the export may
//! have written ([`may_be_exported`]), it marks the window ([`StaleExportMarks`]), and the next
//! scheduled export writes it again (same keys, same events, current outcomes) and clears the
//! mark unless it was renewed meanwhile.
//!
//! # Partitions by when it happened
//! Objects are written under `dt=YYYY-MM-DD/hour=HH` of the event's **observed** time (when it
//! happened, UTC), not its insertion time: an analyst's `WHERE dt BETWEEN …` then finds every
//! event of those days however late the audit feed delivered it (Microsoft delivers records
//! up to a day late, and a connection resumed after a pause catches up on up to 7 days; content
//! from before a subscription started is never listed). One insertion window
//! therefore writes into every observed hour its events fall in; the window id in the object
//! name keeps the objects of different windows apart. Key:
//! `exports/events/dt=2026-11-22/hour=09/{connection}-{window}-{part}.json.gz`, for example
//! `exports/events/dt=2026-11-22/hour=09/contoso-20261122T10-0000.json.gz` (events that
//! happened 09:00–10:00 and were recorded 10:00–11:00).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound as _, NaiveDate, SecondsFormat, TimeZone as _, Timelike as _, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::PortError;
use crate::events::{EventRecord, HashOutcome};
use crate::model::Connection;
use crate::ports::PortResult;

/// Where exports go in the deployment bucket; the Glue table's location.
pub const EXPORT_PREFIX: &str = "exports/events/";

/// How long after an insertion hour closes it is exported. ingest-activity stamps
/// `inserted_at` when it starts on a blob and writes the events after resolving their items,
/// within its invocation: its Timeout (900 s, template.yaml) bounds how late an event of an
/// hour can still be written. Plus 5 minutes for the insertion index to catch up (GSI
/// propagation is normally sub-second) and for clock differences between functions:
/// 15 + 5 = 20 minutes. With the hourly schedule an hour is exported 20 to 80 minutes after it
/// closed.
pub const SETTLE_MARGIN: Duration = Duration::minutes(20);

/// Events per object at most. A line is ~1.5 KB of JSON (~250 bytes gzipped), so a full part
/// is ~15 MB of JSON and ~2.5 MB on S3: large enough for Athena (which prefers objects over a
/// few MB), small enough to hold compressed in memory.
pub const PART_MAX_EVENTS: usize = 10_000;

/// Events held in open (not yet written) parts at once, over all observed hours; past it the
/// fullest open part is written early. Bounds memory to ~5 MB of compressed lines however many
/// hours a window's events happened in.
pub const MAX_BUFFERED_EVENTS: usize = 20_000;

/// Open parts at once (one per observed hour being written). Each gzip encoder keeps ~300 KB
/// of state (32 KB window plus hash chains), so 24 cost ~7 MB. A window whose events happened
/// in more hours (catching up on the feed's 7 days spans 168) writes the fullest open part
/// early to open another.
pub const MAX_OPEN_PARTS: usize = 24;

/// Events read per page of one shard: 16 shards x 250 x ~2 KB = ~8 MB held by the merge.
pub const READ_PAGE_EVENTS: usize = 250;

/// The first day the Glue table's partition projection covers (`projection.dt.range`); events
/// observed earlier are still exported but Athena does not look for them.
pub const PROJECTION_FIRST_DAY: &str = "2020-01-01";

/// The input of the export function: the hourly schedule's `{"type":"export_all"}`, or one
/// connection on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportJob {
    ExportAll,
    Export { connection: String },
}

/// Tunable limits of an export (defaults: the constants above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub settle_margin: Duration,
    pub part_max_events: usize,
    pub max_buffered_events: usize,
    pub max_open_parts: usize,
    pub read_page_events: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            settle_margin: SETTLE_MARGIN,
            part_max_events: PART_MAX_EVENTS,
            max_buffered_events: MAX_BUFFERED_EVENTS,
            max_open_parts: MAX_OPEN_PARTS,
            read_page_events: READ_PAGE_EVENTS,
        }
    }
}

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

/// Marks the export windows of `changed` events that an export may have written already, so
/// the next export writes them again with what changed. Returns how many windows were marked.
///
/// # Errors
/// A failure of the marks' store.
pub async fn mark_changed_windows_stale(
    marks: &dyn StaleExportMarks,
    changed: &[&EventRecord],
    now: DateTime<Utc>,
) -> crate::ports::PortResult<usize> {
    let mut by_connection: std::collections::BTreeMap<&str, std::collections::BTreeSet<ExportWindow>> =
        std::collections::BTreeMap::new();
    for e in changed {
        let window = ExportWindow::containing(e.event.inserted_at);
        if may_be_exported(window, now) {
            by_connection.entry(e.connection.as_str()).or_default().insert(window);
        }
    }
    let mut marked = 0;
    for (connection, windows) in by_connection {
        let windows: Vec<ExportWindow> = windows.into_iter().collect();
        tracing::info!(
            connection,
            windows = windows.len(),
            "exported windows marked to be written again"
        );
        marks.mark_stale(connection, &windows, now).await?;
        marked += windows.len();
    }
    Ok(marked)
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

// ---------------------------------------------------------------- the line

/// One person, group or link an event shared with, as a JSON line nests it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTarget {
    pub name: String,
    pub kind: String,
    pub email: Option<String>,
    pub external: Option<bool>,
}

/// One event as an analyst queries it: one JSON object per line, flat, every column present
/// (null when unknown), names stable across releases (the Glue table in template.yaml lists
/// them). Times are RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportLine {
    pub event_id: String,
    pub connection: String,
    /// `onedrive` or `email`.
    pub source: String,
    pub event_type: String,
    pub low_signal: bool,
    pub operation: String,
    pub record_type: i64,
    /// `file`, `folder` or `drive`.
    pub item_kind: String,
    /// When it happened.
    pub observed_at: String,
    /// When filetrail recorded it (its export window).
    pub inserted_at: String,
    pub actor_id: String,
    pub actor_upn: Option<String>,
    pub actor_email: Option<String>,
    pub actor_kind: String,
    pub actor_external: Option<bool>,
    pub owner_upn: Option<String>,
    pub site_url: Option<String>,
    pub object_url: Option<String>,
    pub file_name: Option<String>,
    pub path: Option<String>,
    pub extension: Option<String>,
    pub destination_path: Option<String>,
    pub destination_file_name: Option<String>,
    pub drive_id: Option<String>,
    pub item_id: Option<String>,
    /// Why `drive_id`/`item_id` are missing.
    pub unresolved: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub result_status: Option<String>,
    /// `hashed`, `unavailable` (see `hash_unavailable_reason`) or `pending` (not hashed when
    /// exported).
    pub hash_status: String,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub hash_unavailable_reason: Option<String>,
    /// Bytes hashed.
    pub hashed_size: Option<u64>,
    /// The cTag of the current version hashed; absent for a previous version.
    pub hashed_ctag: Option<String>,
    /// A previous version hashed through `…/versions` (its id, `2.0`).
    pub hashed_version: Option<String>,
    pub hashed_at: Option<String>,
    /// `anonymous`, `organization` or `specific_people`.
    pub link_scope: Option<String>,
    /// `read` or `edit`.
    pub sharing_permission: Option<String>,
    /// Whether the share reaches outside the organisation.
    pub sharing_external: Option<bool>,
    pub sharing_targets: Vec<ExportTarget>,
}

/// The snake_case name serde gives a unit enum variant.
fn variant<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl ExportLine {
    /// The line of a stored event (with its hash outcome as stored at export time).
    pub fn of(record: &EventRecord) -> Self {
        let e = &record.event;
        let (hash_status, md5, sha256, reason, size, ctag, hashed_at) = match &record.hash {
            Some(HashOutcome::Hashed(h)) => (
                "hashed",
                Some(h.md5.to_lowercase()),
                Some(h.sha256.to_lowercase()),
                None,
                Some(h.size),
                Some(h.ctag.clone()).filter(|c| !c.is_empty()),
                Some(rfc3339(&h.hashed_at)),
            ),
            Some(HashOutcome::Unavailable { reason }) => {
                ("unavailable", None, None, Some(reason.clone()), None, None, None)
            }
            None => ("pending", None, None, None, None, None, None),
        };
        let hashed_version = match &record.hash {
            Some(HashOutcome::Hashed(h)) => h.version.clone(),
            _ => None,
        };
        let sharing = e.sharing.as_ref();
        Self {
            event_id: e.id.clone(),
            connection: record.connection.clone(),
            source: record.source.as_str().to_owned(),
            event_type: e.event_type.as_str().to_owned(),
            low_signal: e.low_signal,
            operation: e.operation.clone(),
            record_type: e.record_type,
            item_kind: variant(&e.item_kind),
            observed_at: rfc3339(&e.observed_at),
            inserted_at: rfc3339(&e.inserted_at),
            actor_id: e.actor.id.clone(),
            actor_upn: e.actor.upn.clone(),
            actor_email: e.actor.email.clone(),
            actor_kind: variant(&e.actor.kind),
            actor_external: e.actor.external,
            owner_upn: e.owner_upn.clone(),
            site_url: e.site_url.clone(),
            object_url: e.object_url.clone(),
            file_name: e.file_name.clone(),
            path: e.path.clone(),
            extension: e.extension.clone(),
            destination_path: e.destination.as_ref().and_then(|d| d.path.clone()),
            destination_file_name: e.destination.as_ref().and_then(|d| d.file_name.clone()),
            drive_id: e.drive_id.clone(),
            item_id: e.item_id.clone(),
            unresolved: e.unresolved.map(|u| variant(&u)),
            client_ip: e.client_ip.clone(),
            user_agent: e.user_agent.clone(),
            result_status: e.result_status.clone(),
            hash_status: hash_status.to_owned(),
            md5,
            sha256,
            hash_unavailable_reason: reason,
            hashed_size: size,
            hashed_ctag: ctag,
            hashed_version,
            hashed_at,
            link_scope: sharing.and_then(|s| s.link_scope).map(|l| variant(&l)),
            sharing_permission: sharing.and_then(|s| s.permission).map(|p| variant(&p)),
            sharing_external: sharing.and_then(|s| s.external),
            sharing_targets: sharing
                .map(|s| {
                    s.targets
                        .iter()
                        .map(|t| ExportTarget {
                            name: t.name.clone(),
                            kind: variant(&t.kind),
                            email: t.email.clone(),
                            external: t.external,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------- parts

/// A finished object: gzip JSON Lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedPart {
    pub key: String,
    pub body: Vec<u8>,
    pub events: usize,
}

struct OpenPart {
    encoder: GzEncoder<Vec<u8>>,
    events: usize,
}

/// Cuts one window's events, given in merge order, into gzip parts per observed hour.
///
/// Deterministic: which event goes to which key depends only on the sequence of events given
/// (a part is finished when it holds [`ExportSettings::part_max_events`], or early, fullest
/// first, when [`ExportSettings::max_buffered_events`] or [`ExportSettings::max_open_parts`]
/// would be exceeded), never on sizes or timing. Memory is bounded by those limits.
pub struct PartWriter {
    connection: String,
    window: ExportWindow,
    part_max_events: usize,
    max_buffered_events: usize,
    max_open_parts: usize,
    open: BTreeMap<DateTime<Utc>, OpenPart>,
    next_part: BTreeMap<DateTime<Utc>, u32>,
    buffered: usize,
}

impl PartWriter {
    pub fn new(connection: &str, window: ExportWindow, settings: &ExportSettings) -> Self {
        Self {
            connection: connection.to_owned(),
            window,
            part_max_events: settings.part_max_events.max(1),
            max_buffered_events: settings.max_buffered_events.max(1),
            max_open_parts: settings.max_open_parts.max(1),
            open: BTreeMap::new(),
            next_part: BTreeMap::new(),
            buffered: 0,
        }
    }

    /// Adds one event; returns the parts this finished (to be written now).
    ///
    /// # Errors
    /// Only if compressing into memory fails (it does not in practice).
    pub fn push(&mut self, record: &EventRecord) -> PortResult<Vec<FinishedPart>> {
        let mut done = Vec::new();
        let hour = floor_hour(record.event.observed_at);
        if !self.open.contains_key(&hour) && self.open.len() >= self.max_open_parts {
            done.extend(self.finish_fullest()?);
        }
        let mut line = serde_json::to_vec(&ExportLine::of(record)).map_err(|e| encode_error(&e))?;
        line.push(b'\n');
        let part = self.open.entry(hour).or_insert_with(|| OpenPart {
            encoder: GzEncoder::new(Vec::new(), Compression::default()),
            events: 0,
        });
        part.encoder.write_all(&line).map_err(|e| encode_error(&e))?;
        part.events += 1;
        self.buffered += 1;
        if part.events >= self.part_max_events {
            done.push(self.finish(hour)?);
        } else if self.buffered >= self.max_buffered_events {
            done.extend(self.finish_fullest()?);
        }
        Ok(done)
    }

    /// Finishes every open part, in observed-hour order.
    ///
    /// # Errors
    /// As [`Self::push`].
    pub fn finish_all(&mut self) -> PortResult<Vec<FinishedPart>> {
        let hours: Vec<DateTime<Utc>> = self.open.keys().copied().collect();
        hours.into_iter().map(|h| self.finish(h)).collect()
    }

    /// The open part with the most events (the earliest hour among equals).
    fn finish_fullest(&mut self) -> PortResult<Option<FinishedPart>> {
        let fullest = self
            .open
            .iter()
            .max_by(|a, b| a.1.events.cmp(&b.1.events).then(b.0.cmp(a.0)))
            .map(|(h, _)| *h);
        fullest.map(|h| self.finish(h)).transpose()
    }

    fn finish(&mut self, hour: DateTime<Utc>) -> PortResult<FinishedPart> {
        let Some(part) = self.open.remove(&hour) else {
            return Err(PortError::terminal(
                "export_part_missing",
                format!("no open export part for {hour}"),
                "report this as a bug",
            ));
        };
        self.buffered -= part.events;
        let number = self.next_part.entry(hour).or_insert(0);
        let key = object_key(&self.connection, &self.window, hour, *number);
        *number += 1;
        let body = part.encoder.finish().map_err(|e| encode_error(&e))?;
        Ok(FinishedPart {
            key,
            body,
            events: part.events,
        })
    }
}

fn encode_error(e: &dyn std::fmt::Display) -> PortError {
    PortError::terminal(
        "export_encode",
        format!("could not encode an export line: {e}"),
        "report this as a bug",
    )
}

// ---------------------------------------------------------------- ports

/// One page of one shard of a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertedPage {
    /// In the index's order (see [`merge_key`]).
    pub events: Vec<EventRecord>,
    /// Whether the shard has more events in the window after these.
    pub more: bool,
}

/// A connection's events by insertion time (the events table's insertion index).
#[async_trait]
pub trait InsertedEvents: Send + Sync {
    /// How many shards a connection's day is spread over.
    fn shards(&self) -> u64;
    /// Up to `limit` events of `connection` inserted in `window` in shard `shard`, in
    /// [`merge_key`] order, starting after `after` (an event an earlier page returned) or at
    /// the window's start.
    async fn inserted_page(
        &self,
        connection: &str,
        window: &ExportWindow,
        shard: u64,
        after: Option<&EventRecord>,
        limit: usize,
    ) -> PortResult<InsertedPage>;
    /// The days between `from` and `to` (inclusive) on which events of `connection` were
    /// recorded, in any order: an export over a long range reads only those days' hours.
    async fn days_with_events(&self, connection: &str, from: NaiveDate, to: NaiveDate) -> PortResult<Vec<NaiveDate>>;
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

/// Where exported objects go.
#[async_trait]
pub trait ExportSink: Send + Sync {
    /// Writes (or replaces) the object at `key`.
    async fn put_object(&self, key: &str, body: Vec<u8>) -> PortResult<()>;
    /// Where [`EXPORT_PREFIX`] is, for people (`s3://bucket/exports/events/`).
    fn location(&self) -> String;
}

/// What a connection's export keeps between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCheckpoint {
    /// The first window not exported yet.
    pub next_window: DateTime<Utc>,
    /// Events exported by the schedule so far (windows count once, however often retried).
    #[serde(default)]
    pub events_exported: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
}

impl ExportCheckpoint {
    /// Where a connection without a checkpoint starts: the hour it was registered (no event
    /// of it can be older).
    pub fn initial(connection: &Connection) -> Self {
        Self {
            next_window: floor_hour(connection.created_at),
            events_exported: 0,
            last_run_at: None,
        }
    }
}

/// The export checkpoints (state table).
#[async_trait]
pub trait ExportCheckpoints: Send + Sync {
    async fn export_checkpoint(&self, connection: &str) -> PortResult<Option<ExportCheckpoint>>;
    /// Saves `checkpoint` only if the stored one still has `expected`'s `next_window` (`None`:
    /// there is none): two exports of one connection never both move it. Returns whether it
    /// saved.
    async fn save_export_checkpoint(
        &self,
        connection: &str,
        expected: Option<&ExportCheckpoint>,
        checkpoint: &ExportCheckpoint,
    ) -> PortResult<bool>;
    /// The connection's stale windows ([`StaleExportMarks::mark_stale`]), oldest first.
    async fn stale_windows(&self, connection: &str) -> PortResult<Vec<StaleWindow>>;
    /// Removes a mark unless it was renewed after `stale.marked_at`; whether it removed it.
    async fn clear_stale(&self, connection: &str, stale: &StaleWindow) -> PortResult<bool>;
}

/// Where functions that change exported events (hash-file) note the windows to write again.
#[async_trait]
pub trait StaleExportMarks: Send + Sync {
    /// Marks `windows` of `connection` stale at `at` (a second mark of a window renews it).
    async fn mark_stale(&self, connection: &str, windows: &[ExportWindow], at: DateTime<Utc>) -> PortResult<()>;
}

/// The ports an export uses.
pub struct ExportPorts<'a> {
    pub events: &'a dyn InsertedEvents,
    pub sink: &'a dyn ExportSink,
}

// ---------------------------------------------------------------- use cases

/// What exporting one window wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowExport {
    pub events: u64,
    /// Keys written, in order.
    pub objects: Vec<String>,
}

struct ShardCursor {
    shard: u64,
    buffer: VecDeque<((String, String), EventRecord)>,
    more: bool,
    /// The last event read (the next page starts after it).
    last: Option<EventRecord>,
}

/// Exports one window of one connection: reads its events from every shard, merges them in
/// [`merge_key`] order, and writes them as parts (see [`PartWriter`]). Writing the same window
/// again writes the same keys with the same events (their lines may differ where a hash was
/// recorded in between), so a retry never duplicates an event.
///
/// # Errors
/// When reading or writing fails; some parts may be written, and exporting the window again
/// overwrites them.
pub async fn export_window(
    ports: &ExportPorts<'_>,
    connection: &str,
    window: ExportWindow,
    settings: &ExportSettings,
) -> PortResult<WindowExport> {
    let limit = settings.read_page_events.max(1);
    let mut cursors: Vec<ShardCursor> = (0..ports.events.shards())
        .map(|shard| ShardCursor {
            shard,
            buffer: VecDeque::new(),
            more: true,
            last: None,
        })
        .collect();
    refill(ports.events, connection, &window, &mut cursors, limit).await?;
    let mut writer = PartWriter::new(connection, window, settings);
    let mut out = WindowExport::default();
    loop {
        let next = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buffer.front().map(|(k, _)| (i, k)))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(index) = next else { break };
        let Some(cursor) = cursors.get_mut(index) else { break };
        let Some((_, record)) = cursor.buffer.pop_front() else {
            break;
        };
        // The index is read by key range; an event outside the window would be a layout bug.
        if ExportWindow::containing(record.event.inserted_at) == window && record.connection == connection {
            for part in writer.push(&record)? {
                write_part(ports.sink, part, &mut out).await?;
            }
        } else {
            tracing::warn!(connection, window = %window, event = record.event.id, "event outside its window skipped");
        }
        if cursor.buffer.is_empty() && cursor.more {
            refill(ports.events, connection, &window, &mut cursors, limit).await?;
        }
    }
    for part in writer.finish_all()? {
        write_part(ports.sink, part, &mut out).await?;
    }
    Ok(out)
}

/// Reads the next page of every shard that may run dry soon (at most half a page left) in
/// parallel, so a window's shards are read in rounds of concurrent queries rather than one
/// round trip at a time. Holds at most one and a half pages per shard.
async fn refill(
    events: &dyn InsertedEvents,
    connection: &str,
    window: &ExportWindow,
    cursors: &mut [ShardCursor],
    limit: usize,
) -> PortResult<()> {
    let low = limit.div_ceil(2);
    let reads = cursors
        .iter_mut()
        .filter(|c| c.more && c.buffer.len() <= low)
        .map(|cursor| read_page(events, connection, window, cursor, limit));
    futures_util::future::try_join_all(reads).await?;
    Ok(())
}

async fn read_page(
    events: &dyn InsertedEvents,
    connection: &str,
    window: &ExportWindow,
    cursor: &mut ShardCursor,
    limit: usize,
) -> PortResult<()> {
    let page = events
        .inserted_page(connection, window, cursor.shard, cursor.last.as_ref(), limit)
        .await?;
    if page.more && page.events.is_empty() {
        // A page is resumed after its last event; an empty one that claims more could not be
        // resumed, and stopping would lose the rest of the shard.
        return Err(PortError::transient(
            "export_empty_page",
            format!(
                "the insertion index returned an empty page with more to come for {connection}, {window}, shard {}",
                cursor.shard
            ),
        ));
    }
    cursor.more = page.more;
    if let Some(last) = page.events.last() {
        cursor.last = Some(last.clone());
    }
    cursor
        .buffer
        .extend(page.events.into_iter().map(|e| (merge_key(&e), e)));
    Ok(())
}

async fn write_part(sink: &dyn ExportSink, part: FinishedPart, out: &mut WindowExport) -> PortResult<()> {
    sink.put_object(&part.key, part.body).await?;
    out.events += part.events as u64;
    out.objects.push(part.key);
    Ok(())
}

/// What one scheduled export of a connection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionExport {
    pub windows: u64,
    pub events: u64,
    pub objects: u64,
    /// The first window still to export.
    pub next_window: DateTime<Utc>,
    /// Every settled window is exported.
    pub caught_up: bool,
    /// Another export moved the checkpoint first; this one stopped.
    pub superseded: bool,
    /// Windows exported before and written again because their events changed since.
    pub rewritten: u64,
}

/// The scheduled export of one connection: every settled window from its checkpoint on, oldest
/// first, while the budget lasts (one window is one unit of work). The checkpoint moves past a
/// window only after every object of it is written, so a crash exports that window again,
/// to the same keys. Work left when the budget runs out waits for the next schedule. Then the
/// windows exported before whose events changed since (marked stale) are written again, to
/// the same keys, with the events as they are now.
///
/// # Errors
/// When reading, writing or saving the checkpoint fails; windows exported before stay counted.
pub async fn export_connection(
    ports: &ExportPorts<'_>,
    checkpoints: &dyn ExportCheckpoints,
    connection: &Connection,
    settings: &ExportSettings,
    budget: &dyn Budget,
    now: DateTime<Utc>,
) -> PortResult<ConnectionExport> {
    let stored = checkpoints.export_checkpoint(&connection.id).await?;
    let mut checkpoint = stored.clone().unwrap_or_else(|| ExportCheckpoint::initial(connection));
    let mut expected = stored;
    let until = settled_until(now, settings.settle_margin);
    let mut run = ConnectionExport {
        windows: 0,
        events: 0,
        objects: 0,
        next_window: checkpoint.next_window,
        caught_up: false,
        superseded: false,
        rewritten: 0,
    };
    // Only the hours of days that recorded events are read; the others are empty and the
    // checkpoint moves past them with the next window written (or at the end).
    let days: std::collections::BTreeSet<NaiveDate> = if checkpoint.next_window < until {
        ports
            .events
            .days_with_events(&connection.id, checkpoint.next_window.date_naive(), until.date_naive())
            .await?
            .into_iter()
            .collect()
    } else {
        std::collections::BTreeSet::new()
    };
    for window in windows_between(checkpoint.next_window, until) {
        if !days.contains(&window.start().date_naive()) {
            checkpoint.next_window = window.end();
            run.next_window = window.end();
            continue;
        }
        if !budget.has_time_for_more() {
            return Ok(run);
        }
        let done = export_window(ports, &connection.id, window, settings).await?;
        let next = ExportCheckpoint {
            next_window: window.end(),
            events_exported: checkpoint.events_exported + done.events,
            last_run_at: Some(now),
        };
        if !checkpoints
            .save_export_checkpoint(&connection.id, expected.as_ref(), &next)
            .await?
        {
            tracing::info!(connection = connection.id, window = %window, "another export moved the checkpoint; stopping");
            run.superseded = true;
            return Ok(run);
        }
        tracing::info!(
            connection = connection.id,
            window = %window,
            events = done.events,
            objects = done.objects.len(),
            "export window written"
        );
        run.windows += 1;
        run.events += done.events;
        run.objects += done.objects.len() as u64;
        run.next_window = next.next_window;
        expected = Some(next.clone());
        checkpoint = next;
    }
    if expected.as_ref().is_none_or(|e| e.next_window < checkpoint.next_window) {
        // Empty hours at the end: the checkpoint moves past them.
        let next = ExportCheckpoint {
            last_run_at: Some(now),
            ..checkpoint.clone()
        };
        if !checkpoints
            .save_export_checkpoint(&connection.id, expected.as_ref(), &next)
            .await?
        {
            run.superseded = true;
            return Ok(run);
        }
        checkpoint = next;
    }
    run.caught_up = true;
    run.rewritten = rewrite_stale(
        ports,
        checkpoints,
        &connection.id,
        checkpoint.next_window,
        settings,
        budget,
    )
    .await?;
    Ok(run)
}

/// Writes again the stale windows before `next_window` (exported already), oldest first, while
/// the budget lasts, and clears their marks; marks of later windows are cleared unwritten (the
/// schedule will write those windows as they are). Returns the windows written.
async fn rewrite_stale(
    ports: &ExportPorts<'_>,
    checkpoints: &dyn ExportCheckpoints,
    connection: &str,
    next_window: DateTime<Utc>,
    settings: &ExportSettings,
    budget: &dyn Budget,
) -> PortResult<u64> {
    let mut rewritten = 0;
    for stale in checkpoints.stale_windows(connection).await? {
        if stale.window.start() < next_window {
            if !budget.has_time_for_more() {
                break;
            }
            let done = export_window(ports, connection, stale.window, settings).await?;
            tracing::info!(
                connection,
                window = %stale.window,
                events = done.events,
                objects = done.objects.len(),
                "export window written again: its events changed since it was exported"
            );
            rewritten += 1;
        }
        if !checkpoints.clear_stale(connection, &stale).await? {
            tracing::info!(connection, window = %stale.window, "marked stale again meanwhile; the next run writes it");
        }
    }
    Ok(rewritten)
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

// ---------------------------------------------------------------- time arguments

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
/// a time before `now` as a number and a unit (`m`, `h`, `d`, `w`).
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
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = v.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let ago = match unit {
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(ago).ok_or_else(bad)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Read as _;
    use std::sync::Mutex;

    use super::*;
    use crate::audit::{Actor, ActorKind, FileEvent, FileEventType, ItemKind};
    use crate::budget::Deadline;
    use crate::events::{EventSource, FileHashes};
    use crate::model::{ConnectionKind, ConnectionState};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn event(id: &str, observed: &str, inserted: &str) -> EventRecord {
        EventRecord {
            connection: "contoso".into(),
            source: EventSource::OneDrive,
            event: FileEvent {
                id: id.into(),
                event_type: FileEventType::Modified,
                low_signal: false,
                operation: "FileModified".into(),
                record_type: 6,
                item_kind: ItemKind::File,
                actor: Actor {
                    id: "alice@contoso.com".into(),
                    upn: Some("alice@contoso.com".into()),
                    email: None,
                    kind: ActorKind::User,
                    user_type: Some(0),
                    user_key: None,
                    external: Some(false),
                },
                owner_upn: Some("alice@contoso.com".into()),
                site_key: None,
                site_url: None,
                object_url: None,
                file_name: Some("q3.xlsx".into()),
                path: Some("/Reports/q3.xlsx".into()),
                extension: Some("xlsx".into()),
                destination: None,
                list_id: None,
                list_item_unique_id: None,
                drive_id: Some("b!1".into()),
                item_id: Some("01A".into()),
                unresolved: None,
                observed_at: t(observed),
                inserted_at: t(inserted),
                client_ip: None,
                user_agent: None,
                result_status: None,
                sharing: None,
            },
            hash: None,
        }
    }

    fn gunzip_lines(body: &[u8]) -> Vec<ExportLine> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body).read_to_string(&mut text).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Events in memory, spread over shards by a stable rule, read a page at a time.
    struct MemoryEvents {
        shards: u64,
        events: Vec<EventRecord>,
        reads: Mutex<u64>,
    }

    impl MemoryEvents {
        fn new(shards: u64, events: Vec<EventRecord>) -> Self {
            Self {
                shards,
                events,
                reads: Mutex::new(0),
            }
        }
        fn shard_of(&self, e: &EventRecord) -> u64 {
            e.event.id.bytes().map(u64::from).sum::<u64>() % self.shards
        }
    }

    #[async_trait]
    impl InsertedEvents for MemoryEvents {
        fn shards(&self) -> u64 {
            self.shards
        }
        async fn inserted_page(
            &self,
            connection: &str,
            window: &ExportWindow,
            shard: u64,
            after: Option<&EventRecord>,
            limit: usize,
        ) -> PortResult<InsertedPage> {
            *self.reads.lock().unwrap() += 1;
            let mut all: Vec<&EventRecord> = self
                .events
                .iter()
                .filter(|e| {
                    e.connection == connection
                        && self.shard_of(e) == shard
                        && ExportWindow::containing(e.event.inserted_at) == *window
                })
                .collect();
            all.sort_by_key(|e| merge_key(e));
            let from = after.map(merge_key);
            let rest: Vec<EventRecord> = all
                .into_iter()
                .filter(|e| from.as_ref().is_none_or(|f| merge_key(e) > *f))
                .cloned()
                .collect();
            let more = rest.len() > limit;
            Ok(InsertedPage {
                events: rest.into_iter().take(limit).collect(),
                more,
            })
        }

        async fn days_with_events(
            &self,
            connection: &str,
            from: NaiveDate,
            to: NaiveDate,
        ) -> PortResult<Vec<NaiveDate>> {
            let mut days: Vec<NaiveDate> = (self.events.iter())
                .filter(|e| e.connection == connection)
                .map(|e| e.event.inserted_at.date_naive())
                .filter(|d| (from..=to).contains(d))
                .collect();
            days.sort();
            days.dedup();
            Ok(days)
        }
    }

    #[derive(Default)]
    struct MemorySink {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        puts: Mutex<u64>,
        fail_after: Option<u64>,
    }

    #[async_trait]
    impl ExportSink for MemorySink {
        async fn put_object(&self, key: &str, body: Vec<u8>) -> PortResult<()> {
            let mut puts = self.puts.lock().unwrap();
            if self.fail_after.is_some_and(|n| *puts >= n) {
                return Err(PortError::transient("SlowDown", "injected"));
            }
            *puts += 1;
            self.objects.lock().unwrap().insert(key.to_owned(), body);
            Ok(())
        }
        fn location(&self) -> String {
            "s3://bucket/exports/events/".into()
        }
    }

    impl MemorySink {
        fn lines(&self) -> Vec<(String, ExportLine)> {
            self.objects
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(k, b)| gunzip_lines(b).into_iter().map(|l| (k.clone(), l)))
                .collect()
        }
    }

    fn connection(created: &str) -> Connection {
        Connection {
            id: "contoso".into(),
            kind: ConnectionKind::Cloud,
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret_id: "s".into(),
            cloud: "worldwide".into(),
            endpoints: None,
            trusted_domains: vec![],
            drive_cap: 10,
            state: ConnectionState::Active,
            last_error: None,
            last_discovery: None,
            created_at: t(created),
            write_app: None,
        }
    }

    /// 3 insertion hours (09, 10, 11) of 40 events each, observed over the 3 hours before.
    fn three_hours() -> Vec<EventRecord> {
        let mut events = Vec::new();
        for h in 9..12 {
            for i in 0..40 {
                let inserted = format!("2026-11-22T{h:02}:{:02}:{:02}.{:03}Z", i % 60, (i * 7) % 60, i);
                let observed = format!("2026-11-22T{:02}:{:02}:00Z", h - 1 - (i % 3), i % 60);
                events.push(event(&format!("id-{h}-{i:03}"), &observed, &inserted));
            }
        }
        events
    }

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
    fn a_line_is_flat_with_every_column_and_rfc3339_utc_times() {
        let mut record = event("id-1", "2026-11-22T09:10:11.5Z", "2026-11-22T10:00:00Z");
        record.hash = Some(HashOutcome::Hashed(FileHashes {
            version: None,
            md5: "ABC".into(),
            sha256: "DEF".into(),
            ctag: "c:{X},2".into(),
            size: 42,
            modified_at: None,
            hashed_at: t("2026-11-22T10:05:00Z"),
        }));
        let value = serde_json::to_value(ExportLine::of(&record)).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object["observed_at"], "2026-11-22T09:10:11.500Z");
        assert_eq!(object["inserted_at"], "2026-11-22T10:00:00.000Z");
        assert_eq!(object["md5"], "abc");
        assert_eq!(object["sha256"], "def");
        assert_eq!(object["hash_status"], "hashed");
        assert_eq!(object["actor_upn"], "alice@contoso.com");
        assert_eq!(object["item_kind"], "file");
        assert!(object["link_scope"].is_null(), "absent columns are null, not missing");
        assert!(object.values().all(|v| !v.is_object()), "no nested objects: {value}");

        record.hash = Some(HashOutcome::Unavailable { reason: "gone".into() });
        let line = ExportLine::of(&record);
        assert_eq!(
            (line.hash_status.as_str(), line.hash_unavailable_reason.as_deref()),
            ("unavailable", Some("gone"))
        );
        record.hash = None;
        assert_eq!(ExportLine::of(&record).hash_status, "pending");
    }

    #[tokio::test]
    async fn a_window_is_merged_over_shards_and_written_once_per_event() {
        let events = MemoryEvents::new(4, three_hours());
        let sink = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &sink,
        };
        let settings = ExportSettings {
            part_max_events: 7,
            read_page_events: 3,
            ..ExportSettings::default()
        };
        let window = ExportWindow::containing(t("2026-11-22T10:00:00Z"));
        let done = export_window(&ports, "contoso", window, &settings).await.unwrap();
        assert_eq!(done.events, 40);
        let lines = sink.lines();
        let ids: BTreeSet<String> = lines.iter().map(|(_, l)| l.event_id.clone()).collect();
        assert_eq!(lines.len(), 40);
        assert_eq!(ids, (0..40).map(|i| format!("id-10-{i:03}")).collect());
        for (key, line) in &lines {
            let observed = t(&line.observed_at);
            assert!(
                key.starts_with(&partition_prefix(floor_hour(observed))),
                "{key} {line:?}"
            );
            assert!(key.contains("-20261122T10-"), "{key}");
        }
        // Each object's lines are in merge (insertion) order.
        for body in sink.objects.lock().unwrap().values() {
            let keys: Vec<(String, String)> = gunzip_lines(body)
                .iter()
                .map(|l| (l.inserted_at.clone(), l.event_id.clone()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
        }
    }

    #[tokio::test]
    async fn exporting_a_window_again_writes_the_same_keys_and_events() {
        let events = MemoryEvents::new(16, three_hours());
        let settings = ExportSettings {
            part_max_events: 5,
            max_buffered_events: 9,
            max_open_parts: 2,
            read_page_events: 2,
            ..ExportSettings::default()
        };
        let window = ExportWindow::containing(t("2026-11-22T11:00:00Z"));
        let first = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &first,
        };
        let a = export_window(&ports, "contoso", window, &settings).await.unwrap();
        let second = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &second,
        };
        let b = export_window(&ports, "contoso", window, &settings).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(*first.objects.lock().unwrap(), *second.objects.lock().unwrap());
    }

    #[test]
    fn parts_stay_within_the_memory_limits() {
        let settings = ExportSettings {
            part_max_events: 4,
            max_buffered_events: 6,
            max_open_parts: 2,
            ..ExportSettings::default()
        };
        let window = ExportWindow::containing(t("2026-11-22T10:00:00Z"));
        let mut writer = PartWriter::new("contoso", window, &settings);
        let mut parts = Vec::new();
        for i in 0..50 {
            let observed = format!("2026-11-2{}T0{}:00:00Z", i % 3, i % 5);
            parts.extend(
                writer
                    .push(&event(&format!("e{i}"), &observed, "2026-11-22T10:00:00Z"))
                    .unwrap(),
            );
            assert!(writer.open.len() <= 2 && writer.buffered <= 6);
        }
        parts.extend(writer.finish_all().unwrap());
        assert_eq!(parts.iter().map(|p| p.events).sum::<usize>(), 50);
        assert!(parts.iter().all(|p| p.events <= 4));
        let keys: BTreeSet<&str> = parts.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), parts.len(), "part numbers never repeat");
    }

    #[tokio::test]
    async fn the_checkpoint_moves_only_past_windows_whose_objects_are_written() {
        let events = MemoryEvents::new(4, three_hours());
        let checkpoints = crate::memory::MemoryState::default();
        let conn = connection("2026-11-22T09:30:00Z");
        let now = t("2026-11-22T12:25:00Z");
        let settings = ExportSettings::default();
        // A sink that fails on its fifth object: the first window (3 objects, one per observed
        // hour) is written, the second only in part.
        let failing = MemorySink {
            fail_after: Some(4),
            ..MemorySink::default()
        };
        let ports = ExportPorts {
            events: &events,
            sink: &failing,
        };
        let err = export_connection(&ports, &checkpoints, &conn, &settings, &Deadline::unlimited(), now).await;
        assert!(err.is_err());
        let cp = checkpoints.export_checkpoint("contoso").await.unwrap().unwrap();
        assert_eq!(cp.next_window, t("2026-11-22T10:00:00Z"));

        let sink = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &sink,
        };
        let run = export_connection(&ports, &checkpoints, &conn, &settings, &Deadline::unlimited(), now)
            .await
            .unwrap();
        assert!(run.caught_up);
        assert_eq!(run.windows, 2, "hours 10 and 11; 12 is not settled");
        assert_eq!(run.next_window, t("2026-11-22T12:00:00Z"));
        assert_eq!(sink.lines().len(), 80);
        let cp = checkpoints.export_checkpoint("contoso").await.unwrap().unwrap();
        assert_eq!(cp.events_exported, 40 + 80);
    }

    #[tokio::test]
    async fn an_export_out_of_time_stops_between_windows_and_the_next_run_continues() {
        let events = MemoryEvents::new(4, three_hours());
        let checkpoints = crate::memory::MemoryState::default();
        let conn = connection("2026-11-22T09:00:00Z");
        let now = t("2026-11-22T13:00:00Z");
        let sink = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &sink,
        };
        let settings = ExportSettings::default();
        let one = Deadline::unlimited().with_max_units(Some(1));
        let run = export_connection(&ports, &checkpoints, &conn, &settings, &one, now)
            .await
            .unwrap();
        assert_eq!((run.windows, run.caught_up), (1, false));
        let run = export_connection(&ports, &checkpoints, &conn, &settings, &Deadline::unlimited(), now)
            .await
            .unwrap();
        assert_eq!((run.windows, run.caught_up), (2, true));
        assert_eq!(sink.lines().len(), 120);
    }

    /// A connection resumed after a month: the export reads only the hours of the two days that
    /// recorded events, not the 720 hours between, and its checkpoint still reaches the present.
    #[tokio::test]
    async fn an_export_over_a_month_reads_only_the_days_that_recorded_events() {
        let mut events = three_hours();
        events.push(event("late", "2026-12-20T08:00:00Z", "2026-12-20T09:15:00Z"));
        let events = MemoryEvents::new(4, events);
        let checkpoints = crate::memory::MemoryState::default();
        let conn = connection("2026-11-22T09:00:00Z");
        let now = t("2026-12-22T13:00:00Z");
        let sink = MemorySink::default();
        let ports = ExportPorts {
            events: &events,
            sink: &sink,
        };
        let run = export_connection(
            &ports,
            &checkpoints,
            &conn,
            &ExportSettings::default(),
            &Deadline::unlimited(),
            now,
        )
        .await
        .unwrap();

        assert!(run.caught_up);
        assert_eq!(sink.lines().len(), 121, "every event, once");
        // 24 hours of each of the two days, 4 shards each (an empty window costs one read per
        // shard): not 30 days of hours.
        let reads = *events.reads.lock().unwrap();
        assert!(reads <= 2 * 24 * 4 + 8, "{reads} reads");
        let cp = checkpoints.export_checkpoint("contoso").await.unwrap().unwrap();
        assert_eq!(
            cp.next_window,
            t("2026-12-22T12:00:00Z"),
            "past the empty hours to the last settled one"
        );
        assert_eq!(cp.events_exported, 121);
    }

    #[tokio::test]
    async fn a_window_hashed_after_its_export_is_written_again_to_the_same_keys() {
        let conn = connection("2026-11-22T09:00:00Z");
        let checkpoints = crate::memory::MemoryState::default();
        let sink = MemorySink::default();
        let settings = ExportSettings::default();
        let unhashed = MemoryEvents::new(4, three_hours());
        let ports = ExportPorts {
            events: &unhashed,
            sink: &sink,
        };
        let now = t("2026-11-22T12:25:00Z");
        let run = export_connection(&ports, &checkpoints, &conn, &settings, &Deadline::unlimited(), now)
            .await
            .unwrap();
        assert_eq!((run.windows, run.rewritten), (3, 0));
        let keys_before: Vec<String> = sink.objects.lock().unwrap().keys().cloned().collect();
        let line_of = |id: &str| sink.lines().into_iter().find(|(_, l)| l.event_id == id).unwrap();
        assert_eq!(line_of("id-10-005").1.hash_status, "pending");

        // hash-file records the digests of an event of the 10:00 window (exported) at 12:30
        // and marks the window; the 12:00 window is not settled, so it needs no mark.
        let mut events = three_hours();
        let hashed = events.iter_mut().find(|e| e.event.id == "id-10-005").unwrap();
        let window = ExportWindow::containing(hashed.event.inserted_at);
        hashed.hash = Some(HashOutcome::Hashed(FileHashes {
            version: None,
            md5: "aa".into(),
            sha256: "bb".into(),
            ctag: "c".into(),
            size: 1,
            modified_at: None,
            hashed_at: t("2026-11-22T12:30:00Z"),
        }));
        assert!(may_be_exported(window, t("2026-11-22T12:30:00Z")));
        assert!(!may_be_exported(
            ExportWindow::containing(t("2026-11-22T12:10:00Z")),
            t("2026-11-22T12:30:00Z")
        ));
        checkpoints
            .mark_stale("contoso", &[window], t("2026-11-22T12:30:00Z"))
            .await
            .unwrap();

        let hashed_events = MemoryEvents::new(4, events);
        let ports = ExportPorts {
            events: &hashed_events,
            sink: &sink,
        };
        let run = export_connection(
            &ports,
            &checkpoints,
            &conn,
            &settings,
            &Deadline::unlimited(),
            t("2026-11-22T13:05:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(
            (run.windows, run.rewritten),
            (0, 1),
            "no new window, the marked one again"
        );
        let keys_after: Vec<String> = sink.objects.lock().unwrap().keys().cloned().collect();
        assert_eq!(keys_after, keys_before, "the same objects, rewritten");
        let (key, line) = line_of("id-10-005");
        assert!(key.contains("-20261122T10-"), "{key}");
        assert_eq!(
            (line.hash_status.as_str(), line.sha256.as_deref()),
            ("hashed", Some("bb"))
        );
        let ids: Vec<String> = sink.lines().into_iter().map(|(_, l)| l.event_id).collect();
        assert_eq!(ids.len(), 120);
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 120, "no event twice");
        assert!(checkpoints.stale_windows("contoso").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stale_export_does_not_move_a_checkpoint_another_moved() {
        let checkpoints = crate::memory::MemoryState::default();
        let first = ExportCheckpoint {
            next_window: t("2026-11-22T10:00:00Z"),
            events_exported: 0,
            last_run_at: None,
        };
        assert!(checkpoints.save_export_checkpoint("c", None, &first).await.unwrap());
        assert!(!checkpoints.save_export_checkpoint("c", None, &first).await.unwrap());
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
}
