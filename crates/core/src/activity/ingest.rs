//! Ingesting one content blob: audit records in, file events of monitored drives out.
//!
//! Contract:
//! - every record is accounted for: an event (inserted, or already stored), a record dropped for
//!   a known reason (its OneDrive is known and outside the scope, no monitored user owns it, not
//!   a personal site, a skip by rule), counted by reason, or a quarantined record kept with its
//!   reason; one bad record never fails the blob;
//! - a record of a OneDrive no discovery has recorded yet is never dropped: its blob is parked
//!   until a discovery run of the scope in force, started after the record happened, has
//!   finished (discovery then enqueues the parked blobs again), so whichever of discovery, the
//!   poll and ingest runs first, the same events are stored;
//! - events are written once, keyed by connection and record `Id`, with conditional writes, so
//!   duplicate records and SQS redelivery never duplicate an event;
//! - hash jobs are asked for every content-changing event this delivery inserted, for every
//!   event of a file with no hash yet, and for every event an earlier delivery stored that
//!   still has no outcome, whatever this delivery finds of its file (a redelivery after a crash
//!   between the writes and the enqueue must still ask, even when the file was deleted
//!   meanwhile); an event stored without its item gets the one a later delivery finds;
//!   hash-file skips versions it has done;
//! - drives with events that change their tree or content get an incremental index round, so
//!   their inventory rows follow;
//! - a blob that expired before it could be fetched is recorded as such, not retried forever.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::activity::{BlobCounts, ParkedBlob, drop_reason, resolve};
use crate::audit::{self, FileEvent, ItemKind, NormaliseContext, TrustedDomains};
use crate::error::PortError;
use crate::events::{EventRecord, HashOutcome, unavailable};
use crate::jobs::{BlobJob, HashJob, IndexJob};
use crate::model::{Connection, ConnectionKind, ConnectionState, DriveRecord};
use crate::ports::{
    ActivityFeed, ActivityState, EventStore, HashChange, HashQueue, IndexQueue, InventoryHashes, ItemIdentities,
    ItemResolver, QuarantineStore, ScopeStore,
};

/// The feed's error code for content past its expiration ("Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const CONTENT_EXPIRED: &str = "AF20051";

/// The ports ingestion needs; `feed` and `resolver` belong to the blob's connection.
pub struct IngestPorts<'a> {
    /// The connection's scope, to judge records of drives no discovery has seen.
    pub scopes: &'a dyn ScopeStore,
    pub activity: &'a dyn ActivityState,
    pub feed: &'a dyn ActivityFeed,
    pub resolver: &'a dyn ItemResolver,
    /// The inventory's files by list item unique id, and the events waiting for one.
    pub identities: &'a dyn ItemIdentities,
    pub events: &'a dyn EventStore,
    pub inventory: &'a dyn InventoryHashes,
    pub quarantine: &'a dyn QuarantineStore,
    pub hash_queue: &'a dyn HashQueue,
    pub index_queue: &'a dyn IndexQueue,
    /// Export windows to write again when an event stored earlier changes.
    pub exports: &'a dyn crate::export::StaleExportMarks,
    /// When set, the items of sharing events get their sharing state refreshed (the exposure
    /// report reads it), judged against the connection's trusted domains.
    pub sharing: Option<(
        &'a dyn crate::ports::PermissionReader,
        &'a dyn crate::ports::SharingStore,
    )>,
}

/// How ingesting a blob ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Ingested(BlobCounts),
    /// The blob expired before it could be fetched (recorded).
    Expired,
    /// The connection is deauthorized: the blob is parked unread until it is resumed.
    Parked,
    /// The connection is gone, removed or not a cloud connection.
    Skipped {
        reason: String,
    },
}

