//! In-memory adapters of the storage and queue ports, for tests of the use cases and for
//! dry runs. They keep the same contracts as the DynamoDB and SQS adapters (conditional
//! checkpoint saves, idempotent inserts), so a use-case test here means the same thing there.
//! Like a network store, every operation is a point where the caller's task gives way: tests
//! that run use cases side by side interleave them operation by operation, and a worker killed
//! "mid-batch" can die between any two of its operations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::activity::{ActivityCheckpoint, BlobCounts, BlobTotals, ContentBlob, ParkedBlob};
use crate::audit::Quarantine;
use crate::error::PortError;
use crate::events::{EventRecord, FileHashes, HashOutcome};
use crate::export::{ExportCheckpoint, ExportCheckpoints, ExportWindow, StaleExportMarks, StaleWindow};
use crate::exposure::SharingState;
use crate::jobs::{BlobJob, DiscoverJob, HashJob, IndexJob};
use crate::model::{
    Connection, ConnectionError, DirectoryUser, DiscoverySummary, DriveRecord, DriveState, IndexProgress, InventoryRow,
    KnownItem, PendingItem,
};
use crate::ports::{
    ActivityState, BlobQueue, CheckpointVersion, ConnectionStore, DiscoverQueue, DiscoveryCheckpoint,
    DiscoveryRunStore, DriveStore, EventStore, HashChange, HashQueue, IndexQueue, InventoryHashes, InventoryStore,
    ItemIdentities, PortResult, QuarantineStore, RunPage, RunSeen, ScopeObjects, ScopeStore, SharingStore, UploadRead,
};
use crate::scope::{Scope, ScopeUploadResult};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives way once to the executor (a store operation's round trip), whatever the runtime.
pub async fn yield_point() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// State in memory.
#[derive(Debug, Default)]
pub struct MemoryState {
    connections: Mutex<BTreeMap<String, Connection>>,
    drives: Mutex<BTreeMap<String, DriveRecord>>,
    without_drive: Mutex<BTreeMap<(String, String), (DirectoryUser, String)>>,
    checkpoints: Mutex<HashMap<String, DiscoveryCheckpoint>>,
    scopes: Mutex<HashMap<String, Scope>>,
    uploads: Mutex<HashMap<String, ScopeUploadResult>>,
    runs: Mutex<BTreeMap<(String, String, u64), RunPage>>,
    activity: Mutex<HashMap<(String, String), ActivityCheckpoint>>,
    /// (connection, content id) → kept until.
    blobs: Mutex<BTreeMap<(String, String), DateTime<Utc>>>,
    ingested: Mutex<BTreeMap<(String, String), BlobCounts>>,
    parked: Mutex<BTreeMap<(String, String), ParkedBlob>>,
    /// (connection, drive, item, cTag) → (holder, until).
    leases: Mutex<BTreeMap<LeaseKey, (String, DateTime<Utc>)>>,
    exports: Mutex<HashMap<String, ExportCheckpoint>>,
    /// (connection, window) → marked at.
    stale_exports: Mutex<BTreeMap<(String, ExportWindow), DateTime<Utc>>>,
}

impl MemoryState {
    pub fn all_drives(&self) -> Vec<DriveRecord> {
        lock(&self.drives).values().cloned().collect()
    }

    /// Until when a blob is remembered as enqueued; `None` when it was never marked.
    pub fn blob_kept_until(&self, connection: &str, content_id: &str) -> Option<DateTime<Utc>> {
        lock(&self.blobs)
            .get(&(connection.to_owned(), content_id.to_owned()))
            .copied()
    }

    /// What ingesting a blob produced, as last recorded.
    pub fn blob_counts(&self, connection: &str, content_id: &str) -> Option<BlobCounts> {
        lock(&self.ingested)
            .get(&(connection.to_owned(), content_id.to_owned()))
            .cloned()
    }

    /// Every ingest record of a connection, by content id.
    pub fn ingested_blobs(&self, connection: &str) -> Vec<(String, BlobCounts)> {
        lock(&self.ingested)
            .iter()
            .filter(|((c, _), _)| c == connection)
            .map(|((_, id), counts)| (id.clone(), counts.clone()))
            .collect()
    }
}

#[async_trait]
impl StaleExportMarks for MemoryState {
    async fn mark_stale(&self, connection: &str, windows: &[ExportWindow], at: DateTime<Utc>) -> PortResult<()> {
        yield_point().await;
        let mut marks = lock(&self.stale_exports);
        for w in windows {
            marks.insert((connection.to_owned(), *w), at);
        }
        Ok(())
    }
}

#[async_trait]
impl ExportCheckpoints for MemoryState {
    async fn export_checkpoint(&self, connection: &str) -> PortResult<Option<ExportCheckpoint>> {
        yield_point().await;
        Ok(lock(&self.exports).get(connection).cloned())
    }

    async fn save_export_checkpoint(
        &self,
        connection: &str,
        expected: Option<&ExportCheckpoint>,
        checkpoint: &ExportCheckpoint,
    ) -> PortResult<bool> {
        yield_point().await;
        let mut exports = lock(&self.exports);
        if exports.get(connection).map(|c| c.next_window) != expected.map(|c| c.next_window) {
            return Ok(false);
        }
        exports.insert(connection.to_owned(), checkpoint.clone());
        Ok(true)
    }

    async fn stale_windows(&self, connection: &str) -> PortResult<Vec<StaleWindow>> {
        yield_point().await;
        Ok(lock(&self.stale_exports)
            .iter()
            .filter(|((c, _), _)| c == connection)
            .map(|((_, window), at)| StaleWindow {
                window: *window,
                marked_at: *at,
            })
            .collect())
    }

    async fn clear_stale(&self, connection: &str, stale: &StaleWindow) -> PortResult<bool> {
        yield_point().await;
        let mut marks = lock(&self.stale_exports);
        let key = (connection.to_owned(), stale.window);
        if marks.get(&key) != Some(&stale.marked_at) {
            return Ok(false);
        }
        marks.remove(&key);
        Ok(true)
    }
}

#[async_trait]
impl ActivityState for MemoryState {
    async fn activity_checkpoint(
        &self,
        connection: &str,
        content_type: &str,
    ) -> PortResult<Option<ActivityCheckpoint>> {
        yield_point().await;
        Ok(lock(&self.activity)
            .get(&(connection.to_owned(), content_type.to_owned()))
            .cloned())
    }

    async fn save_activity_checkpoint(
        &self,
        connection: &str,
        content_type: &str,
        checkpoint: &ActivityCheckpoint,
    ) -> PortResult<()> {
        yield_point().await;
        lock(&self.activity).insert((connection.to_owned(), content_type.to_owned()), checkpoint.clone());
        Ok(())
    }

    async fn known_blobs(&self, connection: &str, content_ids: &[String]) -> PortResult<HashSet<String>> {
        yield_point().await;
        let blobs = lock(&self.blobs);
        Ok(content_ids
            .iter()
            .filter(|id| blobs.contains_key(&(connection.to_owned(), (*id).clone())))
            .cloned()
            .collect())
    }

    async fn mark_blobs_enqueued(
        &self,
        connection: &str,
        blobs: &[ContentBlob],
        keep_until: DateTime<Utc>,
    ) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.blobs);
        for b in blobs {
            map.insert((connection.to_owned(), b.content_id.clone()), keep_until);
        }
        Ok(())
    }

    async fn record_blob_ingested(&self, connection: &str, content_id: &str, counts: &BlobCounts) -> PortResult<()> {
        yield_point().await;
        lock(&self.ingested).insert((connection.to_owned(), content_id.to_owned()), counts.clone());
        Ok(())
    }

    async fn blob_counts(&self, connection: &str, content_id: &str) -> PortResult<Option<BlobCounts>> {
        yield_point().await;
        Ok(lock(&self.ingested)
            .get(&(connection.to_owned(), content_id.to_owned()))
            .cloned())
    }

    async fn park_blob(&self, connection: &str, parked: &ParkedBlob) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.parked);
        let key = (connection.to_owned(), parked.blob.content_id.clone());
        let mut entry = parked.clone();
        if let Some(old) = map.get(&key) {
            entry.parked_at = old.parked_at.min(entry.parked_at);
        }
        map.insert(key, entry);
        Ok(())
    }

    async fn unpark_blob(&self, connection: &str, content_id: &str) -> PortResult<()> {
        yield_point().await;
        lock(&self.parked).remove(&(connection.to_owned(), content_id.to_owned()));
        Ok(())
    }

    async fn parked_blobs(&self, connection: &str) -> PortResult<Vec<ParkedBlob>> {
        yield_point().await;
        let mut parked: Vec<ParkedBlob> = lock(&self.parked)
            .iter()
            .filter(|((c, _), _)| c == connection)
            .map(|(_, p)| p.clone())
            .collect();
        parked.sort_by_key(|p| (p.parked_at, p.blob.content_id.clone()));
        Ok(parked)
    }

    async fn ingest_totals(&self, connection: &str) -> PortResult<BlobTotals> {
        yield_point().await;
        let mut totals = BlobTotals::default();
        for ((c, _), counts) in lock(&self.ingested).iter() {
            if c == connection {
                totals.add(counts);
            }
        }
        Ok(totals)
    }

    /// Drives of the connection whose web URL (percent-decoded) has one of the site keys.
    async fn drives_by_site_key(&self, connection: &str, site_keys: &[String]) -> PortResult<Vec<DriveRecord>> {
        yield_point().await;
        let wanted: HashSet<String> = site_keys.iter().map(|k| k.to_ascii_lowercase()).collect();
        Ok(lock(&self.drives)
            .values()
            .filter(|d| d.connection == connection)
            .filter(|d| {
                d.web_url
                    .as_deref()
                    .map(crate::audit::location::percent_decode)
                    .and_then(|url| crate::audit::location::personal_site_key(&url))
                    .is_some_and(|key| wanted.contains(&key))
            })
            .cloned()
            .collect())
    }
}

