#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The audit-feed use cases (poll, ingest) and hash-file over in-memory stores and scripted
//! Microsoft fakes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use filetrail_core::PortError;
use filetrail_core::activity::ingest::{IngestOutcome, IngestPorts, ingest_blob};
use filetrail_core::activity::poll::{PollOutcome, PollPorts, PollSettings, poll_connection};
use filetrail_core::activity::{
    ACTIVITY_ERROR_PREFIX, BlobCounts, ContentBlob, ContentPage, SHAREPOINT_CONTENT_TYPE, drop_reason,
};
use filetrail_core::audit::{FileEventType, Quarantine, UnresolvedReason};
use filetrail_core::budget::{Budget, Deadline};
use filetrail_core::digest::HasherTuning;
use filetrail_core::events::{EventRecord, FileHashes, HashOutcome, unavailable};
use filetrail_core::export::{ExportCheckpoints as _, ExportWindow, StaleExportMarks};
use filetrail_core::hashing::{
    ChunkSink, FileContent, HashFileOutcome, HashPorts, ItemVersion, KeptVersion, StreamEnd, hash_file,
    previous_version_plan,
};
use filetrail_core::jobs::{BlobJob, HashJob, IndexJob};
use filetrail_core::memory::{MemoryEvents, MemoryInventory, MemoryState};
use filetrail_core::model::*;
use filetrail_core::ports::*;
use md5::Digest as _;
use serde_json::{Value, json};

const CONN: &str = "contoso";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).single().unwrap()
}

fn connection() -> Connection {
    Connection {
        id: CONN.into(),
        kind: ConnectionKind::Cloud,
        tenant_id: "7a3c9d2e-41f5-4b6a-9c8d-2e1f0a9b8c7d".into(),
        client_id: "c".into(),
        secret_id: "filetrail/contoso/app".into(),
        cloud: "worldwide".into(),
        endpoints: None,
        trusted_domains: vec!["contoso.com".into()],
        drive_cap: 1_000_000,
        state: ConnectionState::Active,
        last_error: None,
        last_discovery: None,
        created_at: now() - Duration::days(30),
        write_app: None,
    }
}

async fn state_with_connection() -> MemoryState {
    let state = MemoryState::default();
    state.put_connection(&connection()).await.unwrap();
    state
}

// ---------------------------------------------------------------- queues

#[derive(Default)]
struct Queues {
    blobs: Mutex<Vec<BlobJob>>,
    hashes: Mutex<Vec<HashJob>>,
    /// Jobs enqueued to come back later, with their delay.
    delayed: Mutex<Vec<(HashJob, std::time::Duration)>>,
    index: Mutex<Vec<IndexJob>>,
    fail_blobs: Mutex<u32>,
    /// Hash enqueues still to fail (a delivery that dies before asking for digests).
    fail_hashes: Mutex<u32>,
}

#[async_trait]
impl BlobQueue for Queues {
    async fn enqueue_blobs(&self, jobs: &[BlobJob]) -> PortResult<()> {
        let mut fail = self.fail_blobs.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(PortError::transient("queue_down", "SQS unavailable"));
        }
        self.blobs.lock().unwrap().extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl HashQueue for Queues {
    async fn enqueue_hashes(&self, jobs: &[HashJob]) -> PortResult<()> {
        let mut fail = self.fail_hashes.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(PortError::transient("queue_down", "SQS unavailable"));
        }
        self.hashes.lock().unwrap().extend_from_slice(jobs);
        Ok(())
    }

    async fn enqueue_hashes_after(&self, jobs: &[HashJob], delay: std::time::Duration) -> PortResult<()> {
        self.delayed
            .lock()
            .unwrap()
            .extend(jobs.iter().map(|j| (j.clone(), delay)));
        Ok(())
    }
}

#[async_trait]
impl IndexQueue for Queues {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        self.index.lock().unwrap().extend_from_slice(jobs);
        Ok(())
    }
}

impl Queues {
    fn blob_ids(&self) -> Vec<String> {
        self.blobs
            .lock()
            .unwrap()
            .iter()
            .map(|j| j.blob.content_id.clone())
            .collect()
    }
}

// ---------------------------------------------------------------- the feed

/// A Management Activity API with scripted content: blobs are listed by `content_created` in
/// `[start, end)`, two per page.
#[derive(Default)]
struct FakeFeed {
    blobs: Mutex<Vec<ContentBlob>>,
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    /// Errors the next `content_page` calls return, in order.
    page_errors: Mutex<VecDeque<PortError>>,
    subscription_error: Mutex<Option<PortError>>,
    /// Hands back the cursor it was given instead of the next one.
    stuck_cursor: Mutex<bool>,
    blob_error: Mutex<Option<PortError>>,
    windows: Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
}

impl FakeFeed {
    fn publish(&self, id: &str, created: DateTime<Utc>, records: &[Value]) {
        let uri = format!("https://manage.office.com/api/v1.0/t/activity/feed/audit/{id}$blob");
        self.blobs.lock().unwrap().push(ContentBlob {
            content_type: SHAREPOINT_CONTENT_TYPE.into(),
            content_id: id.into(),
            content_uri: uri.clone(),
            content_created: created,
            content_expiration: Some(created + Duration::days(7)),
        });
        self.bodies
            .lock()
            .unwrap()
            .insert(uri, serde_json::to_vec(&Value::Array(records.to_vec())).unwrap());
    }
}

#[async_trait]
impl ActivityFeed for FakeFeed {
    async fn ensure_subscription(&self, _content_type: &str) -> PortResult<()> {
        match self.subscription_error.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn content_page(
        &self,
        _content_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        next_page: Option<&str>,
    ) -> PortResult<ContentPage> {
        if let Some(e) = self.page_errors.lock().unwrap().pop_front() {
            return Err(e);
        }
        assert!(end - start <= Duration::hours(24), "a window of more than 24 hours");
        assert!(
            start >= now() - Duration::days(7),
            "a window starting outside the retention"
        );
        assert!(end <= now(), "a window ending in the future");
        self.windows.lock().unwrap().push((start, end));
        let mut inside: Vec<ContentBlob> = self
            .blobs
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.content_created >= start && b.content_created < end)
            .cloned()
            .collect();
        inside.sort_by(|a, b| (a.content_created, &a.content_id).cmp(&(b.content_created, &b.content_id)));
        let from: usize = next_page.map_or(0, |p| p.trim_start_matches("page=").parse().unwrap());
        let blobs: Vec<ContentBlob> = inside.iter().skip(from).take(2).cloned().collect();
        let mut next_page = (from + 2 < inside.len()).then(|| format!("page={}", from + 2));
        if *self.stuck_cursor.lock().unwrap() && from > 0 {
            // A broken feed: the cursor it was given, again.
            next_page = Some(format!("page={from}"));
        }
        Ok(ContentPage { blobs, next_page })
    }

    async fn fetch_blob(&self, content_uri: &str) -> PortResult<Vec<u8>> {
        if let Some(e) = self.blob_error.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self.bodies.lock().unwrap().get(content_uri).cloned().unwrap())
    }
}

fn poll_ports<'a>(state: &'a MemoryState, feed: &'a FakeFeed, queues: &'a Queues) -> PollPorts<'a> {
    PollPorts {
        connections: state,
        activity: state,
        feed,
        queue: queues,
    }
}

async fn poll(state: &MemoryState, feed: &FakeFeed, queues: &Queues, budget: &dyn Budget) -> PollOutcome {
    let connection = state.connection(CONN).await.unwrap().unwrap();
    poll_connection(
        &poll_ports(state, feed, queues),
        &connection,
        &PollSettings::default(),
        budget,
        now(),
    )
    .await
    .unwrap()
}

fn no_records() -> Vec<Value> {
    Vec::new()
}

#[tokio::test]
async fn a_first_poll_lists_the_whole_retention_in_windows_of_a_day_and_enqueues_each_blob_once() {
    let state = state_with_connection().await;
    let feed = FakeFeed::default();
    let queues = Queues::default();
    for (i, hours_ago) in [160, 100, 99, 50, 49, 48, 3, 1].into_iter().enumerate() {
        feed.publish(&format!("blob-{i}"), now() - Duration::hours(hours_ago), &no_records());
    }

    let outcome = poll(&state, &feed, &queues, &Deadline::unlimited()).await;

    assert!(
        matches!(outcome, PollOutcome::Caught { enqueued: 8, .. }),
        "{outcome:?}"
    );
    let mut ids = queues.blob_ids();
    ids.sort();
    assert_eq!(ids, (0..8).map(|i| format!("blob-{i}")).collect::<Vec<_>>());
    let windows = feed.windows.lock().unwrap().clone();
    assert!(windows.len() >= 7, "7 days in windows of at most 24 h: {windows:?}");
    assert_eq!(windows.last().unwrap().1, now(), "the last window ends now");
    let cp = state
        .activity_checkpoint(CONN, SHAREPOINT_CONTENT_TYPE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.listed_until, now());
    assert_eq!(cp.blobs_enqueued, 8);

    // Listed again (the overlap), nothing is enqueued twice.
    let again = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(again, PollOutcome::Caught { enqueued: 0, .. }), "{again:?}");
    assert_eq!(queues.blob_ids().len(), 8);
}

#[tokio::test]
async fn a_blob_that_appears_late_in_a_window_already_listed_is_enqueued_by_the_next_poll() {
    let state = state_with_connection().await;
    let feed = FakeFeed::default();
    let queues = Queues::default();
    feed.publish("early", now() - Duration::hours(2), &no_records());
    poll(&state, &feed, &queues, &Deadline::unlimited()).await;

    // Available since 20 minutes ago, but not listed by the first poll.
    feed.publish("late", now() - Duration::minutes(20), &no_records());
    poll(&state, &feed, &queues, &Deadline::unlimited()).await;

    assert_eq!(queues.blob_ids(), ["early", "late"]);
}