/// Ingests the blob of `job`, a job of `connection` (as the handler loaded it).
///
/// # Errors
/// A failure to fetch the blob (other than its expiry) or of a store or queue: the message is
/// retried, and everything done so far is idempotent.
pub async fn ingest_blob(
    ports: &IngestPorts<'_>,
    connection: &Connection,
    job: &BlobJob,
    now: DateTime<Utc>,
) -> Result<IngestOutcome, PortError> {
    if connection.id != job.connection {
        return Ok(IngestOutcome::Skipped {
            reason: format!(
                "blob of connection {} given connection {}",
                job.connection, connection.id
            ),
        });
    }
    if connection.kind == ConnectionKind::Cloud && connection.state == ConnectionState::Deauthorized {
        park_unread(ports.activity, job, now).await?;
        return Ok(IngestOutcome::Parked);
    }
    if connection.kind != ConnectionKind::Cloud || !connection.accepts_work() {
        return Ok(IngestOutcome::Skipped {
            reason: format!("connection {} is not an active cloud connection", connection.id),
        });
    }
    let content_id = &job.blob.content_id;
    let bytes = match ports.feed.fetch_blob(&job.blob.content_uri).await {
        Ok(bytes) => bytes,
        Err(e) if e.code == CONTENT_EXPIRED => {
            warn!(
                connection = connection.id,
                content_id, "content expired before it was fetched"
            );
            let previous = ports.activity.blob_counts(&connection.id, content_id).await?;
            let mut counts = previous.clone().unwrap_or_default();
            counts.expired = true;
            counts.ingested_at = Some(now);
            if counts.parked > 0 {
                warn!(
                    connection = connection.id,
                    content_id,
                    records = counts.parked,
                    "parked records expired with their content before discovery placed them"
                );
                *counts
                    .dropped
                    .entry(drop_reason::EXPIRED_WHILE_PARKED.to_owned())
                    .or_default() += counts.parked;
                counts.parked = 0;
                ports.activity.unpark_blob(&connection.id, content_id).await?;
            }
            counts.passes += 1;
            ports
                .activity
                .record_blob_ingested(&connection.id, content_id, &counts)
                .await?;
            return Ok(IngestOutcome::Expired);
        }
        Err(e) => return Err(e),
    };

    let trusted = TrustedDomains::new(&connection.trusted_domains);
    let mut counts = BlobCounts {
        ingested_at: Some(now),
        ..BlobCounts::default()
    };
    // First pass without drives names the personal sites; the second knows their drives.
    let bare = NormaliseContext::new(trusted.clone(), now);
    let outcome = match audit::normalise_blob(&bytes, &bare) {
        Ok(outcome) => outcome,
        Err(q) => {
            counts.quarantined = 1;
            ports
                .quarantine
                .put_quarantined(&connection.id, content_id, &[q])
                .await?;
            ports
                .activity
                .record_blob_ingested(&connection.id, content_id, &counts)
                .await?;
            warn!(
                connection = connection.id,
                content_id, "blob is not a JSON array of records: quarantined"
            );
            return Ok(IngestOutcome::Ingested(counts));
        }
    };
    let site_keys: BTreeSet<String> = outcome.events.iter().filter_map(|e| e.site_key.clone()).collect();
    let drives = if site_keys.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<String> = site_keys.into_iter().collect();
        ports.activity.drives_by_site_key(&connection.id, &keys).await?
    };
    let known_sites: HashSet<String> = drives
        .iter()
        .filter_map(|d| d.web_url.as_deref())
        .filter_map(|url| audit::location::personal_site_key(&audit::location::percent_decode(url)))
        .collect();
    let monitored: Vec<&DriveRecord> = drives.iter().filter(|d| d.state.is_monitored()).collect();
    let outcome = if monitored.is_empty() {
        outcome
    } else {
        let ctx = NormaliseContext::new(trusted, now).with_drives(monitored.iter().copied());
        // The same bytes parsed before: this cannot fail now.
        audit::normalise_blob(&bytes, &ctx).unwrap_or(outcome)
    };

    counts.records = outcome.records();
    counts.skipped = outcome.skipped.values().sum();
    for (code, n) in &outcome.skipped {
        *counts.dropped.entry((*code).to_owned()).or_default() += n;
    }
    counts.quarantined = outcome.quarantined.len() as u64;
    let (kept, elsewhere): (Vec<FileEvent>, Vec<FileEvent>) =
        outcome.events.into_iter().partition(|e| e.drive_id.is_some());
    let placement = Placement::of(ports, connection, &elsewhere).await?;
    let mut parked: Vec<&FileEvent> = Vec::new();
    for event in &elsewhere {
        match event.site_key.as_deref() {
            None => counts.drop_record(drop_reason::NOT_PERSONAL_SITE),
            Some(key) if known_sites.contains(key) => {
                counts.events_unmonitored += 1;
                counts.drop_record(drop_reason::DRIVE_NOT_MONITORED);
            }
            Some(_) if placement.owner_not_monitored(event) => {
                counts.events_unmonitored += 1;
                counts.drop_record(drop_reason::OWNER_NOT_MONITORED);
            }
            Some(_) => parked.push(event),
        }
    }
    counts.parked = parked.len() as u64;

    let resolution = resolve::resolve_items(ports.identities, ports.resolver, kept).await?;
    let stored = records(&connection.id, resolution.events.clone(), &resolution.deleted);
    let inserted: HashSet<String> = ports.events.insert_events(&stored).await?.into_iter().collect();
    counts.events_inserted = inserted.len() as u64;
    counts.events_duplicate = stored.len() as u64 - counts.events_inserted;

    // Events that wait for their item are recorded before the index round this blob asks for
    // (below), so that round finds them whatever ran first.
    for (drive, pending) in resolution.pending(&connection.id, now) {
        ports.identities.add_pending(&drive, &pending).await?;
    }
    let mut live: Vec<FileEvent> = resolution
        .events
        .iter()
        .filter(|e| inserted.contains(&crate::events::event_key(&connection.id, &e.id)))
        .filter(|e| !resolution.deleted.contains(&e.id))
        .cloned()
        .collect();
    live.extend(settle_stored_copies(ports, &connection.id, &resolution, &inserted, now).await?);
    counts.hash_jobs = request_hashes(ports, &connection.id, &live).await?;
    let events = resolution.events;
    if let Some((reader, store)) = ports.sharing {
        let shared: Vec<&FileEvent> = events
            .iter()
            .filter(|e| e.event_type.is_sharing() && e.item_kind != ItemKind::Drive)
            .filter(|e| e.drive_id.is_some() && e.item_id.is_some())
            .collect();
        if let Some(first) = shared.iter().map(|e| e.observed_at).min() {
            let items: Vec<(String, String)> = shared
                .iter()
                .filter_map(|e| Some((e.drive_id.clone()?, e.item_id.clone()?)))
                .collect();
            let trusted = TrustedDomains::new(&connection.trusted_domains);
            crate::exposure::refresh_sharing(reader, store, &connection.id, &trusted, &items, first).await?;
        }
    }
    // The inventory follows the drive's delta: an incremental round picks up what changed.
    let changed: BTreeSet<String> = events
        .iter()
        .filter(|e| e.event_type.changes_inventory())
        .filter_map(|e| e.drive_id.clone())
        .collect();
    counts.index_jobs = changed.len() as u64;
    if !changed.is_empty() {
        ports
            .index_queue
            .enqueue_index(&IndexJob::for_drives(&connection.id, &changed))
            .await?;
    }
    if !outcome.quarantined.is_empty() {
        ports
            .quarantine
            .put_quarantined(&connection.id, content_id, &outcome.quarantined)
            .await?;
    }
    let previous = ports.activity.blob_counts(&connection.id, content_id).await?;
    if let Some(oldest) = parked.iter().map(|e| e.observed_at).min() {
        let site_keys: BTreeSet<String> = parked.iter().filter_map(|e| e.site_key.clone()).collect();
        let entry = ParkedBlob {
            blob: job.blob.clone(),
            parked_at: now,
            updated_at: now,
            records: counts.parked,
            oldest_record: oldest,
            site_keys: site_keys.into_iter().collect(),
            unread: false,
        };
        ports.activity.park_blob(&connection.id, &entry).await?;
        info!(
            connection = connection.id,
            content_id,
            records = entry.records,
            sites = entry.site_keys.len(),
            "records of OneDrives not discovered yet parked until discovery places them"
        );
    } else if job.parked || previous.as_ref().is_some_and(|p| p.parked > 0) {
        ports.activity.unpark_blob(&connection.id, content_id).await?;
    }
    ports
        .activity
        .record_blob_ingested(&connection.id, content_id, &counts.clone().after(previous.as_ref()))
        .await?;
    info!(
        connection = connection.id,
        content_id,
        records = counts.records,
        inserted = counts.events_inserted,
        duplicate = counts.events_duplicate,
        unmonitored = counts.events_unmonitored,
        parked = counts.parked,
        skipped = counts.skipped,
        quarantined = counts.quarantined,
        hash_jobs = counts.hash_jobs,
        "blob ingested"
    );
    Ok(IngestOutcome::Ingested(counts))
}