#[async_trait]
impl crate::hashing::HashLeases for MemoryState {
    async fn take_hash_lease(&self, lease: &crate::hashing::VersionLease, now: DateTime<Utc>) -> PortResult<bool> {
        yield_point().await;
        let mut leases = lock(&self.leases);
        let key = (
            lease.connection.clone(),
            lease.drive_id.clone(),
            lease.item_id.clone(),
            lease.ctag.clone(),
        );
        match leases.get(&key) {
            Some((holder, until)) if *holder != lease.holder && *until >= now => Ok(false),
            _ => {
                leases.insert(key, (lease.holder.clone(), lease.until));
                Ok(true)
            }
        }
    }

    async fn release_hash_lease(&self, lease: &crate::hashing::VersionLease) -> PortResult<()> {
        yield_point().await;
        let mut leases = lock(&self.leases);
        let key = (
            lease.connection.clone(),
            lease.drive_id.clone(),
            lease.item_id.clone(),
            lease.ctag.clone(),
        );
        if leases.get(&key).is_some_and(|(holder, _)| *holder == lease.holder) {
            leases.remove(&key);
        }
        Ok(())
    }
}

#[async_trait]
impl ConnectionStore for MemoryState {
    async fn connection(&self, id: &str) -> PortResult<Option<Connection>> {
        yield_point().await;
        Ok(lock(&self.connections).get(id).cloned())
    }