#[tokio::test]
async fn a_failed_enqueue_keeps_the_checkpoint_on_that_page_and_the_retry_enqueues_nothing_twice() {
    let state = state_with_connection().await;
    let feed = FakeFeed::default();
    let queues = Queues::default();
    for i in 0..5 {
        feed.publish(
            &format!("b{i}"),
            now() - Duration::hours(2) + Duration::minutes(i),
            &no_records(),
        );
    }
    // The first page goes through, the second page's enqueue fails.
    let budget = Deadline::unlimited();
    let connection = state.connection(CONN).await.unwrap().unwrap();
    let ports = poll_ports(&state, &feed, &queues);
    // First poll: one page under budget (max 1 unit), then out of time.
    let one_page = Deadline::unlimited().with_max_units(Some(1));
    let recent = PollSettings {
        initial_lookback: Duration::hours(3),
        ..PollSettings::default()
    };
    let first = poll_connection(&ports, &connection, &recent, &one_page, now())
        .await
        .unwrap();
    assert!(matches!(first, PollOutcome::OutOfTime { .. }), "{first:?}");
    let cp = state
        .activity_checkpoint(CONN, SHAREPOINT_CONTENT_TYPE)
        .await
        .unwrap()
        .unwrap();
    assert!(cp.window.is_some(), "the open window is kept");

    *queues.fail_blobs.lock().unwrap() = 1;
    let failed = poll_connection(&ports, &connection, &PollSettings::default(), &budget, now()).await;
    assert!(failed.is_err(), "a queue failure fails the poll");

    poll(&state, &feed, &queues, &budget).await;
    let ids = queues.blob_ids();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 5, "each blob once: {ids:?}");
    assert_eq!(distinct.len(), 5);
}

#[tokio::test]
async fn audit_log_off_is_shown_on_the_connection_with_its_fix_and_clears_once_polling_works() {
    let state = state_with_connection().await;
    let feed = FakeFeed::default();
    let queues = Queues::default();
    feed.publish("b0", now() - Duration::hours(1), &no_records());
    *feed.subscription_error.lock().unwrap() = Some(PortError::terminal(
        "audit_log_disabled",
        "the tenant's unified audit log is off",
        "turn on auditing in Microsoft Purview (Audit > Start recording user and admin activity)",
    ));

    let blocked = poll(&state, &feed, &queues, &Deadline::unlimited()).await;

    let PollOutcome::Blocked(problem) = blocked else {
        panic!("{blocked:?}")
    };
    assert_eq!(problem.code, format!("{ACTIVITY_ERROR_PREFIX}audit_log_disabled"));
    let shown = state.connection(CONN).await.unwrap().unwrap().last_error.unwrap();
    assert!(shown.message.contains("audit log is off"), "{shown:?}");
    assert!(shown.fix.contains("Purview"), "{shown:?}");
    assert!(queues.blob_ids().is_empty());

    *feed.subscription_error.lock().unwrap() = None;
    let caught = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(caught, PollOutcome::Caught { enqueued: 1, .. }), "{caught:?}");
    assert_eq!(state.connection(CONN).await.unwrap().unwrap().last_error, None);
}

#[tokio::test]
async fn a_poll_leaves_errors_of_other_components_alone() {
    let state = state_with_connection().await;
    let cap = ConnectionError {
        code: "drive_cap_exceeded".into(),
        message: "over the cap".into(),
        fix: "narrow the scope".into(),
        at: now(),
    };
    state.set_connection_error(CONN, Some(&cap)).await.unwrap();

    poll(&state, &FakeFeed::default(), &Queues::default(), &Deadline::unlimited()).await;

    assert_eq!(state.connection(CONN).await.unwrap().unwrap().last_error, Some(cap));
}

/// A feed that hands back the cursor it was given would keep a poll paging until its Lambda
/// times out, every five minutes: the poll stops there, shows the problem, skips nothing, and
/// lists the rest once the feed pages again.
#[tokio::test]
async fn a_feed_that_repeats_a_page_cursor_blocks_the_poll_visibly_and_loses_nothing() {
    let (state, feed, queues) = (state_with_connection().await, FakeFeed::default(), Queues::default());
    for i in 0..6 {
        feed.publish(
            &format!("b{i}"),
            now() - Duration::hours(2) + Duration::minutes(i),
            &no_records(),
        );
    }
    *feed.stuck_cursor.lock().unwrap() = true;

    let outcome = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    let PollOutcome::Blocked(problem) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(problem.code.ends_with("feed_cursor_repeated"), "{problem:?}");
    assert!(problem.fix.contains("nothing is skipped"), "{problem:?}");
    // page=0 (b0, b1), page=2 (b2, b3) named page=2 again: stopped there.
    assert_eq!(queues.blob_ids(), ["b0", "b1", "b2", "b3"]);
    let again = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(again, PollOutcome::Blocked(_)), "{again:?}");

    *feed.stuck_cursor.lock().unwrap() = false;
    let fixed = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(fixed, PollOutcome::Caught { .. }), "{fixed:?}");
    assert_eq!(
        queues.blob_ids(),
        ["b0", "b1", "b2", "b3", "b4", "b5"],
        "nothing skipped"
    );
    let c = state.connection(CONN).await.unwrap().unwrap();
    assert_eq!(c.last_error, None, "the problem clears once the feed pages");
}

#[tokio::test]
async fn throttling_defers_the_poll_and_the_next_one_continues_the_open_window() {
    let state = state_with_connection().await;
    let feed = FakeFeed::default();
    let queues = Queues::default();
    for i in 0..4 {
        feed.publish(
            &format!("b{i}"),
            now() - Duration::hours(3) + Duration::minutes(i),
            &no_records(),
        );
    }
    let connection = state.connection(CONN).await.unwrap().unwrap();
    let ports = poll_ports(&state, &feed, &queues);
    let one_page = Deadline::unlimited().with_max_units(Some(1));
    poll_connection(&ports, &connection, &PollSettings::default(), &one_page, now())
        .await
        .unwrap();
    feed.page_errors.lock().unwrap().push_back(PortError::retry_after(
        "AF429",
        "Too many requests. Method=ListContent",
        std::time::Duration::from_secs(2),
    ));

    let deferred = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(deferred, PollOutcome::Deferred { .. }), "{deferred:?}");
    assert_eq!(
        state.connection(CONN).await.unwrap().unwrap().last_error,
        None,
        "throttling is no error"
    );

    let caught = poll(&state, &feed, &queues, &Deadline::unlimited()).await;
    assert!(matches!(caught, PollOutcome::Caught { .. }), "{caught:?}");
    assert_eq!(queues.blob_ids(), ["b0", "b1", "b2", "b3"]);
}

// ---------------------------------------------------------------- ingest

const ALICE_SITE: &str = "https://contoso-my.sharepoint.com/personal/alice_contoso_com";
const BOB_SITE: &str = "https://contoso-my.sharepoint.com/personal/bob_contoso_com";

fn drive(id: &str, upn: &str, site: &str, state: DriveState) -> DriveRecord {
    DriveRecord {
        connection: CONN.into(),
        drive_id: id.into(),
        owner_id: format!("id-{upn}"),
        owner_upn: upn.into(),
        web_url: Some(format!("{site}/Documents")),
        state,
        discovered_at: now() - Duration::days(3),
        index: IndexProgress::default(),
        parked: None,
    }
}

/// A OneDrive file record as the feed delivers it (as observed in real records: RecordType 6,
/// Workload OneDrive, CreationTime without a zone, ItemType a string; the schema:
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>).
fn record(id: &str, operation: &str, actor: &str, site: &str, folder: &str, file: &str, at: DateTime<Utc>) -> Value {
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    json!({
        "Id": id,
        "RecordType": 6,
        "CreationTime": at.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "Operation": operation,
        "OrganizationId": "7a3c9d2e-41f5-4b6a-9c8d-2e1f0a9b8c7d",
        "UserType": 0,
        "UserKey": "i:0h.f|membership|10032001a2b3c4d5@live.com",
        "Workload": "OneDrive",
        "ClientIP": "203.0.113.24",
        "UserId": actor,
        "Version": 1,
        "EventSource": "SharePoint",
        "UserAgent": "Microsoft SkyDriveSync 24.201.1006.0005 ship; Windows NT 10.0 (19045)",
        "ObjectId": format!("{site}/Documents/{folder}/{file}"),
        "SiteUrl": format!("{site}/"),
        "SourceRelativeUrl": format!("Documents/{folder}"),
        "SourceFileName": file,
        "SourceFileExtension": ext,
        "ItemType": "File",
        "ListItemUniqueId": "6e5d4c3b-2a19-4f08-9e7d-6c5b4a392817"
    })
}

/// Drive paths → item ids, per drive.
#[derive(Default)]
struct FakeResolver {
    items: Mutex<HashMap<(String, String), String>>,
}

impl FakeResolver {
    fn add(&self, drive: &str, path: &str, item: &str) {
        self.items
            .lock()
            .unwrap()
            .insert((drive.into(), path.into()), item.into());
    }
}

#[async_trait]
impl ItemResolver for FakeResolver {
    async fn resolve_paths(&self, drive_id: &str, paths: &[String]) -> PortResult<Vec<(String, String)>> {
        let items = self.items.lock().unwrap();
        Ok(paths
            .iter()
            .filter_map(|p| {
                items
                    .get(&(drive_id.to_owned(), p.clone()))
                    .map(|i| (p.clone(), i.clone()))
            })
            .collect())
    }
}

#[derive(Default)]
struct Quarantined {
    by_blob: Mutex<BTreeMap<String, Vec<Quarantine>>>,
}

#[async_trait]
impl QuarantineStore for Quarantined {
    async fn put_quarantined(&self, _connection: &str, content_id: &str, records: &[Quarantine]) -> PortResult<()> {
        self.by_blob.lock().unwrap().insert(content_id.into(), records.to_vec());
        Ok(())
    }
}

struct IngestWorld {
    state: MemoryState,
    feed: FakeFeed,
    resolver: FakeResolver,
    events: MemoryEvents,
    inventory: MemoryInventory,
    quarantine: Quarantined,
    queues: Queues,
}

