//! Which drive item an event concerns.
//!
//! Contract:
//! - an event whose record names the file's list item unique id (`ListItemUniqueId`) is
//!   resolved by that id against the inventory first: the id survives renames and moves, and a
//!   deleted file keeps a tombstone, so events of a file renamed, moved or deleted before its
//!   records were ingested resolve to the file, not to whatever is at their path now;
//! - an event the inventory cannot place is looked up by its path in the drive (Graph);
//! - an event still without an item whose record named an id waits for it ([`PendingItem`]):
//!   the next index round of its drive that learns the id gives the event its item
//!   ([`resolve_pending`]) and asks for its digests, so the outcome does not depend on whether
//!   ingest or the index round ran first;
//! - an event resolved to a deleted file is told so ("deleted before it could be hashed")
//!   instead of being downloaded for;
//! - copies are resolved by their destination path: their record names the source's id.
//!
//! Sources: `sharepointIds` on driveItem ("Returns identifiers useful for SharePoint REST
//! compatibility", <https://learn.microsoft.com/en-us/graph/api/resources/driveitem#properties>)
//! whose `listItemUniqueId` is the list item's unique id
//! (<https://learn.microsoft.com/en-us/graph/api/resources/sharepointids#properties>), the
//! `ListItemUniqueId` of the SharePoint audit schema
//! (<https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema#sharepoint-base-schema>).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::info;

use crate::audit::{FileEvent, FileEventType, ItemKind, UnresolvedReason};
use crate::events::{EventRecord, HashOutcome, unavailable};
use crate::export::StaleExportMarks;
use crate::jobs::HashJob;
use crate::model::{KnownItem, PENDING_ITEM_DAYS, PendingItem, list_item_uid};
use crate::ports::{EventStore, HashQueue, ItemIdentities, ItemResolver, PortResult};

/// The events of a blob with their items, as far as they could be found.
#[derive(Debug, Default)]
pub struct Resolution {
    pub events: Vec<FileEvent>,
    /// Ids of the events resolved to a file deleted since (by its tombstone).
    pub deleted: HashSet<String>,
    /// Events still without an item whose record named the file's list item unique id.
    pub waiting: Vec<(String, String)>,
}

impl Resolution {
    /// The waiting events as the inventory records them, per drive.
    pub fn pending(&self, connection: &str, now: DateTime<Utc>) -> BTreeMap<String, Vec<PendingItem>> {
        let mut by_drive: BTreeMap<String, Vec<PendingItem>> = BTreeMap::new();
        for e in &self.events {
            if e.item_id.is_some() || !self.waiting.iter().any(|(id, _)| id == &e.id) {
                continue;
            }
            if let (Some(drive), Some(uid)) = (&e.drive_id, uid_of(e)) {
                by_drive.entry(drive.clone()).or_default().push(PendingItem {
                    uid,
                    event_key: crate::events::event_key(connection, &e.id),
                    connection: connection.to_owned(),
                    since: now,
                });
            }
        }
        by_drive
    }
}

/// The list item unique id an event may be resolved by: that of a file the event acts on
/// (a copy's record names its source).
fn uid_of(e: &FileEvent) -> Option<String> {
    if e.item_kind != ItemKind::File || e.event_type == FileEventType::Copied {
        return None;
    }
    e.list_item_unique_id.as_deref().and_then(list_item_uid)
}

/// Whether the event still needs its item looked up.
fn wants_item(e: &FileEvent) -> bool {
    e.item_id.is_none() && matches!(e.unresolved, None | Some(UnresolvedReason::ItemNotLookedUp))
}

/// Gives each event of a monitored drive its item id: by list item unique id against the
/// inventory, then by path in the drive.
///
/// # Errors
/// A failure of the inventory or of Graph.
pub async fn resolve_items(
    identities: &dyn ItemIdentities,
    resolver: &dyn ItemResolver,
    events: Vec<FileEvent>,
) -> PortResult<Resolution> {
    let mut uids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| wants_item(e)) {
        if let (Some(drive), Some(uid)) = (&e.drive_id, uid_of(e)) {
            uids.entry(drive.clone()).or_default().insert(uid);
        }
    }
    let mut known: HashMap<(String, String), KnownItem> = HashMap::new();
    for (drive, wanted) in uids {
        let wanted: Vec<String> = wanted.into_iter().collect();
        for item in identities.items_by_uid(&drive, &wanted).await? {
            known.insert((drive.clone(), item.uid.clone()), item);
        }
    }
    let mut resolution = Resolution::default();
    let mut events = events;
    for e in events.iter_mut().filter(|e| wants_item(e)) {
        let (Some(drive), Some(uid)) = (e.drive_id.clone(), uid_of(e)) else {
            continue;
        };
        if let Some(item) = known.get(&(drive, uid)) {
            e.item_id = Some(item.item_id.clone());
            e.unresolved = None;
            if item.deleted_at.is_some() {
                resolution.deleted.insert(e.id.clone());
            }
        }
    }

    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| wants_item(e)) {
        if let (Some(drive), Some(path)) = (&e.drive_id, e.lookup_path()) {
            wanted.entry(drive.clone()).or_default().insert(path.to_owned());
        }
    }
    let mut found: HashMap<(String, String), String> = HashMap::new();
    for (drive, paths) in wanted {
        let paths: Vec<String> = paths.into_iter().collect();
        for (path, item) in resolver.resolve_paths(&drive, &paths).await? {
            found.insert((drive.clone(), path), item);
        }
    }
    for e in events.iter_mut().filter(|e| wants_item(e)) {
        let (Some(drive), Some(path)) = (e.drive_id.clone(), e.lookup_path().map(str::to_owned)) else {
            continue;
        };
        match found.get(&(drive.clone(), path)) {
            Some(item) => {
                e.item_id = Some(item.clone());
                e.unresolved = None;
            }
            None => {
                e.unresolved = Some(UnresolvedReason::ItemNotFound);
                if uid_of(e).is_some() {
                    resolution.waiting.push((e.id.clone(), drive));
                }
            }
        }
    }
    resolution.events = events;
    Ok(resolution)
}