    async fn connections(&self) -> PortResult<Vec<Connection>> {
        yield_point().await;
        Ok(lock(&self.connections).values().cloned().collect())
    }

    async fn put_connection(&self, connection: &Connection) -> PortResult<()> {
        yield_point().await;
        lock(&self.connections).insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn set_connection_error(&self, id: &str, error: Option<&ConnectionError>) -> PortResult<()> {
        yield_point().await;
        if let Some(c) = lock(&self.connections).get_mut(id) {
            c.last_error = error.cloned();
        }
        Ok(())
    }

    async fn set_last_discovery(&self, id: &str, summary: &DiscoverySummary) -> PortResult<()> {
        yield_point().await;
        if let Some(c) = lock(&self.connections).get_mut(id) {
            c.last_discovery = Some(summary.clone());
        }
        Ok(())
    }

    async fn set_write_app(&self, id: &str, app: Option<&crate::model::WriteApp>) -> PortResult<()> {
        yield_point().await;
        if let Some(c) = lock(&self.connections).get_mut(id) {
            c.write_app = app.cloned();
        }
        Ok(())
    }
}

#[async_trait]
impl DriveStore for MemoryState {
    async fn drive(&self, drive_id: &str) -> PortResult<Option<DriveRecord>> {
        yield_point().await;
        Ok(lock(&self.drives).get(drive_id).cloned())
    }

    async fn drives(&self, drive_ids: &[String]) -> PortResult<Vec<DriveRecord>> {
        yield_point().await;
        let drives = lock(&self.drives);
        Ok(drive_ids.iter().filter_map(|id| drives.get(id).cloned()).collect())
    }

    async fn insert_new_drives(&self, new: &[DriveRecord]) -> PortResult<Vec<String>> {
        yield_point().await;
        let mut drives = lock(&self.drives);
        let mut inserted = Vec::new();
        for d in new {
            if !drives.contains_key(&d.drive_id) {
                drives.insert(d.drive_id.clone(), d.clone());
                inserted.push(d.drive_id.clone());
            }
        }
        Ok(inserted)
    }