impl IngestWorld {
    async fn new() -> Self {
        let state = state_with_connection().await;
        state
            .insert_new_drives(&[
                drive("d-alice", "alice@contoso.com", ALICE_SITE, DriveState::Indexed),
                drive("d-bob", "bob@contoso.com", BOB_SITE, DriveState::Unmonitored),
            ])
            .await
            .unwrap();
        let resolver = FakeResolver::default();
        resolver.add("d-alice", "/Reports/q3.xlsx", "i-q3");
        resolver.add("d-alice", "/Reports/plan.docx", "i-plan");
        resolver.add("d-bob", "/Notes/todo.txt", "i-todo");
        Self {
            state,
            feed: FakeFeed::default(),
            resolver,
            events: MemoryEvents::default(),
            inventory: MemoryInventory::default(),
            quarantine: Quarantined::default(),
            queues: Queues::default(),
        }
    }

    fn ports(&self) -> IngestPorts<'_> {
        IngestPorts {
            scopes: &self.state,
            activity: &self.state,
            feed: &self.feed,
            resolver: &self.resolver,
            identities: &self.inventory,
            events: &self.events,
            inventory: &self.inventory,
            quarantine: &self.quarantine,
            hash_queue: &self.queues,
            index_queue: &self.queues,
            exports: &self.state,
            sharing: None,
        }
    }

    /// The connection as the handler loads it for each blob.
    async fn connection(&self) -> Connection {
        self.state.connection(CONN).await.unwrap().unwrap()
    }

    fn job(&self, id: &str) -> BlobJob {
        let blob = self
            .feed
            .blobs
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.content_id == id)
            .cloned()
            .unwrap();
        BlobJob {
            connection: CONN.into(),
            blob,
            parked: false,
        }
    }

    async fn ingest(&self, id: &str) -> IngestOutcome {
        ingest_blob(&self.ports(), &self.connection().await, &self.job(id), now())
            .await
            .unwrap()
    }

    async fn events_of(&self, drive: &str, item: &str) -> Vec<EventRecord> {
        self.events.file_events(drive, item, 100).await.unwrap()
    }
}

#[tokio::test]
async fn a_blob_becomes_events_of_monitored_drives_once_and_every_other_record_is_accounted_for() {
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    let modified = record(
        "r-1",
        "FileModified",
        "alice@contoso.com",
        ALICE_SITE,
        "Reports",
        "q3.xlsx",
        t,
    );
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[
            modified.clone(),
            // Microsoft repeats records by design: same Id, other key order.
            serde_json::from_str::<Value>(&modified.to_string()).unwrap(),
            record(
                "r-2",
                "FileDownloaded",
                "eve@fabrikam.com",
                ALICE_SITE,
                "Reports",
                "plan.docx",
                t,
            ),
            // Bob's drive is not monitored: his file's activity is not captured.
            record(
                "r-3",
                "FileModified",
                "alice@contoso.com",
                BOB_SITE,
                "Notes",
                "todo.txt",
                t,
            ),
            // An operation no table knows is quarantined, not dropped.
            record(
                "r-4",
                "FileTeleported",
                "alice@contoso.com",
                ALICE_SITE,
                "Reports",
                "q3.xlsx",
                t,
            ),
            // Not a record at all.
            json!(["not", "a", "record"]),
            // An operation filetrail does not record (skipped by rule, counted).
            record(
                "r-5",
                "PageViewed",
                "alice@contoso.com",
                ALICE_SITE,
                "Reports",
                "q3.xlsx",
                t,
            ),
        ],
    );

    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!("not ingested")
    };

    assert_eq!(counts.records, 7);
    assert_eq!(counts.events_inserted, 2, "{counts:?}");
    assert_eq!(
        counts.events_duplicate, 1,
        "the repeated record is one event: {counts:?}"
    );
    assert_eq!(counts.events_unmonitored, 1, "{counts:?}");
    assert_eq!(counts.quarantined, 2, "{counts:?}");
    assert_eq!(counts.skipped, 1, "{counts:?}");
    assert_eq!(
        counts.records,
        counts.events_inserted
            + counts.events_duplicate
            + counts.events_unmonitored
            + counts.quarantined
            + counts.skipped
    );

    let q3 = w.events_of("d-alice", "i-q3").await;
    assert_eq!(q3.len(), 1);
    let e = &q3[0];
    assert_eq!(e.event.event_type, FileEventType::Modified);
    assert_eq!(e.event.actor.upn.as_deref(), Some("alice@contoso.com"));
    assert_eq!(e.event.owner_upn.as_deref(), Some("alice@contoso.com"));
    assert_eq!(e.event.path.as_deref(), Some("/Reports/q3.xlsx"));
    assert_eq!(e.event.observed_at, t);
    assert_eq!(e.key(), format!("{CONN}#r-1"));
    let plan = w.events_of("d-alice", "i-plan").await;
    assert_eq!(plan[0].event.event_type, FileEventType::Downloaded);
    assert!(
        w.events_of("d-bob", "i-todo").await.is_empty(),
        "nothing from an unmonitored drive"
    );

    let quarantined = w.quarantine.by_blob.lock().unwrap().get("blob-1").cloned().unwrap();
    assert_eq!(quarantined.len(), 2);
    assert!(quarantined.iter().all(|q| q.raw.is_some()), "the raw record is kept");

    // Both files need hashes (the modified one changed; the other was never hashed); Alice's
    // drive gets an incremental index round for the modification.
    let mut hashed: Vec<String> = w
        .queues
        .hashes
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.item_id.clone())
        .collect();
    hashed.sort();
    assert_eq!(hashed, ["i-plan", "i-q3"]);
    assert_eq!(
        *w.queues.index.lock().unwrap(),
        [IndexJob::IndexDrive {
            connection: CONN.into(),
            drive_id: "d-alice".into()
        }]
    );
}

#[tokio::test]
async fn a_blob_that_comes_while_the_connection_is_deauthorized_waits_unread_and_is_ingested_after_resume() {
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    w.feed.publish(
        "blob-paused",
        now() - Duration::hours(1),
        &[record(
            "r-paused",
            "FileUploaded",
            "alice@contoso.com",
            ALICE_SITE,
            "Reports",
            "q3.xlsx",
            t,
        )],
    );
    let paused = Connection {
        state: ConnectionState::Deauthorized,
        ..connection()
    };
    w.state.put_connection(&paused).await.unwrap();

    // The poll marked the blob enqueued and never lists it again: ingest keeps it, unread.
    assert_eq!(w.ingest("blob-paused").await, IngestOutcome::Parked);
    assert!(w.events.all().is_empty());
    let parked = w.state.parked_blobs(CONN).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0].unread && parked[0].blob.content_id == "blob-paused",
        "{parked:?}"
    );
    // A redelivery parks it once.
    assert_eq!(w.ingest("blob-paused").await, IngestOutcome::Parked);
    assert_eq!(w.state.parked_blobs(CONN).await.unwrap().len(), 1);

    // Resumed, the first finished discovery run enqueues parked blobs again (as parked): the
    // blob becomes its events and leaves the parked list.
    w.state.put_connection(&connection()).await.unwrap();
    let again = BlobJob {
        parked: true,
        ..w.job("blob-paused")
    };
    let IngestOutcome::Ingested(counts) = ingest_blob(&w.ports(), &w.connection().await, &again, now())
        .await
        .unwrap()
    else {
        panic!("not ingested")
    };
    assert_eq!(counts.events_inserted, 1);
    assert!(w.events.get(&format!("{CONN}#r-paused")).is_some());
    assert!(w.state.parked_blobs(CONN).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_redelivered_blob_writes_no_event_twice_but_still_asks_for_the_hashes() {
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[record(
            "r-1",
            "FileUploaded",
            "alice@contoso.com",
            ALICE_SITE,
            "Reports",
            "q3.xlsx",
            t,
        )],
    );

    w.ingest("blob-1").await;
    let IngestOutcome::Ingested(second) = w.ingest("blob-1").await else {
        panic!()
    };

    assert_eq!(second.events_inserted, 0);
    assert_eq!(second.events_duplicate, 1);
    assert_eq!(w.events_of("d-alice", "i-q3").await.len(), 1);
    assert_eq!(
        w.queues.hashes.lock().unwrap().len(),
        2,
        "hash-file dedupes by cTag, not ingest"
    );
}

#[tokio::test]
async fn a_read_of_a_hashed_version_takes_its_digests_without_a_download() {
    let w = IngestWorld::new().await;
    let hashes = FileHashes {
        version: None,
        md5: "0".repeat(32),
        sha256: "1".repeat(64),
        ctag: "\"c:{A},2\"".into(),
        size: 10,
        modified_at: Some(now() - Duration::days(1)),
        hashed_at: now() - Duration::days(1),
    };
    w.inventory
        .put_rows(&[inventory_row("d-alice", "i-plan", "/Reports/plan.docx")])
        .await
        .unwrap();
    w.inventory
        .set_file_hash(CONN, "d-alice", "i-plan", &HashOutcome::Hashed(hashes.clone()))
        .await
        .unwrap();
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[record(
            "r-1",
            "FileDownloaded",
            "alice@contoso.com",
            ALICE_SITE,
            "Reports",
            "plan.docx",
            now() - Duration::hours(2),
        )],
    );

    w.ingest("blob-1").await;

    assert!(w.queues.hashes.lock().unwrap().is_empty());
    assert!(w.queues.index.lock().unwrap().is_empty(), "a read changes no inventory");
    let events = w.events_of("d-alice", "i-plan").await;
    assert_eq!(events[0].hashes(), Some(&hashes));
}