/// Parks the blob of a deauthorized connection unread (its credentials cannot fetch it): the
/// first discovery run after `filetrail connection resume` enqueues it again, like the blobs
/// parked for want of a drive. Dropping it would lose its records for good: the poll marked it
/// enqueued and never lists it again. It waits at most until the feed's retention ends, as
/// `filetrail status` shows.
///
/// # Errors
/// A failure of the state store.
pub async fn park_unread(activity: &dyn ActivityState, job: &BlobJob, now: DateTime<Utc>) -> Result<(), PortError> {
    let entry = ParkedBlob {
        blob: job.blob.clone(),
        parked_at: now,
        updated_at: now,
        records: 0,
        oldest_record: job.blob.content_created,
        site_keys: Vec::new(),
        unread: true,
    };
    activity.park_blob(&job.connection, &entry).await?;
    info!(
        connection = job.connection,
        content_id = job.blob.content_id,
        "blob of a deauthorized connection parked unread until the connection is resumed"
    );
    Ok(())
}

/// How long after a record happened a discovery run must have started to be sure it saw the
/// record's owner: the directory is eventually consistent, so a user created or added to a
/// group just before a run started may be missing from its listing.
pub fn discovery_slack() -> chrono::Duration {
    chrono::Duration::minutes(10)
}