    async fn transition_drive(
        &self,
        connection: &str,
        drive_id: &str,
        from: DriveState,
        to: DriveState,
    ) -> PortResult<bool> {
        yield_point().await;
        match lock(&self.drives).get_mut(drive_id) {
            Some(d) if d.state == from && d.connection == connection => {
                d.state = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn save_index_progress(
        &self,
        connection: &str,
        drive_id: &str,
        expected: &IndexProgress,
        progress: &IndexProgress,
        state: DriveState,
    ) -> PortResult<bool> {
        yield_point().await;
        match lock(&self.drives).get_mut(drive_id) {
            Some(d)
                if d.connection == connection
                    && d.index.pages == expected.pages
                    && d.index.generation == expected.generation
                    && d.state != DriveState::Unmonitored =>
            {
                d.index = progress.clone();
                d.state = state;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_drive_parked(&self, connection: &str, drive_id: &str, reason: Option<&str>) -> PortResult<()> {
        yield_point().await;
        match lock(&self.drives).get_mut(drive_id) {
            Some(d) if d.connection == connection => {
                d.parked = reason.map(str::to_owned);
                Ok(())
            }
            _ => Err(PortError::terminal(
                "NotFound",
                format!("connection {connection} has no drive {drive_id}"),
                "run discovery for the connection so the drive is recorded",
            )),
        }
    }

    async fn drive_ids_in_state(
        &self,
        connection: &str,
        state: DriveState,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        yield_point().await;
        const PAGE: usize = 100;
        let drives = lock(&self.drives);
        // Drives are keyed by id: a page starts right after the cursor, not at the first drive.
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let ids: Vec<String> = drives
            .range::<String, _>((from, Bound::Unbounded))
            .map(|(_, d)| d)
            .filter(|d| d.connection == connection && d.state == state)
            .map(|d| d.drive_id.clone())
            .take(PAGE + 1)
            .collect();
        if ids.len() > PAGE {
            let page: Vec<String> = ids[..PAGE].to_vec();
            let next = page.last().cloned();
            Ok((page, next))
        } else {
            Ok((ids, None))
        }
    }

    async fn count_drives(&self, connection: &str, state: DriveState) -> PortResult<u64> {
        yield_point().await;
        Ok(lock(&self.drives)
            .values()
            .filter(|d| d.connection == connection && d.state == state)
            .count() as u64)
    }

    async fn record_users_without_drive(&self, connection: &str, users: &[(DirectoryUser, String)]) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.without_drive);
        for (u, reason) in users {
            map.insert((connection.to_owned(), u.id.clone()), (u.clone(), reason.clone()));
        }
        Ok(())
    }

    async fn clear_users_without_drive(&self, connection: &str, user_ids: &[String]) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.without_drive);
        for id in user_ids {
            map.remove(&(connection.to_owned(), id.clone()));
        }
        Ok(())
    }

    async fn count_users_without_drive(&self, connection: &str) -> PortResult<u64> {
        yield_point().await;
        Ok(lock(&self.without_drive)
            .keys()
            .filter(|(c, _)| c == connection)
            .count() as u64)
    }

    async fn user_ids_without_drive(
        &self,
        connection: &str,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        yield_point().await;
        const PAGE: usize = 100;
        let map = lock(&self.without_drive);
        let from = cursor.map_or(Bound::Unbounded, |cur| Bound::Excluded((connection.to_owned(), cur)));
        let ids: Vec<String> = map
            .range((from, Bound::Unbounded))
            .map(|(key, _)| key)
            .filter(|(c, _)| c == connection)
            .map(|(_, id)| id.clone())
            .take(PAGE + 1)
            .collect();
        if ids.len() > PAGE {
            let page = ids[..PAGE].to_vec();
            let next = page.last().cloned();
            Ok((page, next))
        } else {
            Ok((ids, None))
        }
    }
}

#[async_trait]
impl ScopeStore for MemoryState {
    async fn scope(&self, connection: &str) -> PortResult<Option<Scope>> {
        yield_point().await;
        Ok(lock(&self.scopes).get(connection).cloned())
    }

    async fn replace_scope(&self, connection: &str, scope: &Scope) -> PortResult<bool> {
        yield_point().await;
        let mut scopes = lock(&self.scopes);
        if scopes
            .get(connection)
            .is_some_and(|s| s.uploaded_at > scope.uploaded_at)
        {
            return Ok(false);
        }
        scopes.insert(connection.to_owned(), scope.clone());
        Ok(true)
    }

    async fn record_scope_upload(&self, connection: &str, result: &ScopeUploadResult) -> PortResult<()> {
        yield_point().await;
        let mut uploads = lock(&self.uploads);
        if uploads
            .get(connection)
            .is_none_or(|r| r.uploaded_at <= result.uploaded_at)
        {
            uploads.insert(connection.to_owned(), result.clone());
        }
        Ok(())
    }

    async fn last_scope_upload(&self, connection: &str) -> PortResult<Option<ScopeUploadResult>> {
        yield_point().await;
        Ok(lock(&self.uploads).get(connection).cloned())
    }
}

#[async_trait]
impl DiscoveryRunStore for MemoryState {
    async fn record_run_page(&self, connection: &str, run_id: &str, page: u64, seen: &RunPage) -> PortResult<()> {
        yield_point().await;
        lock(&self.runs).insert((connection.to_owned(), run_id.to_owned(), page), seen.clone());
        Ok(())
    }

    async fn run_seen(&self, connection: &str, run_id: &str) -> PortResult<RunSeen> {
        yield_point().await;
        let mut all = RunSeen::default();
        for ((c, r, _), page) in lock(&self.runs).iter() {
            if c == connection && r == run_id {
                all.drives.extend(page.drives.iter().cloned());
                all.users_without_drive.extend(page.users_without_drive.iter().cloned());
            }
        }
        Ok(all)
    }

    async fn delete_run(&self, connection: &str, run_id: &str) -> PortResult<()> {
        yield_point().await;
        lock(&self.runs).retain(|(c, r, _), _| !(c == connection && r == run_id));
        Ok(())
    }

    async fn discovery_checkpoint(&self, connection: &str) -> PortResult<Option<DiscoveryCheckpoint>> {
        yield_point().await;
        Ok(lock(&self.checkpoints).get(connection).cloned())
    }

    async fn save_discovery_checkpoint(
        &self,
        connection: &str,
        checkpoint: Option<&DiscoveryCheckpoint>,
        expected: Option<&CheckpointVersion>,
    ) -> PortResult<bool> {
        yield_point().await;
        let mut map = lock(&self.checkpoints);
        if map.get(connection).map(DiscoveryCheckpoint::version).as_ref() != expected {
            return Ok(false);
        }
        match checkpoint {
            Some(cp) => map.insert(connection.to_owned(), cp.clone()),
            None => map.remove(connection),
        };
        Ok(true)
    }
}

/// Inventory in memory, counting writes like the DynamoDB adapter's batches would.
#[derive(Debug, Default)]
pub struct MemoryInventory {
    rows: Mutex<BTreeMap<(String, String), InventoryRow>>,
    puts: Mutex<u64>,
    /// Hash outcomes, apart from the rows (as the DynamoDB adapter keeps them).
    hashes: Mutex<BTreeMap<(String, String), HashOutcome>>,
    /// Files by drive and list item unique id, tombstones of deleted ones included.
    identities: Mutex<BTreeMap<(String, String), KnownItem>>,
    /// Events waiting for their item, by drive.
    pending: Mutex<BTreeSet<(String, PendingItem)>>,
    /// Sharing states of shared items, beside their rows (as the DynamoDB adapter keeps them).
    sharing: Mutex<BTreeMap<(String, String), SharingState>>,
}

impl MemoryInventory {
    pub fn rows(&self, drive_id: &str) -> Vec<InventoryRow> {
        lock(&self.rows)
            .values()
            .filter(|r| r.drive_id == drive_id)
            .cloned()
            .collect()
    }

    /// Row writes so far (each row counts once per write, overwrites included).
    pub fn row_writes(&self) -> u64 {
        *lock(&self.puts)
    }

    /// The hash outcome recorded for an item.
    pub fn hash(&self, drive_id: &str, item_id: &str) -> Option<HashOutcome> {
        lock(&self.hashes)
            .get(&(drive_id.to_owned(), item_id.to_owned()))
            .cloned()
    }

    /// Every stored sharing state (shared items only), by drive and item.
    pub fn sharing_states(&self) -> Vec<SharingState> {
        lock(&self.sharing).values().cloned().collect()
    }

    /// Removes rows, their hash outcomes and sharing states, and keeps tombstones of the files
    /// among them.
    fn remove(&self, keys: &[(String, String)], at: DateTime<Utc>) -> u64 {
        let mut map = lock(&self.rows);
        let mut hashes = lock(&self.hashes);
        let mut identities = lock(&self.identities);
        let mut sharing = lock(&self.sharing);
        let mut removed = 0;
        for key in keys {
            hashes.remove(key);
            sharing.remove(key);
            let Some(row) = map.remove(key) else { continue };
            removed += 1;
            if let Some(uid) = row.list_item_uid.filter(|_| !row.is_folder) {
                identities.insert(
                    (row.drive_id.clone(), uid.clone()),
                    KnownItem {
                        uid,
                        item_id: row.item_id,
                        path: row.path,
                        deleted_at: Some(at),
                    },
                );
            }
        }
        removed
    }
}

#[async_trait]
impl ItemIdentities for MemoryInventory {
    async fn items_by_uid(&self, drive_id: &str, uids: &[String]) -> PortResult<Vec<KnownItem>> {
        yield_point().await;
        let identities = lock(&self.identities);
        let mut seen = HashSet::new();
        Ok(uids
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .filter_map(|u| identities.get(&(drive_id.to_owned(), u.clone())).cloned())
            .collect())
    }

    async fn add_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.pending);
        for p in pending {
            // One entry per event; a second write renews it (as a DynamoDB put would).
            map.retain(|(d, q)| d != drive_id || q.event_key != p.event_key);
            map.insert((drive_id.to_owned(), p.clone()));
        }
        Ok(())
    }