/// The ports [`resolve_pending`] needs.
pub struct ResolvePorts<'a> {
    pub identities: &'a dyn ItemIdentities,
    pub events: &'a dyn EventStore,
    pub hash_queue: &'a dyn HashQueue,
    pub exports: &'a dyn StaleExportMarks,
}

/// What [`resolve_pending`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingResolved {
    /// Events given their item (a deleted file's included).
    pub resolved: u64,
    /// Of those, events of files deleted since.
    pub deleted: u64,
    /// Events that waited longer than [`PENDING_ITEM_DAYS`] and were given up.
    pub expired: u64,
    /// Events still waiting.
    pub waiting: u64,
}

/// Gives the drive's waiting events the items the inventory now knows by their ids, asks for
/// the digests of the live ones and records the deleted ones as such. Run at the end of each
/// index round, after the round's rows are written. Safe to repeat: an event resolved before a
/// crash is resolved again to the same item, and its waiting entry goes only after.
///
/// # Errors
/// A failure of the inventory, the events table, the export marks or the hash queue.
pub async fn resolve_pending(
    ports: &ResolvePorts<'_>,
    drive_id: &str,
    now: DateTime<Utc>,
) -> PortResult<PendingResolved> {
    let pending = ports.identities.pending(drive_id).await?;
    let mut summary = PendingResolved::default();
    if pending.is_empty() {
        return Ok(summary);
    }
    let uids: Vec<String> = pending
        .iter()
        .map(|p| p.uid.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let known: HashMap<String, KnownItem> = ports
        .identities
        .items_by_uid(drive_id, &uids)
        .await?
        .into_iter()
        .map(|k| (k.uid.clone(), k))
        .collect();
    let gone = HashOutcome::Unavailable {
        reason: unavailable::DELETED_BEFORE_HASHING.to_owned(),
    };
    let mut done = Vec::new();
    let mut changed: Vec<EventRecord> = Vec::new();
    let mut jobs: BTreeSet<(String, String)> = BTreeSet::new();
    for p in pending {
        match known.get(&p.uid) {
            Some(item) => {
                let deleted = item.deleted_at.is_some();
                let outcome = deleted.then_some(&gone);
                if let Some(record) = ports.events.resolve_item(&p.event_key, &item.item_id, outcome).await? {
                    summary.resolved += 1;
                    if deleted {
                        summary.deleted += 1;
                        // A round that resolved the event to the live file and died before
                        // asking for its digests left it without an outcome; the file is gone
                        // now, so no hash job will come: say so here.
                        if record.hash.is_none() {
                            super::ingest::set_where_none(ports.events, std::slice::from_ref(&p.event_key), &gone)
                                .await?;
                        }
                    } else {
                        jobs.insert((record.connection.clone(), item.item_id.clone()));
                    }
                    changed.push(record);
                } else {
                    // Resolved meanwhile by another round, which may die before asking for the
                    // digests: ask again (a job for a hashed or deleted file only gives its
                    // events their outcome).
                    jobs.insert((p.connection.clone(), item.item_id.clone()));
                }
                done.push(p);
            }
            None if p.since + chrono::Duration::days(PENDING_ITEM_DAYS) < now => {
                summary.expired += 1;
                done.push(p);
            }
            None => summary.waiting += 1,
        }
    }
    let changed: Vec<&EventRecord> = changed.iter().collect();
    crate::export::mark_changed_windows_stale(ports.exports, &changed, now).await?;
    if !jobs.is_empty() {
        let jobs: Vec<HashJob> = jobs
            .into_iter()
            .map(|(connection, item_id)| HashJob {
                previous_versions: false,
                connection,
                drive_id: drive_id.to_owned(),
                item_id,
                continuation: None,
            })
            .collect();
        ports.hash_queue.enqueue_hashes(&jobs).await?;
    }
    ports.identities.remove_pending(drive_id, &done).await?;
    if summary != PendingResolved::default() {
        info!(
            drive_id,
            resolved = summary.resolved,
            deleted = summary.deleted,
            expired = summary.expired,
            waiting = summary.waiting,
            "events that waited for their item resolved by list item id"
        );
    }
    Ok(summary)
}