/// A read older than the version hashed arrives after hash-file ran: it is marked as of a
/// version that is gone, as hash-file marks the older events it finds (ingest had left it
/// without any outcome, so the result depended on which ran first).
#[tokio::test]
async fn a_late_read_of_an_older_version_is_marked_as_such_whichever_ran_first() {
    let w = IngestWorld::new().await;
    let version_start = now() - Duration::hours(3);
    let hashes = FileHashes {
        version: None,
        md5: "0".repeat(32),
        sha256: "1".repeat(64),
        ctag: "\"c:{A},3\"".into(),
        size: 10,
        modified_at: Some(version_start),
        hashed_at: now() - Duration::hours(2),
    };
    w.inventory
        .set_file_hash(CONN, "d-alice", "i-plan", &HashOutcome::Hashed(hashes.clone()))
        .await
        .unwrap();
    let read = |id: &str, at| {
        record(
            id,
            "FileDownloaded",
            "alice@contoso.com",
            ALICE_SITE,
            "Reports",
            "plan.docx",
            at,
        )
    };
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[
            read("r-old", version_start - Duration::hours(1)),
            read("r-new", version_start + Duration::minutes(5)),
        ],
    );

    w.ingest("blob-1").await;

    let by_id: HashMap<String, Option<HashOutcome>> = w
        .events_of("d-alice", "i-plan")
        .await
        .into_iter()
        .map(|e| (e.event.id.clone(), e.hash))
        .collect();
    assert_eq!(by_id["r-new"], Some(HashOutcome::Hashed(hashes)));
    assert_eq!(
        by_id["r-old"],
        Some(HashOutcome::Unavailable {
            reason: unavailable::CHANGED_BEFORE_HASHING.into()
        })
    );
    // The current version is not downloaded again; the old read's version is looked up.
    let asked = w.queues.hashes.lock().unwrap().clone();
    assert!(
        asked.iter().all(|j| j.previous_versions && j.item_id == "i-plan"),
        "{asked:?}"
    );
    assert_eq!(asked.len(), 1);
}

#[tokio::test]
async fn a_file_that_cannot_be_located_keeps_its_event_with_the_reason() {
    let w = IngestWorld::new().await;
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[record(
            "r-1",
            "FileDeleted",
            "alice@contoso.com",
            ALICE_SITE,
            "Old",
            "gone.txt",
            now() - Duration::hours(2),
        )],
    );

    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };

    assert_eq!(counts.events_inserted, 1);
    let stored = w.events.all();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.unresolved, Some(UnresolvedReason::ItemNotFound));
    assert_eq!(stored[0].event.path.as_deref(), Some("/Old/gone.txt"));
    assert_eq!(
        stored[0].hash,
        Some(HashOutcome::Unavailable {
            reason: unavailable::ITEM_NOT_RESOLVED.into()
        })
    );
}

#[tokio::test]
async fn an_expired_blob_is_recorded_and_not_retried() {
    let w = IngestWorld::new().await;
    w.feed.publish("blob-1", now() - Duration::days(8), &no_records());
    *w.feed.blob_error.lock().unwrap() = Some(PortError::terminal(
        "AF20051",
        "Content has already expired",
        "nothing to do",
    ));

    assert_eq!(w.ingest("blob-1").await, IngestOutcome::Expired);
}

const CAROL_SITE: &str = "https://contoso-my.sharepoint.com/personal/carol_contoso_com";

impl IngestWorld {
    /// What a finished discovery run leaves behind: its summary on the connection (the scope
    /// in force, started at `started`) and the drives it recorded.
    async fn discovery_finished(&self, started: DateTime<Utc>, drives: &[DriveRecord]) {
        self.state.insert_new_drives(drives).await.unwrap();
        let scope = self.state.scope(CONN).await.unwrap();
        let summary = DiscoverySummary {
            run_id: format!("run-{}", started.timestamp()),
            started_at: started,
            finished_at: started + Duration::minutes(2),
            users_seen: 3,
            drives_found: 3,
            drives_new: drives.len() as u64,
            users_without_drive: 0,
            scope: filetrail_core::scope::ScopeKind::All,
            unresolved: Vec::new(),
            drives_unmonitored: 0,
            drives_returned: 0,
            drives_over_cap: 0,
            scope_version: Some(scope.map_or_else(|| "all".to_owned(), |s| s.version)),
            drives_of_other_connections: 0,
        };
        self.state.set_last_discovery(CONN, &summary).await.unwrap();
    }

    async fn counts_of(&self, blob: &str) -> BlobCounts {
        self.state.blob_counts(CONN, blob).unwrap()
    }
}

/// Alice (monitored) edits her file; Carol, whose OneDrive no discovery has recorded yet,
/// uploads one of hers. Both happened two hours ago.
fn alice_and_carol(w: &IngestWorld) -> DateTime<Utc> {
    let t = now() - Duration::hours(2);
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[
            record(
                "r-1",
                "FileModified",
                "alice@contoso.com",
                ALICE_SITE,
                "Reports",
                "q3.xlsx",
                t,
            ),
            record(
                "r-2",
                "FileUploaded",
                "carol@contoso.com",
                CAROL_SITE,
                "Plans",
                "launch.pptx",
                t,
            ),
        ],
    );
    w.resolver.add("d-carol", "/Plans/launch.pptx", "i-launch");
    t
}

#[tokio::test]
async fn records_of_a_onedrive_not_discovered_yet_are_parked_and_become_events_once_discovery_finds_it() {
    let w = IngestWorld::new().await;
    let t = alice_and_carol(&w);

    let IngestOutcome::Ingested(first) = w.ingest("blob-1").await else {
        panic!("not ingested")
    };
    assert_eq!((first.events_inserted, first.parked), (1, 1), "{first:?}");
    assert!(first.dropped.is_empty(), "nothing is dropped: {first:?}");
    assert_eq!(first.events_unmonitored, 0);
    let parked = w.state.parked_blobs(CONN).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].blob.content_id, "blob-1");
    assert_eq!(parked[0].records, 1);
    assert_eq!(parked[0].site_keys, ["carol_contoso_com"]);
    assert_eq!(parked[0].oldest_record, t);

    // Discovery finds Carol's OneDrive, then enqueues the parked blob again.
    w.discovery_finished(
        now() - Duration::minutes(5),
        &[drive("d-carol", "carol@contoso.com", CAROL_SITE, DriveState::Pending)],
    )
    .await;
    let IngestOutcome::Ingested(second) = w.ingest("blob-1").await else {
        panic!("not ingested")
    };

    assert_eq!(
        (second.events_inserted, second.events_duplicate, second.parked),
        (1, 1, 0)
    );
    let launch = w.events_of("d-carol", "i-launch").await;
    assert_eq!(launch.len(), 1, "Carol's upload is an event");
    assert_eq!(launch[0].event.event_type, FileEventType::Created);
    assert_eq!(launch[0].event.owner_upn.as_deref(), Some("carol@contoso.com"));
    assert_eq!(
        w.events_of("d-alice", "i-q3").await.len(),
        1,
        "Alice's edit is not repeated"
    );
    assert!(
        w.state.parked_blobs(CONN).await.unwrap().is_empty(),
        "nothing waits any more"
    );
    let stored = w.counts_of("blob-1").await;
    assert_eq!(
        (
            stored.events_inserted,
            stored.events_duplicate,
            stored.parked,
            stored.passes
        ),
        (2, 0, 0, 2),
        "the blob's record counts both passes: {stored:?}"
    );
    assert!(
        w.queues.hashes.lock().unwrap().iter().any(|j| j.item_id == "i-launch"),
        "the upload is hashed"
    );
}

#[tokio::test]
async fn a_record_is_dropped_as_outside_the_scope_only_after_a_discovery_of_the_same_scope_that_started_after_it() {
    let w = IngestWorld::new().await;
    let t = alice_and_carol(&w);

    // A run that started before the record happened cannot have seen Carol: parked.
    w.discovery_finished(t - Duration::minutes(30), &[]).await;
    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };
    assert_eq!(counts.parked, 1, "{counts:?}");

    // Neither can one that started within the directory's settling time after it.
    w.discovery_finished(t + Duration::minutes(5), &[]).await;
    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };
    assert_eq!(counts.parked, 1, "{counts:?}");

    // A run of the scope in force, well after the record, did not find Carol's OneDrive: she is
    // not monitored, and the record is dropped for that reason.
    w.discovery_finished(t + Duration::minutes(30), &[]).await;
    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };
    assert_eq!(counts.parked, 0, "{counts:?}");
    assert_eq!(
        counts.dropped,
        BTreeMap::from([(drop_reason::OWNER_NOT_MONITORED.to_owned(), 1)]),
        "{counts:?}"
    );
    assert!(w.state.parked_blobs(CONN).await.unwrap().is_empty());
    assert!(w.events_of("d-carol", "i-launch").await.is_empty());
    let totals = w.state.ingest_totals(CONN).await.unwrap();
    assert_eq!(totals.dropped.get(drop_reason::OWNER_NOT_MONITORED), Some(&1));
    assert_eq!(totals.parked, 0);
}

#[tokio::test]
async fn a_scope_changed_since_the_last_discovery_keeps_unknown_records_parked() {
    let w = IngestWorld::new().await;
    let t = alice_and_carol(&w);
    w.discovery_finished(t + Duration::minutes(30), &[]).await;
    // An admin uploads a users CSV naming Carol; its discovery has not finished yet.
    let scope = filetrail_core::scope::Scope {
        kind: filetrail_core::scope::ScopeKind::Users,
        entries: vec![filetrail_core::scope::ScopeEntry::User(
            filetrail_core::scope::UserSelector::Email("carol@contoso.com".into()),
        )],
        version: "v-carol".into(),
        applied_at: now() - Duration::minutes(1),
        uploaded_at: now() - Duration::minutes(1),
        source: None,
    };
    assert!(w.state.replace_scope(CONN, &scope).await.unwrap());

    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };

    assert_eq!(counts.parked, 1, "the new scope may include Carol: {counts:?}");
    assert!(counts.dropped.is_empty(), "{counts:?}");
}

