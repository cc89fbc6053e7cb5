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

mod line;
mod part;
mod ports;
mod window;

pub use line::{ExportLine, ExportTarget};
pub use part::{FinishedPart, PartWriter};
pub use ports::{
    ExportCheckpoint, ExportCheckpoints, ExportPorts, ExportSink, InsertedEvents, InsertedPage, StaleExportMarks,
};
pub use window::{
    CLOCK_SLACK, ExportWindow, StaleWindow, floor_hour, may_be_exported, merge_key, object_key, partition_prefix,
    range_windows, rfc3339, settled_until, windows_between, windows_on_days,
};

use std::collections::VecDeque;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::error::PortError;
use crate::events::EventRecord;
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

// ---------------------------------------------------------------- use cases

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

/// What the export's tests share: times and events (the tests sit next to the code they test,
/// in this module's files).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support {
    use chrono::{DateTime, Utc};

    use crate::audit::{Actor, ActorKind, FileEvent, FileEventType, ItemKind};
    use crate::events::{EventRecord, EventSource};

    pub(super) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(super) fn event(id: &str, observed: &str, inserted: &str) -> EventRecord {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read as _;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::test_support::{event, t};
    use super::*;
    use crate::budget::Deadline;
    use crate::events::{FileHashes, HashOutcome};
    use crate::model::{ConnectionKind, ConnectionState};

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
}