/// Whether the connection's last finished discovery run can place a record whose OneDrive no
/// drive record names: a run of the scope in force now, started after the record happened (and
/// [`discovery_slack`]), listed every monitored user's OneDrive, so the record's owner is not
/// monitored. Anything newer waits parked for the next run.
struct Placement {
    /// When the last finished run of the current scope started.
    run_started: Option<DateTime<Utc>>,
}

impl Placement {
    async fn of(ports: &IngestPorts<'_>, connection: &Connection, elsewhere: &[FileEvent]) -> Result<Self, PortError> {
        let Some(run) = connection.last_discovery.as_ref() else {
            return Ok(Self { run_started: None });
        };
        if elsewhere.iter().all(|e| e.site_key.is_none()) {
            return Ok(Self { run_started: None });
        }
        let scope = ports
            .scopes
            .scope(&connection.id)
            .await?
            .unwrap_or_else(crate::scope::Scope::all_users);
        let same_scope = run.scope_version.as_deref() == Some(scope.version.as_str());
        Ok(Self {
            run_started: same_scope.then_some(run.started_at),
        })
    }

    fn owner_not_monitored(&self, event: &FileEvent) -> bool {
        self.run_started
            .is_some_and(|started| event.observed_at + discovery_slack() < started)
    }
}