#[tokio::test]
async fn records_of_a_known_drive_outside_the_scope_are_dropped_with_that_reason_and_team_sites_with_theirs() {
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    let mut team = record(
        "r-3",
        "FileModified",
        "alice@contoso.com",
        ALICE_SITE,
        "Shared",
        "x.docx",
        t,
    );
    for (field, value) in [
        ("Workload", "SharePoint"),
        ("SiteUrl", "https://contoso.sharepoint.com/sites/Finance/"),
        (
            "ObjectId",
            "https://contoso.sharepoint.com/sites/Finance/Shared Documents/x.docx",
        ),
    ] {
        team[field] = json!(value);
    }
    w.feed.publish(
        "blob-1",
        now() - Duration::hours(1),
        &[
            record(
                "r-1",
                "FileModified",
                "bob@contoso.com",
                BOB_SITE,
                "Notes",
                "todo.txt",
                t,
            ),
            record(
                "r-2",
                "FileModified",
                "bob@contoso.com",
                BOB_SITE,
                "Notes",
                "todo.txt",
                t + Duration::seconds(5),
            ),
            team,
        ],
    );

    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };

    assert_eq!(counts.parked, 0, "{counts:?}");
    assert_eq!(
        counts.dropped.get(drop_reason::DRIVE_NOT_MONITORED),
        Some(&2),
        "{counts:?}"
    );
    assert_eq!(counts.dropped.get("not_onedrive"), Some(&1), "{counts:?}");
    assert_eq!(counts.records, 3);
}

#[tokio::test]
async fn parked_records_whose_content_expires_are_counted_as_lost_with_that_reason() {
    let w = IngestWorld::new().await;
    alice_and_carol(&w);
    w.ingest("blob-1").await;
    *w.feed.blob_error.lock().unwrap() = Some(PortError::terminal(
        "AF20051",
        "Content has already expired",
        "nothing to do",
    ));

    assert_eq!(w.ingest("blob-1").await, IngestOutcome::Expired);

    let counts = w.counts_of("blob-1").await;
    assert_eq!(counts.parked, 0);
    assert_eq!(
        counts.dropped.get(drop_reason::EXPIRED_WHILE_PARKED),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.events_inserted, 1, "Alice's event stays counted");
    assert!(w.state.parked_blobs(CONN).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_blob_that_is_not_a_json_array_is_quarantined_whole() {
    let w = IngestWorld::new().await;
    w.feed.publish("blob-1", now() - Duration::hours(1), &no_records());
    let uri = w.job("blob-1").blob.content_uri;
    w.feed
        .bodies
        .lock()
        .unwrap()
        .insert(uri, b"<html>gateway</html>".to_vec());

    let IngestOutcome::Ingested(counts) = w.ingest("blob-1").await else {
        panic!()
    };

    assert_eq!(counts.quarantined, 1);
    assert!(w.quarantine.by_blob.lock().unwrap().contains_key("blob-1"));
}

// ---------------------------------------------------------------- hash-file

/// One file's bytes and version, served in chunks of 1,000 bytes.
struct FakeContent {
    version: Mutex<Option<(ItemVersion, Vec<u8>)>>,
    /// Replaces the version after the first download completes (a change during hashing).
    change_after_download: Mutex<Option<(ItemVersion, Vec<u8>)>>,
    downloads: Mutex<u32>,
    /// Previous versions OneDrive keeps, oldest first, with their bytes.
    previous: Mutex<Vec<(KeptVersion, Vec<u8>)>>,
    previous_downloads: Mutex<u32>,
}

impl FakeContent {
    fn new(ctag: &str, bytes: Vec<u8>, modified_at: DateTime<Utc>) -> Self {
        Self {
            version: Mutex::new(Some((version(ctag, bytes.len(), modified_at), bytes))),
            change_after_download: Mutex::new(None),
            downloads: Mutex::new(0),
            previous: Mutex::new(Vec::new()),
            previous_downloads: Mutex::new(0),
        }
    }
}

fn version(ctag: &str, size: usize, modified_at: DateTime<Utc>) -> ItemVersion {
    ItemVersion {
        ctag: Some(ctag.into()),
        size: size as u64,
        modified_at: Some(modified_at),
        is_file: true,
    }
}

#[async_trait]
impl FileContent for FakeContent {
    async fn item_version(&self, _drive_id: &str, _item_id: &str) -> PortResult<Option<ItemVersion>> {
        Ok(self.version.lock().unwrap().as_ref().map(|(v, _)| v.clone()))
    }

    async fn stream_content(
        &self,
        _drive_id: &str,
        _item_id: &str,
        expected: &ItemVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        *self.downloads.lock().unwrap() += 1;
        let Some(bytes) = self.version.lock().unwrap().as_ref().map(|(_, b)| b.clone()) else {
            return Ok(StreamEnd::Gone);
        };
        let mut at = usize::try_from(sink.offset()).unwrap();
        while at < bytes.len() {
            if !budget.has_time_for_more() {
                return Ok(StreamEnd::OutOfTime);
            }
            let end = (at + 1000).min(bytes.len());
            sink.accept(Bytes::copy_from_slice(&bytes[at..end]))?;
            at = end;
            // A chunk arrives from the network: other jobs run meanwhile.
            tokio::task::yield_now().await;
        }
        // The file changed under the download: the last response's ETag tells.
        if let Some(next) = self.change_after_download.lock().unwrap().take() {
            *self.version.lock().unwrap() = Some(next);
        }
        let current = self.version.lock().unwrap().as_ref().map(|(v, _)| v.ctag.clone());
        if current != Some(expected.ctag.clone()) {
            return Ok(StreamEnd::Changed);
        }
        Ok(StreamEnd::Complete)
    }

    /// The current version first (labelled after the previous ones), then the previous ones.
    async fn versions(&self, _drive_id: &str, _item_id: &str) -> PortResult<Option<Vec<KeptVersion>>> {
        let Some((current, _)) = self.version.lock().unwrap().clone() else {
            return Ok(None);
        };
        let previous = self.previous.lock().unwrap();
        let mut listed = vec![KeptVersion {
            id: format!("{}.0", previous.len() + 10),
            modified_at: current.modified_at,
            size: current.size,
        }];
        listed.extend(previous.iter().rev().map(|(v, _)| v.clone()));
        Ok(Some(listed))
    }

    async fn stream_previous(
        &self,
        _drive_id: &str,
        _item_id: &str,
        version: &KeptVersion,
        sink: &mut dyn ChunkSink,
        _budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        *self.previous_downloads.lock().unwrap() += 1;
        let found = self
            .previous
            .lock()
            .unwrap()
            .iter()
            .find(|(v, _)| v.id == version.id)
            .cloned();
        let Some((_, bytes)) = found else {
            return Ok(StreamEnd::Gone);
        };
        sink.accept(Bytes::from(bytes))?;
        Ok(StreamEnd::Complete)
    }
}

struct HashWorld {
    state: MemoryState,
    content: FakeContent,
    inventory: MemoryInventory,
    events: MemoryEvents,
    queues: Queues,
}

fn content_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn md5_hex(b: &[u8]) -> String {
    hex(&md5::Md5::digest(b))
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn event(id: &str, event_type: FileEventType, at: DateTime<Utc>) -> EventRecord {
    let mut e: filetrail_core::audit::FileEvent = serde_json::from_value(json!({
        "id": id,
        "event_type": event_type,
        "low_signal": false,
        "operation": "FileModified",
        "record_type": 6,
        "item_kind": "file",
        "actor": {"id": "alice@contoso.com", "kind": "user", "upn": "alice@contoso.com"},
        "observed_at": at,
        "inserted_at": at,
    }))
    .unwrap();
    e.drive_id = Some("d-alice".into());
    e.item_id = Some("i-q3".into());
    EventRecord::onedrive(CONN, e)
}

impl HashWorld {
    async fn new(content: FakeContent) -> Self {
        let inventory = MemoryInventory::default();
        inventory
            .put_rows(&[inventory_row("d-alice", "i-q3", "/Reports/q3.xlsx")])
            .await
            .unwrap();
        Self {
            state: state_with_connection().await,
            content,
            inventory,
            events: MemoryEvents::default(),
            queues: Queues::default(),
        }
    }

    /// The connection as the handler loads it for each job.
    async fn connection(&self) -> Connection {
        self.state.connection(CONN).await.unwrap().unwrap()
    }

    fn ports(&self) -> HashPorts<'_> {
        HashPorts {
            content: &self.content,
            inventory: &self.inventory,
            events: &self.events,
            queue: &self.queues,
            exports: &self.state,
            leases: &self.state,
        }
    }

    async fn hash(&self, job: &HashJob, budget: &dyn Budget) -> HashFileOutcome {
        hash_file(
            &self.ports(),
            &self.connection().await,
            job,
            HasherTuning::default(),
            budget,
            now(),
        )
        .await
        .unwrap()
    }

    async fn stored(&self) -> Vec<EventRecord> {
        self.events.file_events("d-alice", "i-q3", 100).await.unwrap()
    }
}

fn inventory_row(drive: &str, item: &str, path: &str) -> InventoryRow {
    InventoryRow {
        list_item_uid: None,
        drive_id: drive.into(),
        item_id: item.into(),
        connection: CONN.into(),
        name: path.rsplit('/').next().unwrap().into(),
        path: path.into(),
        parent_id: None,
        is_folder: false,
        size: 10,
        created_at: None,
        modified_at: None,
        etag: None,
        ctag: None,
        created_by: None,
        modified_by: None,
        mime_type: None,
        md5: None,
        sha256: None,
        hash_unavailable: None,
        generation: 1,
        indexed_at: now(),
    }
}

fn job() -> HashJob {
    HashJob {
        previous_versions: false,
        connection: CONN.into(),
        drive_id: "d-alice".into(),
        item_id: "i-q3".into(),
        continuation: None,
    }
}

#[tokio::test]
async fn a_file_is_hashed_once_and_its_digests_go_to_the_events_of_that_version() {
    let bytes = content_bytes(10_500, 1);
    let modified = now() - Duration::hours(3);
    let w = HashWorld::new(FakeContent::new("\"c:{Q3},4\"", bytes.clone(), modified)).await;
    w.events
        .insert_events(&[
            event("old-download", FileEventType::Downloaded, modified - Duration::days(2)),
            event("modify", FileEventType::Modified, modified),
            event("share", FileEventType::SharingSet, modified + Duration::minutes(5)),
        ])
        .await
        .unwrap();

    let HashFileOutcome::Hashed(h) = w.hash(&job(), &Deadline::unlimited()).await else {
        panic!()
    };

    assert_eq!(h.md5, md5_hex(&bytes));
    assert_eq!(h.sha256, sha256_hex(&bytes));
    assert_eq!(h.size, 10_500);
    assert_eq!(h.ctag, "\"c:{Q3},4\"");
    let on_row = w.inventory.file_hashes("d-alice", &["i-q3".into()]).await.unwrap();
    assert_eq!(on_row, [("i-q3".to_owned(), h.clone())]);
    let by_id: HashMap<String, Option<HashOutcome>> = w
        .stored()
        .await
        .into_iter()
        .map(|e| (e.event.id.clone(), e.hash))
        .collect();
    assert_eq!(by_id["modify"], Some(HashOutcome::Hashed(h.clone())));
    assert_eq!(by_id["share"], Some(HashOutcome::Hashed(h.clone())));
    assert_eq!(
        by_id["old-download"],
        Some(HashOutcome::Unavailable {
            reason: unavailable::CHANGED_BEFORE_HASHING.into()
        }),
        "an event of an older version does not get the newer bytes' digests"
    );

    // Every event was recorded in an hour the export may have written already: both hours
    // are marked, so the export writes them again with the outcomes.
    let stale = w.state.stale_windows(CONN).await.unwrap();
    let windows: Vec<ExportWindow> = stale.iter().map(|s| s.window).collect();
    assert_eq!(
        windows,
        [
            ExportWindow::containing(modified - Duration::days(2)),
            ExportWindow::containing(modified)
        ]
    );

    // The same version again: no download, no event changes, no new mark.
    let again = w.hash(&job(), &Deadline::unlimited()).await;
    assert!(matches!(again, HashFileOutcome::AlreadyHashed { .. }), "{again:?}");
    assert_eq!(*w.content.downloads.lock().unwrap(), 1);
    assert_eq!(w.state.stale_windows(CONN).await.unwrap(), stale);
}

/// Two jobs for the same version (two blobs named the same change) run at once: one downloads,
/// the other comes back later and takes the stored digests. One download.
#[tokio::test]
async fn two_jobs_for_one_version_download_it_once_and_the_second_takes_the_digests() {
    let bytes = content_bytes(25_000, 3);
    let modified = now() - Duration::hours(1);
    let w = HashWorld::new(FakeContent::new("\"c:{Q3},7\"", bytes.clone(), modified)).await;
    w.events
        .insert_events(&[event("upload", FileEventType::Created, modified)])
        .await
        .unwrap();

    let (job_a, job_b) = (job(), job());
    let (budget_a, budget_b) = (Deadline::unlimited(), Deadline::unlimited());
    let (a, b) = tokio::join!(w.hash(&job_a, &budget_a), w.hash(&job_b, &budget_b));

    let outcomes = [&a, &b];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, HashFileOutcome::Hashed(_)))
            .count(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, HashFileOutcome::Waiting))
            .count(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(*w.content.downloads.lock().unwrap(), 1);
    let delayed = w.queues.delayed.lock().unwrap().clone();
    assert_eq!(
        delayed,
        [(job(), filetrail_core::hashing::LEASE_WAIT)],
        "the waiting job comes back"
    );

    // It comes back after the download: the digests are there, nothing is downloaded again.
    let back = w.hash(&delayed[0].0, &Deadline::unlimited()).await;
    assert!(matches!(back, HashFileOutcome::AlreadyHashed { events: 1 }), "{back:?}");
    assert_eq!(*w.content.downloads.lock().unwrap(), 1);
    let HashOutcome::Hashed(h) = w.stored().await[0].hash.clone().unwrap() else {
        panic!("the upload has its digests")
    };
    assert_eq!(h.sha256, sha256_hex(&bytes));
}