    async fn pending(&self, drive_id: &str) -> PortResult<Vec<PendingItem>> {
        yield_point().await;
        Ok(lock(&self.pending)
            .iter()
            .filter(|(d, _)| d == drive_id)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn remove_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.pending);
        map.retain(|(d, p)| d != drive_id || !pending.iter().any(|q| q.event_key == p.event_key));
        Ok(())
    }
}

#[async_trait]
impl SharingStore for MemoryInventory {
    async fn sharing(&self, items: &[(String, String)]) -> PortResult<Vec<SharingState>> {
        yield_point().await;
        let map = lock(&self.sharing);
        let mut seen = HashSet::new();
        Ok(items
            .iter()
            .filter(|k| seen.insert(*k))
            .filter_map(|k| map.get(k).cloned())
            .collect())
    }

    /// Replaces the item's state; a state without grants removes it (the item is shared with
    /// no one).
    async fn put_sharing(&self, state: &SharingState) -> PortResult<()> {
        yield_point().await;
        let key = (state.drive_id.clone(), state.item_id.clone());
        let mut map = lock(&self.sharing);
        if state.grants.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, state.clone());
        }
        Ok(())
    }

    async fn exposed(&self, connection: &str) -> PortResult<Vec<SharingState>> {
        yield_point().await;
        Ok(lock(&self.sharing)
            .values()
            .filter(|s| s.connection == connection && s.is_exposed())
            .cloned()
            .collect())
    }
}

#[async_trait]
impl InventoryHashes for MemoryInventory {
    /// Items with a hashed outcome (with or without a row yet), in the order asked.
    async fn file_hashes(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, FileHashes)>> {
        yield_point().await;
        let hashes = lock(&self.hashes);
        let mut seen = HashSet::new();
        Ok(item_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| match hashes.get(&(drive_id.to_owned(), id.clone())) {
                Some(HashOutcome::Hashed(h)) => Some((id.clone(), h.clone())),
                _ => None,
            })
            .collect())
    }

    async fn set_file_hash(
        &self,
        _connection: &str,
        drive_id: &str,
        item_id: &str,
        outcome: &HashOutcome,
    ) -> PortResult<()> {
        yield_point().await;
        lock(&self.hashes).insert((drive_id.to_owned(), item_id.to_owned()), outcome.clone());
        Ok(())
    }
}