/// The stored copies of this blob's records an earlier delivery stored (a duplicate blob, or
/// this blob again after a crash), as far as they still need digests. Such a copy was resolved
/// when it was stored, and its delivery may have died before asking for its digests; this
/// delivery's resolution may differ (the file was deleted, renamed or indexed since). So:
/// - a copy with an item and no outcome is returned as stored: hash-file, asked for its item,
///   finds whether the file is gone since and says so, or hashes it;
/// - a copy of a file stored without an item gets the item this delivery found (as an index
///   round gives a waiting event its item, [`resolve::resolve_pending`]), told so if the file
///   is deleted, returned otherwise; its export windows are marked to be written again.
async fn settle_stored_copies(
    ports: &IngestPorts<'_>,
    connection: &str,
    resolution: &resolve::Resolution,
    inserted: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Vec<FileEvent>, PortError> {
    let found: HashMap<String, &FileEvent> = resolution
        .events
        .iter()
        .map(|e| (crate::events::event_key(connection, &e.id), e))
        .filter(|(key, _)| !inserted.contains(key))
        .collect();
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = found.keys().cloned().collect();
    let gone = HashOutcome::Unavailable {
        reason: unavailable::DELETED_BEFORE_HASHING.to_owned(),
    };
    let (mut needing, mut resolved) = (Vec::new(), Vec::new());
    for stored in ports.events.stored_events(&keys).await? {
        let record = if stored.event.item_id.is_some() {
            stored
        } else {
            let Some(now_found) = found.get(&stored.key()) else {
                continue;
            };
            let Some(item) = now_found
                .item_id
                .as_deref()
                .filter(|_| stored.event.item_kind == ItemKind::File)
            else {
                continue;
            };
            let deleted = resolution.deleted.contains(&now_found.id);
            match ports
                .events
                .resolve_item(&stored.key(), item, deleted.then_some(&gone))
                .await?
            {
                Some(record) => {
                    resolved.push(record.clone());
                    record
                }
                None => continue,
            }
        };
        if record.hash.is_none() && record.event.item_kind == ItemKind::File {
            needing.push(record.event);
        }
    }
    if !resolved.is_empty() {
        let changed: Vec<&EventRecord> = resolved.iter().collect();
        crate::export::mark_changed_windows_stale(ports.exports, &changed, now).await?;
        info!(
            connection,
            events = resolved.len(),
            "events an earlier delivery stored without their item given it"
        );
    }
    Ok(needing)
}

/// Asks hash-file for the files of these events that need it, and gives the others the hash
/// already stored for their version. Returns how many hash jobs were enqueued.
async fn request_hashes(ports: &IngestPorts<'_>, connection: &str, events: &[FileEvent]) -> Result<u64, PortError> {
    // Files by drive, with whether any event may have changed their content.
    let mut files: BTreeMap<(String, String), bool> = BTreeMap::new();
    for e in events {
        if e.item_kind != ItemKind::File {
            continue;
        }
        if let (Some(drive), Some(item)) = (&e.drive_id, &e.item_id) {
            *files.entry((drive.clone(), item.clone())).or_default() |= e.needs_hash();
        }
    }
    let mut by_drive: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (drive, item) in files.keys() {
        by_drive.entry(drive.clone()).or_default().push(item.clone());
    }
    let mut stored = HashMap::new();
    for (drive, items) in &by_drive {
        for (item, hashes) in ports.inventory.file_hashes(drive, items).await? {
            stored.insert((drive.clone(), item), hashes);
        }
    }

    let mut jobs = Vec::new();
    let mut reuse: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut older = Vec::new();
    let mut older_files = BTreeSet::new();
    for ((drive, item), changed) in &files {
        let key = (drive.clone(), item.clone());
        match stored.get(&key) {
            Some(hashes) if !changed => {
                // Reads and shares of a hashed version take its digests; an event older than
                // that version concerns one that is gone, as hash-file says of the events it
                // finds (so the outcome does not depend on which ran first).
                let since = hashes.modified_at;
                for e in events
                    .iter()
                    .filter(|e| e.drive_id.as_ref() == Some(drive) && e.item_id.as_ref() == Some(item))
                {
                    let event_key = crate::events::event_key(connection, &e.id);
                    if since.is_none_or(|s| e.observed_at >= s) {
                        reuse.entry(key.clone()).or_default().push(event_key);
                    } else {
                        older.push(event_key);
                        older_files.insert(key.clone());
                    }
                }
            }
            _ => jobs.push(HashJob {
                previous_versions: false,
                connection: connection.to_owned(),
                drive_id: drive.clone(),
                item_id: item.clone(),
                continuation: None,
            }),
        }
    }
    // Every event here has no outcome yet (inserted now, or stored without one); one that
    // gets an outcome from a hash job meanwhile keeps that job's (it read the file's events
    // later than this blob's inventory read).
    for ((drive, item), keys) in reuse {
        if let Some(hashes) = stored.get(&(drive, item)) {
            let outcome = HashOutcome::Hashed(hashes.clone());
            set_where_none(ports.events, &keys, &outcome).await?;
        }
    }
    if !older.is_empty() {
        // Only those without an outcome: an event that took its own version's digests keeps them.
        let older: HashSet<String> = older.into_iter().collect();
        let mut unmarked = Vec::new();
        for (drive, item) in &older_files {
            let before = unmarked.len();
            for stored in ports
                .events
                .file_events(drive, item, crate::hashing::MAX_EVENTS_PER_FILE)
                .await?
            {
                if stored.hash.is_none() && older.contains(&stored.key()) {
                    unmarked.push(stored.key());
                }
            }
            if unmarked.len() > before {
                // Their version may still be kept: hash-file looks it up.
                jobs.push(HashJob {
                    connection: connection.to_owned(),
                    drive_id: drive.clone(),
                    item_id: item.clone(),
                    continuation: None,
                    previous_versions: true,
                });
            }
        }
        if !unmarked.is_empty() {
            let gone_by = HashOutcome::Unavailable {
                reason: unavailable::CHANGED_BEFORE_HASHING.to_owned(),
            };
            set_where_none(ports.events, &unmarked, &gone_by).await?;
        }
    }
    if !jobs.is_empty() {
        ports.hash_queue.enqueue_hashes(&jobs).await?;
    }
    Ok(jobs.len() as u64)
}

/// Gives `outcome` to the events of `keys` that still have none.
pub(crate) async fn set_where_none(
    events: &dyn EventStore,
    keys: &[String],
    outcome: &HashOutcome,
) -> Result<(), PortError> {
    let changes: Vec<HashChange<'_>> = keys
        .iter()
        .map(|key| HashChange {
            key,
            was: None,
            outcome,
        })
        .collect();
    if !changes.is_empty() {
        events.change_event_hashes(&changes).await?;
    }
    Ok(())
}

/// The stored form of the kept events, with the reason those without content have no digest
/// (`deleted`: ids of events resolved to a file deleted since).
fn records(connection: &str, events: Vec<FileEvent>, deleted: &HashSet<String>) -> Vec<EventRecord> {
    events
        .into_iter()
        .map(|e| {
            let no_content = e.item_kind != ItemKind::File;
            let unresolved = e.item_id.is_none();
            let gone = deleted.contains(&e.id);
            let mut record = EventRecord::onedrive(connection, e);
            if gone && !no_content {
                record.hash = Some(HashOutcome::Unavailable {
                    reason: unavailable::DELETED_BEFORE_HASHING.to_owned(),
                });
            } else if no_content {
                record.hash = Some(HashOutcome::Unavailable {
                    reason: unavailable::NO_CONTENT.to_owned(),
                });
            } else if unresolved {
                record.hash = Some(HashOutcome::Unavailable {
                    reason: unavailable::ITEM_NOT_RESOLVED.to_owned(),
                });
            }
            record
        })
        .collect()
}