/// A worker that died holding the lease delays the version only until the lease lapses; a
/// large file's continuation keeps the lease, so a second job waits for it rather than
/// downloading the same bytes again.
#[tokio::test]
async fn a_lapsed_lease_is_taken_over_and_a_continuation_keeps_its_own() {
    use filetrail_core::hashing::{HashLeases as _, VersionLease};
    let bytes = content_bytes(10_000, 4);
    let modified = now() - Duration::hours(1);
    let w = HashWorld::new(FakeContent::new("\"c:{Q3},8\"", bytes.clone(), modified)).await;
    let dead = VersionLease {
        connection: CONN.into(),
        drive_id: "d-alice".into(),
        item_id: "i-q3".into(),
        ctag: "\"c:{Q3},8\"".into(),
        holder: "a-worker-that-died".into(),
        until: now() + Duration::minutes(3),
    };
    assert!(w.state.take_hash_lease(&dead, now()).await.unwrap());
    assert_eq!(w.hash(&job(), &Deadline::unlimited()).await, HashFileOutcome::Waiting);
    assert_eq!(*w.content.downloads.lock().unwrap(), 0);

    // Lapsed: taken over (the lease's term is in the past for this clock).
    let lapsed = VersionLease {
        until: now() - Duration::seconds(1),
        ..dead
    };
    assert!(
        w.state
            .take_hash_lease(&lapsed, now() - Duration::minutes(10))
            .await
            .unwrap()
    );
    let first = w.hash(&job(), &Deadline::unlimited().with_max_units(Some(1))).await;
    let HashFileOutcome::Continued { .. } = first else {
        panic!("the budget of one chunk stops it: {first:?}")
    };
    let continuation = w.queues.hashes.lock().unwrap().last().cloned().unwrap();
    assert!(
        continuation
            .continuation
            .as_ref()
            .and_then(|c| c.lease.as_ref())
            .is_some(),
        "the continuation carries its lease"
    );
    // Meanwhile another job for the version waits; the continuation finishes it.
    assert_eq!(w.hash(&job(), &Deadline::unlimited()).await, HashFileOutcome::Waiting);
    let done = w.hash(&continuation, &Deadline::unlimited()).await;
    assert!(matches!(done, HashFileOutcome::Hashed(_)), "{done:?}");
    // Released: a new version or job is not held up.
    let later = w.hash(&job(), &Deadline::unlimited()).await;
    assert!(matches!(later, HashFileOutcome::AlreadyHashed { .. }), "{later:?}");
}

/// Export marks that fail from the `fail_from`-th call on.
struct FlakyMarks<'a> {
    inner: &'a MemoryState,
    calls: Mutex<usize>,
    fail_from: usize,
}

#[async_trait]
impl StaleExportMarks for FlakyMarks<'_> {
    async fn mark_stale(&self, connection: &str, windows: &[ExportWindow], at: DateTime<Utc>) -> PortResult<()> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if call >= self.fail_from {
            return Err(PortError::transient("ProvisionedThroughputExceeded", "injected"));
        }
        self.inner.mark_stale(connection, windows, at).await
    }
}

#[tokio::test]
async fn an_exported_hour_stays_marked_when_hashing_fails_after_storing_the_digests() {
    let bytes = content_bytes(2_000, 3);
    let modified = now() - Duration::hours(3);
    let w = HashWorld::new(FakeContent::new("\"c:{Q3},5\"", bytes, modified)).await;
    w.events
        .insert_events(&[event("modify", FileEventType::Modified, modified)])
        .await
        .unwrap();
    // The mark after the digests are stored fails: the job fails and SQS redelivers it.
    let flaky = FlakyMarks {
        inner: &w.state,
        calls: Mutex::new(0),
        fail_from: 2,
    };
    let ports = HashPorts {
        exports: &flaky,
        ..w.ports()
    };
    assert!(
        hash_file(
            &ports,
            &w.connection().await,
            &job(),
            HasherTuning::default(),
            &Deadline::unlimited(),
            now()
        )
        .await
        .is_err()
    );
    assert!(matches!(w.stored().await[0].hash, Some(HashOutcome::Hashed(_))));

    // The redelivery finds the version on the inventory row (written before the events) and
    // the events carrying the digests: no second download, nothing to change, nothing to mark.
    // The mark made before storing them is still there for the export.
    let again = w.hash(&job(), &Deadline::unlimited()).await;
    assert_eq!(again, HashFileOutcome::AlreadyHashed { events: 1 });
    let stale = w.state.stale_windows(CONN).await.unwrap();
    assert_eq!(
        stale.iter().map(|s| s.window).collect::<Vec<_>>(),
        [ExportWindow::containing(modified)]
    );
}

#[tokio::test]
async fn a_file_too_large_for_one_invocation_continues_from_its_checkpoint_to_the_same_digests() {
    let bytes = content_bytes(25_123, 7);
    let w = HashWorld::new(FakeContent::new(
        "\"c:{BIG},1\"",
        bytes.clone(),
        now() - Duration::hours(1),
    ))
    .await;

    let mut job = job();
    let mut invocations = 0;
    let hashes = loop {
        invocations += 1;
        // Each invocation may take 6 chunks of 1,000 bytes.
        let budget = Deadline::unlimited().with_max_units(Some(6));
        match w.hash(&job, &budget).await {
            HashFileOutcome::Continued { offset } => {
                let next = w.queues.hashes.lock().unwrap().pop().unwrap();
                assert_eq!(next.continuation.as_ref().unwrap().offset, offset);
                // The continuation travels as JSON on the queue.
                job = serde_json::from_str(&serde_json::to_string(&next).unwrap()).unwrap();
            }
            HashFileOutcome::Hashed(h) => break h,
            other => panic!("{other:?}"),
        }
        assert!(invocations < 20, "no progress");
    };

    assert!(invocations >= 4, "{invocations}");
    assert_eq!(hashes.md5, md5_hex(&bytes));
    assert_eq!(hashes.sha256, sha256_hex(&bytes));
    assert_eq!(hashes.size, 25_123);
}

#[tokio::test]
async fn a_file_deleted_before_hashing_is_recorded_as_such() {
    let w = HashWorld::new(FakeContent::new("\"c:{X},1\"", vec![1, 2, 3], now())).await;
    *w.content.version.lock().unwrap() = None;
    w.events
        .insert_events(&[event("modify", FileEventType::Modified, now())])
        .await
        .unwrap();

    assert_eq!(w.hash(&job(), &Deadline::unlimited()).await, HashFileOutcome::Deleted);

    assert_eq!(
        w.stored().await[0].hash,
        Some(HashOutcome::Unavailable {
            reason: unavailable::DELETED_BEFORE_HASHING.into()
        })
    );
    assert!(
        w.state.stale_windows(CONN).await.unwrap().is_empty(),
        "the event's hour is not exported yet: the export will write the outcome"
    );
}