#[async_trait]
impl InventoryStore for MemoryInventory {
    async fn put_rows(&self, rows: &[InventoryRow]) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.rows);
        let mut identities = lock(&self.identities);
        for r in rows {
            map.insert((r.drive_id.clone(), r.item_id.clone()), r.clone());
            if let Some(uid) = r.list_item_uid.as_ref().filter(|_| !r.is_folder) {
                identities.insert(
                    (r.drive_id.clone(), uid.clone()),
                    KnownItem {
                        uid: uid.clone(),
                        item_id: r.item_id.clone(),
                        path: r.path.clone(),
                        deleted_at: None,
                    },
                );
            }
        }
        *lock(&self.puts) += rows.len() as u64;
        Ok(())
    }

    /// Deletes the rows and their hash outcomes, keeping tombstones.
    async fn delete_rows(&self, drive_id: &str, item_ids: &[String], at: DateTime<Utc>) -> PortResult<()> {
        yield_point().await;
        let keys: Vec<(String, String)> = item_ids.iter().map(|id| (drive_id.to_owned(), id.clone())).collect();
        self.remove(&keys, at);
        Ok(())
    }

    async fn paths(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, String)>> {
        yield_point().await;
        let map = lock(&self.rows);
        Ok(item_ids
            .iter()
            .filter_map(|id| {
                map.get(&(drive_id.to_owned(), id.clone()))
                    .map(|r| (id.clone(), r.path.clone()))
            })
            .collect())
    }

    async fn count_rows(&self, drive_id: &str) -> PortResult<(u64, u64)> {
        yield_point().await;
        let map = lock(&self.rows);
        let rows = map.values().filter(|r| r.drive_id == drive_id);
        let (folders, files): (Vec<&InventoryRow>, Vec<&InventoryRow>) = rows.partition(|r| r.is_folder);
        Ok((files.len() as u64, folders.len() as u64))
    }

    /// Deletes the old rows and their hash outcomes, keeping tombstones; returns how many rows.
    async fn delete_older_than(&self, drive_id: &str, generation: u64, at: DateTime<Utc>) -> PortResult<u64> {
        yield_point().await;
        let gone: Vec<(String, String)> = lock(&self.rows)
            .iter()
            .filter(|(key, r)| key.0 == drive_id && r.generation < generation)
            .map(|(key, _)| key.clone())
            .collect();
        Ok(self.remove(&gone, at))
    }
}

/// A version lease's key: connection, drive, item, cTag.
type LeaseKey = (String, String, String, String);

/// A queue in memory that can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    index: Mutex<Vec<IndexJob>>,
    discover: Mutex<Vec<DiscoverJob>>,
    blobs: Mutex<Vec<BlobJob>>,
    hashes: Mutex<Vec<HashJob>>,
    fail: Mutex<bool>,
}

impl MemoryQueue {
    pub fn index_jobs(&self) -> Vec<IndexJob> {
        lock(&self.index).clone()
    }

    pub fn take_index_jobs(&self) -> Vec<IndexJob> {
        std::mem::take(&mut *lock(&self.index))
    }

    pub fn discover_jobs(&self) -> Vec<DiscoverJob> {
        lock(&self.discover).clone()
    }

    pub fn blob_jobs(&self) -> Vec<BlobJob> {
        lock(&self.blobs).clone()
    }

    pub fn take_blob_jobs(&self) -> Vec<BlobJob> {
        std::mem::take(&mut *lock(&self.blobs))
    }

    pub fn hash_jobs(&self) -> Vec<HashJob> {
        lock(&self.hashes).clone()
    }

    pub fn take_hash_jobs(&self) -> Vec<HashJob> {
        std::mem::take(&mut *lock(&self.hashes))
    }

    /// Makes every following enqueue fail (a queue outage).
    pub fn set_failing(&self, failing: bool) {
        *lock(&self.fail) = failing;
    }