#[tokio::test]
async fn a_file_changed_while_downloaded_is_hashed_again_rather_than_given_mixed_digests() {
    let w = HashWorld::new(FakeContent::new("\"c:{X},1\"", content_bytes(3_000, 1), now())).await;
    *w.content.change_after_download.lock().unwrap() =
        Some((version("\"c:{X},2\"", 4_000, now()), content_bytes(4_000, 2)));

    assert_eq!(w.hash(&job(), &Deadline::unlimited()).await, HashFileOutcome::Changed);
    assert!(
        w.inventory
            .file_hashes("d-alice", &["i-q3".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let retry = w.queues.hashes.lock().unwrap().pop().unwrap();
    assert_eq!(retry.continuation, None);

    let HashFileOutcome::Hashed(h) = w.hash(&retry, &Deadline::unlimited()).await else {
        panic!()
    };
    assert_eq!(h.md5, md5_hex(&content_bytes(4_000, 2)));
}

#[tokio::test]
async fn a_rename_after_the_last_change_does_not_split_the_version_and_a_late_change_moves_events_on() {
    let bytes = content_bytes(2_000, 3);
    let modified = now() - Duration::hours(5);
    // Graph's lastModifiedDateTime is the rename's, an hour after the content change.
    let renamed = modified + Duration::hours(1);
    let w = HashWorld::new(FakeContent::new("\"c:{R},2\"", bytes.clone(), renamed)).await;
    w.events
        .insert_events(&[
            event("modify", FileEventType::Modified, modified),
            event(
                "read-between",
                FileEventType::Downloaded,
                modified + Duration::minutes(20),
            ),
            event("rename", FileEventType::Renamed, renamed),
        ])
        .await
        .unwrap();

    let HashFileOutcome::Hashed(h) = w.hash(&job(), &Deadline::unlimited()).await else {
        panic!()
    };
    assert_eq!(
        h.modified_at,
        Some(modified),
        "the version began with the content change"
    );
    let hashed = |events: &[EventRecord], id: &str| {
        events
            .iter()
            .find(|e| e.event.id == id)
            .map(|e| e.hash.clone())
            .unwrap()
    };
    let events = w.stored().await;
    for id in ["modify", "read-between", "rename"] {
        assert_eq!(hashed(&events, id), Some(HashOutcome::Hashed(h.clone())), "{id}");
    }

    // A modification made between the read and the rename shows up late (audit blobs come out
    // of order): the read concerns the version before it.
    w.events
        .insert_events(&[event(
            "late-modify",
            FileEventType::Modified,
            modified + Duration::minutes(40),
        )])
        .await
        .unwrap();
    let again = w.hash(&job(), &Deadline::unlimited()).await;
    assert!(matches!(again, HashFileOutcome::AlreadyHashed { .. }), "{again:?}");
    let events = w.stored().await;
    let changed = Some(HashOutcome::Unavailable {
        reason: unavailable::CHANGED_BEFORE_HASHING.into(),
    });
    assert_eq!(hashed(&events, "read-between"), changed);
    assert_eq!(hashed(&events, "modify"), changed);
    let moved_on = w.inventory.file_hashes("d-alice", &["i-q3".into()]).await.unwrap();
    assert_eq!(moved_on[0].1.modified_at, Some(modified + Duration::minutes(40)));
    assert_eq!(
        hashed(&events, "late-modify"),
        Some(HashOutcome::Hashed(moved_on[0].1.clone()))
    );
    assert_eq!(
        hashed(&events, "rename"),
        Some(HashOutcome::Hashed(moved_on[0].1.clone()))
    );
}

/// A file's row as indexing writes it, with its list item unique id.
/// `record` naming its file's list item unique id, as SharePoint records do.
fn with_list_item_id(mut record: Value, uid: &str) -> Value {
    record["ListItemUniqueId"] = json!(uid);
    record
}

fn row_with_uid(item: &str, path: &str, uid: &str) -> InventoryRow {
    let mut row = inventory_row("d-alice", item, path);
    row.list_item_uid = Some(uid.into());
    row
}

#[tokio::test]
async fn events_resolve_by_list_item_id_to_moved_deleted_and_not_yet_indexed_files() {
    use filetrail_core::activity::{ResolvePorts, resolve_pending};
    use filetrail_core::ports::{InventoryStore as _, ItemIdentities as _};
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    let with_uid = |id: &str, op: &str, file: &str, uid: &str| {
        with_list_item_id(record(id, op, "eve@fabrikam.com", ALICE_SITE, "Old", file, t), uid)
    };
    const MOVED: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const DELETED: &str = "{BBBBBBBB-0000-4000-8000-000000000002}";
    const UNSEEN: &str = "cccccccc-0000-4000-8000-000000000003";
    // The inventory knows one file moved since (nothing is at the old path any more) and one
    // deleted since.
    w.inventory
        .put_rows(&[
            row_with_uid("i-moved", "/New/moved.docx", MOVED),
            row_with_uid("i-deleted", "/Old/deleted.docx", "bbbbbbbb-0000-4000-8000-000000000002"),
        ])
        .await
        .unwrap();
    w.inventory
        .delete_rows("d-alice", &["i-deleted".into()], now() - Duration::hours(1))
        .await
        .unwrap();
    w.feed.publish(
        "blob-uid",
        now() - Duration::minutes(30),
        &[
            with_uid("r-m", "FileDownloaded", "moved.docx", MOVED),
            with_uid("r-d", "FileDownloaded", "deleted.docx", DELETED),
            with_uid("r-u", "FileModified", "unseen.docx", UNSEEN),
        ],
    );
    let IngestOutcome::Ingested(counts) = w.ingest("blob-uid").await else {
        panic!("not ingested")
    };
    assert_eq!(counts.events_inserted, 3);

    let moved = w.events.get(&format!("{CONN}#r-m")).unwrap();
    assert_eq!(
        moved.event.item_id.as_deref(),
        Some("i-moved"),
        "by id, not by the old path"
    );
    let deleted = w.events.get(&format!("{CONN}#r-d")).unwrap();
    assert_eq!(deleted.event.item_id.as_deref(), Some("i-deleted"));
    assert_eq!(
        deleted.hash,
        Some(HashOutcome::Unavailable {
            reason: unavailable::DELETED_BEFORE_HASHING.into()
        })
    );
    let unseen = w.events.get(&format!("{CONN}#r-u")).unwrap();
    assert_eq!(unseen.event.item_id, None);
    let hashed: Vec<String> = w
        .queues
        .hashes
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.item_id.clone())
        .collect();
    assert_eq!(hashed, ["i-moved"], "nothing is downloaded for a deleted file");
    let waiting = w.inventory.pending("d-alice").await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].uid.as_str(), waiting[0].event_key.as_str()),
        (UNSEEN, "contoso#r-u")
    );

    // The index round that learns the file gives the waiting event its item and asks for its
    // digests; a second round finds nothing left to do.
    w.inventory
        .put_rows(&[row_with_uid("i-unseen", "/New/renamed.docx", UNSEEN)])
        .await
        .unwrap();
    let ports = ResolvePorts {
        identities: &w.inventory,
        events: &w.events,
        hash_queue: &w.queues,
        exports: &w.state,
    };
    let done = resolve_pending(&ports, "d-alice", now()).await.unwrap();
    assert_eq!((done.resolved, done.waiting), (1, 0));
    let unseen = w.events.get(&format!("{CONN}#r-u")).unwrap();
    assert_eq!(unseen.event.item_id.as_deref(), Some("i-unseen"));
    assert_eq!((unseen.event.unresolved, unseen.hash), (None, None));
    assert!(w.queues.hashes.lock().unwrap().iter().any(|j| j.item_id == "i-unseen"));
    assert!(w.inventory.pending("d-alice").await.unwrap().is_empty());
    assert_eq!(resolve_pending(&ports, "d-alice", now()).await.unwrap().resolved, 0);

    // A round resolves a waiting event to the live file and dies before asking for its
    // digests; the file is deleted before the next round, which must say so on the event (no
    // hash job will come for a deleted file).
    const CRASHED: &str = "dddddddd-0000-4000-8000-000000000004";
    w.feed.publish(
        "blob-crash",
        now() - Duration::minutes(20),
        &[with_uid("r-c", "FileModified", "crash.docx", CRASHED)],
    );
    let IngestOutcome::Ingested(_) = w.ingest("blob-crash").await else {
        panic!("not ingested")
    };
    w.inventory
        .put_rows(&[row_with_uid("i-crash", "/Old/crash.docx", CRASHED)])
        .await
        .unwrap();
    let key = format!("{CONN}#r-c");
    w.events.resolve_item(&key, "i-crash", None).await.unwrap().unwrap();
    w.inventory
        .delete_rows("d-alice", &["i-crash".into()], now())
        .await
        .unwrap();
    let done = resolve_pending(&ports, "d-alice", now()).await.unwrap();
    assert_eq!((done.resolved, done.deleted), (1, 1));
    assert_eq!(
        w.events.get(&key).unwrap().hash,
        Some(HashOutcome::Unavailable {
            reason: unavailable::DELETED_BEFORE_HASHING.into()
        }),
        "the event says its file was deleted"
    );
}

#[tokio::test]
async fn a_redelivery_settles_what_the_stored_copies_still_need_whatever_happened_to_the_file_meanwhile() {
    let w = IngestWorld::new().await;
    let t = now() - Duration::hours(2);
    let with_uid = |id: &str, op: &str, file: &str, uid: &str| {
        with_list_item_id(record(id, op, "alice@contoso.com", ALICE_SITE, "Old", file, t), uid)
    };
    const GONE: &str = "eeeeeeee-0000-4000-8000-000000000005";
    const LATE: &str = "ffffffff-0000-4000-8000-000000000006";
    w.inventory
        .put_rows(&[row_with_uid("i-gone", "/Old/gone.docx", GONE)])
        .await
        .unwrap();
    w.feed.publish(
        "blob-1",
        now() - Duration::minutes(30),
        &[
            with_uid("r-gone", "FileModified", "gone.docx", GONE),
            with_uid("r-late", "FileModified", "late.docx", LATE),
        ],
    );

    // The first delivery stores both events (one with its live file, one waiting for its item)
    // and dies before asking for digests.
    *w.queues.fail_hashes.lock().unwrap() = 1;
    ingest_blob(&w.ports(), &w.connection().await, &w.job("blob-1"), now())
        .await
        .unwrap_err();
    let gone_key = format!("{CONN}#r-gone");
    let late_key = format!("{CONN}#r-late");
    assert_eq!(w.events.get(&gone_key).unwrap().hash, None);
    assert_eq!(w.events.get(&late_key).unwrap().event.item_id, None);
    assert!(w.queues.hashes.lock().unwrap().is_empty());

    // Before the redelivery, the first file is deleted and the second indexed.
    w.inventory
        .delete_rows("d-alice", &["i-gone".into()], now() - Duration::minutes(5))
        .await
        .unwrap();
    w.inventory
        .put_rows(&[row_with_uid("i-late", "/New/late.docx", LATE)])
        .await
        .unwrap();
    // (A day later: the hour the events were stored may have been exported since.)
    let later = now() + Duration::days(1);
    let IngestOutcome::Ingested(again) = ingest_blob(&w.ports(), &w.connection().await, &w.job("blob-1"), later)
        .await
        .unwrap()
    else {
        panic!("not ingested")
    };
    assert_eq!((again.events_inserted, again.events_duplicate), (0, 2));

    // The deleted file's event is still without an outcome: hash-file is asked for its file
    // (it finds the file gone and says so on the event), rather than the event being left
    // without a word because this delivery found the file deleted.
    let asked: BTreeMap<String, bool> = w
        .queues
        .hashes
        .lock()
        .unwrap()
        .iter()
        .map(|j| (j.item_id.clone(), j.previous_versions))
        .collect();
    assert_eq!(
        asked,
        BTreeMap::from([("i-gone".to_owned(), false), ("i-late".to_owned(), false)])
    );
    // The event stored without its item has it now, with no outcome until hash-file's, and its
    // export window is marked to be written again.
    let late = w.events.get(&late_key).unwrap();
    assert_eq!(late.event.item_id.as_deref(), Some("i-late"));
    assert_eq!((late.event.unresolved, late.hash), (None, None));
    let stale = w.state.stale_windows(CONN).await.unwrap();
    assert!(
        stale
            .iter()
            .any(|s| s.window == ExportWindow::containing(late.event.inserted_at)),
        "{stale:?}"
    );

    // A third delivery asks again only for what still has no outcome.
    w.events
        .set_event_hash(
            std::slice::from_ref(&gone_key),
            &HashOutcome::Unavailable {
                reason: unavailable::DELETED_BEFORE_HASHING.into(),
            },
        )
        .await
        .unwrap();
    w.queues.hashes.lock().unwrap().clear();
    ingest_blob(&w.ports(), &w.connection().await, &w.job("blob-1"), later)
        .await
        .unwrap();
    let asked: Vec<String> = w
        .queues
        .hashes
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.item_id.clone())
        .collect();
    assert_eq!(asked, ["i-late"]);
}

/// The previous versions' job may run before the current version's job gave the newest
/// change's events their digests (found by the interleaving test): those events are the current
/// version's, never "not kept".
#[test]
fn the_previous_versions_plan_leaves_the_current_versions_events_to_its_own_job() {
    let uploaded = now() - Duration::hours(3);
    let edited = uploaded + Duration::minutes(5);
    let changed = HashOutcome::Unavailable {
        reason: unavailable::CHANGED_BEFORE_HASHING.into(),
    };
    let mut upload = event("upload", FileEventType::Created, uploaded);
    upload.hash = Some(changed);
    let events = [
        upload,
        event("edit", FileEventType::Modified, edited),
        event("read", FileEventType::Downloaded, edited + Duration::minutes(6)),
    ];
    let current = KeptVersion {
        id: "2.0".into(),
        modified_at: Some(edited + Duration::milliseconds(300)),
        size: 900,
    };
    let first = KeptVersion {
        id: "1.0".into(),
        modified_at: Some(uploaded + Duration::milliseconds(400)),
        size: 700,
    };

    let plan = previous_version_plan(&events, &[current.clone(), first.clone()]);
    assert_eq!(plan.hash, vec![(first, vec![format!("{CONN}#upload")])]);
    assert!(plan.not_kept.is_empty() && plan.unplaced.is_empty(), "{plan:?}");

    // The first version is gone: only its own event is told so.
    let plan = previous_version_plan(&events, std::slice::from_ref(&current));
    assert_eq!(plan.not_kept, vec![format!("{CONN}#upload")]);
    assert!(plan.hash.is_empty(), "{plan:?}");

    // A current version saved before the newest change known: that change's version is not
    // listed, so its events are told so.
    let stale_current = KeptVersion {
        modified_at: Some(uploaded + Duration::minutes(1)),
        ..current
    };
    let plan = previous_version_plan(&events, &[stale_current]);
    assert!(plan.not_kept.contains(&format!("{CONN}#edit")), "{plan:?}");
}

#[tokio::test]
async fn each_content_event_gets_the_digests_of_the_version_it_made_while_onedrive_keeps_it() {
    // Uploaded, then edited seconds later, then edited again: hash-file ran after the last.
    let (v1, v2, v3) = (content_bytes(700, 1), content_bytes(900, 2), content_bytes(1_100, 3));
    let uploaded = now() - Duration::hours(3);
    let edited = uploaded + Duration::seconds(4);
    let last = uploaded + Duration::minutes(30);
    let w = HashWorld::new(FakeContent::new("\"c:{Q3},3\"", v3.clone(), last)).await;
    *w.content.previous.lock().unwrap() = vec![
        (
            KeptVersion {
                id: "1.0".into(),
                modified_at: Some(uploaded + Duration::milliseconds(400)),
                size: 700,
            },
            v1.clone(),
        ),
        (
            KeptVersion {
                id: "2.0".into(),
                modified_at: Some(edited + Duration::milliseconds(300)),
                size: 900,
            },
            v2.clone(),
        ),
    ];
    w.events
        .insert_events(&[
            event("upload", FileEventType::Created, uploaded),
            event("edit", FileEventType::Modified, edited),
            event("read", FileEventType::Downloaded, edited + Duration::minutes(1)),
            event("edit-again", FileEventType::Modified, last),
        ])
        .await
        .unwrap();

    // The current version first: the older events are told they concern a version since
    // replaced, and a job for their versions is asked for.
    let HashFileOutcome::Hashed(current) = w.hash(&job(), &Deadline::unlimited()).await else {
        panic!()
    };
    assert_eq!(current.sha256, sha256_hex(&v3));
    let asked: Vec<HashJob> = w.queues.hashes.lock().unwrap().clone();
    assert!(asked.iter().any(|j| j.previous_versions), "{asked:?}");

    let previous = HashJob {
        previous_versions: true,
        ..job()
    };
    let outcome = w.hash(&previous, &Deadline::unlimited()).await;
    assert_eq!(outcome, HashFileOutcome::PreviousVersions { hashed: 2, not_kept: 0 });
    let by_id: HashMap<String, Option<HashOutcome>> = w
        .stored()
        .await
        .into_iter()
        .map(|e| (e.event.id.clone(), e.hash))
        .collect();
    let sha = |id: &str| match &by_id[id] {
        Some(HashOutcome::Hashed(h)) => (h.sha256.clone(), h.version.clone()),
        other => panic!("{id}: {other:?}"),
    };
    assert_eq!(sha("upload"), (sha256_hex(&v1), Some("1.0".into())));
    assert_eq!(sha("edit"), (sha256_hex(&v2), Some("2.0".into())));
    assert_eq!(
        sha("read"),
        (sha256_hex(&v2), Some("2.0".into())),
        "a read takes the version it read"
    );
    assert_eq!(sha("edit-again"), (sha256_hex(&v3), None));

    // Once hashed, a repeat downloads nothing; a version OneDrive no longer keeps is said so.
    let downloads = *w.content.previous_downloads.lock().unwrap();
    assert_eq!(downloads, 2);
    assert_eq!(
        w.hash(&previous, &Deadline::unlimited()).await,
        HashFileOutcome::PreviousVersions { hashed: 0, not_kept: 0 }
    );
    assert_eq!(*w.content.previous_downloads.lock().unwrap(), downloads);

    // A read of the second version whose record arrives after that version was hashed gets
    // its digests from its sibling event, with no second download of the same bytes.
    w.events
        .insert_events(&[event(
            "late-read",
            FileEventType::Downloaded,
            edited + Duration::minutes(2),
        )])
        .await
        .unwrap();
    assert_eq!(
        w.hash(&previous, &Deadline::unlimited()).await,
        HashFileOutcome::PreviousVersions { hashed: 0, not_kept: 0 }
    );
    assert_eq!(
        *w.content.previous_downloads.lock().unwrap(),
        downloads,
        "the version is not downloaded again"
    );
    let late = w.events.get(&format!("{CONN}#late-read")).unwrap();
    match late.hash {
        Some(HashOutcome::Hashed(h)) => assert_eq!((h.sha256, h.version), (sha256_hex(&v2), Some("2.0".into()))),
        other => panic!("late-read: {other:?}"),
    }

    w.events
        .insert_events(&[event(
            "early-edit",
            FileEventType::Modified,
            uploaded - Duration::days(1),
        )])
        .await
        .unwrap();
    w.events
        .set_event_hash(
            &[format!("{CONN}#early-edit")],
            &HashOutcome::Unavailable {
                reason: unavailable::CHANGED_BEFORE_HASHING.into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        w.hash(&previous, &Deadline::unlimited()).await,
        HashFileOutcome::PreviousVersions { hashed: 0, not_kept: 1 }
    );
    let early = w.events.get(&format!("{CONN}#early-edit")).unwrap();
    assert_eq!(
        early.hash,
        Some(HashOutcome::Unavailable {
            reason: unavailable::VERSION_NOT_KEPT.into()
        })
    );
}