    fn check(&self) -> PortResult<()> {
        if *lock(&self.fail) {
            return Err(PortError::transient(
                "QueueUnavailable",
                "the queue is unavailable (injected)",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl IndexQueue for MemoryQueue {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        yield_point().await;
        self.check()?;
        lock(&self.index).extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl DiscoverQueue for MemoryQueue {
    async fn enqueue_discover(&self, jobs: &[DiscoverJob]) -> PortResult<()> {
        yield_point().await;
        self.check()?;
        lock(&self.discover).extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl BlobQueue for MemoryQueue {
    async fn enqueue_blobs(&self, jobs: &[BlobJob]) -> PortResult<()> {
        yield_point().await;
        self.check()?;
        lock(&self.blobs).extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl HashQueue for MemoryQueue {
    async fn enqueue_hashes(&self, jobs: &[HashJob]) -> PortResult<()> {
        yield_point().await;
        self.check()?;
        lock(&self.hashes).extend_from_slice(jobs);
        Ok(())
    }

    /// Delays are not modelled: the job is queued at once (tests take jobs explicitly).
    async fn enqueue_hashes_after(&self, jobs: &[HashJob], _delay: std::time::Duration) -> PortResult<()> {
        yield_point().await;
        self.enqueue_hashes(jobs).await
    }
}

/// File events in memory, inserted once per key like the DynamoDB adapter's conditional puts.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    events: Mutex<BTreeMap<String, EventRecord>>,
    /// Insert attempts, duplicates included.
    attempts: Mutex<u64>,
}

impl MemoryEvents {
    /// Every stored event, by key.
    pub fn all(&self) -> Vec<EventRecord> {
        lock(&self.events).values().cloned().collect()
    }

    pub fn get(&self, key: &str) -> Option<EventRecord> {
        lock(&self.events).get(key).cloned()
    }

    /// Events offered to [`EventStore::insert_events`] so far, duplicates included.
    pub fn insert_attempts(&self) -> u64 {
        *lock(&self.attempts)
    }
}

#[async_trait]
impl EventStore for MemoryEvents {
    /// Inserts events whose key is not stored; a stored one is left as it is. Returns the keys
    /// inserted, in input order.
    async fn insert_events(&self, events: &[EventRecord]) -> PortResult<Vec<String>> {
        yield_point().await;
        let mut map = lock(&self.events);
        *lock(&self.attempts) += events.len() as u64;
        let mut inserted = Vec::new();
        for e in events {
            let key = e.key();
            if !map.contains_key(&key) {
                map.insert(key.clone(), e.clone());
                inserted.push(key);
            }
        }
        Ok(inserted)
    }

    async fn stored_events(&self, keys: &[String]) -> PortResult<Vec<EventRecord>> {
        yield_point().await;
        let map = lock(&self.events);
        let mut seen = std::collections::HashSet::new();
        Ok(keys
            .iter()
            .filter(|k| seen.insert(k.as_str()))
            .filter_map(|k| map.get(k).cloned())
            .collect())
    }

    /// Newest first by observed time, then by record id (descending), as the `by_file` index
    /// orders them.
    async fn file_events(&self, drive_id: &str, item_id: &str, limit: usize) -> PortResult<Vec<EventRecord>> {
        yield_point().await;
        let mut events: Vec<EventRecord> = lock(&self.events)
            .values()
            .filter(|e| e.event.drive_id.as_deref() == Some(drive_id) && e.event.item_id.as_deref() == Some(item_id))
            .cloned()
            .collect();
        events.sort_by(|a, b| (b.event.observed_at, &b.event.id).cmp(&(a.event.observed_at, &a.event.id)));
        events.truncate(limit);
        Ok(events)
    }

    /// Sets the outcome on the stored events among `keys`; unknown keys are skipped.
    async fn set_event_hash(&self, keys: &[String], outcome: &HashOutcome) -> PortResult<()> {
        yield_point().await;
        let mut map = lock(&self.events);
        for key in keys {
            if let Some(e) = map.get_mut(key) {
                e.hash = Some(outcome.clone());
            }
        }
        Ok(())
    }

    async fn change_event_hashes(&self, changes: &[HashChange<'_>]) -> PortResult<Vec<String>> {
        yield_point().await;
        let mut map = lock(&self.events);
        let mut seen = HashSet::new();
        let mut conflicts = Vec::new();
        for change in changes.iter().filter(|c| seen.insert(c.key)) {
            let Some(e) = map.get_mut(change.key) else {
                continue;
            };
            if e.hash.as_ref() == Some(change.outcome) {
                continue;
            }
            if e.hash.as_ref() == change.was {
                e.hash = Some(change.outcome.clone());
            } else {
                conflicts.push(change.key.to_owned());
            }
        }
        Ok(conflicts)
    }

    async fn resolve_item(
        &self,
        key: &str,
        item_id: &str,
        outcome: Option<&HashOutcome>,
    ) -> PortResult<Option<EventRecord>> {
        yield_point().await;
        let mut map = lock(&self.events);
        match map.get_mut(key) {
            Some(e) if e.event.item_id.is_none() && e.event.drive_id.is_some() => {
                e.event.item_id = Some(item_id.to_owned());
                e.event.unresolved = None;
                e.hash = outcome.cloned();
                Ok(Some(e.clone()))
            }
            Some(e) if e.event.item_id.as_deref() == Some(item_id) => Ok(Some(e.clone())),
            _ => Ok(None),
        }
    }
}

/// Quarantined records in memory, one entry per blob (a rewrite replaces it).
#[derive(Debug, Default)]
pub struct MemoryQuarantine {
    blobs: Mutex<BTreeMap<(String, String), Vec<Quarantine>>>,
    writes: Mutex<u64>,
}

impl MemoryQuarantine {
    /// The records quarantined from one blob, as last written.
    pub fn quarantined(&self, connection: &str, content_id: &str) -> Option<Vec<Quarantine>> {
        lock(&self.blobs)
            .get(&(connection.to_owned(), content_id.to_owned()))
            .cloned()
    }

    /// Every blob with quarantined records: (connection, content id).
    pub fn blobs(&self) -> Vec<(String, String)> {
        lock(&self.blobs).keys().cloned().collect()
    }

    /// Writes so far, rewrites included.
    pub fn writes(&self) -> u64 {
        *lock(&self.writes)
    }
}

#[async_trait]
impl QuarantineStore for MemoryQuarantine {
    async fn put_quarantined(&self, connection: &str, content_id: &str, records: &[Quarantine]) -> PortResult<()> {
        yield_point().await;
        *lock(&self.writes) += 1;
        lock(&self.blobs).insert((connection.to_owned(), content_id.to_owned()), records.to_vec());
        Ok(())
    }
}

/// A bucket in memory: objects with an ETag each.
#[derive(Debug, Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    puts: Mutex<u64>,
}

impl MemoryObjects {
    /// Puts an object; its ETag is a counter, so every put has a new one. Returns it.
    pub fn put(&self, key: &str, body: &[u8]) -> String {
        let mut puts = lock(&self.puts);
        *puts += 1;
        let etag = format!("etag-{puts}");
        lock(&self.objects).insert(key.to_owned(), (body.to_vec(), etag.clone()));
        etag
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.objects).get(key).map(|(b, _)| b.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }
}

#[async_trait]
impl ScopeObjects for MemoryObjects {
    async fn read_upload(&self, key: &str, etag: &str, max_bytes: u64) -> PortResult<UploadRead> {
        yield_point().await;
        Ok(match lock(&self.objects).get(key) {
            None => UploadRead::Missing,
            Some((_, stored)) if stored != etag => UploadRead::Replaced,
            Some((body, _)) if body.len() as u64 > max_bytes => UploadRead::TooLarge {
                size: body.len() as u64,
            },
            Some((body, _)) => UploadRead::Bytes(body.clone()),
        })
    }

    async fn write_result(&self, key: &str, body: &[u8]) -> PortResult<()> {
        yield_point().await;
        lock(&self.objects).insert(key.to_owned(), (body.to_vec(), "result".to_owned()));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::{Actor, ActorKind, FileEvent, FileEventType, ItemKind};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn event(id: &str, item: &str, observed: &str) -> EventRecord {
        EventRecord::onedrive(
            "contoso",
            FileEvent {
                id: id.to_owned(),
                event_type: FileEventType::Modified,
                low_signal: false,
                operation: "FileModified".into(),
                record_type: 6,
                item_kind: ItemKind::File,
                actor: Actor {
                    id: "adele@contoso.com".into(),
                    upn: Some("adele@contoso.com".into()),
                    email: None,
                    kind: ActorKind::User,
                    user_type: None,
                    user_key: None,
                    external: None,
                },
                owner_upn: None,
                site_key: None,
                site_url: None,
                object_url: None,
                file_name: None,
                path: None,
                extension: None,
                destination: None,
                list_id: None,
                list_item_unique_id: None,
                drive_id: Some("b!1".into()),
                item_id: Some(item.to_owned()),
                unresolved: None,
                observed_at: t(observed),
                inserted_at: t("2026-11-22T10:00:00Z"),
                client_ip: None,
                user_agent: None,
                result_status: None,
                sharing: None,
            },
        )
    }

    fn hashed() -> HashOutcome {
        HashOutcome::Hashed(FileHashes {
            version: None,
            md5: "m".into(),
            sha256: "s".into(),
            ctag: "c".into(),
            size: 1,
            modified_at: None,
            hashed_at: t("2026-11-22T10:00:00Z"),
        })
    }

    #[tokio::test]
    async fn events_are_inserted_once_and_listed_newest_first() {
        yield_point().await;
        let events = MemoryEvents::default();
        let mut changed = event("a", "i1", "2026-11-22T09:00:00Z");
        changed.event.event_type = FileEventType::Deleted;
        let first = events
            .insert_events(&[
                event("a", "i1", "2026-11-22T09:00:00Z"),
                event("b", "i1", "2026-11-22T09:05:00Z"),
            ])
            .await
            .unwrap();
        let second = events
            .insert_events(&[changed, event("c", "i2", "2026-11-22T09:10:00Z")])
            .await
            .unwrap();
        assert_eq!(first, ["contoso#a", "contoso#b"]);
        assert_eq!(second, ["contoso#c"]);
        assert_eq!(
            events.get("contoso#a").map(|e| e.event.event_type),
            Some(FileEventType::Modified)
        );
        let ids: Vec<String> = events
            .file_events("b!1", "i1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(events.file_events("b!1", "i1", 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_hash_is_set_only_on_stored_events() {
        yield_point().await;
        let events = MemoryEvents::default();
        events
            .insert_events(&[event("a", "i1", "2026-11-22T09:00:00Z")])
            .await
            .unwrap();
        events
            .set_event_hash(&["contoso#a".into(), "contoso#missing".into()], &hashed())
            .await
            .unwrap();
        assert_eq!(events.get("contoso#a").and_then(|e| e.hash), Some(hashed()));
        assert!(events.get("contoso#missing").is_none());
    }

    #[tokio::test]
    async fn file_hashes_count_before_their_row_and_go_with_it() {
        yield_point().await;
        let inventory = MemoryInventory::default();
        let row = InventoryRow {
            list_item_uid: None,
            drive_id: "b!1".into(),
            item_id: "i1".into(),
            connection: "contoso".into(),
            name: "a.txt".into(),
            path: "/a.txt".into(),
            parent_id: None,
            is_folder: false,
            size: 1,
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
            indexed_at: t("2026-11-22T10:00:00Z"),
        };
        inventory.put_rows(std::slice::from_ref(&row)).await.unwrap();
        for item in ["i1", "no-row"] {
            inventory
                .set_file_hash("contoso", "b!1", item, &hashed())
                .await
                .unwrap();
        }
        // A later index round rewrites the row: the hash stays.
        inventory.put_rows(&[row]).await.unwrap();
        let ask = ["i1".to_owned(), "no-row".to_owned()];
        let found: Vec<String> = inventory
            .file_hashes("b!1", &ask)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // A file hashed before an index round wrote its row (a new upload) is hashed all the same.
        assert_eq!(found, ["i1", "no-row"]);

        inventory
            .delete_rows("b!1", &["i1".into()], chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(inventory.hash("b!1", "i1"), None);
    }

    #[tokio::test]
    async fn drives_are_found_by_the_site_key_of_their_decoded_web_url() {
        yield_point().await;
        let state = MemoryState::default();
        let drive = |connection: &str, id: &str, url: &str| DriveRecord {
            connection: connection.into(),
            drive_id: id.into(),
            owner_id: "u".into(),
            owner_upn: "alex@contoso.com".into(),
            web_url: Some(url.into()),
            state: DriveState::Unmonitored,
            discovered_at: t("2026-11-22T10:00:00Z"),
            index: IndexProgress::default(),
            parked: None,
        };
        let url = "https://contoso-my.sharepoint.com/personal/alex%5Fcontoso%5Fcom/Documents";
        state
            .insert_new_drives(&[drive("contoso", "d1", url), drive("fabrikam", "d2", url)])
            .await
            .unwrap();
        let found = state
            .drives_by_site_key("contoso", &["alex_contoso_com".into()])
            .await
            .unwrap();
        assert_eq!(found.iter().map(|d| d.drive_id.as_str()).collect::<Vec<_>>(), ["d1"]);
    }
}
